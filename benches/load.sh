#!/usr/bin/env bash
# Load test on loopback: mnist-api (auth on, tracing to a local UDP "agent") against the
# original Flask app, driven by the same wrk script with the same 28x28 PNG.
#
#   benches/load.sh            everything below, RUNS times each, medians printed
#   RUNS=1 DURATION=5s benches/load.sh    a quick look
#
# Installs wrk from Debian if it is missing. Needs ../shared/peers/seed-flask for the peer.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
FLASK_DIR=${FLASK_DIR:-../shared/peers/seed-flask}
API_PORT=${API_PORT:-18080}
FLASK_PORT=${FLASK_PORT:-15055}
AGENT_PORT=${AGENT_PORT:-16831}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
  echo "installing wrk..." >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
cargo build --release --quiet --bin mnist-api
bin=target/release/mnist-api

# A stand-in Jaeger agent: reads and counts datagrams, so export really happens.
python3 -c "
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',$AGENT_PORT))
n=0
while True:
    s.recv(65536); n+=1
    if n%100==0: open('$work/datagrams','w').write(str(n))
" &
pids+=($!)

printf 'bench-password\n' | $bin --users "$work/users.json" user add bench 2>/dev/null
export SECRET_KEY=bench-secret-key

wait_ready() { # url [tries of 10 ms] -> seconds until it answered
  local start
  start=$(date +%s.%N)
  for _ in $(seq 1 "${2:-500}"); do
    if curl -fs "$1" >/dev/null 2>&1; then
      awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN {printf "%.3f", a - b}'
      return 0
    fi
    sleep 0.01
  done
  echo "never ready: $1" >&2
  return 1
}

# start_api EXTRA_ENV... ; sets API_PID and READY
start_api() {
  env "$@" JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT RUST_LOG=warn \
    $bin --bind 127.0.0.1:$API_PORT --users "$work/users.json" >"$work/api.log" 2>&1 &
  API_PID=$!
  pids+=($API_PID)
  READY=$(wait_ready "http://127.0.0.1:$API_PORT/health")
}
stop_api() { kill "$API_PID"; wait "$API_PID" 2>/dev/null || true; }

token() {
  curl -s "http://127.0.0.1:$API_PORT/login" -H 'Content-Type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

# run_wrk URL CONNS TOKEN -> "rps p50 p99 errors"
run_wrk() {
  local out threads=2
  [ "$2" -lt 2 ] && threads=1
  out=$(BENCH_IMAGE=$IMAGE BENCH_TOKEN=$3 wrk -t"$threads" -c"$2" -d"$DURATION" --latency \
    -s benches/predict.lua "$1")
  echo "$out" | sed -nE 's/^RESULT rps=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) errors=([0-9]+)/\1 \2 \3 \4/p'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# measure LABEL URL CONNS TOKEN -> prints a row, stores medians in M_RPS
measure() {
  local rows=()
  for _ in $(seq 1 "$RUNS"); do rows+=("$(run_wrk "$2" "$3" "$4")"); done
  local rps p50 p99 err
  rps=$(printf '%s\n' "${rows[@]}" | awk '{print $1}' | median)
  p50=$(printf '%s\n' "${rows[@]}" | awk '{print $2}' | median)
  p99=$(printf '%s\n' "${rows[@]}" | awk '{print $3}' | median)
  err=$(printf '%s\n' "${rows[@]}" | awk '{s+=$4} END {print s}')
  printf '| %-44s | %5s | %8.0f | %7.2f | %7.2f | %6s |\n' "$1" "$3" "$rps" "$p50" "$p99" "$err"
  M_RPS=$rps
}

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk -t2 (-t1 for 1 connection) -d$DURATION, medians of $RUNS runs, image $IMAGE"
echo
echo "| target | conns | req/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"

start_api OTEL_TRACES_EXPORTER=jaeger
api_ready=$READY
TOKEN=$(token)
measure "mnist-api, auth, Jaeger export" "http://127.0.0.1:$API_PORT/predict" "$CONNS" "$TOKEN"
api_rps=$M_RPS
api_rss=$(awk '/VmHWM/ {print $2/1024}' /proc/$API_PID/status)
for c in 1 16; do measure "mnist-api, auth, Jaeger export" "http://127.0.0.1:$API_PORT/predict" "$c" "$TOKEN"; done
stop_api

start_api OTEL_TRACES_EXPORTER=none
TOKEN=$(token)
measure "mnist-api, auth, tracing off" "http://127.0.0.1:$API_PORT/predict" "$CONNS" "$TOKEN"
untraced_rps=$M_RPS
stop_api

for c in 1 16 "$CONNS"; do
  start_api OTEL_TRACES_EXPORTER=jaeger MNIST_API_MAX_BATCH=1
  TOKEN=$(token)
  measure "mnist-api, auth, Jaeger, batching off" "http://127.0.0.1:$API_PORT/predict" "$c" "$TOKEN"
  stop_api
done

flask_rps=""
if [ -x "$FLASK_DIR/run.sh" ]; then
  "$FLASK_DIR/run.sh" "$FLASK_PORT" 2 >"$work/flask.log" 2>&1 &
  pids+=($!)
  # The first start creates its virtualenv from PyPI: allow a few minutes.
  if wait_ready "http://127.0.0.1:$FLASK_PORT/health" 30000 >/dev/null; then
    measure "original Flask app (stub /predict, gunicorn -w 2)" "http://127.0.0.1:$FLASK_PORT/predict" "$CONNS" ""
    flask_rps=$M_RPS
  fi
fi

echo
echo "mnist-api ready after ${api_ready}s; peak RSS during the $CONNS-connection run ${api_rss} MB"
echo "datagrams received by the stand-in agent: $(cat "$work/datagrams" 2>/dev/null || echo '<100')"
awk -v a="$api_rps" -v b="$untraced_rps" 'BEGIN {printf "tracing cost: %.1f%% of req/s\n", 100 * (1 - a / b)}'
if [ -n "$flask_rps" ]; then
  awk -v a="$api_rps" -v b="$flask_rps" -v c="$CONNS" \
    'BEGIN {printf "mnist-api / Flask at %s connections: %.1fx\n", c, a / b}'
fi
