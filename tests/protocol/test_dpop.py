"""OAuth 2.0 Demonstrating Proof of Possession (RFC 9449) at /token, /userinfo and /introspect.

Proofs are built here with joserfc's JWS layer (so every header member is under
the test's control); bound access tokens are checked with PyJWT and an RFC 7638
thumbprint computed by hand."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import jwt as pyjwt
import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey, RSAKey

from idp.app import create_app
from idp.clients.models import Client
from idp.oidc import dpop
from tests.helpers.oidc import make_rp
from tests.protocol.test_authorize_errors import assert_redirect_error
from tests.protocol.test_par import assert_code, assert_json_error, authorize, complete, request_params

ISSUER = "https://idp.test"
TOKEN_URL = f"{ISSUER}/token"
USERINFO_URL = f"{ISSUER}/userinfo"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public: dict) -> str:
    """RFC 7638, by hand: the required members in lexicographic order, no whitespace."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[public["kty"]]
    canonical = json.dumps({k: public[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def ath(access_token: str) -> str:
    return b64url(hashlib.sha256(access_token.encode()).digest())


class Holder:
    """A DPoP key pair and the proofs it signs."""

    def __init__(self, key=None, alg="ES256"):
        self.key = key or ECKey.generate_key("P-256")
        self.alg = alg

    @property
    def public(self) -> dict:
        return {k: v for k, v in self.key.as_dict(private=False).items() if k in ("kty", "crv", "x", "y", "n", "e")}

    @property
    def jkt(self) -> str:
        return thumbprint(self.public)

    def proof(self, method="POST", url=TOKEN_URL, *, access_token=None, nonce=None, iat=None, jti=None,
              typ="dpop+jwt", alg=None, jwk=None, drop=(), key=None) -> str:
        header = {"typ": typ, "alg": alg or self.alg, "jwk": jwk if jwk is not None else self.public}
        claims = {"htm": method, "htu": url, "iat": int(time.time()) if iat is None else iat,
                  "jti": jti or secrets.token_urlsafe(16)}
        if access_token is not None:
            claims["ath"] = ath(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        header = {k: v for k, v in header.items() if k not in drop and v is not None}
        claims = {k: v for k, v in claims.items() if k not in drop}
        return jws.serialize_compact(header, json.dumps(claims).encode(), key or self.key,
                                     algorithms=[header["alg"]])


def unsigned_proof(holder: Holder) -> str:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": holder.public}
    claims = {"htm": "POST", "htu": TOKEN_URL, "iat": int(time.time()), "jti": secrets.token_urlsafe(16)}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def basic(client_id, secret) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def access_claims(browser, access_token) -> dict:
    header = pyjwt.get_unverified_header(access_token)
    key = next(k for k in browser.get("/jwks").get_json()["keys"] if k["kid"] == header["kid"])
    return pyjwt.decode(access_token, pyjwt.PyJWK(key).key, algorithms=["ES256"], options={"verify_aud": False})


@pytest.fixture
def machine(factory, db):
    """A confidential client_credentials client: proofs at /token without a browser."""
    client, secret = factory.client()
    row = db.get(Client, client.client_id)
    row.grant_types = ["client_credentials"]
    db.commit()
    return client.client_id, secret


def cc_token(browser, machine, proof=None, proofs=None):
    headers = basic(*machine)
    if proofs is not None:
        headers = list(headers.items()) + [("DPoP", p) for p in proofs]
    elif proof is not None:
        headers["DPoP"] = proof
    return browser.post("/token", data={"grant_type": "client_credentials", "scope": "profile"}, headers=headers)


def code_token(rp, code, proof=None):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": rp.verifier}
    headers = {"DPoP": proof} if proof else {}
    if rp.client_secret is None:
        data["client_id"] = rp.client_id
    else:
        headers.update(basic(rp.client_id, rp.client_secret))
    return rp.browser.post("/token", data=data, headers=headers)


def refresh(rp, refresh_token, proof=None):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    headers = {"DPoP": proof} if proof else {}
    if rp.client_secret is None:
        data["client_id"] = rp.client_id
    else:
        headers.update(basic(rp.client_id, rp.client_secret))
    return rp.browser.post("/token", data=data, headers=headers)


def dpop_tokens(client, factory, holder, public=False, scope="openid profile email offline_access"):
    identity = factory.identity()
    rp = make_rp(client, factory, public=public)
    code = rp.sign_in(identity.email, scope=scope)["code"]
    response = code_token(rp, code, holder.proof())
    assert response.status_code == 200, response.get_data(as_text=True)
    return rp, identity, response


def assert_invalid_proof(response, status=400):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == "invalid_dpop_proof", body
    assert "access_token" not in body


# -- binding at the token endpoint ---------------------------------------------

def test_dpop_proof_binds_the_access_token(client, factory):
    holder = Holder()
    rp, identity, response = dpop_tokens(client, factory, holder)
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    assert response.headers.get("DPoP-Nonce")
    claims = access_claims(client, body["access_token"])
    assert claims["cnf"] == {"jkt": holder.jkt}
    assert claims["sub"] == identity.id
    # The ID token is not bound: it is no access credential.
    assert "cnf" not in rp.verify_id_token(body["id_token"])


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_dpop_with_rsa_key(client, machine, alg):
    """RS256 and PS256 are in dpop_signing_alg_values_supported; a 2048-bit RSA key is the usual size."""
    holder = Holder(RSAKey.generate_key(2048), alg=alg)
    response = cc_token(client, machine, holder.proof())
    assert response.status_code == 200, response.get_json()
    assert access_claims(client, response.get_json()["access_token"])["cnf"]["jkt"] == holder.jkt


def test_without_proof_the_token_is_bearer(client, machine):
    body = cc_token(client, machine).get_json()
    assert body["token_type"].lower() == "bearer"
    assert "cnf" not in access_claims(client, body["access_token"])


def test_userinfo_with_dpop_scheme_and_ath(client, factory):
    holder = Holder()
    _rp, identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    for method in ("GET", "POST"):
        info = client.open("/userinfo", method=method, headers={
            "Authorization": f"DPoP {token}", "DPoP": holder.proof(method, USERINFO_URL, access_token=token)})
        assert info.status_code == 200, info.get_data(as_text=True)
        assert info.get_json()["sub"] == identity.id


def test_bound_token_as_bearer_is_refused(client, factory):
    holder = Holder()
    _rp, _identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert info.status_code == 401
    # And with the proof alongside, still not as Bearer.
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {token}",
                                            "DPoP": holder.proof("GET", USERINFO_URL, access_token=token)})
    assert info.status_code == 401


def test_dpop_scheme_without_proof_is_refused(client, factory):
    holder = Holder()
    _rp, _identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    info = client.get("/userinfo", headers={"Authorization": f"DPoP {token}"})
    assert info.status_code == 401
    assert info.headers["WWW-Authenticate"].startswith("DPoP")


def test_dpop_scheme_with_unbound_token_is_refused(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    token = rp.token(rp.sign_in(identity.email)["code"]).get_json()["access_token"]
    holder = Holder()
    info = client.get("/userinfo", headers={"Authorization": f"DPoP {token}",
                                            "DPoP": holder.proof("GET", USERINFO_URL, access_token=token)})
    assert info.status_code == 401
    assert info.headers["WWW-Authenticate"].startswith("DPoP")


# -- invalid proofs at the token endpoint ---------------------------------------

def _bad_proofs():
    now = int(time.time())
    return {
        "wrong_htm": lambda h: h.proof(method="GET"),
        "wrong_htu": lambda h: h.proof(url=USERINFO_URL),
        "other_origin_htu": lambda h: h.proof(url="https://evil.example/token"),
        "stale_iat": lambda h: h.proof(iat=now - 600),
        "future_iat": lambda h: h.proof(iat=now + 600),
        "missing_typ": lambda h: h.proof(drop=("typ",)),
        "jwt_typ": lambda h: h.proof(typ="JWT"),
        "missing_jti": lambda h: h.proof(drop=("jti",)),
        "missing_iat": lambda h: h.proof(drop=("iat",)),
        "missing_jwk": lambda h: h.proof(drop=("jwk",)),
        "private_jwk": lambda h: h.proof(jwk=h.key.as_dict(private=True)),
        "jwk_of_other_key": lambda h: h.proof(jwk=Holder().public),
        "alg_none": unsigned_proof,
        "hs256": lambda h: h.proof(alg="HS256", jwk={"kty": "oct", "k": b64url(b"s" * 32)},
                                   key=OctKey.import_key(b"s" * 32)),
        "hs256_with_ec_jwk": lambda h: h.proof(alg="HS256", key=OctKey.import_key(b"s" * 32)),
        "not_a_jwt": lambda h: "not-a-jwt",
    }


@pytest.mark.parametrize("case", sorted(_bad_proofs()))
def test_invalid_dpop_proof_at_token_endpoint(client, machine, case):
    proof = _bad_proofs()[case](Holder())
    assert_invalid_proof(cc_token(client, machine, proof))


def test_replayed_proof_is_refused(client, machine):
    holder = Holder()
    proof = holder.proof()
    assert cc_token(client, machine, proof).status_code == 200
    assert_invalid_proof(cc_token(client, machine, proof))


def test_two_proofs_are_refused(client, machine):
    holder = Holder()
    assert_invalid_proof(cc_token(client, machine, proofs=[holder.proof(), holder.proof()]))


def test_invalid_proof_does_not_spend_the_code(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    code = rp.sign_in(identity.email)["code"]
    holder = Holder()
    assert_invalid_proof(code_token(rp, code, holder.proof(method="GET")))
    response = code_token(rp, code, holder.proof())
    assert response.status_code == 200 and response.get_json()["token_type"] == "DPoP"


# -- at the resource (UserInfo) --------------------------------------------------

def _challenge(response, error):
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("DPoP"), challenge
    assert f'error="{error}"' in challenge, challenge


def test_wrong_ath_is_a_dpop_challenge(client, factory):
    holder = Holder()
    _rp, _identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    info = client.get("/userinfo", headers={"Authorization": f"DPoP {token}",
                                            "DPoP": holder.proof("GET", USERINFO_URL, access_token=token + "x")})
    _challenge(info, "invalid_dpop_proof")
    info = client.get("/userinfo", headers={"Authorization": f"DPoP {token}",
                                            "DPoP": holder.proof("GET", USERINFO_URL)})  # no ath at all
    _challenge(info, "invalid_dpop_proof")


def test_proof_by_another_key_at_userinfo(client, factory):
    holder = Holder()
    _rp, _identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    info = client.get("/userinfo", headers={"Authorization": f"DPoP {token}",
                                            "DPoP": Holder().proof("GET", USERINFO_URL, access_token=token)})
    _challenge(info, "invalid_dpop_proof")


def test_token_endpoint_proof_is_not_accepted_at_userinfo(client, factory):
    holder = Holder()
    _rp, _identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    info = client.get("/userinfo", headers={"Authorization": f"DPoP {token}",
                                            "DPoP": holder.proof("POST", TOKEN_URL, access_token=token)})
    _challenge(info, "invalid_dpop_proof")


def test_replayed_proof_at_userinfo(client, factory):
    holder = Holder()
    _rp, _identity, response = dpop_tokens(client, factory, holder)
    token = response.get_json()["access_token"]
    headers = {"Authorization": f"DPoP {token}", "DPoP": holder.proof("GET", USERINFO_URL, access_token=token)}
    assert client.get("/userinfo", headers=headers).status_code == 200
    _challenge(client.get("/userinfo", headers=headers), "invalid_dpop_proof")


# -- refresh tokens ---------------------------------------------------------------

def test_public_client_refresh_token_is_bound_to_the_key(client, factory):
    holder = Holder()
    rp, _identity, response = dpop_tokens(client, factory, holder, public=True)
    refresh_token = response.get_json()["refresh_token"]
    # §5: "Refresh tokens issued to public clients MUST be bound".
    other = refresh(rp, refresh_token, Holder().proof())
    assert other.status_code == 400 and other.get_json()["error"] == "invalid_grant", other.get_json()
    bare = refresh(rp, refresh_token)
    assert bare.status_code == 400 and bare.get_json()["error"] == "invalid_grant", bare.get_json()
    # The rightful holder still refreshes (the attempts above did not burn the token).
    ok = refresh(rp, refresh_token, holder.proof())
    assert ok.status_code == 200, ok.get_json()
    body = ok.get_json()
    assert body["token_type"] == "DPoP"
    assert access_claims(client, body["access_token"])["cnf"]["jkt"] == holder.jkt
    # The rotated refresh token stays bound.
    again = refresh(rp, body["refresh_token"], Holder().proof())
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"


def test_confidential_client_refresh_token_is_not_bound(client, factory):
    holder = Holder()
    rp, _identity, response = dpop_tokens(client, factory, holder)
    refresh_token = response.get_json()["refresh_token"]
    plain = refresh(rp, refresh_token)
    assert plain.status_code == 200, plain.get_json()
    assert plain.get_json()["token_type"].lower() == "bearer"
    assert "cnf" not in access_claims(client, plain.get_json()["access_token"])
    other = Holder()
    rebound = refresh(rp, plain.get_json()["refresh_token"], other.proof())
    assert rebound.status_code == 200, rebound.get_json()
    assert access_claims(client, rebound.get_json()["access_token"])["cnf"]["jkt"] == other.jkt


# -- client metadata ----------------------------------------------------------------

def test_dpop_bound_access_tokens_client_requires_a_proof(client, machine, db):
    row = db.get(Client, machine[0])
    row.extra_metadata = {"dpop_bound_access_tokens": True}
    db.commit()
    assert_invalid_proof(cc_token(client, machine))
    holder = Holder()
    response = cc_token(client, machine, holder.proof())
    assert response.status_code == 200 and response.get_json()["token_type"] == "DPoP"


# -- nonces -------------------------------------------------------------------------

def test_wrong_nonce_is_use_dpop_nonce(client, machine):
    holder = Holder()
    response = cc_token(client, machine, holder.proof(nonce="not-our-nonce"))
    assert response.status_code == 400
    assert response.get_json()["error"] == "use_dpop_nonce"
    nonce = response.headers.get("DPoP-Nonce")
    assert nonce
    retried = cc_token(client, machine, holder.proof(nonce=nonce))
    assert retried.status_code == 200, retried.get_json()


def test_nonce_from_a_token_response_is_accepted(client, machine):
    holder = Holder()
    first = cc_token(client, machine, holder.proof())
    nonce = first.headers["DPoP-Nonce"]
    assert cc_token(client, machine, holder.proof(nonce=nonce)).status_code == 200


@pytest.fixture
def nonce_app(settings):
    application = create_app(settings.with_(dpop_require_nonce=True))
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


def test_server_required_nonce(nonce_app, machine):
    browser = nonce_app.test_client()
    holder = Holder()
    response = cc_token(browser, machine, holder.proof())
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "use_dpop_nonce"
    nonce = response.headers.get("DPoP-Nonce")
    assert nonce
    retried = cc_token(browser, machine, holder.proof(nonce=nonce))
    assert retried.status_code == 200, retried.get_json()
    assert retried.get_json()["token_type"] == "DPoP"
    # A token request without DPoP at all is not affected by the nonce requirement.
    assert cc_token(browser, machine).status_code == 200


# -- introspection ---------------------------------------------------------------------

def test_introspection_of_a_dpop_token(client, machine):
    holder = Holder()
    token = cc_token(client, machine, holder.proof()).get_json()["access_token"]
    body = client.post("/introspect", data={"token": token}, headers=basic(*machine)).get_json()
    assert body["active"] is True
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": holder.jkt}


# -- authorization code binding (§10, §10.1) -------------------------------------------

PAR_URL = f"{ISSUER}/par"


def assert_invalid_grant(response):
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == "invalid_grant", body
    assert "access_token" not in body


def bound_code(client, factory, jkt, public=False):
    identity = factory.identity()
    rp = make_rp(client, factory, public=public)
    return rp, rp.sign_in(identity.email, dpop_jkt=jkt)["code"]


@pytest.mark.parametrize("public", [False, True], ids=["confidential", "public"])
def test_dpop_jkt_binds_the_code_to_the_key(client, factory, public):
    holder = Holder()
    rp, code = bound_code(client, factory, holder.jkt, public=public)
    response = code_token(rp, code, holder.proof())
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    assert access_claims(client, body["access_token"])["cnf"] == {"jkt": holder.jkt}


def test_bound_code_with_a_proof_by_another_key_is_refused_and_spent(client, factory):
    holder, thief = Holder(), Holder()
    rp, code = bound_code(client, factory, holder.jkt)
    assert_invalid_grant(code_token(rp, code, thief.proof()))
    # The code is spent, as by a wrong code_verifier: the refusal is not a free try for whoever holds it.
    assert_invalid_grant(code_token(rp, code, holder.proof()))


def test_bound_code_without_a_proof_is_refused(client, factory):
    holder = Holder()
    rp, code = bound_code(client, factory, holder.jkt)
    assert_invalid_grant(code_token(rp, code))


def test_unbound_code_is_redeemed_as_before(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    code = rp.sign_in(identity.email)["code"]
    response = code_token(rp, code)
    assert response.status_code == 200 and response.get_json()["token_type"] == "Bearer"


@pytest.mark.parametrize("value", [
    "short",
    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs=",  # padded
    "NzbLsXh8uDCcd+6MNwXF4W/7noWXFZAfHkxZsRGC9Xs",  # base64, not base64url
    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xt",  # 43 characters but not 32 bytes
    "x" * 200,
])
def test_malformed_dpop_jkt_is_invalid_request_at_the_client(client, factory, value):
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(state="st-1", dpop_jkt=value))
    if response.status_code == 302 and "/login" in response.location:
        response = rp.follow(rp.login(response, identity.email))
    params = assert_redirect_error(response, rp, "invalid_request")
    assert "dpop_jkt" in params["error_description"]


def test_rfc_example_thumbprint_is_accepted():
    # RFC 9449 §10's example value, and the one a key's thumbprint computed by hand gives.
    assert dpop.is_thumbprint("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    assert dpop.is_thumbprint(Holder().jkt)
    assert not dpop.is_thumbprint(None) and not dpop.is_thumbprint(["NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"])


def par_push(rp, proof=None, **overrides):
    headers = basic(rp.client_id, rp.client_secret)
    if proof is not None:
        headers["DPoP"] = proof
    return rp.browser.post("/par", data=request_params(rp, **overrides), headers=headers)


def par_code(rp, identity, response):
    assert response.status_code == 201, (response.status_code, response.get_data(as_text=True))
    request_uri = response.get_json()["request_uri"]
    return assert_code(rp, complete(rp, authorize(rp, client_id=rp.client_id, request_uri=request_uri),
                                    identity.email))["code"]


def test_dpop_proof_at_par_binds_the_code(client, factory):
    holder = Holder()
    identity = factory.identity()
    rp = make_rp(client, factory)
    pushed = par_push(rp, holder.proof(url=PAR_URL))
    assert pushed.headers.get("DPoP-Nonce")
    code = par_code(rp, identity, pushed)
    assert_invalid_grant(code_token(rp, code))  # §10.1: "reject the subsequent token request unless ..."

    code = par_code(rp, identity, par_push(rp, holder.proof(url=PAR_URL)))
    response = code_token(rp, code, holder.proof())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert access_claims(client, response.get_json()["access_token"])["cnf"] == {"jkt": holder.jkt}


def test_dpop_jkt_in_the_pushed_request_binds_the_code(client, factory):
    holder, other = Holder(), Holder()
    identity = factory.identity()
    rp = make_rp(client, factory)
    code = par_code(rp, identity, par_push(rp, dpop_jkt=holder.jkt))
    assert_invalid_grant(code_token(rp, code, other.proof()))
    code = par_code(rp, identity, par_push(rp, dpop_jkt=holder.jkt))
    assert code_token(rp, code, holder.proof()).status_code == 200


def test_par_proof_and_dpop_jkt_for_the_same_key(client, factory):
    holder = Holder()
    identity = factory.identity()
    rp = make_rp(client, factory)
    code = par_code(rp, identity, par_push(rp, holder.proof(url=PAR_URL), dpop_jkt=holder.jkt))
    assert code_token(rp, code, holder.proof()).status_code == 200


def test_par_proof_and_dpop_jkt_for_different_keys_are_refused(client, factory):
    holder, other = Holder(), Holder()
    rp = make_rp(client, factory)
    body = assert_json_error(par_push(rp, holder.proof(url=PAR_URL), dpop_jkt=other.jkt), "invalid_request")
    assert "dpop_jkt" in body["error_description"]


@pytest.mark.parametrize("case", ["token_url", "get", "unsigned", "replayed"])
def test_invalid_proof_at_par_is_refused(client, factory, case):
    holder = Holder()
    rp = make_rp(client, factory)
    proof = {"token_url": lambda: holder.proof(),  # htu of another endpoint
             "get": lambda: holder.proof(method="GET", url=PAR_URL),
             "unsigned": lambda: unsigned_proof(holder),
             "replayed": lambda: holder.proof(url=PAR_URL, jti="par-replay")}[case]()
    if case == "replayed":
        assert par_push(rp, proof).status_code == 201
    assert_json_error(par_push(rp, proof), "invalid_dpop_proof")


def test_par_with_server_required_nonce(nonce_app, factory):
    holder = Holder()
    rp = make_rp(nonce_app.test_client(), factory)
    response = par_push(rp, holder.proof(url=PAR_URL))
    assert response.status_code == 400 and response.get_json()["error"] == "use_dpop_nonce"
    nonce = response.headers["DPoP-Nonce"]
    assert par_push(rp, holder.proof(url=PAR_URL, nonce=nonce)).status_code == 201
