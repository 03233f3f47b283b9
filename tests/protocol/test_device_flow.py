"""OAuth 2.0 Device Authorization Grant (RFC 8628): /device_authorization, the
/device verification page and polling the token endpoint."""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import urlsplit

import pytest

from idp.clients import service as clients
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import RP, csrf_token, path_of

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid profile email offline_access"


def device_rp(browser, db, *, public=True, grant_types=("authorization_code", "refresh_token", DEVICE_GRANT),
              scope=SCOPE + " agreement") -> RP:
    row, secret = clients.create_client(
        db, client_name=unique("TV app"), redirect_uris=["https://rp.example/cb"], client_id=unique("device"),
        public=public, scope=scope, grant_types=list(grant_types))
    return RP(browser, row.client_id, secret, "https://rp.example/cb")


def auth(rp: RP, data: dict) -> tuple[dict, dict]:
    if rp.client_secret is None:
        return {**data, "client_id": rp.client_id}, {}
    basic = base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
    return data, {"Authorization": f"Basic {basic}"}


def start(rp: RP, scope=SCOPE):
    data, headers = auth(rp, {"scope": scope})
    return rp.browser.post("/device_authorization", data=data, headers=headers)


def started(rp: RP, scope=SCOPE) -> dict:
    response = start(rp, scope)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers.get("Cache-Control") == "no-store"
    body = response.get_json()
    assert set(body) >= {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in",
                         "interval"}
    return body


def poll(rp: RP, device_code: str, browser=None):
    data, headers = auth(rp, {"grant_type": DEVICE_GRANT, "device_code": device_code})
    return (browser or rp.browser).post("/token", data=data, headers=headers)


def assert_poll_error(response, error):
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == error, body
    assert "access_token" not in body
    return body


def sign_in(browser, identity):
    """Sign in at the IdP itself (the person's phone or laptop)."""
    page = browser.get("/login")
    assert page.status_code == 200
    response = browser.post("/login", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "email": identity.email, "password": PASSWORD, "action": "login"})
    assert response.status_code == 302, response.status_code


def enter_code(browser, user_code: str):
    page = browser.get("/device")
    assert page.status_code == 200
    return browser.post("/device", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                         "user_code": user_code})


def decide(browser, user_code: str, decision: str):
    confirm = enter_code(browser, user_code)
    assert confirm.status_code == 200, confirm.get_data(as_text=True)[:400]
    html = confirm.get_data(as_text=True)
    assert 'id="device-allow"' in html
    response = browser.post("/device", data={"csrf_token": csrf_token(html), "user_code": user_code,
                                             "decision": decision})
    assert response.status_code == 200, response.get_data(as_text=True)[:400]
    return response


@pytest.fixture
def fast_polling(monkeypatch):
    monkeypatch.setattr("idp.oidc.device.INTERVAL", 0)


def test_device_flow_full(app, client, factory, db, fast_polling):
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp)
    assert body["verification_uri"] == "https://idp.test/device"
    assert body["verification_uri_complete"].startswith("https://idp.test/device?user_code=")
    assert body["interval"] == 5 and body["expires_in"] > 0
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", body["user_code"])

    assert_poll_error(poll(rp, body["device_code"]), "authorization_pending")

    phone = app.test_client()
    sign_in(phone, identity)
    # verification_uri_complete pre-fills the code and shows what the device asks for.
    confirm = phone.get(path_of(body["verification_uri_complete"]))
    assert confirm.status_code == 200
    html = confirm.get_data(as_text=True)
    assert body["user_code"] in html and 'data-scope="offline_access"' in html
    done = phone.post("/device", data={"csrf_token": csrf_token(html), "user_code": body["user_code"],
                                       "decision": "allow"})
    assert done.status_code == 200

    response = poll(rp, body["device_code"])
    assert response.status_code == 200, response.get_data(as_text=True)
    tokens = response.get_json()
    assert tokens["token_type"].lower() == "bearer"
    assert "offline_access" in tokens["scope"].split()
    claims = rp.verify_id_token(tokens["id_token"])
    assert claims["sub"] == identity.id  # aud and iss checked by verify_id_token
    assert claims["auth_time"] and claims["amr"] == ["pwd"]
    assert claims["email"] == identity.email
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.get_json()["sub"] == identity.id

    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    assert refreshed.get_json()["refresh_token"] != tokens["refresh_token"]
    assert rp.verify_id_token(refreshed.get_json()["id_token"])["sub"] == identity.id


def test_device_flow_without_offline_access_has_no_refresh_token(app, client, factory, db, fast_polling):
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp, scope="openid profile")
    phone = app.test_client()
    sign_in(phone, identity)
    decide(phone, body["user_code"], "allow")
    tokens = poll(rp, body["device_code"]).get_json()
    assert "access_token" in tokens and "id_token" in tokens
    assert "refresh_token" not in tokens


def test_device_flow_confidential_client(app, client, factory, db, fast_polling):
    identity = factory.identity()
    rp = device_rp(client, db, public=False)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    decide(phone, body["user_code"], "allow")
    assert poll(rp, body["device_code"]).status_code == 200


