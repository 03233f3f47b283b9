"""Keyed hashing of high-entropy secrets (client secrets, refresh tokens).

These values are random and at least 256 bits, so a fast keyed hash (HMAC-SHA256)
is enough: a leaked table cannot be reversed or checked offline without the key,
and verification costs microseconds on the token endpoint's hot path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
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


class DataCipher:
    """AES-256-GCM for small secrets at rest (TOTP seeds).

    ``aad`` binds a ciphertext to its row (e.g. the identity id), so a value
    copied onto another row does not decrypt.
    """

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ValueError("the data key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, aad: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), aad.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, aad: str) -> str:
        raw = base64.urlsafe_b64decode(token.encode())
        return self._aead.decrypt(raw[:12], raw[12:], aad.encode()).decode()


def load_data_key(configured: str, keys_dir) -> bytes:
    """The configured key (base64url, 32 bytes) or one kept in the key directory."""
    if configured:
        key = base64.urlsafe_b64decode(configured + "=" * (-len(configured) % 4))
        if len(key) != 32:
            raise ValueError("IDP_DATA_KEY must be 32 bytes, base64url-encoded")
        return key
    path = keys_dir / "data-key"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race; use its key
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    return base64.urlsafe_b64decode(path.read_text().strip())
