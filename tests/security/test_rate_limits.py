"""Request rate limits (issue 10, Security): token, registration, password reset (per
IP and per address), invitations, the agreements API and the strength meter.

Past its limit a caller gets 429 with ``Retry-After`` in whole seconds (the rest
of the window), a JSON error on API paths and an HTML page on pages; the next
window lets it in again. Runs on ``limited_app`` (rate_limit_factor 1) with tiny
limits patched into idp.policies.rate_limits.LIMITS and a fake clock there, so
nothing sleeps and each test starts at a known point of its window.
"""

from __future__ import annotations

import base64
import re

import pytest

from idp.policies import rate_limits
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import csrf_token
from tests.protocol.test_agreements_api import access_token
from tests.protocol.test_agreements_authorize import add_agreement, agreement_rp
from tests.security.conftest import new_ip

LIMIT = 3
WINDOW = 60
OFFSET = 7  # seconds into the window when a test starts


@pytest.fixture
def window_clock(clock):
    """A fake clock in rate_limits, OFFSET seconds into a WINDOW-second window."""
    clock.now = (int(clock.now) // WINDOW) * WINDOW + OFFSET
    return clock.patch(rate_limits)


@pytest.fixture
def tiny(monkeypatch):
    """tiny(bucket, allowed=LIMIT): give ``bucket`` a limit of ``allowed`` per WINDOW seconds."""

    def set_limit(bucket: str, allowed: int = LIMIT, window: int = WINDOW):
        assert bucket in rate_limits.LIMITS
        monkeypatch.setitem(rate_limits.LIMITS, bucket, (allowed, window))

    return set_limit


def browser_at(app, ip: str | None = None):
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = ip or new_ip()
    return browser


def assert_limited(response, *, json_body: bool, window: int = WINDOW):
    assert response.status_code == 429, (response.status_code, response.get_data(as_text=True)[:300])
    retry_after = response.headers.get("Retry-After", "")
    assert re.fullmatch(r"[0-9]+", retry_after), f"Retry-After must be whole seconds: {retry_after!r}"
    assert int(retry_after) == window - OFFSET, retry_after
    if json_body:
        assert response.mimetype == "application/json", response.mimetype
        body = response.get_json()
        assert body["error"] == "rate_limited" and body.get("error_description"), body
    else:
        assert response.mimetype == "text/html", response.mimetype
        assert "Too many requests" in response.get_data(as_text=True)


def assert_not_limited(response):
    assert response.status_code != 429, response.get_data(as_text=True)[:300]


def exhaust(send, limit: int = LIMIT):
    """Call ``send()`` ``limit`` times (each must pass the limit); return the next response."""
    for n in range(limit):
        response = send()
        assert response.status_code != 429, (n, response.get_data(as_text=True)[:300])
    return send()


# -- token endpoint -----------------------------------------------------------------------------------------


def _basic(client_id: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_token_endpoint_per_client(limited_app, factory, tiny, window_clock):
    tiny("token")
    client, secret = factory.client()
    other, other_secret = factory.client()
    browser = browser_at(limited_app)

    def redeem(client_id=client.client_id, key=secret):
        return browser.post("/token", data={"grant_type": "authorization_code", "code": "not-a-code",
                                            "redirect_uri": "https://rp.example/cb"}, headers=_basic(client_id, key))

    assert_limited(exhaust(redeem), json_body=True)
    assert_limited(redeem(), json_body=True)
    # Per client: another client at the same IP still gets an OAuth answer.
    assert redeem(other.client_id, other_secret).get_json()["error"] == "invalid_grant"
    # The next window lets the client in again.
    window_clock.advance(WINDOW)
    assert redeem().get_json()["error"] == "invalid_grant"


def test_token_endpoint_without_client_id_is_limited_per_ip(limited_app, tiny, window_clock):
    tiny("token")
    browser = browser_at(limited_app)
    assert_limited(exhaust(lambda: browser.post("/token", data={"grant_type": "client_credentials"})), json_body=True)
    assert_not_limited(browser_at(limited_app).post("/token", data={"grant_type": "client_credentials"}))


# -- registration -------------------------------------------------------------------------------------------


def test_registration_per_ip(limited_app, tiny, window_clock):
    tiny("register")
    browser = browser_at(limited_app)

    def register():
        return browser.post("/register", json={"client_name": "Spam", "redirect_uris": ["https://spam.example/cb"]})

    assert_limited(exhaust(register), json_body=True)
    assert_not_limited(browser_at(limited_app).post("/register", json={}))
    window_clock.advance(WINDOW)
    assert_not_limited(register())


# -- password reset -----------------------------------------------------------------------------------------


def _forgot(browser, email: str, ip: str | None = None):
    page = browser.get("/account/password/forgot")
    assert page.status_code == 200
    extra = {"environ_overrides": {"REMOTE_ADDR": ip}} if ip else {}
    return browser.post("/account/password/forgot", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                          "email": email}, **extra)


def test_password_reset_per_ip(limited_app, tiny, window_clock):
    tiny("password_reset")
    browser = browser_at(limited_app)
    limited = exhaust(lambda: _forgot(browser, f"{unique('reset')}@example.com"))
    assert_limited(limited, json_body=False)
    assert_not_limited(_forgot(browser_at(limited_app), f"{unique('reset')}@example.com"))
    window_clock.advance(WINDOW)
    response = _forgot(browser, f"{unique('reset')}@example.com")
    assert response.status_code == 200


def test_password_reset_per_address(limited_app, factory, tiny, window_clock):
    tiny("password_reset_address")
    identity = factory.identity()
    browser = browser_at(limited_app)
    # A different IP each time: only the address is counted against its limit.
    limited = exhaust(lambda: _forgot(browser, identity.email.upper(), ip=new_ip()))
    assert_limited(limited, json_body=False)
    # The address is normalised: another spelling of it is the same bucket.
    assert_limited(_forgot(browser, f"  {identity.email}  ", ip=new_ip()), json_body=False)
    assert _forgot(browser, f"{unique('other')}@example.com", ip=new_ip()).status_code == 200
    window_clock.advance(WINDOW)
    assert _forgot(browser, identity.email, ip=new_ip()).status_code == 200


# -- agreements API ---------------------------------------------------------------------------------------


def test_agreements_api_per_token_subject(limited_app, client, factory, db, tiny, window_clock):
    tiny("agreements_api")
    product = factory.product()
    identity = factory.identity()
    agreement = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)
    token = access_token(rp, identity, agreement.number)
    browser = browser_at(limited_app)

    def call():
        return browser.get("/api/v1/me/agreements", headers={"Authorization": f"Bearer {token}"})

    first = call()
    assert first.status_code == 200, first.get_json()
    assert_limited(exhaust(call, LIMIT - 1), json_body=True)
    window_clock.advance(WINDOW)
    assert call().status_code == 200


