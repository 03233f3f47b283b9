"""Benchmark: Connect IdP against node-oidc-provider, per server core (issue 9).

    python bench/run.py                    # SQLite and PostgreSQL+Redis, 3 rounds x 10 s per scenario, with node
    python bench/run.py --rounds 3 --duration 5 --python /usr/bin/python3.11   # bench/README.md's run
    python bench/run.py --db pg --rounds 5 --duration 10 --server sync --workers 2   # gunicorn instead of granian
    python bench/run.py --smoke            # a few seconds, SQLite, no node: CI keeps the bench working

Each server under test runs pinned to one core (``taskset -c 1``), the load generator to the other (``-c 0``), so
every figure is per server core. Our IdP runs under granian as the Dockerfile runs it (one worker per core, four
threads to overlap database round trips; ``--python`` for an interpreter built like the image's, see
bench/interpreter.py), or under gunicorn (sync or gthread workers) for comparison; the reference is
bench/node/server.js (node-oidc-provider configured like ours). Scenarios:

  discovery, jwks          GET, wrk (bench/wrk/get.lua)
  client_credentials       POST /token, wrk (bench/wrk/token.lua): a JWT access token signed ES256, recorded
  introspection            POST introspect, wrk (bench/wrk/introspect.lua): an access token issued to the caller
  introspection_rt         the same for a refresh token
  refresh                  refresh_token grant with rotation, bench/flows.py (each user carries its own chain)
  sso                      authorize with a session -> code -> token, bench/flows.py, flows/s
  login                    authorize -> login page -> argon2id password check -> code, bench/flows.py, logins/s
  agreements               bench/agreements.py (PostgreSQL only; its numbers, its methodology)

Rounds interleave the two servers scenario by scenario, so both see the same machine. For each scenario the
table shows the median over the rounds with the spread (min-max), p50/p99 latency of the median round, and the
errors summed over all rounds (wrk socket errors + timeouts + unexpected status or body; driver errors by kind).
Errors are never dropped: any error, or a scenario with no successful request, makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import flows  # noqa: E402  (bench/flows.py)
import interpreter  # noqa: E402  (bench/interpreter.py)
import pyspy_summary  # noqa: E402  (bench/pyspy_summary.py)

from idp import __file__ as _idp_file  # noqa: E402

#: The checkout whose idp package is imported (PYTHONPATH may point at another one).
ROOT = Path(_idp_file).resolve().parent.parent
TMP = Path(tempfile.gettempdir())
LOGS = TMP / "idp-bench-perf-logs"

# Bench credentials: loopback only, throwaway databases (seeded again on every run, so the app secret is new).
SECRET_KEY = secrets.token_urlsafe(48)
CC_CLIENT = ("perf-cc", "perf-cc-secret-7d3e91b0c4a2f6e8d1b5")
RP_CLIENT = ("perf-rp", "perf-rp-secret-2a8f6c0e4b9d1f3a7c5e")
EMAIL = "perf@bench.example"
PASSWORD = "Bench-Perf-Harbour-Lantern-2024"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the drivers read the code from the Location
OPAQUE_RESOURCE = "urn:bench:opaque"
REDIS_PREFIX = "benchperf:"

#: Keycloak 26 published sizing, per vCPU (issue 9): scenario -> (figure, what it is).
KEYCLOAK = {"login": 15, "client_credentials": 120, "refresh": 120}
#: Argon2id parameter sets to report: (m KiB, t, p, label).
ARGON2_SETS = [(19456, 2, 1, "ours / OWASP 2 (production)"), (47104, 1, 1, "OWASP 1"), (12288, 3, 1, "OWASP 3"),
               (9216, 4, 1, "OWASP 4"), (7168, 5, 1, "OWASP 5 / Keycloak 26 default")]


@dataclass
class Scenario:
    name: str
    title: str
    unit: str           # req/s | flows/s | logins/s
    kind: str           # wrk | flow
    server_side: bool = True


SCENARIOS = [
    Scenario("discovery", "discovery GET", "req/s", "wrk"),
    Scenario("jwks", "JWKS GET", "req/s", "wrk"),
    Scenario("client_credentials", "client_credentials token", "req/s", "wrk"),
    Scenario("introspection", "introspection (access token)", "req/s", "wrk"),
    Scenario("introspection_rt", "introspection (refresh token)", "req/s", "wrk"),
    Scenario("refresh", "refresh_token + rotation", "req/s", "flow"),
    Scenario("sso", "SSO hop (authorize+token)", "flows/s", "flow"),
    Scenario("login", "password login (argon2id)", "logins/s", "flow"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found += [int(c) for c in text]
    except OSError:
        pass
    return found


class Pinning:
    def __init__(self, server_core: int | None, client_core: int | None):
        self.server_core, self.client_core = server_core, client_core

    def server(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(self.server_core), *argv] if self.server_core is not None else argv

    def client(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(self.client_core), *argv] if self.client_core is not None else argv


# -- the databases ---------------------------------------------------------------------------------------------

class Variant:
    """Where our IdP keeps its data: SQLite (no Redis) or PostgreSQL + Redis. Fresh on every run."""

    def __init__(self, name: str, args):
        self.name = name
        self.args = args
        self.workdir = TMP / f"idp-bench-perf-{name}"
        if name == "sqlite":
            self.database_url = f"sqlite:///{self.workdir / 'idp.sqlite3'}"
            self.redis_url = ""
        else:
            self.database_url = args.pg_url
            self.redis_url = args.redis_url

    @property
    def label(self) -> str:
        return "SQLite" if self.name == "sqlite" else "PostgreSQL + Redis"

    def env(self, issuer: str) -> dict[str, str]:
        env = {**os.environ,
               "IDP_ENV": "production", "IDP_ISSUER": issuer, "IDP_DATABASE_URL": self.database_url,
               "IDP_REDIS_URL": self.redis_url, "IDP_REDIS_PREFIX": REDIS_PREFIX, "IDP_SECRET_KEY": SECRET_KEY,
               "IDP_KEYS_DIR": str(self.workdir / "keys"), "IDP_OUTBOX_DIR": str(self.workdir / "outbox"),
               # Counted as in production (one store increment per token request), but never reached: one bench
               # client makes thousands of requests a minute.
               "IDP_RATE_LIMIT_FACTOR": "1000000"}
        return env

    def prepare(self) -> None:
        """A fresh database and store, migrated, with the bench clients and person."""
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        (self.workdir / "keys").mkdir(parents=True)
        (self.workdir / "keys").chmod(0o700)
        if self.name == "pg":
            self._recreate_pg()
            self._flush_redis()
        seed_ours(self.env("http://127.0.0.1"), self.database_url)

    def _recreate_pg(self) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{url.database}"'))
        admin.dispose()

    def _flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        for prefix in (REDIS_PREFIX,):
            batch = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(batch), 1000):
                client.delete(*batch[start:start + 1000])
        client.close()


def seed_ours(env: dict[str, str], database_url: str) -> None:
    """Migrate, then register the two bench clients and the bench person (in this process, with the app)."""
    from idp.app import create_app
    from idp.clients import service as clients
    from idp.extensions import db_session, runtime
    from idp.identities import service as identities
    from idp.settings import from_env
    from idp.storage import migrations

    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    migrations.upgrade(database_url)
    app = create_app(from_env(env).with_(check_schema=False))
    with app.app_context():
        session = db_session()
        clients.create_client(session, client_id=CC_CLIENT[0], client_secret=CC_CLIENT[1],
                              client_name="bench client_credentials", redirect_uris=[],
                              grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic")
        clients.create_client(session, client_id=RP_CLIENT[0], client_secret=RP_CLIENT[1],
                              client_name="bench RP", redirect_uris=[REDIRECT_URI], first_party=True,
                              token_endpoint_auth_method="client_secret_basic")
        identities.create_identity(session, runtime().passwords, email=EMAIL, password=PASSWORD,
                                   given_name="Bench", family_name="Person", email_verified=True)
        session.commit()
    runtime_db = app.extensions["idp"].db
    runtime_db.dispose()


# -- the servers -----------------------------------------------------------------------------------------------

class Server:
    name = "server"
    label = "server"

    def __init__(self, pinning: Pinning, tag: str):
        self.pinning = pinning
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        LOGS.mkdir(exist_ok=True)
        self.log_path = LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}-{self.name}.log"
        self.process: subprocess.Popen | None = None
        self.metadata: dict = {}

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        raise NotImplementedError

    def start(self) -> Server:
        argv, env, cwd = self.command()
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(self.pinning.server(argv), cwd=cwd, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.label} exited ({self.process.returncode}); log {self.log_path}:\n"
                                 + self.log_path.read_text(errors="replace")[-3000:])
            try:
                if requests.get(self.issuer + self.ready_path, timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise SystemExit(f"{self.label} did not become ready; log {self.log_path}")
        self.metadata = requests.get(self.issuer + "/.well-known/openid-configuration", timeout=10).json()
        return self

    ready_path = "/.well-known/openid-configuration"

    def worker_pids(self) -> list[int]:
        return [self.process.pid]

    def rss(self) -> dict[int, int | None]:
        return {pid: rss_kib(pid) for pid in self.worker_pids()}

    def cpu(self) -> float:
        """CPU seconds the server (master and workers) has used so far."""
        return cpu_seconds(sorted({self.process.pid, *self.worker_pids()}))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if getattr(self, "log", None):
            self.log.close()

    # what each scenario needs, per server
    introspect_token_params: dict = {}


class Ours(Server):
    name = "ours"
    ready_path = "/readyz"

    def __init__(self, pinning: Pinning, variant: Variant, kind: str, workers: int, threads: int,
                 access_log: bool = True, bin_dir: Path | None = None, python_label: str = ""):
        self.variant, self.kind, self.workers, self.threads = variant, kind, workers, threads
        self.access_log = access_log
        #: The bin/ folder of the virtualenv our server runs from (bench/interpreter.py).
        self.bin = bin_dir or Path(sys.executable).parent
        self.python_label = python_label
        super().__init__(pinning, f"{variant.name}-{kind}")

    @property
    def label(self) -> str:
        on = f"; {self.python_label}" if self.python_label else ""
        if self.kind == "granian":
            return f"Connect IdP (granian WSGI x{self.workers}, {self.threads} blocking threads{on})"
        if self.kind == "gthread":
            return f"Connect IdP (gunicorn gthread x{self.workers}, {self.threads} threads{on})"
        return f"Connect IdP (gunicorn sync x{self.workers}{on})"

    def command(self):
        bind = f"127.0.0.1:{self.port}"
        if self.kind == "granian":
            argv = [str(self.bin / "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", str(self.workers), "--blocking-threads", str(self.threads),
                    "--log-level", "warning", "--respawn-failed-workers", "--no-access-log", "idp.wsgi:app"]
        else:
            argv = [str(self.bin / "python"), "-m", "gunicorn", "--bind", bind, "--workers", str(self.workers),
                    "--worker-class", self.kind, "--log-level", "warning"]
            if self.access_log:
                argv += ["--access-logfile", "-"]
            if self.kind == "gthread":
                argv += ["--threads", str(self.threads)]
            argv.append("idp.wsgi:app")
        return argv, self.variant.env(self.issuer), ROOT

    def worker_pids(self) -> list[int]:
        # taskset execs the server, so the Popen pid is the master; its children are the workers.
        return children(self.process.pid) or [self.process.pid]


class Node(Server):
    name = "node"

    def __init__(self, pinning: Pinning, variant: Variant):
        self.variant = variant
        super().__init__(pinning, variant.name)

    @property
    def label(self) -> str:
        store = "Redis adapter" if self.variant.name == "pg" else "in-process Map adapter"
        return f"node-oidc-provider {node_provider_version()} (Node {node_version()}, {store})"

    def command(self):
        env = {**os.environ, "PORT": str(self.port), "BENCH_CC_SECRET": CC_CLIENT[1], "BENCH_RP_SECRET": RP_CLIENT[1],
               "BENCH_EMAIL": EMAIL, "BENCH_PASSWORD": PASSWORD, "BENCH_REDIRECT_URI": REDIRECT_URI,
               "NODE_ENV": "production"}
        if self.variant.name == "pg":
            env.update(BENCH_REDIS_URL=self.variant.redis_url, BENCH_REDIS_PREFIX=REDIS_PREFIX + "node:")
        return ["node", "server.js"], env, BENCH / "node"


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def node_provider_version() -> str:
    try:
        return json.loads((BENCH / "node/node_modules/oidc-provider/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def ensure_node_modules() -> None:
    if (BENCH / "node/node_modules/oidc-provider").exists():
        return
    print("installing bench/node dependencies (npm ci) ...", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH / "node", check=True)


# -- load generation -------------------------------------------------------------------------------------------

@dataclass
class Result:
    rate: float                 # per second, in the scenario's unit
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    requests: int
    detail: dict = field(default_factory=dict)
    #: Server CPU milliseconds per request (per flow for the flow scenarios), over every request the load
    #: generator sent, warm-up second included: what a request costs the server core, whatever else ran there.
    cpu_ms: float | None = None


def basic(client: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()


class Load:
    def __init__(self, args, pinning: Pinning):
        self.args = args
        self.pinning = pinning
        self.wrk = shutil.which("wrk")
        if not self.wrk and not args.smoke:
            raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")

    def prepare(self, server: Server) -> dict:
        """Per server: the tokens the introspection scenarios introspect."""
        md = server.metadata
        form = {"grant_type": "client_credentials"}
        if isinstance(server, Node):
            form["resource"] = OPAQUE_RESOURCE  # node-oidc-provider introspects only opaque tokens
        response = requests.post(md["token_endpoint"], data=form, auth=CC_CLIENT, timeout=30)
        response.raise_for_status()
        access_token = response.json()["access_token"]
        refresh_token = asyncio.run(first_refresh_token(server))
        return {"access_token": access_token, "refresh_token": refresh_token}

    def run(self, scenario: Scenario, server: Server, context: dict, duration: float, connections: int) -> Result:
        self._cpu_mark = None
        self._server = server
        result = self._run(scenario, server, context, duration, connections)
        spent = server.cpu() - (self._cpu_mark if self._cpu_mark is not None else self._cpu_start)
        units = result.detail.pop("units", result.requests)
        result.cpu_ms = 1000 * spent / units if units else None
        return result

    def _run(self, scenario: Scenario, server: Server, context: dict, duration: float, connections: int) -> Result:
        md = server.metadata
        self._cpu_start = server.cpu()
        if scenario.kind == "flow":
            return self._flow(scenario.name, server, duration, connections)
        spec = {
            "discovery": ("get.lua", server.issuer + "/.well-known/openid-configuration", {"BENCH_EXPECT_BODY": '"issuer"'}),
            "jwks": ("get.lua", md["jwks_uri"], {"BENCH_EXPECT_BODY": '"keys"'}),
            "client_credentials": ("token.lua", md["token_endpoint"],
                                   {"BENCH_AUTH": basic(CC_CLIENT), "BENCH_BODY": "grant_type=client_credentials",
                                    "BENCH_EXPECT_BODY": '"access_token"'}),
            "introspection": ("introspect.lua", md["introspection_endpoint"],
                              {"BENCH_AUTH": basic(CC_CLIENT), "BENCH_TOKEN": context["access_token"],
                               "BENCH_EXPECT_BODY": '"active":%s*true'}),
            "introspection_rt": ("introspect.lua", md["introspection_endpoint"],
                                 {"BENCH_AUTH": basic(RP_CLIENT), "BENCH_TOKEN": context["refresh_token"],
                                  "BENCH_HINT": "refresh_token", "BENCH_EXPECT_BODY": '"active":%s*true'}),
        }[scenario.name]
        script, url, env = spec
        if self.wrk:
            return self._wrk(script, url, env, duration, connections)
        return self._request_fallback(scenario.name, server, url, env, duration, connections)

    def _wrk(self, script: str, url: str, env: dict, duration: float, connections: int) -> Result:
        argv = self.pinning.client([self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
                                    "--timeout", "10s", "-s", str(BENCH / "wrk" / script), url])
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env},
                              timeout=duration + 60)
        line = next((l for l in done.stdout.splitlines() if l.startswith("WRKJSON ")), None)
        if line is None:
            raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
        data = json.loads(line[len("WRKJSON "):])
        seconds = data["duration_us"] / 1e6
        socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
        # "bad" counts every response with another status or body (wrk's own "status" count is a subset of it).
        errors = socket_errors + data["bad"]
        good = data["requests"] - data["bad"]
        detail = {k: data[k] for k in ("connect", "read", "write", "timeout", "status", "bad") if data[k]}
        if data["bad_sample"].strip():
            detail["sample"] = data["bad_sample"].strip()
        return Result(good / seconds, data["p50_us"] / 1000, data["p99_us"] / 1000, errors, data["requests"], detail)

    started_file: Path | None = None
    on_started = None

    def _driver(self, argv_tail: list[str], duration: float) -> dict:
        """Run bench/flows.py; the server's CPU is counted from the moment its setup (the logins) is over."""
        started = self.started_file or LOGS / f"flows-started-{os.getpid()}"
        started.unlink(missing_ok=True)
        argv = self.pinning.client([sys.executable, str(BENCH / "flows.py"), *argv_tail, "--started-file", str(started)])
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if started.exists():
            self._cpu_mark = self._server.cpu()
            if self.on_started:  # --profile: attach py-spy now
                self.on_started()
        stdout, stderr = process.communicate(timeout=duration + 180)
        started.unlink(missing_ok=True)
        if process.returncode != 0:
            raise SystemExit(f"bench/flows.py failed: {stderr[-3000:]}")
        return json.loads(stdout.strip().splitlines()[-1])

    def _flow(self, name: str, server: Server, duration: float, connections: int) -> Result:
        concurrency = min(connections, self.args.login_concurrency) if name == "login" else connections
        tail = ["--scenario", name, "--issuer", server.issuer, "--client", ":".join(RP_CLIENT),
                "--redirect-uri", REDIRECT_URI, "--email", EMAIL, "--password", PASSWORD,
                "--duration", str(duration), "--warmup", str(self.args.flow_warmup),
                "--concurrency", str(concurrency)]
        if isinstance(server, Node):
            tail += ["--offline-prompt", "consent"]  # node-oidc-provider grants offline_access only with consent
        data = self._driver(tail, duration)
        detail = {**data["error_kinds"], **{"setup:" + k: v for k, v in data["setup_errors"].items()}}
        if data["error_samples"]:
            detail["sample"] = next(iter(data["error_samples"].items()))
        detail["driver_cpu"] = data["driver_cpu_fraction"]
        detail["requests_per_s"] = round(data["requests_per_s"], 1)
        if data.get("request_p50_ms") is not None:
            detail["request_p50_p99_ms"] = (data["request_p50_ms"], data["request_p99_ms"])
        detail["units"] = data["all_flows"]
        return Result(data["flows_per_s"], data["flow_p50_ms"], data["flow_p99_ms"], data["errors"],
                      data["requests"], detail)

    def _request_fallback(self, name, server, url, env, duration, connections) -> Result:
        """Without wrk (only allowed in --smoke): the same request from bench/flows.py."""
        tail = ["--scenario", "request", "--issuer", server.issuer, "--url", url, "--duration", str(duration),
                "--warmup", "0", "--concurrency", str(connections)]
        if "BENCH_AUTH" in env:
            client = CC_CLIENT if env["BENCH_AUTH"] == basic(CC_CLIENT) else RP_CLIENT
            form = env.get("BENCH_BODY") or urlencode({"token": env["BENCH_TOKEN"],
                                                       **({"token_type_hint": env["BENCH_HINT"]}
                                                          if env.get("BENCH_HINT") else {})})
            tail += ["--method", "POST", "--client", ":".join(client), "--form", form]
        expect = env["BENCH_EXPECT_BODY"].replace("%s", r"\s")
        tail += ["--expect", expect]
        data = self._driver(tail, duration)
        return Result(data["flows_per_s"], data["request_p50_ms"], data["request_p99_ms"], data["errors"],
                      data["requests"], {**data["error_kinds"], "generator": "bench/flows.py (no wrk)",
                                         "units": data["all_flows"]})


