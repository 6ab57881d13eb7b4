-- wrk script: POST the benchmark AdmissionReview, print a JSON summary line at the end.
-- usage: wrk ... -s bench/post.lua URL   (BENCH_REVIEW names the body file; BENCH_CLOSE=1 adds Connection: close)
local path = os.getenv("BENCH_REVIEW") or "tests/data/reviews/ml-inference-llm-server-84f7f4dd45-create.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
