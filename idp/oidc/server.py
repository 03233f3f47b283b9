"""Builds the Authlib authorization server and resource protector for one app."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from urllib.parse import quote_plus

from authlib.common.security import is_secure_transport
from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.integrations.flask_oauth2 import ResourceProtector as FlaskResourceProtector
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import (InsecureTransportError, InvalidClientError, MissingAuthorizationError,
                                           UnsupportedTokenTypeError)
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Response
from flask import request as flask_request
from werkzeug.datastructures import MultiDict

from ..extensions import current_app_object, current_request, db_session, runtime
from . import client_auth, dpop, tokens
from .device import DeviceAuthorization, DeviceCode
from .endpoints import Introspection, Revocation, UserInfo
from .logout import EndSession
from .request_objects import RequestObjects
from .resource_indicators import ResourceIndicators
from .token_exchange import TokenExchangeGrant
from .grant_types import (AuthorizationCodeGrant, ClientCredentialsGrant, DPoPBinding, IdTokenForCode, IdTokenForRefresh, RefreshTokenGrant,
                          ClaimsParameter, ResponseModes,
                          S256CodeChallenge)


def _blank_state(request) -> None:
    """What Authlib's ``OAuth2Request`` constructor sets to None, for our requests that skip that constructor
    (tests/protocol/test_protocol_request.py compares the attributes with Authlib's)."""
    request.client = request.auth_method = request.user = request.authorization_code = None
    request.refresh_token = request.credential = request._scope = None


class ParamLists(Mapping):
    """A parameter's values by name, looked up when asked: Authlib asks ``datalist`` for two or three parameters
    (is one repeated?) several times a request, and building every list each time cost 4 % of an
    authorization request."""

    __slots__ = ("_params",)

    def __init__(self, params: MultiDict):
        self._params = params

    def __getitem__(self, name):
        values = self._params.getlist(name)
        if not values:
            raise KeyError(name)
        return values

    def get(self, name, default=None):
        return self._params.getlist(name) or default

    def __iter__(self):
        return iter(self._params)

    def __len__(self):
        return len(self._params)


class ParamsPayload(OAuth2Payload):
    def __init__(self, params: MultiDict):
        self._params = params

    @property
    def data(self):
        return self._params

    @property
    def datalist(self):
        return ParamLists(self._params)


class ParamsOAuth2Request(OAuth2Request):
    """An authorization request rebuilt from stored parameters, for resuming
    after login or consent without trusting anything the browser sends back."""

    def __init__(self, uri: str, params: MultiDict):
        # Authlib's constructor with its transport check remembered: the URI is always our own endpoint's.
        if not _secure_uri(uri, bool(os.getenv("AUTHLIB_INSECURE_TRANSPORT"))):
            raise InsecureTransportError()
        self.method, self.uri, self.headers, self._body = "GET", uri, {}, None
        _blank_state(self)
        self.payload = ParamsPayload(params)

    @property
    def args(self):
        return self.payload.data

    @property
    def form(self):
        return MultiDict()


class ProtocolRequest(FlaskOAuth2Request):
    """Authlib's Flask request wrapper, with what its constructor computes for every request done lazily or once.

    Authlib's constructor builds the full URL (``request.url``: Werkzeug quotes path and query) for its
    transport check and for ``uri``, which only dynamic client management reads, and evaluates
    ``headers or {}``, which walks the whole WSGI environ to count the headers. Here the same check
    (``is_secure_transport`` looks at the scheme and host name only) is made on scheme and host and remembered,
    and ``uri`` is built when first read. The attributes are those Authlib's constructor sets
    (tests/protocol/test_protocol_request.py compares them, so an Authlib upgrade that adds one fails there)."""

    def __init__(self, request):
        if not _secure_uri(f"{request.scheme}://{request.host}/", bool(os.getenv("AUTHLIB_INSECURE_TRANSPORT"))):
            raise InsecureTransportError()
        self.method = request.method
        self.headers = request.headers
        self._body = None
        self.payload = FlaskOAuth2Payload(request)
        _blank_state(self)
        self._request = request

    @functools.cached_property
    def uri(self) -> str:
        return self._request.url


@functools.lru_cache(maxsize=256)
def _secure_uri(uri: str, insecure_allowed: bool) -> bool:
    # insecure_allowed is part of the key only: is_secure_transport reads AUTHLIB_INSECURE_TRANSPORT itself.
    return is_secure_transport(uri)


class AuthorizationServer(FlaskAuthorizationServer):
    def query_client(self, client_id):
        client = runtime().clients.get(db_session(), client_id)
        if client is None or client.disabled:
            return None
        return client

    def save_token(self, token, request):
        raise NotImplementedError("each grant type persists its own tokens")

    def handle_error_response(self, request, error):
        if isinstance(error, InvalidClientError):
            # Our contract: every failed client authentication is a 401 with a
            # challenge (RFC 6749 §5.2 makes it a MUST only for HTTP Basic).
            error.status_code = 401
        return super().handle_error_response(request, error)

    def handle_response(self, status_code, payload, headers):
        # Authlib's, with the app's JSON provider reached directly (flask.json.dumps goes through the
        # current_app proxy twice per response): the same bytes.
        if isinstance(payload, dict):
            payload = current_app_object().json.dumps(payload)
        return Response(payload, status=status_code, headers=headers)

    def create_oauth2_request(self, request):
        if isinstance(request, OAuth2Request):
            return request
        if isinstance(request, MultiDict):
            return ParamsOAuth2Request(runtime().settings.issuer + "/authorize", request)
        # The request object itself, not Flask's proxy: Authlib reads the form through it a dozen times a request.
        return ProtocolRequest(current_request())


class Issuer(IssuerParameter):
    def get_issuer(self):
        return runtime().settings.issuer

    def add_issuer_parameter(self, authorization_server, response):
        """RFC 9207 §2: ``iss`` added to the query of the redirect Authlib just built, as Authlib's hook adds it,
        without parsing that query back and encoding it again (4 % of an authorization request): Authlib wrote
        it with ``url_encode`` a moment ago, so appending the encoded parameter gives the same URI."""
        issuer, location = self.get_issuer(), response.location
        if not issuer or not location:
            return
        base, hash_mark, fragment = location.partition("#")
        path, _, query = base.partition("?")
        query = f"{query}&iss={quote_plus(issuer)}" if query else f"iss={quote_plus(issuer)}"
        response.location = f"{path}?{query}{hash_mark}{fragment}"


class AccessTokenValidator(JWTBearerTokenValidator):
    """RFC 9068 validation plus our revocation list: a token whose family or
    ``jti`` was revoked stops working immediately, not at ``exp``."""

    def __init__(self):
        super().__init__(issuer=None, resource_server=None)

    def validate_iss(self, claims_, iss):
        return iss == runtime().settings.issuer

    def get_jwks(self):
        return runtime().keys.public_keys()

    def authenticate_token(self, token_string):
        self.issuer = runtime().settings.issuer
        self.resource_server = runtime().settings.issuer
        return super().authenticate_token(token_string)

    def validate_token(self, token, scopes, request, **kwargs):
        super().validate_token(token, scopes, request, **kwargs)
        if token.get("cnf"):
            # RFC 9449 §7.1: a DPoP-bound token is not a bearer token.
            raise InvalidTokenError("This access token must be presented with DPoP.", realm=self.realm)
        self.check_recorded(token)

    def check_recorded(self, token):
        record = tokens.access_token_state(runtime().db, token["jti"])
        if record is None or not record.active:
            raise InvalidTokenError(realm=self.realm)
        # Kept with the token: UserInfo and the APIs need whose token it is, without reading it again.
        token.recorded = record


class DPoPChallenge(OAuth2Error):
    """RFC 9449 §7.1: failures at a resource answer with a DPoP challenge."""

    status_code = 401

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error

    def get_headers(self):
        algs = " ".join(dpop.ALGORITHMS)
        return super().get_headers() + [
            ("WWW-Authenticate", f'DPoP error="{self.error}", error_description="{self.description}", algs="{algs}"')]


class DPoPTokenValidator(AccessTokenValidator):
    TOKEN_TYPE = "dpop"

    def authenticate_token(self, token_string):
        try:
            token = super().authenticate_token(token_string)
        except InvalidTokenError as error:
            raise DPoPChallenge("invalid_token", "The access token is not valid.") from error
        token.raw = token_string
        return token

    def validate_token(self, token, scopes, request, **kwargs):
        try:
            JWTBearerTokenValidator.validate_token(self, token, scopes, request, **kwargs)
            self.check_recorded(token)
        except InvalidTokenError as error:
            raise DPoPChallenge("invalid_token", "The access token is not valid.") from error
        jkt = (token.get("cnf") or {}).get("jkt")
        if not jkt:
            raise DPoPChallenge("invalid_token", "This access token is not DPoP-bound; use the Bearer scheme.")
        proofs = dpop.sent_proofs()
        if len(proofs) != 1:
            raise DPoPChallenge("invalid_dpop_proof", "Send exactly one DPoP proof.")
        try:
            proved = dpop.verify_proof(proofs[0], method=flask_request.method, url=dpop.request_url(),
                                       access_token=token.raw)
        except OAuth2Error as error:
            raise DPoPChallenge(error.error, error.get_error_description()) from error
        if proved != jkt:
            raise DPoPChallenge("invalid_dpop_proof", "The DPoP proof is signed by another key.")


class BearerTokenRequired(OAuth2Error):
    """RFC 6750 §3.1: a request without a bearer token gets the bare challenge,
    with no error code in the header."""

    error = "invalid_request"
    description = "A bearer access token is required."
    status_code = 401

    def get_headers(self):
        return super().get_headers() + [("WWW-Authenticate", f'Bearer realm="{runtime().settings.issuer}"')]


class ResourceProtector(FlaskResourceProtector):
    def validate_request(self, scopes, request, **kwargs):
        try:
            return super().validate_request(scopes, request, **kwargs)
        except (MissingAuthorizationError, UnsupportedTokenTypeError) as error:
            raise BearerTokenRequired() from error

    def parse_request_authorization(self, request):
        try:
            return super().parse_request_authorization(request)
        except MissingAuthorizationError:
            # RFC 6750 §2.2: a form-encoded body may carry the token instead.
            if flask_request.method == "POST" and flask_request.mimetype == "application/x-www-form-urlencoded":
                token = flask_request.form.get("access_token")
                if token:
                    return self.get_token_validator("bearer"), token
            raise


def build(app) -> tuple[AuthorizationServer, ResourceProtector]:
    settings = runtime().settings
    server = AuthorizationServer()
    server.init_app(app)
    client_auth.register(server)
    server.register_token_generator("default", tokens.AccessTokenGenerator(
        settings.issuer, runtime().keys, settings.access_token_ttl))
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), IdTokenForCode(require_nonce=False),
                                                  ClaimsParameter(), ResponseModes(),
                                                  ResourceIndicators(), DPoPBinding()])
    server.register_grant(RefreshTokenGrant, [IdTokenForRefresh(), ResourceIndicators(), DPoPBinding()])
    server.register_grant(ClientCredentialsGrant, [ResourceIndicators(), DPoPBinding()])
    server.register_grant(TokenExchangeGrant, [ResourceIndicators(), DPoPBinding()])
    server.register_grant(DeviceCode, [IdTokenForRefresh(), ResourceIndicators(), DPoPBinding()])
    server.register_extension(Issuer())
    server.register_extension(RequestObjects())

    protector = ResourceProtector()
    protector.register_token_validator(AccessTokenValidator())
    protector.register_token_validator(DPoPTokenValidator())
    server.register_endpoint(UserInfo(resource_protector=protector))
    server.register_endpoint(Revocation)
    server.register_endpoint(EndSession)
    server.register_endpoint(DeviceAuthorization)
    server.register_endpoint(Introspection)
    return server, protector
