"""Helpers for the fault tests: servers of our own on spare loopback ports, and a person over HTTP.

Nothing here touches the shared services on 5432/6379: each fault test that
stops a dependency starts its own instance (``RedisServer``, ``PostgresCluster``)
and stops it at the end.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from bench.scaleout.launch import free_port
from tests.helpers.oidc import RP, pkce_pair

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
OFFLINE = "openid profile email offline_access"
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_BIN_CANDIDATES = [Path(f"/usr/lib/postgresql/{v}/bin") for v in ("17", "16", "15", "14", "13")]


def unavailable(reason: str):
    """Skip on a laptop; in CI (CI=true) a missing prerequisite fails the test instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: fault tests must run, not skip)")
    pytest.skip(reason)


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Remove a test's keys from a shared Redis (only ever a prefix this test made up)."""
    if not url or not prefix:
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    except redis.RedisError:
        pass  # a stopped server has nothing left to clean
    finally:
        client.close()


# -- servers of our own ------------------------------------------------------------

class LiveServer:
    """A WSGI app served by werkzeug's threaded server on a free 127.0.0.1 port."""

    def __init__(self):
        self.server = make_server("127.0.0.1", 0, None, threaded=True)
        self.port = self.server.server_port
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread: threading.Thread | None = None

    def start(self, app) -> LiveServer:
        self.server.app = app
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


class RedisServer:
    """``redis-server`` on a spare port, no persistence unless asked for on shutdown."""

    def __init__(self, port: int | None = None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            unavailable("redis-server is not installed")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="idp-fault-redis-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--dbfilename", "dump.rdb", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def shutdown(self, save: bool) -> None:
        """Stop the server: ``save`` writes dump.rdb first (a Redis with persistence being
        restarted); otherwise SIGKILL (a crash: everything in it is lost)."""
        if self.process is None or self.process.poll() is not None:
            return
        if save:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "save"], capture_output=True, timeout=10,
                           check=False)
        else:
            self.process.kill()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if not save:
            (self.dir / "dump.rdb").unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.shutdown(save=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bin() -> Path | None:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


class PostgresCluster:
    """A throw-away PostgreSQL cluster (initdb) in a temp dir on a spare port.

    PostgreSQL refuses to run as root, so as root the server runs as the
    ``postgres`` OS user through ``runuser``; its directory is chowned to it.
    """

    def __init__(self):
        self.bin = postgres_bin()
        if self.bin is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="idp-fault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("running as root without runuser: cannot start PostgreSQL as another user")
            import pwd

            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no `postgres` OS user to run PostgreSQL as")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}\n{result.stderr}\n{self.log_tail()}")
        return result

    def init(self) -> PostgresCluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C.UTF-8")
        return self

    def start(self) -> PostgresCluster:
        # Unix socket in our own directory; TCP on loopback only; fsync off (throw-away).
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off " \
                  f"-c full_page_writes=off -c max_connections=60"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "30", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):  # best effort; the directory goes anyway
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# -- a person and an RP over real HTTP ---------------------------------------------

def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    assert match, f"page has no CSRF token: {html[:300]}"
    return match.group(1)


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class HttpRP:
    client_id: str
    client_secret: str | None
    redirect_uri: str

    def basic(self) -> tuple[str, str]:
        return self.client_id, self.client_secret

    def token(self, base: str, code: str, verifier: str, timeout: float = 30) -> requests.Response:
        return requests.post(base + "/token", auth=self.basic(), timeout=timeout, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
            "code_verifier": verifier})

    def refresh(self, base: str, refresh_token: str, timeout: float = 30) -> requests.Response:
        return requests.post(base + "/token", auth=self.basic(), timeout=timeout,
                             data={"grant_type": "refresh_token", "refresh_token": refresh_token})

    def introspect(self, base: str, token: str) -> requests.Response:
        return requests.post(base + "/introspect", auth=self.basic(), data={"token": token}, timeout=30)


@dataclass
class Step:
    base: str
    method: str
    path: str
    status: int
    upstream: str | None = None  # nginx's X-Upstream: the backend that answered


