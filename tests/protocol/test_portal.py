"""The developer portal (/developer, issue 6): a signed-in person creates and manages
their own OAuth clients.

Every kind of app is made through the form and checked in the database and at the
token endpoint; the secret is shown once and stored as a keyed hash; a rotation
keeps the old secret working for the configured overlap (a second app built with a
2-second overlap shows it stop); URIs are edited with the registration validator's
messages; deleting revokes the app's tokens; apps are shared by e-mail; nobody else
can see or change an app; every form needs its CSRF token.
"""

from __future__ import annotations

import base64
import html
import re
import time

import pytest
from sqlalchemy import select

from idp.app import create_app
from idp.clients import service as clients
from idp.clients.models import Client, ClientOwner
from idp.grants.models import AccessToken
from idp.security import hasher
from idp.storage.db import utcnow
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import RP, csrf_token

WEB_CB = "https://app.example/callback"
CSRF_EXPIRED = "This form has expired"
CLIENT_ID = re.compile(r'<code id="client-id">([^<]+)</code>')
SECRET = re.compile(r'id="client-secret"[^>]*value="([^"]+)"')


# -- helpers ---------------------------------------------------------------------------

def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def sign_in(browser, identity) -> None:
    page = browser.get("/login")
    response = browser.post("/login", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "email": identity.email, "password": PASSWORD, "action": "login"})
    assert response.status_code == 302, response.status_code


@pytest.fixture
def person(factory):
    return factory.identity()


@pytest.fixture
def browser(client, person):
    """The Flask test client, signed in as ``person``."""
    sign_in(client, person)
    return client


def other_browser(app, identity):
    browser = app.test_client()
    sign_in(browser, identity)
    return browser


def token_of(browser) -> str:
    return csrf_token(browser.get("/developer/apps/new").get_data(as_text=True))


def create(browser, kind="web", name=None, redirect_uris=WEB_CB, logout_uris="", csrf=True, **extra):
    data = {"kind": kind, "client_name": name or unique("App"), "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": logout_uris, **extra}
    if csrf:
        data["csrf_token"] = csrf_token(browser.get("/developer/apps/new").get_data(as_text=True))
    return browser.post("/developer/apps/new", data=data)


def created(response) -> tuple[str, str | None]:
    """(client_id, secret or None) from the page shown after creation or rotation."""
    assert response.status_code in (200, 201), (response.status_code, text(response)[:2000])
    body = text(response)
    secret = SECRET.search(body)
    return CLIENT_ID.search(body).group(1), secret.group(1) if secret else None


def post(browser, path, csrf=True, **data):
    if csrf:
        data["csrf_token"] = token_of(browser)
    return browser.post(path, data=data)


def basic(client_id, secret) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def client_credentials(browser, client_id, secret):
    return browser.post("/token", data={"grant_type": "client_credentials", "scope": "agreement"},
                        headers=basic(client_id, secret))


def fresh(db, client_id) -> Client | None:
    db.expire_all()
    return db.get(Client, client_id)


def owners(db, client_id) -> set[str]:
    db.expire_all()
    return set(db.execute(select(ClientOwner.identity_id).where(ClientOwner.client_id == client_id)).scalars())


# -- access ------------------------------------------------------------------------------

def test_portal_needs_a_sign_in(client):
    response = client.get("/developer/apps/new")
    assert response.status_code == 302
    assert response.location.startswith("/login?next=/developer/apps/new")


def test_empty_portal_links_creation(browser):
    page = browser.get("/developer/")
    assert page.status_code == 200
    assert 'id="no-apps"' in text(page)
    assert 'href="/developer/apps/new"' in text(page)


# -- creating each kind ------------------------------------------------------------------

