"""clients/web_rp against a live IdP, without a browser: the paths the journey does not walk.

Back-channel logout (every check of Back-Channel Logout 1.0 §2.6, and the sid → local
session map), the prompt=none switch falling back to an interactive authorization,
a switch to an agreement the person has no membership in, the callback's own checks,
CSRF, and the in-app payments API refusing tokens of other clients.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from tests.clients.live import new_product, person_with_agreements, register, start_product_rp
from tests.clients.person import Person, csrf

EVENT = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture(scope="module")
def world(app, live_idp):
    session = app.extensions["idp"].db.session_factory()
    try:
        product, other = new_product(session, "e-conomic"), new_product(session, "Dinero")
    finally:
        session.close()
    person = person_with_agreements(app, {
        product: [("Skovbo Tømrer ApS", "superuser"), ("Hansen Revision", "user")],
        other: [("Andet produkt A/S", "superuser")],
    })
    rp = start_product_rp(live_idp, "Accounting", product, first_party=True)
    try:
        yield {"idp": live_idp.extensions["idp"].settings.issuer, "rp": rp, "person": person,
               "numbers": person["numbers"][product], "other": person["numbers"][other][0]}
    finally:
        rp.stop()


def sign_in(world, agreement=None) -> tuple[Person, requests.Response]:
    person = Person(world["idp"], world["person"]["email"], agreement=agreement or world["numbers"][0])
    home = person.visit(world["rp"].base_url + "/login")
    assert home.status_code == 200 and 'id="signed-in"' in home.text, home.text[:500]
    return person, home


def home(person, world) -> str:
    return person.http.get(world["rp"].base_url + "/", timeout=10).text


def claim(html: str, name: str) -> str:
    return re.search(rf'data-claim="{name}"><td>{name}</td><td>([^<]*)</td>', html).group(1)


def header_agreement(html: str) -> str:
    return re.search(r'id="agreement-number">([^<]+)<', html).group(1)


# --------------------------------------------------------------------------- back-channel logout


def logout_token(live_idp, world, *, header=None, key=None, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": world["idp"], "aud": world["rp"].client_id, "iat": now, "exp": now + 120,
              "jti": uuid.uuid4().hex, "events": {EVENT: {}}, **overrides}
    keys = live_idp.extensions["idp"].keys
    return jwt.encode({"alg": "RS256", "typ": "logout+jwt", **(header or {})},
                      {k: v for k, v in claims.items() if v is not None}, key or keys.signing_keyset("RS256"))


def post_logout_token(world, token) -> requests.Response:
    return requests.post(world["rp"].base_url + "/backchannel-logout", data={"logout_token": token}, timeout=10)


def test_backchannel_logout_validates_and_ends_only_that_session(live_idp, world):
    person, page = sign_in(world)
    other, _ = sign_in(world)  # the same person in another browser: another IdP session
    sid, sub = claim(page.text, "sid"), claim(page.text, "sub")
    assert sid != claim(home(other, world), "sid")

    foreign = RSAKey.generate_key(2048, parameters={"kid": "foreign"}, private=True)
    real_kid = live_idp.extensions["idp"].keys.signing_key("RS256").kid
    impostor = RSAKey.generate_key(2048, parameters={"kid": real_kid}, private=True)  # the IdP's kid, not its key
    bad = {
        "wrong audience": logout_token(live_idp, world, sid=sid, sub=sub, aud="someone-else"),
        "wrong issuer": logout_token(live_idp, world, sid=sid, sub=sub, iss="https://evil.example"),
        "nonce": logout_token(live_idp, world, sid=sid, sub=sub, nonce="n"),
        "no events": logout_token(live_idp, world, sid=sid, sub=sub, events=None),
        "other event": logout_token(live_idp, world, sid=sid, sub=sub, events={"urn:other": {}}),
        "no sid nor sub": logout_token(live_idp, world),
        "expired": logout_token(live_idp, world, sid=sid, sub=sub, iat=int(time.time()) - 600,
                                exp=int(time.time()) - 300),
        "no jti": logout_token(live_idp, world, sid=sid, sub=sub, jti=None),
        "an ID token": logout_token(live_idp, world, sid=sid, sub=sub, header={"typ": "JWT"}),
        "unknown key": logout_token(live_idp, world, sid=sid, sub=sub, key=foreign),
        "forged signature": logout_token(live_idp, world, sid=sid, sub=sub, key=impostor),
        "HS256": jwt.encode({"alg": "HS256", "typ": "logout+jwt"}, {"iss": world["idp"], "sid": sid},
                            OctKey.import_key(b"x" * 32)),
        "alg none": ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (
            b'{"alg":"none","typ":"logout+jwt"}', f'{{"iss":"{world["idp"]}","sid":"{sid}"}}'.encode(), b"")),
        "garbage": "not-a-token",
    }
    for what, token in bad.items():
        response = post_logout_token(world, token)
        assert response.status_code == 400, what
        assert response.json()["error"] == "invalid_request", what
        assert response.headers["Cache-Control"] == "no-store"
    assert 'id="signed-in"' in home(person, world)  # nothing ended

    good = logout_token(live_idp, world, sid=sid, sub=sub)
    response = post_logout_token(world, good)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = home(person, world)
    assert 'id="signed-out"' in page and "You were signed out." in page
    assert 'id="signed-in"' in home(other, world)  # only the session named by sid

    replay = post_logout_token(world, good)
    assert replay.status_code == 400 and "replayed" in replay.json()["error_description"]

    # sub alone ends every session of that person at this RP.
    assert post_logout_token(world, logout_token(live_idp, world, sub=sub)).status_code == 200
    assert 'id="signed-out"' in home(other, world)


def test_idp_logout_reaches_the_rp_over_the_back_channel(world):
    """The IdP's own sign-out page (not the RP's button) ends the RP's session too."""
    person, _ = sign_in(world)
    confirm = person.http.get(world["idp"] + "/logout", timeout=10)
    person.http.post(world["idp"] + "/logout", data={"csrf_token": csrf(confirm.text)}, timeout=10)
    deadline = time.monotonic() + 5
    while 'id="signed-in"' in home(person, world) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 'id="signed-out"' in home(person, world)


