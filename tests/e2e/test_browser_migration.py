"""Moving to the new login, in headless Chromium against the live IdP, with mail over real SMTP.

One person's journey and their time registrant's:
  switch to the new login with legacy credentials -> confirm the e-mail (link from the mail)
  -> sign in -> add a second agreement with its legacy credentials -> invite a time registrant
  (the own-e-mail box) -> the registrant accepts and creates a login -> the registrant signs in
  to the sample mobile app (clients/native_app: public client, PKCE, loopback redirect on an
  ephemeral port) and gets tokens for the agreement as a time registrant.
"""

from __future__ import annotations

import queue
import threading
import uuid

import pytest

from clients.native_app import Config, NativeApp
from idp.agreements.models import Agreement, Product
from idp.clients import service as clients
from idp.legacy_users.models import LegacyUser
from idp.legacy_users.service import legacy_context
from idp.mail import Mailer, MailSettings
from tests.e2e.test_browser_login import idp_base, log_in
from tests.helpers.smtp import links

pytestmark = pytest.mark.browser

NEW_PASSWORD = "Granite-Otter-Lantern-58"
REGISTRANT_PASSWORD = "Copper Heron Quarry 4417"
TIME_API = "http://127.0.0.1:9/time-api"


@pytest.fixture
def world(live_idp, monkeypatch, smtp_server):
    """Two agreements of one product with legacy users, a mobile client, mail to the test SMTP server."""
    runtime = live_idp.extensions["idp"]
    monkeypatch.setattr(runtime, "mailer", Mailer(MailSettings(host="127.0.0.1", port=smtp_server.port)))
    tag = uuid.uuid4().hex[:8]
    session = runtime.db.session_factory()
    try:
        product = Product(id=f"e-conomic-{tag}", name="e-conomic")
        first = Agreement(number=f"7{uuid.uuid4().int % 10**9:09d}", name=f"Skovbo Tømrer {tag}",
                          product_id=product.id, time_registrants_mobile_only=True)
        second = Agreement(number=f"8{uuid.uuid4().int % 10**9:09d}", name=f"Hansen Revision {tag}",
                           product_id=product.id)
        session.add_all([product, first, second])
        session.flush()
        sha512 = legacy_context.handler("sha512_crypt").using(rounds=1000)
        session.add_all([
            LegacyUser(agreement_id=first.id, username="kim", username_normalized="kim", email="kontor@skovbo.example",
                       role="superuser", password_hash=sha512.hash("gammel-kode-1")),
            LegacyUser(agreement_id=second.id, username="kim.l", username_normalized="kim.l", role="user",
                       password_hash=legacy_context.handler("md5_crypt").hash("hansen-2019")),
        ])
        session.commit()
        client_id = f"mobile-{tag}"
        clients.create_client(session, client_name="Time registration", product_id=product.id,
                              redirect_uris=["http://127.0.0.1/callback"], public=True, native=True, mobile_app=True,
                              client_id=client_id, metadata={"resources": [TIME_API]})
        yield {"first": (first.number, first.name), "second": (second.number, second.name), "client_id": client_id,
               "smtp": smtp_server, "tag": tag}
    finally:
        session.close()


def mailed_link(smtp, to: str, path: str) -> str:
    found = [url for url in links(smtp.wait_for(to)) if path in url]
    assert len(found) == 1, found
    return found[0]


