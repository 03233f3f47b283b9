"""The protocol endpoints machines call per token, dispatched without Flask's full request cycle.

Token, introspection, revocation and UserInfo requests come from RPs and resource servers, many per sign-in,
and use nothing of what Flask's dispatch does around a view for the pages: the browser session (opened and
saved), the CSRF check, the locale, the before-request hooks. That cycle cost about a tenth of a token
request's instructions (bench/README.md). This layer runs the same view functions in a request context of their own
(``flask.request`` and ``g`` work as everywhere) with a null session, so a view that tried to write to a
session would fail loudly rather than lose the write, and adds what the app's hooks add to every response:
the request id, the security headers, the Prometheus counters and the access log line. Errors go through the
app's registered error handlers, as in Flask's own dispatch. Other methods on these paths (HEAD, OPTIONS,
405s) fall through to Flask.
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
        ctx = RequestContext(app, environ, session=NullSession())
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
    Werkzeug's own iterator makes it step through a generator for a body that is already one string."""
    if response.is_streamed or response.status_code < 200 or response.status_code in (204, 304):
        return response(environ, start_response)
    headers = response.get_wsgi_headers(environ)
    body = response.get_data()
    response.close()
    start_response(response.status, headers.to_wsgi_list())
    return [body]
