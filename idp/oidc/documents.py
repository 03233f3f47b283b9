"""Discovery and JWKS served in front of Flask.

Every RP and resource server fetches these two documents, and the answers are the same bytes for everyone
until a key rotates. Going through Flask's request context, session interface, locale selection and after-
request hooks costs several times the work of the answer itself (bench/README.md), so this WSGI layer answers
GET and HEAD of the documents from bytes encoded once. It keeps what the app adds to every response: the
security headers, X-Request-ID, the Prometheus counters and the access log line. Other methods fall through to
Flask, which answers OPTIONS and 405 as before. The JWKS is re-encoded when the key ring publishes a new set.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from .. import observability
from .discovery import metadata

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
JWKS_PATH = "/jwks"


class _Document:
    __slots__ = ("source", "body", "etag")

    def __init__(self, source, payload: dict):
        self.source = source
        # The same serialisation as Flask's jsonify (compact separators), so the bytes do not change.
        self.body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


class PublicDocuments:
    def __init__(self, wsgi_app, runtime):
        self.wsgi_app = wsgi_app
        self.runtime = runtime
        settings = runtime.settings
        self.discovery = _Document(None, metadata(settings.issuer, settings.supported_locales))
        self.jwks: _Document | None = None
        self.base_headers = [("Access-Control-Allow-Origin", "*"), ("X-Content-Type-Options", "nosniff"),
                             ("Referrer-Policy", "no-referrer")]
        if settings.issuer.startswith("https://"):
            self.base_headers.append(("Strict-Transport-Security", "max-age=31536000"))

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if method not in ("GET", "HEAD") or (path != JWKS_PATH and path not in DISCOVERY_PATHS):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        if path == JWKS_PATH:
            document, max_age, rule = self._jwks(), 300, JWKS_PATH
        else:
            document, max_age, rule = self.discovery, 3600, path
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if observability.valid_request_id(incoming) else secrets.token_hex(8)
        headers = [("Content-Type", "application/json"), ("Cache-Control", f"public, max-age={max_age}"),
                   ("ETag", document.etag), *self.base_headers, ("X-Request-ID", request_id)]
        condition = environ.get("HTTP_IF_NONE_MATCH", "")
        # RFC 9110 §13.1.2: weak comparison (a W/ prefix still matches), and "*" matches any representation.
        if condition.strip() == "*" or document.etag in condition:
            status, body = 304, b""
        else:
            status, body = 200, document.body
            headers.append(("Content-Length", str(len(body))))
        start_response("200 OK" if status == 200 else "304 Not Modified", headers)
        observability.count_request(rule, method, status, time.perf_counter() - started,
                                    path=path, request_id=request_id)
        return [body if method == "GET" else b""]

    def _jwks(self) -> _Document:
        current = self.runtime.keys.jwks()  # reloads the key directory when it is due
        if self.jwks is None or self.jwks.source is not current:
            self.jwks = _Document(current, current)
        return self.jwks
