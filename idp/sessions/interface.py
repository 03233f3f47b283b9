"""Server-side browser sessions behind Flask's session API.

The cookie carries only a random id; the data lives in the ephemeral store
(Redis, or the database without Redis) under a digest of that id, so neither a
stolen store dump nor a forged cookie yields a session. ``regenerate()``
issues a new id with the same data: called at login and at step-up, it makes a
session id planted before login worthless (session fixation).
"""

from __future__ import annotations

import hashlib
import secrets

from flask.sessions import SessionInterface, SessionMixin
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from werkzeug.datastructures import CallbackDict

STORE_ERRORS = (RedisError, OperationalError)


class ServerSession(CallbackDict, SessionMixin):
    unavailable = False

    def __init__(self, initial=None, sid: str | None = None):
        def on_update(session):
            session.modified = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.modified = False
        self.previous_sid: str | None = None

    def regenerate(self) -> None:
        if self.sid:
            self.previous_sid = self.sid
        self.sid = None
        self.modified = True


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class ServerSessionInterface(SessionInterface):
    kind = "session"

    def __init__(self, store_getter, lifetime: int):
        self._store = store_getter
        self.lifetime = lifetime

    def open_session(self, app, request):
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid and len(sid) < 100:
            try:
                data = self._store().get(self.kind, _digest(sid))
            except STORE_ERRORS:
                # The store is down: say so (503) rather than treat the person
                # as signed out and let them start a login that cannot finish.
                session = ServerSession()
                session.unavailable = True
                return session
            if data is not None:
                return ServerSession(data, sid=sid)
        return ServerSession()

    def save_session(self, app, session: ServerSession, response):
        name = self.get_cookie_name(app)
        store = self._store()
        try:
            self._save(app, session, response, store, name)
        except STORE_ERRORS:
            # Nothing was stored, so the response must not pretend otherwise.
            response.status_code = 503
            response.headers["Retry-After"] = "5"
            response.headers.pop("Location", None)
            response.set_data(b"Service briefly unavailable; retry shortly.")
            response.mimetype = "text/plain"

    def _save(self, app, session, response, store, name):
        previous = _digest(session.previous_sid) if session.previous_sid else None
        if not session or not session.modified:
            if previous:
                store.delete(self.kind, previous)
            if not session and session.sid:
                store.delete(self.kind, _digest(session.sid))
                response.delete_cookie(name, path=self.get_cookie_path(app), domain=self.get_cookie_domain(app))
            return
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
        if previous:
            # A new id at sign-in: the old one's data goes and the new one's comes in one round trip (on SQLite
            # one commit), and never one without the other.
            store.replace(self.kind, previous, _digest(session.sid), dict(session), self.lifetime)
        else:
            store.put(self.kind, _digest(session.sid), dict(session), self.lifetime)
        response.set_cookie(
            name, session.sid, max_age=None, path=self.get_cookie_path(app), domain=self.get_cookie_domain(app),
            secure=self.get_cookie_secure(app), httponly=True, samesite=self.get_cookie_samesite(app),
        )
        response.vary.add("Cookie")
