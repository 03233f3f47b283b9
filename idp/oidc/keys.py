"""Signing keys: files in the key directory, published in the JWKS by ``kid``.

Each key file ``<kid>.json`` holds the private JWK and its lifecycle state:

    next ──rotate──▶ active ──rotate──▶ retired ──(max token lifetime)──▶ unpublished

A ``next`` key is published before it ever signs, so RPs that cache the JWKS
already know it when rotation makes it active; a ``retired`` key stays
published until every token it signed has expired. There is always one active
key per algorithm (RS256 for ID tokens by default, ES256 for access tokens and
for clients that ask for it). Processes re-read the directory when it changes,
so a rotation done by the CLI reaches every replica within
``keys_reload_interval`` seconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, RSAKey

ALGORITHMS = ("RS256", "ES256")
STATES = ("next", "active", "retired")


class KeysError(RuntimeError):
    pass


@dataclass
class SigningKey:
    kid: str
    alg: str
    state: str
    created_at: int
    activated_at: int | None
    retired_at: int | None
    key: RSAKey | ECKey

    def to_file(self) -> dict:
        return {
            "state": self.state,
            "created_at": self.created_at,
            "activated_at": self.activated_at,
            "retired_at": self.retired_at,
            "jwk": self.key.as_dict(private=True),
        }


def _generate(alg: str, state: str) -> SigningKey:
    params = {"alg": alg, "use": "sig"}
    if alg == "RS256":
        key = RSAKey.generate_key(2048, parameters=params, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=params, private=True)
    else:
        raise KeysError(f"unsupported algorithm {alg}")
    kid = key.thumbprint()
    key = type(key).import_key({**key.as_dict(private=True), "kid": kid})
    now = int(time.time())
    return SigningKey(kid, alg, state, now, now if state == "active" else None, None, key)


def _write(directory: Path, signing_key: SigningKey) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{signing_key.kid}.json"
    tmp = directory / f".{signing_key.kid}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(signing_key.to_file(), handle)
    # rename is atomic: a reader sees the old file or the new one, never half.
    os.replace(tmp, path)


def load_directory(directory: Path) -> list[SigningKey]:
    keys = []
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            jwk = data["jwk"]
            cls = RSAKey if jwk["kty"] == "RSA" else ECKey
            key = cls.import_key(jwk)
            keys.append(SigningKey(jwk["kid"], jwk["alg"], data["state"], data["created_at"],
                                   data.get("activated_at"), data.get("retired_at"), key))
        except (OSError, ValueError, KeyError) as error:
            raise KeysError(f"unreadable key file {path}: {error}") from error
    return keys


@contextmanager
def _locked(directory: Path):
    """One process at a time creates or rotates keys: replicas and workers
    starting together on an empty directory must not each make "active" keys."""
    directory.mkdir(parents=True, exist_ok=True)
    # Private like everything else in the key directory (production checks it).
    descriptor = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def generate(directory: Path) -> list[SigningKey]:
    """Ensure one active and one next key per algorithm; return what was created."""
    with _locked(directory):
        return _generate_missing(directory)


def _generate_missing(directory: Path) -> list[SigningKey]:
    existing = load_directory(directory)
    created = []
    for alg in ALGORITHMS:
        states = {k.state for k in existing if k.alg == alg}
        for state in ("active", "next"):
            if state not in states:
                signing_key = _generate(alg, state)
                _write(directory, signing_key)
                created.append(signing_key)
    return created


def rotate(directory: Path) -> list[SigningKey]:
    """Retire the active keys, activate the next ones, and create new next keys."""
    with _locked(directory):
        return _rotate(directory)


def _rotate(directory: Path) -> list[SigningKey]:
    _generate_missing(directory)
    now = int(time.time())
    changed = []
    for signing_key in load_directory(directory):
        if signing_key.state == "active":
            signing_key.state, signing_key.retired_at = "retired", now
        elif signing_key.state == "next":
            signing_key.state, signing_key.activated_at = "active", now
        else:
            continue
        _write(directory, signing_key)
        changed.append(signing_key)
    changed += _generate_missing(directory)
    return changed


def prune(directory: Path, max_token_ttl: int) -> list[str]:
    """Delete retired keys no token can still need."""
    removed = []
    for signing_key in load_directory(directory):
        if signing_key.state == "retired" and signing_key.retired_at + max_token_ttl < time.time():
            (directory / f"{signing_key.kid}.json").unlink()
            removed.append(signing_key.kid)
    return removed


class KeyRing:
    """The keys one process signs and publishes with, reloaded when the directory changes."""

    def __init__(self, directory: Path, max_token_ttl: int, reload_interval: int = 10):
        self.directory = directory
        self.max_token_ttl = max_token_ttl
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp = None
        self._active: dict[str, SigningKey] = {}
        self._signing: dict[str, KeySet] = {}
        self._jwks: dict = {"keys": []}
        self._public: KeySet = KeySet([])
        self._load()

    def _directory_stamp(self):
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.directory.glob("*.json")))
        except OSError:
            return None

    def _load(self) -> None:
        # Stamp first: a file written while we read is then seen at the next check.
        stamp = self._directory_stamp()
        keys = load_directory(self.directory)
        active: dict[str, SigningKey] = {}
        # Should a directory ever hold two active keys of one algorithm, every
        # process picks the same one (the oldest).
        for k in sorted((k for k in keys if k.state == "active"), key=lambda k: (k.created_at, k.kid)):
            active.setdefault(k.alg, k)
        missing = [alg for alg in ALGORITHMS if alg not in active]
        if missing:
            raise KeysError(f"no active {', '.join(missing)} key in {self.directory}: run `idp keys generate`")
        now = time.time()
        published = [
            k for k in keys
            if k.state in ("next", "active") or (k.retired_at or 0) + self.max_token_ttl > now
        ]
        self._active = active
        self._signing = {alg: KeySet([k.key]) for alg, k in active.items()}
        self._jwks = {"keys": [k.key.as_dict(private=False) for k in published]}
        self._public = KeySet([type(k.key).import_key(k.key.as_dict(private=False)) for k in published])
        self._stamp = stamp

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.reload_interval:
            return
        with self._lock:
            self._checked = now
            if force or self._directory_stamp() != self._stamp:
                self._load()

    def signing_key(self, alg: str) -> SigningKey:
        self.refresh()
        try:
            return self._active[alg]
        except KeyError:
            raise KeysError(f"no active key for {alg}") from None

    def signing_keyset(self, alg: str) -> KeySet:
        """The active key for ``alg`` as a one-key set, so joserfc writes its ``kid``."""
        self.refresh()
        try:
            return self._signing[alg]
        except KeyError:
            raise KeysError(f"no active key for {alg}") from None

    def jwks(self) -> dict:
        self.refresh()
        return self._jwks

    def public_keys(self) -> KeySet:
        self.refresh()
        return self._public
