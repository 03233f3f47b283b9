"""Switching agreement without a browser: token exchange (RFC 8693) at /token,
and membership re-checked at every refresh (DESIGN.md "The agreement contract")."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from joserfc import jwt as jose_jwt
from sqlalchemy import delete, update

from idp.agreements.models import Agreement, Membership
from idp.grants.models import RefreshToken, TokenFamily
from idp.oidc import tokens as idp_tokens
from tests.protocol.test_agreements_authorize import (
    SCOPE, add_agreement, agreement_rp, assert_agreement_claims, new_number, sign_in_with, tokens_for, userinfo,
    verify_access_token,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
REFRESH_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
ACCESS_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"


def exchange(rp, subject_token, subject_token_type, agreement_id, **extra):
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token, "subject_token_type": subject_token_type,
            "agreement_id": agreement_id, **extra}
    return rp.token_request({k: v for k, v in data.items() if v is not None})


def assert_error(response, error, status=400):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body
    assert response.headers.get("Cache-Control") == "no-store"
    return body


def assert_exchanged(rp, response, agreement, role="user", refresh=True):
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers.get("Cache-Control") == "no-store"
    body = response.get_json()
    assert body["issued_token_type"] == ACCESS_TYPE
    assert body["token_type"].lower() == "bearer"
    assert ("refresh_token" in body) is refresh, body
    claims = verify_access_token(rp.browser, body["access_token"])
    assert_agreement_claims(claims, agreement, role)
    assert claims["client_id"] == rp.client_id
    info = userinfo(rp.browser, body["access_token"])
    assert info.status_code == 200
    assert_agreement_claims(info.get_json(), agreement, role)
    return body, claims


@pytest.fixture
def setup(client, factory, db):
    """A person with agreements A (user) and B (superuser) of one product, C of another,
    signed in to a product client in A with offline_access."""
    product, other_product = factory.product(), factory.product()
    identity = factory.identity()
    a = add_agreement(db, product, identity)
    b = add_agreement(db, product, (identity, "superuser"))
    c = add_agreement(db, other_product, identity)
    rp = agreement_rp(client, factory, product=product)
    body = tokens_for(rp, sign_in_with(rp, identity, a.number))
    assert_agreement_claims(body["id"], a)
    assert body["refresh_token"]

    class Setup:
        pass

    s = Setup()
    s.product, s.other_product, s.identity, s.a, s.b, s.c, s.rp, s.tokens = (
        product, other_product, identity, a, b, c, rp, body)
    s.database = client.application.extensions["idp"].db
    return s


# -- the happy paths ---------------------------------------------------------------------

def test_exchange_refresh_token_for_another_agreement(setup, db):
    s = setup
    body, claims = assert_exchanged(s.rp, exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number),
                                    s.b, "superuser")
    assert claims["sub"] == s.identity.id
    assert body["refresh_token"] != s.tokens["refresh_token"]

    # The new refresh token stays in the target agreement.
    refreshed = s.rp.refresh(body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    refreshed = refreshed.get_json()
    assert_agreement_claims(verify_access_token(s.rp.browser, refreshed["access_token"]), s.b, "superuser")
    assert_agreement_claims(s.rp.verify_id_token(refreshed["id_token"]), s.b, "superuser")

    # Exchange counts as use of the target.
    db.expire_all()
    membership = db.query(Membership).filter_by(identity_id=s.identity.id, agreement_id=s.b.id).one()
    assert membership.last_used_at is not None


def test_exchange_access_token_returns_no_refresh_token(setup):
    s = setup
    body, _claims = assert_exchanged(s.rp, exchange(s.rp, s.tokens["access_token"], ACCESS_TYPE, s.b.number),
                                     s.b, "superuser", refresh=False)
    # Chained: the exchanged access token can itself be exchanged back.
    assert_exchanged(s.rp, exchange(s.rp, body["access_token"], ACCESS_TYPE, s.a.number), s.a, refresh=False)


def test_exchanged_refresh_token_is_rotated_and_reuse_revokes_the_family(setup):
    s = setup
    old_refresh, old_access = s.tokens["refresh_token"], s.tokens["access_token"]
    assert_exchanged(s.rp, exchange(s.rp, old_refresh, REFRESH_TYPE, s.b.number), s.b, "superuser")

    assert_error(exchange(s.rp, old_refresh, REFRESH_TYPE, s.b.number), "invalid_request")
    # The subject's family is revoked: its access token and refresh token stop working.
    assert userinfo(s.rp.browser, old_access).status_code == 401
    assert_error(s.rp.refresh(old_refresh), "invalid_grant")


def test_reuse_after_exchange_also_revokes_what_the_exchange_issued(setup):
    """The exchange rotated the refresh token: what it issued is the rotated token's
    successor. When the old token comes back, the IdP cannot tell the thief from the
    client, so the active successor must stop working too (RFC 9700 §4.14.2),
    as it does for a plain refresh."""
    s = setup
    stolen = s.tokens["refresh_token"]
    body, _ = assert_exchanged(s.rp, exchange(s.rp, stolen, REFRESH_TYPE, s.b.number), s.b, "superuser")
    assert_error(s.rp.refresh(stolen), "invalid_grant")  # reuse detected
    assert_error(s.rp.refresh(body["refresh_token"]), "invalid_grant")
    assert userinfo(s.rp.browser, body["access_token"]).status_code == 401


def test_refresh_token_reused_at_refresh_after_exchange_is_invalid_grant(setup):
    s = setup
    old_refresh, old_access = s.tokens["refresh_token"], s.tokens["access_token"]
    assert_exchanged(s.rp, exchange(s.rp, old_refresh, REFRESH_TYPE, s.b.number), s.b, "superuser")
    assert_error(s.rp.refresh(old_refresh), "invalid_grant")
    assert userinfo(s.rp.browser, old_access).status_code == 401


def test_refresh_keeps_the_agreement(setup):
    s = setup
    refreshed = s.rp.refresh(s.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    body = refreshed.get_json()
    assert_agreement_claims(verify_access_token(s.rp.browser, body["access_token"]), s.a)
    assert_agreement_claims(s.rp.verify_id_token(body["id_token"]), s.a)
    assert_agreement_claims(userinfo(s.rp.browser, body["access_token"]).get_json(), s.a)


# -- request errors ------------------------------------------------------------------------

def test_missing_parameter_is_invalid_request(setup):
    s = setup
    for missing in ("agreement_id", "subject_token", "subject_token_type"):
        params = {"subject_token": s.tokens["refresh_token"], "subject_token_type": REFRESH_TYPE,
                  "agreement_id": s.b.number, missing: None}
        assert_error(exchange(s.rp, **params), "invalid_request")
    # The subject token was not spent by the failed requests.
    assert_exchanged(s.rp, exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number), s.b, "superuser")


def test_wrong_subject_token_type_is_invalid_request(setup):
    s = setup
    cases = {
        "refresh_as_access": (s.tokens["refresh_token"], ACCESS_TYPE),
        "access_as_refresh": (s.tokens["access_token"], REFRESH_TYPE),
        "id_token": (s.tokens["id_token"], ID_TOKEN_TYPE),
        "id_token_as_access": (s.tokens["id_token"], ACCESS_TYPE),
        "unknown_type": (s.tokens["refresh_token"], "urn:example:nonsense"),
    }
    for kind, (token, token_type) in cases.items():
        body = assert_error(exchange(s.rp, token, token_type, s.b.number), "invalid_request")
        assert body.get("error_description"), kind


def _oct_key():
    from joserfc.jwk import OctKey

    return OctKey.import_key("k" * 32)


def test_unknown_subject_token_is_invalid_request(setup):
    s = setup
    forged = jose_jwt.encode({"alg": "HS256", "typ": "at+jwt"}, {"sub": s.identity.id, "jti": "x",
                                                                "client_id": s.rp.client_id}, _oct_key())
    for token_type in (REFRESH_TYPE, ACCESS_TYPE):
        assert_error(exchange(s.rp, "no-such-token", token_type, s.b.number), "invalid_request")
        assert_error(exchange(s.rp, forged, token_type, s.b.number), "invalid_request")  # a JWT, not ours


def _family_of(db, s):
    refresh = idp_tokens.find_refresh_token(s.database, s.tokens["refresh_token"])
    assert refresh is not None
    return refresh.family_id


def test_revoked_subject_token_is_invalid_request(setup, db):
    s = setup
    idp_tokens.revoke_family(db, _family_of(db, s), "test")
    assert_error(exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number), "invalid_request")
    assert_error(exchange(s.rp, s.tokens["access_token"], ACCESS_TYPE, s.b.number), "invalid_request")


def test_expired_refresh_token_is_invalid_request(setup, db):
    s = setup
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    family_id = _family_of(db, s)
    db.execute(update(RefreshToken).where(RefreshToken.family_id == family_id).values(expires_at=past))
    db.execute(update(TokenFamily).where(TokenFamily.id == family_id).values(expires_at=past))
    db.commit()
    assert_error(exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number), "invalid_request")


def test_expired_access_token_is_invalid_request(setup, runtime):
    """The same access token (same jti, so its record is live) but past its exp."""
    s = setup
    claims = verify_access_token(s.rp.browser, s.tokens["access_token"])
    now = int(time.time())
    claims.update(iat=now - 600, exp=now - 60)
    if "nbf" in claims:
        claims["nbf"] = now - 600
    key = runtime.keys.signing_keyset("ES256")
    expired = jose_jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": key.keys[0].kid}, claims, key)
    assert_error(exchange(s.rp, expired, ACCESS_TYPE, s.b.number), "invalid_request")


def test_another_clients_subject_token_is_invalid_request(setup, client, factory):
    s = setup
    other = agreement_rp(client, factory, product=s.product)
    for token_type, token in ((REFRESH_TYPE, s.tokens["refresh_token"]), (ACCESS_TYPE, s.tokens["access_token"])):
        assert_error(exchange(other, token, token_type, s.b.number), "invalid_request")
    # ...and nothing was spent: its own client can still exchange them.
    assert_exchanged(s.rp, exchange(s.rp, s.tokens["access_token"], ACCESS_TYPE, s.b.number), s.b, "superuser",
                     refresh=False)
    assert_exchanged(s.rp, exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number), s.b, "superuser")


def test_client_without_the_grant_type_is_unauthorized_client(client, factory, db):
    product = factory.product()
    identity = factory.identity()
    a = add_agreement(db, product, identity)
    b = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, db, product=product, grant_types=["authorization_code", "refresh_token"])
    body = tokens_for(rp, sign_in_with(rp, identity, a.number))
    assert_error(exchange(rp, body["refresh_token"], REFRESH_TYPE, b.number), "unauthorized_client")
    assert_error(exchange(rp, body["access_token"], ACCESS_TYPE, b.number), "unauthorized_client")


def test_wrong_client_secret_is_invalid_client(setup):
    s = setup
    s.rp.client_secret = "wrong"
    assert_error(exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number), "invalid_client", status=401)


# -- the target ------------------------------------------------------------------------------

def test_target_without_membership_is_invalid_target(setup, db, factory):
    s = setup
    closed = add_agreement(db, s.product, s.identity, closed=True)
    removed = add_agreement(db, s.product, s.identity)
    db.execute(delete(Membership).where(Membership.agreement_id == removed.id))
    db.commit()
    targets = {
        "not_member": add_agreement(db, s.product, factory.identity()).number,
        "unknown": new_number(),
        "other_product": s.c.number,
        "closed": closed.number,
        "removed": removed.number,
        "malformed": "' OR 1=1 --",
    }
    for kind, target in targets.items():
        for token_type, token in ((REFRESH_TYPE, s.tokens["refresh_token"]), (ACCESS_TYPE, s.tokens["access_token"])):
            response = exchange(s.rp, token, token_type, target)
            assert response.get_json().get("error") == "invalid_target", (kind, token_type, response.get_json())
            assert_error(response, "invalid_target")
    # Nothing was spent: the refresh token still refreshes in the current agreement.
    refreshed = s.rp.refresh(s.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    assert_agreement_claims(verify_access_token(s.rp.browser, refreshed.get_json()["access_token"]), s.a)


def test_membership_is_checked_at_every_exchange(setup, db):
    s = setup
    body, _ = assert_exchanged(s.rp, exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number),
                               s.b, "superuser")
    body, _ = assert_exchanged(s.rp, exchange(s.rp, body["refresh_token"], REFRESH_TYPE, s.a.number), s.a)
    db.execute(delete(Membership).where(Membership.identity_id == s.identity.id, Membership.agreement_id == s.b.id))
    db.commit()
    assert_error(exchange(s.rp, body["refresh_token"], REFRESH_TYPE, s.b.number), "invalid_target")
    assert_error(exchange(s.rp, body["access_token"], ACCESS_TYPE, s.b.number), "invalid_target")


# -- refresh after the membership changed ------------------------------------------------------

def test_refresh_after_membership_removed_is_invalid_grant(setup, db):
    s = setup
    db.execute(delete(Membership).where(Membership.identity_id == s.identity.id, Membership.agreement_id == s.a.id))
    db.commit()
    assert_error(s.rp.refresh(s.tokens["refresh_token"]), "invalid_grant")


def test_refresh_after_agreement_closed_is_invalid_grant(setup, db):
    s = setup
    db.execute(update(Agreement).where(Agreement.id == s.a.id).values(closed=True))
    db.commit()
    assert_error(s.rp.refresh(s.tokens["refresh_token"]), "invalid_grant")


def test_refresh_of_exchanged_token_after_target_membership_removed_is_invalid_grant(setup, db):
    s = setup
    body, _ = assert_exchanged(s.rp, exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number),
                               s.b, "superuser")
    db.execute(delete(Membership).where(Membership.identity_id == s.identity.id, Membership.agreement_id == s.b.id))
    db.commit()
    assert_error(s.rp.refresh(body["refresh_token"]), "invalid_grant")


def test_refresh_carries_the_current_role_and_name(setup, db):
    s = setup
    db.execute(update(Membership).where(Membership.identity_id == s.identity.id, Membership.agreement_id == s.a.id)
               .values(role="superuser"))
    db.execute(update(Agreement).where(Agreement.id == s.a.id).values(name="Renamed Trading ApS"))
    db.commit()
    db.refresh(s.a)
    refreshed = s.rp.refresh(s.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    body = refreshed.get_json()
    assert_agreement_claims(verify_access_token(s.rp.browser, body["access_token"]), s.a, "superuser")
    assert_agreement_claims(s.rp.verify_id_token(body["id_token"]), s.a, "superuser")


def test_restriction_added_later_takes_effect_at_refresh_and_exchange(client, factory, db):
    product = factory.product()
    identity = factory.identity()
    home = add_agreement(db, product, (identity, "time_registrant"))
    other = add_agreement(db, product, (identity, "time_registrant"))
    web = agreement_rp(client, factory, product=product)
    body = tokens_for(web, sign_in_with(web, identity, home.number, agreement_hint=home.number))
    db.execute(update(Agreement).where(Agreement.id.in_([home.id, other.id])).values(time_registrants_mobile_only=True))
    db.commit()
    assert_error(web.refresh(body["refresh_token"]), "invalid_grant")
    assert_error(exchange(web, body["access_token"], ACCESS_TYPE, other.number), "invalid_target")


# -- time registrants restricted to mobile apps ------------------------------------------------

def test_restricted_time_registrant_membership_only_via_mobile_apps(client, factory, db):
    product = factory.product()
    identity = factory.identity()
    home = add_agreement(db, product, identity)
    restricted = add_agreement(db, product, (identity, "time_registrant"), mobile_only=True)
    web = agreement_rp(client, factory, product=product)
    mobile = agreement_rp(client, factory, db, product=product, mobile_app=True)

    web_tokens = tokens_for(web, sign_in_with(web, identity, home.number, agreement_hint=home.number))
    assert_error(exchange(web, web_tokens["refresh_token"], REFRESH_TYPE, restricted.number), "invalid_target")
    assert_error(exchange(web, web_tokens["access_token"], ACCESS_TYPE, restricted.number), "invalid_target")

    mobile_tokens = tokens_for(mobile, sign_in_with(mobile, identity, home.number, agreement_hint=home.number))
    body, _ = assert_exchanged(mobile, exchange(mobile, mobile_tokens["refresh_token"], REFRESH_TYPE,
                                                restricted.number), restricted, "time_registrant")
    assert_exchanged(mobile, exchange(mobile, mobile_tokens["access_token"], ACCESS_TYPE, restricted.number),
                     restricted, "time_registrant", refresh=False)
    refreshed = mobile.refresh(body["refresh_token"])
    assert refreshed.status_code == 200
    assert_agreement_claims(verify_access_token(mobile.browser, refreshed.get_json()["access_token"]), restricted,
                            "time_registrant")


def test_scope_of_exchange_cannot_exceed_the_subject(setup):
    s = setup
    response = exchange(s.rp, s.tokens["refresh_token"], REFRESH_TYPE, s.b.number, scope=SCOPE + " admin")
    assert response.status_code == 400
    assert response.get_json()["error"] in ("invalid_request", "invalid_scope")
