"""Authlib grant types with our storage hooks; the protocol logic stays Authlib's."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, scope_to_list
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, OpenIDToken
from authlib.oidc.core.util import create_half_hash
from authlib.oidc.core.models import AuthorizationCodeMixin

from ..agreements import service as agreements
from ..agreements.service import Selected
from ..extensions import db_session, runtime
from . import claims, dpop, subjects, tokens
from .tokens import Principal

TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt",
                               "none"]
#: How long a consumed code's tombstone is kept, so a late replay still revokes
#: what the first redemption issued (RFC 6749 §4.1.2 caps code life at 10 minutes).
CODE_TOMBSTONE_TTL = 600
REPLAYED = "code_replayed"


def _code_key(code: str) -> str:
    # Keyed by digest: a dump of Redis does not hand out redeemable codes.
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    data: dict

    def get_redirect_uri(self):
        return self.data.get("redirect_uri")

    def get_scope(self):
        return self.data["scope"]

    def get_nonce(self):
        return self.data.get("nonce")

    def get_auth_time(self):
        return self.data.get("auth_time")

    def get_acr(self):
        return self.data.get("acr")

    def get_amr(self):
        return self.data.get("amr") or None

    @property
    def code_challenge(self):
        return self.data.get("code_challenge")

    @property
    def code_challenge_method(self):
        return self.data.get("code_challenge_method")


def _principal(identity_id: str, data: dict, agreement: Selected | None = None, client=None,
               identity: tokens.TokenIdentity | None = None) -> Principal | None:
    """The person a token is issued to; ``identity`` when the caller read it already (with the refresh token)."""
    if identity is None:
        identity = tokens.token_identity(runtime().db, identity_id)
    if identity is None or identity.disabled:
        return None
    return Principal(identity=identity, family_id=data["family_id"], auth_time=data.get("auth_time"),
                     acr=data.get("acr"), amr=list(data.get("amr") or []), sid=data.get("sid"), agreement=agreement,
                     subject=subjects.subject_for(identity, client), claims_request=data.get("claims") or None)


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only, and required of public clients at the authorization
    endpoint, not just the token endpoint (RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            # RFC 7636 §4.3: an absent method means "plain", which we do not offer.
            raise InvalidRequestError("'code_challenge_method' must be 'S256'.")
        if grant.request.client.is_public and not data.get("code_challenge"):
            raise InvalidRequestError("Public clients must use PKCE: 'code_challenge' is required.")
        super().validate_code_challenge(grant, redirect_uri)


class ClaimsParameter:
    """OIDC Core §5.5: a malformed ``claims`` parameter is ``invalid_request``."""

    def __call__(self, grant):
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant, _result):
        try:
            claims.parse_claims_request(grant.request.payload.data.get("claims"))
        except ValueError as error:
            raise InvalidRequestError(f"Invalid 'claims' parameter: {error}.") from error


class ResponseModes:
    """``query`` (the default for code) and ``form_post`` only; form_post posts
    from the browser, so it needs an http(s) redirect URI."""

    SUPPORTED = ("query", "form_post")

    def __call__(self, grant):
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant, _result):
        mode = grant.request.payload.data.get("response_mode")
        if mode is not None and mode not in self.SUPPORTED:
            raise InvalidRequestError(f"Unsupported 'response_mode': use one of {', '.join(self.SUPPORTED)}.")
        redirect_uri = grant.request.payload.redirect_uri or grant.request.client.get_default_redirect_uri() or ""
        if mode == "form_post" and not redirect_uri.startswith(("https://", "http://")):
            raise InvalidRequestError("The 'form_post' response mode requires an http or https redirect URI.")


class DPoPBinding:
    """Clients registered with dpop_bound_access_tokens must send a proof (RFC 9449 §5.2); the proof itself was
    checked by the view. At the authorization endpoint, ``dpop_jkt`` (§10) must be a JWK SHA-256 thumbprint:
    the code is bound to it (``save_authorization_code``) and redeemed only with a proof by that key."""

    def __call__(self, grant):
        grant.register_hook("before_create_token_response", self.check)
        grant.register_hook("after_validate_authorization_request_payload", self.validate_authorization_request)

    def check(self, grant):
        if grant.request.client.meta("dpop_bound_access_tokens") and not dpop.current_jkt():
            raise dpop.InvalidDPoPProofError("This client must use DPoP.")

    def validate_authorization_request(self, grant, _result):
        value = grant.request.payload.data.get("dpop_jkt")
        if value is not None and not dpop.is_thumbprint(value):
            raise InvalidRequestError("'dpop_jkt' must be the base64url SHA-256 JWK thumbprint of the DPoP key.")


#: The ID token algorithms ``tokens.CompactSigner`` signs (every one a client may register, ID_TOKEN_ALGS).
COMPACT_ALGORITHMS = frozenset(("RS256", "ES256"))


class IdTokenMixin:
    def resolve_client_private_key(self, client):
        return runtime().keys.signing_keyset(client.id_token_signed_response_alg or "RS256")

    def encode_id_token(self, token, request):
        """Authlib's ``OpenIDCode.encode_id_token`` (the same claims in the same order, the same header), signed by
        ``tokens.CompactSigner`` instead of joserfc's ``jwt.encode``: the key set, algorithm and header checks it
        repeats per token cost about 120,000 instructions, 1 % of a code exchange or refresh (bench/README.md).
        An algorithm the signer does not take goes to Authlib. tests/protocol/test_id_token_signing.py compares
        the two."""
        alg = self.get_client_algorithm(request.client)
        if alg not in COMPACT_ALGORITHMS or self.get_encode_header(request.client) != {"alg": alg}:
            return super().encode_id_token(token, request)
        id_claims = self.get_compatible_claims(request)
        if request.authorization_code:
            id_claims.update(self.get_authorization_code_claims(request.authorization_code))
        access_token = token.get("access_token")
        if access_token:
            at_hash = create_half_hash(access_token, alg)
            if at_hash is not None:
                id_claims["at_hash"] = at_hash.decode("utf-8")
        id_claims.update(self.generate_user_info(request.user, token["scope"]))
        return tokens.compact_signer(runtime().keys, alg, "JWT").sign(id_claims)

    def get_client_claims(self, client):
        settings = runtime().settings
        now = int(time.time())
        return {"iss": settings.issuer, "aud": [client.client_id], "azp": client.client_id,
                "iat": now, "exp": now + settings.id_token_ttl}

    def generate_user_info(self, user: Principal, scope):
        info = claims.user_info(user.identity, scope, user.agreement,
                                requested=claims.requested(user.claims_request, "id_token"))
        info["sub"] = user.get_user_id()
        # The code's auth context is already in; this repeats it for refreshes,
        # where an ID token must keep the original auth_time (OIDC Core §12.2).
        for name in ("auth_time", "acr", "sid"):
            if getattr(user, name):
                info[name] = getattr(user, name)
        if user.amr:
            info["amr"] = user.amr
        return info


class IdTokenForCode(IdTokenMixin, OpenIDCode):
    def exists_nonce(self, nonce, request):
        # Nonce replay is the RP's check (OIDC Core §3.1.3.7 step 11); codes are single use.
        return False


class IdTokenForRefresh(IdTokenMixin, OpenIDToken):
    pass


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS

    def generate_authorization_code(self):
        # 288 random bits as 48 URL-safe characters from one urandom read (Authlib's default draws each of its
        # 48 characters from SystemRandom separately).
        return secrets.token_urlsafe(36)

    def save_authorization_code(self, code, request):
        principal: Principal = request.user
        data = request.payload.data
        settings = runtime().settings
        runtime().store.put("code", _code_key(code), {
            "client_id": request.client.client_id,
            "identity_id": principal.identity.id,
            "family_id": principal.family_id,
            "redirect_uri": request.payload.redirect_uri,
            "scope": request.scope,
            "nonce": data.get("nonce"),
            "auth_time": principal.auth_time,
            "acr": principal.acr,
            "amr": principal.amr,
            "sid": principal.sid,
            "agreement": asdict(principal.agreement) if principal.agreement else None,
            "claims": claims.parse_claims_request(data.get("claims")),
            "code_challenge": data.get("code_challenge"),
            "code_challenge_method": data.get("code_challenge_method"),
            "dpop_jkt": data.get("dpop_jkt"),
            "expires_at": time.time() + settings.authorization_code_ttl,
        }, CODE_TOMBSTONE_TTL)

    def query_authorization_code(self, code, client):
        if client.meta("dpop_bound_access_tokens") and not dpop.current_jkt():
            # Refuse before the code is spent, so a retry with a proof can still work.
            raise dpop.InvalidDPoPProofError("This client must use DPoP.")
        consumed = runtime().store.consume("code", _code_key(code))
        if consumed is None:
            return None
        if not consumed.first:
            # "If an authorization code is used more than once, the authorization
            # server MUST deny the request and SHOULD revoke (when possible) all
            # tokens previously issued based on that authorization code." §4.1.2
            # The first redemption may still be writing its tokens: the marker
            # tells it to revoke them once committed (see save_token).
            runtime().store.put(REPLAYED, consumed.value["family_id"], {"at": time.time()}, CODE_TOMBSTONE_TTL)
            tokens.revoke_family(db_session(), consumed.value["family_id"], "code_reuse")
            return None
        if consumed.value["client_id"] != client.client_id or consumed.value["expires_at"] < time.time():
            return None
        bound = consumed.value.get("dpop_jkt")
        if bound is not None and bound != dpop.current_jkt():
            # RFC 9449 §10: "If they do not match, it MUST reject the request." The code is spent, as by a wrong
            # code_verifier: whoever holds it without the key (§11.9) gets one refusal, not repeated tries.
            raise InvalidGrantError("The authorization code is bound to a DPoP key (dpop_jkt): "
                                    "redeem it with a DPoP proof signed by that key.")
        return AuthorizationCode(consumed.value)

    def delete_authorization_code(self, authorization_code):
        """Nothing left to do: query_authorization_code consumed it atomically."""

    def authenticate_user(self, authorization_code):
        agreement = authorization_code.data.get("agreement")
        return _principal(authorization_code.data["identity_id"], authorization_code.data,
                          Selected(**agreement) if agreement else None, self.request.client)

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        # A refresh token outlives the browser session, so it needs consent to
        # offline access (OIDC Core §11), not only the client's grant types.
        include_refresh_token = include_refresh_token and "offline_access" in scope_to_list(scope or "")
        return super().generate_token(user, scope, grant_type, expires_in, include_refresh_token)

    def save_token(self, token):
        # The family, its tokens and the audit event, written together (the ORM session's unit of work has
        # nothing to do here; on PostgreSQL one statement in autocommit, see persist_alone).
        family_id = self.request.user.family_id
        tokens.persist_alone(runtime().db, token, self.request.client, self.request.user, new_family=True,
                             refresh_token_ttl=runtime().settings.refresh_token_ttl, grant_type=self.GRANT_TYPE)
        if runtime().store.get(REPLAYED, family_id) is not None:
            # A replay arrived while we were issuing: the response still goes
            # out (the code was good), but what it carries is revoked at once.
            tokens.revoke_family(db_session(), family_id, "code_reuse")


def family_context(family) -> dict:
    return {"family_id": family.id, "auth_time": family.auth_time, "acr": family.acr, "amr": family.amr,
            "sid": family.sid, "claims": family.claims_request}


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """Machine-to-machine tokens: no person, so ``sub`` is the client (RFC 9068 §2.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = [m for m in TOKEN_ENDPOINT_AUTH_METHODS if m != "none"]

    def save_token(self, token):
        tokens.persist_alone(runtime().db, token, self.request.client,
                             refresh_token_ttl=runtime().settings.refresh_token_ttl, grant_type=self.GRANT_TYPE)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        session = db_session()
        token = tokens.find_refresh_token(runtime().db, refresh_token)
        if token is None or token.family.revoked or token.is_expired():
            return None
        if token.rotated_at is not None:
            # A rotated token came back: it was copied. Revoke the whole family
            # so neither the thief nor the client keeps access (RFC 9700 §4.14.2).
            tokens.revoke_family(session, token.family_id, "refresh_token_reuse")
            return None
        if token.family.dpop_jkt and token.family.dpop_jkt != dpop.current_jkt():
            # RFC 9449 §5: a bound refresh token needs a proof with the same key.
            return None
        if token.family.agreement_id is not None:
            # Membership is checked at every refresh: a removed member (or a
            # closed agreement) gets invalid_grant here, not at token expiry.
            self.request.agreement = agreements.current(runtime().db, token.family.identity_id,
                                                        token.family.agreement_id, self.request.client)
            if self.request.agreement is None:
                return None
        return token

    def authenticate_user(self, refresh_token):
        return _principal(refresh_token.family.identity_id, family_context(refresh_token.family),
                          getattr(self.request, "agreement", None), self.request.client, refresh_token.identity)

    def save_token(self, token):
        # The rotation claim and the new tokens are written together (one statement on PostgreSQL, one
        # transaction on SQLite): if anything fails, neither is kept and the old refresh token stays usable.
        # Authlib calls revoke_old_credential after this; the claim is made here so that it is never apart
        # from the tokens it pays for.
        refresh_token = self.request.refresh_token
        if not tokens.persist_alone(runtime().db, token, self.request.client, self.request.user,
                                    refresh_token_ttl=runtime().settings.refresh_token_ttl,
                                    grant_type=self.GRANT_TYPE, family_expires_at=refresh_token.family.expires_at,
                                    claim=refresh_token):
            # Another request rotated it between our read and now: same as reuse.
            tokens.revoke_family(db_session(), refresh_token.family_id, "refresh_token_reuse")
            raise InvalidGrantError("The refresh token was already used.")

    def revoke_old_credential(self, refresh_token):
        """Nothing left to do: save_token claimed the rotation with the new tokens."""
