"""Pushed authorization requests (RFC 9126) at POST /par and their use at /authorize."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from idp.clients import service as clients
from idp.clients.models import Client
from tests.helpers.factories import unique
from tests.helpers.oidc import RP, make_rp, pkce_pair, query
from tests.protocol.test_authorize_errors import assert_error_page

URN = "urn:ietf:params:oauth:request_uri:"


def basic(rp: RP) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()}


def request_params(rp: RP, **overrides) -> dict:
    rp.verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
              "scope": "openid profile", "state": "par-state", "nonce": "par-nonce",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def push(rp: RP, auth=True, **overrides):
    data = request_params(rp, **overrides)
    headers = basic(rp) if auth and rp.client_secret else {}
    return rp.browser.post("/par", data=data, headers=headers)


def pushed_uri(rp: RP, **overrides) -> str:
    response = push(rp, **overrides)
    assert response.status_code == 201, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["request_uri"].startswith(URN)
    assert body["expires_in"] == 60
    assert response.headers.get("Cache-Control") == "no-store"
    return body["request_uri"]


def authorize(rp: RP, **params):
    return rp.browser.get("/authorize?" + urlencode(params))


def complete(rp: RP, response, email):
    """Follow a browser through login and consent; the final response."""
    response = rp.follow(response)
    if response.status_code == 302 and "/login" in response.location:
        response = rp.follow(rp.login(response, email))
    if response.status_code == 302 and "/consent" in response.location:
        response = rp.follow(rp.consent(response))
    return response


def assert_code(rp: RP, response) -> dict:
    assert response.status_code == 302 and response.location.startswith(rp.redirect_uri + "?"), (
        response.status_code, response.location, response.get_data(as_text=True)[:400])
    params = query(response.location)
    assert "code" in params, params
    return params


def assert_json_error(response, error, status=400):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.location is None and "Location" not in response.headers
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error, body
    assert "request_uri" not in body
    return body


def test_par_happy_path(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    request_uri = pushed_uri(rp)
    # Only client_id and request_uri travel through the browser (RFC 9126 §4).
    response = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri), identity.email)
    params = assert_code(rp, response)
    assert params["state"] == "par-state"
    assert params["iss"] == "https://idp.test"
    body = rp.token(params["code"]).get_json()
    assert "access_token" in body, body
    claims = rp.verify_id_token(body["id_token"], nonce="par-nonce")
    assert claims["sub"] == identity.id


def test_par_public_client_without_authentication(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, public=True)
    request_uri = pushed_uri(rp, client_id=rp.client_id)
    response = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri), identity.email)
    params = assert_code(rp, response)
    assert rp.token(params["code"]).status_code == 200


def test_par_request_uri_is_single_use(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    request_uri = pushed_uri(rp)
    first = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri), identity.email)
    assert_code(rp, first)
    # Signed in and consented now: a second use would otherwise issue a code at once.
    assert_error_page(authorize(rp, client_id=rp.client_id, request_uri=request_uri), "invalid_request_uri")


def test_par_request_uri_expires(client, factory, monkeypatch):
    monkeypatch.setattr("idp.oidc.par.EXPIRES_IN", 1)
    rp = make_rp(client, factory)
    response = push(rp)
    assert response.status_code == 201
    assert response.get_json()["expires_in"] == 1
    time.sleep(1.3)
    assert_error_page(authorize(rp, client_id=rp.client_id, request_uri=response.get_json()["request_uri"]),
                      "invalid_request_uri")


def test_par_unknown_request_uri(client, factory):
    rp = make_rp(client, factory)
    assert_error_page(authorize(rp, client_id=rp.client_id, request_uri=URN + "not-one-of-ours"),
                      "invalid_request_uri")


def test_par_wrong_client_id_at_authorize(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    other = make_rp(client, factory)
    request_uri = pushed_uri(rp)
    response = complete(other, authorize(other, client_id=other.client_id, request_uri=request_uri), identity.email)
    assert_error_page(response)


def test_par_client_id_in_body_must_match_authenticated_client(client, factory):
    rp = make_rp(client, factory)
    other = make_rp(client, factory)
    assert_json_error(push(rp, client_id=other.client_id), "invalid_request")


def test_par_mismatched_redirect_uri_at_authorize(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, redirect_uris=("https://rp.example/cb", "https://rp.example/other"))
    request_uri = pushed_uri(rp)
    response = authorize(rp, client_id=rp.client_id, request_uri=request_uri,
                         redirect_uri="https://rp.example/other")
    # An error page: nothing goes to either redirect URI, no interaction starts.
    assert_error_page(response, "invalid_request")
    # And the request_uri cannot be used afterwards to get a code either.
    again = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri), identity.email)
    assert again.status_code == 400 and again.location is None


def test_par_other_outer_parameter_differs(client, factory):
    rp = make_rp(client, factory)
    request_uri = pushed_uri(rp)
    assert_error_page(authorize(rp, client_id=rp.client_id, request_uri=request_uri, scope="openid email"))


def test_par_same_outer_parameter_is_accepted(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    request_uri = pushed_uri(rp)
    response = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri, response_type="code",
                                      state="par-state"), identity.email)
    assert assert_code(rp, response)["state"] == "par-state"


@pytest.mark.parametrize("auth", ["none", "wrong_secret", "secret_of_another_client"])
def test_par_requires_client_authentication(client, factory, auth):
    rp = make_rp(client, factory)
    if auth == "none":
        response = push(rp, auth=False)
    else:
        secret = "wrong" if auth == "wrong_secret" else make_rp(client, factory).client_secret
        header = base64.b64encode(f"{rp.client_id}:{secret}".encode()).decode()
        response = client.post("/par", data=request_params(rp), headers={"Authorization": f"Basic {header}"})
    assert_json_error(response, "invalid_client", status=401)


def test_par_request_uri_in_body_is_refused(client, factory):
    rp = make_rp(client, factory)
    assert_json_error(push(rp, request_uri=URN + "abc"), "invalid_request")


@pytest.mark.parametrize("overrides, error", [
    ({"redirect_uri": "https://attacker.example/cb"}, "invalid_request"),
    ({"scope": "openid agreement"}, "invalid_scope"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"claims": "not json"}, "invalid_request"),
])
def test_par_invalid_request_is_json_400_never_a_redirect(client, factory, overrides, error):
    rp = make_rp(client, factory)
    assert_json_error(push(rp, **overrides), error)


def test_par_public_client_without_pkce_is_refused(client, factory):
    rp = make_rp(client, factory, public=True)
    assert_json_error(push(rp, code_challenge=None, code_challenge_method=None), "invalid_request")


def test_require_pushed_authorization_requests(client, factory, db):
    identity = factory.identity()
    rp = make_rp(client, factory)
    row = db.get(Client, rp.client_id)
    row.extra_metadata = {"require_pushed_authorization_requests": True}
    db.commit()
    response = complete(rp, rp.authorize(state="plain-state"), identity.email)
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 302:
        params = query(response.location)
        assert response.location.startswith(rp.redirect_uri + "?")
        assert params["error"] == "invalid_request" and params["state"] == "plain-state"
        assert "code" not in params
    # Pushed, the same client gets its code.
    request_uri = pushed_uri(rp)
    response = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri), identity.email)
    assert assert_code(rp, response)["state"] == "par-state"


def test_par_with_signed_request_object(client, factory, db, runtime):
    identity = factory.identity()
    key = RSAKey.generate_key(2048, parameters={"kid": "rp-par-1", "use": "sig"})
    row, secret = clients.create_client(
        db, client_name=unique("Client"), redirect_uris=["https://rp.example/cb"], client_id=unique("client"),
        scope="openid profile email offline_access", metadata={"jwks": {"keys": [key.as_dict(private=False)]}})
    rp = RP(client, row.client_id, secret, "https://rp.example/cb")
    verifier, challenge = pkce_pair()
    now = int(time.time())
    request_object = jose_jwt.encode({"alg": "RS256", "kid": "rp-par-1"}, {
        "iss": rp.client_id, "aud": "https://idp.test", "iat": now, "exp": now + 60,
        "client_id": rp.client_id, "response_type": "code", "redirect_uri": rp.redirect_uri,
        "scope": "openid profile", "state": "ro-state", "nonce": "ro-nonce",
        "code_challenge": challenge, "code_challenge_method": "S256"}, key)
    response = client.post("/par", data={"client_id": rp.client_id, "request": request_object}, headers=basic(rp))
    assert response.status_code == 201, response.get_data(as_text=True)
    request_uri = response.get_json()["request_uri"]
    final = complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri), identity.email)
    params = assert_code(rp, final)
    assert params["state"] == "ro-state"
    body = rp.token(params["code"], verifier=verifier).get_json()
    assert rp.verify_id_token(body["id_token"], nonce="ro-nonce")["name"] == "Test Person"


def test_par_with_request_object_signed_by_another_key_is_refused(client, factory, db):
    key = RSAKey.generate_key(2048, parameters={"kid": "rp-par-2"})
    attacker = RSAKey.generate_key(2048, parameters={"kid": "rp-par-2"})
    row, secret = clients.create_client(
        db, client_name=unique("Client"), redirect_uris=["https://rp.example/cb"], client_id=unique("client"),
        metadata={"jwks": {"keys": [key.as_dict(private=False)]}})
    rp = RP(client, row.client_id, secret, "https://rp.example/cb")
    _, challenge = pkce_pair()
    request_object = jose_jwt.encode({"alg": "RS256", "kid": "rp-par-2"}, {
        "client_id": rp.client_id, "response_type": "code", "redirect_uri": rp.redirect_uri, "scope": "openid",
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}, attacker)
    response = client.post("/par", data={"client_id": rp.client_id, "request": request_object}, headers=basic(rp))
    assert_json_error(response, "invalid_request_object")