def test_activate_add_agreement_invite_registrant_who_signs_in_to_the_mobile_app(chromium, page, shot, live_idp,
                                                                                  world, tmp_path):
    idp = idp_base(live_idp)
    smtp = world["smtp"]
    (first_number, first_name), (second_number, second_name) = world["first"], world["second"]
    kim = f"kim-{world['tag']}@skovbo.example"
    registrant = f"dora-{world['tag']}@skovbo.example"

    # 1. From the login page: switch to the new login with the old credentials.
    page.goto(idp + "/login")
    page.click("#switch-to-new-login")
    page.fill("#agreement_number", first_number)
    page.fill("#username", "Kim")
    page.fill("#legacy-password", "gammel-kode-1")
    shot(page, "legacy-credentials")
    page.click("#legacy-submit")
    page.wait_for_url(idp + "/agreements/activate/details")
    assert page.input_value("#email") == "kontor@skovbo.example"  # the shared office address, to be replaced
    page.fill("#email", kim)
    page.fill("#given_name", "Kim")
    page.fill("#family_name", "Larsen")
    page.fill("#password", NEW_PASSWORD)
    shot(page, "own-email-and-new-password")
    page.click("#details-submit")
    page.wait_for_selector("#check-mail")

    # 2. The link from the mail: confirm, then sign in with the new login.
    page.goto(mailed_link(smtp, kim, "/agreements/activate/confirm/"))
    page.click("#confirm-activation")
    page.wait_for_selector("#activated")
    shot(page, "switched")
    page.click("#sign-in")
    log_in(page, kim, NEW_PASSWORD)
    page.wait_for_url(idp + "/account/")

    # 3. Add the second agreement with its own old credentials.
    page.click("#add-agreement")
    page.click("#add-agreement-legacy")
    page.fill("#agreement_number", second_number)
    page.fill("#username", "kim.l")
    page.fill("#legacy-password", "hansen-2019")
    page.click("#legacy-submit")
    page.click("#attach-submit")
    page.wait_for_selector("#agreement-added")
    page.click("#to-agreements")
    listed = page.locator("#my-agreements li")
    assert listed.count() == 2
    assert "Superuser" in page.text_content(f'li[data-agreement="{first_number}"]')
    second_item = page.text_content(f'li[data-agreement="{second_number}"]')
    assert "User" in second_item and second_name in second_item
    shot(page, "two-agreements")

    # 4. Invite a time registrant: the box insists on the registrant's own address.
    page.click(f'li[data-agreement="{first_number}"] .manage-agreement')
    page.wait_for_selector("#agreement-name")
    page.fill("#invite-email", registrant)
    page.select_option("#invite-role", "time_registrant")
    page.click("#invite-submit")
    page.wait_for_selector("#registrant-box")
    assert page.text_content("#registrant-email") == registrant
    shot(page, "time-registrant-box")
    page.check("#own_email")
    page.click("#send-invitation")
    page.wait_for_selector("#admin-notice")
    assert page.locator(f'#invitations li[data-email="{registrant}"]').count() == 1
    invitation = mailed_link(smtp, registrant, "/agreements/invitations/")

    # 5. The registrant, in a browser of their own, accepts and creates a login.
    context = chromium.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    try:
        phone = context.new_page()
        phone.goto(invitation)
        phone.fill("#given_name", "Dora")
        phone.fill("#family_name", "Registrant")
        phone.fill("#password", REGISTRANT_PASSWORD)
        phone.click("#create-and-accept")
        phone.wait_for_selector("#invitation-accepted")
        shot(phone, "registrant-accepted")

        # 6. The sample mobile app signs in through this browser (loopback redirect, PKCE).
        urls: queue.Queue[str] = queue.Queue()
        app = NativeApp(Config(issuer=idp, client_id=world["client_id"], time_api=TIME_API,
                               state_dir=tmp_path / "native"), open_browser=urls.put, out=lambda text: None)
        outcome: dict = {}

        def sign_in():
            try:
                outcome["claims"] = app.login(timeout=30)
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = error

        thread = threading.Thread(target=sign_in, daemon=True)
        thread.start()
        phone.goto(urls.get(timeout=10))
        phone.wait_for_url(lambda url: "/consent" in url)  # already signed in; one agreement fits
        shot(phone, "mobile-consent")
        phone.click("#consent-allow")
        phone.wait_for_url(lambda url: url.startswith("http://127.0.0.1:") and "/callback?" in url)
        assert "Signed in." in phone.text_content("body")
        thread.join(timeout=15)
        assert "error" not in outcome, outcome.get("error")
        claims = outcome["claims"]
        assert claims["email"] == registrant
        assert claims["agreement_id"] == first_number and claims["agreement_role"] == "time_registrant"
        assert claims["agreement_name"] == first_name
    finally:
        context.close()
