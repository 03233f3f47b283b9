"""The agreement chooser in headless Chromium, for a bookkeeper with 2,000 agreements.

The browser goes to the live IdP's /authorize (scope ``openid agreement``) for a
product-neutral first-party client whose redirect URI is the live sample RP's
/callback; landing there with ?code= is the end of the browser part (the sample
RP itself asks for "openid profile email" and knows nothing of this request, so
the test redeems the code at /token itself).
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.request
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pytest
from sqlalchemy import insert

from idp.agreements.models import Agreement, Membership, Product
from idp.clients import service as clients
from idp.identities import service as identities
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import pkce_pair

pytestmark = pytest.mark.browser

COUNT = 2000
TARGET = 1234  # far beyond the 50 the chooser shows first
NO_JS_TARGET = 1777
SCOPE = "openid agreement"


def _name(i: int) -> str:
    if i == TARGET:
        return "Fjordblå Kaffebar ApS"
    return f"Customer {i:04d} ApS"


@pytest.fixture(scope="module")
def bookkeeper(app):
    """A person with 2,000 agreements (bulk-inserted: one INSERT per table)."""
    session = app.extensions["idp"].db.session_factory()
    try:
        identity = identities.create_identity(
            session, app.extensions["idp"].passwords, email=f"bookkeeper-{uuid.uuid4().hex[:10]}@example.com",
            password=PASSWORD, given_name="Busy", family_name="Bookkeeper", email_verified=True)
        product = Product(id=f"product-{uuid.uuid4().hex[:10]}", name="Bookkeeping")
        session.add(product)
        session.commit()
        prefix = "".join(secrets.choice("0123456789") for _ in range(8))
        agreements = [{"id": str(uuid.uuid4()), "number": f"{prefix}{i:04d}", "name": _name(i),
                       "product_id": product.id} for i in range(COUNT)]
        session.execute(insert(Agreement.__table__), agreements)
        session.execute(insert(Membership.__table__),
                        [{"identity_id": identity.id, "agreement_id": a["id"], "role": "user"} for a in agreements])
        session.commit()
        return {"email": identity.email, "sub": identity.id, "numbers": [a["number"] for a in agreements]}
    finally:
        session.close()


@pytest.fixture(scope="module")
def desk(live_idp, rp2):
    """A product-neutral first-party client that may ask for ``agreement``, redirecting to the live RP."""
    client_id = f"e2e-agreements-{uuid.uuid4().hex[:8]}"
    secret = "e2e-secret-" + uuid.uuid4().hex
    with live_idp.app_context():
        session = live_idp.extensions["idp"].db.session
        try:
            clients.create_client(session, client_name="Agreement Desk", redirect_uris=[rp2.redirect_uri],
                                  client_id=client_id, client_secret=secret, first_party=True,
                                  scope="openid profile email agreement")
        finally:
            session.remove()
    return {"client_id": client_id, "secret": secret, "redirect_uri": rp2.redirect_uri,
            "idp": live_idp.extensions["idp"].settings.issuer}


def _authorize_url(desk) -> tuple[str, dict]:
    verifier, challenge = pkce_pair()
    request = {"state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8), "verifier": verifier}
    params = {"response_type": "code", "client_id": desk["client_id"], "redirect_uri": desk["redirect_uri"],
              "scope": SCOPE, "state": request["state"], "nonce": request["nonce"],
              "code_challenge": challenge, "code_challenge_method": "S256"}
    return desk["idp"] + "/authorize?" + urlencode(params), request


def _is_chooser(url: str, idp: str) -> bool:
    path = urlsplit(url).path
    return url.startswith(idp) and path.startswith("/interaction/") and path.endswith("/agreement")


def _log_in(page, email: str) -> None:
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")


def _listed(page) -> list[str]:
    return page.locator("#agreement-list button.agreement").evaluate_all("els => els.map(e => e.value)")


def _code_at_callback(page, desk, request) -> str:
    page.wait_for_url(lambda url: url.startswith(desk["redirect_uri"] + "?"))
    params = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert "error" not in params, params
    assert params["state"] == request["state"]
    assert params["iss"] == desk["idp"]
    return params["code"]


def _redeem(desk, code: str, request) -> dict:
    """POST /token over real HTTP and verify the ID token with PyJWT against /jwks."""
    data = urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": desk["redirect_uri"],
                      "code_verifier": request["verifier"]}).encode()
    basic = base64.b64encode(f"{desk['client_id']}:{desk['secret']}".encode()).decode()
    token_request = urllib.request.Request(desk["idp"] + "/token", data=data,
                                           headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(token_request, timeout=10) as response:
        body = json.load(response)
    with urllib.request.urlopen(desk["idp"] + "/jwks", timeout=10) as response:
        jwks = json.load(response)
    header = pyjwt.get_unverified_header(body["id_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    return pyjwt.decode(body["id_token"], pyjwt.PyJWK(key).key, algorithms=[header["alg"]],
                        audience=desk["client_id"], issuer=desk["idp"])


def test_search_2000_agreements_with_instant_filtering(page, shot, bookkeeper, desk):
    target = bookkeeper["numbers"][TARGET]
    url, request = _authorize_url(desk)
    page.goto(url)
    _log_in(page, bookkeeper["email"])
    page.wait_for_url(lambda u: _is_chooser(u, desk["idp"]))
    chooser_url = page.url
    listed = _listed(page)
    assert len(listed) == 50 and target not in listed  # a page, not 2,000 buttons
    shot(page, "chooser")

    navigations: list[str] = []
    page.on("request", lambda req: navigations.append(req.url)
            if req.is_navigation_request() and req.frame == page.main_frame else None)
    page.locator("#agreement-q").press_sequentially("kaffeb", delay=20)
    page.wait_for_function("() => document.querySelectorAll('#agreement-list button.agreement').length === 1")
    assert _listed(page) == [target]
    assert "Fjordblå Kaffebar ApS" in page.text_content("#agreement-list")
    assert page.url == chooser_url and navigations == []  # filtered in place, no page load
    shot(page, "filtered")

    page.click(f"#agreement-list button.agreement[value='{target}']")
    claims = _redeem(desk, _code_at_callback(page, desk, request), request)
    assert claims["sub"] == bookkeeper["sub"]
    assert claims["nonce"] == request["nonce"]
    assert claims["agreement_id"] == target
    assert claims["agreement_name"] == "Fjordblå Kaffebar ApS"


def test_search_form_works_without_javascript(chromium, shot, bookkeeper, desk):
    target = bookkeeper["numbers"][NO_JS_TARGET]
    context = chromium.new_context(locale="en-US", java_script_enabled=False)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        url, request = _authorize_url(desk)
        page.goto(url)
        _log_in(page, bookkeeper["email"])
        page.wait_for_url(lambda u: _is_chooser(u, desk["idp"]))
        assert target not in _listed(page)

        # Enter in the search box submits the form to the server.
        page.fill("#agreement-q", "customer 17")
        page.press("#agreement-q", "Enter")
        page.wait_for_url(lambda u: _is_chooser(u, desk["idp"]) and "q=" in u)
        listed = _listed(page)
        assert len(listed) == 50 and listed == sorted(listed)  # Customer 1700..1749 of 100 matches
        assert all(bookkeeper["numbers"].index(n) // 100 == 17 for n in listed)
        shot(page, "server-search-enter")

        # The search button does the same; a number prefix finds exactly one.
        page.fill("#agreement-q", target)
        page.click("#agreement-search")
        page.wait_for_url(lambda u: _is_chooser(u, desk["idp"]) and target in u)
        assert _listed(page) == [target]
        assert page.input_value("#agreement-q") == target
        shot(page, "server-search-button")

        page.click(f"#agreement-list button.agreement[value='{target}']")
        claims = _redeem(desk, _code_at_callback(page, desk, request), request)
        assert claims["agreement_id"] == target
        assert claims["agreement_name"] == f"Customer {NO_JS_TARGET:04d} ApS"
    finally:
        context.close()
