"""Token revocation (RFC 7009) at /revoke and introspection (RFC 7662) at /introspect."""

from __future__ import annotations

import base64
import time

import pytest

from idp.app import create_app
from idp.clients.models import Client
from tests.helpers.oidc import make_rp

ISSUER = "https://idp.test"


def basic(rp) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()}


def revoke(rp, token, hint=None, browser=None):
    data = {"token": token, **({"token_type_hint": hint} if hint else {})}
    if rp.client_secret is None:
        return (browser or rp.browser).post("/revoke", data={**data, "client_id": rp.client_id})
    return (browser or rp.browser).post("/revoke", data=data, headers=basic(rp))


def introspect(rp, token, hint=None, browser=None):
    data = {"token": token, **({"token_type_hint": hint} if hint else {})}
    response = (browser or rp.browser).post("/introspect", data=data, headers=basic(rp))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def userinfo_status(browser, token) -> int:
    return browser.get("/userinfo", headers={"Authorization": f"Bearer {token}"}).status_code


def issued(rp, identity, scope="openid profile email offline_access"):
    response = rp.token(rp.sign_in(identity.email, scope=scope)["code"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def person(factory):
    return factory.identity()


@pytest.fixture
def rp(client, factory):
    return make_rp(client, factory)


# -- revocation -------------------------------------------------------------------

@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_revoking_the_refresh_token_revokes_the_family(client, rp, person, hint):
    body = issued(rp, person)
    assert introspect(rp, body["access_token"])["active"] is True
    response = revoke(rp, body["refresh_token"], hint)
    assert response.status_code == 200, response.get_data(as_text=True)
    # RFC 7009 §2.1: the access tokens of the same grant go too.
    assert introspect(rp, body["access_token"]) == {"active": False}
    assert introspect(rp, body["refresh_token"]) == {"active": False}
    assert userinfo_status(client, body["access_token"]) == 401
    refreshed = rp.refresh(body["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"


def test_revoking_a_rotated_family_revokes_the_newest_tokens(client, rp, person):
    body = issued(rp, person)
    newer = rp.refresh(body["refresh_token"]).get_json()
    assert revoke(rp, newer["refresh_token"]).status_code == 200
    assert introspect(rp, newer["access_token"]) == {"active": False}
    assert introspect(rp, body["access_token"]) == {"active": False}


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
def test_revoking_the_access_token_only(client, rp, person, hint):
    body = issued(rp, person)
    response = revoke(rp, body["access_token"], hint)
    assert response.status_code == 200
    assert introspect(rp, body["access_token"]) == {"active": False}
    assert userinfo_status(client, body["access_token"]) == 401
    # The refresh token (and so the grant) lives on.
    assert introspect(rp, body["refresh_token"])["active"] is True
    refreshed = rp.refresh(body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    assert userinfo_status(client, refreshed.get_json()["access_token"]) == 200


def test_unsupported_token_type_hint_at_revocation(client, rp, person):
    """RFC 7009 §2.2.1: unsupported_token_type, with status 400 (RFC 6749 §5.2)."""
    body = issued(rp, person)
    response = revoke(rp, body["access_token"], hint="id_token")
    assert response.get_json()["error"] == "unsupported_token_type"
    assert response.status_code == 400
    assert introspect(rp, body["access_token"])["active"] is True


def test_unsupported_token_type_hint_at_introspection(client, rp, person):
    """RFC 7662 §2.1: the server MAY ignore the hint; either way the client's
    credentials were fine, so the answer is not 401 (§2.3 reserves it for them)."""
    body = issued(rp, person)
    response = client.post("/introspect", data={"token": body["access_token"], "token_type_hint": "id_token"},
                           headers=basic(rp))
    assert response.status_code in (200, 400), (response.status_code, response.get_json())
    if response.status_code == 200:
        assert response.get_json()["active"] is True
    else:
        assert response.get_json()["error"] == "unsupported_token_type"


@pytest.mark.parametrize("token", ["unknown-token", "a.b.c", "x" * 600])
def test_unknown_token(client, rp, token):
    response = revoke(rp, token)
    assert response.status_code == 200
    assert introspect(rp, token) == {"active": False}


def test_revoking_twice_is_fine(client, rp, person):
    body = issued(rp, person)
    assert revoke(rp, body["refresh_token"]).status_code == 200
    assert revoke(rp, body["refresh_token"]).status_code == 200
    assert revoke(rp, body["access_token"]).status_code == 200


def test_other_clients_token(client, factory, rp, person):
    body = issued(rp, person)
    other = make_rp(client, factory)
    for token in (body["access_token"], body["refresh_token"]):
        response = revoke(other, token)
        # Authlib answers invalid_grant for a token of another client.
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.get_json()["error"] == "invalid_grant"
        assert introspect(other, token) == {"active": False}
    # Nothing was revoked.
    assert introspect(rp, body["access_token"])["active"] is True
    assert introspect(rp, body["refresh_token"])["active"] is True
    assert userinfo_status(client, body["access_token"]) == 200


def test_revocation_requires_client_authentication(client, rp, person):
    body = issued(rp, person)
    response = client.post("/revoke", data={"token": body["refresh_token"], "client_id": rp.client_id})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    wrong = base64.b64encode(f"{rp.client_id}:wrong".encode()).decode()
    response = client.post("/revoke", data={"token": body["refresh_token"]},
                           headers={"Authorization": f"Basic {wrong}"})
    assert response.status_code == 401
    assert introspect(rp, body["refresh_token"])["active"] is True


def test_public_client_revokes_its_own_tokens(client, factory, person):
    public = make_rp(client, factory, public=True)
    body = issued(public, person)
    assert revoke(public, body["refresh_token"]).status_code == 200
    assert userinfo_status(client, body["access_token"]) == 401


def test_public_client_cannot_introspect(client, factory, person):
    public = make_rp(client, factory, public=True)
    body = issued(public, person)
    response = client.post("/introspect", data={"token": body["access_token"], "client_id": public.client_id})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert "active" not in response.get_json()


# -- introspection ------------------------------------------------------------------

def test_introspection_response_fields(client, rp, person):
    body = issued(rp, person)
    response = client.post("/introspect", data={"token": body["access_token"]}, headers=basic(rp))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers.get("Cache-Control") == "no-store"
    info = response.get_json()
    assert info["active"] is True
    assert info["scope"].split() == body["scope"].split()
    assert info["client_id"] == rp.client_id
    assert info["sub"] == person.id
    assert info["iss"] == ISSUER
    assert info["token_type"] == "Bearer"
    now = time.time()
    assert isinstance(info["exp"], int) and isinstance(info["iat"], int)
    assert info["iat"] <= now + 5 and info["exp"] > now


def test_introspection_of_a_refresh_token(client, rp, person):
    body = issued(rp, person)
    info = introspect(rp, body["refresh_token"], hint="refresh_token")
    assert info["active"] is True
    assert info["client_id"] == rp.client_id and info["sub"] == person.id and info["iss"] == ISSUER
    assert "offline_access" in info["scope"].split()
    assert info["exp"] > time.time()


@pytest.mark.parametrize("kind, hint", [("access_token", "refresh_token"), ("refresh_token", "access_token")])
def test_introspection_with_a_wrong_hint_still_finds_the_token(client, rp, person, kind, hint):
    body = issued(rp, person)
    assert introspect(rp, body[kind], hint=hint)["active"] is True


def test_rotated_refresh_token_is_inactive(client, rp, person):
    body = issued(rp, person)
    newer = rp.refresh(body["refresh_token"]).get_json()
    assert introspect(rp, newer["refresh_token"])["active"] is True
    assert introspect(rp, body["refresh_token"])["active"] is False


def test_introspection_requires_client_authentication(client, rp, person):
    body = issued(rp, person)
    response = client.post("/introspect", data={"token": body["access_token"]})
    assert response.status_code == 401
    assert "active" not in response.get_json()


@pytest.fixture
def short_lived_app(settings):
    application = create_app(settings.with_(access_token_ttl=1))
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


def test_expired_access_token_is_inactive(client, short_lived_app, factory, db):
    machine, secret = factory.client()
    row = db.get(Client, machine.client_id)
    row.grant_types = ["client_credentials"]
    db.commit()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{machine.client_id}:{secret}".encode()).decode()}
    issuer_side = short_lived_app.test_client()
    body = issuer_side.post("/token", data={"grant_type": "client_credentials"}, headers=auth).get_json()
    token = body["access_token"]
    assert body["expires_in"] == 1
    assert client.post("/introspect", data={"token": token}, headers=auth).get_json()["active"] is True
    time.sleep(1.1)
    assert client.post("/introspect", data={"token": token}, headers=auth).get_json() == {"active": False}
    # Revoking an expired token is still a 200 (RFC 7009 §2.2: nothing to do).
    assert client.post("/revoke", data={"token": token}, headers=auth).status_code == 200
