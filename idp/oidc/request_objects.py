"""JWT-Secured Authorization Requests (RFC 9101; OIDC Core §6) on Authlib's extension.

Request objects come by value (``request``) or through a pushed authorization
request (``par.py``); other ``request_uri`` values are not fetched
(``request_uri_not_supported``), so the IdP never makes outbound requests on
an attacker's behalf. Unsigned objects (alg ``none``) are accepted unless the
client registered ``require_signed_request_object``. A signed object's ``aud``,
when present, must name this issuer; objects over MAX_SIZE are refused.
"""

from __future__ import annotations

from authlib.oauth2.rfc9101 import JWTAuthenticationRequest
from authlib.oauth2.rfc9101.errors import InvalidRequestObjectError
from joserfc.jwk import KeySet

from ..extensions import runtime
from .client_auth import fetch_jwks

MAX_SIZE = 32 * 1024
ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"]


class RequestObjects(JWTAuthenticationRequest):
    def __init__(self):
        super().__init__(support_request=True, support_request_uri=False)

    def parse_authorization_request(self, authorization_server, request):
        raw = request.payload.data.get("request")
        if raw is not None and len(raw) > MAX_SIZE:
            raise InvalidRequestObjectError(description="The request object is too large.",
                                            state=request.payload.state)
        return super().parse_authorization_request(authorization_server, request)

    def _decode_request_object(self, request, client, raw_request_object):
        request_object = super()._decode_request_object(request, client, raw_request_object)
        audience = request_object.claims.get("aud")
        if audience is not None:
            audiences = audience if isinstance(audience, list) else [audience]
            if runtime().settings.issuer not in audiences:
                raise InvalidRequestObjectError(description="The request object's 'aud' must be this issuer.",
                                                state=request.payload.state)
        return request_object

    def resolve_client_public_key(self, client):
        if client.meta("jwks"):
            return KeySet.import_key_set(client.meta("jwks"))
        if client.meta("jwks_uri"):
            return KeySet.import_key_set(fetch_jwks(client.meta("jwks_uri")))
        return KeySet([])

    def get_request_object_signing_algorithms(self, client):
        return ALGORITHMS if self.get_client_require_signed_request_object(client) else [*ALGORITHMS, "none"]

    def get_server_metadata(self):
        issuer = runtime().settings.issuer
        return {"issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
                "require_signed_request_object": False}

    def get_client_require_signed_request_object(self, client):
        return bool(client.meta("require_signed_request_object"))
