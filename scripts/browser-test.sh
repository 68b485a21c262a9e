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
TEST_USER=e2e
source scripts/test-server.sh
# Tracing is on, so responses carry real trace ids; its spans go to a loopback UDP port nobody
# reads.
start_server JAEGER_UI_URL=http://127.0.0.1:16686 OTEL_TRACES_EXPORTER=jaeger \
    JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=9

# --- browser ----------------------------------------------------------------------------------
BASE_URL="$BASE" E2E_USER="$TEST_USER" E2E_PASSWORD="$TEST_PASSWORD" CHROMIUM="$CHROMIUM" \
    JAEGER_UI_URL=http://127.0.0.1:16686 SCREENSHOT_DIR="$OUT" \
    node tests/browser/e2e.mjs || fail "see the messages above; screenshots in $OUT/"
echo "browser-test: PASS (screenshots in $OUT/)"
