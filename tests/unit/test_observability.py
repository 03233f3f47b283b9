"""Operability (issue 10): request ids, structured JSON logs, Prometheus metrics, health.

- X-Request-ID: a sane incoming id is kept and echoed; junk is replaced by a
  fresh id; without one, every response still gets its own.
- JSON logs (idp.observability.JsonFormatter): each access line is one JSON
  object with the request id, method, path, endpoint, status and duration_ms;
  ``configure_logging(True)`` makes every log line JSON.
- /metrics: Prometheus text with request counts and latencies by endpoint, and
  sign-in and token counters that move after a sign-in and a token request.
- /healthz and /readyz answer in JSON.
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idp import observability
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import csrf_token, make_rp

GENERATED_ID = re.compile(r"^[0-9a-f]{16}$")


# -- request ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("incoming", ["abcdef12", "req-2026.11.29_0001", "A" * 64,
                                      "0f8e2a3c-6d1b-4b8e-9f2a-1c3d5e7f9a0b"])
def test_a_sane_request_id_is_kept(client, incoming):
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] == incoming


@pytest.mark.parametrize("junk", ["short", "A" * 65, "has space in it", "semi;colon;id", "<script>alert(1)</script>",
                                  "line\tbreak-000", "ünïcödé-id-123", "../../etc/passwd"])
def test_junk_request_ids_are_replaced(client, junk):
    response = client.get("/healthz", headers={"X-Request-ID": junk})
    assert response.headers["X-Request-ID"] != junk
    assert GENERATED_ID.match(response.headers["X-Request-ID"]), response.headers["X-Request-ID"]


def test_every_response_gets_its_own_id(client):
    ids = {client.get(path).headers.get("X-Request-ID") for path in ("/healthz", "/login", "/no-such-page", "/jwks")}
    assert len(ids) == 4 and all(GENERATED_ID.match(i) for i in ids), ids
    assert client.post("/token", data={}).headers.get("X-Request-ID")


# -- JSON logs ------------------------------------------------------------------------------------------


@pytest.fixture
def json_log():
    """Lines the ``idp`` loggers write through a JsonFormatter, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observability.JsonFormatter())
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger("idp.access"), logging.getLogger("idp.app")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)

    def lines():
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield lines
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_access_lines_are_json_with_request_id_status_and_duration(client, json_log):
    response = client.get("/login", headers={"X-Request-ID": "trace-login-0001"})
    missing = client.get("/no-such-page")
    lines = json_log()
    login = [line for line in lines if line.get("request_id") == "trace-login-0001"]
    assert len(login) == 1, lines
    line = login[0]
    assert line["status"] == response.status_code == 200
    assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert line["method"] == "GET" and line["path"] == "/login" and line["endpoint"] == "/login"
    assert line["level"] == "INFO" and line["logger"] == "idp.access" and line["time"]
    other = [line for line in lines if line.get("request_id") == missing.headers["X-Request-ID"]]
    assert other and other[0]["status"] == 404 and other[0]["endpoint"] == "unmatched"


def test_json_formatter_keeps_exceptions_on_one_line():
    formatter = observability.JsonFormatter()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("idp.test").makeRecord("idp.test", logging.ERROR, __file__, 1, "failed %s",
                                                          ("here",), exc_info=__import__("sys").exc_info())
    text = formatter.format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed here" and "RuntimeError: boom" in line["exception"]
    assert "request_id" not in line  # outside a request


def test_configure_logging_makes_every_line_json(capsys):
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_switches = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    try:
        observability.configure_logging(True)
        assert root.level == logging.INFO
        assert [type(h.formatter) for h in root.handlers] == [observability.JsonFormatter]
        logging.getLogger("idp.somewhere").warning("hello %s", "there")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("idp.somewhere").exception("it failed")
        observability.configure_logging(False)  # no-op: leaves the JSON handler
    finally:
        emitted = [h for h in root.handlers if isinstance(h.formatter, observability.JsonFormatter)]
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing) = saved_switches
    assert emitted
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    hello = [line for line in lines if line["message"] == "hello there"][-1]
    assert hello["level"] == "WARNING"
    # Without the caller's file and line (configure_logging switches them off), the traceback still comes.
    failed = [line for line in lines if line["message"] == "it failed"][-1]
    assert "RuntimeError: boom" in failed["exception"] and "test_observability.py" in failed["exception"]


