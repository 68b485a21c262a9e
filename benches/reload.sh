#!/usr/bin/env bash
# Model reloads under load: /predict at CONNS connections (auth on, tracing to a local UDP
# "agent") while an admin reloads the model repository RELOADS times, each reload serving the
# other of two weight files (A: the committed weights; B: the same tensors with another header,
# so another SHA-256). Each round runs wrk once without reloads and once with them; medians
# of the rounds are printed, with how many answers came from A, B, or anything else.
#
#   benches/reload.sh             RUNS (3) rounds of DURATION (20s) runs, RELOADS (10) per run
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-20}
RELOADS=${RELOADS:-10}
CONNS=${CONNS:-64}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
API_PORT=${API_PORT:-18095}
AGENT_PORT=${AGENT_PORT:-16846}
source benches/common.sh
need wrk

weights=weights/mnist_cnn.safetensors
a="$work/a.safetensors" b="$work/b.safetensors"
cp "$weights" "$a"
# B: the header's `created` stamp changed in place, same length; a valid file with other bytes.
python3 - "$a" "$b" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
n = int.from_bytes(data[:8], "little")
header = data[8:8 + n].decode()
m = re.search(r'"created":"(\d)', header)
digit = "1" if m.group(1) != "1" else "2"
header = header[:m.start(1)] + digit + header[m.start(1) + 1:]
open(sys.argv[2], "wb").write(data[:8] + header.encode() + data[8 + n:])
PY
sha_a=$(sha256sum "$a" | cut -d' ' -f1) sha_b=$(sha256sum "$b" | cut -d' ' -f1)
[ "$sha_a" != "$sha_b" ]

repo="$work/repo"
mkdir -p "$repo/mnist/1"
cp "$a" "$repo/mnist/1/model.safetensors"
printf 'boss-password\n' | $bin --users "$work/users.json" user add boss --admin 2>/dev/null

JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT OTEL_TRACES_EXPORTER=jaeger RUST_LOG=warn \
  $bin --bind 127.0.0.1:$API_PORT --users "$work/users.json" --model-repository "$repo" \
  >"$work/api.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$API_PORT/health" >/dev/null
tok=$(token $API_PORT)
admin=$(curl -s "http://127.0.0.1:$API_PORT/login" -H 'Content-Type: application/json' \
  -d '{"username":"boss","password":"boss-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

echo 2 >"$work/next"
# Writes the next version (B after A after B...) as the trainer does, then asks for a reload.
reload_loop() {
  local gap failed=0 next
  next=$(cat "$work/next")
  gap=$(awk -v d="$DURATION" -v n="$RELOADS" 'BEGIN {printf "%.2f", d * 0.8 / n}')
  for _ in $(seq 1 "$RELOADS"); do
    sleep "$gap"
    local src=$a
    [ $((next % 2)) = 0 ] && src=$b
    mkdir -p "$repo/mnist/.tmp-$next"
    cp "$src" "$repo/mnist/.tmp-$next/model.safetensors"
    mv "$repo/mnist/.tmp-$next" "$repo/mnist/$next"
    curl -s -X POST -H "Authorization: Bearer $admin" \
      "http://127.0.0.1:$API_PORT/v2/repository/models/mnist/load" | grep -q '"changed":true' ||
      failed=$((failed + 1))
    next=$((next + 1))
  done
  echo "$next" >"$work/next"
  echo "$failed" >"$work/failed-loads"
}

run() { # -> "rps p50 p99 errors a b other"
  BENCH_IMAGE=$IMAGE BENCH_TOKEN=$tok BENCH_SHA_A=$sha_a BENCH_SHA_B=$sha_b \
    wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s benches/reload.lua \
    "http://127.0.0.1:$API_PORT/predict" |
    wrk_result
}

quiet="" busy="" failed_loads=0
for round in $(seq 1 "$RUNS"); do
  echo "round $round of $RUNS..." >&2
  quiet+="$(run)"$'\n'
  reload_loop &
  loop=$!
  busy+="$(run)"$'\n'
  wait $loop
  failed_loads=$((failed_loads + $(cat "$work/failed-loads")))
done

row() { # LABEL ROWS
  local rps p50 p99 err na nb no
  rps=$(printf '%s' "$2" | awk 'NF {print $1}' | median)
  p50=$(printf '%s' "$2" | awk 'NF {print $2}' | median)
  p99=$(printf '%s' "$2" | awk 'NF {print $3}' | median)
  err=$(printf '%s' "$2" | awk 'NF {s+=$4} END {print s+0}')
  na=$(printf '%s' "$2" | awk 'NF {s+=$5} END {print s+0}')
  nb=$(printf '%s' "$2" | awk 'NF {s+=$6} END {print s+0}')
  no=$(printf '%s' "$2" | awk 'NF {s+=$7} END {print s+0}')
  printf '| %-28s | %8.0f | %7.2f | %7.2f | %6s | %8s | %8s | %5s |\n' "$1" "$rps" "$p50" "$p99" "$err" "$na" "$nb" "$no"
  M_P99=$p99
}
echo
echo "machine: $(nproc) cores; wrk -t2 -c$CONNS -d${DURATION}s, medians of $RUNS rounds, $RELOADS reloads per busy run"
echo
echo "| run | req/s | p50 ms | p99 ms | errors | from A | from B | other |"
echo "|---|---|---|---|---|---|---|---|"
row "no reloads" "$quiet"
q=$M_P99
row "$RELOADS reloads, A and B in turn" "$busy"
awk -v a="$M_P99" -v b="$q" 'BEGIN {printf "p99 with reloads / without: %.2fx (floor: at most 2x)\n", a / b}'
echo "loads that did not swap: $failed_loads of $((RUNS * RELOADS))"
curl -s "http://127.0.0.1:$API_PORT/metrics" | grep -E '^model_(reloads_total|versions_loaded)'
