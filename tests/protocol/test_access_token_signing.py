"""Access tokens as resource servers verify them (idp/oidc/tokens.py ``CompactSigner``): a standard ES256 JWS
that an independent library (PyJWT) verifies against the published JWKS, signed by the active key also after a
rotation, with any claim text intact."""

from __future__ import annotations

import base64

import jwt as pyjwt
import pytest
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey, KeySet

from idp.oidc import keys as keys_module
from idp.oidc.tokens import CompactSigner
from tests.helpers.oidc import machine_client


@pytest.fixture
def machine(factory, db):
    return machine_client(factory, db)


def issue(client, machine) -> str:
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine[1])
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def verify(client, token: str) -> dict:
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    key = next(k for k in client.get("/jwks").get_json()["keys"] if k["kid"] == header["kid"])
    return pyjwt.decode(token, pyjwt.PyJWK(key).key, algorithms=["ES256"], audience="https://idp.test")


def test_a_rotation_moves_signing_to_the_new_key(client, runtime, machine):
    before = issue(client, machine)
    assert verify(client, before)["sub"] == machine[0]
    # Two rotations: the key published as "next" by the first becomes the one that signs.
    keys_module.rotate(runtime.settings.keys_dir)
    keys_module.rotate(runtime.settings.keys_dir)
    runtime.keys.refresh(force=True)
    after = issue(client, machine)
    assert pyjwt.get_unverified_header(after)["kid"] != pyjwt.get_unverified_header(before)["kid"]
    assert verify(client, after)["client_id"] == machine[0]
    # The token signed before the rotation still verifies: its key stays published until it expires.
    assert verify(client, before)["sub"] == machine[0]


def test_signatures_are_rfc7518_and_claims_keep_their_text():
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "kid": "k1"}, private=True)
    signer = CompactSigner(KeySet([key]), "at+jwt")
    claims = {"sub": "x", "agreement_name": "Bogføring & Løn ApS", "amr": ["pwd", "otp"], "exp": 4102444800}
    token = signer.sign(claims)
    signature = token.rsplit(".", 1)[1]
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64  # r || s, not DER
    decoded = joserfc_jwt.decode(token, key, algorithms=["ES256"])
    assert decoded.claims == claims
    assert decoded.header == {"typ": "at+jwt", "alg": "ES256", "kid": "k1"}
    public = pyjwt.PyJWK(key.as_dict(private=False)).key
    assert pyjwt.decode(token, public, algorithms=["ES256"])["agreement_name"] == "Bogføring & Løn ApS"

