"""Summarize a py-spy raw (collapsed) profile of our workers: where the CPU goes, by package and by our function.

    python bench/pyspy_summary.py /tmp/idp-bench-perf-logs/profile-pg-client_credentials.txt [--top 15]

bench/run.py --profile records these files (py-spy record --format raw --subprocesses on the gunicorn master).
py-spy counts a thread blocked inside a C call (psycopg waiting for PostgreSQL, redis-py for Redis, gunicorn in
accept) as busy. So samples whose innermost Python frame is one of those blocking calls are set apart as waits, and
every percentage below is of the remaining samples: the CPU the request path spends in Python and in C extensions
called from it (argon2, cryptography).

Three views: self time by package (which library the innermost frame is in), inclusive time of our own functions
(idp/...), and inclusive time of chosen library entry points (JWT signing, logging, session saving, ...).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

#: Innermost frames that are a wait, not CPU: (category, regex on "function (file"). Checked first.
WAITS = [
    ("wait: PostgreSQL", re.compile(r"^(BaseCursor\._execute_send|BaseCursor\._fetch|BaseConnection\._exec_command|"
                                    r"wait|wait_c|wait_conn|Connection\.wait|BaseConnection\.wait|_wait_\w*) \(psycopg")),
    ("wait: Redis", re.compile(r"^(AbstractConnection\.send_packed_command|SocketBuffer\._read_from_socket|"
                               r"\w+\.read_response|Connection\._connect|AbstractConnection\.connect) \(redis")),
    ("wait: SQLite (commit, fsync)", re.compile(r"^DefaultDialect\.do_commit \(sqlalchemy")),
    ("wait: accept / socket", re.compile(r"^(SyncWorker\.(accept|wait|run_for_one)|select|accept|_real_close|"
                                         r"socket\.\w+|recv\w*|sendall) ")),
]

#: Package of a frame, by its file path (first match wins).
PACKAGES = [
    ("argon2 (password hash)", "argon2/"),
    ("passlib", "passlib/"),
    ("JOSE: joserfc", "joserfc/"),
    ("JOSE: cryptography", "cryptography/"),
    ("SQLAlchemy", "sqlalchemy/"),
    ("psycopg (CPU part)", "psycopg/"),
    ("redis-py (CPU part)", "redis/"),
    ("logging", "logging/"),
    ("prometheus_client", "prometheus_client/"),
    ("Jinja2 / MarkupSafe", "jinja2/"),
    ("Jinja2 / MarkupSafe", "markupsafe/"),
    ("json", "json/"),
    ("Authlib", "authlib/"),
    ("Flask-WTF / WTForms", "flask_wtf/"),
    ("Flask-WTF / WTForms", "wtforms/"),
    ("Flask-Babel / Babel", "flask_babel/"),
    ("Flask-Babel / Babel", "babel/"),
    ("Werkzeug", "werkzeug/"),
    ("Flask", "flask/"),
    ("gunicorn", "gunicorn/"),
    ("our code (idp/)", "idp/"),
]

#: Library entry points worth seeing inclusively (function name regex, label).
ENTRY_POINTS = [
    (r"^JWTBearerTokenGenerator\.|^AccessTokenGenerator\.(generate|__call__)", "access token generation (authlib rfc9068)"),
    (r"^(jws\.)?serialize_compact \(joserfc|^encode \(joserfc/jwt", "JWS signing (joserfc)"),
    (r"^(jws\.)?deserialize_compact \(joserfc|^decode \(joserfc/jwt", "JWS verification (joserfc)"),
    (r"\.sign \(joserfc", "  of which the signature (ES/RS sign)"),
    (r"\.verify \(joserfc", "  of which the signature check"),
    (r"^Session\.commit|^scoped_session\.commit|^SessionTransaction\.commit", "SQLAlchemy commit (flush + COMMIT)"),
    (r"^Session\._autoflush|^Session\.flush|^Session\._flush", "SQLAlchemy flush"),
    (r"^Session\.get |^scoped_session\.get |^Session\._get_impl", "Session.get (primary-key loads)"),
    (r"^Session\.execute|^scoped_session\.execute", "Session.execute (queries)"),
    (r"compile|_compiler_dispatch|_generate_cache_key", "  SQL compilation / cache keys"),
    (r"^Logger\.(info|_log|handle)|^StreamHandler\.emit|^JsonFormatter\.format", "logging a line (app access log)"),
    (r"^Logger\.access|^Logger\.atoms|^glogging", "gunicorn access log"),
    (r"^(Counter|Histogram|Gauge)\.|MetricWrapperBase", "Prometheus metrics"),
    (r"^ServerSessionInterface\.(open_session|save_session)", "browser session load/save"),
    (r"^render_template|^Template\.render", "template rendering"),
    (r"^CSRFProtect|^generate_csrf|^validate_csrf", "CSRF"),
    (r"^get_locale|^_select_locale|^Babel\.", "locale selection"),
    (r"^verify_secret|^_CffiBackend\.verify|^CryptContext\.verify", "argon2 verify"),
    (r"^hit \(idp/policies/rate_limits", "rate limit counter"),
    (r"^record \(idp/audit", "audit event"),
    (r"^AuthorizationServer\.query_client|^find \(idp/clients", "client look-up (query_client)"),
    (r"^(ClientSecretBasic|authenticate_client_secret_basic|_validate_client)|check_client_secret", "client authentication"),
    (r"^Response\.__init__|^Flask\.make_response|^jsonify|^DefaultJSONProvider", "response building / JSON"),
    (r"^Request\.|^EnvironHeaders|^FlaskOAuth2Request|^create_oauth2_request|^Request\.form|_load_form_data",
     "request parsing"),
    (r"^Flask\.(preprocess_request|process_response)", "before/after_request hooks"),
]


def frame_parts(frame: str) -> tuple[str, str]:
    name, _, where = frame.partition(" (")
    return name, where.rstrip(")").rsplit(":", 1)[0]


def short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def load(raw: Path):
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
            if frames:
                yield frames, int(count)


def summarize(raw: Path, top: int = 15) -> list[str]:
    waits, packages, ours, entries = Counter(), Counter(), Counter(), Counter()
    cpu = total = 0
    for frames, n in load(raw):
        total += n
        leaf = frames[-1]
        name, path = frame_parts(leaf)
        label = f"{name} ({short(path)}"
        wait = next((category for category, pattern in WAITS if pattern.search(label)), None)
        if wait:
            waits[wait] += n
            continue
        cpu += n
        package = next((p for p, marker in PACKAGES if marker in path), "stdlib / other")
        packages[package] += n
        seen_ours, seen_entries = set(), set()
        for frame in frames:
            fname, fpath = frame_parts(frame)
            if "idp/" in fpath and "bench/" not in fpath:
                seen_ours.add(f"{fname} ({short(fpath)})")
            text = f"{fname} ({short(fpath)}"
            for pattern, entry in ENTRY_POINTS:
                if re.search(pattern, text):
                    seen_entries.add(entry)
        for key in seen_ours:
            ours[key] += n
        for key in seen_entries:
            entries[key] += n
    if not cpu:
        return ["no samples"]
    pct = lambda n: f"{100 * n / cpu:5.1f}%"  # noqa: E731
    lines = [f"{total} samples: {cpu} on CPU, {total - cpu} waiting "
             f"({', '.join(f'{k} {100 * v / total:.0f}%' for k, v in waits.most_common())} of all samples)",
             "CPU self time by package (innermost frame):"]
    lines += [f"  {pct(n)}  {name}" for name, n in packages.most_common()]
    lines.append("CPU inclusive, our functions:")
    lines += [f"  {pct(n)}  {name}" for name, n in ours.most_common(top)]
    lines.append("CPU inclusive, selected operations:")
    lines += [f"  {pct(n)}  {name}" for name, n in sorted(entries.items(), key=lambda kv: -kv[1])]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    for raw in args.raw:
        print(f"== {raw}")
        print("\n".join(summarize(raw, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
