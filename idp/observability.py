"""Request ids, structured JSON logs and Prometheus metrics.

Every request gets an id (the caller's X-Request-ID when it is sane, else a new
one), echoed in the response and in every log line of that request. With JSON
logs on, each line is one JSON object. /metrics serves Prometheus text; under
gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR so they add up
(prometheus_client's multiprocess mode). Keep /metrics behind the proxy.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time

from flask import Flask, Response, g, has_request_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .extensions import current_g, current_request

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

REQUESTS = Counter("idp_http_requests_total", "HTTP requests by endpoint, method and status.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("idp_http_request_duration_seconds", "Request latency by endpoint.", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LOGINS = Counter("idp_logins_total", "Sign-in attempts by result.", ["result"])
TOKENS = Counter("idp_tokens_issued_total", "Token responses by grant type.", ["grant_type"])


#: (second, its timestamp text): one strftime a second rather than one per line (a line per request).
_stamp: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    global _stamp
    second, stamp = _stamp
    if int(created) != second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(created))
        _stamp = (int(created), stamp)
    return stamp


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _timestamp(record.created), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        if has_request_context():
            line.update(request_id=getattr(g, "request_id", None), method=request.method, path=request.path)
        for key in ("request_id", "method", "path", "status", "duration_ms", "endpoint"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(json_logs: bool) -> None:
    if not json_logs:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    # The JSON lines carry none of the caller's file, line, thread or process fields, and collecting them
    # (a stack walk for the caller) is most of what logging costs per access line: the logging HOWTO's
    # "Optimization" section names these switches for that. Tracebacks (exc_info) are unaffected.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    global _json_handler
    _json_handler = handler


def metrics_registry() -> CollectorRegistry:
    import os

    from prometheus_client import REGISTRY, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


_access_log = logging.getLogger("idp.access")
#: The handler configure_logging installed on the root logger (production's JSON lines on stderr).
_json_handler: logging.Handler | None = None


def _direct_handler():
    """The handler whose stream an access line can be written to directly, or None when it must go through
    logging.

    A line through ``logging`` (a LogRecord, the handler's lock, the formatter, the handler's own write and
    flush) cost about 40 µs of server CPU per request under granian's threads, half of a JWKS response
    (bench/README.md). When the access logger's lines would reach only the JSON handler configure_logging
    installed (nothing configured on ``idp.access`` or between it and the root, no filters), the same line is
    built here and written with one ``write`` on the handler's stream under the handler's lock, as before.
    Anything else (a handler or level set on ``idp.access``, tests capturing records) takes the logging
    path."""
    handler = _json_handler
    if (handler is None or _access_log.handlers or _access_log.filters or not _access_log.propagate
            or handler.filters or handler.level > logging.INFO):
        return None
    root = logging.getLogger()
    handlers = root.handlers
    if len(handlers) != 1 or handlers[0] is not handler or root.filters or _access_log.parent is not root:
        return None
    return handler


def _access_line(method: str, path: str, status: int, elapsed: float, endpoint: str, extra: dict) -> str:
    """The access line JsonFormatter writes for count_request's record: the same keys in the same order."""
    line = {"time": _timestamp(time.time()), "level": "INFO", "logger": "idp.access",
            "message": f"{method} {path} {status}"}
    if has_request_context():
        request_ = current_request()
        line.update(request_id=current_g().get("request_id"), method=request_.method, path=request_.path)
    if "request_id" in extra:
        line["request_id"] = extra["request_id"]
    line["method"] = method
    if "path" in extra:
        line["path"] = extra["path"]
    line.update(status=status, duration_ms=round(elapsed * 1000, 2), endpoint=endpoint)
    return json.dumps(line)


def valid_request_id(value: str) -> bool:
    return bool(value) and _REQUEST_ID.match(value) is not None


_by_labels: dict[tuple[str, str, int], tuple] = {}
_tokens_by_grant: dict[str, object] = {}


def count_token(grant_type: str | None) -> None:
    """One token response of a grant type (labels() takes a lock and builds the label tuple each time)."""
    grant_type = grant_type or "unknown"
    child = _tokens_by_grant.get(grant_type)
    if child is None:
        child = _tokens_by_grant[grant_type] = TOKENS.labels(grant_type)
    child.inc()


def count_request(endpoint: str, method: str, status: int, elapsed: float, **extra) -> None:
    """Metrics and the access log line of one request (also for answers given outside Flask)."""
    metrics = _by_labels.get((endpoint, method, status))
    if metrics is None:
        # labels() takes a lock and builds the label tuple each time; the labelled children are stable.
        metrics = _by_labels[(endpoint, method, status)] = (REQUESTS.labels(endpoint, method, str(status)),
                                                             LATENCY.labels(endpoint))
    metrics[0].inc()
    metrics[1].observe(elapsed)
    if _access_log.isEnabledFor(logging.INFO):
        path = extra.get("path") or (request.path if has_request_context() else "")
        handler = _direct_handler()
        if handler is not None:
            line = _access_line(method, path, status, elapsed, endpoint, extra) + "\n"
            try:
                with handler.lock:  # as logging's own lines are written: none is cut into by another thread's
                    handler.stream.write(line)
                return
            except Exception:  # noqa: BLE001, S110 - a log stream that fails must not fail the request:
                pass  # logging reports it its own way (Handler.handleError) and never raises
        _access_log.info("%s %s %s", method, path, status,
                         extra={"status": status, "duration_ms": round(elapsed * 1000, 2), "endpoint": endpoint,
                                "method": method, **extra})


def start_request() -> None:
    """The request's id (the caller's X-Request-ID when sane) and start time, on ``g``."""
    # From the environ (where Werkzeug's headers read it): a header that is not there costs Werkzeug a raised
    # and caught KeyError, and most callers send none.
    incoming = current_request().environ.get("HTTP_X_REQUEST_ID", "")
    globals_ = current_g()
    globals_.request_id = incoming if valid_request_id(incoming) else secrets.token_hex(8)
    globals_.started = time.perf_counter()


def finish_request(response, endpoint: str):
    """Echo the request id and count the request (metrics and access log)."""
    now = time.perf_counter()
    globals_ = current_g()
    elapsed = now - globals_.get("started", now)
    response.headers["X-Request-ID"] = globals_.get("request_id", "")
    request_ = current_request()
    count_request(endpoint, request_.method, response.status_code, elapsed, path=request_.path)
    return response


def init_app(app: Flask) -> None:
    app.before_request(start_request)

    @app.after_request
    def _finish(response):
        rule = current_request().url_rule
        return finish_request(response, rule.rule if rule is not None else "unmatched")

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
