"""Benchmark: the agreement chooser and GET /api/v1/me/agreements over real HTTP on PostgreSQL.

    python bench/agreements.py                 # full data (issue 3 scale), 300 requests per scenario
    python bench/agreements.py --quick         # 1 identity x 500 agreements, 50 requests (CI smoke)

Seeds the database if needed (bench/seed_agreements.py), starts the IdP under
gunicorn on 127.0.0.1, signs the bookkeeper in through the authorization code
flow with PKCE (authorize -> login -> chooser -> consent -> token) using
``requests``, then times each scenario sequentially from the client side and
prints p50/p95/p99/max with PASS/FAIL against the p95 target, followed by
EXPLAIN ANALYZE of the service's own queries. Exit status 1 when a scenario
misses the target (with --quick only under --strict) or answers wrongly.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seed_agreements as seeding

from idp import __file__ as _idp_file

#: The checkout whose idp package is imported (PYTHONPATH may point at another one).
ROOT = Path(_idp_file).resolve().parent.parent
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
AGREEMENT_BUTTON = re.compile(r'name="agreement" value="([^"]+)"')
TARGET_MS = 50.0
NAME_FRAGMENT = "bakery"   # one of the 20 middle words: ~5 % of names
#: Number prefixes matching 1 % of all agreements: ~100 of the bookkeeper's (full), ~5 (quick).
NUMBER_PREFIX = {"full": "1005", "quick": "10002"}


# -- the IdP under gunicorn ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, database_url: str, workers: int, port: int | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.workers = workers
        # Open for the server's lifetime; kept afterwards for reading.
        self.log = tempfile.NamedTemporaryFile(prefix="idp-bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        env = {**os.environ,
               "IDP_ENV": "production", "IDP_ISSUER": self.base, "IDP_DATABASE_URL": self.database_url,
               "IDP_REDIS_URL": "redis://127.0.0.1:6379/0", "IDP_REDIS_PREFIX": "bench:",
               "IDP_SECRET_KEY": seeding.SECRET_KEY,
               "IDP_KEYS_DIR": os.path.join(tempfile.gettempdir(), "idp-bench-keys"),
               # One person makes hundreds of API calls a minute here; the per-subject limit (300/min) still
               # counts every one, it just never refuses.
               "IDP_RATE_LIMIT_FACTOR": "1000"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
             "--log-level", "warning", "idp.wsgi:app"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            return self._wait_ready()
        except BaseException:
            self.__exit__()  # no orphaned gunicorn when it never became ready
            raise

    def _wait_ready(self) -> Self:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited ({self.process.returncode}); log: {self.log.name}\n"
                                 + Path(self.log.name).read_text()[-3000:])
            try:
                if requests.get(self.base + "/readyz", timeout=10).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or a worker still loading the app
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn did not become ready; log: {self.log.name}")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


# -- a person and an RP, over HTTP --------------------------------------------

def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    if not match:
        raise AssertionError("page has no CSRF token")
    return match.group(1)


class Browser:
    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()

    def get(self, url: str, **kwargs):
        return self.http.get(urljoin(self.base, url), allow_redirects=False, timeout=30, **kwargs)

    def post(self, url: str, data: dict, **kwargs):
        return self.http.post(urljoin(self.base, url), data=data, allow_redirects=False, timeout=30, **kwargs)

    def follow(self, response):
        """Follow the IdP's redirects until the RP callback or a page for the person."""
        while response.status_code in (302, 303):
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(seeding.REDIRECT_URI) or "/interaction/" in location:
                return response
            response = self.get(location)
        return response

    def authorize(self, client_id: str, extra: dict | None = None):
        verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": seeding.REDIRECT_URI,
                  "scope": "openid agreement", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
                  "code_challenge": challenge, "code_challenge_method": "S256", **(extra or {})}
        return self.follow(self.get("/authorize", params=params)), verifier

    def interaction(self, response) -> str:
        """The interaction page a redirect leads to (absolute URL), or fail with what came instead."""
        if response.status_code not in (302, 303) or "/interaction/" not in response.headers.get("Location", ""):
            raise AssertionError(f"expected an interaction page, got {response.status_code} "
                                 f"{response.headers.get('Location')} {response.text[:300]}")
        return urljoin(response.url, response.headers["Location"])

    def sign_in(self, client: tuple[str, str]) -> str:
        """Authorize -> (login) -> chooser -> (consent) -> code -> token; returns the access token."""
        client_id, secret = client
        response, verifier = self.authorize(client_id)
        for _ in range(5):
            if response.status_code in (302, 303) and response.headers["Location"].startswith(seeding.REDIRECT_URI):
                break
            page_url = self.interaction(response)
            page = self.get(page_url)
            assert page.status_code == 200, (page_url, page.status_code, page.text[:300])
            token = csrf_token(page.text)
            path = urlsplit(page_url).path
            if path.endswith("/login"):
                data = {"csrf_token": token, "email": seeding.BOOKKEEPER, "password": seeding.PASSWORD,
                        "action": "login"}
            elif path.endswith("/agreement"):
                data = {"csrf_token": token, "agreement": AGREEMENT_BUTTON.search(page.text).group(1)}
            elif path.endswith("/consent"):
                data = {"csrf_token": token, "action": "allow"}
            else:
                raise AssertionError(f"unexpected page {page_url}")
            response = self.follow(self.post(page_url, data))
        else:
            raise AssertionError("sign-in did not finish")
        params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
        assert "code" in params, params
        tokens = requests.post(urljoin(self.base, "/token"), auth=(client_id, secret), timeout=30, data={
            "grant_type": "authorization_code", "code": params["code"], "redirect_uri": seeding.REDIRECT_URI,
            "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        return tokens.json()["access_token"]

    def chooser_url(self, client_id: str) -> str:
        """A live chooser page: a second authorization in the signed-in browser stops at it."""
        response, _ = self.authorize(client_id)
        url = self.interaction(response)
        assert url.split("?")[0].endswith("/agreement"), url
        return url


# -- measuring -----------------------------------------------------------------

def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[rank]


def measure(call, check, requests_: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        check(call())
    samples = []
    for _ in range(requests_):
        started = time.perf_counter()
        response = call()
        samples.append((time.perf_counter() - started) * 1000)
        check(response)
    return samples


def api_check(expect_items: bool = True):
    def check(response):
        assert response.status_code == 200, (response.status_code, response.text[:300])
        if expect_items:
            assert response.json()["items"], "empty page"
    return check


def chooser_check(response):
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert AGREEMENT_BUTTON.search(response.text), "chooser lists no agreement"


def run_scenarios(server: Server, requests_: int, warmup: int, prefix: str) -> list[tuple[str, list[float], str]]:
    browser = Browser(server.base)
    neutral = browser.sign_in(seeding.NEUTRAL_CLIENT)
    economic = browser.sign_in(seeding.ECONOMIC_CLIENT)
    chooser = browser.chooser_url(seeding.NEUTRAL_CLIENT[0])

    api = requests.Session()
    api_url = urljoin(server.base, "/api/v1/me/agreements")
    bearer = {"Authorization": f"Bearer {neutral}"}
    cursor = None
    for _ in range(4):  # walk to page 5 once, to get its cursor
        body = api.get(api_url, headers=bearer, params={"cursor": cursor} if cursor else {}, timeout=30).json()
        cursor = body["next_cursor"]
        assert cursor, "fewer than 5 pages"

    scenarios = [
        ("api first page", lambda: api.get(api_url, headers=bearer, timeout=30), api_check(),
         "GET /api/v1/me/agreements (neutral client, limit 50)"),
        ("api page 5 (cursor)", lambda: api.get(api_url, headers=bearer, params={"cursor": cursor}, timeout=30),
         api_check(), "?cursor=<after page 4>"),
        ("api search name", lambda: api.get(api_url, headers=bearer, params={"q": NAME_FRAGMENT}, timeout=30),
         api_check(), f"?q={NAME_FRAGMENT}"),
        ("api search number", lambda: api.get(api_url, headers=bearer, params={"q": prefix}, timeout=30),
         api_check(), f"?q={prefix}"),
        ("api first page e-conomic", lambda: api.get(api_url, headers={"Authorization": f"Bearer {economic}"},
                                                     timeout=30), api_check(), "e-conomic client's token"),
        ("chooser page", lambda: browser.get(chooser), chooser_check, "GET /interaction/<id>/agreement"),
        ("chooser search", lambda: browser.get(chooser, params={"q": NAME_FRAGMENT}), chooser_check,
         f"?q={NAME_FRAGMENT}"),
    ]
    results = []
    for name, call, check, detail in scenarios:
        results.append((name, measure(call, check, requests_, warmup), detail))
    return results


def report(results, target: float) -> bool:
    print(f"\n{'scenario':<26} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}  result")
    print("-" * 76)
    ok = True
    for name, samples, _detail in results:
        p95 = percentile(samples, 95)
        passed = p95 < target
        ok &= passed
        print(f"{name:<26} {len(samples):>5} {statistics.median(samples):>8.1f} {p95:>8.1f} "
              f"{percentile(samples, 99):>8.1f} {max(samples):>8.1f}  {'PASS' if passed else 'FAIL'}")
    print("-" * 76)
    print(f"{'PASS' if ok else 'FAIL'}: p95 target {target:.0f} ms for every scenario")
    return ok


# -- EXPLAIN ANALYZE of the service's queries ----------------------------------

class _Recorder:
    """Stands in for a Session: records each statement the service executes, then runs it."""

    def __init__(self, session):
        self.session = session
        self.statements = []

    def execute(self, statement, *args, **kwargs):
        self.statements.append(statement)
        return self.session.execute(statement, *args, **kwargs)


def direct(recorder, lookup) -> list:
    """A direct statement of the service (idp/storage/direct.py) through the recorder, its values bound into it so
    that it can be explained with literal binds as the ORM's statements are."""
    statement, params = lookup
    return recorder.execute(statement.statement.params(params)).all()


def _plan_lines(notice: str) -> list[str]:
    """The plan part of an auto_explain message (drop "duration:" and the multi-line Query Text)."""
    lines = notice.splitlines()
    first = next((i for i, line in enumerate(lines) if "(cost=" in line), len(lines))
    return lines[first:]


def _seq_scans(name: str, plan: list[str]) -> list[str]:
    # Products (3 rows) are always scanned; a scan of these two tables is an index miss.
    return [f"{name}: {line.strip()}" for line in plan if re.search(r"Seq Scan on (memberships|agreements)\b", line)]


def explain(database_url: str, prefix: str) -> list[str]:
    """EXPLAIN ANALYZE the service's own queries (compiled for PostgreSQL with literal binds), and the
    plan PostgreSQL used when the service ran them with bound parameters (auto_explain); returns warnings."""
    from sqlalchemy import select, text
    from sqlalchemy.dialects import postgresql

    from idp.agreements import service
    from idp.clients.models import Client
    from idp.identities.models import Identity
    from idp.storage.db import Database

    # paramstyle "named": literal LIKE patterns keep a single "%" (pyformat would double it, and
    # '1005%%' gets other selectivity estimates, hence another plan, than the app's '1005%').
    dialect = postgresql.dialect(paramstyle="named")
    database = Database(database_url)
    session = database.session_factory()
    warnings, summary = [], []
    try:
        identity = session.execute(select(Identity.id).where(Identity.email_normalized == seeding.BOOKKEEPER)).scalar_one()
        neutral = session.get(Client, seeding.NEUTRAL_CLIENT[0])
        economic = session.get(Client, seeding.ECONOMIC_CLIENT[0])
        cursor = None
        for _ in range(4):
            cursor = service.page(session, identity, neutral, cursor=cursor).next_cursor
        some_number = service.page(session, identity, neutral, limit=1).items[0]["agreement_id"]
        calls = [
            ("chooser_list (neutral)", lambda s: service.chooser_list(s, identity, neutral)),
            ("chooser_list (e-conomic)", lambda s: service.chooser_list(s, identity, economic)),
            (f"chooser_list q={NAME_FRAGMENT}", lambda s: service.chooser_list(s, identity, neutral, NAME_FRAGMENT)),
            ("page first", lambda s: service.page(s, identity, neutral)),
            ("page 5 (cursor)", lambda s: service.page(s, identity, neutral, cursor=cursor)),
            (f"page q={NAME_FRAGMENT}", lambda s: service.page(s, identity, neutral, q=NAME_FRAGMENT)),
            (f"page q={prefix}", lambda s: service.page(s, identity, neutral, q=prefix)),
            ("find_eligible (chooser POST)", lambda s: direct(s, service.eligible_lookup(identity, neutral,
                                                                                          number=some_number))),
            ("first_eligible (authorize)", lambda s: direct(s, service.eligible_lookup(identity, neutral, limit=2))),
        ]
        # Like the end of a request: a rollback also empties psycopg's prepared-statement cache, so
        # each query below runs with a custom plan for its parameters, as in the app.
        session.rollback()
        for client in (neutral, economic):  # reload them now, not inside an explained call
            session.refresh(client)
        notices: list[str] = []
        session.connection().connection.driver_connection.add_notice_handler(
            lambda diagnostic: notices.append(diagnostic.message_primary or ""))
        for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_analyze = on", "SET auto_explain.log_buffers = on",
                        "SET auto_explain.log_level = notice", "SET client_min_messages = notice"):
            session.execute(text(setting))
        for name, call in calls:
            recorder = _Recorder(session)
            notices.clear()
            session.execute(text("SET auto_explain.log_min_duration = 0"))
            call(recorder)
            session.execute(text("SET auto_explain.log_min_duration = -1"))
            executed = [n for n in notices if "(cost=" in n and "FROM memberships" in n]
            for statement, notice in zip(recorder.statements, executed):
                sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
                plan = [row[0] for row in session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
                as_run = _plan_lines(notice)
                print(f"\n=== {name}\n{sql}\n\n-- EXPLAIN (ANALYZE, BUFFERS), literal binds:")
                print("\n".join(plan))
                print("\n-- as the service ran it (bound parameters, auto_explain):")
                print("\n".join(as_run))
                literal_ms = float(re.search(r"Execution Time: ([\d.]+)", "\n".join(plan)).group(1))
                bound_ms = float(re.search(r"duration: ([\d.]+) ms", notice).group(1))
                scans = _seq_scans(name, plan) + _seq_scans(name + " (bound)", as_run)
                warnings += scans
                summary.append((name, literal_ms, bound_ms, len(scans)))
        session.rollback()
    finally:
        session.close()
        database.dispose()
    print(f"\n{'query':<30} {'literal ms':>10} {'bound ms':>9}  seq scans of memberships/agreements")
    for name, literal_ms, bound_ms, scans in summary:
        print(f"{name:<30} {literal_ms:>10.1f} {bound_ms:>9.1f}  {scans or '-'}")
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 identity x 500 agreements, 50 requests")
    parser.add_argument("--database-url", help="default: IDP_DATABASE_URL, else the idp_bench(_quick) database")
    parser.add_argument("--requests", type=int, help="timed requests per scenario (default 300, quick 50)")
    parser.add_argument("--warmup", type=int, help="untimed requests first (default 20, quick 5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--target-ms", type=float, default=TARGET_MS)
    parser.add_argument("--reset", action="store_true", help="drop and re-seed the database")
    parser.add_argument("--no-explain", action="store_true")
    parser.add_argument("--strict", action="store_true",
                        help="with --quick, also fail on a missed p95 (by default --quick fails only on wrong answers)")
    args = parser.parse_args(argv)

    shape = seeding.QUICK if args.quick else seeding.FULL
    url = args.database_url or os.environ.get("IDP_DATABASE_URL") or (
        seeding.QUICK_URL if args.quick else seeding.DEFAULT_URL)
    requests_ = args.requests or (50 if args.quick else 300)
    warmup = args.warmup if args.warmup is not None else (5 if args.quick else 20)
    prefix = NUMBER_PREFIX["quick" if args.quick else "full"]
    seeding.seed(url, shape, args.reset)

    load_before = os.getloadavg()
    with Server(url, args.workers) as server:
        print(f"server: gunicorn x{args.workers} at {server.base}, log {server.log.name}")
        print(f"measuring {requests_} sequential requests per scenario after {warmup} warm-up")
        results = run_scenarios(server, requests_, warmup, prefix)
    ok = report(results, args.target_ms)
    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after"
          + ("  <- other work was running: numbers are pessimistic" if load_before[0] > 1.0 else ""))
    if not args.no_explain:
        warnings = explain(url, prefix)
        print("\nsequential scans of memberships/agreements above" + (" (expected on --quick's tiny tables):"
              if args.quick else ":") if warnings else "\nno sequential scans of memberships/agreements above")
        for warning in warnings if not args.quick else []:
            print("  " + warning)
        if args.quick and warnings:
            print(f"  {len(warnings)} plan nodes")
    if args.quick and not args.strict:
        return 0  # a smoke test: wrong answers raise; latency on a shared CI box is only reported
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