# --------------------------------------------------------------------------- switching


def test_silent_switch_falls_back_to_an_interactive_authorization(world):
    a, b = world["numbers"]
    person, page = sign_in(world, agreement=a)
    rp = world["rp"].base_url
    # Signed out at the IdP (its cookies gone), still signed in at the RP.
    for cookie in [c for c in person.http.cookies if not c.domain.startswith("localhost")]:
        person.http.cookies.clear(cookie.domain, cookie.path, cookie.name)

    silent = person.http.post(rp + "/switch", data={"agreement": b, "csrf_token": csrf(page.text)},
                              allow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(silent.headers["Location"]).query)
    assert query["prompt"] == ["none"] and query["agreement_hint"] == [b] and query["id_token_hint"]
    answer = person.http.get(silent.headers["Location"], allow_redirects=False, timeout=10)
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["error"] == ["login_required"]

    again = person.http.get(answer.headers["Location"], allow_redirects=False, timeout=10)
    location = again.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(world["idp"] + "/authorize")
    assert "prompt" not in query and "id_token_hint" not in query and query["agreement_hint"] == [b]

    person.pages.clear()
    landed = person.visit(location)
    assert header_agreement(landed.text) == b
    assert [p.rsplit("/", 1)[-1] for p in person.pages] == ["login"]  # the hint skips the chooser


def test_switch_to_an_agreement_without_membership_keeps_the_current_one(world):
    a, _b = world["numbers"]
    person, page = sign_in(world, agreement=a)
    landed = person.http.post(world["rp"].base_url + "/switch", timeout=10,
                              data={"agreement": world["other"], "csrf_token": csrf(page.text)})
    assert f"You have no access to agreement {world['other']}." in landed.text
    assert header_agreement(landed.text) == a


