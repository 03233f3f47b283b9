-- POST to the introspection endpoint (RFC 7662) with HTTP Basic client authentication.
--   BENCH_AUTH   the Authorization header value ("Basic ...")
--   BENCH_TOKEN  the token to introspect (form-encoded by bench/run.py)
--   BENCH_HINT   optional token_type_hint
-- bench/run.py sets BENCH_EXPECT_BODY to require "active": true, so an inactive answer is an error.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local report = require("report")

local hint = os.getenv("BENCH_HINT")
wrk.method = "POST"
wrk.body = "token=" .. os.getenv("BENCH_TOKEN") .. ((hint and hint ~= "") and ("&token_type_hint=" .. hint) or "")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

setup, response, done = report.setup, report.response, report.done
