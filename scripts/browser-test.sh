#!/usr/bin/env bash
# End-to-end test of the web page at / in a real headless Chromium (Debian's), driven by
# playwright-core: log in, draw a 1 and a 0 with pointer events, pick a file, wrong password,
# expired session. Starts the debug server on a free loopback port with a throwaway user and
# stops it on exit. Installs Chromium (apt) and playwright-core (npm ci) when missing.
# Screenshots go to target/browser/. Set E2E_HEADED=1 to watch it under a display.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/browser
mkdir -p "$OUT"
rm -f "$OUT"/*.png
fail() {
    echo "browser-test: FAIL: $*" >&2
    exit 1
}
trap 'fail "line $LINENO: a command failed"' ERR

# --- tools ------------------------------------------------------------------------------------
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    echo "== installing chromium with apt-get"
    [ "$(id -u)" = 0 ] || fail "$CHROMIUM is missing and installing it needs root (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$OUT/apt.log" 2>&1 &&
        apt-get install -y -qq --no-install-recommends chromium >>"$OUT/apt.log" 2>&1 ||
        fail "apt-get install chromium failed, see $OUT/apt.log"
    [ -x "$CHROMIUM" ] || fail "chromium installed but $CHROMIUM is not there"
fi
command -v node >/dev/null && command -v npm >/dev/null || fail "node (>= 20) and npm are needed"
want=$(node -p 'require("./tests/browser/package-lock.json").packages["node_modules/playwright-core"].version')
have=$(node -p 'try { require("./tests/browser/node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$want" != "$have" ]; then
    echo "== npm ci (playwright-core $want)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
fi

# --- server -----------------------------------------------------------------------------------
# Built the way `make test` builds it (dev-dependencies' features included): a plain
# `cargo build --bin` resolves features differently and recompiled ~2.5 min of dependencies
# right after `make test` in CI.
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
        echo "--- last server log lines:" >&2
        tail -n 20 "$TMP/server.log" >&2
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

E2E_USER=e2e
E2E_PASSWORD="e2e-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$E2E_PASSWORD" | "$BIN" --users "$TMP/users.json" user add "$E2E_USER" ||
    fail "could not create the test user"

: >"$TMP/server.log"
# Port 0 lets the kernel pick a free port; the server logs the address it got. Tracing is on,
# so responses carry real trace ids; its spans go to a loopback UDP port nobody reads.
JAEGER_UI_URL=http://127.0.0.1:16686 OTEL_TRACES_EXPORTER=jaeger JAEGER_AGENT_HOST=127.0.0.1 \
    JAEGER_AGENT_PORT=9 SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" \
    RUST_LOG=info NO_COLOR=1 \
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
echo "== server on http://$ADDR"

# --- browser ----------------------------------------------------------------------------------
BASE_URL="http://$ADDR" E2E_USER="$E2E_USER" E2E_PASSWORD="$E2E_PASSWORD" CHROMIUM="$CHROMIUM" \
    JAEGER_UI_URL=http://127.0.0.1:16686 SCREENSHOT_DIR="$OUT" \
    node tests/browser/e2e.mjs || fail "see the messages above; screenshots in $OUT/"
echo "browser-test: PASS (screenshots in $OUT/)"
