"""Which claims each scope releases (OIDC Core §5.4)."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oidc.core import UserInfo

from ..identities.models import Identity

SCOPE_CLAIMS = {
    "profile": ("name", "given_name", "family_name", "locale", "updated_at"),
    "email": ("email", "email_verified"),
}
AGREEMENT_CLAIMS = ("agreement_id", "agreement_name", "agreement_product", "agreement_role")
SUPPORTED_SCOPES = ["openid", "profile", "email", "offline_access", "agreement"]
CLAIMS_SUPPORTED = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash",
                    *SCOPE_CLAIMS["profile"], *SCOPE_CLAIMS["email"], *AGREEMENT_CLAIMS]


def identity_claims(identity: Identity) -> dict:
    return {
        "name": identity.name or None,
        "given_name": identity.given_name or None,
        "family_name": identity.family_name or None,
        "locale": identity.locale,
        "updated_at": int(identity.updated_at.timestamp()) if identity.updated_at else None,
        "email": identity.email,
        "email_verified": identity.email_verified,
    }


def user_info(identity: Identity, scope: str, agreement=None) -> UserInfo:
    """The claims ``scope`` releases; empty values are left out, as §5.3.2 asks.
    ``agreement`` (the selected one, never the list) adds the agreement claims."""
    scopes = set(scope_to_list(scope or "") or [])
    available = identity_claims(identity)
    claims = {"sub": identity.id}
    for name, members in SCOPE_CLAIMS.items():
        if name in scopes:
            claims.update({k: available[k] for k in members if available[k] is not None})
    if agreement is not None and "agreement" in scopes:
        claims.update(agreement.claims())
    return UserInfo(claims)
