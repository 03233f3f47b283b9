"""The OpenAPI 3.1 document for the IdP's JSON APIs, served at GET /api/openapi.json.

It covers what machines call: dynamic client registration and management
(RFC 7591 / 7592), the agreements API, the token, revocation (RFC 7009) and
introspection (RFC 7662) endpoints, discovery, the JWKS and the health checks.
The browser-facing endpoints (authorize, login, logout, the portal) are HTML and
not described here. tests/protocol/test_openapi.py validates this document and
runs schemathesis against the app with it, so it must say what the code does.
"""

from __future__ import annotations

from copy import deepcopy

from flask import Blueprint, jsonify

from ..clients.metadata import AUTH_METHODS, GRANT_TYPES, ID_TOKEN_ALGS, REQUEST_OBJECT_ALGS
from ..extensions import runtime

bp = Blueprint("openapi", __name__)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, codes: list[str] | None = None, challenge: bool = False) -> dict:
    schema = _ref("Error")
    if codes:
        schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": codes}}}]}
    headers = {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}} if challenge else None
    return _json(schema, description, headers)


RATE_LIMITED = {"$ref": "#/components/responses/RateLimited"}
UNAVAILABLE = {"$ref": "#/components/responses/Unavailable"}

_URI = {"type": "string", "format": "uri", "maxLength": 2000}
_URIS = {"type": "array", "items": _URI}
_STRINGS = {"type": "array", "items": {"type": "string"}}

CLIENT_METADATA = {
    "type": "object",
    "description": "Client metadata (RFC 7591 §2, OpenID Connect Registration 1.0 §2). Unknown fields are ignored. "
                   "Redirect URIs are absolute, without fragment or wildcard; web clients use https, native clients "
                   "a loopback IP over http or a reverse-domain private-use scheme (RFC 8252).",
    "properties": {
        "redirect_uris": _URIS,
        "post_logout_redirect_uris": _URIS,
        "grant_types": {"type": "array", "items": {"type": "string", "enum": list(GRANT_TYPES)}, "minItems": 1},
        "response_types": {"type": "array", "items": {"type": "string", "enum": ["code"]}},
        "token_endpoint_auth_method": {"type": "string", "enum": list(AUTH_METHODS)},
        "application_type": {"type": "string", "enum": ["web", "native"]},
        "client_name": {"type": "string", "maxLength": 200},
        "scope": {"type": "string", "description": "Space-separated scopes the client may ask for."},
        "jwks": {"$ref": "#/components/schemas/JWKS"},
        "jwks_uri": _URI,
        "logo_uri": _URI,
        "client_uri": _URI,
        "policy_uri": _URI,
        "tos_uri": _URI,
        "contacts": _STRINGS,
        "backchannel_logout_uri": _URI,
        "backchannel_logout_session_required": {"type": "boolean"},
        "frontchannel_logout_uri": _URI,
        "frontchannel_logout_session_required": {"type": "boolean"},
        "subject_type": {"type": "string", "enum": ["public", "pairwise"]},
        "sector_identifier_uri": _URI,
        "require_pushed_authorization_requests": {"type": "boolean"},
        "dpop_bound_access_tokens": {"type": "boolean"},
        "require_signed_request_object": {"type": "boolean"},
        "request_object_signing_alg": {"type": "string", "enum": list(REQUEST_OBJECT_ALGS)},
        "id_token_signed_response_alg": {"type": "string", "enum": list(ID_TOKEN_ALGS)},
        "default_max_age": {"type": "integer", "minimum": 0},
        "software_id": {"type": "string", "maxLength": 200},
        "software_version": {"type": "string", "maxLength": 200},
        "software_statement": {"type": "string", "description": "A JWT signed by a trusted issuer; its claims take "
                                                                 "precedence over the JSON fields (RFC 7591 §2.3)."},
        "product": {"type": "string", "description": "The product the client belongs to (an initial access token "
                                                     "made for a product decides it)."},
    },
}

