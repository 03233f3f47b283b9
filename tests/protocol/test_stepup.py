"""Step-up to the second level (issue 4): the four triggers at /authorize, prompt=none,
max_age, acr / amr / auth_time in ID tokens (verified with PyJWT against /jwks),
session id rotation, return_to safety and "enrol first, then come back".
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from idp.clients.models import Client
from tests.helpers.oidc import RP, csrf_token, make_rp, path_of, query
from tests.protocol.test_two_step import (
    RECOVERY_RE, SECRET_RE, Authenticator, enrol_directly, password_step, second_step, sign_in_password_only,
    signed_in,
)

ACR_PWD = "urn:connect-idp:acr:pwd"
ACR_MFA = "urn:connect-idp:acr:mfa"
AMR_PWD = ["pwd"]
AMR_MFA = ["pwd", "otp", "mfa"]
COOKIE = "idp_session"
TRIGGERS = ["acr_values", "essential_acr_claim", "client_policy", "agreement_policy"]


# -- helpers ----------------------------------------------------------------------

def with_trigger(kind: str, browser, factory, db, identity) -> tuple[RP, dict]:
    """A first-party RP and the authorize parameters for which ``kind`` demands the second level."""
    if kind == "acr_values":
        return make_rp(browser, factory, first_party=True), {"acr_values": ACR_MFA}
    if kind == "essential_acr_claim":
        claims = {"id_token": {"acr": {"essential": True, "value": ACR_MFA}}}
        return make_rp(browser, factory, first_party=True), {"claims": json.dumps(claims)}
    if kind == "client_policy":
        rp = make_rp(browser, factory, first_party=True)
        db.get(Client, rp.client_id).require_second_factor = True
        db.commit()
        return rp, {}
    if kind == "agreement_policy":
        product = factory.product()
        agreement = factory.agreement(product, identity)
        agreement.require_second_factor = True
        db.commit()
        scope = "openid profile email agreement"
        return make_rp(browser, factory, first_party=True, product=product.id, scope=scope), {"scope": scope}
    raise AssertionError(kind)


def is_interaction(response, name: str) -> bool:
    return (response.status_code == 302 and "/interaction/" in response.location
            and urlsplit(response.location).path.endswith("/" + name))


def callback(rp: RP, response) -> dict:
    assert response.status_code == 302 and response.location.startswith(rp.redirect_uri + "?"), (
        response.status_code, response.location, response.get_data(as_text=True)[:300])
    params = query(response.location)
    assert "error" not in params, params
    return params


def id_token_claims(rp: RP, params: dict) -> dict:
    body = rp.token(params["code"]).get_json()
    assert "id_token" in body, body
    return rp.verify_id_token(body["id_token"], nonce=rp.last_params["nonce"])


def open_stepup(rp: RP, response) -> str:
    """From the redirect to /interaction/<id>/stepup: the /stepup path it leads to."""
    assert is_interaction(response, "stepup"), (response.status_code, response.location)
    response = rp.browser.get(path_of(response.location))
    assert response.status_code == 302
    path = path_of(response.location)
    assert path.startswith("/stepup?return_to="), path
    return path


def post_code(browser, path: str, **fields):
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code, page.location)
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), **fields})


def step_up(rp: RP, response, phone: Authenticator) -> dict:
    """Enter a code at the step-up page and follow back to the RP; the callback params."""
    path = open_stepup(rp, response)
    return_to = parse_qs(urlsplit(path).query)["return_to"][0]
    assert return_to.startswith("/authorize/resume/"), return_to
    response = post_code(rp.browser, path, code=phone.code())
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert path_of(response.location) == return_to
    return callback(rp, rp.follow(response))


def pwd_session_with_authenticator(browser, runtime, db, identity) -> Authenticator:
    """Signed in with the password alone, then an authenticator appears (set up elsewhere)."""
    sign_in_password_only(browser, identity.email)
    phone, _ = enrol_directly(runtime, db, identity)
    return phone


def location_target(response) -> str:
    assert response.status_code == 302, response.status_code
    parts = urlsplit(response.location)
    assert parts.scheme in ("", "http") and parts.netloc in ("", "localhost"), response.location
    return path_of(response.location)


# -- the four triggers ---------------------------------------------------------------

@pytest.mark.parametrize("trigger", TRIGGERS)
def test_trigger_sends_a_password_session_to_step_up(trigger, client, factory, runtime, db):
    identity = factory.identity()
    phone = pwd_session_with_authenticator(client, runtime, db, identity)
    rp, params = with_trigger(trigger, client, factory, db, identity)

    result = step_up(rp, rp.follow(rp.authorize(**params)), phone)
    claims = id_token_claims(rp, result)
    assert claims["sub"] == identity.id
    assert claims["acr"] == ACR_MFA
    assert claims["amr"] == AMR_MFA
    if trigger == "agreement_policy":
        assert claims.get("agreement_id"), claims

    # Now at the second level: the same request is answered without any page.
    again = callback(rp, rp.follow(rp.authorize(**params)))
    assert id_token_claims(rp, again)["acr"] == ACR_MFA


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_prompt_none_with_trigger_and_password_session_is_interaction_required(trigger, client, factory, runtime,
                                                                                db):
    identity = factory.identity()
    pwd_session_with_authenticator(client, runtime, db, identity)
    rp, params = with_trigger(trigger, client, factory, db, identity)
    response = rp.authorize(prompt="none", state="st-none", **params)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert response.location.startswith(rp.redirect_uri + "?"), response.location
    result = query(response.location)
    assert result["error"] == "interaction_required", result
    assert result["state"] == "st-none"
    assert result["iss"] == "https://idp.test"
    assert "code" not in result


def test_prompt_none_with_trigger_and_no_authenticator_is_interaction_required(client, factory):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    rp = make_rp(client, factory, first_party=True)
    response = rp.authorize(prompt="none", acr_values=ACR_MFA)
    assert query(response.location)["error"] == "interaction_required"


def test_prompt_none_with_trigger_and_mfa_session_issues_a_code(app, factory, runtime, db):
    browser = app.test_client()
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)
    password_step(browser, identity.email)
    assert second_step(browser, phone.code()).status_code == 302
    rp = make_rp(browser, factory, first_party=True)
    result = callback(rp, rp.authorize(prompt="none", acr_values=ACR_MFA))
    claims = id_token_claims(rp, result)
    assert (claims["acr"], claims["amr"]) == (ACR_MFA, AMR_MFA)


@pytest.mark.parametrize("params", [
    {"acr_values": f"{ACR_MFA} {ACR_PWD}"},
    {"acr_values": f"{ACR_PWD} {ACR_MFA}"},
    {"acr_values": ACR_PWD},
    {"claims": json.dumps({"id_token": {"acr": {"essential": True, "value": ACR_PWD}}})},
    {"claims": json.dumps({"id_token": {"acr": {"essential": False, "value": ACR_MFA}}})},
    {"claims": json.dumps({"id_token": {"acr": {"values": [ACR_MFA]}}})},
], ids=["mfa-then-pwd", "pwd-then-mfa", "pwd", "essential-pwd", "voluntary-mfa", "mfa-not-essential"])
def test_requests_that_accept_the_password_level_need_no_step_up(params, client, factory, runtime, db):
    identity = factory.identity()
    pwd_session_with_authenticator(client, runtime, db, identity)
    rp = make_rp(client, factory, first_party=True)
    result = callback(rp, rp.follow(rp.authorize(**params)))
    claims = id_token_claims(rp, result)
    assert (claims["acr"], claims["amr"]) == (ACR_PWD, AMR_PWD)


def test_agreement_without_the_policy_needs_no_step_up(client, factory, runtime, db):
    identity = factory.identity()
    pwd_session_with_authenticator(client, runtime, db, identity)
    product = factory.product()
    factory.agreement(product, identity)
    scope = "openid profile email agreement"
    rp = make_rp(client, factory, first_party=True, product=product.id, scope=scope)
    claims = id_token_claims(rp, callback(rp, rp.follow(rp.authorize(scope=scope))))
    assert claims["acr"] == ACR_PWD and claims.get("agreement_id")


# -- ID token claims -------------------------------------------------------------

def test_id_tokens_show_the_level_and_step_up_keeps_auth_time(client, factory, runtime, db):
    identity = factory.identity()
    before = int(time.time())
    phone = pwd_session_with_authenticator(client, runtime, db, identity)
    rp = make_rp(client, factory, first_party=True)

    first = id_token_claims(rp, callback(rp, rp.follow(rp.authorize())))
    assert first["acr"] == ACR_PWD
    assert first["amr"] == AMR_PWD
    assert before <= first["auth_time"] <= int(time.time())

    time.sleep(1.05)  # auth_time has one-second resolution
    stepped = id_token_claims(rp, step_up(rp, rp.follow(rp.authorize(acr_values=ACR_MFA)), phone))
    assert stepped["acr"] == ACR_MFA
    assert stepped["amr"] == AMR_MFA
    assert stepped["auth_time"] == first["auth_time"], "step-up changed auth_time"
    assert stepped["sub"] == first["sub"]

    # Later requests without a trigger also carry the raised level.
    later = id_token_claims(rp, callback(rp, rp.follow(rp.authorize())))
    assert (later["acr"], later["amr"], later["auth_time"]) == (ACR_MFA, AMR_MFA, first["auth_time"])


def test_two_step_login_through_authorize_gives_mfa_tokens(client, factory, runtime, db):
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)
    rp = make_rp(client, factory, first_party=True)
    response = rp.login(rp.follow(rp.authorize(acr_values=ACR_MFA)), identity.email)
    assert response.status_code == 302 and path_of(response.location) == "/login/second-step", response.location
    response = second_step(client, phone.code())
    assert response.status_code == 302
    claims = id_token_claims(rp, callback(rp, rp.follow(response)))
    assert (claims["acr"], claims["amr"]) == (ACR_MFA, AMR_MFA)


def test_password_login_without_authenticator_gives_pwd_tokens(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, first_party=True)
    response = rp.follow(rp.login(rp.follow(rp.authorize()), identity.email))
    claims = id_token_claims(rp, callback(rp, response))
    assert (claims["acr"], claims["amr"]) == (ACR_PWD, AMR_PWD)
    assert isinstance(claims["auth_time"], int)


# -- max_age ----------------------------------------------------------------------

def test_max_age_asks_for_a_fresh_password_even_at_the_second_level(client, factory, runtime, db):
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)
    rp = make_rp(client, factory, first_party=True)
    password_step(client, identity.email)
    assert second_step(client, phone.code()).status_code == 302
    first = id_token_claims(rp, callback(rp, rp.follow(rp.authorize(acr_values=ACR_MFA))))
    assert first["acr"] == ACR_MFA

    time.sleep(1.05)
    # prompt=none cannot ask: login_required.
    assert query(rp.authorize(prompt="none", max_age="0").location)["error"] == "login_required"

    response = rp.follow(rp.authorize(max_age="0", acr_values=ACR_MFA))
    assert is_interaction(response, "login"), (response.status_code, response.location)
    response = rp.login(response, identity.email)
    assert path_of(response.location) == "/login/second-step"
    response = second_step(client, phone.code())
    claims = id_token_claims(rp, callback(rp, rp.follow(response)))
    assert claims["auth_time"] > first["auth_time"]
    assert (claims["acr"], claims["amr"]) == (ACR_MFA, AMR_MFA)


# -- the /stepup page -----------------------------------------------------------------

def test_stepup_rotates_the_session_id(app, client, factory, runtime, db):
    identity = factory.identity()
    phone = pwd_session_with_authenticator(client, runtime, db, identity)
    before = client.get_cookie(COOKIE).value
    response = post_code(client, "/stepup?return_to=/account/", code=phone.code())
    assert location_target(response) == "/account/"
    after = client.get_cookie(COOKIE).value
    assert after != before

    stolen = app.test_client()
    stolen.set_cookie(COOKIE, before)
    assert not signed_in(stolen), "the session id from before step-up still works"
    assert signed_in(client)


def test_wrong_code_at_stepup_keeps_the_password_level(client, factory, runtime, db):
    identity = factory.identity()
    phone = pwd_session_with_authenticator(client, runtime, db, identity)
    response = post_code(client, "/stepup?return_to=/account/", code=phone.wrong_code())
    assert response.status_code == 400
    assert 'id="totp-error"' in response.get_data(as_text=True)
    rp = make_rp(client, factory, first_party=True)
    assert query(rp.authorize(prompt="none", acr_values=ACR_MFA).location)["error"] == "interaction_required"


def test_stepup_is_locked_after_five_wrong_codes(client, factory, runtime, db):
    identity = factory.identity()
    phone = pwd_session_with_authenticator(client, runtime, db, identity)
    for _ in range(5):
        assert post_code(client, "/stepup?return_to=/account/", code=phone.wrong_code()).status_code == 400
    response = post_code(client, "/stepup?return_to=/account/", code=phone.code())
    assert response.status_code == 429
    assert "Too many attempts" in response.get_data(as_text=True)


def test_stepup_with_a_recovery_code(app, client, factory, runtime, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    _phone, codes = enrol_directly(runtime, db, identity)
    response = post_code(client, "/stepup?return_to=/account/", recovery_code=codes[0])
    assert location_target(response) == "/account/"
    rp = make_rp(client, factory, first_party=True)
    claims = id_token_claims(rp, callback(rp, rp.authorize(prompt="none", acr_values=ACR_MFA)))
    assert claims["acr"] == ACR_MFA

    again = app.test_client()
    assert path_of(password_step(again, identity.email).location) == "/login/second-step"
    assert second_step(again, recovery_code=codes[0]).status_code == 400  # spent at step-up


def test_stepup_without_a_session_signs_in_first_and_keeps_return_to(client):
    response = client.get("/stepup?" + urlencode({"return_to": "/account/"}))
    target = location_target(response)
    assert target.startswith("/login?next=")
    next_url = parse_qs(urlsplit(target).query)["next"][0]
    assert next_url.startswith("/stepup?")
    assert parse_qs(urlsplit(next_url).query)["return_to"] == ["/account/"]


UNSAFE_RETURN_TO = [
    "https://evil.example/",
    "http://evil.example",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "javascript:alert(1)",
    "evil.example",
    " //evil.example",
    "https:evil.example",
    "",
]


@pytest.mark.parametrize("return_to", UNSAFE_RETURN_TO)
def test_unsafe_return_to_falls_back_to_root(return_to, app, factory, runtime, db):
    identity = factory.identity()
    browser = app.test_client()
    phone = pwd_session_with_authenticator(browser, runtime, db, identity)
    path = "/stepup?" + urlencode({"return_to": return_to})
    # After the code ...
    response = post_code(browser, path, code=phone.code())
    assert location_target(response) == "/", response.location
    # ... and when already at the second level.
    assert location_target(browser.get(path)) == "/"
    assert "evil" not in response.location


def test_safe_return_to_is_kept(client, factory, runtime, db):
    identity = factory.identity()
    phone = pwd_session_with_authenticator(client, runtime, db, identity)
    target = "/account/?tab=two-step"
    response = post_code(client, "/stepup?" + urlencode({"return_to": target}), code=phone.code())
    assert location_target(response) == target


@pytest.mark.parametrize("return_to", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_unsafe_return_to_is_dropped_on_the_way_to_login_and_enrolment(return_to, app, factory):
    anonymous = app.test_client()
    target = location_target(anonymous.get("/stepup?" + urlencode({"return_to": return_to})))
    assert "evil" not in target

    browser = app.test_client()
    identity = factory.identity()
    sign_in_password_only(browser, identity.email)
    target = location_target(browser.get("/stepup?" + urlencode({"return_to": return_to})))
    assert target.startswith("/account/two-step/enrol"), target
    assert "evil" not in target
    # The enrolment page's own return_to is checked as well.
    page = browser.get("/account/two-step/enrol?" + urlencode({"return_to": return_to}))
    secret = SECRET_RE.search(page.get_data(as_text=True)).group(1)
    response = post_code(browser, "/account/two-step/enrol?" + urlencode({"return_to": return_to}),
                         step="confirm", code=Authenticator(secret).code())
    body = response.get_data(as_text=True)
    assert RECOVERY_RE.findall(body)
    assert 'id="recovery-continue"' in body
    link = re.search(r'<a href="([^"]*)" id="recovery-continue"', body)
    assert link and link.group(1) == "/account/", body[body.index("recovery-continue") - 200:][:300]

    # /login?next= too.
    other = app.test_client()
    response = password_step(other, identity.email, next_path=return_to)
    assert "evil" not in response.location


# -- no authenticator yet: enrol, then continue ---------------------------------------------

def test_no_authenticator_enrols_first_then_returns_to_the_request(client, factory, runtime, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    rp = make_rp(client, factory, first_party=True)

    stepup_path = open_stepup(rp, rp.follow(rp.authorize(acr_values=ACR_MFA)))
    return_to = parse_qs(urlsplit(stepup_path).query)["return_to"][0]
    response = client.get(stepup_path)
    enrol_path = location_target(response)
    assert urlsplit(enrol_path).path == "/account/two-step/enrol"
    assert parse_qs(urlsplit(enrol_path).query)["return_to"] == [return_to]

    page = client.get(enrol_path)
    assert page.status_code == 200
    secret = SECRET_RE.search(page.get_data(as_text=True)).group(1)
    response = post_code(client, enrol_path, step="confirm", code=Authenticator(secret).code())
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert len(RECOVERY_RE.findall(body)) == 10
    assert f'href="{return_to}"' in body, "the recovery-code page does not lead back to the request"

    claims = id_token_claims(rp, callback(rp, rp.follow(client.get(return_to))))
    assert (claims["acr"], claims["amr"]) == (ACR_MFA, AMR_MFA)
