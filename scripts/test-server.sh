# The debug server for the test scripts (api-fuzz, browser-test, interop-test). Sourced after
# they define `fail` and OUT; not run on its own.
#
# Builds the server as `make test` does (dev-dependencies' features included: a plain
# `cargo build --bin` resolves features differently and recompiled ~2.5 min of dependencies
# right after `make test` in CI), and creates a throwaway user, TEST_USER with a random
# TEST_PASSWORD, in a scratch users file. `start_server` starts it; it stops on exit, and on
# failure its log goes to $OUT/server.log with the last lines printed.

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

TEST_USER=${TEST_USER:-test}
TEST_PASSWORD="$TEST_USER-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$TEST_PASSWORD" | "$BIN" --users "$TMP/users.json" user add "$TEST_USER" >/dev/null ||
    fail "could not create the test user"

# start_server [NAME=VALUE...]: starts the server on a free loopback port (the kernel picks it,
# the server logs it) with the committed weights and those environment variables; sets BASE.
start_server() {
    : >"$TMP/server.log"
    env SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" RUST_LOG=info NO_COLOR=1 "$@" \
        "$BIN" --bind 127.0.0.1:0 --users "$TMP/users.json" --weights weights/mnist_cnn.safetensors \
        >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    local addr=
    for _ in $(seq 1 300); do
        addr=$(sed -nE 's/\x1b\[[0-9;]*m//g; s/.*listening.*address=(127\.0\.0\.1:[0-9]+).*/\1/p' \
            "$TMP/server.log" | head -n 1)
        [ -n "$addr" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited at start"
        sleep 0.1
    done
    [ -n "$addr" ] || fail "the server did not log its address within 30 s"
    BASE="http://$addr"
    echo "== server on $BASE"
}

# login: prints a bearer token for TEST_USER.
login() {
    python3 - "$BASE" "$TEST_USER" "$TEST_PASSWORD" <<'PY' || fail "could not log in as $TEST_USER"
import json, sys, urllib.request
base, user, password = sys.argv[1:]
req = urllib.request.Request(base + "/login", method="POST",
    data=json.dumps({"username": user, "password": password}).encode(),
    headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=30))["access_token"])
PY
}
