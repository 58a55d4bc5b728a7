-- wrk script: replay pre-generated, signed Standard Webhooks deliveries.
--
-- BENCH_REQS names a file prefix; thread t reads "<prefix>.<t>.tsv" (id, timestamp, signature,
-- body per line), so each thread has its own slice and threads never repeat each other. Every
-- request is formatted once in init(); request() only hands out the next one. A thread that
-- runs past the end of its slice starts again and counts a wrap (the harness refuses results
-- of unique-event scenarios that wrapped). done() prints one JSON line for the harness.

local prefix = os.getenv("BENCH_REQS")
local target = os.getenv("BENCH_PATH") or "/"
local counter = 0
local threads = {}

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

reqs = {}
n = 0
i = 0
wraps = 0

function init(args)
   local f = assert(io.open(prefix .. "." .. tid .. ".tsv", "r"))
   for line in f:lines() do
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      if id then
         n = n + 1
         reqs[n] = wrk.format("POST", target, {
            ["Content-Type"] = "application/json",
            ["webhook-id"] = id,
            ["webhook-timestamp"] = ts,
            ["webhook-signature"] = sig,
         }, body)
      end
   end
   f:close()
   assert(n > 0, "empty request slice")
end

function request()
   i = i + 1
   if i > n then
      i = 1
      wraps = wraps + 1
   end
   return reqs[i]
end

function done(summary, latency, requests)
   local total_wraps = 0
   for _, t in ipairs(threads) do
      total_wraps = total_wraps + (t:get("wraps") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_s":%.6f,"errors":{"connect":%d,"read":%d,'
         .. '"write":%d,"status":%d,"timeout":%d},"wraps":%d,"latency_ms":{"p50":%.3f,'
         .. '"p90":%.3f,"p99":%.3f,"p999":%.3f,"max":%.3f,"mean":%.3f}}\n',
      summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status,
      e.timeout, total_wraps, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000,
      latency.mean / 1000))
end