KINDS = {
    # kind: (redirect URIs typed, application_type, auth method, grant types, has a secret)
    "web": (WEB_CB, "web", "client_secret_basic", ["authorization_code", "refresh_token"], True),
    "spa": ("https://spa.example/\nhttps://spa.example/silent", "web", "none",
            ["authorization_code", "refresh_token"], False),
    "native": ("http://127.0.0.1/callback\ncom.example.books:/oauth", "native", "none",
               ["authorization_code", "refresh_token"], False),
    "m2m": ("", "web", "client_secret_basic", ["client_credentials"], True),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_create_each_kind(browser, db, person, kind):
    uris, application_type, method, grants, has_secret = KINDS[kind]
    name = unique("Books")
    response = create(browser, kind, name=name, redirect_uris=uris,
                      logout_uris="https://spa.example/bye" if kind == "spa" else "")
    assert response.status_code == 201
    client_id, secret = created(response)
    row = fresh(db, client_id)
    assert row.client_name == name
    assert row.application_type == application_type
    assert row.token_endpoint_auth_method == method
    assert row.grant_types == grants
    assert row.response_types == ([] if kind == "m2m" else ["code"])
    assert row.redirect_uris == [u for u in uris.splitlines() if u]
    assert row.post_logout_redirect_uris == (["https://spa.example/bye"] if kind == "spa" else [])
    assert row.first_party is False and row.product_id is None
    assert row.registration_access_token_hash is None
    assert owners(db, client_id) == {person.id}
    if has_secret:
        assert secret and len(secret) >= 43  # ≥ 256 bits, base64url
        # Only a keyed hash is stored; the page said it is shown once.
        assert row.client_secret_hash == hasher().hash(secret) != secret
        assert "shown only now" in text(response)
        assert row.check_client_secret(secret)
    else:
        assert secret is None and row.client_secret_hash is None
        assert 'id="no-secret"' in text(response)
    # The secret never appears again: not in the app's page, not in the list.
    listing = text(browser.get("/developer/"))
    assert client_id in listing and name in listing
    details = browser.get(f"/developer/apps/{client_id}")
    assert details.status_code == 200 and client_id in text(details)
    if secret:
        assert secret not in text(details) and secret not in listing
    assert details.headers["Cache-Control"] == "no-store"
    assert response.headers["Cache-Control"] == "no-store"


def test_secret_page_has_no_inline_script(browser):
    body = text(create(browser, "web"))
    scripts = re.findall(r"<script[^>]*>", body)
    assert scripts == ['<script src="/static/portal.js">']
    assert re.search(r"<script[^>]*>\s*[^<\s]", body) is None
    assert browser.get("/static/portal.js").status_code == 200


def test_created_m2m_secret_gets_a_token(browser):
    client_id, secret = created(create(browser, "m2m", redirect_uris=""))
    response = client_credentials(browser, client_id, secret)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "Bearer"
    assert client_credentials(browser, client_id, secret + "x").status_code == 401


def test_portal_never_makes_a_first_party_client(browser, db, factory, app):
    client_id, secret = created(create(browser, "web", first_party="1", token_endpoint_auth_method="none",
                                       grant_types="client_credentials", product="x"))
    row = fresh(db, client_id)
    assert row.first_party is False
    assert row.token_endpoint_auth_method == "client_secret_basic" and "client_credentials" not in row.grant_types
    # ... so a person signing in to it is asked for consent.
    rp = RP(browser, client_id, secret, WEB_CB)
    response = rp.follow(rp.authorize())
    assert response.status_code == 302 and "/consent" in response.location


@pytest.mark.parametrize("kind,uris,logout,message", [
    ("web", "http://app.example/cb", "", "web clients must use https"),
    ("web", "https://app.example/cb#x", "", "must not contain a fragment"),
    ("web", "https://*.example/cb", "", "wildcards are not allowed"),
    ("spa", "/callback", "", "is not an absolute URI"),
    ("web", WEB_CB, "http://app.example/bye", "web clients must use https"),
    ("web", "https://[app.example/cb", "", "is not a valid URI"),
    ("native", "books:/cb", "", "reverse-domain scheme"),
    ("native", "http://localhost/cb", "", "loopback IP"),
    ("web", "", "", "Enter at least one redirect URI"),
    ("m2m", WEB_CB, "", "Machine-to-machine apps have no redirect URIs"),
    ("desktop", WEB_CB, "", "Choose what kind of app this is"),
])
def test_create_shows_validation_errors(browser, db, person, kind, uris, logout, message):
    before = {c.client_id for c in clients.owned_by(db, person.id)}
    name = unique("Rejected")
    response = create(browser, kind, name=name, redirect_uris=uris, logout_uris=logout)
    assert response.status_code == 400
    body = text(response)
    assert 'id="form-errors"' in body and message in body, body
    # What was typed is kept for correcting.
    assert f'value="{name}"' in body
    if uris:
        assert uris in body
    db.expire_all()
    assert {c.client_id for c in clients.owned_by(db, person.id)} == before
    assert db.execute(select(Client).where(Client.client_name == name)).first() is None


def test_create_needs_a_name(browser):
    response = create(browser, "web", name=" ")
    assert response.status_code == 400
    assert "Give the app a name" in text(response)


def test_control_characters_are_refused_not_a_500(browser, db, person):
    """NUL cannot be stored in PostgreSQL text: the portal refuses control characters
    in names, URIs, e-mail addresses and app ids before they reach the database."""
    response = create(browser, "web", name="Books\x00")
    assert response.status_code == 400 and "control characters" in text(response)
    response = create(browser, "web", redirect_uris="https://app.example/c\x00b")
    assert response.status_code == 400 and "is not a valid URI" in text(response)
    client_id, _ = created(create(browser, "web"))
    response = post(browser, f"/developer/apps/{client_id}/uris", redirect_uris="https://app.example/\x01",
                    post_logout_redirect_uris="")
    assert response.status_code == 400 and "is not a valid URI" in text(response)
    response = post(browser, f"/developer/apps/{client_id}/owners", email="a\x00@example.com")
    assert response.status_code == 400 and "Enter a valid e-mail address" in text(response)
    assert owners(db, client_id) == {person.id}
    assert browser.get("/developer/apps/a%00b").status_code == 404


# -- rotating the secret ----------------------------------------------------------------

def test_rotate_keeps_the_old_secret_for_the_overlap(browser, db, runtime):
    assert runtime.settings.secret_rotation_overlap == 24 * 3600
    client_id, old = created(create(browser, "m2m", redirect_uris=""))
    page = browser.get(f"/developer/apps/{client_id}")
    assert "1 day" in text(page)  # the page says how long the old one keeps working
    response = post(browser, f"/developer/apps/{client_id}/rotate")
    assert response.status_code == 200
    same_id, new = created(response)
    assert same_id == client_id and new and new != old
    body = text(response)
    assert "The previous secret keeps working for 1 day" in body and "shown only now" in body
    row = fresh(db, client_id)
    assert row.client_secret_hash == hasher().hash(new)
    assert row.previous_secret_hash == hasher().hash(old)
    remaining = (row.previous_secret_expires_at - row.created_at).total_seconds()
    assert 24 * 3600 - 60 < remaining <= 24 * 3600 + 60
    assert client_credentials(browser, client_id, new).status_code == 200
    assert client_credentials(browser, client_id, old).status_code == 200
    assert 'id="previous-secret"' in text(browser.get(f"/developer/apps/{client_id}"))
    assert new not in text(browser.get(f"/developer/apps/{client_id}"))


@pytest.fixture(scope="module")
def short_overlap_app(app, settings):
    """The same IdP (same database) with a 2-second rotation overlap."""
    application = create_app(settings.with_(secret_rotation_overlap=2))
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


def test_old_secret_stops_working_after_the_overlap(short_overlap_app, factory, db):
    browser = other_browser(short_overlap_app, factory.identity())
    client_id, old = created(create(browser, "m2m", redirect_uris=""))
    response = post(browser, f"/developer/apps/{client_id}/rotate")
    _, new = created(response)
    assert "The previous secret keeps working for 2 seconds" in text(response)
    row = fresh(db, client_id)
    assert client_credentials(browser, client_id, old).status_code == 200
    # Wait until the recorded end of the overlap has passed, then a little more.
    wait = (row.previous_secret_expires_at - utcnow()).total_seconds()
    assert 0 < wait <= 2
    time.sleep(max(wait, 0) + 0.5)
    refused = client_credentials(browser, client_id, old)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"
    assert client_credentials(browser, client_id, new).status_code == 200


def test_rotating_twice_ends_the_first_secret(browser, db):
    client_id, first = created(create(browser, "m2m", redirect_uris=""))
    _, second = created(post(browser, f"/developer/apps/{client_id}/rotate"))
    _, third = created(post(browser, f"/developer/apps/{client_id}/rotate"))
    assert client_credentials(browser, client_id, first).status_code == 401
    assert client_credentials(browser, client_id, second).status_code == 200
    assert client_credentials(browser, client_id, third).status_code == 200


def test_public_app_has_no_secret_to_rotate(browser, db):
    client_id, _ = created(create(browser, "spa", redirect_uris="https://spa.example/"))
    assert 'id="rotate-secret"' not in text(browser.get(f"/developer/apps/{client_id}"))
    response = post(browser, f"/developer/apps/{client_id}/rotate")
    assert response.status_code == 400
    assert "no secret to rotate" in text(response)
    assert fresh(db, client_id).client_secret_hash is None


# -- editing URIs -------------------------------------------------------------------------

def test_edit_redirect_and_logout_uris(browser, db):
    client_id, _ = created(create(browser, "web"))
    response = post(browser, f"/developer/apps/{client_id}/uris",
                    redirect_uris=" https://app.example/a \r\n\r\nhttps://app.example/b\n",
                    post_logout_redirect_uris="https://app.example/bye")
    assert response.status_code == 302
    assert response.location == f"/developer/apps/{client_id}?saved=1"
    row = fresh(db, client_id)
    assert row.redirect_uris == ["https://app.example/a", "https://app.example/b"]
    assert row.post_logout_redirect_uris == ["https://app.example/bye"]
    # Nothing else changed: still a confidential third-party web app.
    assert row.token_endpoint_auth_method == "client_secret_basic" and row.first_party is False
    assert row.grant_types == ["authorization_code", "refresh_token"]
    page = text(browser.get(response.location))
    assert 'id="app-saved"' in page and "https://app.example/b" in page


@pytest.mark.parametrize("uris,logout,message", [
    ("http://app.example/cb", "", "web clients must use https"),
    ("https://app.example/cb#frag", "", "must not contain a fragment"),
    ("https://app.example/*", "", "wildcards are not allowed"),
    ("", "", "Enter at least one redirect URI"),
    (WEB_CB, "javascript:alert(1)", "web clients must use https"),
    ("https://[::1/cb", "", "is not a valid URI"),
])
def test_edit_uris_is_validated(browser, db, uris, logout, message):
    client_id, _ = created(create(browser, "web"))
    response = post(browser, f"/developer/apps/{client_id}/uris", redirect_uris=uris,
                    post_logout_redirect_uris=logout)
    assert response.status_code == 400
    body = text(response)
    assert 'id="form-errors"' in body and message in body
    if uris:
        assert uris in body  # kept in the textarea for correcting
    row = fresh(db, client_id)
    assert row.redirect_uris == [WEB_CB] and row.post_logout_redirect_uris == []


def test_edit_native_uris(browser, db):
    client_id, _ = created(create(browser, "native", redirect_uris="com.example.books:/cb"))
    ok = post(browser, f"/developer/apps/{client_id}/uris",
              redirect_uris="http://[::1]/cb\ncom.example.books:/cb2", post_logout_redirect_uris="")
    assert ok.status_code == 302
    assert fresh(db, client_id).redirect_uris == ["http://[::1]/cb", "com.example.books:/cb2"]
    bad = post(browser, f"/developer/apps/{client_id}/uris", redirect_uris="books:/cb", post_logout_redirect_uris="")
    assert bad.status_code == 400 and "reverse-domain scheme" in text(bad)
    assert fresh(db, client_id).application_type == "native"


def test_m2m_app_has_no_uris_to_edit(browser, db):
    client_id, _ = created(create(browser, "m2m", redirect_uris=""))
    assert 'id="save-uris"' not in text(browser.get(f"/developer/apps/{client_id}"))
    response = post(browser, f"/developer/apps/{client_id}/uris", redirect_uris=WEB_CB,
                    post_logout_redirect_uris="")
    assert response.status_code == 400
    assert fresh(db, client_id).redirect_uris == []


# -- deleting -----------------------------------------------------------------------------

def test_delete_asks_first_then_revokes_tokens(browser, db, person):
    client_id, secret = created(create(browser, "web"))
    # A person signs in to the app (third-party: consent) and it gets tokens.
    rp = RP(browser, client_id, secret, WEB_CB)
    code = rp.sign_in(person.email, scope="openid email offline_access", prompt="consent")["code"]
    tokens = rp.token(code).get_json()
    assert "refresh_token" in tokens, tokens
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert browser.get("/userinfo", headers=bearer).status_code == 200

    confirm = browser.get(f"/developer/apps/{client_id}/delete")
    assert confirm.status_code == 200
    assert 'id="delete-confirm"' in text(confirm) and client_id in text(confirm)
    assert fresh(db, client_id) is not None  # asking is not deleting

    response = browser.post(f"/developer/apps/{client_id}/delete",
                            data={"csrf_token": csrf_token(confirm.get_data(as_text=True))})
    assert response.status_code == 302 and response.location == "/developer/?deleted=1"
    assert 'id="app-deleted"' in text(browser.get(response.location))
    assert fresh(db, client_id) is None
    assert db.execute(select(ClientOwner).where(ClientOwner.client_id == client_id)).first() is None
    # Its token rows are revoked (or gone with the client): none is active.
    records = db.execute(select(AccessToken).where(AccessToken.client_id == client_id)).scalars().all()
    assert all(r.revoked_at is not None for r in records)
    assert browser.get("/userinfo", headers=bearer).status_code == 401
    assert rp.refresh(tokens["refresh_token"]).status_code in (400, 401)
    assert browser.get(f"/developer/apps/{client_id}").status_code == 404


# -- sharing ------------------------------------------------------------------------------

def test_share_with_a_co_owner(app, browser, db, factory, person):
    client_id, _ = created(create(browser, "m2m", redirect_uris=""))
    partner = factory.identity()
    response = post(browser, f"/developer/apps/{client_id}/owners", email=partner.email.upper())
    assert response.status_code == 200
    assert 'id="shared"' in text(response) and partner.email in text(response)
    assert owners(db, client_id) == {person.id, partner.id}
    # Sharing twice changes nothing.
    assert post(browser, f"/developer/apps/{client_id}/owners", email=partner.email).status_code == 200
    assert owners(db, client_id) == {person.id, partner.id}

    theirs = other_browser(app, partner)
    assert client_id in text(theirs.get("/developer/"))
    page = theirs.get(f"/developer/apps/{client_id}")
    assert page.status_code == 200 and person.email in text(page) and partner.email in text(page)
    _, secret = created(post(theirs, f"/developer/apps/{client_id}/rotate"))
    assert fresh(db, client_id).client_secret_hash == hasher().hash(secret)


@pytest.mark.parametrize("email", ["nobody-{}@example.com", ""])
def test_share_needs_an_existing_login(browser, db, person, email):
    client_id, _ = created(create(browser, "m2m", redirect_uris=""))
    email = email.format(unique("x"))
    response = post(browser, f"/developer/apps/{client_id}/owners", email=email)
    assert response.status_code == 400
    body = text(response)
    assert 'id="share-errors"' in body
    if email:
        assert f"Nobody with a Connect login uses {email}. Ask them to sign up first" in body
    else:
        assert "Enter the e-mail address" in body
    assert owners(db, client_id) == {person.id}


def test_share_with_a_disabled_login_is_refused(browser, db, factory, person):
    client_id, _ = created(create(browser, "m2m", redirect_uris=""))
    disabled = factory.identity()
    disabled.disabled = True
    factory.session.commit()
    response = post(browser, f"/developer/apps/{client_id}/owners", email=disabled.email)
    assert response.status_code == 400
    assert owners(db, client_id) == {person.id}


# -- nobody else --------------------------------------------------------------------------

def test_non_owner_gets_403_and_changes_nothing(app, browser, db, factory, person):
    client_id, secret = created(create(browser, "web", logout_uris="https://app.example/bye"))
    before = fresh(db, client_id)
    snapshot = (before.client_secret_hash, list(before.redirect_uris), list(before.post_logout_redirect_uris))
    stranger = factory.identity()
    theirs = other_browser(app, stranger)
    assert client_id not in text(theirs.get("/developer/"))
    for path in (f"/developer/apps/{client_id}", f"/developer/apps/{client_id}/delete"):
        response = theirs.get(path)
        assert response.status_code == 403, path
        assert secret not in text(response) and WEB_CB not in text(response)
    attempts = {
        "uris": {"redirect_uris": "https://evil.example/cb", "post_logout_redirect_uris": ""},
        "rotate": {},
        "owners": {"email": stranger.email},
        "delete": {},
    }
    for action, data in attempts.items():
        response = post(theirs, f"/developer/apps/{client_id}/{action}", **data)
        assert response.status_code == 403, action
    row = fresh(db, client_id)
    assert row is not None
    assert (row.client_secret_hash, row.redirect_uris, row.post_logout_redirect_uris) == snapshot
    assert owners(db, client_id) == {person.id}


def test_unknown_app_is_404(browser):
    assert browser.get("/developer/apps/no-such-app").status_code == 404
    assert post(browser, "/developer/apps/no-such-app/rotate").status_code == 404


def test_apps_made_elsewhere_are_not_listed(browser, factory):
    """A client without owners (made by an operator) is nobody's in the portal."""
    client, _ = factory.client()
    assert client.client_id not in text(browser.get("/developer/"))
    assert browser.get(f"/developer/apps/{client.client_id}").status_code == 403


# -- CSRF -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_token", [None, "forged"])
def test_every_form_needs_its_csrf_token(browser, db, person, factory, bad_token):
    client_id, secret = created(create(browser, "web"))
    before_hash = fresh(db, client_id).client_secret_hash
    partner = factory.identity()
    names_before = {c.client_id for c in clients.owned_by(db, person.id)}
    forms = {
        "/developer/apps/new": {"kind": "web", "client_name": "CSRF", "redirect_uris": WEB_CB},
        f"/developer/apps/{client_id}/uris": {"redirect_uris": "https://app.example/other"},
        f"/developer/apps/{client_id}/rotate": {},
        f"/developer/apps/{client_id}/owners": {"email": partner.email},
        f"/developer/apps/{client_id}/delete": {},
    }
    for path, data in forms.items():
        if bad_token:
            data["csrf_token"] = bad_token
        response = browser.post(path, data=data)
        assert response.status_code == 400, path
        assert CSRF_EXPIRED in text(response), path
    row = fresh(db, client_id)
    assert row is not None and row.client_secret_hash == before_hash and row.redirect_uris == [WEB_CB]
    assert owners(db, client_id) == {person.id}
    db.expire_all()
    assert {c.client_id for c in clients.owned_by(db, person.id)} == names_before