# -- password strength meter ------------------------------------------------------------------------------


def test_password_strength_per_ip(limited_app, tiny, window_clock):
    tiny("password_strength")
    browser = browser_at(limited_app)
    token = csrf_token(browser.get("/account/signup").get_data(as_text=True))

    def strength():
        return browser.post("/account/password/strength", json={"password": "correct horse"},
                            headers={"X-CSRFToken": token})

    first = strength()
    assert first.status_code == 200, first.get_data(as_text=True)[:300]
    assert_limited(exhaust(strength, LIMIT - 1), json_body=True)
    window_clock.advance(WINDOW)
    assert strength().status_code == 200


# -- invitations ------------------------------------------------------------------------------------------


class _Outbox:
    def __init__(self):
        self.sent = []

    def send(self, to, subject, text, html=None):
        self.sent.append(to)


def test_invitations_per_inviting_identity(limited_app, factory, tiny, window_clock, monkeypatch):
    tiny("invitation", allowed=2, window=3600)
    runtime = limited_app.extensions["idp"]
    monkeypatch.setattr(runtime, "mailer", _Outbox())
    product = factory.product()
    admin = factory.identity()
    agreement = factory.agreement(product, admin, role="superuser")
    browser = browser_at(limited_app)
    page = browser.get("/login")
    signed_in = browser.post("/login", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                             "email": admin.email, "password": PASSWORD, "action": "login"})
    assert signed_in.status_code == 302
    manage = browser.get(f"/agreements/{agreement.number}/")
    assert manage.status_code == 200, manage.status_code
    token = csrf_token(manage.get_data(as_text=True))

    def invite():
        return browser.post(f"/agreements/{agreement.number}/invitations",
                            data={"csrf_token": token, "email": f"{unique('invitee')}@example.com", "role": "user"})

    for _ in range(2):
        assert invite().status_code == 302
    response = invite()
    assert response.status_code == 429, (
        f"the invitation endpoint is not rate limited (LIMITS['invitation'] is never hit): {response.status_code}")
    assert response.headers.get("Retry-After", "").isdigit()