def test_switcher_lists_agreements_from_the_api(world):
    a, b = world["numbers"]
    person, page = sign_in(world, agreement=a)
    assert re.findall(r'name="agreement" value="([^"]+)" class="switch-to"', page.text) == sorted([a, b])
    found = person.http.get(world["rp"].base_url + "/", params={"q": "hansen"}, timeout=10).text
    assert re.findall(r'name="agreement" value="([^"]+)" class="switch-to"', found) == [b]
    assert world["other"] not in found


# --------------------------------------------------------------------------- tokens


def local_session(world, page_html):
    store = world["rp"].app.extensions["rp"]["sessions"]
    return next(s for s in store._sessions.values() if s.sid == claim(page_html, "sid"))


def test_expired_access_token_is_refreshed_and_a_dead_refresh_token_signs_out(world):
    person, page = sign_in(world)
    store = world["rp"].app.extensions["rp"]["sessions"]
    local = local_session(world, page.text)
    assert local.refresh_token and "offline_access" in local.scope.split()

    store.update(local.id, expires_at=0)  # as if an hour had passed
    page = home(person, world)
    assert len(re.findall(r'class="switch-to"', page)) == 2  # the agreements API call worked
    refreshed = store.get(local.id)
    assert refreshed.refresh_token != local.refresh_token and refreshed.access_token != local.access_token

    # The refresh token revoked at the IdP (RFC 7009): the next refresh fails, the RP signs out.
    rp = world["rp"]
    requests.post(world["idp"] + "/revoke", data={"token": refreshed.refresh_token}, timeout=10,
                  auth=(rp.client_id, rp.client_secret)).raise_for_status()
    store.update(local.id, expires_at=0)
    page = home(person, world)
    assert 'id="signed-out"' in page and "Your sign-in has ended." in page
    assert store.get(local.id) is None


# --------------------------------------------------------------------------- the RP's own checks


def test_callback_checks_state_and_issuer(world):
    rp = world["rp"].base_url
    browser = requests.Session()
    response = browser.get(rp + "/callback", params={"state": "made-up", "error": "login_required"}, timeout=10)
    assert response.status_code == 400 and "invalid_state" in response.text

    start = browser.get(rp + "/login", allow_redirects=False, timeout=10)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    response = browser.get(rp + "/callback", params={"state": state, "code": "x", "iss": "https://evil.example"},
                           timeout=10)
    assert response.status_code == 400 and "invalid_issuer" in response.text

    # The IdP advertises authorization_response_iss_parameter_supported: iss is then required.
    start = browser.get(rp + "/login", allow_redirects=False, timeout=10)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    response = browser.get(rp + "/callback", params={"state": state, "code": "x"}, timeout=10)
    assert response.status_code == 400 and "invalid_issuer" in response.text


def test_forms_need_the_csrf_token(world):
    person, _page = sign_in(world)
    for path, data in (("/switch", {"agreement": world["numbers"][1]}), ("/logout", {}),
                       ("/payments/x/approve", {})):
        response = person.http.post(world["rp"].base_url + path, data=data, allow_redirects=False, timeout=10)
        assert response.status_code == 400, path
    assert 'id="signed-in"' in home(person, world)


def test_pages_forbid_scripts_and_framing(world):
    response = requests.get(world["rp"].base_url + "/", timeout=10)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src" not in policy
    assert "<script" not in response.text


def test_payments_api_serves_only_this_rp(live_idp, world):
    api = world["rp"].base_url + "/api/payments"
    response = requests.get(api, timeout=10)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer realm=")

    # A valid access token of the same IdP, issued to another client.
    machine = f"machine-{uuid.uuid4().hex[:8]}"
    _client, secret = register(live_idp, client_name="Machine", redirect_uris=["https://machine.example/cb"],
                               client_id=machine, grant_types=["client_credentials"])
    token = requests.post(world["idp"] + "/token", data={"grant_type": "client_credentials"},
                          auth=(machine, secret), timeout=10).json()["access_token"]
    response = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "does not serve" in response.json()["error_description"]
