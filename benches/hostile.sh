#!/usr/bin/env bash
# Hostile load on loopback, against the release server with auth and tracing on:
#   1. soak: /predict at 64 connections for SOAK (60 s): RSS at 10 s and at the end, errors, p99;
#   2. login flood: /predict req/s alone, then while 64 connections from another loopback
#      address (127.0.0.2) send wrong passwords as fast as the server answers them; and how long
#      a correct login from a third address (127.0.0.3) takes during the flood.
#
#   benches/hostile.sh                 both, as `make bench` runs them
#   SOAK=20s FLOOD=10s benches/hostile.sh     a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK=${SOAK:-60s}
FLOOD=${FLOOD:-10s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
API_PORT=${API_PORT:-18090}
AGENT_PORT=${AGENT_PORT:-16832}
source benches/common.sh
need wrk

printf 'other-password\n' | $bin --users "$work/users.json" user add alice 2>/dev/null
JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT RUST_LOG=warn \
  $bin --bind 0.0.0.0:$API_PORT --users "$work/users.json" >"$work/api.log" 2>&1 &
api_pid=$!
pids+=($api_pid)
wait_ready "http://127.0.0.1:$API_PORT/health" >/dev/null
TOKEN=$(token $API_PORT)
URL=http://127.0.0.1:$API_PORT/predict

# wrk_predict DURATION -> "rps p50 p99 errors"
wrk_predict() {
  BENCH_IMAGE=$IMAGE BENCH_TOKEN=$TOKEN wrk -t2 -c"$CONNS" -d"$1" --latency \
    -s benches/predict.lua "$URL" |
    wrk_result
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$api_pid/status; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "== soak: $CONNS connections for $SOAK"
(sleep 10; rss_mb >"$work/rss10") &
read -r rps p50 p99 errors <<<"$(wrk_predict "$SOAK")"
echo "req/s $rps, p50 ${p50} ms, p99 ${p99} ms, errors $errors"
echo "RSS after 10 s: $(cat "$work/rss10") MB; at the end: $(rss_mb) MB; peak: $(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$api_pid/status) MB"

# The flood: 64 connections from 127.0.0.2, each sending a wrong password for `bench` again as
# soon as the previous answer (401, then 429 once throttled) arrives. Python, since wrk cannot
# choose its source address; the throttled answers are slow on purpose, so it keeps up.
flood() { # SECONDS
  python3 - "$API_PORT" "$1" <<'EOF'
import asyncio, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
body = b'{"username":"bench","password":"wrong"}'
req = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
counts = {}
async def one(deadline):
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    while time.monotonic() < deadline:
        w.write(req); await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        await r.readexactly(length)
        counts[status] = counts.get(status, 0) + 1
        if b"connection: close" in head.lower():
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
async def main():
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one(deadline) for _ in range(64)), return_exceptions=True)
    print(" ".join(f"{k}:{v}" for k, v in sorted(counts.items())))
asyncio.run(main())
EOF
}
seconds=${FLOOD%s}
echo
echo "== login flood: /predict at $CONNS connections for $FLOOD, alone and during the flood, $RUNS rounds"
for round in $(seq 1 "$RUNS"); do
  read -r alone _ <<<"$(wrk_predict "$FLOOD")"
  flood "$((seconds + 2))" >"$work/flood-$round" &
  flood_pid=$!
  sleep 1
  read -r during _ <<<"$(wrk_predict "$FLOOD")"
  # A correct login from a third address while the flood goes on.
  login_s=$(curl -s -o /dev/null -w '%{time_total}' --interface 127.0.0.3 \
    "http://127.0.0.1:$API_PORT/login" -H 'Content-Type: application/json' \
    -d '{"username":"alice","password":"other-password"}')
  login_code=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.3 \
    "http://127.0.0.1:$API_PORT/login" -H 'Content-Type: application/json' \
    -d '{"username":"alice","password":"other-password"}')
  wait $flood_pid
  echo "$alone $during $login_s $login_code $(cat "$work/flood-$round")" >>"$work/flood"
  echo "round $round: alone $alone req/s, during $during req/s, correct login ${login_s}s ($login_code), flood answers: $(cat "$work/flood-$round")"
done
alone=$(awk '{print $1}' "$work/flood" | median)
during=$(awk '{print $2}' "$work/flood" | median)
login=$(awk '{print $3}' "$work/flood" | median)
awk -v a="$alone" -v d="$during" -v l="$login" \
  'BEGIN {printf "medians: alone %.0f req/s, during the flood %.0f req/s (%.0f%%); correct login %.0f ms\n", a, d, 100 * d / a, 1000 * l}'
