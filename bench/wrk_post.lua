-- wrk script for bench/service.py: POST a JSON body whose id varies per request, then print one
-- JSON line with the latency percentiles and the error counts (non-2xx/3xx included).
--
--   wrk -t1 -c1 -d10s --latency -s bench/wrk_post.lua http://127.0.0.1:8080/v1/actions/query_rows:run \
--       -- BODY_FILE MAX_ID
--
-- BODY_FILE holds the body with %d where the id goes (string.format); ids run from 1 to MAX_ID in
-- a per-thread pseudo-random order (a fixed seed per thread: every contender sees the same ids).

local template = nil
local max_id = 1
local threads = {}

function setup(thread)
   thread:set("thread_index", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   template = file:read("*a")
   file:close()
   max_id = tonumber(args[2] or "1")
   math.randomseed(7919 * (thread_index or 1))
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local id = math.random(1, max_id)
   return wrk.format(nil, nil, nil, string.format(template, id))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean))
end
