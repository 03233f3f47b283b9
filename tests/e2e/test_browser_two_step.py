"""Two-step verification through the real pages, in headless Chromium.

Set up an authenticator on the IdP's account page (secret read from the page,
codes from pyotp), then sign in through a live sample RP with password + code.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pyotp
import pytest

from tests.e2e.test_browser_login import idp_base, is_idp_login, log_in
from tests.helpers.factories import PASSWORD

pytestmark = pytest.mark.browser

ACR_MFA = "urn:connect-idp:acr:mfa"


def claim(page, name: str) -> str:
    return page.text_content(f'#claims tr[data-claim="{name}"] td:nth-child(2)').strip()


def test_enrol_on_account_page_then_sign_in_to_rp_with_a_code(chromium, page, shot, factory, live_idp, rp2):
    idp = idp_base(live_idp)
    identity = factory.identity()

    # 1. Sign in to the IdP itself and open the account page.
    page.goto(idp + "/login")
    log_in(page, identity.email, PASSWORD)
    page.wait_for_url(idp + "/account/")
    assert page.text_content("#account-email") == identity.email
    assert "Off" in page.text_content("#two-step-status")
    shot(page, "account-two-step-off")

    # 2. Set up: an inline SVG QR code and the key in text.
    page.click("#two-step-enrol")
    page.wait_for_url(lambda url: urlsplit(url).path == "/account/two-step/enrol")
    assert page.locator("#totp-qr svg").count() == 1
    assert page.locator("#totp-qr svg").bounding_box()["width"] > 50
    secret = page.text_content("#totp-secret").strip()
    assert len(secret) >= 16
    shot(page, "enrol-qr-and-secret")

    totp = pyotp.TOTP(secret)
    page.fill("#code", totp.now())
    page.click("#enrol-confirm")
    page.wait_for_load_state()
    codes = page.locator("#recovery-codes li").all_text_contents()
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    enrolled_at = time.time()
    shot(page, "recovery-codes")

    page.click("#recovery-continue")
    page.wait_for_url(idp + "/account/")
    assert "10 unused recovery codes" in page.text_content("#two-step-status")

    # 3. A fresh browser profile: sign in through the RP, with the second step.
    context = chromium.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    try:
        rp_page = context.new_page()
        rp_page.goto(rp2.base_url + "/")
        rp_page.click("#signin")
        rp_page.wait_for_url(lambda url: is_idp_login(url, idp))
        log_in(rp_page, identity.email, PASSWORD)
        rp_page.wait_for_url(idp + "/login/second-step")
        assert rp_page.locator("#code").is_visible()
        assert rp_page.locator("#user-email").count() == 0
        shot(rp_page, "second-step")

        # The next time step: the enrolment code's step is spent (replay refused).
        code = totp.at(max(time.time(), enrolled_at) + 30)
        rp_page.fill("#code", f"{code[:3]} {code[3:]}")  # typed with a space, as people do
        rp_page.click("#code-submit")
        rp_page.wait_for_url(rp2.base_url + "/")
        assert rp_page.text_content("#user-email") == identity.email
        assert rp_page.text_content("#user-sub") == identity.id
        assert claim(rp_page, "acr") == ACR_MFA
        amr = claim(rp_page, "amr")
        assert "otp" in amr and "mfa" in amr, amr
        shot(rp_page, "rp-signed-in-with-two-steps")
    finally:
        context.close()


def test_enrol_page_qr_code_is_drawn_whole(page, shot, factory, live_idp):
    """The whole code is on screen (all three finder patterns): the drawing must fit
    inside the box the page gives the SVG, or phones cannot scan it."""
    idp = idp_base(live_idp)
    identity = factory.identity()
    page.goto(idp + "/login?next=/account/two-step/enrol")
    log_in(page, identity.email, PASSWORD)
    page.wait_for_url(idp + "/account/two-step/enrol")
    shot(page, "enrol-qr")
    fit = page.eval_on_selector("#totp-qr svg", """svg => {
        const box = svg.getBoundingClientRect(), drawn = svg.querySelector('path').getBoundingClientRect();
        return {box: [box.width, box.height], drawn: [drawn.left - box.left, drawn.top - box.top,
                                                     drawn.right - box.left, drawn.bottom - box.top]};
    }""")
    width, height = fit["box"]
    left, top, right, bottom = fit["drawn"]
    assert left >= -0.5 and top >= -0.5 and right <= width + 0.5 and bottom <= height + 0.5, \
        f"QR code clipped: drawn {fit['drawn']} in a {width}x{height} box"
