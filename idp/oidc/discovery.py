"""OpenID Provider metadata (Discovery 1.0 §3, RFC 8414): exactly what is implemented."""

from __future__ import annotations

from ..clients.models import TOKEN_EXCHANGE
from ..sessions.service import ACR_MFA, ACR_PASSWORD
from .claims import CLAIMS_SUPPORTED, SUPPORTED_SCOPES
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE

from .dpop import ALGORITHMS as DPOP_ALGORITHMS
from .endpoints import AUTH_METHODS
from .grant_types import TOKEN_ENDPOINT_AUTH_METHODS
from .request_objects import ALGORITHMS as REQUEST_OBJECT_ALGORITHMS

PROMPT_VALUES = ["none", "login", "consent", "select_agreement"]


def metadata(issuer: str, locales: tuple[str, ...]) -> dict:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "jwks_uri": f"{issuer}/jwks",
        "end_session_endpoint": f"{issuer}/logout",
        "registration_endpoint": f"{issuer}/register",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "frontchannel_logout_session_supported": True,
        "scopes_supported": SUPPORTED_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE,
                                  DEVICE_CODE_GRANT_TYPE],
        "device_authorization_endpoint": f"{issuer}/device_authorization",
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "PS256", "EdDSA", "HS256"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "acr_values_supported": [ACR_PASSWORD, ACR_MFA],
        "prompt_values_supported": PROMPT_VALUES,
        "ui_locales_supported": list(locales),
        "claims_parameter_supported": True,
        "request_parameter_supported": True,
        "request_object_signing_alg_values_supported": [*REQUEST_OBJECT_ALGORITHMS, "none"],
        "pushed_authorization_request_endpoint": f"{issuer}/par",
        "require_pushed_authorization_requests": False,
        # Discovery §3: the default is true, so saying nothing would be a lie.
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,
    }
