"""Load driver for the scenarios that need state per connection: refresh with rotation, the SSO hop, password login.

    python bench/flows.py --scenario sso --issuer http://127.0.0.1:5100 --duration 10 --concurrency 8 \\
        --client perf-rp:SECRET --email perf@bench.example --password ... --redirect-uri http://127.0.0.1:9/callback

bench/run.py runs it pinned to the load-generator core; it prints one JSON object. wrk's Lua can carry state per
connection, but not a cookie jar: a wrk response table keeps only the last of several Set-Cookie headers, and
node-oidc-provider sets four at once. So this is a small asyncio HTTP/1.1 client (keep-alive, Content-Length and
chunked bodies, path-scoped cookies), stdlib only. Each virtual user has its own connection and, for sso/refresh,
its own browser session (one password login per user before the clock starts).

Scenarios (a "flow" is what flows/s counts):
  refresh  POST token grant_type=refresh_token with the refresh token the previous response returned (rotation:
           each user carries its own chain); the response must hold a new refresh token, an access token and an
           ID token. 1 request per flow.
  sso      GET authorize with the session cookie -> redirect with a code -> POST token (code + PKCE verifier); the
           response must hold an access token and an ID token. 2 requests per flow.
  login    a fresh browser: GET authorize -> login page -> POST e-mail + password -> redirects -> the code at the
           redirect URI. 4-5 requests per flow; argon2id dominates.
  request  one plain GET or POST (--method/--url/--form/--expect): bench/run.py's fallback for the wrk
           scenarios when wrk is not installed (--smoke only).

Errors are counted by kind (unexpected status, missing field, socket error), with a sample of each; a user whose
refresh chain broke starts a new one (inside the timed window) and the break is counted as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import secrets
import sys
import time
from collections import Counter
from html import unescape
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit

#: One PKCE pair for every flow: the server still verifies it every time.
VERIFIER = "bench-" + "v" * 60
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.S | re.I)
ATTR = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')
INPUT = re.compile(r"<(?:input|button)\b[^>]*>", re.I)


class FlowError(Exception):
    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind)
        self.kind, self.detail = kind, detail


# -- a minimal HTTP/1.1 client -------------------------------------------------------------------------------

class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> dict:
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise FlowError("body_not_json", self.body[:120].decode(errors="replace")) from error


class Connection:
    """One keep-alive connection that reconnects when the server closed it (gunicorn's sync worker always does)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Response:
        reused = self.writer is not None
        try:
            if not reused:
                await self._open()
            return await self._exchange(method, target, headers, body)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
            self.close()
            if not reused:
                raise FlowError("socket", f"{type(error).__name__}: {error}") from error
        # The server closed an idle keep-alive connection under us: one retry on a new one.
        try:
            await self._open()
            return await self._exchange(method, target, headers, body)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
            self.close()
            raise FlowError("socket", f"{type(error).__name__}: {error}") from error

    async def _exchange(self, method, target, headers, body) -> Response:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        parsed = []
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                parsed.append((name.strip().lower(), value.strip()))
        values = dict(parsed)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif values.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers from either server
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(chunks)
        elif "content-length" in values:
            data = await reader.readexactly(int(values["content-length"]))
        else:
            data = await reader.read()
            self.close()
        if values.get("connection", "").lower() == "close":
            self.close()
        return Response(status, parsed, data)


class Browser:
    """A connection plus a cookie jar (name -> (value, path)); good enough for two loopback servers."""

    def __init__(self, issuer: str):
        parts = urlsplit(issuer)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.connection = Connection(parts.hostname, parts.port or 80)
        self.cookies: dict[str, tuple[str, str]] = {}
        self.latencies: list[float] = []

    def clear(self):
        self.cookies.clear()

    def _cookie_header(self, path: str) -> str:
        return "; ".join(f"{n}={v}" for n, (v, p) in self.cookies.items() if path.startswith(p))

    def _store_cookies(self, response: Response, path: str):
        for name, value in response.headers:
            if name != "set-cookie":
                continue
            pair, *attributes = value.split(";")
            cookie, _, cookie_value = pair.strip().partition("=")
            cookie_path, expired = "/", False
            for attribute in attributes:
                key, _, attribute_value = attribute.strip().partition("=")
                key = key.lower()
                if key == "path":
                    cookie_path = attribute_value or "/"
                elif (key == "max-age" and attribute_value.strip().startswith(("0", "-"))) or (
                        key == "expires" and "1970" in attribute_value):
                    expired = True
            if expired or not cookie_value:
                self.cookies.pop(cookie, None)
            else:
                self.cookies[cookie] = (cookie_value, cookie_path)

    async def request(self, method: str, url: str, *, form: dict | None = None, auth: tuple[str, str] | None = None,
                      cookies: bool = True) -> Response:
        parts = urlsplit(urljoin(self.origin + "/", url))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept": "*/*"}
        if cookies and (jar := self._cookie_header(parts.path)):
            headers["Cookie"] = jar
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        response = await self.connection.request(method, target, headers, body)
        self.latencies.append(time.perf_counter() - started)
        if cookies:
            self._store_cookies(response, parts.path)
        return response


# -- the flows -------------------------------------------------------------------------------------------------

class Flows:
    def __init__(self, args, metadata: dict):
        self.args = args
        self.authorize_url = metadata["authorization_endpoint"]
        self.token_url = metadata["token_endpoint"]
        self.client = tuple(args.client.split(":", 1))

    def authorize_params(self, scope: str, prompt: str | None = None) -> str:
        params = {"response_type": "code", "client_id": self.client[0], "redirect_uri": self.args.redirect_uri,
                  "scope": scope, "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
                  "code_challenge": CHALLENGE, "code_challenge_method": "S256"}
        if prompt:
            params["prompt"] = prompt
        return f"{self.authorize_url}?{urlencode(params)}"

    def code_from(self, location: str) -> str:
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise FlowError("no_code", location[:200])
        return query["code"][0]

    async def follow_to_code(self, browser: Browser, response: Response, url: str) -> str:
        """Follow redirects (posting the login form when it appears) until the redirect URI gets a code."""
        for _ in range(10):
            if response.status in (301, 302, 303, 307):
                location = urljoin(url, response.header("location") or "")
                if location.startswith(self.args.redirect_uri):
                    return self.code_from(location)
                url = location
                response = await browser.request("GET", url)
            elif response.status == 200 and b"<form" in response.body:
                action, fields = self.login_form(response.body.decode(errors="replace"), url)
                url = action
                response = await browser.request("POST", action, form=fields)
            else:
                raise FlowError(f"status_{response.status}", f"{url[:100]} {response.body[:160]!r}")
        raise FlowError("too_many_redirects", url[:200])

    def login_form(self, html: str, url: str) -> tuple[str, dict]:
        match = FORM.search(html)
        if not match or 'name="password"' not in match.group(0):
            raise FlowError("unexpected_page", html[:160])
        form = match.group(0)
        attributes = dict(ATTR.findall(form[:form.index(">")]))
        fields, submit = {}, None
        for tag in INPUT.findall(form):
            attrs = dict(ATTR.findall(tag))
            kind = attrs.get("type", "text" if tag.lower().startswith("<input") else "submit")
            if kind == "hidden" and "name" in attrs:
                fields[attrs["name"]] = unescape(attrs.get("value", ""))
            elif kind == "submit" and submit is None and "name" in attrs:
                submit = (attrs["name"], unescape(attrs.get("value", "")))
        fields["email"], fields["password"] = self.args.email, self.args.password
        if submit:
            fields[submit[0]] = submit[1]
        return urljoin(url, unescape(attributes.get("action") or url)), fields

    async def login(self, browser: Browser, scope: str = "openid", prompt: str | None = None) -> str:
        url = self.authorize_params(scope, prompt)
        return await self.follow_to_code(browser, await browser.request("GET", url), url)

    async def redeem(self, browser: Browser, code: str) -> dict:
        response = await browser.request("POST", self.token_url, auth=self.client, cookies=False, form={
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.args.redirect_uri,
            "code_verifier": VERIFIER})
        return self.check_tokens(response, ("access_token", "id_token"))

    @staticmethod
    def check_tokens(response: Response, fields) -> dict:
        if response.status != 200:
            raise FlowError(f"token_status_{response.status}", response.body[:160].decode(errors="replace"))
        body = response.json()
        for field in fields:
            if not body.get(field):
                raise FlowError(f"no_{field}", json.dumps(body)[:160])
        return body

    # each returns a coroutine factory: setup(browser) -> state, flow(browser, state) -> state

    async def setup_sso(self, browser):
        await self.login(browser)
        return None

    async def flow_sso(self, browser, state):
        url = self.authorize_params("openid")
        response = await browser.request("GET", url)
        if response.status not in (302, 303):
            raise FlowError(f"authorize_status_{response.status}", response.body[:160].decode(errors="replace"))
        location = urljoin(url, response.header("location") or "")
        if not location.startswith(self.args.redirect_uri):
            raise FlowError("authorize_not_to_client", location[:160])
        await self.redeem(browser, self.code_from(location))
        return state

    async def setup_refresh(self, browser):
        if not browser.cookies:
            await self.login(browser)
        code = await self.login(browser, "openid offline_access", self.args.offline_prompt)
        tokens = await self.redeem(browser, code)
        if not tokens.get("refresh_token"):
            raise FlowError("no_refresh_token_at_setup", json.dumps(tokens)[:160])
        return tokens["refresh_token"]

    async def flow_refresh(self, browser, refresh_token):
        response = await browser.request("POST", self.token_url, auth=self.client, cookies=False, form={
            "grant_type": "refresh_token", "refresh_token": refresh_token})
        body = self.check_tokens(response, ("access_token", "id_token", "refresh_token"))
        if body["refresh_token"] == refresh_token:
            raise FlowError("refresh_token_not_rotated")
        return body["refresh_token"]

    async def setup_request(self, browser):
        return None

    async def flow_request(self, browser, state):
        """One plain request (--method/--url/--form/--expect): the fallback for wrk's scenarios when wrk is missing."""
        args = self.args
        response = await browser.request(args.method, args.url, cookies=False,
                                         form=dict(parse_qsl(args.form, keep_blank_values=True)) if args.form else None,
                                         auth=self.client if args.form else None)
        if response.status != 200:
            raise FlowError(f"status_{response.status}", response.body[:160].decode(errors="replace"))
        if args.expect and not re.search(args.expect.encode(), response.body):
            raise FlowError("unexpected_body", response.body[:160].decode(errors="replace"))
        return state

    async def setup_login(self, browser):
        return None

    async def flow_login(self, browser, state):
        browser.clear()  # a new person's browser every time
        await self.login(browser)
        return state


async def user(flows: Flows, scenario: str, clock: dict, results: dict):
    browser = Browser(flows.args.issuer)
    setup, flow = getattr(flows, f"setup_{scenario}"), getattr(flows, f"flow_{scenario}")

    async def set_up():
        for _attempt in range(3):
            try:
                return True, await setup(browser)
            except FlowError as error:
                results["setup_errors"][error.kind] += 1
                results["samples"].setdefault("setup:" + error.kind, error.detail)
        return False, None

    try:
        ready, state = await set_up()
        clock["settled"] += 1
        if clock["settled"] == flows.args.concurrency:
            clock["all_settled"].set()
        await clock["go"].wait()
        while ready and time.perf_counter() < clock["stop"]:
            browser.latencies.clear()
            started = time.perf_counter()
            timed = started >= clock["start"]  # the first --warmup seconds are not counted
            try:
                state = await flow(browser, state)
                results["attempts"] += 1
                # A flow counts when it started after the warm-up and finished inside the window.
                if timed and time.perf_counter() <= clock["stop"]:
                    results["flow_latencies"].append(time.perf_counter() - started)
                    results["flows"] += 1
                    results["request_latencies"].extend(browser.latencies)
                    results["requests"] += len(browser.latencies)
            except FlowError as error:
                results["attempts"] += 1
                if timed:  # errors count whenever they happen after the warm-up, also after the window
                    results["errors"][error.kind] += 1
                    results["samples"].setdefault(error.kind, error.detail)
                    results["request_latencies"].extend(browser.latencies)
                    results["requests"] += len(browser.latencies)
                if scenario == "refresh":
                    ready, state = await set_up()  # the chain is broken (or revoked): start another
    finally:
        browser.connection.close()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))  # nearest rank
    return ordered[int(rank)]


async def main_async(args) -> dict:
    discovery = Browser(args.issuer)
    response = await discovery.request("GET", "/.well-known/openid-configuration", cookies=False)
    discovery.connection.close()
    flows = Flows(args, json.loads(response.body))
    results = {"flows": 0, "requests": 0, "attempts": 0, "errors": Counter(), "setup_errors": Counter(), "samples": {},
               "flow_latencies": [], "request_latencies": []}
    clock = {"settled": 0, "all_settled": asyncio.Event(), "go": asyncio.Event(), "start": 0.0, "stop": 0.0}
    tasks = [asyncio.create_task(user(flows, args.scenario, clock, results)) for _ in range(args.concurrency)]
    # Setup (each user's login, a first refresh token) happens before the clock starts.
    try:
        await asyncio.wait_for(clock["all_settled"].wait(), args.setup_timeout)
    except TimeoutError:
        results["setup_errors"]["setup_timeout"] += 1
    now = time.perf_counter()
    clock["start"], clock["stop"] = now + args.warmup, now + args.warmup + args.duration
    cpu_before = time.process_time()
    clock["go"].set()
    if args.started_file:  # bench/run.py --profile attaches py-spy only now, after the logins of the setup
        with open(args.started_file, "w") as marker:
            marker.write(str(time.time()))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - now
    cpu = time.process_time() - cpu_before
    flow_l, request_l = results["flow_latencies"], results["request_latencies"]
    return {
        "scenario": args.scenario, "duration_s": args.duration, "concurrency": args.concurrency,
        "flows": results["flows"], "requests": results["requests"],
        # every flow tried after the setup, warm-up and late finishers included: bench/run.py divides the
        # server's CPU time by it
        "all_flows": results["attempts"],
        "flows_per_s": results["flows"] / args.duration, "requests_per_s": results["requests"] / args.duration,
        "errors": sum(results["errors"].values()) + sum(results["setup_errors"].values()),
        "error_kinds": dict(results["errors"]), "setup_errors": dict(results["setup_errors"]),
        "error_samples": results["samples"],
        "flow_p50_ms": _ms(percentile(flow_l, 50)), "flow_p99_ms": _ms(percentile(flow_l, 99)),
        "request_p50_ms": _ms(percentile(request_l, 50)), "request_p99_ms": _ms(percentile(request_l, 99)),
        # Near 1.0 the driver, not the server, may be the limit.
        "driver_cpu_fraction": round(cpu / wall, 3) if wall > 0 else None,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("refresh", "sso", "login", "request"), required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--client", default=":", help="client_id:client_secret (client_secret_basic)")
    parser.add_argument("--redirect-uri", default="")
    parser.add_argument("--email", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--offline-prompt", default=None,
                        help="prompt value for the offline_access authorization (node-oidc-provider needs consent)")
    parser.add_argument("--method", default="GET", help="request scenario: the method")
    parser.add_argument("--url", help="request scenario: the URL")
    parser.add_argument("--form", help="request scenario: a form body (sent with the client's Basic auth)")
    parser.add_argument("--expect", help="request scenario: a regular expression the body must match")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--setup-timeout", type=float, default=60)
    parser.add_argument("--started-file", help="written when the setup is over and the load starts")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
