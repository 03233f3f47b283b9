#!/usr/bin/env python3
"""Soak: a bounded mixed load against a live IdP on PostgreSQL + Redis; errors must be 0,
memory must stay flat.

    python bench/soak.py                                  # 5 minutes, 50 concurrent flows
    python bench/soak.py --duration 20 --concurrency 10   # a short smoke run
    python bench/soak.py --scaleout                       # two IdP processes behind nginx
    python bench/soak.py --duration 180 --write-readme    # and record the result in bench/README.md

Each flow is a fresh browser plus its RP, in a loop until the time is up:
``/authorize`` (PKCE S256, ``prompt=consent``) → login form (CSRF, password) → consent →
the RP's callback with a code → ``/token`` (code) → ``/token`` (refresh, rotation) →
``/userinfo`` → ``/introspect``. Every answer is checked (status and content); anything
unexpected is an error and the run fails. Each flow has its own person and its own
confidential client, so per-client rate limits and remembered consent never couple flows.

The server is the production entry point: ``gunicorn idp.wsgi:app`` (sync workers) with
``IDP_ENV=production`` and the default argon2 parameters, on a throw-away database
(``idp_soak_<pid>`` on the server of ``--database-url``, dropped afterwards unless
``--keep``) and a Redis key prefix of its own (deleted afterwards). Its resident memory
(master + workers, from /proc) is sampled every ``--sample`` seconds. Memory is "flat"
when, after the first quarter of the run (warm-up), the total RSS grows by less than
``--max-growth`` percent (default 5) from the first post-warm-up sample average to the last.

Exit status 0 only with 0 errors and flat memory.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scaleout.launch import (
    Backend,
    ScaleOut,
    free_port,
    generate_keys,
    idp_environment,
)

README = ROOT / "bench" / "README.md"
MARK_START = "<!-- soak-results:start -->"
MARK_END = "<!-- soak-results:end -->"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "Soak-Harbour-Lantern-2026"
SCOPE = "openid profile email offline_access"
REDIRECT_URI = "https://soak-rp.example/cb"


# -- setup ---------------------------------------------------------------------------

def create_database(base_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    name = f"idp_soak_{os.getpid()}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


def delete_prefix(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    for batch in _chunks(client.scan_iter(match=prefix + "*", count=1000), 500):
        deleted += client.delete(*batch)
    client.close()
    return deleted


def _chunks(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Flow:
    email: str
    client_id: str
    client_secret: str


def seed(database_url: str, secret_key: str, flows: int) -> list[Flow]:
    """One person and one third-party confidential client per flow."""
    from idp import security
    from idp.clients import service as clients
    from idp.identities import service as identities
    from idp.identities.passwords import PasswordHasher
    from idp.settings import Settings
    from idp.storage import migrations
    from idp.storage.db import Database

    migrations.upgrade(database_url)
    security.configure(secret_key)  # client secrets are stored as HMACs under the server's key
    defaults = Settings()
    hasher = PasswordHasher(defaults.argon2_memory_kib, defaults.argon2_time_cost, defaults.argon2_parallelism)
    database = Database(database_url)
    session = database.session_factory()
    made = []
    try:
        for i in range(flows):
            email = f"soak-{i:03d}-{uuid.uuid4().hex[:6]}@soak.example"
            identities.create_identity(session, hasher, email=email, password=PASSWORD, given_name="Soak",
                                       family_name=f"Person {i}", email_verified=True)
            client, client_secret = clients.create_client(session, client_name=f"Soak RP {i}",
                                                          redirect_uris=[REDIRECT_URI], scope=SCOPE,
                                                          client_id=f"soak-{i:03d}-{uuid.uuid4().hex[:6]}")
            made.append(Flow(email, client.client_id, client_secret))
    finally:
        session.close()
        database.dispose()
    return made


# -- one flow --------------------------------------------------------------------------

class FlowError(Exception):
    def __init__(self, step: str, detail: str):
        super().__init__(f"{step}: {detail}")
        self.step = step


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    flows: int = 0
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def timed(self, step: str, seconds: float) -> None:
        with self.lock:
            self.requests += 1
            self.latency[step].append(seconds)

    def error(self, error: FlowError) -> None:
        with self.lock:
            self.errors[error.step] += 1
            if len(self.examples) < 10:
                self.examples.append(str(error)[:300])


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Runner:
    def __init__(self, base: str, flow: Flow, stats: Stats, timeout: float):
        self.base = base
        self.flow = flow
        self.stats = stats
        self.timeout = timeout
        self.auth = (flow.client_id, flow.client_secret)

    def _call(self, step: str, http: requests.Session, method: str, url: str, expect: int, **kwargs):
        started = time.perf_counter()
        try:
            response = http.request(method, urljoin(self.base, url), allow_redirects=False, timeout=self.timeout,
                                    **kwargs)
        except requests.RequestException as error:
            raise FlowError(step, f"{type(error).__name__}: {error}") from error
        self.stats.timed(step, time.perf_counter() - started)
        if response.status_code != expect:
            raise FlowError(step, f"{response.status_code} (expected {expect}) {response.text[:200]!r}")
        return response

    def once(self) -> None:
        http = requests.Session()  # a fresh browser
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
        params = {"response_type": "code", "client_id": self.flow.client_id, "redirect_uri": REDIRECT_URI,
                  "scope": SCOPE, "state": state, "nonce": nonce, "prompt": "consent",
                  "code_challenge": challenge, "code_challenge_method": "S256"}
        response = self._call("authorize", http, "GET", "/authorize", 302, params=params)
        login = response.headers["Location"]
        if "/login" not in login:
            raise FlowError("authorize", f"not sent to the login page: {login}")
        page = self._call("login page", http, "GET", login, 200)
        form = {"csrf_token": _csrf("login page", page.text), "email": self.flow.email, "password": PASSWORD,
                "action": "login"}
        response = self._call("login", http, "POST", login, 302, data=form)
        location = response.headers["Location"]
        for _ in range(3):  # resume → consent
            if "/consent" in location:
                break
            response = self._call("resume", http, "GET", location, 302)
            location = response.headers["Location"]
        if "/consent" not in location:
            raise FlowError("resume", f"no consent page: {location}")
        page = self._call("consent page", http, "GET", location, 200)
        response = self._call("consent", http, "POST", location, 302,
                              data={"csrf_token": _csrf("consent page", page.text), "action": "allow"})
        location = response.headers["Location"]
        for _ in range(3):  # resume → the RP
            if location.startswith(REDIRECT_URI):
                break
            response = self._call("resume", http, "GET", location, 302)
            location = response.headers["Location"]
        callback = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        if callback.get("state") != state or "code" not in callback:
            raise FlowError("callback", f"bad callback {location[:200]}")

        backend = requests.Session()  # the RP's back end
        tokens = self._call("token (code)", backend, "POST", "/token", 200, auth=self.auth, data={
            "grant_type": "authorization_code", "code": callback["code"], "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier}).json()
        if not all(tokens.get(k) for k in ("access_token", "refresh_token", "id_token")):
            raise FlowError("token (code)", f"incomplete token response {sorted(tokens)}")
        refreshed = self._call("token (refresh)", backend, "POST", "/token", 200, auth=self.auth, data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}).json()
        if refreshed.get("refresh_token") in (None, tokens["refresh_token"]):
            raise FlowError("token (refresh)", "refresh token not rotated")
        info = self._call("userinfo", backend, "GET", "/userinfo", 200,
                          headers={"Authorization": f"Bearer {refreshed['access_token']}"}).json()
        if info.get("email", "").lower() != self.flow.email.lower():
            raise FlowError("userinfo", f"wrong person {info.get('email')}")
        introspection = self._call("introspect", backend, "POST", "/introspect", 200, auth=self.auth,
                                   data={"token": refreshed["access_token"]}).json()
        if introspection.get("active") is not True:
            raise FlowError("introspect", f"refreshed access token inactive: {introspection}")
        http.close()
        backend.close()

    def loop(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                self.once()
            except FlowError as error:
                self.stats.error(error)
                time.sleep(0.5)
                continue
            with self.stats.lock:
                self.stats.flows += 1


def _csrf(step: str, html: str) -> str:
    match = CSRF.search(html)
    if not match:
        raise FlowError(step, "no CSRF token on the page")
    return match.group(1)


# -- memory --------------------------------------------------------------------------

class Sampler(threading.Thread):
    def __init__(self, backends: list[Backend], every: float, stats: Stats):
        super().__init__(daemon=True)
        self.backends = backends
        self.every = every
        self.stats = stats
        self.samples: list[dict] = []
        self.started = time.monotonic()
        self._halt = threading.Event()

    def sample(self) -> None:
        total, workers = 0, 0
        for backend in self.backends:
            total += backend.rss_kib()
            workers += len(backend.worker_pids())
        with self.stats.lock:
            flows, requests_ = self.stats.flows, self.stats.requests
        self.samples.append({"t": round(time.monotonic() - self.started, 1), "rss_kib": total, "workers": workers,
                             "flows": flows, "requests": requests_})

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()


def memory_verdict(samples: list[dict], duration: float, max_growth: float) -> dict:
    after_warmup = [s for s in samples if s["t"] >= duration / 4]
    if len(after_warmup) < 4:
        return {"flat": False, "reason": "too few samples after warm-up"}
    quarter = max(1, len(after_warmup) // 4)
    early = statistics.mean(s["rss_kib"] for s in after_warmup[:quarter])
    late = statistics.mean(s["rss_kib"] for s in after_warmup[-quarter:])
    growth = (late - early) / early * 100
    # Least-squares slope over the post-warm-up samples, in MiB per minute.
    ts = [s["t"] for s in after_warmup]
    rs = [s["rss_kib"] / 1024 for s in after_warmup]
    mean_t, mean_r = statistics.mean(ts), statistics.mean(rs)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (r - mean_r) for t, r in zip(ts, rs)) / var * 60 if var else 0.0
    return {"flat": growth < max_growth, "early_mib": early / 1024, "late_mib": late / 1024, "growth_pct": growth,
            "slope_mib_per_min": slope, "max_growth_pct": max_growth}


# -- report --------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(args, stats: Stats, samples: list[dict], verdict: dict, elapsed: float, shape: str) -> str:
    lines = []
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    lines.append(f"Run {now}: {shape}; duration {args.duration:.0f} s, {args.concurrency} concurrent flows; "
                 f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
                 f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.")
    lines.append("")
    lines.append("```")
    errors = sum(stats.errors.values())
    lines.append(f"flows completed   {stats.flows}  ({stats.flows / elapsed:.1f}/s)")
    lines.append(f"requests          {stats.requests}  ({stats.requests / elapsed:.1f}/s)")
    lines.append(f"errors            {errors}" + (f"  {dict(stats.errors)}" if errors else ""))
    for example in stats.examples[:5]:
        lines.append(f"  e.g. {example}")
    lines.append("")
    lines.append(f"{'step':<18}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for step, values in stats.latency.items():
        ms = [v * 1000 for v in values]
        lines.append(f"{step:<18}{len(ms):>7}{percentile(ms, 50):>9.0f}{percentile(ms, 95):>9.0f}"
                     f"{percentile(ms, 99):>9.0f}{max(ms):>9.0f}")
    lines.append("")
    lines.append(f"{'t s':>6}{'RSS MiB':>9}{'workers':>9}{'flows':>8}")
    step = max(1, len(samples) // 12)
    shown = samples[::step]
    if samples and shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    for sample in shown:
        lines.append(f"{sample['t']:>6.0f}{sample['rss_kib'] / 1024:>9.1f}{sample['workers']:>9}{sample['flows']:>8}")
    lines.append("")
    if "growth_pct" in verdict:
        lines.append(f"memory after warm-up: {verdict['early_mib']:.1f} MiB -> {verdict['late_mib']:.1f} MiB "
                     f"({verdict['growth_pct']:+.1f} %, slope {verdict['slope_mib_per_min']:+.2f} MiB/min); "
                     f"flat = growth < {verdict['max_growth_pct']:.0f} %: {'yes' if verdict['flat'] else 'NO'}")
    else:
        lines.append(f"memory: {verdict.get('reason')}")
    passed = errors == 0 and verdict.get("flat")
    lines.append(f"RESULT: {'PASS' if passed else 'FAIL'} (errors must be 0, memory flat)")
    lines.append("```")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    content = README.read_text()
    if MARK_START not in content or MARK_END not in content:
        raise SystemExit(f"{README} has no soak results markers ({MARK_START} ... {MARK_END})")
    before, rest = content.split(MARK_START, 1)
    _, after = rest.split(MARK_END, 1)
    README.write_text(f"{before}{MARK_START}\n{text}\n{MARK_END}{after}")


# -- main ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent flows (default 50)")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server to create the throw-away database on")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers per IdP process (default 4)")
    parser.add_argument("--scaleout", action="store_true", help="two IdP processes behind nginx instead of one")
    parser.add_argument("--sample", type=float, default=5, help="seconds between memory samples")
    parser.add_argument("--max-growth", type=float, default=5.0, help="allowed RSS growth after warm-up, percent")
    parser.add_argument("--timeout", type=float, default=60, help="per-request timeout, seconds")
    parser.add_argument("--write-readme", action="store_true", help="record the result in bench/README.md")
    parser.add_argument("--json", help="also write samples and numbers to this file")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis keys afterwards")
    args = parser.parse_args(argv)

    secret_key = secrets.token_urlsafe(48)
    prefix = f"soak-{uuid.uuid4().hex[:8]}:"
    keys_dir = Path(tempfile.mkdtemp(prefix="idp-soak-keys-"))
    log_dir = Path(tempfile.mkdtemp(prefix="idp-soak-logs-"))
    print(f"database: creating a throw-away database on {args.database_url.rsplit('/', 1)[0]}")
    database_url = create_database(args.database_url)
    deployment = server = None
    outcome = 1
    try:
        started = time.monotonic()
        flows = seed(database_url, secret_key, args.concurrency)
        print(f"seeded {len(flows)} people and clients in {time.monotonic() - started:.1f}s ({database_url})")
        extra = {"IDP_LOG_JSON": "false"}
        if args.scaleout:
            deployment = ScaleOut(database_url=database_url, redis_url=args.redis_url, redis_prefix=prefix,
                                  keys_dir=keys_dir, secret_key=secret_key, backends=2, workers=args.workers,
                                  extra_env=extra, log_dir=log_dir).start()
            base, backends = deployment.base, deployment.backends
            shape = (f"2 IdP processes x {args.workers} gunicorn sync workers behind nginx "
                     f"(bench/scaleout), PostgreSQL + Redis")
        else:
            port = free_port()
            environment = idp_environment(issuer=f"http://127.0.0.1:{port}", database_url=database_url,
                                          redis_url=args.redis_url, redis_prefix=prefix, keys_dir=keys_dir,
                                          secret_key=secret_key, extra=extra)
            generate_keys(keys_dir)
            server = Backend(environment, port=port, workers=args.workers, name="idp-soak", log_dir=log_dir).start()
            server.wait_ready()
            base, backends = server.base, [server]
            shape = f"1 IdP process x {args.workers} gunicorn sync workers, PostgreSQL + Redis"
        for backend in backends:
            backend.wait_workers()
        print(f"server: {shape} at {base}; logs in {log_dir}")

        stats = Stats()
        sampler = Sampler(backends, args.sample, stats)
        sampler.sample()
        sampler.start()
        deadline = time.monotonic() + args.duration
        threads = [threading.Thread(target=Runner(base, flow, stats, args.timeout).loop, args=(deadline,),
                                    daemon=True) for flow in flows]
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            # Every 10 s; after the deadline, every 5 s while the last flows finish.
            time.sleep(min(10, max(5.0, deadline - time.monotonic())) if time.monotonic() < deadline else 5)
            last = sampler.samples[-1] if sampler.samples else {}
            print(f"  {time.monotonic() - t0:6.0f}s  flows {stats.flows:6d}  errors {sum(stats.errors.values()):3d}"
                  f"  RSS {last.get('rss_kib', 0) / 1024:7.1f} MiB", flush=True)
            if time.monotonic() > deadline + args.timeout + 30:
                break
        elapsed = time.monotonic() - t0
        sampler.stop()
        verdict = memory_verdict(sampler.samples, args.duration, args.max_growth)
        text = report(args, stats, sampler.samples, verdict, elapsed, shape)
        print(text)
        for backend in backends:
            log = backend.log_tail(200_000)
            if "Traceback" in log:
                print(f"\n{backend.name} logged a traceback:\n{log[-3000:]}")
        if args.json:
            Path(args.json).write_text(json.dumps({"samples": sampler.samples, "verdict": verdict,
                                                   "errors": dict(stats.errors), "flows": stats.flows}, indent=1))
        if args.write_readme:
            write_readme(text)
            print(f"recorded in {README}")
        outcome = 0 if not stats.errors and verdict.get("flat") else 1
        return outcome
    finally:
        if deployment is not None:
            deployment.stop()
        if server is not None:
            server.stop()
        if not args.keep:
            drop_database(database_url)
            delete_prefix(args.redis_url, prefix)
            shutil.rmtree(keys_dir, ignore_errors=True)
            if outcome == 0:
                shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
