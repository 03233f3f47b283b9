"""The cost of one request inside our process, without an HTTP server or a load generator (issue 9).

    python bench/inprocess.py --db sqlite --scenario client_credentials        # CPU ms per request
    python bench/inprocess.py --db pg --scenario introspection --profile       # + cProfile's top functions
    python bench/inprocess.py --db sqlite --scenario client_credentials --instructions   # valgrind, ~40 s

Calls the WSGI app directly (the same app `bench/run.py` serves, on a fresh database prepared the same
way) for the token endpoint's client_credentials grant, introspection of an access token, a refresh with
rotation (each request carries the chain on), or the SSO hop (authorize with the browser session's cookie,
then the code exchange); ``refresh_agreement`` and ``sso_agreement`` are the same for tokens that carry an
agreement, as a product's RP gets them (node-oidc-provider has no counterpart, so `bench/run.py` does not run
them). Refresh and SSO start from a real sign-in through the login pages, which is set-up
and not measured.

Why: on a shared VM a CPU-time figure moves by ±30 % from one minute to the next (a fixed pure-Python
loop did too), so a change worth 5 % cannot be seen in `bench/run.py`'s figures. Two ways out:

* CPU time per request, each short round divided by the CPU time of a fixed loop run just before and
  after it, so a slower machine slows both (median and lower quartile over the rounds). This still moves
  by ~10 %, because the machine's slowness is not only the interpreter's.
* ``--instructions``: instructions executed per request, counted by valgrind's callgrind with
  instrumentation switched on only for the measured requests (the set-up runs uninstrumented). The
  count repeats to within 1 % and is what A/B comparisons of a code change should use. It sees user-space
  instructions only: a round trip's kernel time and the database server's work are not in it, so
  changes that save round trips on PostgreSQL need the CPU figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402  (bench/run.py: the clients and database preparation)

ISSUER = "http://127.0.0.1:5999"
#: CPU ms of the reference loop on this VM when it was quiet.
SPIN_REFERENCE_MS = 11.0


def spin() -> float:
    started = time.process_time()
    total = 0
    for i in range(200_000):
        total += i * i
    return time.process_time() - started


def prepare(db: str):
    class Args:
        pg_url = "postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench_inprocess"
        redis_url = "redis://127.0.0.1:6379/0"

    variant = bench_run.Variant(db, Args)
    variant.workdir = bench_run.TMP / f"idp-bench-inprocess-{db}"
    if db == "sqlite":
        variant.database_url = f"sqlite:///{variant.workdir / 'idp.sqlite3'}"
    variant.prepare()
    os.environ.update(variant.env(ISSUER))
    import logging

    from idp.wsgi import app

    logging.getLogger().handlers.clear()  # the access log is measured by bench/run.py, not here
    return app


def caller(app):
    def call(method: str, path: str, body: bytes = b"", headers=(), query: str = "", with_headers: bool = False):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "5999", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                   "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
                   "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_HOST": "127.0.0.1:5999"}
        for name, value in headers:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        status = {}

        def start_response(line, response_headers, _exc=None):
            status["line"], status["headers"] = line, response_headers

        body_out = b"".join(app(environ, start_response))
        if with_headers:
            return status["line"], body_out, status["headers"]
        return status["line"], body_out

    return call


def signed_in(app, scope: str) -> tuple[str, str]:
    """A browser session of the bench person and an authorization code, through the real login pages
    (werkzeug's test client keeps the cookies; bench/flows.py reads the forms). Set-up only: not measured."""
    from urllib.parse import urlsplit

    from werkzeug.test import Client

    import flows

    class Args:
        client = f"{bench_run.RP_CLIENT[0]}:{bench_run.RP_CLIENT[1]}"
        email, password, redirect_uri = bench_run.EMAIL, bench_run.PASSWORD, bench_run.REDIRECT_URI

    driver = flows.Flows(Args, {"authorization_endpoint": ISSUER + "/authorize", "token_endpoint": ISSUER + "/token"})
    browser = Client(app)
    url = driver.authorize_params(scope)
    response = browser.get(url)
    for _ in range(10):
        location = response.headers.get("Location")
        if location and location.startswith(bench_run.REDIRECT_URI):
            cookie = "; ".join(f"{c.key}={c.value}" for c in browser._cookies.values())
            return cookie, driver.code_from(location)
        if location:
            url = location if "://" in location else ISSUER + location
            response = browser.get(url)
        else:
            action, fields = driver.login_form(response.get_data(as_text=True), url)
            url = action
            response = browser.post(urlsplit(action).path, data=fields)
    raise SystemExit(f"no code: {response.status} {response.get_data()[:300]!r}")


def redeem(call, code: str) -> dict:
    import flows

    auth = ("Authorization", bench_run.basic(bench_run.RP_CLIENT))
    form = urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": bench_run.REDIRECT_URI,
                      "code_verifier": flows.VERIFIER}).encode()
    line, body = call("POST", "/token", form, [auth])
    if not line.startswith("200"):
        raise SystemExit(f"code exchange failed: {line} {body[:300]!r}")
    return json.loads(body)


