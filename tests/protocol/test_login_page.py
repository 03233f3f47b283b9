"""The login form: no account oracle, input checks, CSRF, framing, browser binding."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from idp.clients import service as clients
from idp.oidc import authorize as flow

from tests.helpers.oidc import csrf_token, make_rp, path_of, query

ERROR = re.compile(r'id="login-error">([^<]*)<')





def _login_page(rp):
    response = rp.follow(rp.authorize(state="lp-1"))
    assert response.status_code == 302 and response.location.endswith("/login"), response.location
    path = path_of(response.location)
    page = rp.browser.get(path)
    assert page.status_code == 200
    return path, page


def _post(rp, path, page, **fields):
    data = {"csrf_token": csrf_token(page.get_data(as_text=True)), "action": "login", **fields}
    return rp.browser.post(path, data=data)


def _message(response):
    match = ERROR.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:500]
    return match.group(1).strip()


def _assert_not_signed_in(rp):
    response = rp.follow(rp.authorize(prompt="none", state="check"))
    assert response.status_code == 302
    assert query(response.location).get("error") == "login_required", response.location


def test_unknown_email_and_wrong_password_look_the_same(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    wrong_password = _post(rp, path, page, email=identity.email, password="Not-The-Password-1")
    path, page = _login_page(rp)
    unknown = _post(rp, path, page, email=f"nobody-{identity.id[:8]}@example.com", password="Not-The-Password-1")
    assert wrong_password.status_code == unknown.status_code
    assert wrong_password.status_code in (200, 400, 401)
    assert _message(wrong_password) == _message(unknown)
    assert 'name="password"' in unknown.get_data(as_text=True)
    _assert_not_signed_in(rp)


def test_malformed_email(client, factory):
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    response = _post(rp, path, page, email="not-an-address", password="whatever-password")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert _message(response)
    assert 'name="email"' in html and 'name="password"' in html
    assert 'value="not-an-address"' in html  # the form comes back with what was typed
    _assert_not_signed_in(rp)


def test_empty_fields(client, factory):
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    response = _post(rp, path, page, email="", password="")
    assert response.status_code == 400
    assert _message(response)


def test_post_without_csrf_token_is_refused(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, _ = _login_page(rp)
    response = client.post(path, data={"email": identity.email, "password": "Velvet-Harbour-Compass-77",
                                       "action": "login"})
    assert response.status_code == 400
    assert response.location is None
    _assert_not_signed_in(rp)


def test_post_with_wrong_csrf_token_is_refused(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, _ = _login_page(rp)
    response = client.post(path, data={"csrf_token": "forged", "email": identity.email,
                                       "password": "Velvet-Harbour-Compass-77", "action": "login"})
    assert response.status_code == 400
    _assert_not_signed_in(rp)


def test_correct_login_continues(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    response = rp.follow(_post(rp, path, page, email=identity.email.upper(), password="Velvet-Harbour-Compass-77"))
    assert response.status_code == 302 and response.location.endswith("/consent"), response.location


def test_a_client_disabled_while_its_sign_in_page_is_open_stops_the_sign_in(client, factory, db):
    # The pages take their client from the protocol endpoints' cache; disabling it must still count at once.
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    clients.disable(db, clients.find(db, rp.client_id))
    response = _post(rp, path, page, email=identity.email, password="Velvet-Harbour-Compass-77")
    assert response.status_code == 400, response.location
    assert "This sign-in has expired" in response.get_data(as_text=True)


def test_the_password_step_reads_its_request_once_and_marks_it_signed_in(app, client, factory, monkeypatch):
    # prompt=login: only the mark the password step leaves on the pending request lets it go on to consent
    # instead of asking for the password again; the step reads the request from the store once.
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(prompt="login"))
    assert response.status_code == 302 and response.location.endswith("/login"), response.location
    path = path_of(response.location)
    page = rp.browser.get(path)
    store = app.extensions["idp"].store
    reads, real_get = [], store.get
    monkeypatch.setattr(store, "get", lambda kind, key: (reads.append(kind), real_get(kind, key))[1])
    response = _post(rp, path, page, email=identity.email, password="Velvet-Harbour-Compass-77")
    assert response.status_code == 302 and "/authorize/resume/" in response.location, response.location
    assert reads.count(flow.INTERACTION) == 1, reads
    monkeypatch.undo()
    response = rp.follow(response)
    assert response.status_code == 302 and response.location.endswith("/consent"), response.location


def test_showing_the_login_page_writes_nothing(app, client, factory, monkeypatch):
    # The session got its CSRF secret when the authorization request bound its interaction to it: the page
    # renders its form without a store write (a round trip on Redis, a commit on SQLite), and the form posts.
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize())
    path = path_of(response.location)
    store, writes = app.extensions["idp"].store, []
    for name in ("put", "replace", "delete", "incr", "consume"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *args, _name=name, _real=real, **kw: (
            writes.append((_name, args[0])), _real(*args, **kw))[1])
    page = rp.browser.get(path)
    assert page.status_code == 200 and 'name="csrf_token"' in page.get_data(as_text=True)
    assert writes == []
    monkeypatch.undo()
    response = rp.follow(_post(rp, path, page, email=identity.email, password="Velvet-Harbour-Compass-77"))
    assert response.status_code == 302 and response.location.endswith("/consent"), response.location


def test_login_page_cannot_be_framed(client, factory):
    rp = make_rp(client, factory)
    _, page = _login_page(rp)
    assert page.headers.get("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in page.headers.get("Content-Security-Policy", "")
    assert page.headers.get("Cache-Control") == "no-store"


def test_interaction_bound_to_its_browser(app, client, factory):
    rp = make_rp(client, factory)
    path, _ = _login_page(rp)
    stranger = app.test_client()
    response = stranger.get(path)
    assert response.status_code == 400
    assert 'name="password"' not in response.get_data(as_text=True)


def test_session_id_rotates_at_login(app, client, factory):
    # Session fixation: an id planted before login is worthless after it.
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    before = client.get_cookie("idp_session")
    assert before is not None
    rp.follow(_post(rp, path, page, email=identity.email, password="Velvet-Harbour-Compass-77"))
    after = client.get_cookie("idp_session")
    assert after is not None and after.value != before.value

    attacker = app.test_client()
    attacker.set_cookie("idp_session", before.value, domain=before.domain or "localhost")
    attacker_rp = make_rp(attacker, factory, first_party=True)
    url = "/authorize?" + urlencode({
        "response_type": "code", "client_id": attacker_rp.client_id, "redirect_uri": attacker_rp.redirect_uri,
        "scope": "openid", "state": "fx", "prompt": "none"})
    assert query(attacker.get(url).location).get("error") == "login_required"
    assert query(client.get(url).location).get("code")  # the victim's new id is signed in


def test_the_password_step_reads_its_counters_and_moves_its_session_in_one_go(app, client, factory, monkeypatch):
    # Round trips on Redis: the account's and the address's failure counts in one read, and the session's move
    # to its new id (the old id's data deleted, the new one's written) in one write.
    identity = factory.identity()
    rp = make_rp(client, factory)
    path, page = _login_page(rp)
    store, calls, depth = app.extensions["idp"].store, [], [0]

    def recording(name, real):
        def record(*args, **kwargs):
            if not depth[0]:  # what the sign-in asks of the store, not how the SQL store answers it
                calls.append((name, args if name == "counts" else args[0]))
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1
        return record

    for name in ("count", "counts", "delete", "replace", "put"):
        monkeypatch.setattr(store, name, recording(name, getattr(store, name)))
    before = client.get_cookie("idp_session").value
    response = _post(rp, path, page, email=identity.email, password="Velvet-Harbour-Compass-77")
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    counters = [c for c in calls if c[0] in ("count", "counts")]
    assert counters == [("counts", (("login_ip_failures", "127.0.0.1"), ("login_failures", identity.email)))], calls
    assert [c for c in calls if c[1] == "session"] == [("replace", "session")], calls
    assert client.get_cookie("idp_session").value != before
