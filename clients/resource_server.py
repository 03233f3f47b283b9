"""Protect a product API with the Connect IdP's access tokens (RFC 9068 JWTs), validated locally.

Copy this file and ``clients/stepup.py`` into your API. Needs ``joserfc`` and ``requests``
(Flask only for the optional decorator).

    rs = ResourceServer(issuer="https://login.example", audience="https://time.example")

    @app.get("/entries")
    @rs.require(agreement=True)                       # any valid token for one agreement
    def entries():
        claims = flask.g.access_token                 # validated claims
        ...

    @app.post("/payments/<pid>/approve")
    @rs.require(scopes=["agreement"], agreement=True, roles=["superuser", "user"], acr=[stepup.ACR_MFA])
    def approve(pid): ...

Without Flask: ``claims = rs.authenticate(authorization_header, ...)`` raises
:class:`TokenError`, whose ``response()`` is ``(json_body, status, headers)``.

What is checked (RFC 9068 §4, RFC 8725): a compact JWS with header ``typ`` ``at+jwt``,
an ``alg`` from an allow-list of asymmetric algorithms (never ``none`` or HMAC) and a
``kid`` found in the issuer's JWKS; the signature; ``iss``; ``aud`` containing this
API's audience; ``exp``, ``iat`` (and ``nbf``) with a small leeway; ``sub``,
``client_id`` and ``jti`` present; no ``cnf`` (a DPoP-bound token is not a bearer
token). Then what the route asks for: scopes, the agreement claims, roles, and the
authentication level (acr / max_age: an RFC 9470 step-up challenge).

Keys come from the issuer's discovery document (``jwks_uri``), are cached for
``jwks_ttl`` seconds, and a token signed with an unknown ``kid`` makes the cache
fetch the JWKS once more (the IdP publishes a new key before it signs with it), at
most once per ``refresh_interval`` so random ``kid`` values cannot make us hammer
the IdP.

Local validation cannot see revocation: a revoked token stays valid here until its
``exp`` (the IdP's access tokens live one hour). For actions where that matters, ask
the IdP's introspection endpoint (RFC 7662) as well.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from . import stepup

__all__ = ["InsufficientScope", "InvalidRequest", "InvalidToken", "JWKSCache", "KeysUnavailable",
           "MissingToken", "ResourceServer", "StepUpRequired", "TokenError"]

#: Asymmetric algorithms only: with ``none`` or HS256 anyone holding the public key could forge tokens.
SAFE_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "EdDSA"})
AGREEMENT_CLAIMS = ("agreement_id", "agreement_name", "agreement_product", "agreement_role")
MAX_TOKEN_LENGTH = 8192
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE)

Fetch = Callable[[str], dict]


def _quoted(value: str) -> str:
    """RFC 9110 quoted-string; anything but printable ASCII becomes "?" (no header injection)."""
    value = "".join(c if " " <= c <= "~" else "?" for c in value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- errors


class TokenError(Exception):
    """A request the API must refuse, with its RFC 6750 / RFC 9470 answer."""

    status = 401
    error: str | None = None

    def __init__(self, description: str, *, realm: str | None = None):
        super().__init__(description)
        self.description = description
        self.realm = realm

    def challenge(self) -> str:
        params = [f"realm={_quoted(self.realm)}"] if self.realm else []
        if self.error:
            params += [f'error="{self.error}"', f"error_description={_quoted(self.description)}"]
        return "Bearer " + ", ".join(params) if params else "Bearer"

    def response(self):
        """``(json_body, status, headers)``: Flask and most frameworks take this tuple as it is."""
        body = {"error": self.error or "invalid_request", "error_description": self.description}
        return json.dumps(body), self.status, [("WWW-Authenticate", self.challenge()),
                                               ("Content-Type", "application/json"),
                                               ("Cache-Control", "no-store")]


class MissingToken(TokenError):
    """RFC 6750 §3.1: no credentials at all get the bare challenge, without an error code."""


class InvalidRequest(TokenError):
    status, error = 400, "invalid_request"


class InvalidToken(TokenError):
    status, error = 401, "invalid_token"


class InsufficientScope(TokenError):
    status, error = 403, "insufficient_scope"

    def __init__(self, description: str, *, scopes: Iterable[str] = (), realm: str | None = None):
        super().__init__(description, realm=realm)
        self.scopes = list(scopes)

    def challenge(self) -> str:
        header = super().challenge()
        return header + f", scope={_quoted(' '.join(self.scopes))}" if self.scopes else header


class StepUpRequired(TokenError):
    """RFC 9470: valid token, but the person must authenticate more strongly (or more recently)."""

    status, error = 401, stepup.ERROR

    def __init__(self, description: str, *, acr_values: list[str] | None = None, max_age: int | None = None,
                 realm: str | None = None):
        super().__init__(description, realm=realm)
        self.acr_values, self.max_age = acr_values, max_age

    def challenge(self) -> str:
        return stepup.challenge(self.acr_values, max_age=self.max_age, description=self.description,
                                realm=self.realm)


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched: a server-side problem (answer 503), not a bad token."""

    def response(self):
        body = {"error": "temporarily_unavailable", "error_description": "Cannot check access tokens right now."}
        return json.dumps(body), 503, [("Content-Type", "application/json"), ("Retry-After", "5"),
                                       ("Cache-Control", "no-store")]


