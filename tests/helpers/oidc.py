"""Drive the IdP the way an RP and a person would: authorize, log in, consent, redeem.

ID tokens are verified with PyJWT against the published JWKS: an independent
JOSE implementation, not the joserfc code that signed them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt

from tests.conftest import ISSUER
from tests.helpers.factories import PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def path_of(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


@dataclass
class RP:
    """One registered client, talking to the IdP through a Flask test client (one browser)."""

    browser: object
    client_id: str
    client_secret: str | None
    redirect_uri: str

    def authorize(self, *, scope="openid profile email", state=None, nonce=None, pkce=True, method="GET", **extra):
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                  "scope": scope, "state": state or secrets.token_urlsafe(8), "nonce": nonce or secrets.token_urlsafe(8)}
        self.verifier = None
        if pkce:
            self.verifier, params["code_challenge"] = pkce_pair()
            params["code_challenge_method"] = "S256"
        params.update({k: v for k, v in extra.items() if v is not None})
        params = {k: v for k, v in params.items() if v is not None}
        self.last_params = params
        if method == "POST":
            return self.browser.post("/authorize", data=params)
        return self.browser.get("/authorize?" + urlencode(params))

    def login(self, response, email, password=PASSWORD):
        """From a redirect to the login page: submit the form; returns the POST response."""
        assert response.status_code == 302, response.data
        login_path = path_of(response.location)
        assert "/login" in login_path, response.location
        page = self.browser.get(login_path)
        assert page.status_code == 200
        return self.browser.post(login_path, data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                   "email": email, "password": password, "action": "login"})

    def follow(self, response):
        """Follow IdP-internal redirects until one leaves the IdP or leads to an interaction page."""
        while response.status_code == 302 and not response.location.startswith(self.redirect_uri.split("?")[0]):
            if "/interaction/" in response.location:
                return response  # a page for the person: the caller decides what they do
            response = self.browser.get(path_of(response.location))
        return response

    def consent(self, response, action="allow"):
        assert response.status_code == 302 and "/consent" in response.location, (response.status_code, response.location)
        consent_path = path_of(response.location)
        page = self.browser.get(consent_path)
        assert page.status_code == 200
        return self.browser.post(consent_path, data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                     "action": action})

    def sign_in(self, email, password=PASSWORD, consent=True, **params):
        """Whole browser part: authorize, log in if asked, consent if asked; returns the RP callback params."""
        response = self.follow(self.authorize(**params))
        if response.status_code == 302 and "/login" in response.location:
            response = self.follow(self.login(response, email, password))
        if response.status_code == 302 and "/consent" in response.location and consent:
            response = self.follow(self.consent(response))
        assert response.status_code == 302 and response.location.startswith(self.redirect_uri), (
            response.status_code, response.location, response.get_data(as_text=True)[:500])
        return query(response.location)

    def token(self, code, verifier=None, redirect_uri=None, auth="basic", **extra):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri or self.redirect_uri}
        if verifier or getattr(self, "verifier", None):
            data["code_verifier"] = verifier or self.verifier
        data.update(extra)
        return self.token_request(data, auth)

    def refresh(self, refresh_token, auth="basic", **extra):
        return self.token_request({"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}, auth)

    def token_request(self, data, auth="basic"):
        headers = {}
        if self.client_secret is None or auth == "none":
            data = {**data, "client_id": self.client_id}
        elif auth == "basic":
            basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        elif auth == "post":
            data = {**data, "client_id": self.client_id, "client_secret": self.client_secret}
        return self.browser.post("/token", data=data, headers=headers)

    def verify_id_token(self, id_token, nonce=None, alg="RS256"):
        jwks = self.browser.get("/jwks").get_json()
        header = pyjwt.get_unverified_header(id_token)
        assert header["alg"] == alg
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        claims = pyjwt.decode(id_token, pyjwt.PyJWK(key).key, algorithms=[alg], audience=self.client_id,
                              issuer=ISSUER, options={"require": ["exp", "iat", "sub", "aud", "iss"]})
        if nonce is not None:
            assert claims["nonce"] == nonce
        return claims


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def make_rp(browser, factory, **client_kwargs) -> RP:
    client, secret = factory.client(**client_kwargs)
    return RP(browser, client.client_id, secret, client.redirect_uris[0])


def machine_client(factory, db) -> tuple[str, dict]:
    """A confidential client allowed the client_credentials grant: (client_id, its HTTP Basic header)."""
    from idp.clients.models import Client

    client, secret = factory.client()
    db.get(Client, client.client_id).grant_types = ["client_credentials"]
    db.commit()
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    return client.client_id, {"Authorization": f"Basic {basic}"}
