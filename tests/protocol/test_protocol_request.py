"""The request object Authlib's endpoints read (idp/oidc/server.py ``ProtocolRequest``): what Authlib's own
``FlaskOAuth2Request`` would give them, and the same refusal of plain http to a host that is not loopback."""

from __future__ import annotations

import pytest
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from werkzeug.datastructures import MultiDict

from idp.oidc.server import ParamsOAuth2Request, ParamsPayload, ProtocolRequest


def _both(app, url: str, **kwargs):
    with app.test_request_context(url, method="POST", **kwargs) as ctx:
        request = ctx.request
        return ProtocolRequest(request), FlaskOAuth2Request(request)


def test_it_carries_what_authlibs_request_carries(app):
    ours, authlibs = _both(app, "https://idp.test/token?x=%C3%A6+b", data={"grant_type": "client_credentials",
                                                                          "scope": "a b"},
                           headers={"Authorization": "Basic Zm9vOmJhcg==", "DPoP": "proof"})
    assert set(vars(ours)) - {"uri"} == set(vars(authlibs)) - {"uri"}
    assert ours.uri == authlibs.uri
    for name in set(vars(authlibs)) - {"uri", "payload", "headers", "_request"}:
        assert getattr(ours, name) == getattr(authlibs, name), name
    assert ours.method == "POST"
    assert dict(ours.headers) == dict(authlibs.headers)
    assert ours.payload.data.to_dict(flat=False) == authlibs.payload.data.to_dict(flat=False)
    assert ours.payload.grant_type == "client_credentials" and ours.payload.scope == "a b"
    assert dict(ours.payload.datalist) == dict(authlibs.payload.datalist)
    assert ours.form is authlibs.form and ours.args is authlibs.args


@pytest.mark.parametrize("url,secure", [
    ("https://idp.test/token", True),
    ("http://idp.test/token", False),
    ("http://idp.test:8080/token", False),
    ("http://127.0.0.1:5000/token", True),
    ("http://localhost:5000/token", True),
    ("http://[::1]:5000/token", True),
])
def test_plain_http_is_refused_as_authlib_refuses_it(app, monkeypatch, url, secure):
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    with app.test_request_context(url, method="POST"):
        from flask import request

        if secure:
            assert ProtocolRequest(request).method == "POST"
            assert FlaskOAuth2Request(request).method == "POST"
        else:
            with pytest.raises(InsecureTransportError):
                ProtocolRequest(request)
            with pytest.raises(InsecureTransportError):
                FlaskOAuth2Request(request)
    # Allowing insecure transport takes effect at once, although the answer per host is remembered.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    with app.test_request_context(url, method="POST"):
        from flask import request

        assert ProtocolRequest(request).method == "POST"


class _AuthlibParamsRequest(OAuth2Request):
    """What ParamsOAuth2Request was before: Authlib's own constructor, then the stored parameters."""

    def __init__(self, uri, params):
        super().__init__("GET", uri)
        self.payload = ParamsPayload(params)


def test_a_resumed_authorization_request_carries_what_authlibs_constructor_sets(monkeypatch):
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    params = MultiDict([("client_id", "rp"), ("resource", "https://a.test/"), ("resource", "https://b.test/"),
                        ("scope", "openid")])
    ours, authlibs = (ParamsOAuth2Request("https://idp.test/authorize", params),
                      _AuthlibParamsRequest("https://idp.test/authorize", params))
    assert vars(ours).keys() == vars(authlibs).keys()
    for name in set(vars(authlibs)) - {"payload"}:
        assert getattr(ours, name) == getattr(authlibs, name), name
    # Authlib's checks for repeated parameters and our resource indicators read datalist.
    lists = ours.payload.datalist
    assert lists.get("resource", []) == ["https://a.test/", "https://b.test/"]
    assert lists.get("code_challenge", []) == [] and "code_challenge" not in lists
    assert dict(lists) == {"client_id": ["rp"], "resource": ["https://a.test/", "https://b.test/"],
                           "scope": ["openid"]}
    with pytest.raises(InsecureTransportError):
        ParamsOAuth2Request("http://idp.test/authorize", params)
    with pytest.raises(InsecureTransportError):
        _AuthlibParamsRequest("http://idp.test/authorize", params)


@pytest.mark.parametrize("location", [
    "https://rp.test/cb?code=abc&state=x+y%2Fz",  # as Authlib's url_encode writes a query
    "https://rp.test/cb?keep=1&code=abc",
    "https://rp.test/cb",
    "https://rp.test/cb?error=access_denied&error_description=The+person+declined.&state=s#frag",
    "https://rp.test/p;x/cb?code=%C3%A6",
])
def test_the_issuer_parameter_is_added_as_authlibs_hook_adds_it(app, location):
    from authlib.common.urls import add_params_to_uri
    from werkzeug.wrappers import Response

    from idp.oidc.server import Issuer

    with app.app_context():
        issuer = Issuer().get_issuer()
        response = Response(status=302, headers={"Location": location})
        Issuer().add_issuer_parameter(None, response)
        assert response.location == add_params_to_uri(location, {"iss": issuer})
