"""SQLite: the write-ahead log restarted from a thread of its own, a few times a second.

SQLite checkpoints the WAL from the commit that takes it past ``wal_autocheckpoint`` pages, in PASSIVE mode:
it copies what no reader still needs and never waits. Under a steady stream of commits from several threads
one of them is nearly always inside a transaction, so that checkpoint seldom catches up with the log and the
log is restarted only now and then: in between, every commit past the threshold runs another checkpoint
attempt (reads, writes, two fsyncs). In a benchmark that was one or more fsyncs per token request, and
7–10 % of its CPU (bench/README.md).

Here one thread per process runs a RESTART checkpoint on each SQLite database the process uses, every
``INTERVAL`` seconds: it waits (at most ``BUSY_SECONDS``) for the commit and the readers of the moment, copies
each page of the log once, and the next commit starts the log from its beginning, overwriting the same file
(a TRUNCATE checkpoint would make every commit after it grow the file again). The commits' own automatic
checkpoint stays as a safety net, at ``AUTOCHECKPOINT_PAGES``. Durability is SQLite's: the checkpoint syncs the
log before copying and the database after.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref

#: Seconds between checkpoints. The log grows to what the commits of that long write (17 MB at 2,400 token
#: responses a second), and is written over from its beginning after each checkpoint.
INTERVAL = 0.25
#: How long a checkpoint may wait for the writer and readers of the moment; commits wait for it meanwhile.
BUSY_SECONDS = 0.1
#: The commits' own checkpoint, should this thread fall behind (SQLite's default is 1000 pages).
AUTOCHECKPOINT_PAGES = 16384

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: database path -> weak reference to the engine it is checkpointed for
_watched: dict[str, weakref.ref] = {}
_thread: threading.Thread | None = None
#: The thread's own connection per database. Only the thread uses or closes them: Python's sqlite3 module does
#: not survive a connection closed by one thread while another runs a statement on it.
_connections: dict[str, sqlite3.Connection] = {}
#: Connections a parent process opened, kept referenced in the child: closing one there is not SQLite-safe.
_forsaken: list = []


def watch(path: str, engine) -> None:
    """Checkpoint ``path`` for as long as ``engine`` lives (called when the engine opens a connection)."""
    global _thread
    with _lock:
        reference = _watched.get(path)
        if reference is None or reference() is None:
            _watched[path] = weakref.ref(engine)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="sqlite-wal-checkpoint", daemon=True)
            _thread.start()


def unwatch(engine) -> None:
    """Stop checkpointing for ``engine`` (its database is disposed of); the thread closes its connection."""
    with _lock:
        for path, reference in list(_watched.items()):
            if reference() is engine:
                del _watched[path]


def checkpoint(path: str) -> tuple[int, int, int] | None:
    """One RESTART checkpoint of ``path`` on a connection of its own: SQLite's (busy, log frames, frames
    checkpointed), or None if it failed."""
    connection = _open(path)
    if connection is None:
        return None
    try:
        return _checkpoint(path, connection)
    finally:
        _close(connection)


def _checkpoint(path: str, connection: sqlite3.Connection) -> tuple[int, int, int] | None:
    try:
        return tuple(connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone())
    except sqlite3.Error as error:
        # A database being replaced or deleted (tests), a full disk: the thread opens it again next round; the
        # commits' own checkpoint still runs meanwhile.
        log.debug("WAL checkpoint of %s failed: %s", path, error)
        return None


def _open(path: str) -> sqlite3.Connection | None:
    try:
        return sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        log.debug("WAL checkpoint of %s: cannot open: %s", path, error)
        return None


def _run() -> None:
    while True:
        time.sleep(INTERVAL)
        try:
            _round()
        except Exception:  # noqa: BLE001 - a defect here must not end the thread: the log would grow again
            log.exception("WAL checkpoint round failed")


def _round() -> None:
    with _lock:
        for path, reference in list(_watched.items()):
            if reference() is None:  # the engine is gone
                del _watched[path]
        paths = list(_watched)
    for path in [path for path in _connections if path not in paths]:
        _close(_connections.pop(path))
    for path in paths:
        connection = _connections.get(path) or _open(path)
        if connection is None:
            continue
        _connections[path] = connection
        if _checkpoint(path, connection) is None:
            _close(_connections.pop(path))


def _close(connection) -> None:
    try:
        connection.close()
    except sqlite3.Error:
        pass


def _after_fork() -> None:
    global _lock, _thread
    # The thread did not come along; the connections it held belong to the parent.
    _lock = threading.Lock()
    _thread = None
    _forsaken.extend(_connections.values())
    _connections.clear()


os.register_at_fork(after_in_child=_after_fork)
