"""Engine, declarative base and the request-scoped SQLAlchemy session.

Services own the transaction: they commit when their change is complete, and
the session is rolled back and removed at the end of every request, so a
failure half-way never leaves half a change behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import DateTime, MetaData, Text, TypeDecorator, create_engine, event, exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker

from . import sqlite_wal

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTCDateTime column")
            value = value.astimezone(dt.timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


class JSONList(TypeDecorator):
    """A JSON array stored as text, portable across SQLite and PostgreSQL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return json.dumps(list(value or []))

    def process_result_value(self, value, dialect):
        return json.loads(value) if value else []


class JSONDict(TypeDecorator):
    """A JSON object stored as text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return json.dumps(dict(value or {}))

    def process_result_value(self, value, dialect):
        return json.loads(value) if value else {}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_engine(url: str, autocommit: bool = False) -> Engine:
    """The engine for ``url``; ``autocommit`` (PostgreSQL) for one whose connections stay in autocommit."""
    kwargs: dict = {"future": True}
    #: A SQLite database file's absolute path (None for an in-memory one and for PostgreSQL).
    on_disk = None
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            on_disk = os.path.abspath(database)
            # A fresh checkout has no instance/ folder yet.
            Path(on_disk).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if on_disk:
            # Last in, first out: SQLite empties a connection's page cache when another connection has written
            # since its last transaction, so handing out the connection that wrote last keeps its cache warm
            # (a third more CPU per INSERT transaction when four connections took turns; bench/README.md).
            kwargs["pool_use_lifo"] = True
    else:
        # LIFO here too: the connections in use stay warm and the ones beyond the load go idle (and are
        # pinged before their next use, see _ping_when_idle) instead of every connection taking turns.
        kwargs.update(pool_size=10, max_overflow=20, pool_use_lifo=True)
        if autocommit:
            # Nothing to roll back when a connection in autocommit comes back: no transaction can be open on it
            # (SQLAlchemy's begin() sends no BEGIN there), and the pool's rollback cost 2 % of a token request.
            kwargs.update(isolation_level="AUTOCOMMIT", pool_size=5, max_overflow=10, pool_reset_on_return=None)
        if url.startswith("postgresql+psycopg"):
            # No server-side prepared statements: their generic plans guess "a few
            # memberships per person", which is badly wrong for a bookkeeper.
            kwargs["connect_args"] = {"prepare_threshold": None}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets the dev server's threads read while one writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL never corrupts the database; it skips the fsync on every commit, so a power
            # cut (not a crash of the IdP) may lose the last commits. SQLite's documented choice for WAL.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            if on_disk:
                # The log is checkpointed by a thread of this process (idp/storage/sqlite_wal.py); the commits'
                # own checkpoint is the safety net.
                cursor.execute(f"PRAGMA wal_autocheckpoint={sqlite_wal.AUTOCHECKPOINT_PAGES}")
                sqlite_wal.watch(on_disk, engine)
            cursor.close()

    else:
        _ping_when_idle(engine)
        _end_statements_of_lost_clients(engine)
    return engine


#: A pooled connection unused for longer than this is tested before a request gets it.
IDLE_PING_SECONDS = 1.0
#: How often PostgreSQL checks, while one of our statements runs, that we are still connected (ms).
CLIENT_CHECK_MS = 100


def _end_statements_of_lost_clients(engine: Engine) -> None:
    """PostgreSQL (14 and later) ends a statement whose client has gone, within ``CLIENT_CHECK_MS``.

    A token response's rows are written by one statement in autocommit (idp/oidc/tokens.py persist_alone); for
    a refresh that statement also claims the old refresh token. Without this, such a statement held up by a
    lock that outlives our worker (killed meanwhile) would run on when the lock goes and commit by itself: the
    old refresh token marked used, its successor never delivered, and the client's retry taken for a reuse that
    revokes the family. With it the server notices the closed socket while the statement waits and rolls it
    back, as it would a transaction whose COMMIT never came. The check polls the socket at that interval only
    while a statement runs."""

    @event.listens_for(engine, "connect")
    def _check_client(dbapi_connection, _record):
        if getattr(getattr(dbapi_connection, "info", None), "server_version", 0) < 140000:
            return  # no such setting before PostgreSQL 14: such a statement runs to its end there
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
        cursor.close()
        dbapi_connection.commit()  # a session setting, kept (outside autocommit the SET opened a transaction)


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pool_pre_ping, but only for connections that sat idle.

    pre_ping costs a round trip on every checkout, a tenth of a token request's CPU. A connection that
    was in use a moment ago is alive; the ones that go stale (a database restart or failover, an idle
    timeout in a proxy) have been idle for longer than a restart takes. A failed ping makes the pool
    replace the connection before the request sees it. Should a connection still die in the gap, the
    request gets a 503 and SQLAlchemy drops the whole pool (a disconnect invalidates it)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= IDLE_PING_SECONDS:
            return
        if not _answers(dbapi_connection):
            raise exc.DisconnectionError()


def _answers(dbapi_connection) -> bool:
    """Whether the server still answers on this connection (one round trip); leaves no transaction open."""
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()  # nothing to roll back in autocommit; after the ping otherwise
        return True
    except Exception:  # noqa: BLE001 - any failure: this connection is no good
        return False


#: Counts forks, so a child process leaves alone the connections its parent's thread held.
_fork_generation = 0
#: Connections a parent process held, kept referenced in the child: collecting one would close the parent's socket.
_forsaken: list = []


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork)


def _long_lived(thread: threading.Thread) -> bool:
    """Threads that serve requests for the life of the process: the main thread (a sync worker's) and threads
    Python did not start (granian's blocking threads). A thread started per request (Werkzeug's threaded dev
    server, tests) ends soon; a connection it kept would stay out of the pool until it was collected."""
    return thread is threading.main_thread() or isinstance(thread, threading._DummyThread)


class _Held(threading.local):
    """What a thread holds: its reading connection."""

    reader: Connection | None = None
    #: Since when the reader has waited for the next request (None while a request uses it).
    idle_since: float | None = None
    generation = -1
    keeps: bool | None = None


class Database:
    """Holds the engine and a scoped session; one per app."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        #: PostgreSQL: where single-statement reads (``read``) and writes run, in autocommit. A pool of its own
        #: whose connections stay in autocommit: switching a pooled connection to autocommit at check-out and
        #: back at check-in cost about 3 % of a token request. SQLite opens no transaction for a SELECT.
        self.autocommit_engine = self.engine if url.startswith("sqlite") else make_engine(url, autocommit=True)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False, autoflush=False)
        self.session: scoped_session[Session] = scoped_session(self.session_factory)
        self._local = _Held()

    def read(self, statement, params: dict) -> dict | None:
        """The first row of one read-only ``DirectStatement`` (idp/storage/direct.py), in autocommit.

        On PostgreSQL a statement in the request's session costs BEGIN, the statement and a ROLLBACK at
        the end of the request: three round trips where one does. For single-statement reads on hot paths
        (is this access token still good?) that need no snapshot shared with other reads. SQLite opens no
        transaction for a SELECT in the first place.

        The connection is held for the rest of the request, and by a long-lived thread for its next requests
        too (see ``remove``): an SSO hop reads three rows, and a pool check-out and check-in cost more than a
        read."""
        return statement.first(self._reader(), params)

    def _reader(self) -> Connection:
        """This thread's reading connection, taken from the pool if it has none. One kept from an earlier request
        is first checked as the pool checks its own (``_ping_when_idle``): when it has been idle for longer than
        ``IDLE_PING_SECONDS`` the server must answer on it, else a fresh one replaces it."""
        local = self._local
        reader = local.reader
        if reader is not None:
            if local.generation != _fork_generation:
                _forsaken.append(reader)
            elif local.idle_since is None:
                return reader
            elif (time.monotonic() - local.idle_since <= IDLE_PING_SECONDS or reader.dialect.name == "sqlite"
                  or _answers(reader.connection.dbapi_connection)):
                local.idle_since = None
                return reader
            else:
                reader.invalidate()
                reader.close()
            local.idle_since = None
        local.reader = None
        reader = self.autocommit_engine.connect()
        local.reader, local.generation = reader, _fork_generation
        return reader

    @contextlib.contextmanager
    def own_transaction(self, held: bool) -> Iterator[Connection]:
        """A short transaction of its own, committed when the block ends (rolled back if it raises): the SQL
        store's writes, a token response's rows (idp/oidc/tokens.py ``persist_alone``), the mark of an agreement's
        last use; writes that must never commit or roll back a service's unit of work.

        ``held``: the caller's scope ends in ``remove`` (an app context: a request, a CLI command), so it may run
        on the connection this thread holds for reads: a pool check-out and check-in cost more than a store's
        one statement, and a sign-in page makes three or four of them. On PostgreSQL that connection is in
        autocommit, so each statement commits by itself: callers write one statement per block."""
        reader = self._reader() if held else None
        if reader is None:
            with self.engine.begin() as connection:
                yield connection
        else:
            with reader.begin():
                yield reader

    @contextlib.contextmanager
    def own_reads(self, held: bool) -> Iterator[Connection]:
        """A connection for reads in autocommit; ``held`` as for ``own_transaction``."""
        reader = self._reader() if held else None
        if reader is None:
            with self.autocommit_engine.connect() as connection:
                yield connection
        else:
            yield reader

    def remove(self) -> None:
        """The end of a request (or of any app context): rolls back and returns what it held. A long-lived thread
        (``_long_lived``) keeps its reading connection for its next request when nothing is open on it: the pool's
        check-out and check-in were 6 % of a client_credentials request."""
        local = self._local
        reader = local.reader
        try:
            if reader is not None:
                if local.keeps is None:
                    local.keeps = _long_lived(threading.current_thread())
                if (local.keeps and not reader.invalidated and not reader.in_transaction()
                        and not getattr(reader.connection.dbapi_connection, "in_transaction", False)):
                    if local.idle_since is None:
                        local.idle_since = time.monotonic()
                else:
                    local.reader = local.idle_since = None
                    reader.close()
        finally:
            self.session.remove()

    def dispose(self) -> None:
        reader, self._local.reader = self._local.reader, None
        if reader is not None:
            if self._local.generation == _fork_generation:
                reader.close()
            else:
                _forsaken.append(reader)
        self.session.remove()
        sqlite_wal.unwatch(self.engine)
        self.engine.dispose()
        if self.autocommit_engine is not self.engine:
            self.autocommit_engine.dispose()
