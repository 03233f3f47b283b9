"""oidcc-discovery-endpoint-verification and the JWKS."""

from __future__ import annotations

from urllib.parse import urlsplit

import jwt as pyjwt
import pytest

ISSUER = "https://idp.test"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture
def config(client):
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _local(url):
    """Path of an IdP URL, for the test client."""
    assert url.startswith(ISSUER + "/"), url
    return urlsplit(url).path


def test_oidcc_discovery_endpoint_verification(config):
    assert config["issuer"] == ISSUER
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert config[name].startswith("https://"), (name, config[name])
        assert config[name].startswith(ISSUER + "/"), (name, config[name])
    assert config["response_types_supported"] == ["code"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["request_uri_parameter_supported"] is False
    assert config["authorization_response_iss_parameter_supported"] is True
    assert "openid" in config["scopes_supported"]
    assert "public" in config["subject_types_supported"] or "pairwise" in config["subject_types_supported"]
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    assert "none" not in config["id_token_signing_alg_values_supported"]
    assert set(config.get("grant_types_supported", ["authorization_code"])) >= {"authorization_code"}
    assert "implicit" not in config.get("grant_types_supported", [])
    assert config["claims_supported"] and "sub" in config["claims_supported"]
    assert "query" in config.get("response_modes_supported", ["query"])


def test_discovery_endpoints_exist(client, config):
    # Every advertised endpoint answers at the path it advertises (not 404).
    assert client.get(_local(config["jwks_uri"])).status_code == 200
    assert client.get(_local(config["userinfo_endpoint"])).status_code == 401
    assert client.post(_local(config["token_endpoint"])).status_code in (400, 401)
    assert client.get(_local(config["authorization_endpoint"])).status_code == 400


def test_oauth_authorization_server_metadata_matches(client, config):
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.get_json()["issuer"] == ISSUER


def test_jwks_keys_are_public_and_complete(client, config):
    response = client.get(_local(config["jwks_uri"]))
    assert response.status_code == 200
    keys = response.get_json()["keys"]
    assert keys
    kids = [k.get("kid") for k in keys]
    assert all(kids), keys
    assert len(set(kids)) == len(kids), "kid values must be unique"
    for key in keys:
        assert key["use"] == "sig", key
        assert key["alg"] in config["id_token_signing_alg_values_supported"] + ["ES256"], key
        leaked = PRIVATE_MEMBERS & set(key)
        assert not leaked, f"private members {leaked} in published key {key['kid']}"
        pyjwt.PyJWK(key)  # importable by an independent implementation
    algs = {k["alg"] for k in keys}
    assert "RS256" in algs


def test_id_token_kid_is_published(client, factory, config):
    from tests.helpers.oidc import make_rp

    identity = factory.identity()
    rp = make_rp(client, factory)
    body = rp.token(rp.sign_in(identity.email)["code"]).get_json()
    kid = pyjwt.get_unverified_header(body["id_token"])["kid"]
    keys = client.get(_local(config["jwks_uri"])).get_json()["keys"]
    assert kid in {k["kid"] for k in keys}