@pytest.fixture
def json_stderr(capsys):
    """configure_logging(True) as production runs it, undone afterwards. Pytest adds its own capturing handlers
    to the root logger when a test starts, and captures each phase of a test in a stream of its own;
    ``only_json()`` takes the handlers off again for a block, as in production, and writes to the test's stderr."""
    import contextlib
    import sys

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_switches = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    observability.configure_logging(True)
    handler = root.handlers[0]

    @contextlib.contextmanager
    def only_json():
        during = root.handlers[:]
        root.handlers[:] = [handler]
        handler.stream = sys.stderr  # (setStream would first flush the closed one)
        try:
            yield
        finally:
            root.handlers[:] = during

    yield only_json
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing) = saved_switches


def _not_through_logging(*args, **kwargs):
    raise AssertionError("the access line went through logging")


def _access_lines(text: str) -> list[dict]:
    return [line for line in (json.loads(raw) for raw in text.splitlines() if raw.startswith("{"))
            if line.get("logger") == "idp.access"]


def test_production_access_lines_for_every_kind_of_endpoint(client, json_stderr, capsys, monkeypatch):
    capsys.readouterr()
    monkeypatch.setattr(observability._access_log, "info", _not_through_logging)
    with json_stderr():
        jwks = client.get("/jwks", headers={"X-Request-ID": "trace-jwks-0001"})
        token = client.post("/token", data={"grant_type": "client_credentials"},
                            headers={"X-Request-ID": "trace-tok-0001"})
        page = client.get("/login", headers={"X-Request-ID": "trace-page-0001"})
    lines = {line["request_id"]: line for line in _access_lines(capsys.readouterr().err)}
    assert lines["trace-jwks-0001"] | {"time": None, "duration_ms": None} == {
        "time": None, "level": "INFO", "logger": "idp.access", "message": "GET /jwks 200",
        "request_id": "trace-jwks-0001", "method": "GET", "path": "/jwks", "status": jwks.status_code,
        "duration_ms": None, "endpoint": "/jwks"}
    assert lines["trace-tok-0001"]["status"] == token.status_code == 401
    assert lines["trace-tok-0001"]["endpoint"] == "/token" and lines["trace-tok-0001"]["path"] == "/token"
    assert lines["trace-page-0001"]["status"] == page.status_code == 200
    for line in lines.values():
        assert isinstance(line["duration_ms"], (int, float)) and line["time"]


@pytest.mark.parametrize("in_request", [True, False], ids=["request", "outside"])
def test_direct_access_line_is_the_formatters_line(app, monkeypatch, in_request):
    """The line written without logging is byte for byte what JsonFormatter makes of count_request's record."""
    monkeypatch.setattr(observability.time, "time", lambda: 1_800_000_000.25)
    extra = {} if in_request else {"path": "/jwks", "request_id": "outside-0001"}
    fields = {"status": 304, "duration_ms": 1.23, "endpoint": "/jwks", "method": "GET", **extra}

    def both():
        record = logging.LogRecord("idp.access", logging.INFO, "", 0, "%s %s %s", ("GET", "/jwks", 304), None)
        record.created = 1_800_000_000.25
        record.__dict__.update(fields)
        return (observability._access_line("GET", "/jwks", 304, 0.00123, "/jwks", extra),
                observability.JsonFormatter().format(record))

    if in_request:
        with app.test_request_context("/jwks", headers={"X-Request-ID": "inside-0001"}):
            observability.start_request()
            direct, formatted = both()
    else:
        direct, formatted = both()
    assert direct == formatted
    assert json.loads(direct)["request_id"] == ("inside-0001" if in_request else "outside-0001")


