"""Keyed hashing of high-entropy secrets (client secrets, refresh tokens).

These values are random and at least 256 bits, so a fast keyed hash (HMAC-SHA256)
is enough: a leaked table cannot be reversed or checked offline without the key,
and verification costs microseconds on the token endpoint's hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def derive_key(secret_key: str, purpose: str) -> bytes:
    return hmac.new(secret_key.encode(), f"connect-idp:{purpose}".encode(), hashlib.sha256).digest()


class SecretHasher:
    def __init__(self, secret_key: str):
        self._key = derive_key(secret_key, "secret-hash")

    def hash(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def verify(self, value: str, digest: str | None) -> bool:
        if not digest or not value:
            return False
        return hmac.compare_digest(self.hash(value), digest)


def new_secret() -> str:
    """256 bits from the OS CSPRNG, URL-safe."""
    return secrets.token_urlsafe(32)


_hasher: SecretHasher | None = None


def configure(secret_key: str) -> None:
    global _hasher
    _hasher = SecretHasher(secret_key)


def hasher() -> SecretHasher:
    if _hasher is None:
        raise RuntimeError("idp.security.configure() was not called")
    return _hasher
