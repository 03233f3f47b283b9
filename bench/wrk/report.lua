-- Shared by the bench/wrk scripts: checks every response and prints one machine-readable line for bench/run.py.
--
-- Environment (read in every wrk thread):
--   BENCH_EXPECT_STATUS  the status every response must have (default 200)
--   BENCH_EXPECT_BODY    a Lua pattern the body must contain (optional)
-- A response with another status, or without the pattern, counts as "bad"; bench/run.py adds it to wrk's own
-- socket errors and timeouts, and reports the sum as errors. Nothing is hidden.

local M = {}
local threads = {}
local expect_status = tonumber(os.getenv("BENCH_EXPECT_STATUS") or "200")
local expect_body = os.getenv("BENCH_EXPECT_BODY")
if expect_body == "" then expect_body = nil end

bad = 0          -- per wrk thread (each thread has its own Lua state)
bad_sample = nil

function M.setup(thread)
  table.insert(threads, thread)
end

function M.response(status, headers, body)
  if status ~= expect_status or (expect_body and not (body and body:find(expect_body))) then
    bad = bad + 1
    if not bad_sample then bad_sample = tostring(status) .. " " .. string.sub(body or "", 1, 160) end
  end
end

local function quote(s)
  return '"' .. (s or ""):gsub('[%c"\\]', " ") .. '"'
end

function M.done(summary, latency, requests)
  local bad_total, sample = 0, nil
  for _, thread in ipairs(threads) do
    bad_total = bad_total + (thread:get("bad") or 0)
    sample = sample or thread:get("bad_sample")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"bad":%d,"bad_sample":%s,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, bad_total, quote(sample),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

return M