@dataclass
class HttpBrowser:
    """One browser: a cookie jar, and the IdP bases it sends each request to, in turn.

    With several bases every request of a login goes to the next IdP process, so a
    login started on one process has to be continued by the other.
    """

    bases: list[str]
    http: requests.Session = field(default_factory=requests.Session)
    trace: list[Step] = field(default_factory=list)
    _turn: int = 0

    def _next_base(self) -> str:
        base = self.bases[self._turn % len(self.bases)]
        self._turn += 1
        return base

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        base = self._next_base()
        response = self.http.request(method, base + path, allow_redirects=False, timeout=30, **kwargs)
        self.trace.append(Step(base, method, path.split("?")[0], response.status_code,
                               response.headers.get("X-Upstream")))
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict, **kwargs) -> requests.Response:
        return self.request("POST", path, data=data, **kwargs)

    def authorize(self, rp: HttpRP, scope: str = "openid profile email offline_access", **extra):
        verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
                  "scope": scope, "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
                  "code_challenge": challenge, "code_challenge_method": "S256", **extra}
        return self.get("/authorize", params=params), verifier

    def sign_in(self, rp: HttpRP, email: str, password: str, *, totp=None, scope="openid profile email offline_access",
                **extra) -> tuple[str, str]:
        """Authorize → login → (second step) → (consent) → the RP's callback: returns (code, verifier).

        ``totp``: a callable giving a fresh TOTP code when the second step asks for one.
        """
        response, verifier = self.authorize(rp, scope, **extra)
        for _ in range(12):
            assert response.status_code in (302, 303), (response.status_code, response.text[:500])
            location = response.headers["Location"]
            if location.startswith(rp.redirect_uri):
                params = query_of(location)
                assert "code" in params, params
                return params["code"], verifier
            path = path_of(location)
            if "/interaction/" not in path and not path.startswith("/login/second-step"):
                response = self.get(path)  # e.g. /authorize/resume/<id>
                continue
            page = self.get(path)
            assert page.status_code == 200, (path, page.status_code, page.text[:500])
            token = csrf_token(page.text)
            if path.split("?")[0].endswith("/login"):
                form = {"email": email, "password": password, "action": "login"}
            elif path.startswith("/login/second-step"):
                assert totp is not None, "a second step was asked for, but no authenticator given"
                form = {"code": totp()}
            elif path.split("?")[0].endswith("/consent"):
                form = {"action": "allow"}
            else:
                raise AssertionError(f"unexpected page {path}")
            response = self.post(path, {"csrf_token": token, **form})
        raise AssertionError("sign-in did not reach the RP")


def jwt_header(token: str) -> dict:
    import json

    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def jwt_claims(token: str) -> dict:
    import json

    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def wait_for(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout}s (last: {last!r})")


def simultaneously(calls: list) -> list:
    """Run each callable in its own thread, released together by a barrier; results in order.

    An exception in a call is returned in its place, so a crash is an answer the test sees.
    """
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:  # noqa: BLE001 - reported to the test
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# -- scenario helpers for Flask test clients (outage tests) ------------------------------

class Findings(list):
    """Every deviation of a scenario, reported together at the end."""

    def expect(self, condition: bool, message: str) -> bool:
        if not condition:
            self.append(message)
        return condition

    def unavailable(self, response, what: str, json_body: bool = False) -> None:
        body = response.get_data(as_text=True)
        if not self.expect(response.status_code == 503, f"{what}: {response.status_code} instead of 503 "
                                                          f"({body[:200]!r})"):
            return
        self.expect(response.headers.get("Retry-After", "").isdigit(), f"{what}: 503 without Retry-After")
        self.expect("Traceback" not in body, f"{what}: a stack trace in the response")
        if json_body:
            payload = response.get_json(silent=True) or {}
            self.expect(payload.get("error") == "temporarily_unavailable", f"{what}: body {payload}")

    def not_500(self, response, what: str, allowed=(200, 503)) -> None:
        self.expect(response.status_code in allowed,
                    f"{what}: {response.status_code} (allowed {allowed}) {response.get_data(as_text=True)[:200]!r}")


def authorize_path(rp: RP, verifier_holder: dict) -> str:
    """An /authorize URL for ``rp`` (PKCE S256); the verifier goes into ``verifier_holder``."""
    verifier, challenge = pkce_pair()
    verifier_holder["verifier"] = verifier
    return "/authorize?" + urlencode({"response_type": "code", "client_id": rp.client_id,
                                      "redirect_uri": rp.redirect_uri, "scope": OFFLINE, "state": "s",
                                      "nonce": uuid.uuid4().hex, "code_challenge": challenge,
                                      "code_challenge_method": "S256"})


def token(machine, rp: RP, code: str, verifier: str):
    """A token request from the RP's back end: no browser cookies."""
    return RP(machine, rp.client_id, rp.client_secret, rp.redirect_uri).token(code, verifier=verifier)


def introspect_active(machine, rp: RP, access_token: str) -> bool:
    basic = base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
    response = machine.post("/introspect", data={"token": access_token}, headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["active"]
