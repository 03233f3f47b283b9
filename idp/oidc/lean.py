"""The protocol endpoints machines call per token, dispatched without Flask's full request cycle.

Token, introspection, revocation and UserInfo requests come from RPs and resource servers, many per sign-in,
and use nothing of what Flask's dispatch does around a view for the pages: the browser session (opened and
saved), the CSRF check, the locale, the before-request hooks. That cycle cost about a tenth of a token
request's instructions (bench/README.md). This layer runs the same view functions in a request context of
their own (``flask.request``, ``g`` and ``url_for`` work as everywhere; the URL is not matched, the view is
known) with a null session, so a view that tried to write to a session would fail loudly rather than lose
the write, and adds what the app's hooks add to every response: the request id, the security headers, the
Prometheus counters and the access log line. Errors go through the app's registered error handlers, as in
Flask's own dispatch. Other methods on these paths (HEAD, OPTIONS, 405s) fall through to Flask.
"""

from __future__ import annotations

import io
from urllib.parse import parse_qsl

from flask.ctx import RequestContext
from flask.sessions import NullSession
from werkzeug.exceptions import ClientDisconnected

from .. import observability

#: (method, path) -> the view's endpoint; the metrics name these by their path, as Flask's rule would.
ROUTES = {
    ("POST", "/token"): "oidc.token",
    ("POST", "/introspect"): "oidc.introspect",
    ("POST", "/revoke"): "oidc.revoke",
    ("GET", "/userinfo"): "oidc.userinfo",
    ("POST", "/userinfo"): "oidc.userinfo",
}


class LeanProtocolEndpoints:
    def __init__(self, wsgi_app, app, finish_response):
        self.wsgi_app = wsgi_app
        self.app = app
        #: The app's after-request work for every response (security headers), applied before counting.
        self.finish_response = finish_response

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        endpoint = ROUTES.get((environ.get("REQUEST_METHOD", ""), path))
        if endpoint is None:
            return self.wsgi_app(environ, start_response)
        app = self.app
        if app.config["TRUSTED_HOSTS"] or app.config["SERVER_NAME"]:
            # Binding the URL map is where Flask checks the Host against these: keep its context.
            ctx = RequestContext(app, environ, session=NullSession())
        else:
            ctx = LeanRequestContext(app, environ)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                observability.start_request()
                try:
                    if environ.get("REQUEST_METHOD") == "POST":
                        _read_form(ctx.request)
                    rv = app.view_functions[endpoint]()
                except Exception as e:  # noqa: BLE001 - the app's error handlers decide, as in Flask's dispatch
                    rv = app.handle_user_exception(e)
                response = observability.finish_request(self.finish_response(app.make_response(rv)), path)
            except Exception as e:  # noqa: BLE001
                error = e
                response = app.handle_exception(e)
            return _send(response, environ, start_response)
        finally:
            ctx.pop(error)


class LeanRequestContext(RequestContext):
    """Flask's request context without matching the URL: the view is known from ROUTES already. Binding the URL
    map to the request and matching its path cost about a tenth of an introspection's server CPU
    (bench/README.md). ``request.url_rule`` stays None (nothing on these paths reads it; the error handlers are
    all the app's own, not a blueprint's). The URL adapter is made on first use once the context is pushed, so
    ``url_for`` works as anywhere. Used only when neither TRUSTED_HOSTS nor SERVER_NAME is configured, which
    Flask checks when it binds the map.

    The attributes are Flask 3.1's RequestContext.__init__'s (tests/protocol/test_lean_dispatch.py compares
    them with Flask's own context, so a Flask upgrade that changes them fails there)."""

    def __init__(self, app, environ):  # Flask's __init__ minus create_url_adapter
        self.app = app
        self.request = app.request_class(environ)
        self.request.json_module = app.json
        self._url_adapter = None
        self._adapter_wanted = False
        self.flashes = None
        self._session = NullSession()
        self._after_request_functions = []
        self._cv_tokens = []

    @property
    def url_adapter(self):
        if self._url_adapter is None and self._adapter_wanted:
            self._url_adapter = self.app.create_url_adapter(self.request)
        return self._url_adapter

    @url_adapter.setter
    def url_adapter(self, value) -> None:
        self._url_adapter = value

    def push(self) -> None:
        super().push()  # sees no adapter yet, so it matches nothing
        self._adapter_wanted = True


def _read_form(request) -> None:
    """An urlencoded body (every POST these endpoints take) parsed as Werkzeug parses it (strict UTF-8, else no
    fields; ``parse_qsl`` with blank values kept and Werkzeug's error handler), without its stream and
    form-parser layers, which cost more than the parse for a body of a hundred bytes. Anything else (another
    content type, no Content-Length, a body over the app's limit, which Werkzeug answers with 413) is left to
    Werkzeug."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return
    length, limit = request.content_length, request.max_content_length
    if length is None or (limit is not None and length > limit):
        return
    body = request.environ["wsgi.input"].read(length)
    if len(body) != length:
        raise ClientDisconnected()  # as Werkzeug's stream does for a body shorter than its Content-Length
    try:
        items = parse_qsl(body.decode(), keep_blank_values=True, errors="werkzeug.url_quote")
    except ValueError:
        items = []
    fields = request.__dict__  # where Werkzeug's cached properties keep what _load_form_data sets
    fields["stream"], fields["form"], fields["files"] = (io.BytesIO(b""), request.parameter_storage_class(items),
                                                         request.parameter_storage_class())


def _send(response, environ, start_response):
    """The response as one body in a list: a WSGI server can write a list at once (granian does), where
    Werkzeug's own iterator makes it step through a generator for a body that is already one string.

    Werkzeug's ``get_wsgi_headers`` copies the headers to fix up a Location or Content-Location and to set a
    missing Content-Length. A body set as one string has its Content-Length already, and these endpoints
    answer with JSON, not redirects: such a response's headers go out as they are, anything else through
    Werkzeug."""
    if response.is_streamed or response.status_code < 200 or response.status_code in (204, 304):
        return response(environ, start_response)
    headers = response.headers.to_wsgi_list()
    names = {name.lower() for name, _value in headers}
    if "content-length" not in names or not names.isdisjoint(_FIXED_UP) or not response.is_sequence:
        headers = response.get_wsgi_headers(environ).to_wsgi_list()
    body = response.get_data()
    response.close()
    start_response(response.status, headers)
    return [body]


#: Headers Werkzeug's get_wsgi_headers rewrites.
_FIXED_UP = frozenset(("location", "content-location"))
