"""Token, introspection, revocation and UserInfo as RPs call them, served by idp/oidc/lean.py outside Flask's
full dispatch: the same answers and the same headers, metrics and error handling as every other endpoint, and
a browser's session cookie neither read nor touched."""

from __future__ import annotations

import re

import pytest
from flask import Response
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.oidc import machine_client


@pytest.fixture
def machine(factory, db):
    """The Authorization header of a client_credentials client."""
    return machine_client(factory, db)[1]


def requests_counted(client, endpoint: str, status: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        for sample in family.samples:
            if (sample.name == "idp_http_requests_total" and sample.labels.get("endpoint") == endpoint
                    and sample.labels.get("method") == "POST" and sample.labels.get("status") == status):
                return sample.value
    return 0


def test_token_response_carries_the_headers_of_every_response(client, machine):
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers={**machine, "X-Request-ID": "rp-call-000001"})
    assert response.status_code == 200, response.get_json()
    assert response.headers["X-Request-ID"] == "rp-call-000001"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers["Cache-Control"] == "no-store"
    junk = client.post("/token", data={"grant_type": "client_credentials"}, headers={**machine, "X-Request-ID": "<x>"})
    assert re.fullmatch(r"[0-9a-f]{16}", junk.headers["X-Request-ID"])


@pytest.mark.parametrize("path,data,status", [
    ("/token", {"grant_type": "client_credentials"}, "200"),
    ("/token", {"grant_type": "password"}, "400"),
    ("/introspect", {"token": "not-a-token"}, "200"),
    ("/revoke", {"token": "not-a-token"}, "200"),
])
def test_requests_are_counted_under_their_path(client, machine, path, data, status):
    before = requests_counted(client, path, status)
    response = client.post(path, data=data, headers=machine)
    assert str(response.status_code) == status, response.get_data(as_text=True)
    assert requests_counted(client, path, status) == before + 1


def test_a_browser_session_cookie_is_neither_read_nor_renewed(app, client, machine, runtime, monkeypatch):
    name = app.config["SESSION_COOKIE_NAME"]
    client.set_cookie(name, "a-browser-session-id-that-reached-the-token-endpoint")
    read = []
    original = runtime.store.get

    def spying_get(kind, key):
        read.append(kind)
        return original(kind, key)

    monkeypatch.setattr(runtime.store, "get", spying_get)
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine)
    assert response.status_code == 200
    assert "session" not in read
    assert "Set-Cookie" not in response.headers


def test_headers_go_out_as_werkzeug_sends_them(app, client, machine, monkeypatch):
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine)
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert [name.lower() for name, _value in response.headers].count("content-length") == 1
    # No lean endpoint answers with a Location today; one that did would still be made a URI by Werkzeug, and a
    # body without a length would get one.
    monkeypatch.setitem(app.view_functions, "oidc.token", lambda: Response("moved", 302, {"Location": "/café"}))
    moved = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine)
    assert moved.headers["Location"] == "/caf%C3%A9"
    assert moved.headers["Content-Length"] == "5"

    def unsized():
        answer = Response(status=200, content_type="application/json")
        answer.response = [b"{}"]  # set as a list, as a view may: no Content-Length yet
        return answer

    monkeypatch.setitem(app.view_functions, "oidc.token", unsized)
    listed = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine)
    assert listed.headers["Content-Length"] == "2"
    assert listed.data == b"{}"


def test_other_methods_fall_through_to_flask(client):
    response = client.get("/token")
    assert response.status_code == 405
    assert response.get_json()["error"] == "invalid_request"
    assert client.delete("/introspect").status_code == 405


def test_an_unexpected_failure_is_a_json_500_and_the_request_ends_cleanly(app, client, machine, monkeypatch):
    server = app.extensions["authlib.server"]

    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated defect")

    monkeypatch.setattr(server, "create_token_response", broken)
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine)
    assert response.status_code == 500
    assert response.get_json() == {"error": "server_error", "error_description": "Internal error"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    monkeypatch.undo()
    # The request's database session was removed: the next request works.
    assert client.post("/token", data={"grant_type": "client_credentials"}, headers=machine).status_code == 200


def test_form_bodies_read_as_werkzeug_reads_them(client, machine):
    """The lean path parses urlencoded bodies itself; what reaches the protocol code is what Werkzeug gives."""
    # Repeated parameters stay repeated, blank values stay, percent-escapes decode.
    response = client.post("/token", data=b"grant_type=client_credentials&scope=&resource=https%3A%2F%2Fidp.test"
                                          b"&resource=https%3A%2F%2Fidp.test", headers=machine,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.get_json()
    # Not UTF-8: no fields at all, so the grant type is missing (RFC 6749 §5.2: invalid_request).
    response = client.post("/token", data=b"grant_type=client_credentials&x=\xff\xfe", headers=machine,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"
    # Another content type is not a form.
    response = client.post("/token", json={"grant_type": "client_credentials"}, headers=machine)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_a_body_over_the_limit_is_refused_before_it_is_read(app, client, machine):
    body = b"grant_type=client_credentials&pad=" + b"a" * app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/token", data=body, headers=machine, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert response.get_json()["error"] == "invalid_request"


def test_a_body_shorter_than_its_content_length_is_a_bad_request(client, machine):
    response = client.post("/token", data=b"grant_type=client_credentials", headers=machine,
                           content_type="application/x-www-form-urlencoded",
                           environ_overrides={"CONTENT_LENGTH": "500"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


# -- the lean request context (no URL matching) ------------------------------------------------------------

def test_lean_request_context_has_flasks_attributes(app):
    """LeanRequestContext repeats Flask's RequestContext.__init__ without the URL adapter: the same attributes,
    or a Flask upgrade has changed them and the class must follow."""
    from flask.ctx import RequestContext
    from werkzeug.test import EnvironBuilder

    from idp.oidc.lean import LeanRequestContext

    environ = EnvironBuilder(path="/token", method="POST").get_environ()
    flasks = set(vars(RequestContext(app, environ)))
    ours = {name.replace("_url_adapter", "url_adapter") for name in vars(LeanRequestContext(app, environ))}
    assert ours - {"_adapter_wanted"} == flasks


def test_url_for_works_in_a_lean_request(app):
    from flask import request, url_for
    from werkzeug.test import EnvironBuilder

    from idp.oidc.lean import LeanRequestContext

    ctx = LeanRequestContext(app, EnvironBuilder(path="/token", method="POST", base_url="https://idp.test").get_environ())
    ctx.push()
    try:
        assert request.url_rule is None  # not matched: the view is known
        assert url_for("oidc.jwks") == "/jwks"
        assert url_for("oidc.jwks", _external=True) == "https://idp.test/jwks"
    finally:
        ctx.pop()


def test_trusted_hosts_are_still_checked(app, client, machine, monkeypatch):
    monkeypatch.setitem(app.config, "TRUSTED_HOSTS", ["idp.test"])
    good = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine,
                       base_url="https://idp.test")
    assert good.status_code == 200, good.get_data(as_text=True)
    bad = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine,
                      base_url="https://evil.example")
    assert bad.status_code == 400
    assert "access_token" not in bad.get_data(as_text=True)
