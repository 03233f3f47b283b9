"""Login and consent through the real pages, in headless Chromium.

The IdP and two sample RPs run as live HTTP servers (see conftest.py); the
browser clicks through them the way a person would.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlencode, urlsplit

import pytest

from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import pkce_pair

pytestmark = pytest.mark.browser


def idp_base(live_idp) -> str:
    return live_idp.extensions["idp"].settings.issuer


def is_idp_login(url: str, idp: str) -> bool:
    parts = urlsplit(url)
    return url.startswith(idp) and parts.path.startswith("/interaction/") and parts.path.endswith("/login")


def is_idp_consent(url: str, idp: str) -> bool:
    parts = urlsplit(url)
    return url.startswith(idp) and parts.path.startswith("/interaction/") and parts.path.endswith("/consent")


def record_navigations(page) -> list[str]:
    """Every top-level document URL the browser requests, redirects included."""
    urls: list[str] = []
    page.on("request", lambda req: urls.append(req.url)
            if req.is_navigation_request() and req.frame == page.main_frame else None)
    return urls


def log_in(page, email: str, password: str) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_load_state()


def test_login_consent_then_sso_to_second_rp(page, shot, factory, live_idp, rp1, rp2):
    idp = idp_base(live_idp)
    identity = factory.identity()

    # RP1 (third-party): signed out, offers a sign-in link.
    page.goto(rp1.base_url + "/")
    assert page.text_content("#rp-name") == rp1.name
    assert page.locator("#user-email").count() == 0
    shot(page, "rp1-signed-out")

    page.click("#signin")
    page.wait_for_url(lambda url: is_idp_login(url, idp))
    assert page.locator("#password").is_visible()
    assert rp1.name in page.text_content("main")
    shot(page, "idp-login")

    log_in(page, identity.email, PASSWORD)
    page.wait_for_url(lambda url: is_idp_consent(url, idp))
    scopes = page.locator("#consent-scopes li").evaluate_all("els => els.map(e => e.dataset.scope)")
    assert {"openid", "profile", "email"} <= set(scopes), scopes
    assert identity.email in page.text_content("main")
    shot(page, "idp-consent")

    page.click("#consent-allow")
    page.wait_for_url(rp1.base_url + "/")
    assert page.text_content("#user-email") == identity.email
    assert page.text_content("#user-sub") == identity.id
    shot(page, "rp1-signed-in")

    # RP2 (first-party) in the same browser: the IdP session signs the person in
    # with no password and no consent page (single sign-on).
    page.goto(rp2.base_url + "/")
    assert page.locator("#user-email").count() == 0
    shot(page, "rp2-signed-out")
    navigations = record_navigations(page)
    page.click("#signin")
    page.wait_for_url(rp2.base_url + "/")
    assert page.text_content("#user-email") == identity.email
    assert page.text_content("#user-sub") == identity.id
    shot(page, "rp2-signed-in-by-sso")

    assert any(url.startswith(idp + "/authorize") for url in navigations), navigations
    assert not [url for url in navigations if is_idp_login(url, idp) or is_idp_consent(url, idp)], navigations
    assert any(url.startswith(rp2.redirect_uri + "?") for url in navigations), navigations


def test_wrong_password_shows_error_and_keeps_email(page, shot, factory, live_idp, rp2):
    idp = idp_base(live_idp)
    identity = factory.identity()

    page.goto(rp2.base_url + "/")
    page.click("#signin")
    page.wait_for_url(lambda url: is_idp_login(url, idp))
    login_url = page.url

    log_in(page, identity.email, PASSWORD + "-wrong")
    error = page.locator("#login-error")
    assert error.is_visible()
    assert "not correct" in error.text_content()
    assert page.url == login_url  # still the same login interaction
    assert page.input_value("#email") == identity.email
    assert page.input_value("#password") == ""
    shot(page, "wrong-password")

    log_in(page, page.input_value("#email"), PASSWORD)  # only the password is typed again
    page.wait_for_url(rp2.base_url + "/")
    assert page.text_content("#user-email") == identity.email
    assert page.text_content("#user-sub") == identity.id
    shot(page, "signed-in-after-retry")


def test_login_page_in_danish_with_ui_locales(page, shot, live_idp, rp1):
    idp = idp_base(live_idp)
    _verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": rp1.client_id, "redirect_uri": rp1.redirect_uri,
              "scope": "openid", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
              "code_challenge": challenge, "code_challenge_method": "S256", "ui_locales": "da"}

    page.goto(idp + "/authorize?" + urlencode(params))
    page.wait_for_url(lambda url: is_idp_login(url, idp))
    assert page.get_attribute("html", "lang") == "da"
    assert page.locator("#password").is_visible()
    shot(page, "login-da")

    # Without ui_locales (and an English browser) the same page is English.
    params["ui_locales"] = None
    page.context.clear_cookies()
    page.goto(idp + "/authorize?" + urlencode({k: v for k, v in params.items() if v}))
    page.wait_for_url(lambda url: is_idp_login(url, idp))
    assert page.get_attribute("html", "lang") == "en"
    assert re.search(r"/interaction/[^/]+/login$", urlsplit(page.url).path)
