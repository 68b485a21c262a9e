#!/usr/bin/env bash
# Property-based API fuzzing with schemathesis: every operation of the server's own
# /openapi.json, every check, once with a bearer token and once without. Any failure means the
# document and the server disagree, or the server answered 5xx. Starts the debug server on a free
# loopback port with a throwaway user and stops it on exit.
#
# schemathesis comes from PyPI, pinned with hashes (scripts/api-fuzz-requirements.txt), into a
# venv made here and reused while the requirements file is unchanged; its settings are in
# scripts/api-fuzz.toml.
# API_FUZZ_EXAMPLES (default 40) bounds the cases per operation and phase, API_FUZZ_MAX_TIME
# (default 90 s) each of the two runs; reports go to target/api-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/api-fuzz
VENV=target/api-fuzz-venv
REQUIREMENTS=scripts/api-fuzz-requirements.txt
EXAMPLES=${API_FUZZ_EXAMPLES:-40}
MAX_TIME=${API_FUZZ_MAX_TIME:-90}
mkdir -p "$OUT"
fail() {
    echo "api-fuzz: FAIL: $*" >&2
    exit 1
}

# --- schemathesis -----------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
    echo "== installing schemathesis into $VENV (pinned, hashes checked)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || fail "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes \
        -r "$REQUIREMENTS" >"$OUT/pip.log" 2>&1 || {
        cat "$OUT/pip.log" >&2
        rm -rf "$VENV"
        fail "pip install failed"
    }
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi
ROOT=$PWD
ST="$ROOT/$VENV/bin/schemathesis"

# --- server -----------------------------------------------------------------------------------
TEST_USER=fuzz
source scripts/test-server.sh
start_server
TOKEN=$(login)

# --- schemathesis runs ------------------------------------------------------------------------
# Every check; a fixed seed so a failure reproduces with the same command. The 30 s request
# timeout is far above any answer here: hitting it is a finding, not noise.
run() {
    local name=$1
    shift
    echo "== schemathesis, $name"
    # Run from $OUT: schemathesis keeps its cache of past failures in ./.schemathesis.
    (cd "$OUT" && "$ST" --config-file "$ROOT/scripts/api-fuzz.toml" run "$BASE/openapi.json" \
        --checks all --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --request-timeout 30 \
        --seed 10 --workers 2 --report junit --report-junit-path "$name.xml" "$@") ||
        fail "schemathesis found failures $name (report: $OUT/$name.xml)"
}
run with-token -H "Authorization: Bearer $TOKEN"
run without-token
echo "api-fuzz: PASS"
