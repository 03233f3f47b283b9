"""/token: client authentication, PKCE, code reuse, redirect_uri binding, refresh rotation."""

from __future__ import annotations

import base64

import pytest

from tests.helpers.oidc import query, RP, make_rp, pkce_pair

OFFLINE = "openid profile email offline_access"





def assert_token_error(response, error, status=400, description=False):
    """``description``: also require error_description (OPTIONAL in RFC 6749 §5.2;
    Authlib sends none for an unknown/reused code or refresh token)."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == error, body
    if description:
        assert body.get("error_description"), body
    assert "access_token" not in body
    assert response.headers.get("Cache-Control") == "no-store"
    return body


def assert_invalid_client(response):
    body = assert_token_error(response, "invalid_client", status=401, description=True)
    assert response.headers.get("WWW-Authenticate"), response.headers
    return body


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def userinfo(browser, access_token):
    return browser.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


@pytest.fixture
def signed_in(client, factory):
    """An RP and a fresh authorization code (with PKCE) for a signed-in person."""
    identity = factory.identity()
    rp = make_rp(client, factory)

    def code(**params):
        return rp.sign_in(identity.email, **params)["code"]

    return rp, code, identity


# -- client authentication ---------------------------------------------------------

def test_wrong_client_secret_basic(client, signed_in):
    rp, code, _ = signed_in
    rp.client_secret = "wrong-secret"
    assert_invalid_client(rp.token(code()))


def test_unknown_client_basic(client, signed_in):
    rp, code, _ = signed_in
    data = {"grant_type": "authorization_code", "code": code(), "redirect_uri": rp.redirect_uri,
            "code_verifier": rp.verifier}
    assert_invalid_client(client.post("/token", data=data, headers=basic("no-such-client", "x")))


def test_wrong_client_secret_post(client, signed_in):
    rp, code, _ = signed_in
    rp.client_secret = "wrong-secret"
    assert_invalid_client(rp.token(code(), auth="post"))


def test_unknown_client_post(client, signed_in):
    # Contract: bad client credentials -> 401 + WWW-Authenticate, whatever the method. A wrong secret
    # by POST already gets 401; an unknown client_id must not answer differently (client enumeration).
    rp, code, _ = signed_in
    data = {"grant_type": "authorization_code", "code": code(), "redirect_uri": rp.redirect_uri,
            "code_verifier": rp.verifier, "client_id": "no-such-client", "client_secret": "x"}
    assert_invalid_client(client.post("/token", data=data))


def test_confidential_client_without_credentials(client, signed_in):
    rp, code, _ = signed_in
    assert_invalid_client(rp.token(code(), auth="none"))


def test_client_secret_post_refused_for_basic_client(client, signed_in):
    # The factory registers client_secret_basic; the registered method is enforced.
    rp, code, _ = signed_in
    assert_invalid_client(rp.token(code(), auth="post"))


# -- success response -------------------------------------------------------------

def test_token_response_is_no_store(client, signed_in):
    rp, code, _ = signed_in
    response = rp.token(code())
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"


def test_oidcc_ensure_request_with_valid_pkce_succeeds(client, signed_in):
    rp, code, identity = signed_in
    response = rp.token(code(nonce="n-pkce"))
    assert response.status_code == 200, response.get_json()
    claims = rp.verify_id_token(response.get_json()["id_token"], nonce="n-pkce")
    assert claims["sub"] == identity.id


# -- PKCE --------------------------------------------------------------------------

def test_pkce_wrong_verifier_is_invalid_grant(client, signed_in):
    rp, code, _ = signed_in
    wrong, _ = pkce_pair()
    assert_token_error(rp.token(code(), verifier=wrong), "invalid_grant", description=True)


def test_pkce_missing_verifier_refused(client, signed_in):
    rp, code, _ = signed_in
    c = code()
    data = {"grant_type": "authorization_code", "code": c, "redirect_uri": rp.redirect_uri}
    response = rp.token_request(data)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] in ("invalid_grant", "invalid_request")
    assert "access_token" not in response.get_json()


def test_pkce_verifier_without_challenge_refused(client, signed_in):
    # RFC 9700 §2.1.1 / §4.8: no downgrade by adding a verifier the request never committed to.
    rp, code, _ = signed_in
    c = code(pkce=False)
    verifier, _ = pkce_pair()
    response = rp.token(c, verifier=verifier)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] in ("invalid_grant", "invalid_request")
    assert "access_token" not in response.get_json()


# -- code binding and reuse --------------------------------------------------------

def test_oidcc_codereuse(client, signed_in):
    rp, code, _ = signed_in
    c = code(scope=OFFLINE)
    first = rp.token(c)
    assert first.status_code == 200, first.get_json()
    tokens = first.get_json()
    assert userinfo(client, tokens["access_token"]).status_code == 200

    assert_token_error(rp.token(c), "invalid_grant")

    # §4.1.2: the tokens the first redemption issued are revoked.
    response = userinfo(client, tokens["access_token"])
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert_token_error(rp.refresh(tokens["refresh_token"]), "invalid_grant")


def test_unknown_code_is_invalid_grant(client, signed_in):
    rp, _, _ = signed_in
    assert_token_error(rp.token("not-a-code", verifier=pkce_pair()[0]), "invalid_grant")


def test_redirect_uri_mismatch_at_token_endpoint(client, signed_in):
    rp, code, _ = signed_in
    assert_token_error(rp.token(code(), redirect_uri="https://rp.example/other"), "invalid_grant", description=True)


def test_redirect_uri_missing_at_token_endpoint(client, signed_in):
    # RFC 6749 §4.1.3: required when it was in the authorization request.
    rp, code, _ = signed_in
    c = code()
    response = rp.token_request({"grant_type": "authorization_code", "code": c, "code_verifier": rp.verifier})
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] in ("invalid_grant", "invalid_request")


def test_code_bound_to_client(client, factory, signed_in):
    rp, code, _ = signed_in
    c = code()
    other = make_rp(client, factory)
    assert_token_error(other.token(c, verifier=rp.verifier), "invalid_grant")


# -- refresh tokens ----------------------------------------------------------------

def test_refresh_token_only_with_offline_access(client, signed_in):
    rp, code, _ = signed_in
    body = rp.token(code(scope="openid profile email")).get_json()
    assert body.get("access_token") and "refresh_token" not in body
    body = rp.token(code(scope=OFFLINE)).get_json()
    assert body.get("refresh_token"), body


def test_offline_access_not_allowed_for_client_is_invalid_scope(client, factory):
    # A scope the client is not registered for is refused, not silently dropped.
    rp = make_rp(client, factory, scope="openid profile email")
    response = rp.follow(rp.authorize(scope=OFFLINE, state="st-scope"))
    assert response.status_code == 302 and response.location.startswith(rp.redirect_uri)
    assert query(response.location)["error"] == "invalid_scope"
    assert query(response.location)["state"] == "st-scope"


def test_oidcc_refresh_token(client, signed_in):
    rp, code, identity = signed_in
    first = rp.token(code(scope=OFFLINE)).get_json()
    first_claims = rp.verify_id_token(first["id_token"])

    response = rp.refresh(first["refresh_token"])
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    second = response.get_json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert userinfo(client, second["access_token"]).get_json()["sub"] == identity.id
    if "id_token" in second:
        # OIDC Core §12.2: same iss/sub, auth_time of the original authentication.
        claims = rp.verify_id_token(second["id_token"])
        assert claims["sub"] == first_claims["sub"]
        assert claims["auth_time"] == first_claims["auth_time"]

    third = rp.refresh(second["refresh_token"])
    assert third.status_code == 200, third.get_json()
    assert third.get_json()["refresh_token"] not in (first["refresh_token"], second["refresh_token"])


def test_refresh_token_reuse_revokes_family(client, signed_in):
    rp, code, _ = signed_in
    first = rp.token(code(scope=OFFLINE)).get_json()
    second = rp.refresh(first["refresh_token"]).get_json()
    assert second.get("refresh_token"), second

    assert_token_error(rp.refresh(first["refresh_token"]), "invalid_grant")
    # The whole family is gone: the newest refresh token stops working too.
    assert_token_error(rp.refresh(second["refresh_token"]), "invalid_grant")


def test_refresh_token_bound_to_client(client, factory, signed_in):
    rp, code, _ = signed_in
    tokens = rp.token(code(scope=OFFLINE)).get_json()
    other = make_rp(client, factory)
    assert_token_error(other.refresh(tokens["refresh_token"]), "invalid_grant")


def test_unknown_refresh_token(client, signed_in):
    rp, _, _ = signed_in
    assert_token_error(rp.refresh("not-a-refresh-token"), "invalid_grant")


def test_refresh_grant_not_allowed_for_client(client, factory, db, signed_in):
    rp, code, _ = signed_in
    tokens = rp.token(code(scope=OFFLINE)).get_json()
    from idp.clients.models import Client

    row = db.get(Client, rp.client_id)
    row.grant_types = ["authorization_code"]
    db.commit()
    assert_token_error(rp.refresh(tokens["refresh_token"]), "unauthorized_client")


def test_unsupported_grant_type(client, signed_in):
    rp, _, _ = signed_in
    assert_token_error(rp.token_request({"grant_type": "password", "username": "a", "password": "b"}),
                       "unsupported_grant_type")


def test_missing_grant_type_is_invalid_request(client, signed_in):
    """RFC 6749 §5.2: a missing required parameter is invalid_request (unsupported_grant_type is for a type
    the server does not support)."""
    rp, _, _ = signed_in
    assert_token_error(rp.token_request({"scope": "openid"}), "invalid_request")


# -- public clients ----------------------------------------------------------------

def _public_rp(browser, factory):
    client_row, secret = factory.client(public=True)
    assert secret is None
    return RP(browser, client_row.client_id, None, client_row.redirect_uris[0])


def test_public_client_with_pkce(client, factory):
    identity = factory.identity()
    rp = _public_rp(client, factory)
    response = rp.token(rp.sign_in(identity.email, scope=OFFLINE)["code"])  # client_id only
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert rp.verify_id_token(body["id_token"])["sub"] == identity.id
    refreshed = rp.refresh(body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    assert refreshed.get_json()["refresh_token"] != body["refresh_token"]


def test_public_client_without_code_verifier(client, factory):
    identity = factory.identity()
    rp = _public_rp(client, factory)
    c = rp.sign_in(identity.email)["code"]
    response = rp.token_request({"grant_type": "authorization_code", "code": c, "redirect_uri": rp.redirect_uri})
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] in ("invalid_grant", "invalid_request")
    assert "access_token" not in response.get_json()


def test_public_client_wrong_code_verifier(client, factory):
    identity = factory.identity()
    rp = _public_rp(client, factory)
    c = rp.sign_in(identity.email)["code"]
    assert_token_error(rp.token(c, verifier=pkce_pair()[0]), "invalid_grant")


def test_code_expires(client, signed_in, monkeypatch):
    import time as real_time

    import idp.oidc.grant_types as grant_types

    rp, code, _ = signed_in
    c = code()
    later = real_time.time() + grant_types.CODE_TOMBSTONE_TTL - 1  # past the code TTL, before the tombstone

    class Later:
        @staticmethod
        def time():
            return later

    monkeypatch.setattr(grant_types, "time", Later)
    assert_token_error(rp.token(c), "invalid_grant")


def test_a_refresh_that_fails_after_writing_leaves_the_old_token_usable(client, signed_in, db, monkeypatch):
    """The refresh grant claims the old token and writes the new ones together (one statement on PostgreSQL,
    one transaction on SQLite, the claim first: idp/oidc/tokens.py _write); a row the database refuses after
    the claim undoes the claim too, so the client's retry with the same refresh token is a normal rotation,
    not a reuse."""
    from sqlalchemy import func, select

    from idp.grants.models import AccessToken
    from idp.oidc import tokens as idp_tokens

    rp, code, _identity = signed_in
    tokens = rp.token(code(scope="openid offline_access", prompt="consent")).get_json()
    assert tokens.get("refresh_token"), tokens

    def issued() -> int:
        db.expire_all()
        return db.scalar(select(func.count()).select_from(AccessToken).where(AccessToken.client_id == rp.client_id))

    before = issued()
    with monkeypatch.context() as patch:
        row = idp_tokens.audit.row

        def refused(*args, **kwargs):
            return {**row(*args, **kwargs), "event": None}  # audit_events.event is NOT NULL: the INSERT fails

        patch.setattr(idp_tokens.audit, "row", refused)
        failed = rp.refresh(tokens["refresh_token"])
    assert failed.status_code == 500 and failed.get_json()["error"] == "server_error"
    assert issued() == before  # nothing of the failed response was kept
    retry = rp.refresh(tokens["refresh_token"])
    assert retry.status_code == 200, retry.get_json()
    assert retry.get_json()["refresh_token"] != tokens["refresh_token"]
    assert issued() == before + 1
    assert rp.refresh(retry.get_json()["refresh_token"]).status_code == 200
