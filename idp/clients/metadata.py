"""Client metadata validation (RFC 7591 §2, OIDC Registration 1.0 §2, RFC 8252).

One validator for every way a client is made: dynamic registration, the
developer portal and the admin CLI. It returns the normalised metadata or
raises ClientMetadataError carrying the RFC 7591 §3.2.2 error code:
``invalid_redirect_uri`` for redirect URIs, ``invalid_client_metadata`` for
everything else (software statements are checked by the registration endpoint).

Rules:
- redirect URIs are absolute, without fragment or wildcard; web clients use
  https; native clients use a loopback IP literal over http (any port at use,
  RFC 8252 §7.3) or a private-use scheme in reverse-domain form (§7.1);
- response_types is ["code"] and agrees with grant_types (§2.1);
- token_endpoint_auth_method is one we support; ``none`` only for clients that
  cannot keep a secret (native apps, single-page apps);
- jwks and jwks_uri are mutually exclusive (§2); private_key_jwt needs one;
- logout, logo, policy, terms and sector URIs are https (http on loopback for
  development is allowed for logout URIs of native clients only);
- scopes are a subset of what this IdP offers.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..errors import DomainError
from .models import DEFAULT_SCOPE, KNOWN_SCOPES, TOKEN_EXCHANGE

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE, DEVICE_CODE)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none")
ID_TOKEN_ALGS = ("RS256", "ES256")
REQUEST_OBJECT_ALGS = ("RS256", "PS256", "ES256", "EdDSA", "none")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
#: Stored in the client's extra metadata as given (after the checks below).
EXTRA_FIELDS = ("jwks", "jwks_uri", "logo_uri", "client_uri", "policy_uri", "tos_uri", "contacts",
                "backchannel_logout_uri", "backchannel_logout_session_required", "frontchannel_logout_uri",
                "frontchannel_logout_session_required", "subject_type", "sector_identifier_uri",
                "require_pushed_authorization_requests", "dpop_bound_access_tokens",
                "require_signed_request_object", "request_object_signing_alg",
                "token_endpoint_auth_signing_alg", "software_id", "software_version", "default_max_age",
                "resources")


class ClientMetadataError(DomainError):
    code = "invalid_client_metadata"

    def __init__(self, message: str, code: str = "invalid_client_metadata"):
        super().__init__(message)
        self.code = code


def _loopback_ip(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _clean_text(value: str) -> bool:
    """No control characters (NUL breaks PostgreSQL) and valid Unicode (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


def _split(uri: str, code: str = "invalid_client_metadata"):
    try:
        return urlsplit(uri)
    except ValueError as error:  # e.g. "Invalid IPv6 URL"
        raise ClientMetadataError(f"'{uri}' is not a valid URI.", code) from error


def check_redirect_uri(uri, application_type: str) -> str:
    if not isinstance(uri, str) or not uri or len(uri) > 2000 or not _clean_text(uri):
        raise ClientMetadataError("Redirect URIs must be non-empty strings of printable characters.",
                                  "invalid_redirect_uri")
    parts = _split(uri, "invalid_redirect_uri")
    if not parts.scheme or not _SCHEME.match(parts.scheme):
        raise ClientMetadataError(f"'{uri}' is not an absolute URI.", "invalid_redirect_uri")
    if parts.fragment or "#" in uri:
        raise ClientMetadataError(f"'{uri}' must not contain a fragment.", "invalid_redirect_uri")
    if "*" in uri:
        raise ClientMetadataError(f"'{uri}': wildcards are not allowed.", "invalid_redirect_uri")
    if application_type == "native":
        if parts.scheme == "http":
            if not _loopback_ip(parts.hostname):
                raise ClientMetadataError(f"'{uri}': native apps use a loopback IP (127.0.0.1 or [::1]) over http.",
                                          "invalid_redirect_uri")
        elif parts.scheme == "https":
            if not parts.hostname:
                raise ClientMetadataError(f"'{uri}' has no host.", "invalid_redirect_uri")
        elif "." not in parts.scheme:
            # RFC 8252 §7.1: private-use schemes in reverse domain name form.
            raise ClientMetadataError(f"'{uri}': use a reverse-domain scheme such as com.example.app:/cb.",
                                      "invalid_redirect_uri")
        return uri
    if parts.scheme != "https" or not parts.hostname:
        raise ClientMetadataError(f"'{uri}': web clients must use https.", "invalid_redirect_uri")
    return uri


def _https_uri(name: str, value) -> str:
    if not isinstance(value, str) or len(value) > 2000 or not _clean_text(value):
        raise ClientMetadataError(f"'{name}' must be an https URL.")
    parts = _split(value)
    if parts.scheme != "https" or not parts.hostname or parts.fragment:
        raise ClientMetadataError(f"'{name}' must be an https URL without a fragment.")
    return value


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ClientMetadataError(f"'{name}' must be true or false.")
    return value


def _string_list(name: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _clean_text(v) for v in value):
        raise ClientMetadataError(f"'{name}' must be an array of strings.")
    return value


def _public_jwks(value) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ClientMetadataError("'jwks' must be a JWK Set with at least one key.")
    if any(isinstance(k, dict) and {"d", "p", "q", "k"} & set(k) for k in value["keys"]):
        raise ClientMetadataError("'jwks' must contain public keys only.")
    try:
        KeySet.import_key_set(value)
    except (JoseError, ValueError, KeyError, TypeError) as error:
        raise ClientMetadataError("'jwks' is not a valid JWK Set.") from error
    return value


def validate(data: dict, *, public_allowed: bool = True) -> dict:
    """Validate registration metadata; return the normalised fields.

    Raises ClientMetadataError (``code`` is the RFC 7591 error)."""
    if not isinstance(data, dict):
        raise ClientMetadataError("The request body must be a JSON object.")
    application_type = data.get("application_type", "web")
    if application_type not in ("web", "native"):
        raise ClientMetadataError("'application_type' must be web or native.")
    grant_types = _string_list("grant_types", data.get("grant_types", ["authorization_code"]))
    unknown = [g for g in grant_types if g not in GRANT_TYPES]
    if unknown or not grant_types:
        raise ClientMetadataError(f"Unsupported grant types: {', '.join(unknown) or '(none)'}.")
    response_types = _string_list("response_types",
                                  data.get("response_types", ["code"] if "authorization_code" in grant_types else []))
    if any(r != "code" for r in response_types):
        raise ClientMetadataError("Only the 'code' response type is offered (no implicit or hybrid flows).")
    # RFC 7591 §2.1: "code" needs authorization_code and the other way round.
    if ("code" in response_types) != ("authorization_code" in grant_types):
        raise ClientMetadataError("'response_types' and 'grant_types' do not agree.")
    redirect_uris = _string_list("redirect_uris", data.get("redirect_uris", []))
    if "authorization_code" in grant_types and not redirect_uris:
        raise ClientMetadataError("'redirect_uris' is required for the authorization code grant.",
                                  "invalid_redirect_uri")
    redirect_uris = [check_redirect_uri(u, application_type) for u in redirect_uris]
    method = data.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise ClientMetadataError(f"Unsupported token_endpoint_auth_method '{method}'.")
    if method == "none" and not public_allowed:
        raise ClientMetadataError("This kind of client must authenticate (token_endpoint_auth_method 'none').")
    if method == "none" and "client_credentials" in grant_types:
        raise ClientMetadataError("client_credentials needs an authenticated client.")
    if "jwks" in data and "jwks_uri" in data:
        raise ClientMetadataError("'jwks' and 'jwks_uri' must not both be given.")
    extra: dict = {}
    if "jwks" in data:
        extra["jwks"] = _public_jwks(data["jwks"])
    if "jwks_uri" in data:
        extra["jwks_uri"] = _https_uri("jwks_uri", data["jwks_uri"])
    if method == "private_key_jwt" and not extra:
        raise ClientMetadataError("private_key_jwt needs 'jwks' or 'jwks_uri'.")
    post_logout = [check_redirect_uri(u, application_type)
                   for u in _string_list("post_logout_redirect_uris", data.get("post_logout_redirect_uris", []))]
    for name in ("logo_uri", "client_uri", "policy_uri", "tos_uri", "backchannel_logout_uri",
                 "frontchannel_logout_uri", "sector_identifier_uri"):
        if name in data:
            extra[name] = _https_uri(name, data[name])
    for name in ("backchannel_logout_session_required", "frontchannel_logout_session_required",
                 "require_pushed_authorization_requests", "dpop_bound_access_tokens",
                 "require_signed_request_object"):
        if name in data:
            extra[name] = _bool(name, data[name])
    if "resources" in data:
        extra["resources"] = [_https_uri("resources", r) for r in _string_list("resources", data["resources"])]
    if "contacts" in data:
        extra["contacts"] = _string_list("contacts", data["contacts"])
    if "subject_type" in data:
        if data["subject_type"] not in ("public", "pairwise"):
            raise ClientMetadataError("'subject_type' must be public or pairwise.")
        extra["subject_type"] = data["subject_type"]
    alg = data.get("id_token_signed_response_alg", "RS256")
    if alg not in ID_TOKEN_ALGS:
        raise ClientMetadataError(f"'id_token_signed_response_alg' must be one of {', '.join(ID_TOKEN_ALGS)}.")
    if "userinfo_signed_response_alg" in data or "id_token_encrypted_response_alg" in data:
        raise ClientMetadataError("Signed or encrypted UserInfo and encrypted ID tokens are not offered.")
    if "request_object_signing_alg" in data:
        if data["request_object_signing_alg"] not in REQUEST_OBJECT_ALGS:
            raise ClientMetadataError("Unsupported 'request_object_signing_alg'.")
        extra["request_object_signing_alg"] = data["request_object_signing_alg"]
    if "default_max_age" in data:
        if not isinstance(data["default_max_age"], int) or data["default_max_age"] < 0:
            raise ClientMetadataError("'default_max_age' must be a non-negative integer.")
        extra["default_max_age"] = data["default_max_age"]
    for name in ("software_id", "software_version"):
        if name in data:
            if not isinstance(data[name], str) or len(data[name]) > 200 or not _clean_text(data[name]):
                raise ClientMetadataError(f"'{name}' must be a short string.")
            extra[name] = data[name]
    scope = data.get("scope", DEFAULT_SCOPE)
    if not isinstance(scope, str) or any(s not in KNOWN_SCOPES for s in scope.split()):
        raise ClientMetadataError(f"'scope' may only contain: {' '.join(KNOWN_SCOPES)}.")
    name = data.get("client_name", "")
    if not isinstance(name, str) or len(name) > 200 or not _clean_text(name):
        raise ClientMetadataError("'client_name' must be printable text of at most 200 characters.")
    product = data.get("product") or None
    if product is not None and (not isinstance(product, str) or not _clean_text(product) or len(product) > 64):
        raise ClientMetadataError("'product' must be a product name.")
    return {
        "client_name": name.strip() or "Unnamed application",
        "application_type": application_type,
        "redirect_uris": redirect_uris,
        "post_logout_redirect_uris": post_logout,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": method,
        "id_token_signed_response_alg": alg,
        "scope": " ".join(dict.fromkeys(scope.split())),
        "product": product,
        "extra": extra,
    }


def describe(client) -> dict:
    """The client's registered metadata, as RFC 7591 §3.2.1 returns it."""
    extra = {k: v for k, v in (client.extra_metadata or {}).items() if k in EXTRA_FIELDS}
    return {
        "client_id": client.client_id,
        "client_name": client.client_name,
        "application_type": client.application_type,
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris or []),
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "scope": client.scope,
        "product": client.product_id,
        "client_id_issued_at": int(client.created_at.timestamp()),
        **extra,
    }