def test_access_log_configured_elsewhere_goes_through_logging(client, json_stderr, json_log, capsys):
    """A handler on ``idp.access`` (here the json_log fixture's) gets the lines as records again."""
    capsys.readouterr()
    with json_stderr():
        client.get("/jwks", headers={"X-Request-ID": "trace-jwks-0002"})
    assert [line["request_id"] for line in json_log()] == ["trace-jwks-0002"]
    # The root's JSON handler still writes the line too (the record propagates), once.
    written = [line for line in _access_lines(capsys.readouterr().err) if line["request_id"] == "trace-jwks-0002"]
    assert len(written) == 1


def test_a_failing_log_stream_does_not_fail_the_request(client, json_stderr, monkeypatch):
    class Broken:
        def write(self, text):
            raise BrokenPipeError("the log collector went away")

        def flush(self):
            raise BrokenPipeError("the log collector went away")

    monkeypatch.setattr(logging, "raiseExceptions", False)  # as logging reports it in production: quietly
    with json_stderr():
        monkeypatch.setattr(observability._json_handler, "stream", Broken())
        assert client.get("/jwks").status_code == 200
        assert client.post("/token", data={"grant_type": "client_credentials"}).status_code == 401


def test_access_log_level_silences_the_direct_lines(client, json_stderr, capsys):
    access = logging.getLogger("idp.access")
    capsys.readouterr()
    access.setLevel(logging.WARNING)
    try:
        with json_stderr():
            client.get("/jwks", headers={"X-Request-ID": "trace-jwks-0003"})
    finally:
        access.setLevel(logging.NOTSET)
    assert not [line for line in _access_lines(capsys.readouterr().err) if line["request_id"] == "trace-jwks-0003"]


# -- metrics --------------------------------------------------------------------------------------------


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain" and "version=" in response.headers["Content-Type"]
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_expose_request_counts_and_latency_by_endpoint(client):
    client.get("/healthz")
    samples = scrape(client)
    assert value(samples, "idp_http_requests_total", endpoint="/healthz", method="GET", status="200") >= 1
    assert value(samples, "idp_http_request_duration_seconds_count", endpoint="/healthz") >= 1
    assert any(name == "idp_http_request_duration_seconds_bucket" for name, _ in samples)
    text = client.get("/metrics").get_data(as_text=True)
    for family in ("idp_http_requests_total", "idp_http_request_duration_seconds", "idp_logins_total",
                   "idp_tokens_issued_total"):
        assert re.search(rf"^# TYPE {family} (counter|histogram)$", text, re.M), family


def test_login_and_token_counters_move(client, factory):
    before = scrape(client)
    identity = factory.identity()
    page = client.get("/login")
    failed = client.post("/login", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                         "email": identity.email, "password": "Wrong-Wrong-Wrong-1", "action": "login"})
    assert failed.status_code == 401
    rp = make_rp(client, factory)
    params = rp.sign_in(identity.email, PASSWORD)
    token = rp.token(params["code"])
    assert token.status_code == 200
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("idp_logins_total", result="failed") == 1
    assert moved("idp_logins_total", result="succeeded") == 1
    assert moved("idp_http_requests_total", endpoint="/token", method="POST", status="200") == 1
    assert moved("idp_http_request_duration_seconds_count", endpoint="/token") == 1
    assert moved("idp_tokens_issued_total", grant_type="authorization_code") == 1, {
        k: v for k, v in after.items() if k[0] == "idp_tokens_issued_total"}


# -- health ---------------------------------------------------------------------------------------------


def test_healthz_and_readyz(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json() == {"status": "ok", "checks": {"database": "ok", "store": "ok"}}


def test_json_lines_carry_the_time_of_their_own_second():
    formatter = observability.JsonFormatter()

    def stamped(created: float) -> str:
        record = logging.LogRecord("idp.access", logging.INFO, __file__, 1, "GET / 200", None, None)
        record.created = created
        return json.loads(formatter.format(record))["time"]

    first = stamped(1_800_000_000.1)
    assert stamped(1_800_000_000.9) == first  # the same second, the same text (computed once)
    later = stamped(1_800_000_001.0)
    assert later != first and later.startswith(first[:17])
    assert stamped(1_800_000_000.5) == first  # an earlier second again (another thread's line) is not mislabelled
