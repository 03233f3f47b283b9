"""The native app's logic, without any user interface (see ``cli.py`` for that).

Signing in follows OAuth 2.0 for Native Apps (RFC 8252): the authorization request
opens in the system browser (or the person copies the printed URL), the answer
comes back to a loopback redirect ``http://127.0.0.1:<ephemeral port>/callback``
(§7.3: the IdP accepts any port for a native client's loopback URI), and PKCE
(RFC 7636, S256) binds the code to this process. The client is public: no secret.

The refresh token is the only thing kept between runs, in ``tokens.json`` (mode
0600) in a state directory (mode 0700). Refresh tokens rotate: every refresh and
exchange returns a new one, stored before anything else happens, and the old one
is dead. Do not run two copies against the same state directory at once: the IdP
treats a second use of a rotated refresh token as theft and revokes them all.

Access tokens live in memory only. They name two audiences (RFC 8707 ``resource``):
the IdP (for the agreements API and UserInfo) and the time API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from joserfc import jwt
from joserfc.errors import JoseError

from ..resource_server import JWKSCache, KeysUnavailable

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
AGREEMENT_CLAIMS = ("agreement_id", "agreement_name", "agreement_product", "agreement_role")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "connect-idp-native"


@dataclass
class Config:
    issuer: str = "http://localhost:5000"
    client_id: str = "mobile-app"
    scope: str = "openid profile email offline_access agreement"
    time_api: str = "http://127.0.0.1:5003"
    state_dir: Path = field(default_factory=default_state_dir)

    def __post_init__(self):
        self.issuer = self.issuer.rstrip("/")
        self.time_api = self.time_api.rstrip("/")
        self.state_dir = Path(self.state_dir)

    @property
    def resources(self) -> list[str]:
        """The audiences of our access tokens: the IdP's own APIs and the time API."""
        return [self.issuer, self.time_api]


class AuthError(Exception):
    """The IdP said no (or the answer was not to be trusted)."""

    def __init__(self, error: str, description: str | None = None):
        super().__init__(f"{error}: {description}" if description else error)
        self.error, self.description = error, description


