"""clients/native_app and clients/time_api against a live IdP.

The native app runs its real loopback server on an ephemeral port; the "system
browser" is a person without JavaScript (tests/clients/person.py) who signs in at
the live IdP's pages and is redirected to that port. The mobile client is registered
as the demo's is (public, native, mobile app, product-bound) plus the time API as
a resource it may ask tokens for (RFC 8707).
"""

from __future__ import annotations

import json
import stat
import threading
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from clients.native_app import AuthError, Config, NativeApp
from clients.native_app.cli import main as cli
from tests.clients.live import new_product, person_with_agreements, register, start_time_api
from tests.clients.person import Person


@pytest.fixture(scope="module")
def world(app, live_idp):
    session = app.extensions["idp"].db.session_factory()
    try:
        product, other = new_product(session, "e-conomic"), new_product(session, "Dinero")
    finally:
        session.close()
    person = person_with_agreements(app, {
        product: [("Skovbo Tømrer ApS", "superuser"), ("Hansen Revision", "user"), ("Bageriet Aps", "user")],
        other: [("Andet produkt A/S", "superuser")],
    })
    server, time_api = start_time_api(live_idp)
    client_id = f"mobile-{uuid.uuid4().hex[:8]}"
    register(live_idp, client_name="Time registration", product_id=product, redirect_uris=["http://127.0.0.1/callback"],
             public=True, native=True, mobile_app=True, client_id=client_id, metadata={"resources": [time_api]})
    try:
        yield {"idp": live_idp.extensions["idp"].settings.issuer, "client_id": client_id, "time_api": time_api,
               "person": person, "numbers": person["numbers"][product], "other": person["numbers"][other][0]}
    finally:
        server.stop()


def make_app(world, state_dir, person: Person | None = None) -> tuple[NativeApp, list[str]]:
    printed: list[str] = []
    config = Config(issuer=world["idp"], client_id=world["client_id"], time_api=world["time_api"],
                    state_dir=state_dir)
    return NativeApp(config, open_browser=person.browser if person else (lambda url: None),
                     out=printed.append), printed


def sign_in(world, state_dir, agreement=None):
    person = Person(world["idp"], world["person"]["email"], agreement=agreement)
    app, printed = make_app(world, state_dir, person)
    claims = app.login(timeout=20)
    assert person.error is None, person.error
    return app, claims, printed, person


def stored(state_dir) -> dict:
    return json.loads((state_dir / "tokens.json").read_text())


