#!/usr/bin/env bash
# The inference protocol's infer path against /predict, side by side on one server (auth on,
# tracing to a local UDP "agent"): the same 28x28 PNG as multipart `file` and as a BYTES tensor
# in Triton's binary form. Runs are interleaved; medians printed.
#
#   benches/v2.sh                 RUNS (3) rounds of DURATION (10s) each
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
API_PORT=${API_PORT:-18090}
AGENT_PORT=${AGENT_PORT:-16841}
source benches/common.sh
need wrk

JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT OTEL_TRACES_EXPORTER=jaeger RUST_LOG=warn \
  $bin --bind 127.0.0.1:$API_PORT --users "$work/users.json" >"$work/api.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$API_PORT/health" >/dev/null
tok=$(token $API_PORT)

# run SCRIPT PATH -> "rps p50 p99 errors"
run() {
  BENCH_IMAGE=$IMAGE BENCH_TOKEN=$tok wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$1" \
    "http://127.0.0.1:$API_PORT$2" |
    wrk_result
}

predict="" v2=""
for round in $(seq 1 "$RUNS"); do
  echo "round $round of $RUNS..." >&2
  predict+="$(run benches/predict.lua /predict)"$'\n'
  v2+="$(run benches/v2.lua /v2/models/mnist/infer)"$'\n'
done

row() { # LABEL ROWS -> prints; sets M_RPS
  local rps p50 p99 err
  rps=$(printf '%s' "$2" | awk 'NF {print $1}' | median)
  p50=$(printf '%s' "$2" | awk 'NF {print $2}' | median)
  p99=$(printf '%s' "$2" | awk 'NF {print $3}' | median)
  err=$(printf '%s' "$2" | awk 'NF {s+=$4} END {print s+0}')
  printf '| %-52s | %8.0f | %7.2f | %7.2f | %6s |\n' "$1" "$rps" "$p50" "$p99" "$err"
  M_RPS=$rps
}
echo
echo "machine: $(nproc) cores; wrk -t2 -c$CONNS -d$DURATION, medians of $RUNS interleaved runs, image $IMAGE"
echo
echo "| path | req/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|"
row "POST /predict (multipart)" "$predict"
p=$M_RPS
row "POST /v2/models/mnist/infer (BYTES, binary extension)" "$v2"
awk -v a="$M_RPS" -v b="$p" 'BEGIN {printf "v2 infer / predict: %.1f%% of req/s (floor: at least 90%%)\n", 100 * a / b}'