class TokenStore:
    """``tokens.json`` in the state directory, readable by its owner only."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "tokens.json"

    def load(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as file:
                return json.load(file)
        except FileNotFoundError:
            return None

    def save(self, data: dict) -> None:
        """Replace the file atomically; it is never readable by others, not even briefly."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tokens-", suffix=".json")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Loopback(HTTPServer):
    """Receives the one redirect to http://127.0.0.1:<port>/callback."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CallbackHandler)  # port 0: the kernel picks a free one
        self.result: dict | None = None

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/callback"


class _CallbackHandler(BaseHTTPRequestHandler):
    PAGE = ("<!doctype html><html lang=en><meta charset=utf-8><title>Connect sample app</title>"
            "<p>{}</p><p>You can close this window and return to the app.</p></html>")

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.result = params
        body = self.PAGE.format("Signed in." if "code" in params else "Sign-in did not complete.").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class NativeApp:
    def __init__(self, config: Config, *, open_browser: Callable[[str], object] = webbrowser.open,
                 out: Callable[[str], object] = print, http: requests.Session | None = None):
        self.config = config
        self.store = TokenStore(config.state_dir)
        self.open_browser, self.out = open_browser, out
        self.http = http or requests.Session()
        self._metadata: dict | None = None
        self._keys = JWKSCache(config.issuer, fetch=self._get_json)
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def _get_json(self, url: str) -> dict:
        response = self.http.get(url, timeout=10)
        response.raise_for_status()
        return response.json()

    def metadata(self) -> dict:
        if self._metadata is None:
            metadata = self._get_json(self.config.issuer + "/.well-known/openid-configuration")
            if metadata.get("issuer") != self.config.issuer:
                raise AuthError("invalid_issuer", f"discovery names {metadata.get('issuer')!r}")
            self._metadata = metadata
        return self._metadata

    def _token_request(self, data: dict) -> dict:
        """POST to the token endpoint as a public client; returns the token response."""
        data = {**data, "client_id": self.config.client_id, "resource": self.config.resources}
        response = self.http.post(self.metadata()["token_endpoint"], data=data, timeout=10)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            raise AuthError(body.get("error", f"http_{response.status_code}"), body.get("error_description"))
        return body

    def _keep(self, token: dict, **state) -> None:
        """Store the new refresh token first (the old one is now dead), then use the access token."""
        saved = self.store.load() or {}
        saved.update(issuer=self.config.issuer, client_id=self.config.client_id, **state)
        if token.get("refresh_token"):
            saved["refresh_token"] = token["refresh_token"]
        self.store.save(saved)
        self._access_token = token["access_token"]
        self._expires_at = time.time() + int(token.get("expires_in", 300))

    def _refresh_token(self) -> str:
        saved = self.store.load()
        if not saved or not saved.get("refresh_token"):
            raise AuthError("login_required", "Not signed in: run the login command.")
        if saved.get("issuer") != self.config.issuer or saved.get("client_id") != self.config.client_id:
            raise AuthError("login_required", "The stored sign-in is for another IdP or app.")
        return saved["refresh_token"]

    def _bearer(self, method: str, url: str, **kwargs) -> dict:
        response = self.http.request(method, url, timeout=10, **kwargs,
                                     headers={"Authorization": f"Bearer {self.access_token()}"})
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise AuthError(body.get("error", f"http_{response.status_code}"), body.get("error_description"))
        return response.json()

    # ------------------------------------------------------------------ signing in

    def authorization_url(self, redirect_uri: str, state: str, nonce: str, challenge: str,
                          agreement_hint: str | None = None) -> str:
        params = {"response_type": "code", "client_id": self.config.client_id, "redirect_uri": redirect_uri,
                  "scope": self.config.scope, "state": state, "nonce": nonce, "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        if agreement_hint:
            params["agreement_hint"] = agreement_hint
        return self.metadata()["authorization_endpoint"] + "?" + urlencode(params)

    def login(self, *, agreement_hint: str | None = None, timeout: float = 300) -> dict:
        """Sign in through the browser; returns the validated ID token claims."""
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with _Loopback() as server:
            url = self.authorization_url(server.redirect_uri, state, nonce, challenge, agreement_hint)
            self.out(f"Open this address in your browser to sign in:\n\n  {url}\n")
            try:
                self.open_browser(url)
            except Exception:  # noqa: BLE001,S110 - no browser here (SSH, container): the printed URL is enough
                pass
            deadline = time.monotonic() + timeout
            while server.result is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuthError("timeout", "No answer from the browser.")
                server.timeout = min(remaining, 1.0)
                server.handle_request()
            params = server.result
            redirect_uri = server.redirect_uri
        if not hmac.compare_digest(params.get("state", ""), state):
            raise AuthError("invalid_state", "The answer belongs to another sign-in.")
        # RFC 9207: the answer must come from our IdP (mix-up defence).
        iss = params.get("iss")
        if iss != self.config.issuer and (iss or self.metadata().get("authorization_response_iss_parameter_supported")):
            raise AuthError("invalid_issuer", "The answer came from another sign-in service.")
        if "error" in params:
            raise AuthError(params["error"], params.get("error_description"))
        token = self._token_request({"grant_type": "authorization_code", "code": params.get("code", ""),
                                     "redirect_uri": redirect_uri, "code_verifier": verifier})
        claims = self.verify_id_token(token.get("id_token", ""), nonce)
        self._keep(token, sub=claims["sub"], agreement={k: claims.get(k) for k in AGREEMENT_CLAIMS})
        return claims

    def verify_id_token(self, id_token: str, nonce: str) -> dict:
        """OIDC Core §3.1.3.7: signature (JWKS), iss, aud/azp, exp, iat, nonce."""
        try:
            segment = id_token.split(".")[0]
            header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
            if header.get("alg") not in ("RS256", "ES256") or header.get("typ") in ("at+jwt", "logout+jwt"):
                raise AuthError("invalid_id_token", "unexpected algorithm or type")
            try:
                key = self._keys.get(header.get("kid", ""))
            except KeysUnavailable as error:
                raise AuthError("temporarily_unavailable", str(error)) from error
            if key is None:
                raise AuthError("invalid_id_token", "unknown signing key")
            claims = jwt.decode(id_token, key, algorithms=[header["alg"]]).claims
        except (JoseError, ValueError, IndexError) as error:
            raise AuthError("invalid_id_token", str(error)) from error
        audiences = [claims.get("aud")] if isinstance(claims.get("aud"), str) else claims.get("aud") or []
        now = time.time()
        checks = {
            "iss": claims.get("iss") == self.config.issuer,
            "aud": self.config.client_id in audiences and (len(audiences) == 1
                                                            or claims.get("azp") == self.config.client_id),
            "exp": isinstance(claims.get("exp"), (int, float)) and claims["exp"] > now - 60,
            "iat": isinstance(claims.get("iat"), (int, float)) and claims["iat"] < now + 60,
            "nonce": isinstance(claims.get("nonce"), str) and hmac.compare_digest(claims["nonce"], nonce),
            "sub": isinstance(claims.get("sub"), str) and bool(claims["sub"]),
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise AuthError("invalid_id_token", "bad " + ", ".join(failed))
        return claims

    # ------------------------------------------------------------------ tokens

    def refresh(self) -> str:
        """A new access token (and rotated refresh token) from the stored refresh token."""
        with self._lock:
            try:
                token = self._token_request({"grant_type": "refresh_token", "refresh_token": self._refresh_token()})
            except AuthError as error:
                if error.error == "invalid_grant":
                    self.store.clear()  # dead for good (revoked, expired, membership gone): sign in again
                raise
            self._keep(token)
            return token["access_token"]

    def access_token(self) -> str:
        if self._access_token and self._expires_at - 30 > time.time():
            return self._access_token
        return self.refresh()

    def switch(self, agreement_id: str) -> dict:
        """Switch agreement without a browser (RFC 8693 token exchange); returns the new agreement."""
        with self._lock:
            token = self._token_request({"grant_type": TOKEN_EXCHANGE, "subject_token": self._refresh_token(),
                                         "subject_token_type": REFRESH_TOKEN_TYPE, "agreement_id": agreement_id})
            self._keep(token)
        agreement = self.current_agreement()
        saved = self.store.load()
        saved["agreement"] = agreement
        self.store.save(saved)
        return agreement

    def logout(self) -> None:
        """Revoke the refresh token (RFC 7009) and forget it."""
        saved = self.store.load() or {}
        endpoint = self.metadata().get("revocation_endpoint")
        if saved.get("refresh_token") and endpoint:
            try:
                self.http.post(endpoint, timeout=10, data={"token": saved["refresh_token"],
                                                           "token_type_hint": "refresh_token",
                                                           "client_id": self.config.client_id})
            except requests.RequestException:
                pass
        self.store.clear()
        self._access_token = None

    # ------------------------------------------------------------------ APIs

    def userinfo(self) -> dict:
        return self._bearer("GET", self.metadata()["userinfo_endpoint"])

    def current_agreement(self) -> dict:
        info = self.userinfo()
        return {k: info.get(k) for k in AGREEMENT_CLAIMS}

    def agreements(self, q: str = "", cursor: str | None = None, limit: int = 20) -> dict:
        params = {"q": q, "cursor": cursor, "limit": limit}
        return self._bearer("GET", self.config.issuer + "/api/v1/me/agreements",
                            params={k: v for k, v in params.items() if v})

    def time_entries(self) -> dict:
        return self._bearer("GET", self.config.time_api + "/entries")
