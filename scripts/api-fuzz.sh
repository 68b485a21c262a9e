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
# Built as `make test` builds it, so CI reuses that build (see scripts/browser-test.sh).
echo "== cargo test --no-run --all-targets (builds target/debug/mnist-api)"
cargo test --no-run --all-targets --quiet || fail "the server does not build"
BIN=target/debug/mnist-api

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$status" != 0 ] && [ -s "$TMP/server.log" ]; then
        cp "$TMP/server.log" "$OUT/server.log"
        echo "--- server log: $OUT/server.log; its last lines:" >&2
        tail -n 20 "$TMP/server.log" >&2
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USER_NAME=fuzz
PASSWORD="fuzz-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$PASSWORD" | "$BIN" --users "$TMP/users.json" user add "$USER_NAME" >/dev/null ||
    fail "could not create the test user"

: >"$TMP/server.log"
SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" RUST_LOG=info NO_COLOR=1 \
    "$BIN" --bind 127.0.0.1:0 --users "$TMP/users.json" --weights weights/mnist_cnn.safetensors \
    >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

ADDR=
for _ in $(seq 1 300); do
    ADDR=$(sed -nE 's/\x1b\[[0-9;]*m//g; s/.*listening.*address=(127\.0\.0\.1:[0-9]+).*/\1/p' "$TMP/server.log" | head -n 1)
    [ -n "$ADDR" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited at start"
    sleep 0.1
done
[ -n "$ADDR" ] || fail "the server did not log its address within 30 s"
BASE="http://$ADDR"
echo "== server on $BASE"

TOKEN=$("$VENV/bin/python" - "$BASE" "$USER_NAME" "$PASSWORD" <<'EOF'
import json, sys, urllib.request
base, user, password = sys.argv[1:]
req = urllib.request.Request(base + "/login", method="POST",
    data=json.dumps({"username": user, "password": password}).encode(),
    headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=30))["access_token"])
EOF
) || fail "could not log in as $USER_NAME"

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
