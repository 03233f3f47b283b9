"""OAuth 2.0 Token Exchange (RFC 8693), used to switch agreement without a browser.

Authlib's rfc8693 package is empty, so this is a grant type in Authlib's shape.
What it enforces:
- the client authenticates and may use the grant (``unauthorized_client``);
- ``subject_token`` and ``subject_token_type`` are present; the type is a
  refresh token or an access token of ours, issued to this same client, live
  and unrevoked; anything else is ``invalid_request`` (§2.2.2: "If ... the
  subject_token ... [is] invalid for any reason ... The value of the error
  parameter MUST be the invalid_request error code.");
- ``agreement_id`` names an agreement the person may use with this client,
  checked on every exchange; otherwise ``invalid_target`` (§2.2.2: "unwilling
  or unable to issue a token for ... the target").
The result is a new token family for the target agreement. Exchanging a
refresh token rotates it (a later reuse is detected as such) and returns a new
refresh token; exchanging an access token returns an access token only.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidRequestError, UnauthorizedClientError, scope_to_list
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc6749.hooks import hooked
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from ..agreements import service as agreements
from ..clients.models import TOKEN_EXCHANGE
from ..extensions import db_session, runtime
from . import dpop, tokens
from .grant_types import TOKEN_ENDPOINT_AUTH_METHODS, _principal, family_context
from .resource_indicators import InvalidTargetError

REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class TokenExchangeGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(f"The client is not authorized to use 'grant_type={self.GRANT_TYPE}'")
        form = self.request.form
        for name in ("subject_token", "subject_token_type", "agreement_id"):
            if not form.get(name):
                raise InvalidRequestError(f"Missing '{name}' in request.")
        requested = form.get("requested_token_type")
        if requested and requested != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError("Only access tokens can be requested.")
        if form.get("actor_token"):
            raise InvalidRequestError("Delegation ('actor_token') is not supported.")

        subject_type = form["subject_token_type"]
        if subject_type == REFRESH_TOKEN_TYPE:
            refresh_token = self._refresh_subject(form["subject_token"], client)
            family = refresh_token.family
        elif subject_type == ACCESS_TOKEN_TYPE:
            family, refresh_token = self._access_subject(form["subject_token"], client), None
        else:
            raise InvalidRequestError("'subject_token_type' must be a refresh token or an access token.")

        target = agreements.find_eligible(runtime().db, family.identity_id, client, form["agreement_id"])
        if target is None:
            raise InvalidTargetError("The person has no membership in that agreement for this client.")
        scope = form.get("scope") or family.scope
        if not set(scope_to_list(scope) or []) <= set(scope_to_list(family.scope) or []):
            raise InvalidRequestError("The requested scope exceeds the subject token's scope.")
        if "agreement" not in (scope_to_list(scope) or []):
            raise InvalidRequestError("Switching agreement needs the 'agreement' scope.")

        self.request.client = client
        self.request.subject_family = family
        self.request.subject_refresh_token = refresh_token
        self.request.target = target
        self.request.exchange_scope = scope

    def _refresh_subject(self, value, client):
        token = tokens.find_refresh_token(runtime().db, value)
        if token is None or not token.check_client(client) or token.is_expired() or token.family.revoked:
            raise InvalidRequestError("The subject token is not valid.")
        if token.rotated_at is not None:
            tokens.revoke_family(db_session(), token.family_id, "refresh_token_reuse")
            raise InvalidRequestError("The subject token is not valid.")
        if token.family.dpop_jkt and token.family.dpop_jkt != dpop.current_jkt():
            raise InvalidRequestError("The subject token is bound to another DPoP key.")
        return token

    def _access_subject(self, value, client):
        try:
            decoded = jwt.decode(value, runtime().keys.public_keys(), algorithms=[tokens.ACCESS_TOKEN_ALG])
            JWTClaimsRegistry(iss={"essential": True, "value": runtime().settings.issuer},
                              jti={"essential": True}).validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise InvalidRequestError("The subject token is not valid.") from error
        if decoded.header.get("typ") != "at+jwt" or decoded.claims.get("client_id") != client.client_id:
            raise InvalidRequestError("The subject token is not valid.")
        record = tokens.find_access_token(db_session(), decoded.claims["jti"])
        if record is None or not record.active or record.family is None:
            raise InvalidRequestError("The subject token is not valid.")
        return record.family

    @hooked
    def create_token_response(self):
        session = db_session()
        family, target = self.request.subject_family, self.request.target
        context = {**family_context(family), "family_id": tokens.new_family_id()}
        user = _principal(family.identity_id, context, target, self.request.client)
        if user is None:
            raise InvalidRequestError("The subject token is not valid.")
        self.request.user = user
        rotated = self.request.subject_refresh_token
        # Like every grant here, a refresh token only with offline access.
        token = self.generate_token(user=user, scope=self.request.exchange_scope,
                                    include_refresh_token=rotated is not None
                                    and "offline_access" in (scope_to_list(self.request.exchange_scope) or []))
        if rotated is not None and not tokens.claim_rotation(session.connection(), rotated):
            session.rollback()
            tokens.revoke_family(session, family.id, "refresh_token_reuse")
            raise InvalidRequestError("The subject token is not valid.")
        tokens.persist(session.connection(), token, self.request.client, user, new_family=True,
                       refresh_token_ttl=runtime().settings.refresh_token_ttl, parent_id=family.id,
                       grant_type=self.GRANT_TYPE)
        session.commit()
        agreements.mark_used(runtime().db, family.identity_id, target.agreement_pk)
        token["issued_token_type"] = ACCESS_TOKEN_TYPE
        return 200, token, self.TOKEN_RESPONSE_HEADER
