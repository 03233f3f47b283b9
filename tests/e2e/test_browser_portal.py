"""The developer portal in headless Chromium (issue 6): create an app, copy its secret
from the page with the Copy button, use it at the token endpoint, rotate it, and see
the old secret stop working once the overlap is over.

The IdP here is a live server of its own (same database as the session ``app``)
with a 3-second rotation overlap, so the overlap can be waited out. Token requests
go over real HTTP with ``requests``, the way an integrator's server would make them.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from idp.app import create_app
from tests.e2e.conftest import LiveServer
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import pkce_pair

pytestmark = pytest.mark.browser

OVERLAP = 3
CALLBACK = "https://books.example/callback"


@pytest.fixture(scope="module")
def portal_idp(app, settings):
    server = LiveServer("127.0.0.1")
    live = create_app(settings.with_(issuer=f"http://127.0.0.1:{server.port}", cookie_secure=False,
                                     secret_rotation_overlap=OVERLAP))
    server.start(live)
    try:
        yield live.extensions["idp"].settings.issuer
    finally:
        server.stop()
        live.extensions["idp"].db.dispose()


@pytest.fixture
def clipboard_page(page, portal_idp):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal_idp)
    return page


def sign_in_to_portal(page, idp: str, email: str) -> None:
    page.goto(idp + "/developer/")
    page.wait_for_url(lambda url: urlsplit(url).path == "/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(idp + "/developer/")


def create_app_in_portal(page, kind: str, name: str, redirect_uris: str = "", shot=None) -> None:
    page.click("#create-app")
    page.wait_for_url(lambda url: urlsplit(url).path == "/developer/apps/new")
    page.check(f"#kind-{kind}")
    page.fill("#client_name", name)
    if redirect_uris:
        page.fill("#redirect_uris", redirect_uris)
    if shot:
        shot(page, f"create-{kind}-form")
    page.click("#create-submit")
    page.wait_for_selector("#client-id")


def copy_secret(page) -> str:
    """Press the page's Copy button and read what it put on the clipboard."""
    button = page.locator("#copy-secret")
    assert button.is_visible()  # portal.js reveals it
    button.click()
    page.wait_for_function("() => document.getElementById('copy-secret').textContent === 'Copied'")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.input_value("#client-secret")
    assert len(copied) >= 43
    return copied


def client_credentials(idp: str, client_id: str, secret: str) -> requests.Response:
    return requests.post(idp + "/token", data={"grant_type": "client_credentials", "scope": "profile"},
                         auth=(client_id, secret), timeout=10)


def test_web_app_secret_from_the_page_redeems_a_code(clipboard_page, shot, factory, portal_idp):
    page, idp = clipboard_page, portal_idp
    identity = factory.identity()
    sign_in_to_portal(page, idp, identity.email)
    assert page.locator("#no-apps").is_visible()
    shot(page, "portal-empty")

    name = unique("Partner Books")
    create_app_in_portal(page, "web", name, CALLBACK, shot=shot)
    assert page.text_content("#app-kind") == "Web app"
    assert "shown only now" in page.text_content("#secret-once")
    client_id = page.text_content("#client-id")
    shot(page, "web-app-created")
    secret = copy_secret(page)

    # The secret is not shown again: the app's page and the list do not have it.
    page.click("#app-details")
    page.wait_for_selector("#rotate-secret")
    assert secret not in page.content() and page.text_content("#client-id") == client_id
    page.click("#portal-home")
    assert name in page.text_content("#app-list")

    # A person signs in to the new app (third-party: consent), the browser is
    # sent to its callback (caught here: books.example does not exist) ...
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    callbacks: list[str] = []

    def catch(route):
        callbacks.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p id='rp'>callback</p>")

    page.route(CALLBACK + "*", catch)
    page.goto(idp + "/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "scope": "openid email",
        "state": state, "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256"}))
    page.wait_for_url(lambda url: urlsplit(url).path.endswith("/consent"))
    assert name in page.text_content("main")
    shot(page, "consent-for-new-app")
    page.click("#consent-allow")
    page.wait_for_selector("#rp")
    params = {k: v[0] for k, v in parse_qs(urlsplit(callbacks[-1]).query).items()}
    assert params["state"] == state

    # ... and its server redeems the code with the copied secret.
    response = requests.post(idp + "/token", data={"grant_type": "authorization_code", "code": params["code"],
                                                   "redirect_uri": CALLBACK, "code_verifier": verifier},
                             auth=(client_id, secret), timeout=10)
    assert response.status_code == 200, response.text
    assert {"access_token", "id_token"} <= set(response.json())


def test_rotate_in_the_browser_old_secret_stops_after_the_overlap(clipboard_page, shot, factory, portal_idp):
    page, idp = clipboard_page, portal_idp
    sign_in_to_portal(page, idp, factory.identity().email)

    create_app_in_portal(page, "m2m", unique("Nightly export"))
    assert page.text_content("#app-kind") == "Machine to machine"
    client_id = page.text_content("#client-id")
    old = copy_secret(page)
    shot(page, "m2m-created")
    first = client_credentials(idp, client_id, old)
    assert first.status_code == 200, first.text
    assert first.json()["token_type"] == "Bearer"

    page.click("#app-details")
    page.wait_for_selector("#rotate-secret")
    assert page.locator("#save-uris").count() == 0  # machine-to-machine: no redirect URIs
    page.click("#rotate-secret")
    page.wait_for_selector("#client-secret")
    rotated_at = time.monotonic()
    assert page.text_content("#client-id") == client_id
    assert f"keeps working for {OVERLAP} seconds" in page.text_content("#overlap-note")
    new = copy_secret(page)
    assert new != old
    shot(page, "secret-rotated")

    # During the overlap both work ...
    assert client_credentials(idp, client_id, new).status_code == 200
    assert time.monotonic() - rotated_at < OVERLAP, "too slow to check the overlap"
    assert client_credentials(idp, client_id, old).status_code == 200

    # ... after it only the new one.
    time.sleep(max(0.0, OVERLAP + 0.5 - (time.monotonic() - rotated_at)))
    refused = client_credentials(idp, client_id, old)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert client_credentials(idp, client_id, new).status_code == 200

    page.click("#app-details")
    page.wait_for_selector("#rotate-secret")
    assert page.locator("#previous-secret").count() == 0  # the overlap is over
    assert old not in page.content() and new not in page.content()
    shot(page, "after-overlap")
