"""Which claims each scope releases (OIDC Core §5.4)."""

from __future__ import annotations

import json

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oidc.core import UserInfo

from ..clients.models import KNOWN_SCOPES
from ..identities.models import Identity

SCOPE_CLAIMS = {
    "profile": ("name", "given_name", "family_name", "locale", "updated_at"),
    "email": ("email", "email_verified"),
    # Released when the data exists; identities hold no address or phone yet.
    "address": ("address",),
    "phone": ("phone_number", "phone_number_verified"),
}
AGREEMENT_CLAIMS = ("agreement_id", "agreement_name", "agreement_product", "agreement_role")
SUPPORTED_SCOPES = list(KNOWN_SCOPES)
CLAIMS_SUPPORTED = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash",
                    *SCOPE_CLAIMS["profile"], *SCOPE_CLAIMS["email"], *AGREEMENT_CLAIMS]
# address and phone are advertised as scopes but hold no data yet, so they are
# not listed as claims (Discovery §3: claims the OP "MAY be able to supply").


def identity_claims(identity: Identity) -> dict:
    return {
        "name": identity.name or None,
        "given_name": identity.given_name or None,
        "family_name": identity.family_name or None,
        "locale": identity.locale,
        "updated_at": int(identity.updated_at.timestamp()) if identity.updated_at else None,
        "email": identity.email,
        "email_verified": identity.email_verified,
        "address": None,
        "phone_number": None,
        "phone_number_verified": None,
    }


def parse_claims_request(raw: str | None) -> dict | None:
    """The ``claims`` authorization parameter (OIDC Core §5.5); ValueError when malformed."""
    if not raw:
        return None
    # In a request object the claims request is already a JSON object.
    request = raw if isinstance(raw, dict) else json.loads(raw)
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    for target in ("id_token", "userinfo"):
        members = request.get(target, {})
        if not isinstance(members, dict) or not all(v is None or isinstance(v, dict) for v in members.values()):
            raise ValueError(f"'{target}' must map claim names to null or objects")
    return request


def requested(family_or_request, target: str) -> dict:
    """Claims individually requested for ``target`` ("id_token" or "userinfo")."""
    request = getattr(family_or_request, "claims_request", family_or_request) or {}
    return request.get(target) or {}


def user_info(identity: Identity, scope: str, agreement=None, requested: dict | None = None) -> UserInfo:
    """The claims ``scope`` releases plus any requested by name (§5.5); empty
    values are left out, as §5.3.2 asks. ``agreement`` (the selected one, never
    the list) adds the agreement claims."""
    scopes = set(scope_to_list(scope or "") or [])
    available = identity_claims(identity)
    claims = {"sub": identity.id}
    for name, members in SCOPE_CLAIMS.items():
        if name in scopes:
            claims.update({k: available[k] for k in members if available[k] is not None})
    for name in requested or {}:
        if available.get(name) is not None:
            claims[name] = available[name]
    if agreement is not None and "agreement" in scopes:
        claims.update(agreement.claims())
    return UserInfo(claims)
