"""prompt, max_age, id_token_hint, login_hint, display, locales, acr_values, consent memory."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from sqlalchemy import event

from tests.helpers.oidc import RP, csrf_token, make_rp, path_of, pkce_pair, query

ISSUER = "https://idp.test"





def _sleep_past_second():
    # auth_time has one-second resolution: sleeping > 1 s guarantees a larger value.
    time.sleep(1.05)


def _id_token_claims(rp, result, nonce=None):
    body = rp.token(result["code"]).get_json()
    assert "id_token" in body, body
    return rp.verify_id_token(body["id_token"], nonce=nonce), body


def _assert_rp_error(response, rp, error, state, description=True):
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.location.startswith(rp.redirect_uri + "?"), response.location
    params = query(response.location)
    assert params["error"] == error, params
    if description:
        assert params.get("error_description"), params
    assert params["state"] == state
    assert params["iss"] == ISSUER
    assert "code" not in params
    return params


def _assert_code_without_page(response, rp, state):
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.location.startswith(rp.redirect_uri + "?"), f"a page was shown: {response.location}"
    params = query(response.location)
    assert "error" not in params, params
    assert params["code"]
    assert params["state"] == state
    assert params["iss"] == ISSUER
    return params


def _assert_login_page(response):
    assert response.status_code == 302, (response.status_code, response.location)
    assert "/interaction/" in response.location and response.location.endswith("/login"), response.location


def _assert_consent_page(response):
    assert response.status_code == 302, (response.status_code, response.location)
    assert "/interaction/" in response.location and response.location.endswith("/consent"), response.location


# -- prompt=none ------------------------------------------------------------------

def test_oidcc_prompt_none_not_logged_in(client, factory):
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(prompt="none", state="pn-1"))
    _assert_rp_error(response, rp, "login_required", "pn-1", description=False)


def test_oidcc_prompt_none_not_logged_in_by_post(client, factory):
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(prompt="none", state="pn-2", method="POST"))
    _assert_rp_error(response, rp, "login_required", "pn-2", description=False)


def test_oidcc_prompt_none_logged_in(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    first, _ = _id_token_claims(rp, rp.sign_in(identity.email))
    response = rp.follow(rp.authorize(prompt="none", state="pn-3"))
    result = _assert_code_without_page(response, rp, "pn-3")
    second, _ = _id_token_claims(rp, result)
    assert second["sub"] == first["sub"] == identity.id
    assert second["auth_time"] == first["auth_time"]


def test_oidcc_prompt_none_logged_in_without_consent(client, factory):
    identity = factory.identity()
    rp_a = make_rp(client, factory)
    rp_a.sign_in(identity.email)
    rp_b = make_rp(client, factory)  # same browser, another client never consented to
    response = rp_b.follow(rp_b.authorize(prompt="none", state="pn-4"))
    _assert_rp_error(response, rp_b, "consent_required", "pn-4", description=False)


def test_oidcc_prompt_none_more_scope_than_consented(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email, scope="openid")
    response = rp.follow(rp.authorize(scope="openid email", prompt="none", state="pn-5"))
    _assert_rp_error(response, rp, "consent_required", "pn-5", description=False)


# -- prompt=login, max_age -------------------------------------------------------

def test_oidcc_prompt_login(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    first, _ = _id_token_claims(rp, rp.sign_in(identity.email))
    _sleep_past_second()
    response = rp.follow(rp.authorize(prompt="login", state="pl-1"))
    _assert_login_page(response)
    response = rp.follow(rp.login(response, identity.email))
    result = _assert_code_without_page(response, rp, "pl-1")  # consent is remembered
    second, _ = _id_token_claims(rp, result)
    assert second["sub"] == first["sub"]
    assert second["auth_time"] > first["auth_time"]


def test_oidcc_max_age_1(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    first, _ = _id_token_claims(rp, rp.sign_in(identity.email))
    _sleep_past_second()
    time.sleep(0.2)  # strictly more than max_age=1 since the login
    response = rp.follow(rp.authorize(max_age="1", state="ma-1"))
    _assert_login_page(response)
    response = rp.follow(rp.login(response, identity.email))
    result = _assert_code_without_page(response, rp, "ma-1")
    second, _ = _id_token_claims(rp, result)
    assert second["sub"] == first["sub"]
    assert second["auth_time"] > first["auth_time"]


def test_oidcc_max_age_1_with_prompt_none_is_login_required(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    time.sleep(1.25)
    response = rp.follow(rp.authorize(max_age="1", prompt="none", state="ma-2"))
    _assert_rp_error(response, rp, "login_required", "ma-2", description=False)


def test_oidcc_max_age_10000(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    first, _ = _id_token_claims(rp, rp.sign_in(identity.email))
    response = rp.follow(rp.authorize(max_age="10000", state="ma-3"))
    result = _assert_code_without_page(response, rp, "ma-3")
    second, _ = _id_token_claims(rp, result)
    assert second["sub"] == first["sub"]
    assert second["auth_time"] == first["auth_time"]


# -- id_token_hint ----------------------------------------------------------------

def test_oidcc_id_token_hint(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    first, body = _id_token_claims(rp, rp.sign_in(identity.email))
    response = rp.follow(rp.authorize(prompt="none", id_token_hint=body["id_token"], state="ih-1"))
    result = _assert_code_without_page(response, rp, "ih-1")
    second, _ = _id_token_claims(rp, result)
    assert second["sub"] == first["sub"] == identity.id


def test_oidcc_id_token_hint_of_someone_else_prompt_none(app, client, factory):
    alice, bob = factory.identity(), factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(alice.email)
    # Bob signs in to the same client in another browser.
    rp_bob = RP(app.test_client(), rp.client_id, rp.client_secret, rp.redirect_uri)
    _, bob_body = _id_token_claims(rp_bob, rp_bob.sign_in(bob.email))
    response = rp.follow(rp.authorize(prompt="none", id_token_hint=bob_body["id_token"], state="ih-2"))
    _assert_rp_error(response, rp, "login_required", "ih-2", description=False)


def test_id_token_hint_of_someone_else_asks_to_log_in(app, client, factory):
    alice, bob = factory.identity(), factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(alice.email)
    rp_bob = RP(app.test_client(), rp.client_id, rp.client_secret, rp.redirect_uri)
    _, bob_body = _id_token_claims(rp_bob, rp_bob.sign_in(bob.email))
    _assert_login_page(rp.follow(rp.authorize(id_token_hint=bob_body["id_token"])))


# -- parameters that must not cause errors -------------------------------------

def test_oidcc_login_hint(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(login_hint=identity.email, state="lh-1"))
    _assert_login_page(response)
    page = client.get(path_of(response.location))
    assert page.status_code == 200
    assert f'value="{identity.email}"' in page.get_data(as_text=True)
    response = rp.follow(rp.login(response, identity.email))
    response = rp.follow(rp.consent(response))
    assert query(response.location)["state"] == "lh-1"
    assert query(response.location)["code"]


def test_oidcc_display_page(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, display="page", state="d-1")
    assert result["state"] == "d-1" and result["code"]


def test_oidcc_display_popup(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, display="popup", state="d-2")
    assert result["state"] == "d-2" and result["code"]


def test_oidcc_ui_locales(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, ui_locales="se", state="ul-1")
    assert result["state"] == "ul-1" and result["code"]


def test_ui_locales_supported_language_is_used(client, factory):
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(ui_locales="da en"))
    _assert_login_page(response)
    page = client.get(path_of(response.location))
    assert page.status_code == 200
    assert 'lang="da"' in page.get_data(as_text=True)


def test_oidcc_claims_locales(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, claims_locales="se", state="cl-1")
    assert result["state"] == "cl-1" and result["code"]


def test_oidcc_ensure_request_with_acr_values_succeeds(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, acr_values="urn:connect-idp:acr:pwd 1 2", state="acr-1")
    assert result["state"] == "acr-1"
    claims, _ = _id_token_claims(rp, result)
    assert claims["acr"]


def test_oidcc_ensure_request_with_unknown_parameter_succeeds(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, state="up-1", extra_param="foobar", **{"x-vendor": "1"})
    assert result["state"] == "up-1" and result["code"]
    claims, _ = _id_token_claims(rp, result)
    assert claims["sub"] == identity.id


def test_oidcc_ensure_post_request_succeeds(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    result = rp.sign_in(identity.email, method="POST", state="post-1", nonce="n-post")
    assert result["state"] == "post-1"
    assert result["iss"] == ISSUER
    claims, _ = _id_token_claims(rp, result, nonce="n-post")
    assert claims["sub"] == identity.id


def test_oidcc_ensure_request_without_nonce_succeeds_for_code_flow(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    verifier, challenge = pkce_pair()
    response = rp.follow(client.get("/authorize?" + urlencode({
        "response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "scope": "openid",
        "state": "nn-1", "code_challenge": challenge, "code_challenge_method": "S256"})))
    response = rp.follow(rp.login(response, identity.email))
    response = rp.follow(rp.consent(response))
    result = query(response.location)
    assert result["state"] == "nn-1"
    body = rp.token(result["code"], verifier=verifier).get_json()
    claims = rp.verify_id_token(body["id_token"])
    assert "nonce" not in claims


# -- consent -----------------------------------------------------------------------

def test_consent_denied_is_access_denied(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(state="cd-1"))
    response = rp.follow(rp.login(response, identity.email))
    response = rp.consent(response, action="deny")
    _assert_rp_error(response, rp, "access_denied", "cd-1")


def test_cancel_on_login_page_is_access_denied(client, factory):
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(state="cx-1"))
    _assert_login_page(response)
    login_path = path_of(response.location)
    page = client.get(login_path)
    response = client.post(login_path, data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                             "action": "cancel"})
    _assert_rp_error(response, rp, "access_denied", "cx-1")


def test_consent_remembered_per_client(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize())
    response = rp.follow(rp.login(response, identity.email))
    _assert_consent_page(response)
    rp.follow(rp.consent(response))

    # Second sign-in of the same client: no page at all.
    _assert_code_without_page(rp.follow(rp.authorize(state="cr-1")), rp, "cr-1")

    # Another client in the same browser: signed in, but its own consent is asked.
    other = make_rp(client, factory)
    _assert_consent_page(other.follow(other.authorize()))


def test_an_sso_hop_reads_the_person_and_the_consent_in_one_statement(app, client, factory):
    # Every SSO hop reads both; on PostgreSQL each statement is a round trip.
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    seen: list[str] = []
    database = app.extensions["idp"].db

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    for engine in {database.engine, database.autocommit_engine}:
        event.listen(engine, "before_cursor_execute", before)
    try:
        _assert_code_without_page(rp.follow(rp.authorize(state="sso-1")), rp, "sso-1")
    finally:
        for engine in {database.engine, database.autocommit_engine}:
            event.remove(engine, "before_cursor_execute", before)
    reads = [s for s in seen if "identities" in s or "grants" in s]
    assert len(reads) == 1, reads
    assert "grants" in reads[0] and "identities" in reads[0]


def test_consent_remembered_survives_a_new_browser(app, client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    rp2 = RP(app.test_client(), rp.client_id, rp.client_secret, rp.redirect_uri)
    response = rp2.follow(rp2.authorize(state="cr-2"))
    response = rp2.follow(rp2.login(response, identity.email))
    _assert_code_without_page(response, rp2, "cr-2")


def test_prompt_consent_asks_again(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    _assert_consent_page(rp.follow(rp.authorize(prompt="consent")))


def test_first_party_client_never_shows_consent(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, first_party=True)
    response = rp.follow(rp.authorize(state="fp-1"))
    _assert_login_page(response)
    response = rp.follow(rp.login(response, identity.email))
    _assert_code_without_page(response, rp, "fp-1")
    _assert_code_without_page(rp.follow(rp.authorize(state="fp-2", scope="openid profile email offline_access")),
                              rp, "fp-2")
