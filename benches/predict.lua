-- wrk script: POST one image as multipart field `file`, with a bearer token if BENCH_TOKEN is set.
local f = assert(io.open(os.getenv("BENCH_IMAGE"), "rb"))
local image = f:read("*all")
f:close()
local boundary = "mnistbenchboundary"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"file\"; filename=\"digit.png\"\r\n"
  .. "Content-Type: image/png\r\n\r\n"
  .. image .. "\r\n--" .. boundary .. "--\r\n"

local non2xx = 0
function response(status, headers, body)
  if status ~= 200 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout + e.status))
end