CLIENT_INFORMATION = {
    "type": "object",
    "description": "The registered client (RFC 7591 §3.2.1, RFC 7592 §3). ``client_secret`` and "
                   "``registration_access_token`` are returned once, at registration.",
    "required": ["client_id", "client_name", "redirect_uris", "grant_types", "response_types",
                 "token_endpoint_auth_method", "registration_client_uri", "client_id_issued_at"],
    "properties": {
        "client_id": {"type": "string"},
        "client_secret": {"type": "string"},
        "client_secret_expires_at": {"type": "integer", "const": 0},
        "registration_access_token": {"type": "string"},
        "registration_client_uri": {"type": "string", "format": "uri"},
        "client_id_issued_at": {"type": "integer"},
        "client_name": {"type": "string"},
        "application_type": {"type": "string", "enum": ["web", "native"]},
        "redirect_uris": _STRINGS,
        "post_logout_redirect_uris": _STRINGS,
        "grant_types": _STRINGS,
        "response_types": _STRINGS,
        "token_endpoint_auth_method": {"type": "string", "enum": list(AUTH_METHODS)},
        "id_token_signed_response_alg": {"type": "string"},
        "scope": {"type": "string"},
        "product": {"type": ["string", "null"]},
        "jwks": {"$ref": "#/components/schemas/JWKS"},
        "contacts": _STRINGS,
        "default_max_age": {"type": "integer"},
    },
    "dependentRequired": {"client_secret": ["client_secret_expires_at"]},
}

TOKEN_REQUEST = {
    "type": "object",
    "description": "Token request (RFC 6749 §4.1.3, §4.4.2, §6; RFC 8693; RFC 8628 §3.4). A confidential client "
                   "authenticates with HTTP Basic, with ``client_id``/``client_secret`` in the body, or with a JWT "
                   "assertion (RFC 7523); a public client sends its ``client_id``.",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": list(GRANT_TYPES)},
        "code": {"type": "string"},
        "redirect_uri": {"type": "string"},
        "code_verifier": {"type": "string"},
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
        "resource": {"type": "string"},
        "device_code": {"type": "string"},
        "subject_token": {"type": "string"},
        "subject_token_type": {"type": "string"},
        "actor_token": {"type": "string"},
        "actor_token_type": {"type": "string"},
        "requested_token_type": {"type": "string"},
        "audience": {"type": "string"},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string"},
        "client_assertion_type": {"type": "string"},
        "client_assertion": {"type": "string"},
    },
}

TOKEN_RESPONSE = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in"],
    "properties": {
        "access_token": {"type": "string", "description": "A JWT (RFC 9068)."},
        "token_type": {"type": "string", "enum": ["Bearer", "DPoP", "N_A"]},
        "expires_in": {"type": "integer", "minimum": 0},
        "scope": {"type": "string"},
        "refresh_token": {"type": "string"},
        "id_token": {"type": "string"},
        "issued_token_type": {"type": "string"},
    },
}

TOKEN_QUERY = {
    "type": "object",
    "required": ["token"],
    "properties": {
        "token": {"type": "string"},
        "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string"},
        "client_assertion_type": {"type": "string"},
        "client_assertion": {"type": "string"},
    },
}

INTROSPECTION = {
    "type": "object",
    "required": ["active"],
    "properties": {
        "active": {"type": "boolean"},
        "scope": {"type": "string"},
        "client_id": {"type": "string"},
        "sub": {"type": ["string", "null"]},
        "iss": {"type": "string"},
        "aud": {"oneOf": [{"type": "string"}, _STRINGS]},
        "exp": {"type": "integer"},
        "iat": {"type": "integer"},
        "nbf": {"type": "integer"},
        "jti": {"type": "string"},
        "token_type": {"type": "string"},
    },
}

