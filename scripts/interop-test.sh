#!/usr/bin/env bash
# Interoperability test of the Open Inference Protocol v2 REST API (/v2/...) with the real
# clients: NVIDIA's tritonclient[http] and KServe's InferenceRESTClient. Every answer is compared
# with the server's own /predict for the same MNIST test digits (see interop_test.py).
#
# The clients come from PyPI, pinned with hashes (interop-requirements.txt), into a venv made
# here and reused while the requirements file is unchanged (about 500 MB, 1.5-3 min to install).
#
# Against a server that is already running:
#   INTEROP_URL=http://127.0.0.1:PORT INTEROP_TOKEN=... interop-test.sh
# Without INTEROP_URL it builds the debug server as `make test` does, starts it on a free
# loopback port with a throwaway user, and stops it on exit.
# MNIST_DIR (default ../shared/mnist) holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz;
# extra arguments go to interop_test.py (e.g. --count 1000, --only kserve, -v).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/interop
VENV=${INTEROP_VENV:-target/interop-venv}
REQUIREMENTS=scripts/interop-requirements.txt
TEST=tests/interop/interop_test.py
MNIST_DIR=${MNIST_DIR:-../shared/mnist}
mkdir -p "$OUT"
fail() {
    echo "interop-test: FAIL: $*" >&2
    exit 1
}

# --- clients ----------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' ||
    fail "$PYTHON is not 3.11-3.13 (numpy 2.4 needs 3.11+, kserve 0.21 <3.14)"
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
    echo "== installing tritonclient and kserve into $VENV (pinned, hashes checked)"
    start=$(date +%s)
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || fail "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes \
        -r "$REQUIREMENTS" >"$OUT/pip.log" 2>&1 || {
        cat "$OUT/pip.log" >&2
        rm -rf "$VENV"
        fail "pip install failed"
    }
    "$VENV/bin/python" -c 'import tritonclient.http, kserve' 2>>"$OUT/pip.log" || {
        tail -n 20 "$OUT/pip.log" >&2
        rm -rf "$VENV"
        fail "the installed clients do not import"
    }
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
    echo "== installed in $(($(date +%s) - start)) s, $(du -sh "$VENV" | cut -f1)"
fi

[ -e "$MNIST_DIR/t10k-images-idx3-ubyte.gz" ] || [ -e "$MNIST_DIR/t10k-images-idx3-ubyte" ] ||
    fail "no MNIST test images in $MNIST_DIR (set MNIST_DIR)"

# --- server -----------------------------------------------------------------------------------
SERVER_PID=
TMP=$(mktemp -d)
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

if [ -n "${INTEROP_URL:-}" ]; then
    BASE=$INTEROP_URL
    TOKEN=${INTEROP_TOKEN:-}
else
    echo "== cargo test --no-run --all-targets (builds target/debug/mnist-api)"
    cargo test --no-run --all-targets --quiet || fail "the server does not build"
    BIN=target/debug/mnist-api
    USER_NAME=interop
    PASSWORD="interop-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s\n' "$PASSWORD" | "$BIN" --users "$TMP/users.json" user add "$USER_NAME" >/dev/null ||
        fail "could not create the test user"
    : >"$TMP/server.log"
    SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" RUST_LOG=info NO_COLOR=1 \
        "$BIN" --bind 127.0.0.1:0 --users "$TMP/users.json" --weights weights/mnist_cnn.safetensors \
        >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    ADDR=
    for _ in $(seq 1 300); do
        ADDR=$(sed -nE 's/\x1b\[[0-9;]*m//g; s/.*listening.*address=(127\.0\.0\.1:[0-9]+).*/\1/p' \
            "$TMP/server.log" | head -n 1)
        [ -n "$ADDR" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited at start"
        sleep 0.1
    done
    [ -n "$ADDR" ] || fail "the server did not log its address within 30 s"
    BASE="http://$ADDR"
    TOKEN=$("$VENV/bin/python" - "$BASE" "$USER_NAME" "$PASSWORD" <<'EOF'
import json, sys, urllib.request
base, user, password = sys.argv[1:]
req = urllib.request.Request(base + "/login", method="POST",
    data=json.dumps({"username": user, "password": password}).encode(),
    headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=30))["access_token"])
EOF
    ) || fail "could not log in as $USER_NAME"
fi
echo "== server on $BASE"

# --- the test ---------------------------------------------------------------------------------
# The token goes through the environment, not the command line (ps shows arguments).
INTEROP_TOKEN=$TOKEN "$VENV/bin/python" "$TEST" --url "$BASE" --mnist-dir "$MNIST_DIR" "$@" ||
    fail "the v2 API does not interoperate (see the FAIL lines above)"
echo "interop-test: PASS"