async def first_refresh_token(server: Server) -> str:
    """Sign in, authorize offline_access and redeem the code: a refresh token for introspection."""
    args = argparse.Namespace(issuer=server.issuer, client=":".join(RP_CLIENT), redirect_uri=REDIRECT_URI,
                              email=EMAIL, password=PASSWORD,
                              offline_prompt="consent" if isinstance(server, Node) else None)
    browser = flows.Browser(server.issuer)
    try:
        driver = flows.Flows(args, server.metadata)
        await driver.login(browser)
        return await driver.setup_refresh(browser)
    finally:
        browser.connection.close()


# -- argon2 parameters -----------------------------------------------------------------------------------------

ARGON2_PROBE = r"""
import json, sys, time
from argon2 import PasswordHasher, Type
out = []
for m, t, p, label in json.loads(sys.argv[1]):
    hasher = PasswordHasher(time_cost=t, memory_cost=m, parallelism=p, type=Type.ID)
    stored = hasher.hash("Bench-Perf-Harbour-Lantern-2024")
    hasher.verify(stored, "Bench-Perf-Harbour-Lantern-2024")
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < float(sys.argv[2]) or n < 3:
        hasher.verify(stored, "Bench-Perf-Harbour-Lantern-2024")
        n += 1
    seconds = (time.perf_counter() - started) / n
    out.append({"m": m, "t": t, "p": p, "label": label, "ms": seconds * 1000, "per_s": 1 / seconds})
print(json.dumps(out))
"""


