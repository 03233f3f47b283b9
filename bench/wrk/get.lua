-- GET scenarios (discovery, JWKS): wrk -s bench/wrk/get.lua <url>. Checks status and body (report.lua).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local report = require("report")

setup, response, done = report.setup, report.response, report.done
