"""OpenID Connect Front-Channel Logout 1.0 (with RP-Initiated Logout) in headless Chromium.

A tiny live RP (werkzeug, on http://localhost:<port>) serves the callback, the
``frontchannel_logout_uri`` (recording each hit with its ``iss`` and ``sid``)
and the post-logout page. The person signs in through the live IdP; the RP
then sends the browser to the end_session_endpoint, and the signed-out page
must load the RP's front-channel URL in an iframe and return to the RP.
"""

from __future__ import annotations

import secrets
import threading
import time
from urllib.parse import urlencode, urlsplit

import jwt as pyjwt
import pytest
import requests
from werkzeug.wrappers import Request, Response

from idp.clients.models import Client
from tests.e2e.conftest import LiveServer
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import pkce_pair, query

pytestmark = pytest.mark.browser


class FrontChannelRP:
    """Callback, front-channel logout URL and post-logout page of one RP, recording hits."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits: list[tuple[str, dict]] = []
        self.server = LiveServer("127.0.0.1")
        self.base_url = f"http://localhost:{self.server.port}"
        self.server.start(self._app)

    def _app(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.hits.append((request.path, request.args.to_dict()))
        body = f"<!doctype html><title>RP</title><h1 id='rp-page'>{request.path}</h1>"
        response = Response(body, mimetype="text/html", headers={"Cache-Control": "no-store"})
        return response(environ, start_response)

    def hits_of(self, path: str) -> list[dict]:
        with self.lock:
            return [args for hit_path, args in self.hits if hit_path == path]

    def wait_for(self, path: str, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hits_of(path):
                return self.hits_of(path)
            time.sleep(0.05)
        raise AssertionError(f"the RP's {path} was never loaded; hits: {self.hits}")


@pytest.fixture
def fc_rp():
    rp = FrontChannelRP()
    try:
        yield rp
    finally:
        rp.server.stop()


def test_frontchannel_logout_iframe_then_back_to_the_rp(page, shot, factory, db, live_idp, fc_rp):
    idp = live_idp.extensions["idp"].settings.issuer
    identity = factory.identity()
    callback = fc_rp.base_url + "/callback"
    post_logout = fc_rp.base_url + "/logged-out"
    registered, secret = factory.client(redirect_uris=[callback], first_party=True)
    row = db.get(Client, registered.client_id)
    row.post_logout_redirect_uris = [post_logout]
    row.extra_metadata = {"frontchannel_logout_uri": fc_rp.base_url + "/frontchannel",
                          "frontchannel_logout_session_required": True}
    db.commit()

    # Sign in through the live IdP's pages.
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    page.goto(idp + "/authorize?" + urlencode({
        "response_type": "code", "client_id": registered.client_id, "redirect_uri": callback,
        "scope": "openid email", "state": state, "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256"}))
    page.wait_for_url(lambda url: url.startswith(idp) and urlsplit(url).path.endswith("/login"))
    page.fill("#email", identity.email)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda url: url.startswith(callback))
    result = query(page.url)
    assert result["state"] == state

    tokens = requests.post(idp + "/token", auth=(registered.client_id, secret), timeout=10, data={
        "grant_type": "authorization_code", "code": result["code"], "redirect_uri": callback,
        "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    id_token = tokens.json()["id_token"]
    jwks = requests.get(idp + "/jwks", timeout=10).json()
    header = pyjwt.get_unverified_header(id_token)
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    id_claims = pyjwt.decode(id_token, pyjwt.PyJWK(key).key, algorithms=[header["alg"]],
                             audience=registered.client_id, issuer=idp)
    assert id_claims["sid"]

    # RP-Initiated Logout: the signed-out page loads the RP's front-channel URL.
    logout_state = secrets.token_urlsafe(8)
    page.goto(idp + "/logout?" + urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": post_logout,
                                            "state": logout_state}), wait_until="commit")
    (hit,) = fc_rp.wait_for("/frontchannel")
    assert hit == {"iss": idp, "sid": id_claims["sid"]}

    # ... and then the browser returns to the registered post-logout page, with state.
    page.wait_for_url(lambda url: url.startswith(post_logout), timeout=5_000)
    assert page.url == post_logout + "?" + urlencode({"state": logout_state})
    assert fc_rp.hits_of("/logged-out") == [{"state": logout_state}]
    shot(page, "rp-after-logout")

    # Signed out at the IdP: a new authorization shows the login page again.
    page.goto(idp + "/authorize?" + urlencode({
        "response_type": "code", "client_id": registered.client_id, "redirect_uri": callback,
        "scope": "openid", "state": "again", "code_challenge": challenge, "code_challenge_method": "S256"}))
    page.wait_for_url(lambda url: url.startswith(idp) and urlsplit(url).path.endswith("/login"))
