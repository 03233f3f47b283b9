"""The claims request parameter (OIDC Core §5.5; oidcc-claims-essential) and
pairwise subject identifiers (OIDC Core §8.1)."""

from __future__ import annotations

import base64
import json

import pytest

from idp.clients.models import Client
from tests.helpers.oidc import RP, make_rp, query
from tests.protocol.test_agreements_api import get as api_get
from tests.protocol.test_agreements_authorize import (
    add_agreement,
    agreement_rp,
    assert_code_without_page,
    sign_in_with,
    verify_access_token,
)
from tests.protocol.test_authorize_errors import assert_redirect_error


def userinfo(browser, token):
    response = browser.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def tokens(rp, identity, **params):
    response = rp.token(rp.sign_in(identity.email, **params)["code"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# -- claims parameter -----------------------------------------------------------------

def test_oidcc_claims_essential(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    body = tokens(rp, identity, scope="openid", claims=json.dumps({"id_token": {"name": {"essential": True}}}))
    claims = rp.verify_id_token(body["id_token"])
    assert claims["name"] == "Test Person"
    # Only what was asked for: scope openid releases no profile or email claims.
    assert not {"email", "given_name", "family_name", "email_verified"} & set(claims)
    info = userinfo(client, body["access_token"])
    assert "name" not in info and "email" not in info
    assert info["sub"] == identity.id


def test_claims_for_userinfo_only(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    body = tokens(rp, identity, scope="openid",
                  claims=json.dumps({"userinfo": {"email": None, "given_name": {"essential": True}}}))
    claims = rp.verify_id_token(body["id_token"])
    assert "email" not in claims and "given_name" not in claims
    info = userinfo(client, body["access_token"])
    assert info["email"] == identity.email and info["given_name"] == "Test"
    assert "family_name" not in info and "name" not in info


def test_claims_request_survives_refresh(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    body = tokens(rp, identity, scope="openid offline_access",
                  claims=json.dumps({"id_token": {"email": {"essential": True}}}))
    refreshed = rp.refresh(body["refresh_token"]).get_json()
    assert rp.verify_id_token(refreshed["id_token"])["email"] == identity.email


def test_unknown_claims_are_ignored(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    body = tokens(rp, identity, scope="openid",
                  claims=json.dumps({"id_token": {"shoe_size": {"essential": True}, "name": None}}))
    claims = rp.verify_id_token(body["id_token"])
    assert "shoe_size" not in claims and claims["name"] == "Test Person"


@pytest.mark.parametrize("raw", ["not json", "[]", '"id_token"', '{"id_token": []}', '{"id_token": {"name": "x"}}',
                                 '{"userinfo": {"email": true}}'])
def test_malformed_claims_is_invalid_request(client, factory, raw):
    rp = make_rp(client, factory)
    response = rp.authorize(state="st-1", claims=raw)
    assert_redirect_error(response, rp, "invalid_request", state="st-1")


# -- pairwise subjects ------------------------------------------------------------------

def pairwise_rp(client, factory, db, redirect_uri, **meta):
    rp = make_rp(client, factory, redirect_uris=(redirect_uri,))
    row = db.get(Client, rp.client_id)
    row.extra_metadata = {"subject_type": "pairwise", **meta}
    db.commit()
    return rp


def subject_seen_by(rp, identity):
    return rp.verify_id_token(tokens(rp, identity, scope="openid")["id_token"])["sub"]


def test_pairwise_subjects_differ_per_sector(client, factory, db):
    identity = factory.identity()
    a = pairwise_rp(client, factory, db, "https://shop.example/cb")
    b = pairwise_rp(client, factory, db, "https://bank.example/cb")
    sub_a, sub_b = subject_seen_by(a, identity), subject_seen_by(b, identity)
    assert sub_a != sub_b
    assert identity.id not in (sub_a, sub_b)


def test_pairwise_subject_is_the_same_within_a_sector(client, factory, db):
    identity = factory.identity()
    a = pairwise_rp(client, factory, db, "https://shop.example/cb")
    b = pairwise_rp(client, factory, db, "https://shop.example/other/cb")
    assert subject_seen_by(a, identity) == subject_seen_by(b, identity)


def test_sector_identifier_uri_groups_clients(client, factory, db):
    identity = factory.identity()
    a = pairwise_rp(client, factory, db, "https://one.example/cb",
                    sector_identifier_uri="https://sector.example/redirects.json")
    b = pairwise_rp(client, factory, db, "https://two.example/cb",
                    sector_identifier_uri="https://sector.example/redirects.json")
    c = pairwise_rp(client, factory, db, "https://one.example/cb")
    assert subject_seen_by(a, identity) == subject_seen_by(b, identity)
    assert subject_seen_by(a, identity) != subject_seen_by(c, identity)


def test_pairwise_subjects_differ_per_person(app, client, factory, db):
    rp = pairwise_rp(client, factory, db, "https://shop.example/cb")
    first, second = factory.identity(), factory.identity()
    other_browser = RP(app.test_client(), rp.client_id, rp.client_secret, rp.redirect_uri)
    assert subject_seen_by(rp, first) != subject_seen_by(other_browser, second)


def test_public_subject_client_is_unchanged(client, factory, db):
    identity = factory.identity()
    pairwise_rp(client, factory, db, "https://shop.example/cb")
    public = make_rp(client, factory)
    explicit = make_rp(client, factory)
    row = db.get(Client, explicit.client_id)
    row.extra_metadata = {"subject_type": "public"}
    db.commit()
    assert subject_seen_by(public, identity) == identity.id
    assert subject_seen_by(explicit, identity) == identity.id


def test_pairwise_sub_is_consistent_across_id_token_userinfo_and_access_token(client, factory, db):
    identity = factory.identity()
    rp = pairwise_rp(client, factory, db, "https://shop.example/cb")
    body = tokens(rp, identity, scope="openid profile offline_access")
    sub = rp.verify_id_token(body["id_token"])["sub"]
    assert sub != identity.id
    assert userinfo(client, body["access_token"])["sub"] == sub
    assert verify_access_token(client, body["access_token"])["sub"] == sub
    refreshed = rp.refresh(body["refresh_token"]).get_json()
    assert rp.verify_id_token(refreshed["id_token"])["sub"] == sub
    assert verify_access_token(client, refreshed["access_token"])["sub"] == sub
    basic = {"Authorization": "Basic " + base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()}
    for token in (refreshed["access_token"], refreshed["refresh_token"]):
        assert client.post("/introspect", data={"token": token}, headers=basic).get_json()["sub"] == sub
    # Signing in again gives the same sub.
    assert subject_seen_by(rp, identity) == sub


def test_id_token_hint_with_pairwise_sub_and_prompt_none(client, factory, db):
    identity = factory.identity()
    rp = pairwise_rp(client, factory, db, "https://shop.example/cb")
    id_token = tokens(rp, identity, scope="openid")["id_token"]
    response = rp.authorize(scope="openid", prompt="none", id_token_hint=id_token, state="hint")
    params = assert_code_without_page(response, rp)
    assert params["state"] == "hint"
    # A hint naming someone else (here: the public sub of the same person) fails safely.
    other_hint = tokens(make_rp(client, factory), identity, scope="openid")["id_token"]
    response = rp.authorize(scope="openid", prompt="none", id_token_hint=other_hint, state="hint2")
    assert response.status_code == 302 and "code" not in query(response.location)
    assert query(response.location)["error"] == "login_required"


def test_agreements_api_with_a_pairwise_client(client, factory, db):
    product = factory.product()
    identity = factory.identity()
    agreement = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)
    row = db.get(Client, rp.client_id)
    row.extra_metadata = {"subject_type": "pairwise"}
    db.commit()
    params = sign_in_with(rp, identity, agreement.number, agreement_hint=agreement.number)
    body = rp.token(params["code"]).get_json()
    assert rp.verify_id_token(body["id_token"])["sub"] != identity.id
    response = api_get(client, body["access_token"])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [i["agreement_id"] for i in response.get_json()["items"]] == [agreement.number]