def argon2_table(pinning: Pinning, seconds: float, python: str) -> list[dict]:
    argv = pinning.server([python, "-c", ARGON2_PROBE, json.dumps(ARGON2_SETS), str(seconds)])
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


# -- bench/agreements.py ---------------------------------------------------------------------------------------

def run_agreements(args) -> list[dict]:
    """bench/agreements.py against its own database; returns its table rows (p50/p95/p99 ms)."""
    # On the server's interpreter (--python), as the other scenarios: agreements.py starts its gunicorn with it.
    argv = [str(args.server_bin / "python"), str(BENCH / "agreements.py"), "--database-url", args.agreements_url,
            "--no-explain"]
    print(f"  running {' '.join(argv[1:])} on {args.server_python} (its own gunicorn x2, not pinned; sequential "
          "requests)", flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    rows = []
    names = ("api first page", "api page 5 (cursor)", "api search name", "api search number",
             "api first page e-conomic", "chooser page", "chooser search")
    for line in done.stdout.splitlines():
        # Longest name first: "api first page" is also the start of "api first page e-conomic".
        for name in sorted(names, key=len, reverse=True):
            if line.startswith(name + " ") and line.split()[-1] in ("PASS", "FAIL"):
                numbers = line[len(name):].split()
                rows.append({"name": name, "n": int(numbers[0]), "p50": float(numbers[1]), "p95": float(numbers[2]),
                             "p99": float(numbers[3]), "max": float(numbers[4]), "result": numbers[5]})
                break
    if not rows:
        output = done.stdout + done.stderr
        reasons = [line.strip() for line in output.splitlines() if "Error:" in line or "Error " in line[:40]]
        rows.append({"name": f"bench/agreements.py failed (exit {done.returncode})",
                     "error": reasons[-1] if reasons else output[-600:]})
    return rows


# -- profiling -------------------------------------------------------------------------------------------------

def profile(server: Ours, load_: Load, scenario: Scenario, context: dict, seconds: float, out_dir: Path) -> list[str]:
    """py-spy on every worker while the scenario runs (after its setup); returns the top functions."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = out_dir / f"profile-{server.variant.name}-{scenario.name}.txt"
    argv = [py_spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--rate", "250",
            "--duration", str(int(seconds)), "--format", "raw", "--output", str(raw), "--nonblocking"]
    spy: list[subprocess.Popen] = []

    def attach():
        spy.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    if scenario.kind == "flow":
        load_.on_started = attach
    else:
        attach()
        time.sleep(0.5)
    try:
        load_.run(scenario, server, context, seconds + 2, load_.args.connections)
    finally:
        load_.on_started = None
    if not spy:
        return ["py-spy was never attached (the driver did not start)"]
    spy[0].wait(60)
    if not raw.exists():
        return [f"py-spy failed: {spy[0].stderr.read().decode(errors='replace')[-500:]}"]
    return [f"collapsed stacks: {raw}", *pyspy_summary.summarize(raw)]


# -- the report ------------------------------------------------------------------------------------------------

def summarize(results: list[Result]) -> dict:
    rates = [r.rate for r in results]
    median = statistics.median(rates)
    middle = min(results, key=lambda r: abs(r.rate - median))
    details = Counter()
    samples = []
    for r in results:
        for k, v in r.detail.items():
            if isinstance(v, int) and not isinstance(v, bool) and k not in ("requests_per_s",):
                details[k] += v
            elif k == "sample":
                samples.append(v)
    cpu = [r.cpu_ms for r in results if r.cpu_ms]
    return {"median": median, "min": min(rates), "max": max(rates), "p50": middle.p50_ms, "p99": middle.p99_ms,
            "cpu_ms": statistics.median(cpu) if cpu else None,
            "cpu_min": min(cpu) if cpu else None, "cpu_max": max(cpu) if cpu else None,
            "errors": sum(r.errors for r in results), "requests": sum(r.requests for r in results),
            "error_kinds": dict(details), "samples": samples[:2],
            "driver_cpu": max((r.detail.get("driver_cpu") or 0) for r in results) or None, "rounds": rates}


def fmt_rate(s: dict | None) -> str:
    if not s:
        return "-"
    spread = f"{s['min']:.0f}-{s['max']:.0f}" if s["max"] >= 100 else f"{s['min']:.1f}-{s['max']:.1f}"
    value = f"{s['median']:.0f}" if s["median"] >= 100 else f"{s['median']:.1f}"
    return f"{value} ({spread})"


def fmt_lat(s: dict | None) -> str:
    if not s or s["p50"] is None:
        return "-"
    return f"{s['p50']:.1f} / {s['p99']:.1f}"


def table(variant_label: str, summary: dict, scenarios: list[Scenario], with_node: bool) -> list[str]:
    head = ["scenario", "unit", "ours median (min-max)", "ours p50/p99 ms", "ours err"]
    if with_node:
        head += ["node median (min-max)", "node p50/p99 ms", "node err", "ours/node"]
    head += ["Keycloak/vCPU"]
    rows = []
    for scenario in scenarios:
        ours, node = summary["ours"].get(scenario.name), summary.get("node", {}).get(scenario.name)
        row = [scenario.title, scenario.unit, fmt_rate(ours), fmt_lat(ours), str(ours["errors"]) if ours else "-"]
        if with_node:
            ratio = f"{ours['median'] / node['median']:.2f}x" if ours and node and node["median"] else "-"
            row += [fmt_rate(node), fmt_lat(node), str(node["errors"]) if node else "-", ratio]
        row += [str(KEYCLOAK.get(scenario.name, "-"))]
        rows.append(row)
    lines = [f"| {' | '.join(head)} |", "|" + "|".join("---" for _ in head) + "|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return lines


def cpu_table(summary: dict, scenarios: list[Scenario], with_node: bool) -> list[str]:
    """What one request (flow) costs each server in CPU time: robust to other work on the core, unlike req/s."""
    head = ["scenario", "ours CPU ms (min-max)", "ours per core-second"]
    if with_node:
        head += ["node CPU ms (min-max)", "node per core-second", "ours/node by CPU"]
    lines = [f"| {' | '.join(head)} |", "|" + "|".join("---" for _ in head) + "|"]
    for scenario in scenarios:
        ours, node = summary["ours"].get(scenario.name), summary.get("node", {}).get(scenario.name)

        def cell(s):
            if not s or not s.get("cpu_ms"):
                return "-", "-"
            return (f"{s['cpu_ms']:.2f} ({s['cpu_min']:.2f}-{s['cpu_max']:.2f})",
                    f"{1000 / s['cpu_ms']:.0f}" if s["cpu_ms"] < 10 else f"{1000 / s['cpu_ms']:.1f}")
        row = [f"{scenario.title} ({scenario.unit.split('/')[0]})", *cell(ours)]
        if with_node:
            ratio = (f"{node['cpu_ms'] / ours['cpu_ms']:.2f}x"
                     if ours and node and ours.get("cpu_ms") and node.get("cpu_ms") else "-")
            row += [*cell(node), ratio]
        lines.append(f"| {' | '.join(row)} |")
    return lines


def fmt_rss(rss: dict[int, int | None]) -> str:
    values = [v for v in rss.values() if v]
    return ", ".join(f"{v / 1024:.0f}" for v in values) + " MB" if values else "?"


# -- main ------------------------------------------------------------------------------------------------------

def run_variant(variant: Variant, args, pinning: Pinning, load_: Load, scenarios: list[Scenario]) -> dict:
    print(f"\n== {variant.label}: preparing a fresh database", flush=True)
    variant.prepare()
    servers: list[Server] = [Ours(pinning, variant, args.server, args.workers, args.threads, args.access_log,
                                  args.server_bin, args.server_python)]
    if args.node:
        servers.append(Node(pinning, variant))
    record = {"variant": variant.name, "label": variant.label, "load_before": load(), "servers": {},
              "results": defaultdict(lambda: defaultdict(list)), "rss": {}}
    try:
        for server in servers:
            server.start()
            record["servers"][server.name] = server.label
            print(f"   {server.label} at {server.issuer} (log {server.log_path})", flush=True)
        contexts = {server.name: load_.prepare(server) for server in servers}
        if args.warmup:
            print(f"   warm-up: every scenario {args.warmup:g} s per server", flush=True)
        for scenario in scenarios if args.warmup else []:
            for server in servers:
                warm = load_.run(scenario, server, contexts[server.name], args.warmup, args.connections)
                if warm.errors:
                    print(f"     warm-up {server.name} {scenario.name}: {warm.errors} errors {warm.detail}", flush=True)
        for server in servers:
            record["rss"][server.name] = {"after_warmup": server.rss()}
        print("   RSS after warm-up (MB per worker): "
              + "; ".join(f"{s.name} {fmt_rss(record['rss'][s.name]['after_warmup'])}" for s in servers), flush=True)
        for round_ in range(1, args.rounds + 1):
            print(f"   round {round_}/{args.rounds} (load {load()})", flush=True)
            for scenario in scenarios:
                for server in servers:
                    result = load_.run(scenario, server, contexts[server.name], args.duration, args.connections)
                    record["results"][server.name][scenario.name].append(result)
                    extra = f"  errors {result.errors} {result.detail}" if result.errors else ""
                    print(f"     {scenario.name:<20} {server.name:<5} {result.rate:9.1f} {scenario.unit:<8} "
                          f"p50 {result.p50_ms or 0:7.1f} ms  p99 {result.p99_ms or 0:7.1f} ms  "
                          f"server CPU {result.cpu_ms or 0:7.2f} ms/{scenario.unit.split('/')[0].rstrip('s')}"
                          f"{extra}", flush=True)
        for server in servers:
            record["rss"][server.name]["after_run"] = server.rss()
        if args.profile:
            ours = servers[0]
            record["profiles"] = {}
            for name in args.profile:
                print(f"   profiling {name} on ours with py-spy ({args.profile_seconds:g} s)", flush=True)
                record["profiles"][name] = profile(ours, load_, BY_NAME[name], contexts["ours"],
                                                   args.profile_seconds, LOGS)
    finally:
        for server in servers:
            server.stop()
    record["load_after"] = load()
    if args.agreements and variant.name == "pg":
        record["agreements"] = run_agreements(args)
    return record


def report(records: list[dict], args, scenarios: list[Scenario], argon2: list[dict] | None) -> tuple[list[str], bool]:
    out, ok = [], True
    out.append(f"machine: {os.cpu_count()} CPUs, server core {pinning_label(args)}; "
               f"bench runner on Python {sys.version.split()[0]}, our server on {args.server_python}; "
               f"wrk {'yes' if shutil.which('wrk') else 'no (fallback driver)'}")
    for record in records:
        summary = {name: {s: summarize(rs) for s, rs in by.items()} for name, by in record["results"].items()}
        out.append("")
        out.append(f"### {record['label']}: {args.rounds} round(s) x {args.duration:g} s, {args.connections} connections")
        out.append("")
        out.append("servers: " + "; ".join(record["servers"].values()))
        out.append(f"load average (1/5/15 min) before {record['load_before']}, after {record['load_after']}")
        out.append("")
        out += table(record["label"], summary, scenarios, "node" in summary)
        out.append("")
        out.append("Server CPU per request (per flow / login), median over the rounds: user + system time of the server's "
                   "processes divided by the requests sent. Other work on the core lowers req/s but not this.")
        out.append("")
        out += cpu_table(summary, scenarios, "node" in summary)
        out.append("")
        for name, rss in record["rss"].items():
            out.append(f"RSS {name}: after warm-up {fmt_rss(rss.get('after_warmup', {}))}; "
                       f"after the run {fmt_rss(rss.get('after_run', {}))}")
        for name, by in summary.items():
            for scenario, s in by.items():
                if s["errors"] or s["median"] <= 0:
                    ok = False
                    out.append(f"ERRORS {name} {scenario}: {s['errors']} {s['error_kinds']} {s['samples']}")
                if (s.get("driver_cpu") or 0) > 0.85:
                    out.append(f"note: the driver used {s['driver_cpu']:.0%} of its core in {name} {scenario}: "
                               f"it may be the limit")
        if record.get("agreements"):
            out.append("")
            out.append("agreements (bench/agreements.py, PostgreSQL, 10,000 agreements; sequential, p95 target 50 ms):")
            out.append("")
            out.append("| scenario | n | p50 ms | p95 ms | p99 ms | result |")
            out.append("|---|---|---|---|---|---|")
            for row in record["agreements"]:
                if "error" in row:
                    out.append(f"| {row['name']} | | | | | {row['error'][-300:]} |")
                    ok = False
                else:
                    out.append(f"| {row['name']} | {row['n']} | {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} "
                               f"| {row['result']} |")
        for name, lines in (record.get("profiles") or {}).items():
            out.append("")
            out.append(f"py-spy, ours, {name} ({record['label']}):")
            out += ["    " + line for line in lines]
    if argon2:
        out.append("")
        out.append("argon2id verify cost on the server core (argon2-cffi), the ceiling for logins/s per core:")
        out.append("")
        out.append("| parameters | ms per verify | verifies/s per core |")
        out.append("|---|---|---|")
        for row in argon2:
            out.append(f"| m={row['m']} KiB t={row['t']} p={row['p']} ({row['label']}) | {row['ms']:.1f} "
                       f"| {row['per_s']:.1f} |")
    return out, ok


def pinning_label(args) -> str:
    return f"{args.server_core}, load generator core {args.client_core}" if args.server_core is not None else "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="CI: SQLite, no node, 1 round of 1 s per scenario; exit 1 on any error")
    parser.add_argument("--db", choices=("sqlite", "pg", "both"), default=None, help="default both (smoke: sqlite)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (smoke 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per scenario and round (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds per scenario before round 1 (default 2)")
    parser.add_argument("--flow-warmup", type=float, default=None,
                        help="seconds each flows.py run drives before its window opens (default 1)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections / driver users (default 8)")
    parser.add_argument("--login-concurrency", type=int, default=4, help="users in the login scenario (default 4)")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated subset of: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--server", choices=("sync", "gthread", "granian"), default="granian",
                        help="our WSGI server: granian (the Dockerfile's) or gunicorn sync or gthread workers")
    parser.add_argument("--workers", type=int, default=1, help="our worker processes on the server core (default 1)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker for gthread/granian (default 4)")
    parser.add_argument("--python", help="the interpreter our server runs on, in a virtualenv of its own made under "
                                         ".venv-bench/ (default: this one); e.g. /usr/bin/python3.11, built with "
                                         "PGO and LTO like the Docker image's (bench/interpreter.py)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="gunicorn without --access-logfile - (the app logs every request itself)")
    parser.add_argument("--no-node", dest="node", action="store_false", help="only our IdP")
    parser.add_argument("--no-agreements", dest="agreements", action="store_false",
                        help="skip bench/agreements.py in the PostgreSQL variant")
    parser.add_argument("--no-argon2", dest="argon2", action="store_false", help="skip the argon2id parameter table")
    parser.add_argument("--profile", default="", help="comma-separated scenarios to profile (ours, py-spy) after the rounds")
    parser.add_argument("--profile-seconds", type=float, default=10)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench_perf")
    parser.add_argument("--agreements-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench_perf_agreements")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="also write every round's numbers here")
    args = parser.parse_args(argv)

    if args.smoke:
        args.db = args.db or "sqlite"
        args.node, args.agreements, args.argon2 = False, False, False
        args.rounds = args.rounds or 1
        args.duration = args.duration or 1
        args.warmup = args.warmup if args.warmup is not None else 0
        args.flow_warmup = args.flow_warmup if args.flow_warmup is not None else 0.2
        args.connections = min(args.connections, 4)
    args.db = args.db or "both"
    args.rounds = args.rounds or 3
    args.duration = args.duration or 10
    args.warmup = 2 if args.warmup is None else args.warmup
    args.flow_warmup = 1 if args.flow_warmup is None else args.flow_warmup
    args.profile = [p for p in args.profile.split(",") if p]
    scenarios = [BY_NAME[name] for name in args.scenarios.split(",") if name]
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        if not args.smoke:
            raise SystemExit("needs two cores and taskset: the server and the load generator each get one")
        args.server_core = args.client_core = None
    pinning = Pinning(args.server_core, args.client_core)
    args.server_bin = interpreter.server_bin(args.python, ROOT)
    args.server_python = interpreter.describe(str(args.server_bin / "python"))
    if args.node:
        ensure_node_modules()
    load_ = Load(args, pinning)

    started = time.time()
    print(f"bench/run.py: {args.rounds} round(s) x {args.duration:g} s per scenario; servers pinned to core "
          f"{args.server_core}, load generator to core {args.client_core}; load average {load()}", flush=True)
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    records = []
    for name in (["sqlite", "pg"] if args.db == "both" else [args.db]):
        records.append(run_variant(Variant(name, args), args, pinning, load_, scenarios))
    argon2 = argon2_table(pinning, 2.0, str(args.server_bin / "python")) if args.argon2 else None
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines, ok = report(records, args, scenarios, argon2)
    print("\n" + "\n".join([f"uptime before: {uptime_before}", f"uptime after:  {uptime_after}",
                             f"wall time: {time.time() - started:.0f} s", *lines]))
    if args.json:
        args.json.write_text(json.dumps([{**r, "results": {s: {k: [vars(x) for x in v] for k, v in by.items()}
                                                           for s, by in r["results"].items()}} for r in records],
                                        indent=1, default=str))
    if not ok:
        print("\nFAIL: errors above (or a scenario without a single success)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
