"""ID tokens as RPs verify them, signed by ``tokens.CompactSigner`` (idp/oidc/grant_types.py
``IdTokenMixin.encode_id_token``): the same header and claims, in the same order, as Authlib's own
``encode_id_token`` through joserfc writes, for both algorithms a client may register, from a code exchange
and from a refresh; and verified by an independent library (PyJWT) against the published JWKS."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc.jwk import ECKey, KeySet, RSAKey

from idp.clients.models import Client
from idp.oidc import grant_types
from idp.oidc import keys as keys_module
from idp.oidc.tokens import CompactSigner
from tests.helpers.oidc import at_hash, make_rp

#: Claims that differ between two sign-ins of the same person by nature: times, the token they hash, the nonce.
VARYING = {"iat", "exp", "auth_time", "at_hash", "nonce", "sid"}


def segment(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def issue(rp, person, db, alg):
    """A code exchange and a refresh for ``person``: both ID tokens, verified."""
    db.get(Client, rp.client_id).id_token_signed_response_alg = alg
    db.commit()
    callback = rp.sign_in(person.email, scope="openid profile email offline_access", nonce="n-0S6_WzA2Mj")
    response = rp.token(callback["code"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    claims = rp.verify_id_token(body["id_token"], nonce="n-0S6_WzA2Mj", alg=alg)
    assert claims["at_hash"] == at_hash(body["access_token"])  # SHA-256 for both algorithms
    refreshed = rp.refresh(body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    rp.verify_id_token(refreshed.get_json()["id_token"], alg=alg)
    return body["id_token"], refreshed.get_json()["id_token"]


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_id_tokens_are_what_authlib_would_sign(client, factory, db, runtime, monkeypatch, alg):
    person = factory.identity()
    rp = make_rp(client, factory)
    ours = issue(rp, person, db, alg)
    # The same exchange through Authlib's encode_id_token and joserfc.
    monkeypatch.setattr(grant_types, "COMPACT_ALGORITHMS", frozenset())
    theirs = issue(rp, person, db, alg)
    for mine, reference in zip(ours, theirs):
        assert segment(mine, 0) == segment(reference, 0)
        assert list(segment(mine, 0)) == ["typ", "alg", "kid"]
        mine_claims, reference_claims = segment(mine, 1), segment(reference, 1)
        assert list(mine_claims) == list(reference_claims)
        assert {k: v for k, v in mine_claims.items() if k not in VARYING} == {
            k: v for k, v in reference_claims.items() if k not in VARYING}
    signing_kid = runtime.keys.signing_key(alg).kid
    assert segment(ours[0], 0) == {"typ": "JWT", "alg": alg, "kid": signing_kid}


def test_a_rotation_moves_id_token_signing_to_the_new_key(client, factory, db, runtime):
    person = factory.identity()
    rp = make_rp(client, factory)
    before, _ = issue(rp, person, db, "RS256")
    keys_module.rotate(runtime.settings.keys_dir)
    keys_module.rotate(runtime.settings.keys_dir)
    runtime.keys.refresh(force=True)
    after, _ = issue(rp, person, db, "RS256")
    assert segment(after, 0)["kid"] != segment(before, 0)["kid"]
    assert segment(after, 0)["kid"] == runtime.keys.signing_key("RS256").kid


def test_the_signer_takes_rs256_and_p256_keys_only():
    for alg in ("RS256", "ES256"):
        CompactSigner(KeySet([keys_module._generate(alg, "active").key]), "JWT")
    with pytest.raises(ValueError):
        CompactSigner(KeySet([ECKey.generate_key("P-384", parameters={"alg": "ES384"}, private=True)]), "JWT")
    with pytest.raises(ValueError):
        public = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, private=True).as_dict(private=False)
        CompactSigner(KeySet([RSAKey.import_key(public)]), "JWT")
