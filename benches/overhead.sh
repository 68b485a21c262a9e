#!/usr/bin/env bash
# Per-request overhead against an earlier commit, side by side in one run: the earlier main
# (BASE, default af2275c) is built in a git worktree under target/, then it, this checkout
# and this checkout again (the noise control) serve /predict with auth on and every request
# traced to the stand-in Jaeger agent. wrk runs at 64 connections and at 1, rounds interleaved
# and shuffled, so the ratios survive this machine's drift.
#
#   benches/overhead.sh                 RUNS=7 rounds, DURATION=6s per run (~5 min once built)
#   BASE=c06a6bb RUNS=3 benches/overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:-af2275c}
RUNS=${RUNS:-7}
DURATION=${DURATION:-6s}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
AGENT_PORT=${AGENT_PORT:-16861}
BASE_PORT=${BASE_PORT:-18280}
source benches/common.sh
need wrk

# The baseline's own worktree and target directory, kept between runs: building it takes
# minutes, and the same commit never needs building twice.
base_dir=target/baseline/$BASE
if [ ! -x "$base_dir/bin/mnist-api" ]; then
  rm -rf "$base_dir/src"
  git worktree prune
  git worktree add --detach "$base_dir/src" "$BASE" >/dev/null
  CARGO_TARGET_DIR="$PWD/$base_dir/target" cargo build --release --quiet --bin mnist-api \
    --manifest-path "$base_dir/src/Cargo.toml"
  mkdir -p "$base_dir/bin"
  cp "$base_dir/target/release/mnist-api" "$base_dir/bin/"
  git worktree remove --force "$base_dir/src"
fi
# Each server runs its own commit's model: an earlier binary refuses a later architecture.
base_weights=$base_dir/bin/mnist_cnn.safetensors
[ -s "$base_weights" ] || git show "$BASE:weights/mnist_cnn.safetensors" >"$base_weights"

labels=() ports=() tokens=() spids=()
# server LABEL BINARY [WEIGHTS]: one server, auth on, every request traced to the agent
server() {
  local port=$((BASE_PORT + ${#labels[@]}))
  JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT OTEL_TRACES_EXPORTER=jaeger \
    RUST_LOG=warn "$2" --bind 127.0.0.1:$port --users "$work/users.json" \
    --weights "${3:-weights/mnist_cnn.safetensors}" >"$work/api-$port.log" 2>&1 &
  pids+=($!) spids+=($!)
  wait_ready "http://127.0.0.1:$port/health" >/dev/null
  labels+=("$1") ports+=($port) tokens+=("$(token $port)")
}
server "$BASE (before)" "$base_dir/bin/mnist-api" "$base_weights"
server "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo +changes)" "$bin"
# The same again: how far two identical servers drift apart is the noise floor of this run.
server "the same, a second server" "$bin"

declare -A results
for round in $(seq 1 "$RUNS"); do
  echo "round $round of $RUNS..." >&2
  # A new order each round: a run's position in the round alone moved req/s by up to 10 %.
  for job in $(shuf -e $(for i in "${!labels[@]}"; do echo "$i:64" "$i:1"; done)); do
    i=${job%%:*} c=${job##*:} t=2
    [ "$c" = 1 ] && t=1
    results[$job]+="$(BENCH_IMAGE=$IMAGE BENCH_TOKEN=${tokens[$i]} wrk -t$t -c"$c" -d"$DURATION" \
      --latency -s benches/predict.lua "http://127.0.0.1:${ports[$i]}/predict" | wrk_result)"$'\n'
  done
done

# col JOB N: median of column N of JOB's runs
col() { printf '%s' "${results[$1]}" | awk -v n="$2" 'NF {print $n}' | median; }
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk -d$DURATION (-t2 at 64 connections, -t1 at 1), medians of $RUNS shuffled rounds, image $IMAGE,"
echo "auth on, every request traced to a Jaeger agent on loopback"
echo
echo "| server | 64 conns req/s | ×before | p50 ms | p99 ms | 1 conn p50 ms | ×before | p99 ms | ×before | errors | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for i in "${!labels[@]}"; do
  rps=$(col "$i:64" 1) p50=$(col "$i:64" 2) p99=$(col "$i:64" 3)
  one50=$(col "$i:1" 2) one99=$(col "$i:1" 3)
  err=$(printf '%s%s' "${results[$i:64]}" "${results[$i:1]}" | awk 'NF {s+=$4} END {print s+0}')
  rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/${spids[$i]}/status)
  if [ "$i" = 0 ]; then b_rps=$rps b50=$one50 b99=$one99; fi
  printf '| %s | %.0f | %.2f | %.2f | %.2f | %.3f | %.2f | %.3f | %.2f | %s | %s |\n' "${labels[$i]}" \
    "$rps" "$(awk -v a="$rps" -v b="$b_rps" 'BEGIN {print a / b}')" "$p50" "$p99" \
    "$one50" "$(awk -v a="$one50" -v b="$b50" 'BEGIN {print a / b}')" \
    "$one99" "$(awk -v a="$one99" -v b="$b99" 'BEGIN {print a / b}')" "$err" "$rss"
done
echo
echo "datagrams received by the stand-in agent: $(cat "$work/datagrams" 2>/dev/null || echo '<100')"
