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
if [ -n "${INTEROP_URL:-}" ]; then
    BASE=$INTEROP_URL
    TOKEN=${INTEROP_TOKEN:-}
else
    TEST_USER=interop
    source scripts/test-server.sh
    start_server
    TOKEN=$(login)
fi

# --- the test ---------------------------------------------------------------------------------
# The token goes through the environment, not the command line (ps shows arguments).
INTEROP_TOKEN=$TOKEN "$VENV/bin/python" "$TEST" --url "$BASE" --mnist-dir "$MNIST_DIR" "$@" ||
    fail "the v2 API does not interoperate (see the FAIL lines above)"
echo "interop-test: PASS"