# --------------------------------------------------------------------------- keys


def fetch_json(url: str) -> dict:
    response = requests.get(url, timeout=5, headers={"Accept": "application/json"})
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not return a JSON object")
    return data


class JWKSCache:
    """The issuer's public signing keys by ``kid``, found through discovery.

    ``fetch(url) -> dict`` does the HTTP GETs (injectable for tests); ``clock`` too.
    Thread-safe. Also usable for ID tokens and logout tokens.
    """

    def __init__(self, issuer: str, *, fetch: Fetch = fetch_json, ttl: float = 300, refresh_interval: float = 30,
                 clock: Callable[[], float] = time.time):
        self.issuer = issuer.rstrip("/")
        self.fetch, self.ttl, self.refresh_interval, self.clock = fetch, ttl, refresh_interval, clock
        self._lock = threading.Lock()
        self._keys: dict[str, object] = {}
        self._jwks_uri: str | None = None
        self._fetched_at: float | None = None  # last successful fetch
        self._forced_at: float | None = None   # last fetch made because of an unknown kid
        self._failed_at: float | None = None   # last failed fetch
        self._error: Exception | None = None

    def jwks_uri(self) -> str:
        if self._jwks_uri is None:
            metadata = self.fetch(self.issuer + "/.well-known/openid-configuration")
            # Discovery §4.3: the document must name the issuer we asked.
            if metadata.get("issuer") != self.issuer:
                raise ValueError(f"discovery names issuer {metadata.get('issuer')!r}, expected {self.issuer!r}")
            if not isinstance(metadata.get("jwks_uri"), str):
                raise ValueError("discovery has no jwks_uri")
            self._jwks_uri = metadata["jwks_uri"]
        return self._jwks_uri

    def _load(self) -> None:
        jwks = self.fetch(self.jwks_uri())
        keys = {}
        for data in jwks.get("keys", []) if isinstance(jwks.get("keys"), list) else []:
            if not isinstance(data, dict) or not data.get("kid") or data.get("use", "sig") != "sig":
                continue
            try:
                keys[data["kid"]] = KeySet.import_key_set({"keys": [data]}).keys[0]
            except (JoseError, ValueError, TypeError, KeyError):
                continue  # a key type we do not know cannot have signed anything we accept
        self._keys, self._fetched_at = keys, self.clock()

    def get(self, kid: str):
        """The public key with this ``kid``, or None. Raises KeysUnavailable when none could be fetched."""
        with self._lock:
            now = self.clock()
            expired = self._fetched_at is None or now - self._fetched_at >= self.ttl
            # An unknown kid may be a key published after our last fetch (rotation): fetch
            # once more, but not again within refresh_interval, nor soon after a failure.
            unknown = kid not in self._keys and not self._recent(self._forced_at, now)
            if (expired or unknown) and not self._recent(self._failed_at, now):
                if not expired:
                    self._forced_at = now
                try:
                    self._load()
                    self._failed_at = None
                except (requests.RequestException, ValueError, JoseError) as error:
                    # Keep serving the keys we have (if any); try again after refresh_interval.
                    self._failed_at, self._error = now, error
            if self._fetched_at is None:
                raise KeysUnavailable(f"cannot fetch the keys of {self.issuer}: {self._error}")
            return self._keys.get(kid)

    def _recent(self, moment: float | None, now: float) -> bool:
        return moment is not None and now - moment < self.refresh_interval


# --------------------------------------------------------------------------- the resource server


