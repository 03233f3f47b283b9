"""UserInfo, revocation (RFC 7009) and introspection (RFC 7662): Authlib endpoints, our storage."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from authlib.consts import default_json_headers
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError, scope_to_list
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import UserInfoEndpoint
from joserfc import jwt
from joserfc.errors import JoseError

from ..extensions import db_session, runtime
from ..identities.models import Identity
from ..storage.db import utcnow
from . import claims, subjects, tokens

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"]


@dataclass
class IssuedToken:
    """An access or refresh token of ours, as Authlib's endpoints see it."""

    kind: str  # "access_token" | "refresh_token"
    record: tokens.AccessTokenState | tokens.RefreshTokenState
    jwt_claims: dict | None = None

    @property
    def client_id(self) -> str:
        return self.record.client_id

    def check_client(self, client) -> bool:
        return self.client_id == client.client_id

    def is_expired(self) -> bool:
        return self.record.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        if self.kind == "access_token":
            return not self.record.active and not self.is_expired()
        return self.record.is_revoked()

    def get_scope(self) -> str:
        return self.record.scope


def find_token(value: str, hint: str | None) -> IssuedToken | None:
    """Look the token up as the hint says first, then as the other kind."""
    kinds = ["refresh_token", "access_token"] if hint == "refresh_token" else ["access_token", "refresh_token"]
    for kind in kinds:
        found = _find_access(value) if kind == "access_token" else _find_refresh(value)
        if found is not None:
            return found
    return None


def _find_access(value: str) -> IssuedToken | None:
    if value.count(".") != 2 or len(value) > 8192:
        return None
    verified = VERIFIED.decode(value, runtime().keys.public_keys())
    if verified is None:
        return None
    header, token_claims = verified
    if header.get("typ") != "at+jwt" or token_claims.get("iss") != runtime().settings.issuer:
        return None
    # Revocation and expiry come from the token's row, read every time.
    record = tokens.access_token_state(runtime().db, str(token_claims.get("jti")))
    return IssuedToken("access_token", record, token_claims) if record else None


class VerifiedTokens:
    """Access tokens whose signature this process has verified, by their exact text: (header, claims).

    A resource server introspects the same token on many of its requests, and the ES256 verification is the
    largest single cost of an introspection (about 90 µs). A token's text and its signature never change; an
    entry counts only while the key set that verified it is still the published one, so a key that rotates
    out takes its tokens' entries with it. Revocation and expiry are not remembered: they come from the
    token's row on every request. Only verified tokens are kept (an attacker cannot fill the cache without
    our signature), at most ``size`` of them, oldest out first. Callers get their own copy of the claims."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._entries: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def decode(self, value: str, keys) -> tuple[dict, dict] | None:
        entry = self._entries.get(value)
        if entry is None or entry[0] is not keys:
            try:
                # Expired tokens must still be found, to be reported inactive.
                decoded = jwt.decode(value, keys, algorithms=[tokens.ACCESS_TOKEN_ALG])
            except (JoseError, ValueError):
                return None
            entry = (keys, decoded.header, decoded.claims)
            with self._lock:
                self._entries.pop(value, None)
                self._entries[value] = entry
                while len(self._entries) > self.size:
                    del self._entries[next(iter(self._entries))]
        return dict(entry[1]), dict(entry[2])


#: One per process: the key ring is one per process too.
VERIFIED = VerifiedTokens()


def _find_refresh(value: str) -> IssuedToken | None:
    if len(value) > 512:
        return None
    record = tokens.refresh_token_state(runtime().db, value)
    return IssuedToken("refresh_token", record) if record else None


class UnsupportedTokenTypeHintError(OAuth2Error):
    """RFC 7009 §2.2.1, as a 400 (Authlib's class answers 401, a client-auth status)."""

    error = "unsupported_token_type"
    status_code = 400


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = [*AUTH_METHODS, "none"]

    def check_params(self, request, client):
        if "token" not in request.form:
            raise InvalidRequestError("Missing 'token'.")
        hint = request.form.get("token_type_hint")
        if hint and hint not in self.SUPPORTED_TOKEN_TYPES:
            raise UnsupportedTokenTypeHintError()

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token: IssuedToken, request):
        session = db_session()
        if token.kind == "access_token":
            tokens.revoke_access_token(session, token.record.jti)
        else:
            # RFC 7009 §2.1: revoking a refresh token SHOULD also invalidate the
            # access tokens of the same grant; the family holds them all.
            tokens.revoke_family(session, token.record.family_id, "revoked_by_client")


class Introspection(IntrospectionEndpoint):
    """Only confidential clients may introspect, and only tokens issued to them
    or meant for them (``aud``); anything else is reported inactive."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def check_params(self, request, client):
        # RFC 7662 §2.1: the hint is only a hint; an unknown one is ignored.
        if "token" not in request.form:
            raise InvalidRequestError("Missing 'token'.")

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def check_permission(self, token: IssuedToken, client, request):
        if token.check_client(client):
            return True
        audience = (token.jwt_claims or {}).get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        return client.client_id in audiences

    def introspect_token(self, token: IssuedToken):
        if token.kind == "access_token":
            payload = {k: v for k, v in token.jwt_claims.items() if k != "typ"}
            payload["token_type"] = "DPoP" if "cnf" in payload else "Bearer"
            return payload
        record = token.record
        client = runtime().clients.get(db_session(), record.client_id)
        return {
            "scope": record.scope, "client_id": record.client_id, "token_type": "refresh_token",
            "iss": runtime().settings.issuer, "iat": int(record.created_at.timestamp()),
            "exp": int(record.expires_at.timestamp()),
            # The family's identity (deleting an identity deletes its families, tokens and all).
            "sub": subjects.subject_for_id(record.identity_id, client) if record.identity_id else None,
        }

    def create_endpoint_response(self, request):
        status, body, headers = super().create_endpoint_response(request)
        return status, body, default_json_headers


class UserInfo(UserInfoEndpoint):
    def __call__(self, request):
        token = self.resource_protector.acquire_token("openid")
        record = token.recorded
        identity = db_session().get(Identity, record.identity_id) if record.identity_id else None
        if identity is None or identity.disabled:
            raise InvalidTokenError()
        client = runtime().clients.get(db_session(), token["client_id"])
        info = claims.user_info(identity, token.get("scope", ""),
                                requested=claims.requested(record.claims_request, "userinfo"))
        info["sub"] = subjects.subject_for(identity, client)
        if "agreement" in (scope_to_list(token.get("scope", "")) or []):
            # The agreement is the one this access token was issued for; the
            # token is signed and checked for revocation, so it is the source.
            info.update({k: token[k] for k in claims.AGREEMENT_CLAIMS if k in token})
        return 200, info, [("Content-Type", "application/json"), ("Cache-Control", "no-store")]

    def get_issuer(self):
        return runtime().settings.issuer
