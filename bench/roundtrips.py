"""Per-request cost of each bench scenario inside the app, without an HTTP server: SQL statements, commits, Redis
commands and CPU time per flow, and optionally a pyinstrument profile.

    python bench/roundtrips.py                      # SQLite (the store falls back to the database)
    python bench/roundtrips.py --db pg              # PostgreSQL + Redis (the databases bench/run.py uses)
    python bench/roundtrips.py --db pg --pyinstrument client_credentials,refresh

It prepares the same fresh database and seed as bench/run.py, builds the app in this process (IDP_ENV=production,
the same settings), drives each scenario with Flask's test client, and counts what every flow sends to the database
and to Redis (SQLAlchemy cursor events, redis-py execute_command). Run it pinned (``taskset -c 1``) for stable
times. The numbers it prints say where a request's time goes before any WSGI server is involved; compare them
with bench/run.py's requests/s to see the server's share.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (bench/run.py: the same database, seed and credentials)
from flows import CHALLENGE, VERIFIER  # noqa: E402

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Counts:
    def __init__(self):
        self.sql = Counter()
        self.redis = Counter()
        self.commits = 0
        self.wire = Counter()  # psycopg calls that each cost one round trip to PostgreSQL

    def total_sql(self) -> int:
        return sum(self.sql.values())


COUNTS = Counts()


def instrument(app) -> None:
    from sqlalchemy import event

    engine = app.extensions["idp"].db.engine

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(_conn, _cursor, statement, _params, _context, _many):
        COUNTS.sql[statement.lstrip().split(None, 1)[0].upper()] += 1

    @event.listens_for(engine, "commit")
    def _commit(_conn):
        COUNTS.commits += 1

    try:
        import psycopg
    except ImportError:
        psycopg = None
    if psycopg is not None:
        def counting(cls, method, label):
            original_method = getattr(cls, method)

            def wrapper(self, *args, **kwargs):
                # commit/rollback outside a transaction send nothing (psycopg checks the status first)
                if method == "execute" or self.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    COUNTS.wire[label(args) if callable(label) else label] += 1
                return original_method(self, *args, **kwargs)
            setattr(cls, method, wrapper)

        counting(psycopg.Cursor, "execute", lambda args: str(args[0]).lstrip().split(None, 1)[0].upper()
                 if args else "?")
        counting(psycopg.Connection, "commit", "COMMIT")
        counting(psycopg.Connection, "rollback", "ROLLBACK")

    import redis

    original = redis.Redis.execute_command

    def execute_command(self, *args, **options):
        if not isinstance(self, redis.client.Pipeline):  # a pipeline is one round trip, counted below
            COUNTS.redis[str(args[0]).upper()] += 1
        return original(self, *args, **options)

    redis.Redis.execute_command = execute_command
    original_pipeline = redis.client.Pipeline.execute

    def execute_pipeline(self, *args, **options):
        COUNTS.redis[f"PIPELINE[{'+'.join(str(c[0][0]) for c in self.command_stack)}]"] += 1
        return original_pipeline(self, *args, **options)

    redis.client.Pipeline.execute = execute_pipeline


def basic(client) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()}


class Driver:
    """The bench scenarios, each one flow, through the test client."""

    def __init__(self, app):
        self.app = app
        self.browser = app.test_client()
        self.http = app.test_client()  # no cookies needed: token, introspection, discovery
        self.refresh_token = None

    def authorize_url(self, scope="openid"):
        return "/authorize?" + urlencode({
            "response_type": "code", "client_id": run.RP_CLIENT[0], "redirect_uri": run.REDIRECT_URI,
            "scope": scope, "state": "s", "nonce": "n", "code_challenge": CHALLENGE, "code_challenge_method": "S256"})

    def follow_to_code(self, browser, response, url) -> str:
        for _ in range(10):
            if response.status_code in (302, 303):
                location = urljoin("http://127.0.0.1" + url, response.headers["Location"])
                if location.startswith(run.REDIRECT_URI):
                    return parse_qs(urlsplit(location).query)["code"][0]
                url = urlsplit(location).path + ("?" + urlsplit(location).query if urlsplit(location).query else "")
                response = browser.get(url)
            elif response.status_code == 200 and b'name="password"' in response.data:
                token = CSRF.search(response.get_data(as_text=True)).group(1)
                response = browser.post(url, data={"csrf_token": token, "email": run.EMAIL, "password": run.PASSWORD,
                                                   "action": "login"})
            else:
                raise AssertionError(f"{url}: {response.status_code} {response.data[:200]!r}")
        raise AssertionError("too many redirects")

    def redeem(self, code) -> dict:
        response = self.http.post("/token", headers=basic(run.RP_CLIENT), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": run.REDIRECT_URI,
            "code_verifier": VERIFIER})
        assert response.status_code == 200, response.data
        return response.get_json()

    def setup(self):
        url = self.authorize_url()
        self.follow_to_code(self.browser, self.browser.get(url), url)  # signed in
        url = self.authorize_url("openid offline_access")
        self.refresh_token = self.redeem(self.follow_to_code(self.browser, self.browser.get(url), url))["refresh_token"]
        code = self.follow_to_code(self.browser, self.browser.get(url), url)
        self.introspect_rt = self.redeem(code)["refresh_token"]
        response = self.http.post("/token", headers=basic(run.CC_CLIENT), data={"grant_type": "client_credentials"})
        self.introspect_at = response.get_json()["access_token"]

    # the scenarios

    def discovery(self):
        assert self.http.get("/.well-known/openid-configuration").status_code == 200

    def jwks(self):
        assert self.http.get("/jwks").status_code == 200

    def client_credentials(self):
        response = self.http.post("/token", headers=basic(run.CC_CLIENT), data={"grant_type": "client_credentials"})
        assert response.status_code == 200, response.data

    def introspection(self):
        response = self.http.post("/introspect", headers=basic(run.CC_CLIENT), data={"token": self.introspect_at})
        assert response.get_json()["active"] is True, response.data

    def introspection_rt(self):
        response = self.http.post("/introspect", headers=basic(run.RP_CLIENT),
                                  data={"token": self.introspect_rt, "token_type_hint": "refresh_token"})
        assert response.get_json()["active"] is True, response.data

    def refresh(self):
        response = self.http.post("/token", headers=basic(run.RP_CLIENT),
                                  data={"grant_type": "refresh_token", "refresh_token": self.refresh_token})
        assert response.status_code == 200, response.data
        self.refresh_token = response.get_json()["refresh_token"]

    def sso(self):
        url = self.authorize_url()
        response = self.browser.get(url)
        assert response.status_code == 302, response.data[:200]
        self.redeem(parse_qs(urlsplit(response.headers["Location"]).query)["code"][0])

    def login(self):
        browser = self.app.test_client()
        url = self.authorize_url()
        self.follow_to_code(browser, browser.get(url), url)


def measure(driver: Driver, name: str, n: int, warmup: int) -> dict:
    call = getattr(driver, name)
    for _ in range(warmup):
        call()
    COUNTS.__init__()
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"name": name, "cpu_ms": statistics.median(cpu) * 1000, "wall_ms": statistics.median(wall) * 1000,
            "sql": COUNTS.total_sql() / n, "kinds": {k: v / n for k, v in COUNTS.sql.items()},
            "commits": COUNTS.commits / n, "redis": sum(COUNTS.redis.values()) / n,
            # psycopg 3 starts each transaction with its own BEGIN round trip
            "wire": (sum(COUNTS.wire.values()) + COUNTS.wire["COMMIT"] + COUNTS.wire["ROLLBACK"]) / n,
            "wire_kinds": {k: v / n for k, v in (COUNTS.wire + Counter(
                {"BEGIN": COUNTS.wire["COMMIT"] + COUNTS.wire["ROLLBACK"]})).items()},
            "redis_kinds": {k: v / n for k, v in COUNTS.redis.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--n", type=int, default=100, help="flows per scenario (login: a tenth)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--scenarios", default=",".join(s.name for s in run.SCENARIOS))
    parser.add_argument("--pyinstrument", default="", help="comma-separated scenarios to profile in-process")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench_perf_rt")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)

    variant_args = argparse.Namespace(pg_url=args.pg_url, redis_url=args.redis_url)
    variant = run.Variant(args.db, variant_args)
    variant.workdir = run.TMP / f"idp-bench-perf-roundtrips-{args.db}"
    if args.db == "sqlite":
        variant.database_url = f"sqlite:///{variant.workdir / 'idp.sqlite3'}"
    variant.prepare()

    from idp.app import create_app
    from idp.settings import from_env

    env = variant.env("http://127.0.0.1")
    os.environ.update({k: v for k, v in env.items() if k.startswith("IDP_")})
    app = create_app(from_env(env))
    instrument(app)
    driver = Driver(app)
    driver.setup()

    print(f"{variant.label}; in-process (Flask test client), median of {args.n} flows after {args.warmup} warm-up\n")
    print("| scenario | CPU ms/flow | wall ms/flow | SQL statements/flow | commits/flow | PostgreSQL round trips/flow "
          "| Redis round trips/flow |")
    print("|---|---|---|---|---|---|---|")
    for name in [s for s in args.scenarios.split(",") if s]:
        n = max(5, args.n // 10) if name == "login" else args.n
        row = measure(driver, name, n, min(args.warmup, 3) if name == "login" else args.warmup)
        kinds = " ".join(f"{k}:{v:g}" for k, v in sorted(row["kinds"].items()))
        redis = " ".join(f"{k}:{v:g}" for k, v in sorted(row["redis_kinds"].items()))
        wire = " ".join(f"{k}:{v:g}" for k, v in sorted(row["wire_kinds"].items()))
        print(f"| {name} | {row['cpu_ms']:.2f} | {row['wall_ms']:.2f} | {row['sql']:g} ({kinds}) | "
              f"{row['commits']:g} | {(format(row['wire'], 'g') + ' (' + wire + ')') if wire else '-'} "
              f"| {row['redis']:g}{f' ({redis})' if redis else ''} |")

    for name in [s for s in args.pyinstrument.split(",") if s]:
        from pyinstrument import Profiler

        call = getattr(driver, name)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(max(5, args.n // 10) if name == "login" else args.n):
            call()
        profiler.stop()
        print(f"\n== pyinstrument: {name} x{args.n}")
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
