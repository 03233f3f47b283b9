"""Validating a logout token (OpenID Connect Back-Channel Logout 1.0 §2.6)."""

from __future__ import annotations

import base64
import json
import time

from joserfc import jwt
from joserfc.errors import JoseError

from ..resource_server import JWKSCache
from .store import ReplayCache

EVENT = "http://schemas.openid.net/event/backchannel-logout"


class InvalidLogoutToken(Exception):
    pass


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_logout_token(token: str, *, keys: JWKSCache, issuer: str, client_id: str, seen: ReplayCache,
                          algorithms=("RS256", "ES256"), leeway: int = 60) -> dict:
    """The claims of a valid, first-seen logout token for ``client_id``; raises InvalidLogoutToken."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 8192:
        raise InvalidLogoutToken("not a signed JWT")
    try:
        segment = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidLogoutToken("not a signed JWT") from error
    if not isinstance(header, dict):
        raise InvalidLogoutToken("not a signed JWT")
    # Steps 2-3: the signature and alg as for ID tokens; never "none" (nor HMAC here).
    alg = header.get("alg")
    if alg not in algorithms:
        raise InvalidLogoutToken(f"alg {alg!r} is not accepted")
    # §2.4 explicit typing: an ID token or access token is never taken for a logout token.
    if not isinstance(header.get("typ"), str) or header["typ"].lower() not in ("logout+jwt",
                                                                              "application/logout+jwt"):
        raise InvalidLogoutToken("typ is not logout+jwt")
    key = keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
    if key is None:
        raise InvalidLogoutToken("signed with an unknown key")
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except (JoseError, ValueError) as error:
        raise InvalidLogoutToken("bad signature") from error

    # Step 4: iss, aud, iat and exp as for ID tokens.
    now = time.time()
    if claims.get("iss") != issuer:
        raise InvalidLogoutToken("wrong issuer")
    audiences = [claims.get("aud")] if isinstance(claims.get("aud"), str) else claims.get("aud")
    if not isinstance(audiences, list) or client_id not in audiences:
        raise InvalidLogoutToken("not for this client")
    if not _number(claims.get("iat")) or claims["iat"] > now + leeway:
        raise InvalidLogoutToken("bad iat")
    if not _number(claims.get("exp")) or claims["exp"] + leeway < now:
        raise InvalidLogoutToken("expired")
    # Step 5: whom to sign out.
    sid, sub = claims.get("sid"), claims.get("sub")
    if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
        raise InvalidLogoutToken("neither sid nor sub")
    if (sid is not None and not isinstance(sid, str)) or (sub is not None and not isinstance(sub, str)):
        raise InvalidLogoutToken("sid and sub must be strings")
    # Step 6: the event.
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(EVENT), dict):
        raise InvalidLogoutToken("no back-channel logout event")
    # Step 7: a nonce would make it look like an ID token.
    if "nonce" in claims:
        raise InvalidLogoutToken("a logout token has no nonce")
    # Step 8: each token works once (remembered until it expires), checked last so
    # that invalid tokens cannot fill the cache.
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise InvalidLogoutToken("no jti")
    if not seen.first_use(claims["jti"], until=claims["exp"] + leeway):
        raise InvalidLogoutToken("replayed")
    return claims
