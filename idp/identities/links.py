"""Single-use, expiring links sent by e-mail (verification, password reset).

The token is random (256 bits) and only its digest is stored, in the ephemeral
store; ``peek`` lets a page show a form without spending the link (mail
scanners follow links), ``redeem`` spends it exactly once.
"""

from __future__ import annotations

import hashlib
import secrets

from ..storage.ephemeral import EphemeralStore

VERIFY_EMAIL = ("email_verify", 24 * 3600)
RESET_PASSWORD = ("password_reset", 3600)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(store: EphemeralStore, purpose: tuple[str, int], identity_id: str) -> str:
    token = secrets.token_urlsafe(32)
    kind, ttl = purpose
    store.put(kind, _digest(token), {"identity_id": identity_id}, ttl)
    return token


def peek(store: EphemeralStore, purpose: tuple[str, int], token: str) -> str | None:
    """The identity the link is for, without spending it; None if used or expired."""
    if not token or len(token) > 100:
        return None
    data = store.get(purpose[0], _digest(token))
    return data["identity_id"] if data else None


def redeem(store: EphemeralStore, purpose: tuple[str, int], token: str) -> str | None:
    """Spend the link; the identity id the first time, None ever after."""
    if not token or len(token) > 100:
        return None
    consumed = store.consume(purpose[0], _digest(token))
    return consumed.value["identity_id"] if consumed and consumed.first else None