def in_an_agreement(app) -> None:
    """The bench person a member of one agreement, as every person behind a product's login is: tokens carry it
    (scope ``agreement``) and each refresh re-checks the membership."""
    from sqlalchemy import select

    from idp.agreements.models import Agreement, Membership, Product
    from idp.extensions import db_session
    from idp.identities.models import Identity

    with app.app_context():
        session = db_session()
        session.add(Product(id="bench", name="Bench"))
        agreement = Agreement(number="9000001", name="Bench ApS", product_id="bench")
        session.add(agreement)
        session.flush()
        person = session.execute(select(Identity).where(Identity.email == bench_run.EMAIL)).scalar_one()
        session.add(Membership(identity_id=person.id, agreement_id=agreement.id, role="user"))
        session.commit()


def scope_for(app, scenario: str, scope: str) -> str:
    """``scope``; for the ``*_agreement`` scenarios with ``agreement``, the bench person put in one first."""
    if not scenario.endswith("_agreement"):
        return scope
    in_an_agreement(app)
    return scope + " agreement"


def request_for(scenario: str, call, app):
    auth = ("Authorization", bench_run.basic(bench_run.CC_CLIENT))
    if scenario in ("refresh", "refresh_agreement"):
        _cookie, code = signed_in(app, scope_for(app, scenario, "openid offline_access"))
        chain = [redeem(call, code)["refresh_token"]]
        rp_auth = ("Authorization", bench_run.basic(bench_run.RP_CLIENT))

        def refresh():
            form = urlencode({"grant_type": "refresh_token", "refresh_token": chain[0]}).encode()
            line, body = call("POST", "/token", form, [rp_auth])
            if line.startswith("200"):
                chain[0] = json.loads(body)["refresh_token"]
            return line, body

        return refresh
    if scenario in ("sso", "sso_agreement"):
        import flows

        scope = scope_for(app, scenario, "openid")
        cookie, code = signed_in(app, scope)
        redeem(call, code)
        client = f"{bench_run.RP_CLIENT[0]}:{bench_run.RP_CLIENT[1]}"
        driver = flows.Flows(type("Args", (), {"client": client, "redirect_uri": bench_run.REDIRECT_URI}),
                             {"authorization_endpoint": "/authorize", "token_endpoint": "/token"})

        def hop():
            path, _, query = driver.authorize_params(scope).partition("?")
            line, _body, headers = call("GET", path, b"", [("Cookie", cookie)], query=query, with_headers=True)
            location = dict(headers).get("Location", "")
            if not location.startswith(bench_run.REDIRECT_URI):
                return f"500 no code ({line})", location.encode() or _body[:300]
            redeem(call, driver.code_from(location))
            return "200 OK", b""

        return hop
    line, body = call("POST", "/token", b"grant_type=client_credentials", [auth])
    if not line.startswith("200"):
        raise SystemExit(f"token request failed: {line} {body[:300]!r}")
    if scenario == "client_credentials":
        return lambda: call("POST", "/token", b"grant_type=client_credentials", [auth])
    form = ("token=" + json.loads(body)["access_token"]).encode()
    return lambda: call("POST", "/introspect", form, [auth])


