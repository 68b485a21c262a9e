-- wrk script: POST one image to the inference protocol's infer endpoint as a BYTES tensor in
-- Triton's binary form (what tritonclient sends by default), with a bearer token if
-- BENCH_TOKEN is set. Outputs come back binary too.
local f = assert(io.open(os.getenv("BENCH_IMAGE"), "rb"))
local image = f:read("*all")
f:close()
local function le32(n)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 16777216) % 256)
end
local header = '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":'
  .. '{"binary_data_size":' .. (#image + 4) .. '}}],"parameters":{"binary_data_output":true}}'
wrk.method = "POST"
wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
wrk.body = header .. le32(#image) .. image

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout + e.status))
end
