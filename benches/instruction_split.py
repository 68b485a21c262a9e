#!/usr/bin/env python3
"""Instructions per request by component, from a callgrind file of N requests.

    benches/instruction_split.py CALLGRIND_FILE N [--others]

Each function's own (exclusive) instructions go to the first group whose pattern its name
matches; memcpy/memset stay apart, since their callers span the groups. Used for the table
in BENCHMARKS.md ("Where a request's time goes"); KEEP=DIR benches/instructions.sh keeps the
callgrind files it needs.
"""
import re, sys, subprocess
out, n = sys.argv[1], int(sys.argv[2])
txt = subprocess.run(['callgrind_annotate','--auto=no','--threshold=100',out],capture_output=True,text=True).stdout
groups = [
 ('model forward (candle, gemm, our layers)', r'gemm|candle_core|candle_nn|mnist_api::fused|mnist_api::conv|mnist_api::model|mnist_api::inference::forward|seq_macro|pulp'),
 ('PNG decode and preprocessing', r'\bpng::|fdeflate|image::|mnist_api::preprocess|zune|crc32fast|adler'),
 ('JWT check', r'jsonwebtoken|\bring::|ring_core|base64|mnist_api::tokens|mnist_api::auth'),
 ('tracing: spans in the request', r'tracing_subscriber|tracing_core|tracing::|tracing_opentelemetry|sharded_slab|mnist_api::sampling|mnist_api::routes::request_span'),
 ('tracing: export (SDK batch, Jaeger thrift, UDP)', r'opentelemetry|thrift|integer_encoding|mnist_api::span_export'),
 ('HTTP, warp filters, multipart', r'hyper|httparse|\bhttp::|warp::|multer|h2::|mnist_api::server|mnist_api::routes|mnist_api::upload|mnist_api::linger|headers::|mime'),
 ('JSON response', r'serde_json|zmij|ryu|itoa'),
 ('metrics', r'metrics|quanta'),
 ('async runtime, channels, thread hand-offs', r'tokio|mio::|crossbeam|futures|parking_lot|rayon|oneshot|atomic_waker|mnist_api::worker|mnist_api::decode_pool|mnist_api::inference'),
 ('allocator (mimalloc)', r'mimalloc|\bmi_|_mi_'),
 ('memcpy / memset', r'mem(cpy|move|set)'),
]
tot = None; acc = {g:0 for g,_ in groups}; other = 0; others = []
for line in txt.splitlines():
    m = re.match(r'\s*([\d,]+) \([^)]*\)\s+(.*)', line)
    if not m: continue
    c = int(m.group(1).replace(',','')); name = m.group(2)
    if "PROGRAM TOTALS" in name: tot = c; continue
    fn = name.split(':',1)[1] if ':' in name else name
    # Thread roots (calls in progress when the counters were zeroed) show bogus self costs.
    if tot and c > 0.1 * tot and not re.search(groups[0][1] + '|mem(cpy|move|set)', fn): continue
    for g, rx in groups:
        if re.search(rx, fn): acc[g] += c; break
    else:
        other += c; others.append((c, fn[:120]))
print(f"total {tot//n:,} instructions/request")
for g,_ in groups: print(f"| {g} | {acc[g]//n:,} | {100*acc[g]/tot:.1f} % |")
print(f"| other (kernel entry stubs, std, libc) | {other//n:,} | {100*other/tot:.1f} % |")
if len(sys.argv)>3:
    for c,f in sorted(others, reverse=True)[:15]: print(c//n, f)
