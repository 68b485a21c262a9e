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
source benches/common.sh
need wrk

# start_api PORT EXTRA_ENV... ; sets API_PID and READY
start_api() {
  local port=$1
  shift
  env "$@" JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT RUST_LOG=warn \
    $bin --bind 127.0.0.1:$port --users "$work/users.json" >"$work/api-$port.log" 2>&1 &
  API_PID=$!
  pids+=($API_PID)
  READY=$(wait_ready "http://127.0.0.1:$port/health")
}

# run_wrk URL CONNS TOKEN -> "rps p50 p99 errors"
run_wrk() {
  local out threads=2
  [ "$2" -lt 2 ] && threads=1
  out=$(BENCH_IMAGE=$IMAGE BENCH_TOKEN=$3 wrk -t"$threads" -c"$2" -d"$DURATION" --latency \
    -s benches/predict.lua "$1")
  echo "$out" | wrk_result
}


# Every configuration runs in its own server, all started up front, and the measurements are
# interleaved round by round: this machine's speed drifts by 10-20 % over minutes, and
# back-to-back blocks per configuration measured the drift as much as the configuration.
declare -A results
# record KEY URL CONNS TOKEN: one wrk run, appended to results[KEY]
record() {
  results[$1]+="$(run_wrk "$2" "$3" "$4")"$'\n'
}
# row LABEL KEY CONNS -> prints the medians; sets M_RPS
row() {
  local rows=${results[$2]} rps p50 p99 err
  rps=$(printf '%s' "$rows" | awk 'NF {print $1}' | median)
  p50=$(printf '%s' "$rows" | awk 'NF {print $2}' | median)
  p99=$(printf '%s' "$rows" | awk 'NF {print $3}' | median)
  err=$(printf '%s' "$rows" | awk 'NF {s+=$4} END {print s+0}')
  printf '| %-50s | %5s | %8.0f | %7.2f | %7.2f | %6s |\n' "$1" "$3" "$rps" "$p50" "$p99" "$err"
  M_RPS=$rps
}

TRACED=$API_PORT UNTRACED=$((API_PORT + 1)) UNBATCHED=$((API_PORT + 2))
start_api $TRACED OTEL_TRACES_EXPORTER=jaeger
api_ready=$READY
api_pid=$API_PID
start_api $UNTRACED OTEL_TRACES_EXPORTER=none
start_api $UNBATCHED OTEL_TRACES_EXPORTER=jaeger MNIST_API_MAX_BATCH=1
declare -A tokens=([$TRACED]=$(token $TRACED) [$UNTRACED]=$(token $UNTRACED) [$UNBATCHED]=$(token $UNBATCHED))

flask=""
if [ -x "$FLASK_DIR/run.sh" ]; then
  "$FLASK_DIR/run.sh" "$FLASK_PORT" 2 >"$work/flask.log" 2>&1 &
  pids+=($!)
  # The first start creates its virtualenv from PyPI: allow a few minutes.
  if wait_ready "http://127.0.0.1:$FLASK_PORT/health" 30000 >/dev/null; then
    flask=yes
  fi
fi

url() { echo "http://127.0.0.1:$1/predict"; }
for round in $(seq 1 "$RUNS"); do
  echo "round $round of $RUNS..." >&2
  for c in "$CONNS" 16 1; do
    record "traced $c" "$(url $TRACED)" "$c" "${tokens[$TRACED]}"
    record "unbatched $c" "$(url $UNBATCHED)" "$c" "${tokens[$UNBATCHED]}"
  done
  record "untraced $CONNS" "$(url $UNTRACED)" "$CONNS" "${tokens[$UNTRACED]}"
  [ -n "$flask" ] && record "flask $CONNS" "http://127.0.0.1:$FLASK_PORT/predict" "$CONNS" ""
done
api_rss=$(awk '/VmHWM/ {print $2/1024}' /proc/$api_pid/status)

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk -t2 (-t1 for 1 connection) -d$DURATION, medians of $RUNS interleaved runs, image $IMAGE"
echo
echo "| target | conns | req/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
row "mnist-api, auth, Jaeger export" "traced $CONNS" "$CONNS"
api_rps=$M_RPS
row "mnist-api, auth, tracing off" "untraced $CONNS" "$CONNS"
untraced_rps=$M_RPS
for c in "$CONNS" 16 1; do
  row "mnist-api, auth, Jaeger export, batching on" "traced $c" "$c"
  batched=$M_RPS
  row "mnist-api, auth, Jaeger export, batching off" "unbatched $c" "$c"
  awk -v a="$batched" -v b="$M_RPS" -v c="$c" \
    'BEGIN {printf "|   batching gain at %s connections: %+.1f%% | | | | | |\n", c, 100 * (a / b - 1)}'
done
flask_rps=""
if [ -n "$flask" ]; then
  row "original Flask app (stub /predict, gunicorn -w 2)" "flask $CONNS" "$CONNS"
  flask_rps=$M_RPS
fi

echo
echo "mnist-api ready after ${api_ready}s; its peak RSS over the whole run ${api_rss} MB"
echo "datagrams received by the stand-in agent: $(cat "$work/datagrams" 2>/dev/null || echo '<100')"
awk -v a="$api_rps" -v b="$untraced_rps" 'BEGIN {printf "tracing cost: %.1f%% of req/s\n", 100 * (1 - a / b)}'
if [ -n "$flask_rps" ]; then
  awk -v a="$api_rps" -v b="$flask_rps" -v c="$CONNS" \
    'BEGIN {printf "mnist-api / Flask at %s connections: %.1fx\n", c, a / b}'
fi
