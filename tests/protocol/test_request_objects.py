"""Request objects by value (RFC 9101; OIDC Core §6): oidcc-unsigned-request-object,
oidcc-ensure-request-object-with-redirect-uri and friends."""

from __future__ import annotations

import base64
import json
import secrets
import time
from urllib.parse import urlencode

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey

from idp.clients import service as clients
from tests.helpers.factories import unique
from tests.helpers.oidc import RP, pkce_pair, query
from tests.protocol.test_authorize_errors import assert_error_page, assert_redirect_error
from tests.protocol.test_par import assert_code, complete

ISSUER = "https://idp.test"
CB = "https://rp.example/cb"
# One RSA key pair for the whole module: generating keys is slow.
RP_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-ro-1", "use": "sig"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-ro-1", "use": "sig"})


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    return f"{b64({'alg': 'none'})}.{b64(claims)}."


def signed(claims: dict, key=RP_KEY, alg="RS256") -> str:
    return jose_jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


def new_rp(browser, db, metadata=None, redirect_uris=(CB,), jwks=True) -> RP:
    metadata = dict(metadata or {})
    if jwks:
        metadata.setdefault("jwks", {"keys": [RP_KEY.as_dict(private=False)]})
    row, secret = clients.create_client(
        db, client_name=unique("Client"), redirect_uris=list(redirect_uris), client_id=unique("client"),
        scope="openid profile email offline_access", metadata=metadata)
    return RP(browser, row.client_id, secret, redirect_uris[0])


def object_claims(rp: RP, **overrides) -> dict:
    rp.verifier, challenge = pkce_pair()
    claims = {"iss": rp.client_id, "aud": ISSUER, "client_id": rp.client_id, "response_type": "code",
              "redirect_uri": rp.redirect_uri, "scope": "openid profile", "state": "ro-state",
              "nonce": "ro-nonce", "code_challenge": challenge, "code_challenge_method": "S256",
              "iat": int(time.time()), "exp": int(time.time()) + 120, "jti": secrets.token_urlsafe(8)}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def authorize(rp: RP, request_object: str | None = None, method="GET", **outer):
    params = {"client_id": rp.client_id, "response_type": "code", "scope": "openid"}
    if request_object is not None:
        params["request"] = request_object
    params.update(outer)
    params = {k: v for k, v in params.items() if v is not None}
    if method == "POST":
        return rp.browser.post("/authorize", data=params)
    return rp.browser.get("/authorize?" + urlencode(params))


def test_oidcc_unsigned_request_object(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db, jwks=False)
    response = complete(rp, authorize(rp, unsigned(object_claims(rp))), identity.email)
    params = assert_code(rp, response)
    assert params["state"] == "ro-state"
    body = rp.token(params["code"]).get_json()
    claims = rp.verify_id_token(body["id_token"], nonce="ro-nonce")
    assert claims["sub"] == identity.id
    assert claims["name"] == "Test Person"  # scope "openid profile" came from the object, not the outer "openid"


def test_oidcc_unsigned_request_object_overrides_outer_state(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db, jwks=False)
    response = complete(rp, authorize(rp, unsigned(object_claims(rp)), state="outer-state", nonce="outer-nonce"),
                        identity.email)
    params = assert_code(rp, response)
    assert params["state"] == "ro-state"
    rp.verify_id_token(rp.token(params["code"]).get_json()["id_token"], nonce="ro-nonce")


def test_signed_request_object_rs256_with_registered_jwks(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db)
    response = complete(rp, authorize(rp, signed(object_claims(rp)), method="POST"), identity.email)
    params = assert_code(rp, response)
    assert params["state"] == "ro-state"
    rp.verify_id_token(rp.token(params["code"]).get_json()["id_token"], nonce="ro-nonce")


def test_signed_request_object_es256(client, factory, db):
    identity = factory.identity()
    key = ECKey.generate_key("P-256", parameters={"kid": "rp-ec-1"})
    rp = new_rp(client, db, metadata={"jwks": {"keys": [key.as_dict(private=False)]}})
    response = complete(rp, authorize(rp, signed(object_claims(rp), key, "ES256")), identity.email)
    assert assert_code(rp, response)["state"] == "ro-state"


