-- wrk script: as predict.lua, and counts which weights answered (BENCH_SHA_A, BENCH_SHA_B),
-- so a run under reloads shows every answer came from one of the two files.
local f = assert(io.open(os.getenv("BENCH_IMAGE"), "rb"))
local image = f:read("*all")
f:close()
local boundary = "mnistbenchboundary"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"file\"; filename=\"digit.png\"\r\n"
  .. "Content-Type: image/png\r\n\r\n"
  .. image .. "\r\n--" .. boundary .. "--\r\n"

local sha_a, sha_b = os.getenv("BENCH_SHA_A"), os.getenv("BENCH_SHA_B")
a, b, other = 0, 0, 0
function response(status, headers, body)
  local sha = body and string.match(body, '"sha256":"(%x+)"')
  if sha == sha_a then a = a + 1 elseif sha == sha_b then b = b + 1 else other = other + 1 end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  local ta, tb, to = 0, 0, 0
  for _, t in ipairs(threads) do
    ta, tb, to = ta + t:get("a"), tb + t:get("b"), to + t:get("other")
  end
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d a=%d b=%d other=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout + e.status, ta, tb, to))
end
