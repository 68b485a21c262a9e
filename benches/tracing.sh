#!/usr/bin/env bash
# What tracing costs /predict: req/s at 64 connections with spans exported to a Jaeger agent,
# OTLP/gRPC and OTLP/HTTP, each with every request sampled and with one in ten, against
# tracing off (`OTEL_TRACES_EXPORTER=none`). The collectors run on loopback and discard what
# they receive: benches/otlp_sink.rs (which decodes every batch) and common.sh's stand-in agent.
#
#   benches/tracing.sh                  RUNS=7 interleaved rounds of DURATION=6s each (~6 min)
#   RUNS=1 DURATION=5s benches/tracing.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-7}
DURATION=${DURATION:-6s}
CONNS=${CONNS:-64}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
AGENT_PORT=${AGENT_PORT:-16851}
GRPC_PORT=${GRPC_PORT:-14317}
HTTP_PORT=${HTTP_PORT:-14318}
BASE_PORT=${BASE_PORT:-18180}
source benches/common.sh
need wrk
start_otlp_sink $GRPC_PORT $HTTP_PORT

labels=() ports=() tokens=()
# setting LABEL ENV...: one server with ENV
setting() {
  local label=$1 port=$((BASE_PORT + ${#labels[@]}))
  shift
  env "$@" JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT RUST_LOG=warn \
    $bin --bind 127.0.0.1:$port --users "$work/users.json" >"$work/api-$port.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$port/health" >/dev/null
  labels+=("$label") ports+=($port) tokens+=("$(token $port)")
}
setting "tracing off (\`none\`)" OTEL_TRACES_EXPORTER=none
# The same again: how far two identical servers drift apart is the noise floor of this run.
setting "tracing off, a second server" OTEL_TRACES_EXPORTER=none
each_exporter setting

declare -A results
for round in $(seq 1 "$RUNS"); do
  echo "round $round of $RUNS..." >&2
  # A new order each round: the position in a round alone moved req/s by up to 10 %.
  for i in $(shuf -e "${!labels[@]}"); do
    results[$i]+="$(BENCH_IMAGE=$IMAGE BENCH_TOKEN=${tokens[$i]} wrk -t2 -c"$CONNS" -d"$DURATION" \
      --latency -s benches/predict.lua "http://127.0.0.1:${ports[$i]}/predict" | wrk_result)"$'\n'
  done
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk -t2 -c$CONNS -d$DURATION, medians of $RUNS interleaved runs (shuffled each round), image $IMAGE"
echo
echo "| setting | req/s | loss vs off | p50 ms | p99 ms | errors | spans dropped |"
echo "|---|---|---|---|---|---|---|"
base=""
for i in "${!labels[@]}"; do
  rows=${results[$i]}
  rps=$(printf '%s' "$rows" | awk 'NF {print $1}' | median)
  p50=$(printf '%s' "$rows" | awk 'NF {print $2}' | median)
  p99=$(printf '%s' "$rows" | awk 'NF {print $3}' | median)
  err=$(printf '%s' "$rows" | awk 'NF {s+=$4} END {print s+0}')
  dropped=$(curl -s "http://127.0.0.1:${ports[$i]}/metrics" |
    awk '/^otel_spans_dropped_total/ {s+=$2} END {print s+0}')
  [ -z "$base" ] && base=$rps
  printf '| %-36s | %6.0f | %5.1f %% | %5.2f | %5.2f | %s | %s |\n' "${labels[$i]}" "$rps" \
    "$(awk -v a="$rps" -v b="$base" 'BEGIN {print 100 * (1 - a / b)}')" "$p50" "$p99" "$err" "$dropped"
done
echo
echo "spans received by the OTLP sink: $(curl -s http://127.0.0.1:$HTTP_PORT/spans)"
echo "datagrams received by the stand-in agent: $(cat "$work/datagrams" 2>/dev/null || echo '<100')"