AGREEMENT = {
    "type": "object",
    "required": ["agreement_id", "agreement_name", "agreement_product", "agreement_role", "last_used_at"],
    "additionalProperties": False,
    "properties": {
        "agreement_id": {"type": "string", "description": "The agreement number."},
        "agreement_name": {"type": "string"},
        "agreement_product": {"type": "string"},
        "agreement_role": {"type": "string"},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

PROVIDER_METADATA = {
    "type": "object",
    "description": "OpenID Provider metadata (Discovery 1.0 §3) / authorization server metadata (RFC 8414).",
    "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                 "subject_types_supported", "id_token_signing_alg_values_supported"],
    "properties": {
        "issuer": {"type": "string", "format": "uri"},
        "authorization_endpoint": {"type": "string", "format": "uri"},
        "token_endpoint": {"type": "string", "format": "uri"},
        "userinfo_endpoint": {"type": "string", "format": "uri"},
        "jwks_uri": {"type": "string", "format": "uri"},
        "registration_endpoint": {"type": "string", "format": "uri"},
        "revocation_endpoint": {"type": "string", "format": "uri"},
        "introspection_endpoint": {"type": "string", "format": "uri"},
        "end_session_endpoint": {"type": "string", "format": "uri"},
        "scopes_supported": _STRINGS,
        "response_types_supported": _STRINGS,
        "grant_types_supported": _STRINGS,
        "subject_types_supported": _STRINGS,
        "id_token_signing_alg_values_supported": _STRINGS,
        "token_endpoint_auth_methods_supported": _STRINGS,
        "code_challenge_methods_supported": _STRINGS,
    },
}

_CLIENT_ID = {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string"}}
_REGISTRATION_ERRORS = ["invalid_request", "invalid_redirect_uri", "invalid_client_metadata",
                        "invalid_software_statement", "unapproved_software_statement"]
_CLIENT_AUTH = [{"clientSecretBasic": []}, {}]
_NO_STORE = {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}}


def _form(schema_name: str, example: dict) -> dict:
    return {"required": True, "content": {FORM: {"schema": _ref(schema_name), "example": example}}}


DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "Connect IdP JSON APIs",
        "version": "1",
        "description": "The machine-facing APIs of the Connect identity provider: dynamic client registration, "
                       "the agreements API for relying parties, the OAuth 2.0 token, revocation and introspection "
                       "endpoints, discovery and keys. Errors are OAuth 2.0 error objects (RFC 6749 §5.2).",
    },
    "tags": [
        {"name": "registration", "description": "RFC 7591 / RFC 7592 / OpenID Connect Registration 1.0"},
        {"name": "agreements", "description": "The caller's agreements, for an RP's agreement switcher"},
        {"name": "oauth", "description": "Token, revocation and introspection endpoints"},
        {"name": "metadata", "description": "Discovery and keys"},
        {"name": "operations", "description": "Health checks"},
    ],
    "paths": {
        "/register": {
            "post": {
                "tags": ["registration"],
                "operationId": "registerClient",
                "summary": "Register a client",
                "description": "Needs an initial access token issued by an operator, unless open registration is "
                               "configured. The client secret (if any) and the registration access token are "
                               "returned once. Registered clients are third-party.",
                "security": [{"initialAccessToken": []}, {}],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ClientMetadata"), "examples": {
                    "web": {"summary": "A web app", "value": {
                        "client_name": "Partner Books", "redirect_uris": ["https://books.example/callback"],
                        "post_logout_redirect_uris": ["https://books.example/"],
                        "grant_types": ["authorization_code", "refresh_token"],
                        "token_endpoint_auth_method": "client_secret_basic", "scope": "openid profile email"}},
                    "native": {"summary": "A mobile app", "value": {
                        "client_name": "Books for Android", "application_type": "native",
                        "redirect_uris": ["com.example.books:/oauth", "http://127.0.0.1/callback"],
                        "token_endpoint_auth_method": "none"}},
                    "m2m": {"summary": "A service (client credentials)", "value": {
                        "client_name": "Nightly export", "grant_types": ["client_credentials"],
                        "response_types": [], "scope": "agreement"}},
                }}}},
                "responses": {
                    "201": _json(_ref("ClientInformation"), "The client is registered.", _NO_STORE),
                    "400": _error("The metadata is not acceptable (RFC 7591 §3.2.2).", _REGISTRATION_ERRORS),
                    "401": _error("No valid initial access token.", ["invalid_token"], challenge=True),
                    "429": RATE_LIMITED,
                    "503": UNAVAILABLE,
                },
            },
        },
        "/register/{client_id}": {
            "parameters": [_CLIENT_ID],
            "get": {
                "tags": ["registration"],
                "operationId": "readClient",
                "summary": "Read a client's registration (RFC 7592 §2.1)",
                "security": [{"registrationAccessToken": []}],
                "responses": {
                    "200": _json(_ref("ClientInformation"), "The client's current metadata.", _NO_STORE),
                    "401": _error("The registration access token is not valid for this client (also for unknown "
                                  "clients).", ["invalid_token"], challenge=True),
                    "503": UNAVAILABLE,
                },
            },
            "put": {
                "tags": ["registration"],
                "operationId": "updateClient",
                "summary": "Replace a client's metadata (RFC 7592 §2.2)",
                "description": "A full replacement: omitted fields return to their defaults. ``client_id`` must be "
                               "the client's own; server-issued fields must not be sent.",
                "security": [{"registrationAccessToken": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "allOf": [_ref("ClientMetadata"), {
                        "type": "object", "required": ["client_id"],
                        "properties": {"client_id": {"type": "string"}, "client_secret": {"type": "string"}}}]},
                    "example": {"client_id": "s6BhdRkqt3", "client_name": "Partner Books",
                                "redirect_uris": ["https://books.example/callback", "https://books.example/cb2"]}}}},
                "responses": {
                    "200": _json(_ref("ClientInformation"), "The updated client.", _NO_STORE),
                    "400": _error("The metadata is not acceptable.", _REGISTRATION_ERRORS),
                    "401": _error("The registration access token is not valid for this client.", ["invalid_token"],
                                  challenge=True),
                    "503": UNAVAILABLE,
                },
            },
            "delete": {
                "tags": ["registration"],
                "operationId": "deleteClient",
                "summary": "Delete a client and revoke its tokens (RFC 7592 §2.3)",
                "security": [{"registrationAccessToken": []}],
                "responses": {
                    "204": {"description": "The client is deleted."},
                    "401": _error("The registration access token is not valid for this client.", ["invalid_token"],
                                  challenge=True),
                    "503": UNAVAILABLE,
                },
            },
        },
        "/api/v1/me/agreements": {
            "get": {
                "tags": ["agreements"],
                "operationId": "listMyAgreements",
                "summary": "The caller's agreements",
                "description": "Agreements the person behind the access token may use with the calling client, "
                               "ordered by number, in pages. Needs scope ``agreement``.",
                "security": [{"accessToken": ["agreement"]}],
                "parameters": [
                    {"name": "q", "in": "query", "description": "Search in number and name (first 100 characters "
                                                                "are used).", "schema": {"type": "string"}},
                    {"name": "product", "in": "query", "schema": {"type": "string"}},
                    {"name": "cursor", "in": "query", "description": "``next_cursor`` of the previous page.",
                     "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100,
                                                                "default": 50}},
                ],
                "responses": {
                    "200": _json({"type": "object", "required": ["items", "next_cursor"],
                                  "additionalProperties": False,
                                  "properties": {"items": {"type": "array", "items": _ref("Agreement")},
                                                 "next_cursor": {"type": ["string", "null"]}}},
                                 "A page of agreements.", _NO_STORE),
                    "400": _error("A malformed ``limit`` or ``cursor``.", ["invalid_request"]),
                    "401": _error("No access token, or one that is not valid (RFC 6750 §3.1).",
                                  ["invalid_request", "invalid_token"], challenge=True),
                    "403": _error("The access token lacks scope ``agreement``.", ["insufficient_scope"],
                                  challenge=True),
                    "429": RATE_LIMITED,
                    "503": UNAVAILABLE,
                },
            },
        },
        "/token": {
            "post": {
                "tags": ["oauth"],
                "operationId": "token",
                "summary": "Token endpoint (RFC 6749 §3.2)",
                "security": _CLIENT_AUTH,
                "parameters": [{"name": "DPoP", "in": "header", "required": False, "schema": {"type": "string"},
                                "description": "A DPoP proof (RFC 9449) to bind the tokens to a key."}],
                "requestBody": _form("TokenRequest", {"grant_type": "client_credentials", "scope": "profile"}),
                "responses": {
                    "200": _json(_ref("TokenResponse"), "Tokens.", _NO_STORE),
                    "400": _error("The request or grant is not valid (RFC 6749 §5.2)."),
                    "401": _error("Client authentication failed.", ["invalid_client"], challenge=True),
                    "429": RATE_LIMITED,
                    "503": UNAVAILABLE,
                },
            },
        },
        "/revoke": {
            "post": {
                "tags": ["oauth"],
                "operationId": "revoke",
                "summary": "Revoke a token (RFC 7009)",
                "description": "Answers 200 for unknown tokens too. Revoking a refresh token also revokes the "
                               "access tokens of the same grant.",
                "security": _CLIENT_AUTH,
                "requestBody": _form("TokenQuery", {"token": "45ghiukldjahdnhzdauz",
                                                    "token_type_hint": "refresh_token"}),
                "responses": {
                    "200": _json({"type": "object", "maxProperties": 0}, "Revoked (or never valid)."),
                    "400": _error("The request is not valid, or the token was issued to another client "
                                  "(RFC 7009 §2.1).", ["invalid_request", "invalid_grant", "unsupported_token_type"]),
                    "401": _error("Client authentication failed.", ["invalid_client"], challenge=True),
                    "503": UNAVAILABLE,
                },
            },
        },
        "/introspect": {
            "post": {
                "tags": ["oauth"],
                "operationId": "introspect",
                "summary": "Introspect a token (RFC 7662)",
                "description": "Only confidential clients may introspect, and only tokens issued to them or meant "
                               "for them; anything else is reported inactive. An unknown ``token_type_hint`` is "
                               "ignored (RFC 7662 §2.1).",
                "security": [{"clientSecretBasic": []}, {}],
                "requestBody": _form("TokenQuery", {"token": "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiJ9..."}),
                "responses": {
                    "200": _json(_ref("Introspection"), "The token's state.", _NO_STORE),
                    "400": _error("The request is not valid.", ["invalid_request"]),
                    "401": _error("Client authentication failed.", ["invalid_client"], challenge=True),
                    "503": UNAVAILABLE,
                },
            },
        },
        "/.well-known/openid-configuration": {
            "get": {
                "tags": ["metadata"],
                "operationId": "openidConfiguration",
                "summary": "OpenID Provider metadata",
                "security": [],
                "responses": {"200": _json(_ref("ProviderMetadata"), "The provider's metadata.")},
            },
        },
        "/.well-known/oauth-authorization-server": {
            "get": {
                "tags": ["metadata"],
                "operationId": "oauthAuthorizationServer",
                "summary": "Authorization server metadata (RFC 8414)",
                "security": [],
                "responses": {"200": _json(_ref("ProviderMetadata"), "The same metadata as OpenID discovery.")},
            },
        },
        "/jwks": {
            "get": {
                "tags": ["metadata"],
                "operationId": "jwks",
                "summary": "The public signing keys",
                "security": [],
                "responses": {"200": _json(_ref("JWKS"), "A JWK Set.")},
            },
        },
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "operationId": "healthz",
                "summary": "Liveness",
                "security": [],
                "responses": {"200": _json({"type": "object", "required": ["status"],
                                            "properties": {"status": {"const": "ok"}}}, "The process is up.")},
            },
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "operationId": "readyz",
                "summary": "Readiness: database and ephemeral store reachable",
                "security": [],
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready."),
                    "503": _json(_ref("Readiness"), "A dependency is unavailable."),
                },
            },
        },
        "/api/openapi.json": {
            "get": {
                "tags": ["metadata"],
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "An OpenAPI 3.1 document.",
                                      "content": {JSON: {"schema": {"type": "object", "required": ["openapi"]}}}}},
            },
        },
    },
    "components": {
        "securitySchemes": {
            "initialAccessToken": {"type": "http", "scheme": "bearer",
                                   "description": "An initial access token from `idp clients initial-token`."},
            "registrationAccessToken": {"type": "http", "scheme": "bearer",
                                        "description": "The registration access token returned at registration."},
            "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": "An access token issued by this IdP (RFC 9068)."},
            "clientSecretBasic": {"type": "http", "scheme": "basic",
                                  "description": "client_id and client_secret (RFC 6749 §2.3.1). Clients registered "
                                                 "for client_secret_post, client_secret_jwt or private_key_jwt "
                                                 "authenticate in the form body instead."},
        },
        "responses": {
            "RateLimited": {
                "description": "Too many requests from this client, address or person; retry after the given seconds.",
                "headers": {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
                "content": {JSON: {"schema": {"allOf": [_ref("Error"), {"properties": {
                    "error": {"const": "rate_limited"}}}]}}},
            },
            "Unavailable": {
                "description": "The database or the shared store is briefly unavailable; retry shortly.",
                "headers": {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
                "content": {JSON: {"schema": {"allOf": [_ref("Error"), {"properties": {
                    "error": {"const": "temporarily_unavailable"}}}]}}},
            },
        },
        "headers": {
            "WWW-Authenticate": {"description": "The authentication challenge.", "schema": {"type": "string"}},
            "Cache-Control": {"description": "Responses with secrets or personal data are not stored.",
                              "schema": {"type": "string"}},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}, "error_description": {"type": "string"},
                                     "error_uri": {"type": "string"}}},
            "ClientMetadata": CLIENT_METADATA,
            "ClientInformation": CLIENT_INFORMATION,
            "TokenRequest": TOKEN_REQUEST,
            "TokenResponse": TOKEN_RESPONSE,
            "TokenQuery": TOKEN_QUERY,
            "Introspection": INTROSPECTION,
            "Agreement": AGREEMENT,
            "ProviderMetadata": PROVIDER_METADATA,
            "JWKS": {"type": "object", "required": ["keys"],
                     "properties": {"keys": {"type": "array", "items": {
                         "type": "object", "required": ["kty"], "properties": {"kty": {"type": "string"}}}}}},
            "Readiness": {"type": "object", "required": ["status", "checks"],
                          "properties": {"status": {"enum": ["ok", "unavailable"]},
                                         "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
        },
    },
}


def document(issuer: str) -> dict:
    """The document with this deployment's issuer as its server."""
    doc = deepcopy(DOCUMENT)
    doc["servers"] = [{"url": issuer}]
    return doc


@bp.get("/api/openapi.json")
def openapi_json():
    response = jsonify(document(runtime().settings.issuer))
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
