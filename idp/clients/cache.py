"""Registered clients by id, kept in process for the protocol endpoints.

Every token, introspection, revocation and authorization request looks its client up; that look-up is an
ORM load (on PostgreSQL also a round trip), a fifth of a client_credentials request's CPU (bench/README.md).
Clients change rarely, but a change must take effect at once everywhere: a disabled client gets no more
tokens, a removed redirect URI is refused, a rotated secret stops working when its overlap ends.

So the cache is only trusted while it hears about every change. On PostgreSQL:

* every commit that writes a client sends ``NOTIFY idp_clients, '<client_id>'`` inside its transaction
  (PostgreSQL delivers it when, and only if, the transaction commits; the CLI and the portal in other
  processes included), and drops the entry from its own process's cache right after the commit;
* one thread per process LISTENs on a dedicated connection and drops what it is told about;
* while that listener is not connected (starting, database restart), nothing is cached and every look-up
  goes to the database; when it (re)connects, the cache starts empty, since notifications may have been
  missed in between;
* a look-up that raced with an invalidation does not store what it read.

SQLite (the embedded default) is on one host, and has no LISTEN: there a file next to the database,
``<database>-clients``, carries the news in its modification time. A commit that writes a client sets it
(to an explicit nanosecond time) when it flushes and again after it commits; every look-up compares it
(one stat call) and forgets everything it holds when it moved. A file that cannot be read or written turns
the cache off. An in-memory database is never cached.

The cached objects are transient copies that no session knows of: nothing can flush them by accident,
and no request sees another request's changes to its copy.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
import weakref
from itertools import chain
from pathlib import Path

import psycopg
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


def _stamp_path(database: Database) -> Path | None:
    """SQLite: the file whose modification time says "a client changed" (next to the database, like its
    -wal and -shm files); None for an in-memory database or a directory we cannot write."""
    url = database.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database + "-clients")
    try:
        path.touch(exist_ok=True)
    except OSError:
        return None
    return path


class ClientCache:
    def __init__(self, database: Database):
        self._database = database
        self._postgres = database.engine.dialect.name == "postgresql"
        self._stamp_path = _stamp_path(database)
        self._stamp: int | None = None
        self._enabled = self._postgres or self._stamp_path is not None
        self._entries: dict[str, Client] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self._listening = False
        self._listener_pid: int | None = None
        self._stopped = threading.Event()
        self._conninfo = (database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
                          if self._postgres else "")
        if self._enabled:
            _announce_changes(database, weakref.ref(self), notify=self._postgres)

    @property
    def active(self) -> bool:
        """True while look-ups are served from memory."""
        return self._enabled and (self._listening or self._stamp_path is not None)

    def get(self, session: Session, client_id) -> Client | None:
        if not self._enabled:
            return service.find(session, client_id)
        if self._postgres:
            self._ensure_listener()
            if not self._listening:
                return service.find(session, client_id)
        elif not self._current_stamp():
            return service.find(session, client_id)
        cached = self._entries.get(client_id) if isinstance(client_id, str) else None
        if cached is not None:
            return cached
        generation = self._generation
        # Read in a session of its own, not the request's: that one may still hold the client in its identity
        # map as it was before the change we were just told about, and everyone would get that old view.
        with self._database.session_factory() as fresh:
            client = service.find(fresh, client_id)
            if client is None:
                return None  # misses are not cached: a registration makes them hits
            snapshot = _snapshot(client)
        with self._lock:
            if (self._listening or not self._postgres) and self._generation == generation:
                self._entries[client.client_id] = snapshot
        return snapshot

    def _current_stamp(self) -> bool:
        """SQLite: forget everything if any process changed a client since we last looked; False if the
        stamp cannot be read (then nothing is trusted)."""
        try:
            stamp = os.stat(self._stamp_path).st_mtime_ns
        except OSError:
            return False
        if stamp != self._stamp:
            with self._lock:
                self._generation += 1
                self._entries.clear()
                self._stamp = stamp
        return True

    def _announce_local(self, client_ids) -> None:
        """After a commit that changed these clients: tell the other processes (SQLite), forget them here."""
        if self._stamp_path is not None:
            self._touch()
        self.invalidate(client_ids)

    def _touch(self) -> None:
        # An explicit nanosecond time, not the file system's coarse clock: two changes a millisecond apart
        # still leave two different stamps.
        now = time.time_ns()
        try:
            os.utime(self._stamp_path, ns=(now, now))
        except OSError:
            self._enabled = False  # nobody could be told: stop trusting any copy, here included

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
            # A connection of its own, outside the pool: it is never handed to a request, and it waits
            # in LISTEN for as long as the process lives.
            connection = psycopg.connect(cache._conninfo, autocommit=True, connect_timeout=5)
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


def _announce_changes(database: Database, reference, notify: bool) -> None:
    """NOTIFY every client change inside its transaction (PostgreSQL); after the commit, touch the stamp
    (SQLite) and drop the clients from this process's cache."""

    @event.listens_for(database.session_factory, "after_flush")
    def _after_flush(session, _context):
        # Before the flush the session listed what it was about to write; it still does here.
        changed = {obj.client_id for obj in chain(session.new, session.dirty, session.deleted)
                   if isinstance(obj, Client)}
        if not changed:
            return
        cache = reference()
        if cache is not None and cache._stamp_path is not None:
            cache._touch()  # before the commit too: a reader that sees it re-reads, and again after the commit
        del cache
        if notify:
            connection = session.connection()
            for client_id in changed:
                connection.execute(_NOTIFY, {"channel": CHANNEL, "client_id": client_id})
        session.info.setdefault("idp_changed_clients", set()).update(changed)

    @event.listens_for(database.session_factory, "after_commit")
    def _after_commit(session):
        changed = session.info.pop("idp_changed_clients", None)
        cache = reference()
        if changed and cache is not None:
            cache._announce_local(changed)

    @event.listens_for(database.session_factory, "after_soft_rollback")
    def _after_rollback(session, _previous_transaction):
        session.info.pop("idp_changed_clients", None)
