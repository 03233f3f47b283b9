"""SQLite: the write-ahead log restarted from a thread of its own, a few times a second.

SQLite checkpoints the WAL from the commit that takes it past ``wal_autocheckpoint`` pages, in PASSIVE mode:
it copies what no reader still needs and never waits. Under a steady stream of commits from several threads
one of them is nearly always inside a transaction, so that checkpoint seldom catches up with the log, the log
is not restarted, and every later commit runs another checkpoint attempt (reads, writes, two fsyncs) while the
file keeps growing: 20 MB in a 20-second benchmark, where the log of a quarter of a second is a few MB, and
about a tenth of a token request's CPU went to those attempts (bench/README.md).

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

#: Seconds between checkpoints. Under load a quarter of a second's log is a few MB.
INTERVAL = 0.25
#: How long a checkpoint may wait for the writer and readers of the moment; commits wait for it meanwhile.
BUSY_SECONDS = 0.1
#: The commits' own checkpoint, should this thread fall behind (SQLite's default is 1000 pages).
AUTOCHECKPOINT_PAGES = 16384

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: database path -> [weak reference to its engine, this thread's connection or None]
_watched: dict[str, list] = {}
_thread: threading.Thread | None = None
#: Connections a parent process opened, kept referenced in the child: closing one there is not SQLite-safe.
_forsaken: list = []


def watch(path: str, engine) -> None:
    """Checkpoint ``path`` for as long as ``engine`` lives (called when the engine opens a connection)."""
    global _thread
    with _lock:
        entry = _watched.get(path)
        if entry is None or entry[0]() is None:
            _watched[path] = [weakref.ref(engine), entry[1] if entry else None]
        if _thread is None:
            _thread = threading.Thread(target=_run, name="sqlite-wal-checkpoint", daemon=True)
            _thread.start()


def unwatch(engine) -> None:
    with _lock:
        for path, entry in list(_watched.items()):
            if entry[0]() is engine:
                del _watched[path]
                _close(entry[1])


def checkpoint(path: str) -> tuple[int, int, int] | None:
    """One RESTART checkpoint of ``path``: SQLite's (busy, log frames, frames checkpointed), or None if the
    database could not be opened. Also what the thread runs."""
    with _lock:
        entry = _watched.get(path)
    connection = entry[1] if entry else None
    try:
        if connection is None:
            connection = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
            if entry is not None:
                entry[1] = connection
        row = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if entry is None:
            connection.close()
        return tuple(row)
    except sqlite3.Error as error:
        # A database being replaced or deleted (tests), a full disk: the next round opens it again; the commits'
        # own checkpoint still runs meanwhile.
        log.debug("WAL checkpoint of %s failed: %s", path, error)
        if entry is not None:
            entry[1] = None
        _close(connection)
        return None


def _run() -> None:
    while True:
        time.sleep(INTERVAL)
        with _lock:
            paths = []
            for path, entry in list(_watched.items()):
                if entry[0]() is None:  # the engine is gone
                    del _watched[path]
                    _close(entry[1])
                else:
                    paths.append(path)
        for path in paths:
            checkpoint(path)


def _close(connection) -> None:
    if connection is not None:
        try:
            connection.close()
        except sqlite3.Error:
            pass


def _after_fork() -> None:
    global _lock, _thread
    # The thread did not come along; the connections it held belong to the parent.
    _lock = threading.Lock()
    _thread = None
    for entry in _watched.values():
        if entry[1] is not None:
            _forsaken.append(entry[1])
            entry[1] = None


os.register_at_fork(after_in_child=_after_fork)
