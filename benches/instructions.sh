#!/usr/bin/env bash
# Instructions per /predict request, counted by valgrind's callgrind: unlike req/s, the count
# barely moves between runs on a noisy machine, so it can split tracing's cost by part.
#
#   benches/instructions.sh                 the settings below, one server each
#   N=2000 benches/instructions.sh          more requests per setting
#   KEEP=DIR benches/instructions.sh        also keep each setting's profile in DIR, for
#                                           benches/instruction_split.py DIR/FILE N
#
# Each server runs under callgrind; after 200 warm-up requests the counters are zeroed, N
# requests are sent one after another on one keep-alive connection, and the counters are
# dumped once the exporters' batches have left (user-space instructions of every thread).
# Installs valgrind from Debian if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
IMAGE=${IMAGE:-tests/fixtures/seven.png}
AGENT_PORT=${AGENT_PORT:-16841}
GRPC_PORT=${GRPC_PORT:-14327}
HTTP_PORT=${HTTP_PORT:-14328}
source benches/common.sh
need valgrind
start_otlp_sink $GRPC_PORT $HTTP_PORT

# send PORT COUNT TOKEN: COUNT sequential /predict requests on one connection
send() {
  python3 - "$1" "$2" "$3" "$IMAGE" <<'PY'
import http.client, sys
port, n, token, image = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
b = "mnistbenchboundary"
body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
        'Content-Type: image/png\r\n\r\n').encode() + open(image, "rb").read() + f"\r\n--{b}--\r\n".encode()
headers = {"Content-Type": f"multipart/form-data; boundary={b}", "Authorization": "Bearer " + token}
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for _ in range(n):
    c.request("POST", "/predict", body, headers)
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"HTTP {r.status}")
PY
}

# measure LABEL ENV... -> prints instructions per request
measure() {
  local label=$1 port=$((19700 + ${#pids[@]})) vg token out
  shift
  out="$work/callgrind.$port"
  env "$@" JAEGER_AGENT_HOST=127.0.0.1 JAEGER_AGENT_PORT=$AGENT_PORT OTEL_BSP_SCHEDULE_DELAY=1000 \
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    $bin --bind 127.0.0.1:$port --users "$work/users.json" >"$work/log.$port" 2>&1 &
  vg=$!
  pids+=($vg)
  # Start-up under valgrind takes seconds, not milliseconds.
  wait_ready "http://127.0.0.1:$port/health" 6000 >/dev/null
  token=$(token $port)
  send $port 200 "$token"
  sleep 3 # the warm-up's spans leave before counting starts
  callgrind_control -z $vg >/dev/null 2>&1
  send $port "$N" "$token"
  sleep 3 # and the measured requests' spans are exported before the dump
  callgrind_control -d $vg >/dev/null 2>&1
  kill $vg
  wait $vg 2>/dev/null || true
  # KEEP=DIR keeps the profile for benches/instruction_split.py.
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$out".*1 "$KEEP/$(echo "$label" | tr -c 'A-Za-z0-9\n' '_' | cut -c1-40).callgrind"
  fi
  local total
  total=$(grep -hE '^(summary|totals):' "$out".*1 | head -1 | awk '{print $2}')
  # Inclusive count of the SDK batch processor's task: receiving, converting, encoding and
  # sending the spans, everything after a span has ended.
  local exporting
  exporting=$(callgrind_annotate --inclusive=yes "$out".*1 2>/dev/null |
    grep -m1 -E 'BatchSpanProcessorInternal<R>::run::\{\{closure\}\} \[' |
    awk '{gsub(",", "", $1); print $1}' || true)
  printf '| %-58s | %9d | %9d |\n' "$label" $((total / N)) $((${exporting:-0} / N))
}

echo "callgrind, $N sequential requests per setting, image $IMAGE"
echo
echo "| setting | instructions per request | of which the export task |"
echo "|---|---|---|"
measure "tracing off (\`OTEL_TRACES_EXPORTER=none\`)" OTEL_TRACES_EXPORTER=none
measure "every trace dropped by the sampler (\`OTEL_TRACES_SAMPLER=always_off\`)" OTEL_TRACES_SAMPLER=always_off
each_exporter measure