def child(args) -> None:
    """Runs under valgrind: set up uninstrumented, then the measured requests when told to."""
    app = prepare(args.db)
    send = request_for(args.scenario, caller(app), app)
    for _ in range(50):
        send()
    marks = pathlib.Path(os.environ["BENCH_MARKS"])
    (marks / "ready").write_text(str(os.getpid()))
    while not (marks / "go").exists():
        time.sleep(0.05)
    for _ in range(args.requests):
        send()
    (marks / "done").write_text("1")
    while not (marks / "end").exists():
        time.sleep(0.05)


def instructions(args) -> int:
    marks = pathlib.Path(tempfile.mkdtemp(prefix="idp-bench-inprocess-"))
    out = marks / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable,
            __file__, "--child", "--db", args.db, "--scenario", args.scenario, "--requests", str(args.requests)]
    process = subprocess.Popen(argv, env={**os.environ, "BENCH_MARKS": str(marks)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    while not (marks / "ready").exists():
        if process.poll() is not None:
            raise SystemExit(process.stderr.read()[-3000:])
        time.sleep(0.2)
    subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True)
    (marks / "go").write_text("1")
    while not (marks / "done").exists():
        time.sleep(0.2)
    subprocess.run(["callgrind_control", "-i", "off", str(process.pid)], check=True, capture_output=True)
    (marks / "end").write_text("1")
    process.wait()
    total = 0
    for path in marks.glob("callgrind.out*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    if not total:
        raise SystemExit("callgrind wrote no totals")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--scenario", choices=("client_credentials", "introspection", "refresh", "refresh_agreement",
                                               "sso", "sso_agreement"),
                        default="client_credentials")
    parser.add_argument("--requests", type=int, default=None,
                        help="per round (default 100); with --instructions, the requests measured (default 300: a full "
                             "garbage collection, ~67 M instructions, then weighs about as it does in a server)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--profile", action="store_true", help="cProfile 2000 requests; print the top functions")
    parser.add_argument("--sort", default="cumulative", help="--profile: pstats sort key (cumulative, tottime, ...)")
    parser.add_argument("--top", type=int, default=50, help="--profile: how many functions to print")
    parser.add_argument("--callers", help="--profile: also print the callers of functions matching this regex")
    parser.add_argument("--callees", help="--profile: also print what functions matching this regex call")
    parser.add_argument("--instructions", action="store_true", help="instructions per request (valgrind)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 300 if args.instructions else 100
    if args.child:
        child(args)
        return 0
    if args.instructions:
        total = instructions(args)
        print(f"{args.db} {args.scenario}: {total / args.requests / 1e6:.3f} M instructions per request "
              f"({args.requests} requests, callgrind)")
        return 0
    app = prepare(args.db)
    send = request_for(args.scenario, caller(app), app)
    for _ in range(200):
        line, body = send()
        if not line.startswith("200"):
            raise SystemExit(f"{args.scenario} failed: {line} {body[:300]!r}")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(2000):
            send()
        profiler.disable()
        stats = pstats.Stats(profiler).sort_stats(args.sort)
        stats.print_stats(args.top)
        if args.callers:
            stats.print_callers(args.callers)
        if args.callees:
            stats.print_callees(args.callees)
        return 0
    normalised, raw = [], []
    for _ in range(args.rounds):
        before = spin()
        started = time.process_time()
        for _ in range(args.requests):
            send()
        cost = (time.process_time() - started) / args.requests
        reference = (before + spin()) / 2
        normalised.append(cost / reference * SPIN_REFERENCE_MS)
        raw.append(cost * 1000)
    normalised.sort()
    print(f"{args.db} {args.scenario}: {statistics.median(normalised):.3f} ms per request normalised "
          f"(lower quartile {normalised[len(normalised) // 4]:.3f}); raw CPU median {statistics.median(raw):.3f}, "
          f"min {min(raw):.3f} ms ({args.rounds} rounds of {args.requests})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
