-- POST to the token endpoint: a client_credentials grant with HTTP Basic client authentication.
--   BENCH_AUTH  the Authorization header value ("Basic ...")
--   BENCH_BODY  the form body (default grant_type=client_credentials)
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local report = require("report")

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

setup, response, done = report.setup, report.response, report.done
