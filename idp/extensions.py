"""Per-app singletons: settings, database, ephemeral store, keys, hashers.

One Runtime per app, built in ``create_app``; Authlib hooks and views reach it
through ``runtime()``. Services never do: they take what they need as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g
from flask import request as flask_request
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


#: The app, the request and ``g`` of the current context, resolved without going through their proxies'
#: attribute look-up: a proxied attribute first fails an ordinary look-up on the proxy, and formatting that
#: AttributeError cost more than the access itself. Some 30 such accesses were about a tenth of a token
#: request's instructions (bench/README.md). Each raises outside a context, as the proxies do.
current_app_object = current_app._get_current_object
current_request = flask_request._get_current_object
current_g = g._get_current_object


def runtime() -> Runtime:
    return current_app_object().extensions["idp"]


def db_session():
    return runtime().db.session


def origin():
    """The current request's origin for audit events (the proxy's X-Forwarded-For is
    trusted only when ProxyFix is configured, which rewrites remote_addr)."""
    from flask import has_request_context

    from .audit.service import Origin

    if not has_request_context():
        return Origin()
    request = current_request()
    return Origin(ip=request.remote_addr, user_agent=request.environ.get("HTTP_USER_AGENT"))
