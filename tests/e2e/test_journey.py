"""The whole journey of issue 8 in one real browser: several products, one login.

A bookkeeper with 500 agreements in two products opens the accounting RP (e-conomic
stand-in) → signs in at the IdP → finds an agreement by search in the chooser → lands
in the RP with that agreement in the header → opens the invoicing RP (Dinero stand-in)
and is signed in without a password (SSO) → switches agreement from the RP's menu
without a password (prompt=none) → approves a payment, whose API answers with the
RFC 9470 challenge, so the IdP's step-up page asks for a TOTP code → signs out of the
invoicing RP, which signs them out of the IdP and (back-channel) of the accounting RP.

Both RPs are clients/web_rp, live on http://localhost:<port>, registered with their
product, a post-logout redirect URI and a back-channel logout URI. Screenshots:
test-artifacts/journey-NN-<step>.png.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from tests.clients.live import new_product, person_with_agreements, start_product_rp
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_browser_login import idp_base, is_idp_consent, is_idp_login, record_navigations
from tests.helpers.factories import PASSWORD

pytestmark = pytest.mark.browser

ACR_MFA = "urn:connect-idp:acr:mfa"
ACCOUNTING_COUNT, INVOICING_COUNT = 400, 100
CAFE, CAFE_AT = "Fjordblå Kaffebar ApS", 287          # found in the chooser by search
BIKES, BIKES_AT = "Nordlys Cykler ApS", 77             # switched to in the invoicing RP


def _accounting_name(i: int) -> str:
    return CAFE if i == CAFE_AT else f"Regnskabskunde {i:03d} ApS"


def _invoicing_name(i: int) -> str:
    return BIKES if i == BIKES_AT else f"Fakturakunde {i:03d} I/S"


@pytest.fixture(scope="module")
def world(app, live_idp):
    session = app.extensions["idp"].db.session_factory()
    try:
        economic, dinero = new_product(session, "e-conomic"), new_product(session, "Dinero")
    finally:
        session.close()
    person = person_with_agreements(app, {
        economic: [(_accounting_name(i), "superuser" if i == CAFE_AT else "user") for i in range(ACCOUNTING_COUNT)],
        dinero: [(_invoicing_name(i), "superuser" if i == BIKES_AT else "user") for i in range(INVOICING_COUNT)],
    })
    accounting = start_product_rp(live_idp, "Accounting", economic, first_party=False, label="e-conomic")
    invoicing = start_product_rp(live_idp, "Invoicing", dinero, first_party=True, label="dinero")
    try:
        yield {"person": person, "accounting": accounting, "invoicing": invoicing,
               "cafe": person["numbers"][economic][CAFE_AT], "bikes": person["numbers"][dinero][BIKES_AT]}
    finally:
        accounting.stop()
        invoicing.stop()


@pytest.fixture
def snap():
    """snap(page, "step") saves test-artifacts/journey-NN-step.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("journey-*.png"):
        old.unlink()
    counter = iter(range(1, 100))

    def save(page, step: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"journey-{next(counter):02d}-{step}.png"), full_page=True)

    return save


def _header(page) -> tuple[str, str, str]:
    return (page.text_content("#agreement-name").strip(), page.text_content("#agreement-number").strip(),
            page.text_content("#agreement-role").strip())


def _claim(page, name: str) -> str:
    return page.text_content(f'#claims tr[data-claim="{name}"] td:nth-child(2)').strip()


def _is_idp_page(url: str, idp: str, suffix: str) -> bool:
    path = urlsplit(url).path
    return url.startswith(idp) and path.endswith(suffix)


