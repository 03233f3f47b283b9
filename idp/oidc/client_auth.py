"""Client authentication with JWT assertions (RFC 7523 §2.2; OIDC Core §9):
``client_secret_jwt`` and ``private_key_jwt``, on Authlib's JWTBearerClientAssertion.

What it adds to Authlib:
- ``aud`` must name this issuer or one of its endpoints;
- the assertion must be short-lived: ``exp`` at most MAX_LIFETIME ahead;
- ``jti`` is single use, across processes (ephemeral store);
- keys: the client's registered ``jwks``, or its ``jwks_uri`` fetched with a
  short timeout and cached briefly (a rotated key is fetched again on a miss);
- ``client_secret_jwt`` needs the secret itself as the HMAC key, so for those
  clients (and only those) the secret is also kept encrypted at rest.
"""

from __future__ import annotations

import binascii
import time

import requests
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from joserfc.jwk import KeySet, OctKey

from ..extensions import runtime

MAX_LIFETIME = 300
JWKS_CACHE_SECONDS = 300
_jwks_cache: dict[str, tuple[float, dict]] = {}


def endpoint_audiences(issuer: str) -> list[str]:
    return [issuer, f"{issuer}/token", f"{issuer}/revoke", f"{issuer}/introspect", f"{issuer}/par",
            f"{issuer}/device_authorization"]


def fetch_jwks(uri: str, force: bool = False) -> dict:
    cached = _jwks_cache.get(uri)
    if cached and not force and cached[0] > time.monotonic():
        return cached[1]
    try:
        response = requests.get(uri, timeout=3)
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError) as error:
        raise InvalidClientError(description="The client's jwks_uri could not be read.") from error
    _jwks_cache[uri] = (time.monotonic() + JWKS_CACHE_SECONDS, data)
    return data


class ClientAssertion(JWTBearerClientAssertion):
    def __init__(self, method: str):
        super().__init__(validate_jti=True, leeway=30)
        self.CLIENT_AUTH_METHOD = method

    def __call__(self, query_client, request):
        # Both assertion methods see every assertion; each handles only clients
        # registered for it, so the other one gets its turn instead of an error.
        assertion = request.form.get("client_assertion")
        if request.form.get("client_assertion_type") == ASSERTION_TYPE and assertion:
            _headers, claims = self.extract_assertion(assertion)
            subject = claims.get("sub")
            named = request.form.get("client_id")
            if named and named != subject:
                # RFC 7521 §4.2: a client_id beside the assertion must name the same client.
                raise InvalidClientError(description="'client_id' does not match the assertion's subject.")
            client = query_client(subject) if isinstance(subject, str) else None
            if client is not None and client.token_endpoint_auth_method != self.CLIENT_AUTH_METHOD:
                return None
        return super().__call__(query_client, request)

    def get_audiences(self):
        return endpoint_audiences(runtime().settings.issuer)

    def verify_claims(self, claims):
        super().verify_claims(claims)
        if not isinstance(claims.get("exp"), int) or claims["exp"] > time.time() + MAX_LIFETIME:
            raise InvalidClientError(description=f"The assertion must expire within {MAX_LIFETIME} seconds.")

    def validate_jti(self, claims, jti):
        ttl = max(1, int(claims["exp"] - time.time()) + self.leeway)
        return runtime().store.incr("assertion_jti", f"{claims['sub']}:{jti}", ttl) == 1

    def resolve_client_public_key(self, client):
        if self.CLIENT_AUTH_METHOD == "client_secret_jwt":
            encrypted = client.meta("client_secret_encrypted")
            if not encrypted or client.token_endpoint_auth_method != "client_secret_jwt":
                raise InvalidClientError(description="The client cannot use client_secret_jwt.")
            return OctKey.import_key(runtime().cipher.decrypt(encrypted, client.client_id).encode())
        if client.meta("jwks"):
            return KeySet.import_key_set(client.meta("jwks"))
        if client.meta("jwks_uri"):
            return lambda obj: self._key_from_uri(client.meta("jwks_uri"), obj)
        raise InvalidClientError(description="The client has no registered keys.")

    def _key_from_uri(self, uri, obj):
        kid = obj.headers().get("kid")
        keys = KeySet.import_key_set(fetch_jwks(uri))
        if kid and not any(k.kid == kid for k in keys.keys):
            keys = KeySet.import_key_set(fetch_jwks(uri, force=True))  # the client rotated its keys
        return keys.get_by_kid(kid) if kid else keys


def client_secret_basic(query_client, request):
    """Authlib's client_secret_basic, but a malformed Authorization header
    (empty, not base64, not UTF-8) is invalid_client (401), not a 500."""
    try:
        return authenticate_client_secret_basic(query_client, request)
    except (ValueError, UnicodeDecodeError, binascii.Error) as error:
        raise InvalidClientError(status_code=401, description="Malformed HTTP Basic credentials.") from error


def register(server) -> None:
    server.register_client_auth_method("client_secret_basic", client_secret_basic)
    for method in ("client_secret_jwt", "private_key_jwt"):
        server.register_client_auth_method(method, ClientAssertion(method))
