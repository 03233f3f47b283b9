"""Per-app singletons: settings, database, ephemeral store, keys, hashers.

One Runtime per app, built in ``create_app``; Authlib hooks and views reach it
through ``runtime()``. Services never do: they take what they need as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_babel import Babel
from flask_wtf import CSRFProtect

from .clients.cache import ClientCache
from .identities.passwords import PasswordHasher
from .identities.totp import Totp
from .mail import Mailer
from .security import DataCipher
from .oidc.keys import KeyRing
from .storage.counters import BlockCounter
from .settings import Settings
from .storage.db import Database
from .storage.ephemeral import EphemeralStore

csrf = CSRFProtect()
babel = Babel()


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: EphemeralStore
    keys: KeyRing
    passwords: PasswordHasher
    totp: Totp
    mailer: Mailer
    #: Encrypts the few secrets that must be readable again (TOTP seeds, client_secret_jwt keys).
    cipher: DataCipher
    #: Clients by id for the protocol endpoints (idp/clients/cache.py).
    clients: ClientCache
    #: Rate-limit counts, reserved from the store in blocks (idp/storage/counters.py).
    rate_counter: BlockCounter


def runtime() -> Runtime:
    return current_app.extensions["idp"]


def db_session():
    return runtime().db.session


def origin():
    """The current request's origin for audit events (the proxy's X-Forwarded-For is
    trusted only when ProxyFix is configured, which rewrites remote_addr)."""
    from flask import has_request_context, request

    from .audit.service import Origin

    if not has_request_context():
        return Origin()
    return Origin(ip=request.remote_addr, user_agent=request.headers.get("User-Agent"))
