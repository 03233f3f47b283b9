"""Registered clients by id, kept in process for the protocol endpoints, on PostgreSQL.

Every token, introspection, revocation and authorization request looks its client up; on PostgreSQL that
look-up is a round trip and an ORM load, a fifth of a client_credentials request's CPU (bench/README.md).
Clients change rarely, but a change must take effect at once everywhere: a disabled client gets no more
tokens, a removed redirect URI is refused, a rotated secret stops working when its overlap ends.

So the cache is only trusted while it hears about every change:

* every commit that writes a client sends ``NOTIFY idp_clients, '<client_id>'`` inside its transaction
  (PostgreSQL delivers it when, and only if, the transaction commits; the CLI and the portal in other
  processes included), and drops the entry from its own process's cache right after the commit;
* one thread per process LISTENs on a dedicated connection and drops what it is told about;
* while that listener is not connected (starting, database restart), nothing is cached and every look-up
  goes to the database; when it (re)connects, the cache starts empty, since notifications may have been
  missed in between;
* a look-up that raced with an invalidation does not store what it read.

The cached objects are transient copies that no session knows of: nothing can flush them by accident,
and no request sees another request's changes to its copy. SQLite (the embedded single-host default)
has no LISTEN, and its look-up costs no round trip: there every look-up reads the database.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import weakref
from itertools import chain

from sqlalchemy import event, inspect, text
from sqlalchemy.orm import Session

from ..storage.db import Database
from . import service
from .models import Client

CHANNEL = "idp_clients"
_NOTIFY = text("SELECT pg_notify(:channel, :client_id)")
_COLUMNS = [attribute.key for attribute in inspect(Client).column_attrs]

log = logging.getLogger(__name__)


def _snapshot(client: Client) -> Client:
    return Client(**{key: copy.deepcopy(getattr(client, key)) for key in _COLUMNS})


class ClientCache:
    def __init__(self, database: Database):
        self._database = database
        self._enabled = database.engine.dialect.name == "postgresql"
        self._entries: dict[str, Client] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self._listening = False
        self._listener_pid: int | None = None
        self._stopped = threading.Event()
        if self._enabled:
            _announce_changes(database, weakref.ref(self))

    @property
    def active(self) -> bool:
        """True while look-ups are served from memory (the listener is connected)."""
        return self._enabled and self._listening

    def get(self, session: Session, client_id) -> Client | None:
        if not self._enabled:
            return service.find(session, client_id)
        self._ensure_listener()
        if not self._listening:
            return service.find(session, client_id)
        cached = self._entries.get(client_id) if isinstance(client_id, str) else None
        if cached is not None:
            return cached
        generation = self._generation
        client = service.find(session, client_id)
        if client is None:
            return None  # misses are not cached: a registration makes them hits
        snapshot = _snapshot(client)
        with self._lock:
            if self._listening and self._generation == generation:
                self._entries[client.client_id] = snapshot
        return snapshot

    def invalidate(self, client_ids=None) -> None:
        """Forget these clients (None: all of them)."""
        with self._lock:
            self._generation += 1
            if client_ids is None:
                self._entries.clear()
            else:
                for client_id in client_ids:
                    self._entries.pop(client_id, None)

    def stop(self) -> None:
        self._stopped.set()
        self._set_listening(False)

    # -- the listener ------------------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        pid = os.getpid()
        if self._listener_pid == pid:
            return
        with self._lock:
            if self._listener_pid == pid:
                return
            # A new process (first use, or a worker forked from a parent that had a listener): it hears
            # nothing yet, so it trusts nothing it may have inherited.
            self._listener_pid = pid
            self._listening = False
            self._generation += 1
            self._entries.clear()
        reference = weakref.ref(self)
        threading.Thread(target=_listen, args=(reference,), name="idp-clients-listener", daemon=True).start()

    def _set_listening(self, value: bool) -> None:
        with self._lock:
            self._listening = value
            self._generation += 1
            self._entries.clear()


def _listen(reference) -> None:
    delay = 0.2
    while True:
        cache = reference()
        if cache is None or cache._stopped.is_set():
            return
        connection = None
        try:
            pooled = cache._database.engine.raw_connection()
            connection = pooled.driver_connection
            pooled.detach()  # ours for good, never handed to a request
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANNEL}")
            cache._set_listening(True)
            delay = 0.2
            del cache  # hold no strong reference while waiting: the app may go away
            while True:
                for note in connection.notifies(timeout=2.0):
                    cache = reference()
                    if cache is None:
                        return
                    cache.invalidate([note.payload] if note.payload else None)
                    del cache
                cache = reference()
                if cache is None or cache._stopped.is_set():
                    return
                del cache
                connection.execute("SELECT 1")  # a dead connection raises here within two seconds
        except Exception as error:  # noqa: BLE001 - any failure: stop trusting the cache, then reconnect
            log.debug("client cache listener: %s", error)
        finally:
            cache = reference()
            if cache is not None:
                cache._set_listening(False)
            del cache
            if connection is not None:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass
        if reference() is None:
            return
        threading.Event().wait(delay)
        delay = min(delay * 2, 5.0)


def _announce_changes(database: Database, reference) -> None:
    """NOTIFY every client change inside its transaction; drop it locally after the commit."""

    @event.listens_for(database.session_factory, "after_flush")
    def _after_flush(session, _context):
        # Before the flush the session listed what it was about to write; it still does here.
        changed = {obj.client_id for obj in chain(session.new, session.dirty, session.deleted)
                   if isinstance(obj, Client)}
        if not changed:
            return
        connection = session.connection()
        for client_id in changed:
            connection.execute(_NOTIFY, {"channel": CHANNEL, "client_id": client_id})
        session.info.setdefault("idp_changed_clients", set()).update(changed)

    @event.listens_for(database.session_factory, "after_commit")
    def _after_commit(session):
        changed = session.info.pop("idp_changed_clients", None)
        cache = reference()
        if changed and cache is not None:
            cache.invalidate(changed)

    @event.listens_for(database.session_factory, "after_soft_rollback")
    def _after_rollback(session, _previous_transaction):
        session.info.pop("idp_changed_clients", None)