def test_request_object_signed_by_another_key_is_redirected_with_state(client, db):
    rp = new_rp(client, db)
    response = authorize(rp, signed(object_claims(rp), OTHER_KEY), redirect_uri=CB, state="outer-state")
    assert_redirect_error(response, rp, "invalid_request_object", state="outer-state")


def test_request_object_signed_by_another_key_with_unverified_redirect_is_error_page(client, db):
    rp = new_rp(client, db)
    response = authorize(rp, signed(object_claims(rp, redirect_uri="https://attacker.example/cb"), OTHER_KEY),
                         redirect_uri="https://attacker.example/cb", state="outer-state")
    assert_error_page(response, "invalid_request_object")


def test_request_object_tampered_payload(client, db):
    rp = new_rp(client, db)
    header, _payload, signature = signed(object_claims(rp)).split(".")
    tampered = f"{header}.{b64(object_claims(rp, scope='openid profile email'))}.{signature}"
    assert_redirect_error(authorize(rp, tampered, redirect_uri=CB, state="outer-state"), rp,
                          "invalid_request_object", state="outer-state")


def test_signed_request_object_without_registered_keys(client, db):
    rp = new_rp(client, db, jwks=False)
    response = authorize(rp, signed(object_claims(rp)), redirect_uri=CB, state="outer-state")
    assert_redirect_error(response, rp, "invalid_request_object", state="outer-state")


def _assert_refused(response, rp, errors, state="outer-state"):
    """No code: an error page, or an error back to the verified redirect URI."""
    if response.status_code == 302:
        error = query(response.location).get("error")
        assert error in errors, response.location
        assert_redirect_error(response, rp, error, state=state)
    else:
        assert_error_page(response)
        assert any(f'id="oauth-error">{e}<' in response.get_data(as_text=True) for e in errors)


def test_require_signed_request_object_refuses_alg_none(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db, metadata={"require_signed_request_object": True})
    response = complete(rp, authorize(rp, unsigned(object_claims(rp)), redirect_uri=CB, state="outer-state"),
                        identity.email)
    _assert_refused(response, rp, ("invalid_request_object", "invalid_request"))
    # Signed, the same client is served.
    response = complete(rp, authorize(rp, signed(object_claims(rp))), identity.email)
    assert assert_code(rp, response)["state"] == "ro-state"


def test_require_signed_request_object_refuses_plain_request(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db, metadata={"require_signed_request_object": True})
    _, challenge = pkce_pair()
    response = complete(rp, authorize(rp, redirect_uri=CB, state="outer-state", code_challenge=challenge,
                                      code_challenge_method="S256"), identity.email)
    _assert_refused(response, rp, ("invalid_request",))


def test_request_object_client_id_mismatch(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db, jwks=False)
    other = new_rp(client, db, jwks=False)
    response = complete(rp, authorize(rp, unsigned(object_claims(rp, client_id=other.client_id)), redirect_uri=CB,
                                      state="outer-state"), identity.email)
    _assert_refused(response, rp, ("invalid_request", "invalid_request_object"))


def test_request_object_without_client_id(client, db):
    rp = new_rp(client, db, jwks=False)
    response = authorize(rp, unsigned(object_claims(rp, client_id=None)), redirect_uri=CB, state="outer-state")
    _assert_refused(response, rp, ("invalid_request_object", "invalid_request"))


@pytest.mark.parametrize("aud", ["https://evil.example", ["https://evil.example", "https://other.example"]])
def test_request_object_wrong_aud(client, db, aud):
    rp = new_rp(client, db)
    response = authorize(rp, signed(object_claims(rp, aud=aud)), redirect_uri=CB, state="outer-state")
    assert_redirect_error(response, rp, "invalid_request_object", state="outer-state")


