#!/usr/bin/env python3
"""Two (or more) Connect IdP processes behind nginx on loopback, sharing PostgreSQL, Redis and keys.

    python bench/scaleout/launch.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/idp_scaleout \\
        --redis-url redis://127.0.0.1:6379/0 --redis-prefix scaleout: --keys-dir /tmp/idp-scaleout-keys \\
        --port 8080 [--backends 2] [--workers 2] [--keys-reload-interval 10] [--upgrade] [--demo]

Each backend is ``gunicorn idp.wsgi:app`` (a production entry point) on its own free
127.0.0.1 port with the same IDP_* environment; nginx (the Debian package,
``apt-get install -y nginx``) listens on 127.0.0.1:<port> and round-robins over them.
The issuer is the nginx address, so every backend issues the same ``iss``. Other IDP_*
variables in the caller's environment reach every backend unchanged.
Runs until Ctrl-C, then stops everything it started.

The classes are importable (tests/faults/test_worker_kill.py, test_scaleout.py, bench/soak.py):
``Backend`` is one server process (gunicorn, or with ``server="granian"`` the Dockerfile's granian command),
``Nginx`` the proxy, ``ScaleOut`` both together.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TEMPLATE = HERE / "nginx.conf.template"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


def idp_environment(*, issuer: str, database_url: str, redis_url: str, redis_prefix: str, keys_dir: str | Path,
                    secret_key: str, env: str = "production", extra: dict | None = None) -> dict:
    """The IDP_* variables every backend of one deployment shares."""
    environment = dict(os.environ)  # other IDP_* settings of the caller apply to every backend too
    environment.update({
        "IDP_ENV": env, "IDP_ISSUER": issuer, "IDP_DATABASE_URL": database_url, "IDP_REDIS_URL": redis_url,
        "IDP_REDIS_PREFIX": redis_prefix, "IDP_KEYS_DIR": str(keys_dir), "IDP_SECRET_KEY": secret_key,
        # nginx sets X-Forwarded-For/-Proto: the client's address, not nginx's, is what limits count.
        "IDP_TRUSTED_PROXIES": "1",
        # The repository must be importable even when the package is not installed.
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    })
    environment.update({k: str(v) for k, v in (extra or {}).items()})
    return environment


def generate_keys(keys_dir: str | Path) -> None:
    """Create the signing keys once, before any backend starts (the deploy step
    ``idp keys generate``). Backends starting together on an empty keys directory would
    each generate their own "active" keys at the same moment."""
    from idp.oidc import keys

    directory = Path(keys_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys.generate(directory)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the server's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Backend:
    """One IdP process on 127.0.0.1:<port>: ``gunicorn idp.wsgi:app`` with sync workers, or (``server="granian"``)
    granian as the Dockerfile runs it. Either way the workers are the master's child processes, and a worker
    that dies is replaced (gunicorn's arbiter; granian's ``--respawn-failed-workers``)."""

    SERVERS = ("gunicorn", "granian")
    #: Seconds between two kills of a worker. granian's master gives up ("Worker crash loop detected, exiting")
    #: when a worker it respawned less than 5.5 s ago dies again, and it respawns after --respawn-interval (1 s);
    #: gunicorn's arbiter replaces workers however often they die.
    KILL_SPACING = {"gunicorn": 0.0, "granian": 7.0}

    def __init__(self, environment: dict, *, port: int | None = None, workers: int = 2, name: str = "idp",
                 log_dir: str | Path | None = None, timeout: int = 30, python: str = sys.executable,
                 server: str = "gunicorn", threads: int = 4):
        if server not in self.SERVERS:
            raise ValueError(f"server must be one of {self.SERVERS}")
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.environment = environment
        self.workers = workers
        self.name = name
        self.timeout = timeout
        self.python = python
        self.server = server
        self.threads = threads
        log_dir = Path(log_dir or tempfile.gettempdir())
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self._last_kill = -float("inf")

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready_to_kill(self) -> None:
        """Wait until killing a worker again is a worker dying, not a crash loop the master gives up on."""
        wait = self._last_kill + self.KILL_SPACING[self.server] - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def kill_workers(self, pids: list[int]) -> None:
        """SIGKILL these workers (after ``ready_to_kill``)."""
        self.ready_to_kill()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self._last_kill = time.monotonic()

    def command(self) -> list[str]:
        if self.server == "granian":
            # The Dockerfile's command, on loopback and with a one-second respawn (its default is 3.5 s).
            return [self.python, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port",
                    str(self.port), "--workers", str(self.workers), "--blocking-threads", str(self.threads),
                    "--respawn-failed-workers", "--respawn-interval", "1", "--no-access-log", "--log-level",
                    "warning", "idp.wsgi:app"]
        return [self.python, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--timeout", str(self.timeout), "--graceful-timeout", "5", "--log-level", "warning",
                "--name", self.name, "idp.wsgi:app"]

    def start(self) -> Self:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the process's lifetime
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.environment, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 90) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.base + "/readyz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        return _children(self.pid) if self.process and self.process.poll() is None else []

    def wait_workers(self, count: int | None = None, timeout: float = 30) -> list[int]:
        """Wait until the master has ``count`` (default: all) live workers."""
        count = count or self.workers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) >= count:
                return pids
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: {len(self.worker_pids())} of {count} workers after {timeout}s")

    def rss_kib(self) -> int:
        """Master plus workers."""
        return rss_kib(self.pid) + sum(rss_kib(p) for p in self.worker_pids())

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # Never leave a worker behind: a granian master that gave up on a crash loop exits without stopping the
        # workers it has, which go on listening. They are in the session start() opened.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


class Nginx:
    """nginx in the foreground with a prefix directory of its own."""

    def __init__(self, upstreams: list[int], *, port: int | None = None, prefix: str | Path | None = None,
                 binary: str | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.upstreams = upstreams
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
        self._own_prefix = prefix is None
        self.prefix = Path(prefix or tempfile.mkdtemp(prefix="idp-nginx-"))
        self.process: subprocess.Popen | None = None

    def render(self) -> Path:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        # nginx's workers drop root privileges: they must reach the temp paths.
        for path in (self.prefix, self.prefix / "tmp"):
            path.chmod(0o755)
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=3 fail_timeout=5s;" for port in self.upstreams)
        text = (TEMPLATE.read_text().replace("{{prefix}}", str(self.prefix))
                .replace("{{listen}}", f"127.0.0.1:{self.port}").replace("{{servers}}", servers))
        config = self.prefix / "nginx.conf"
        config.write_text(text)
        return config

    def start(self) -> Self:
        config = self.render()
        check = subprocess.run([self.binary, "-t", "-q", "-p", str(self.prefix), "-c", str(config)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self._log = open(self.prefix / "stderr.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([self.binary, "-p", str(self.prefix), "-c", str(config),
                                         "-g", "daemon off;"], stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.prefix / 'error.log').read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGQUIT)  # graceful shutdown
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            self._log.close()
        if self._own_prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)


class ScaleOut:
    """``backends`` IdP processes and nginx in front; the issuer is the nginx address."""

    def __init__(self, *, database_url: str, redis_url: str, redis_prefix: str, keys_dir: str | Path,
                 secret_key: str, backends: int = 2, workers: int = 2, port: int | None = None,
                 env: str = "production", extra_env: dict | None = None, log_dir: str | Path | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.environment = idp_environment(issuer=self.base, database_url=database_url, redis_url=redis_url,
                                           redis_prefix=redis_prefix, keys_dir=keys_dir, secret_key=secret_key,
                                           env=env, extra=extra_env)
        self.backends = [Backend(self.environment, workers=workers, name=f"idp-{i + 1}", log_dir=log_dir)
                         for i in range(backends)]
        self.nginx: Nginx | None = None

    def start(self) -> Self:
        generate_keys(self.environment["IDP_KEYS_DIR"])
        try:
            for backend in self.backends:
                backend.start()
            for backend in self.backends:
                backend.wait_ready()
            self.nginx = Nginx([b.port for b in self.backends], port=self.port)
            self.nginx.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for backend in self.backends:
            backend.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def idp_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``idp <args>`` with this deployment's environment (e.g. ``keys rotate``)."""
        return subprocess.run([sys.executable, "-c", "from idp.cli import main; main()", *args], cwd=ROOT,
                              env=self.environment, capture_output=True, text=True, check=check, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("IDP_DATABASE_URL"), required=False)
    parser.add_argument("--redis-url", default=os.environ.get("IDP_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--redis-prefix", default=os.environ.get("IDP_REDIS_PREFIX", "scaleout:"))
    parser.add_argument("--keys-dir", default=os.environ.get("IDP_KEYS_DIR",
                                                             os.path.join(tempfile.gettempdir(), "idp-scaleout-keys")))
    parser.add_argument("--secret-key", default=os.environ.get("IDP_SECRET_KEY"),
                        help="shared by all backends (default: IDP_SECRET_KEY, else a random one for this run)")
    parser.add_argument("--port", type=int, default=8080, help="nginx port on 127.0.0.1 (default 8080)")
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per backend")
    parser.add_argument("--env", default="production", choices=("production", "development", "test"))
    parser.add_argument("--keys-reload-interval", type=int, default=None,
                        help="seconds between checks of the keys directory (IDP_KEYS_RELOAD_INTERVAL)")
    parser.add_argument("--upgrade", action="store_true", help="run `idp db upgrade` first")
    parser.add_argument("--demo", action="store_true", help="seed the demo data (`idp demo`) first")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or IDP_DATABASE_URL) is required: all backends share one database")
    if not args.redis_url:
        parser.error("--redis-url is required: all backends share one Redis")
    Path(args.keys_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = args.secret_key or secrets.token_urlsafe(48)
    deployment = ScaleOut(database_url=args.database_url, redis_url=args.redis_url, redis_prefix=args.redis_prefix,
                          keys_dir=args.keys_dir, secret_key=secret, backends=args.backends, workers=args.workers,
                          port=args.port, env=args.env,
                          extra_env={"IDP_KEYS_RELOAD_INTERVAL": args.keys_reload_interval}
                          if args.keys_reload_interval else None)
    if args.upgrade:
        print(deployment.idp_cli("db", "upgrade").stdout.strip())
    if args.demo:
        print(deployment.idp_cli("demo").stdout.strip())
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    with deployment:
        print(f"nginx        {deployment.base}   (issuer; config {deployment.nginx.prefix / 'nginx.conf'})")
        for backend in deployment.backends:
            print(f"{backend.name:<12} {backend.base}   pid {backend.pid}, log {backend.log_path}")
        print(f"keys         {args.keys_dir}   (rotate: IDP_KEYS_DIR={args.keys_dir} idp keys rotate)")
        print("Ctrl-C stops all of it.")
        try:
            while not stop:
                for backend in deployment.backends:
                    if backend.process.poll() is not None:
                        print(f"{backend.name} exited ({backend.process.returncode})", file=sys.stderr)
                        return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
