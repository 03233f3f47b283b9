"""client_credentials (RFC 6749 §4.4) with resource indicators (RFC 8707) setting the audience."""

from __future__ import annotations

import base64

import jwt as pyjwt
import pytest

from idp.clients.models import Client

API = "https://api.accounting.example"


@pytest.fixture
def machine(factory, db):
    client, secret = factory.client()
    row = db.get(Client, client.client_id)
    row.grant_types = ["client_credentials"]
    row.extra_metadata = {"resources": [API]}
    db.commit()
    return client.client_id, secret


def token(browser, machine, **data):
    client_id, secret = machine
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return browser.post("/token", data={"grant_type": "client_credentials", **data},
                        headers={"Authorization": f"Basic {basic}"})


def claims_of(browser, access_token):
    header = pyjwt.get_unverified_header(access_token)
    key = next(k for k in browser.get("/jwks").get_json()["keys"] if k["kid"] == header["kid"])
    return pyjwt.decode(access_token, pyjwt.PyJWK(key).key, algorithms=["ES256"], options={"verify_aud": False})


def test_client_credentials_token_is_for_the_client(client, machine):
    response = token(client, machine, scope="profile")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert "refresh_token" not in body
    claims = claims_of(client, body["access_token"])
    assert claims["sub"] == machine[0] and claims["client_id"] == machine[0]
    assert claims["aud"] == "https://idp.test"


def test_resource_sets_the_audience(client, machine):
    body = token(client, machine, resource=API).get_json()
    assert claims_of(client, body["access_token"])["aud"] == API


def test_unregistered_resource_is_invalid_target(client, machine):
    response = token(client, machine, resource="https://payroll.example")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_target"


@pytest.mark.parametrize("resource", ["relative/path", "https://api.accounting.example#frag", "urn"])
def test_malformed_resource_is_invalid_target(client, machine, resource):
    response = token(client, machine, resource=resource)
    assert response.get_json()["error"] == "invalid_target"


def test_client_without_the_grant_is_unauthorized_client(client, factory):
    rp, secret = factory.client()
    response = token(client, (rp.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "unauthorized_client"


def test_client_credentials_token_can_be_introspected_and_revoked(client, machine):
    access = token(client, machine, resource=API).get_json()["access_token"]
    client_id, secret = machine
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    active = client.post("/introspect", data={"token": access}, headers=basic).get_json()
    assert active["active"] is True and active["aud"] == API and active["client_id"] == client_id
    assert client.post("/revoke", data={"token": access}, headers=basic).status_code == 200
    assert client.post("/introspect", data={"token": access}, headers=basic).get_json() == {"active": False}