def _header(token: str) -> dict:
    try:
        segment = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidToken("The access token is not a JWT.") from error
    if not isinstance(header, dict):
        raise InvalidToken("The access token is not a JWT.")
    return header


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ResourceServer:
    """Validates the IdP's access tokens for one API (one ``audience``).

    ``clients``: if given, only tokens issued to these client_ids are accepted (for an
    API that serves only its own front end). ``realm`` goes into every challenge.
    ``keys``: a :class:`JWKSCache` to share; otherwise one is made with ``fetch``,
    ``jwks_ttl`` and ``clock``.
    """

    def __init__(self, issuer: str, audience: str, *, algorithms: Iterable[str] = ("ES256", "RS256"),
                 leeway: int = 30, realm: str | None = None, clients: Iterable[str] | None = None,
                 keys: JWKSCache | None = None, fetch: Fetch = fetch_json, jwks_ttl: float = 300,
                 clock: Callable[[], float] = time.time):
        self.algorithms = frozenset(algorithms)
        if not self.algorithms or not self.algorithms <= SAFE_ALGORITHMS:
            raise ValueError(f"algorithms must be asymmetric JWS algorithms, not {sorted(self.algorithms)}")
        self.issuer, self.audience, self.leeway, self.realm = issuer.rstrip("/"), audience, leeway, realm
        self.clients = frozenset(clients) if clients is not None else None
        self.clock = clock
        self.keys = keys or JWKSCache(self.issuer, fetch=fetch, ttl=jwks_ttl, clock=clock)

    # -- the token itself ----------------------------------------------------

    def validate(self, token: str) -> dict:
        """The claims of a valid access token for this API; raises InvalidToken (or KeysUnavailable)."""
        def invalid(description):
            return InvalidToken(description, realm=self.realm)

        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise invalid("The access token is not a signed JWT.")
        header = _header(token)
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if alg not in self.algorithms:  # (the header is not echoed: it is the sender's text)
            raise invalid("The access token's signing algorithm is not accepted.")
        # RFC 9068 §4: typ "at+jwt" (or its long form) tells access tokens from ID tokens.
        if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
            raise invalid("The token is not an access token (typ at+jwt).")
        if not isinstance(kid, str) or not kid:
            raise invalid("The access token names no signing key (kid).")
        key = self.keys.get(kid)
        if key is None:
            raise invalid("The access token is signed with an unknown key.")
        if key.alg and key.alg != alg:  # a JWK that names its algorithm is used with that one only
            raise invalid("The access token's algorithm does not match its key.")
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except (JoseError, ValueError) as error:
            raise invalid("The access token signature is not valid.") from error

        now = self.clock()
        if claims.get("iss") != self.issuer:
            raise invalid("The access token is from another issuer.")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise invalid("The access token is not meant for this API.")
        if not _number(claims.get("exp")) or now > claims["exp"] + self.leeway:
            raise invalid("The access token has expired.")
        if not _number(claims.get("iat")) or claims["iat"] > now + self.leeway:
            raise invalid("The access token is not valid yet.")
        if "nbf" in claims and (not _number(claims["nbf"]) or claims["nbf"] > now + self.leeway):
            raise invalid("The access token is not valid yet.")
        for name in ("sub", "client_id", "jti"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise invalid(f"The access token has no {name}.")
        if "cnf" in claims:
            raise invalid("This access token is bound to a key (DPoP) and cannot be used as a bearer token.")
        if self.clients is not None and claims["client_id"] not in self.clients:
            raise invalid("The access token was issued to an application this API does not serve.")
        return claims

    # -- what a route asks for -----------------------------------------------

    def check(self, claims: dict, *, scopes: Iterable[str] = (), agreement: bool = False,
              product: str | None = None, roles: Iterable[str] | None = None,
              acr: Iterable[str] | None = None, max_age: int | None = None) -> None:
        """Raise InsufficientScope (403) or StepUpRequired (401) unless the validated ``claims`` suffice.

        ``agreement``: the four agreement claims must be present (the token is for one
        agreement); ``product`` and ``roles`` narrow that down. ``acr``: acceptable acr
        values; ``max_age``: seconds since the person last authenticated.
        """
        scopes = list(scopes)
        granted = set(claims.get("scope", "").split()) if isinstance(claims.get("scope"), str) else set()
        if not set(scopes) <= granted:
            raise InsufficientScope("The access token lacks a scope this API needs.", scopes=scopes,
                                    realm=self.realm)
        if agreement or product or roles is not None:
            if not all(isinstance(claims.get(name), str) and claims[name] for name in AGREEMENT_CLAIMS):
                raise InsufficientScope("This API needs a token for one agreement (scope agreement).",
                                        scopes=["agreement"], realm=self.realm)
            if product and claims["agreement_product"] != product:
                raise InsufficientScope(f"This API serves {product} agreements only.", realm=self.realm)
            if roles is not None and claims["agreement_role"] not in set(roles):
                raise InsufficientScope("Your role in this agreement does not allow this.", realm=self.realm)
        acr_values = list(acr) if acr is not None else None
        if (acr_values or max_age is not None) and stepup.insufficient(
                claims, required_acr=acr_values or None, max_age=max_age, now=self.clock()):
            raise StepUpRequired("A stronger authentication is required for this action.",
                                 acr_values=acr_values, max_age=max_age, realm=self.realm)

    def authenticate(self, authorization: str | None, **requirements) -> dict:
        """Validate an ``Authorization`` header value and check ``requirements`` (see :meth:`check`)."""
        if not authorization:
            raise MissingToken("A bearer access token is required.", realm=self.realm)
        match = _BEARER.fullmatch(authorization)
        if not match:
            if authorization.split(" ", 1)[0].lower() != "bearer":
                # Another scheme (Basic, DPoP, ...): to us that is no bearer token at all.
                raise MissingToken("A bearer access token is required.", realm=self.realm)
            raise InvalidRequest("The Authorization header is malformed.", realm=self.realm)
        claims = self.validate(match.group(1))
        self.check(claims, **requirements)
        return claims

    # -- Flask ---------------------------------------------------------------

    def require(self, **requirements):
        """Flask decorator: the validated claims are in ``flask.g.access_token``."""
        def decorator(view):
            @functools.wraps(view)
            def wrapper(*args, **kwargs):
                import flask

                try:
                    flask.g.access_token = self.authenticate(flask.request.headers.get("Authorization"),
                                                             **requirements)
                except (TokenError, KeysUnavailable) as error:
                    return error.response()
                return view(*args, **kwargs)
            return wrapper
        return decorator
