"""Server-side state of the sample RP: signed-in sessions and seen logout-token ``jti``s.

The browser's cookie holds only a random local-session id. The tokens stay here, and
back-channel logout can end a session by the IdP's ``sid`` (or ``sub``): the next
request from that browser finds nothing under its id and is signed out.

Both stores live in process memory, which is right for this sample (one process,
many threads). An RP with several processes or hosts needs them shared, with the
same methods on top of Redis or a database table.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class LocalSession:
    id: str
    #: The IdP (``iss``) and its session (``sid``) and subject (``sub``): what a logout token names.
    iss: str
    sub: str
    sid: str | None
    #: Validated ID token claims: who the person is and which agreement they work in.
    claims: dict
    id_token: str
    access_token: str
    refresh_token: str | None
    #: When the access token expires (epoch seconds).
    expires_at: float
    #: Scopes granted (the token response's ``scope``).
    scope: str = ""
    created_at: float = field(default_factory=time.time)


class SessionStore:
    def __init__(self, lifetime: float = 8 * 3600):
        self.lifetime = lifetime
        self._sessions: dict[str, LocalSession] = {}
        self._lock = threading.Lock()

    def create(self, **fields) -> LocalSession:
        local = LocalSession(id=secrets.token_urlsafe(32), **fields)
        with self._lock:
            self._purge()
            self._sessions[local.id] = local
        return local

    def get(self, local_id: str | None) -> LocalSession | None:
        with self._lock:
            local = self._sessions.get(local_id) if local_id else None
            if local is not None and time.time() - local.created_at > self.lifetime:
                del self._sessions[local_id]
                return None
            return local

    def update(self, local_id: str, **fields) -> LocalSession | None:
        with self._lock:
            local = self._sessions.get(local_id)
            if local is not None:
                local = self._sessions[local_id] = replace(local, **fields)
            return local

    def delete(self, local_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(local_id, None)

    def end(self, iss: str, *, sid: str | None = None, sub: str | None = None) -> int:
        """End every session of IdP session ``sid`` (and/or subject ``sub``); how many ended."""
        if not sid and not sub:
            return 0
        with self._lock:
            doomed = [s.id for s in self._sessions.values()
                      if s.iss == iss and (not sid or s.sid == sid) and (not sub or s.sub == sub)]
            for local_id in doomed:
                del self._sessions[local_id]
        return len(doomed)

    def _purge(self) -> None:
        now = time.time()
        for local_id in [s.id for s in self._sessions.values() if now - s.created_at > self.lifetime]:
            del self._sessions[local_id]


class ReplayCache:
    """Remembers values (logout-token ``jti``s) until they expire."""

    def __init__(self):
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, value: str, until: float) -> bool:
        """True the first time ``value`` is seen before ``until``; False for a replay."""
        now = time.time()
        with self._lock:
            for old in [v for v, expiry in self._seen.items() if expiry < now]:
                del self._seen[old]
            if value in self._seen:
                return False
            self._seen[value] = until
            return True


class TTLCache:
    """``get``/``set``/``delete`` with expiry, the cache interface Authlib's client takes.

    Authlib keeps each sign-in attempt's nonce, PKCE verifier and request URL here
    (keyed by ``state``) instead of in the cookie, which would outgrow 4 KB.
    """

    def __init__(self):
        self._data: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            expiry, value = self._data.get(key, (0.0, None))
            return value if expiry > time.time() else None

    def set(self, key: str, value, expires_in: float) -> None:
        now = time.time()
        with self._lock:
            for old in [k for k, (expiry, _) in self._data.items() if expiry < now]:
                del self._data[old]
            self._data[key] = (now + expires_in, value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)