def test_request_object_aud_list_with_issuer_is_accepted(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db)
    response = complete(rp, authorize(rp, signed(object_claims(rp, aud=[ISSUER, "https://other.example"]))),
                        identity.email)
    assert_code(rp, response)


def test_request_object_expired_is_refused(client, db):
    rp = new_rp(client, db)
    claims = object_claims(rp, iat=int(time.time()) - 3600, exp=int(time.time()) - 1800)
    response = authorize(rp, signed(claims), redirect_uri=CB, state="outer-state")
    assert_redirect_error(response, rp, "invalid_request_object", state="outer-state")


def test_request_object_oversized(client, db):
    rp = new_rp(client, db)
    claims = object_claims(rp, padding="x" * (33 * 1024))
    response = authorize(rp, signed(claims), method="POST", redirect_uri=CB, state="outer-state")
    assert_redirect_error(response, rp, "invalid_request_object", state="outer-state")


def test_request_object_just_under_the_limit_is_accepted(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db)
    claims = object_claims(rp, padding="x" * (20 * 1024))
    response = complete(rp, authorize(rp, signed(claims), method="POST"), identity.email)
    assert_code(rp, response)


def test_oidcc_ensure_request_object_with_redirect_uri(client, factory, db):
    identity = factory.identity()
    second = "https://rp.example/second"
    rp = new_rp(client, db, redirect_uris=(CB, second))
    rp.redirect_uri = second
    # redirect_uri only inside the object (the client has two, so there is no default).
    response = complete(rp, authorize(rp, signed(object_claims(rp, redirect_uri=second))), identity.email)
    params = assert_code(rp, response)
    assert response.location.startswith(second + "?")
    assert params["state"] == "ro-state"
    assert rp.token(params["code"], redirect_uri=second).status_code == 200


def test_request_object_with_unregistered_redirect_uri_is_error_page(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db)
    response = complete(rp, authorize(rp, signed(object_claims(rp, redirect_uri="https://attacker.example/cb"))),
                        identity.email)
    assert_error_page(response)


@pytest.mark.parametrize("request_uri", ["https://rp.example/request.jwt", "https://idp.test/par/abc"])
def test_request_uri_is_not_supported(client, db, request_uri):
    rp = new_rp(client, db)
    response = authorize(rp, request_uri=request_uri, redirect_uri=CB, state="outer-state")
    assert_redirect_error(response, rp, "request_uri_not_supported", state="outer-state")


def test_request_and_request_uri_together(client, db):
    rp = new_rp(client, db)
    response = authorize(rp, signed(object_claims(rp)), request_uri="https://rp.example/r.jwt", redirect_uri=CB,
                         state="outer-state")
    _assert_refused(response, rp, ("invalid_request",))


def test_request_object_containing_request_is_refused(client, db):
    rp = new_rp(client, db)
    response = authorize(rp, signed(object_claims(rp, request="nested")), redirect_uri=CB, state="outer-state")
    _assert_refused(response, rp, ("invalid_request", "invalid_request_object"))


def test_oidcc_claims_essential_in_request_object(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db)
    claims_request = {"id_token": {"name": {"essential": True}}, "userinfo": {"email": None}}
    response = complete(rp, authorize(rp, signed(object_claims(rp, scope="openid", claims=claims_request))),
                        identity.email)
    params = assert_code(rp, response)
    body = rp.token(params["code"]).get_json()
    id_claims = rp.verify_id_token(body["id_token"], nonce="ro-nonce")
    assert id_claims["name"] == "Test Person"
    assert "email" not in id_claims and "given_name" not in id_claims
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}).get_json()
    assert info["email"] == identity.email
    assert "name" not in info


def test_request_object_max_age_as_number(client, factory, db):
    identity = factory.identity()
    rp = new_rp(client, db)
    response = complete(rp, authorize(rp, signed(object_claims(rp, max_age=3600))), identity.email)
    params = assert_code(rp, response)
    assert "auth_time" in rp.verify_id_token(rp.token(params["code"]).get_json()["id_token"])