def test_device_confidential_client_must_authenticate(client, db):
    rp = device_rp(client, db, public=False)
    response = client.post("/device_authorization", data={"client_id": rp.client_id, "scope": "openid"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_authorization_pending(client, db, fast_polling):
    rp = device_rp(client, db)
    body = started(rp)
    for _ in range(3):
        assert_poll_error(poll(rp, body["device_code"]), "authorization_pending")


def test_slow_down_when_polling_faster_than_the_interval(client, db, monkeypatch):
    monkeypatch.setattr("idp.oidc.device.INTERVAL", 0.5)
    rp = device_rp(client, db)
    body = started(rp)
    assert_poll_error(poll(rp, body["device_code"]), "authorization_pending")
    assert_poll_error(poll(rp, body["device_code"]), "slow_down")
    time.sleep(0.6)
    assert_poll_error(poll(rp, body["device_code"]), "authorization_pending")


def test_access_denied_after_deny(app, client, factory, db, fast_polling):
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    decide(phone, body["user_code"], "deny")
    assert_poll_error(poll(rp, body["device_code"]), "access_denied")
    # The user code is spent: entering it again does not reopen the request.
    assert enter_code(phone, body["user_code"]).status_code == 400


def test_expired_token(client, db, monkeypatch, fast_polling):
    """§3.5: once the device code has expired the device gets ``expired_token``."""
    monkeypatch.setattr("idp.oidc.device.EXPIRES_IN", 1)
    rp = device_rp(client, db)
    body = started(rp)
    time.sleep(1.3)
    assert_poll_error(poll(rp, body["device_code"]), "expired_token")


def test_expired_user_code_is_refused_on_the_page(app, client, factory, db, monkeypatch):
    monkeypatch.setattr("idp.oidc.device.EXPIRES_IN", 1)
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    time.sleep(1.3)
    assert enter_code(phone, body["user_code"]).status_code == 400


def test_device_code_is_single_use(app, client, factory, db, fast_polling):
    """RFC 6749 §5.2: a used grant is ``invalid_grant``."""
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    decide(phone, body["user_code"], "allow")
    assert poll(rp, body["device_code"]).status_code == 200
    second = poll(rp, body["device_code"])
    assert_poll_error(second, "invalid_grant")


def test_device_code_of_another_client(app, client, factory, db, fast_polling):
    """RFC 6749 §5.2: a grant "issued to another client" is ``invalid_grant``; no
    tokens either way, and the rightful device still gets its tokens."""
    identity = factory.identity()
    rp = device_rp(client, db)
    thief = device_rp(client, db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    decide(phone, body["user_code"], "allow")
    assert_poll_error(poll(thief, body["device_code"]), "invalid_grant")
    assert poll(rp, body["device_code"]).status_code == 200


@pytest.mark.parametrize("transform", [str.lower, lambda c: c.replace("-", ""),
                                       lambda c: " " + c.lower().replace("-", " ") + " "])
def test_user_code_is_case_and_dash_insensitive(app, client, factory, db, fast_polling, transform):
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    decide(phone, transform(body["user_code"]), "allow")
    assert poll(rp, body["device_code"]).status_code == 200


def test_user_code_brute_force_is_throttled(app, client, factory, db):
    identity = factory.identity()
    rp = device_rp(client, db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    for i in range(10):
        assert enter_code(phone, f"BBBB-BB{'BCDFGHJKLM'[i]}B").status_code == 400
    # The eleventh try is refused, even with the right code.
    response = enter_code(phone, body["user_code"])
    assert response.status_code == 429
    assert 'id="device-allow"' not in response.get_data(as_text=True)


def test_client_without_the_grant_type_is_unauthorized_client(client, db):
    rp = device_rp(client, db, grant_types=("authorization_code", "refresh_token"))
    response = start(rp)
    assert response.status_code == 400
    assert response.get_json()["error"] == "unauthorized_client"


def test_client_without_the_grant_type_cannot_poll(client, db):
    rp = device_rp(client, db, grant_types=("authorization_code", "refresh_token"))
    assert_poll_error(poll(rp, "whatever"), "unauthorized_client")


def test_agreement_scope_is_invalid_scope(client, db):
    rp = device_rp(client, db)
    response = start(rp, scope="openid agreement")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


def test_unregistered_scope_is_invalid_scope(client, db):
    rp = device_rp(client, db, scope="openid profile")
    response = start(rp, scope="openid email")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


def test_device_page_requires_sign_in(client):
    response = client.get("/device?user_code=BCDF-GHJK")
    assert response.status_code == 302
    target = urlsplit(response.location)
    assert target.path == "/login" and "next=" in target.query and "device" in target.query
    posted = client.post("/device", data={"user_code": "BCDF-GHJK", "decision": "allow"})
    assert posted.status_code in (302, 400)
    if posted.status_code == 302:
        assert urlsplit(posted.location).path == "/login"


def test_device_page_after_sign_in_returns_to_the_code(app, factory, db):
    identity = factory.identity()
    rp = device_rp(app.test_client(), db)
    body = started(rp)
    phone = app.test_client()
    response = phone.get(path_of(body["verification_uri_complete"]))
    login_path = path_of(response.location)
    page = phone.get(login_path)
    response = phone.post(login_path, data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "email": identity.email, "password": PASSWORD, "action": "login"})
    assert response.status_code == 302
    back = phone.get(path_of(response.location))
    assert back.status_code == 200 and body["user_code"] in back.get_data(as_text=True)


def test_device_decision_requires_csrf(app, factory, db):
    identity = factory.identity()
    rp = device_rp(app.test_client(), db)
    body = started(rp)
    phone = app.test_client()
    sign_in(phone, identity)
    response = phone.post("/device", data={"user_code": body["user_code"], "decision": "allow"})
    assert response.status_code == 400
    assert_poll_error(poll(rp, body["device_code"]), "authorization_pending")