def test_login_store_refresh_switch_and_time_entries(world, tmp_path):
    state_dir = tmp_path / "state"
    a, b, c = world["numbers"]
    app, claims, printed, person = sign_in(world, state_dir, agreement=b)

    # RFC 8252: the printed authorization URL has a loopback redirect on an ephemeral port, PKCE S256.
    url = printed[0].split()[-1]
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    redirect = urlsplit(params["redirect_uri"])
    assert (redirect.scheme, redirect.hostname, redirect.path) == ("http", "127.0.0.1", "/callback")
    assert redirect.port and redirect.port > 1024
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert "agreement" in params["scope"].split() and "offline_access" in params["scope"].split()
    assert any(p.endswith("/agreement") for p in person.pages)  # three agreements: the chooser
    assert claims["agreement_id"] == b and claims["email"] == world["person"]["email"]

    # The refresh token is stored for the owner only; access tokens are never written.
    assert stat.S_IMODE((state_dir / "tokens.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    saved = stored(state_dir)
    assert saved["refresh_token"] and "access_token" not in json.dumps(saved)
    assert saved["agreement"]["agreement_id"] == b

    # Refreshing rotates the refresh token (and keeps the agreement).
    first = saved["refresh_token"]
    app.refresh()
    assert stored(state_dir)["refresh_token"] != first
    assert app.current_agreement()["agreement_id"] == b

    # The agreements API: this product's agreements only, searchable.
    listed = app.agreements()
    assert sorted(i["agreement_id"] for i in listed["items"]) == sorted([a, b, c])
    assert [i["agreement_id"] for i in app.agreements(q="revision")["items"]] == [b]

    # The time API validates the token locally: entries of the current agreement.
    entries = app.time_entries()
    assert entries["agreement_id"] == b and len(entries["entries"]) == 5

    # Switch by token exchange (no browser): new tokens for the target agreement.
    before = stored(state_dir)["refresh_token"]
    switched = app.switch(a)
    assert switched == {"agreement_id": a, "agreement_name": "Skovbo Tømrer ApS",
                        "agreement_product": claims["agreement_product"], "agreement_role": "superuser"}
    assert stored(state_dir)["refresh_token"] != before
    assert stored(state_dir)["agreement"]["agreement_id"] == a
    assert app.time_entries()["agreement_id"] == a

    # Another product's agreement: refused, and the stored sign-in still works.
    with pytest.raises(AuthError) as refused:
        app.switch(world["other"])
    assert refused.value.error == "invalid_target"

    # A new process: only the state directory carries over.
    again, _ = make_app(world, state_dir)
    assert again.time_entries()["agreement_id"] == a
    assert again.userinfo()["agreement_id"] == a

    # Logout revokes the refresh token and forgets it.
    revoked = stored(state_dir)["refresh_token"]
    again.logout()
    assert not (state_dir / "tokens.json").exists()
    response = requests.post(world["idp"] + "/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": revoked, "client_id": world["client_id"]})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    with pytest.raises(AuthError) as gone:
        make_app(world, state_dir)[0].refresh()
    assert gone.value.error == "login_required"


def test_login_with_agreement_hint_skips_the_chooser(world, tmp_path):
    person = Person(world["idp"], world["person"]["email"])
    app, _ = make_app(world, tmp_path, person)
    claims = app.login(agreement_hint=world["numbers"][2], timeout=20)
    assert person.error is None
    assert claims["agreement_id"] == world["numbers"][2]
    assert not any(p.endswith("/agreement") for p in person.pages)


def _answer(app, make_params):
    """Log in with a 'browser' that sends the loopback server an answer of our making."""
    def browser(url):
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        # In the background, like a real browser: the app serves its loopback port after this returns.
        threading.Thread(target=requests.get, args=(params["redirect_uri"],),
                         kwargs={"params": make_params(params), "timeout": 5}, daemon=True).start()

    app.open_browser = browser
    with pytest.raises(AuthError) as caught:
        app.login(timeout=10)
    return caught.value


def test_loopback_refuses_foreign_answers(world, tmp_path):
    app, _ = make_app(world, tmp_path)
    idp = world["idp"]
    assert _answer(app, lambda p: {"code": "x", "state": "forged", "iss": idp}).error == "invalid_state"
    assert _answer(app, lambda p: {"code": "x", "state": p["state"], "iss": "https://evil.example"}).error \
        == "invalid_issuer"
    assert _answer(app, lambda p: {"code": "x", "state": p["state"]}).error == "invalid_issuer"  # RFC 9207
    denied = _answer(app, lambda p: {"error": "access_denied", "error_description": "No.", "state": p["state"],
                                     "iss": idp})
    assert (denied.error, denied.description) == ("access_denied", "No.")
    # A code that the IdP did not issue for this verifier.
    assert _answer(app, lambda p: {"code": "made-up", "state": p["state"], "iss": idp}).error == "invalid_grant"
    assert not (tmp_path / "tokens.json").exists()


def test_time_api_refuses_tokens_not_meant_for_it(world, tmp_path):
    sign_in(world, tmp_path, agreement=world["numbers"][0])
    entries = world["time_api"] + "/entries"

    response = requests.get(entries, timeout=5)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="time"'

    # A token for the IdP only (no resource indicator for the time API): wrong audience.
    token = requests.post(world["idp"] + "/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": stored(tmp_path)["refresh_token"],
        "client_id": world["client_id"]}).json()
    assert token["access_token"]
    response = requests.get(entries, headers={"Authorization": "Bearer " + token["access_token"]}, timeout=5)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "not meant for this API" in response.json()["error_description"]

    response = requests.get(entries, headers={"Authorization": "Bearer not.a.token"}, timeout=5)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_command_line(world, tmp_path, capsys):
    a, b, _c = world["numbers"]
    person = Person(world["idp"], world["person"]["email"], agreement=a)
    common = ["--issuer", world["idp"], "--client-id", world["client_id"], "--time-api", world["time_api"],
              "--state-dir", str(tmp_path)]
    app, _ = make_app(world, tmp_path, person)
    assert cli([*common, "login"], app=app) == 0
    assert f"Agreement: {a}  Skovbo Tømrer ApS  (superuser)" in capsys.readouterr().out

    # Each command below is a new process as far as the app knows: it starts from the stored token.
    assert cli([*common, "agreements", "-q", "hansen"]) == 0
    assert capsys.readouterr().out.strip() == f"{b}  Hansen Revision  (user)"
    assert cli([*common, "switch", b]) == 0
    assert f"Now in agreement {b}" in capsys.readouterr().out
    assert cli([*common, "entries"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Time entries in {b} Hansen Revision:") and out.count(" h  ") == 5
    assert cli([*common, "whoami"]) == 0
    assert world["person"]["email"] in capsys.readouterr().out
    assert cli([*common, "logout"]) == 0
    assert cli([*common, "entries"]) == 1
    assert "login_required" in capsys.readouterr().err
