# Set-up shared by the bench scripts; sourced after they set AGENT_PORT, not run on its own.
# Leaves: $work (a scratch directory), $pids (processes to stop; both cleaned up on exit),
# $bin (the release server, freshly built), a stand-in Jaeger agent on $AGENT_PORT, a user
# `bench` in $work/users.json, and SECRET_KEY exported.

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

need() { # COMMAND [DEBIAN_PACKAGE]: installs the package when the command is missing
  if ! command -v "$1" >/dev/null; then
    echo "installing ${2:-$1}..." >&2
    (apt-get update -qq && apt-get install -y -qq "${2:-$1}") >/dev/null
  fi
}

cargo build --release --quiet --bin mnist-api
bin=target/release/mnist-api

# A stand-in Jaeger agent: reads and counts datagrams, so export really happens.
python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', $AGENT_PORT))
n = 0
while True:
    s.recv(65536); n += 1
    if n % 100 == 0: open('$work/datagrams', 'w').write(str(n))
" &
pids+=($!)

printf 'bench-password\n' | $bin --users "$work/users.json" user add bench 2>/dev/null
export SECRET_KEY=bench-secret-key

wait_ready() { # URL [TRIES of 10 ms] -> seconds until it answered
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

# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# wrk_result: the values of the RESULT line the benches' wrk scripts print, in order.
wrk_result() { sed -nE 's/^RESULT //p' | sed -E 's/[a-z0-9_]+=//g'; }

token() { # PORT -> a bearer token for the bench user
  curl -s "http://127.0.0.1:$1/login" -H 'Content-Type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

# start_otlp_sink GRPC_PORT HTTP_PORT: the discarding OTLP collector (benches/otlp_sink.rs);
# `curl 127.0.0.1:HTTP_PORT/spans` tells how many spans it received.
start_otlp_sink() {
  cargo build --release --quiet --example otlp_sink
  target/release/examples/otlp_sink "$1" "$2" 2>"$work/otlp_sink.log" &
  pids+=($!)
  wait_ready "http://127.0.0.1:$2/spans" >/dev/null
}

# OTLP exporter settings for the sink: otlp_env grpc|http/protobuf GRPC_PORT HTTP_PORT
otlp_env() {
  local port=$2
  [ "$1" = http/protobuf ] && port=$3
  echo OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=$1 \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$port
}

# each_exporter FN: calls `FN LABEL ENV...` for every exporter, with every request sampled
# and with the sampler production runs with (a tenth of the traces that start here, and
# whatever the caller decided for the rest). The sink runs on $GRPC_PORT and $HTTP_PORT.
each_exporter() {
  local tenth="OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1"
  local grpc http
  grpc=$(otlp_env grpc "$GRPC_PORT" "$HTTP_PORT")
  http=$(otlp_env http/protobuf "$GRPC_PORT" "$HTTP_PORT")
  $1 "Jaeger agent, every request" OTEL_TRACES_EXPORTER=jaeger
  $1 "Jaeger agent, 10 % sampled" OTEL_TRACES_EXPORTER=jaeger $tenth
  $1 "OTLP gRPC, every request" $grpc
  $1 "OTLP gRPC, 10 % sampled" $grpc $tenth
  $1 "OTLP HTTP/protobuf, every request" $http
  $1 "OTLP HTTP/protobuf, 10 % sampled" $http $tenth
}
