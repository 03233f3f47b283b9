"""Dynamic Client Registration (RFC 7591, OIDC Registration 1.0) and management (RFC 7592).

Registration needs an initial access token issued by an operator (``idp
clients initial-token``), unless open registration is configured; a token made
for a product puts every client it registers in that product. Metadata is
validated by ``clients.metadata`` (shared with the portal and the CLI). A
``software_statement`` must be a JWT signed by a trusted issuer (the keys in
IDP_SOFTWARE_STATEMENT_JWKS); its claims take precedence over the JSON body
(RFC 7591 §2.3). The client secret and the registration access token are
returned once and stored as keyed hashes. Registered clients are never first-party.
"""

from __future__ import annotations

import json

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc7591 import (InvalidClientMetadataError, InvalidRedirectURIError, InvalidSoftwareStatementError,
                                    UnapprovedSoftwareStatementError)
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..clients import metadata as client_metadata
from ..clients import service as clients
from ..clients.models import Client
from ..extensions import db_session, origin, runtime
from .errors import safe

NO_STORE = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]
_SERVER_FIELDS = ("registration_access_token", "registration_client_uri", "client_secret_expires_at",
                  "client_id_issued_at")


def _bearer() -> str | None:
    header = flask_request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _json_body() -> dict:
    data = flask_request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return data


def _apply_software_statement(data: dict) -> dict:
    statement = data.pop("software_statement", None)
    if statement is None:
        return data
    jwks = runtime().settings.software_statement_jwks
    if not jwks:
        raise UnapprovedSoftwareStatementError("No software statement issuers are trusted here.")
    if not isinstance(statement, str):
        raise InvalidSoftwareStatementError()
    try:
        claims = jwt.decode(statement, KeySet.import_key_set(json.loads(jwks)),
                            algorithms=["RS256", "PS256", "ES256", "EdDSA"]).claims
        jwt.JWTClaimsRegistry(iss={"essential": True}).validate(claims)
    except (JoseError, ValueError) as error:
        raise InvalidSoftwareStatementError("The software statement is not signed by a trusted issuer.") from error
    # RFC 7591 §2.3: values in the statement take precedence over plain JSON.
    return {**data, **{k: v for k, v in claims.items() if k not in ("iss", "iat", "exp", "jti", "aud")}}


def _validated(data: dict) -> dict:
    try:
        return client_metadata.validate(data)
    except client_metadata.ClientMetadataError as error:
        cls = InvalidRedirectURIError if error.code == "invalid_redirect_uri" else InvalidClientMetadataError
        raise cls(safe(str(error))) from error


def _response_body(client: Client, secret: str | None, registration_token: str | None) -> dict:
    body = client_metadata.describe(client)
    if secret:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    if registration_token:
        body["registration_access_token"] = registration_token
    body["registration_client_uri"] = f"{runtime().settings.issuer}/register/{client.client_id}"
    return body


def register():
    """POST /register → (status, body, headers)."""
    try:
        token = _bearer()
        initial = clients.find_initial_token(db_session(), token) if token else None
        # With open registration a token is optional, but one that is sent must be good.
        if initial is None and (token or not runtime().settings.open_registration):
            raise InvalidTokenError("A valid initial access token is required to register.")
        metadata = _validated(_apply_software_statement(_json_body()))
        try:
            client, secret, registration_token = clients.register(
                db_session(), metadata, product_id=initial.product_id if initial else None,
                cipher=runtime().cipher, actor="dynamic_registration", origin=origin())
        except clients.InvalidClientMetadataError as error:
            raise InvalidClientMetadataError(safe(str(error))) from error
    except OAuth2Error as error:
        return error()
    return 201, _response_body(client, secret, registration_token), NO_STORE


def configure(client_id: str):
    """GET/PUT/DELETE /register/<client_id> (RFC 7592) → (status, body, headers)."""
    try:
        client = clients.find(db_session(), client_id)
        token = _bearer()
        # §2: an unknown client or a wrong token is 401, so nobody learns which ids exist.
        if not token or not clients.check_registration_token(client, token):
            raise InvalidTokenError("The registration access token is not valid for this client.")
        if flask_request.method == "GET":
            return 200, _response_body(client, None, None), NO_STORE
        if flask_request.method == "DELETE":
            clients.delete(db_session(), client, actor=f"client:{client.client_id}", origin=origin())
            return 204, "", [("Cache-Control", "no-store")]
        data = _json_body()
        if any(name in data for name in _SERVER_FIELDS):
            raise InvalidRequestError("Server-issued fields must not be sent back (RFC 7592 section 2.2).")
        if data.get("client_id") != client.client_id:
            raise InvalidRequestError("'client_id' must be the client's own.")
        if "client_secret" in data and not client.check_client_secret(data["client_secret"]):
            raise InvalidRequestError("'client_secret' does not match.")
        fields = {k: v for k, v in data.items() if k not in ("client_id", "client_secret")}
        metadata = _validated(fields)
        try:
            clients.update_registration(db_session(), client, metadata, runtime().cipher)
        except clients.InvalidClientMetadataError as error:
            raise InvalidClientMetadataError(safe(str(error))) from error
    except OAuth2Error as error:
        return error()
    return 200, _response_body(client, None, None), NO_STORE
