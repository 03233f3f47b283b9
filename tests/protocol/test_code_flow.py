"""oidcc-server and friends: the authorization code flow end to end over HTTP."""

from __future__ import annotations

import re
import time

import jwt as pyjwt

from tests.helpers.oidc import at_hash, make_rp


def test_oidcc_server_happy_path(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, state="s-123", nonce="n-456")
    assert result["state"] == "s-123"
    assert result["iss"] == "https://idp.test"
    # At least 256 random bits (RFC 6749 §10.10 asks for unguessable codes), in URL-safe characters.
    assert re.fullmatch(r"[A-Za-z0-9_-]{48}", result["code"])

    response = rp.token(result["code"])
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"].lower() == "bearer"
    assert "refresh_token" not in body  # no offline_access asked

    claims = rp.verify_id_token(body["id_token"], nonce="n-456")
    assert claims["sub"] == identity.id
    assert claims["azp"] == rp.client_id
    assert claims["at_hash"] == at_hash(body["access_token"])
    assert abs(claims["auth_time"] - time.time()) < 60
    assert claims["amr"] == ["pwd"]
    assert claims["acr"]
    assert claims["sid"]
    assert claims["email"] == identity.email


def test_access_token_is_rfc9068_jwt(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    body = rp.token(rp.sign_in(identity.email)["code"]).get_json()
    header = pyjwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    jwks = client.get("/jwks").get_json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = pyjwt.decode(body["access_token"], pyjwt.PyJWK(key).key, algorithms=["ES256"],
                          options={"verify_aud": False})
    assert claims["sub"] == identity.id
    assert claims["client_id"] == rp.client_id
    assert claims["iss"] == "https://idp.test"
    assert set(claims) >= {"exp", "iat", "jti", "aud", "scope"}


def test_userinfo_get_post_header_and_body(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    access_token = rp.token(rp.sign_in(identity.email)["code"]).get_json()["access_token"]
    auth = {"Authorization": f"Bearer {access_token}"}
    for response in (client.get("/userinfo", headers=auth), client.post("/userinfo", headers=auth),
                     client.post("/userinfo", data={"access_token": access_token})):
        assert response.status_code == 200, response.get_data(as_text=True)
        info = response.get_json()
        assert info["sub"] == identity.id
        assert info["email"] == identity.email
        assert info["given_name"] == "Test"


def test_userinfo_without_token_is_401_with_challenge(client):
    response = client.get("/userinfo")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_userinfo_with_garbage_token(client):
    response = client.get("/userinfo", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
