"""Introspection and revocation remember which access tokens' signatures they verified
(idp/oidc/endpoints.py ``VerifiedTokens``), and nothing else: revocation, expiry and the signing key's
publication still decide every answer."""

from __future__ import annotations

import pytest
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey, KeySet

from idp.oidc import endpoints
from idp.oidc import keys as keys_module
from tests.helpers.oidc import machine_client


@pytest.fixture
def machine(factory, db):
    return machine_client(factory, db)[1]


@pytest.fixture
def verifications(monkeypatch):
    """How often an access token's signature was checked."""
    calls = []
    original = joserfc_jwt.decode

    def counting(value, *args, **kwargs):
        calls.append(value)
        return original(value, *args, **kwargs)

    monkeypatch.setattr(endpoints.jwt, "decode", counting)
    return calls


def issue(client, machine) -> str:
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=machine)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def introspect(client, machine, token) -> dict:
    response = client.post("/introspect", data={"token": token}, headers=machine)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_token_introspected_again_is_not_verified_again(client, machine, verifications):
    token = issue(client, machine)
    first = introspect(client, machine, token)
    second = introspect(client, machine, token)
    assert first["active"] is True and second == first
    assert verifications.count(token) == 1


def test_a_revoked_token_is_inactive_although_its_signature_is_remembered(client, machine, verifications):
    token = issue(client, machine)
    assert introspect(client, machine, token)["active"] is True
    assert client.post("/revoke", data={"token": token}, headers=machine).status_code == 200
    assert introspect(client, machine, token) == {"active": False}
    assert verifications.count(token) == 1


def test_a_forged_signature_on_a_remembered_token_is_inactive(client, machine):
    token = issue(client, machine)
    assert introspect(client, machine, token)["active"] is True
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    assert introspect(client, machine, forged) == {"active": False}
    # Nor does a verified signature vouch for other claims.
    other = joserfc_jwt.encode({"alg": "ES256", "typ": "at+jwt"}, {"jti": "x"},
                               ECKey.generate_key("P-256", private=True))
    assert introspect(client, machine, f"{head}.{other.split('.')[1]}.{signature}") == {"active": False}


def test_a_token_whose_key_is_no_longer_published_is_inactive(client, runtime, machine, verifications):
    token = issue(client, machine)
    assert introspect(client, machine, token)["active"] is True
    # Three rotations retire the key that signed it; pruning unpublishes it.
    for _ in range(3):
        keys_module.rotate(runtime.settings.keys_dir)
    keys_module.prune(runtime.settings.keys_dir, max_token_ttl=-1)
    runtime.keys.refresh(force=True)
    assert introspect(client, machine, token) == {"active": False}
    assert verifications.count(token) == 2


def test_the_cache_is_bounded_and_hands_out_copies():
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "kid": "k"}, private=True)
    keys = KeySet([key])
    cache = endpoints.VerifiedTokens(size=2)
    tokens = [joserfc_jwt.encode({"alg": "ES256", "typ": "at+jwt"}, {"jti": str(i), "aud": ["a"]}, key)
              for i in range(3)]
    for token in tokens:
        header, claims = cache.decode(token, keys)
        assert header["typ"] == "at+jwt"
    assert list(cache._entries) == tokens[1:]
    header, claims = cache.decode(tokens[2], keys)
    claims["jti"] = "changed"
    assert cache.decode(tokens[2], keys)[1]["jti"] == "2"
    assert cache.decode("a.b.c", keys) is None
    assert list(cache._entries) == tokens[1:]