def test_journey(page, snap, live_idp, world):
    idp = idp_base(live_idp)
    accounting, invoicing, person = world["accounting"], world["invoicing"], world["person"]
    started = time.monotonic()

    # 1. The accounting RP, signed out.
    page.goto(accounting.base_url + "/")
    assert page.text_content("#rp-name") == "Accounting"
    assert page.locator("#signed-out").is_visible()
    snap(page, "accounting-signed-out")

    # 2. Sign in at the IdP with e-mail and password.
    page.click("#signin")
    page.wait_for_url(lambda url: is_idp_login(url, idp))
    page.fill("#email", person["email"])
    page.fill("#password", PASSWORD)
    snap(page, "idp-login")
    page.click("#login-submit")

    # 3. The chooser: 400 e-conomic agreements (only this product's), found by search;
    #    then the third-party RP asks for consent.
    page.wait_for_url(lambda url: _is_idp_page(url, idp, "/agreement"))
    assert page.locator("#agreement-list button.agreement").count() == 50
    page.locator("#agreement-q").press_sequentially("kaffeb", delay=15)
    page.wait_for_function("() => document.querySelectorAll('#agreement-list button.agreement').length === 1")
    assert CAFE in page.text_content("#agreement-list")
    snap(page, "chooser-search")
    page.click(f"#agreement-list button.agreement[value='{world['cafe']}']")
    page.wait_for_url(lambda url: is_idp_consent(url, idp))
    snap(page, "idp-consent")
    page.click("#consent-allow")

    # 4. Back in the accounting RP, working in that agreement.
    page.wait_for_url(accounting.base_url + "/")
    assert page.text_content("#user-email") == person["email"]
    assert _header(page) == (CAFE, world["cafe"], "Superuser")
    assert _claim(page, "agreement_product") == accounting.product
    snap(page, "accounting-agreement-in-header")

    # 5. The invoicing RP: signed in with no password (SSO); its own product's chooser.
    page.goto(invoicing.base_url + "/")
    assert page.locator("#signed-out").is_visible()
    navigations = record_navigations(page)
    page.click("#signin")
    page.wait_for_url(lambda url: _is_idp_page(url, idp, "/agreement"))
    listed = page.locator("#agreement-list button.agreement").evaluate_all("els => els.map(e => e.value)")
    assert len(listed) == 50 and world["cafe"] not in listed  # Dinero agreements only
    snap(page, "invoicing-sso-chooser")
    page.click("#agreement-list button.agreement >> nth=0")
    page.wait_for_url(invoicing.base_url + "/")
    assert not [u for u in navigations if is_idp_login(u, idp)], navigations  # no password asked
    assert page.text_content("#user-email") == person["email"]
    assert _header(page)[1] == listed[0]
    snap(page, "invoicing-signed-in")

    # 6. Switch agreement from the RP's menu: server-side search via the agreements API,
    #    then a silent prompt=none authorization (no IdP page is shown).
    page.click("#switcher-toggle")
    page.fill("#switch-q", "nordlys")
    page.click("#switch-search")
    page.wait_for_url(lambda url: "q=nordlys" in url)
    assert page.locator("#switch-list button.switch-to").count() == 1
    snap(page, "invoicing-switcher-search")
    navigations = record_navigations(page)
    page.click(f"#switch-list button.switch-to[value='{world['bikes']}']")
    page.wait_for_url(invoicing.base_url + "/")
    assert _header(page) == (BIKES, world["bikes"], "Superuser")
    authorize = [u for u in navigations if u.startswith(idp + "/authorize")]
    assert len(authorize) == 1, navigations
    query = parse_qs(urlsplit(authorize[0]).query)
    assert query["prompt"] == ["none"] and query["agreement_hint"] == [world["bikes"]]
    assert not [u for u in navigations if u.startswith(idp) and "/interaction/" in u], navigations
    snap(page, "invoicing-switched")

    # 7. The person sets up an authenticator on their phone (out of band: this browser's
    #    session stays at the password level), then approves a payment. The payments API
    #    answers with the RFC 9470 challenge; the RP sends them to step up.
    secret = pyotp.random_base32()
    runtime = live_idp.extensions["idp"]
    db = runtime.db.session_factory()
    try:
        runtime.totp.enrol(db, person["id"], secret)
    finally:
        db.close()
    page.click("#nav-payments")
    page.wait_for_url(invoicing.base_url + "/payments")
    payment = page.get_attribute("tr[data-payment] >> nth=0", "data-payment")
    snap(page, "payments")
    page.click(f"#approve-{payment}")
    page.wait_for_url(lambda url: _is_idp_page(url, idp, "/stepup"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["return_to"][0].startswith("/authorize/resume/")  # back into the same authorization
    page.fill("#code", pyotp.TOTP(secret).now())
    snap(page, "stepup-totp")
    page.click("#code-submit")
    page.wait_for_url(invoicing.base_url + "/payments")
    assert f"Payment {payment} approved." in page.text_content("#messages")
    assert page.locator(f"tr[data-payment='{payment}'] .approved").is_visible()
    assert _header(page)[1] == world["bikes"]  # still the same agreement
    snap(page, "payment-approved")
    page.click("#nav-home")
    assert _claim(page, "acr") == ACR_MFA

    # 8. Sign out of the invoicing RP: RP-initiated logout at the IdP, straight back.
    page.click("#signout")
    page.wait_for_url(invoicing.base_url + "/")
    assert page.locator("#signed-out").is_visible()
    snap(page, "invoicing-signed-out")

    # 9. The accounting RP learnt it over the back channel: signed out on reload.
    deadline = time.monotonic() + 5
    page.goto(accounting.base_url + "/")
    while page.locator("#signed-out").count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        page.reload()
    assert page.locator("#signed-out").is_visible()
    assert "You were signed out." in page.text_content("#messages")
    snap(page, "accounting-signed-out-by-backchannel")

    # 10. And out of the IdP: signing in again asks for the password.
    page.click("#signin")
    page.wait_for_url(lambda url: is_idp_login(url, idp))
    assert page.locator("#password").is_visible()
    snap(page, "idp-login-again")

    assert time.monotonic() - started < 45
