"""SQLite's write-ahead log is restarted by the process's checkpoint thread (idp/storage/sqlite_wal.py), so
commits overwrite the same log instead of growing it, and the commits' own checkpoint attempts stay rare."""

from __future__ import annotations

import gc
import threading
import time

import pytest
from sqlalchemy import text

from idp.storage import sqlite_wal
from idp.storage.db import Database


@pytest.fixture
def database(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_wal, "INTERVAL", 0.05)
    db = Database(f"sqlite:///{tmp_path / 'wal.sqlite3'}")
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE rows (id INTEGER PRIMARY KEY, value TEXT)"))
    yield db
    db.dispose()


def _commit(db: Database, count: int) -> None:
    for _ in range(count):
        with db.engine.begin() as connection:
            connection.execute(text("INSERT INTO rows (value) VALUES (:value)"), {"value": "x" * 300})


def _log_header(path) -> bytes:
    """The WAL header's checkpoint sequence number and salts: a restarted log gets new ones."""
    return path.read_bytes()[12:24]


def test_commits_start_the_log_over_after_a_checkpoint(database, tmp_path):
    log = tmp_path / "wal.sqlite3-wal"
    _commit(database, 1)
    first = _log_header(log)
    deadline = time.monotonic() + 5
    while _log_header(log) == first:
        assert time.monotonic() < deadline, "the log was never restarted"
        time.sleep(0.02)
        _commit(database, 1)  # a restart shows when the next commit writes the log's new header

    # For a second, each commit lands on a log that is checkpointed and restarted every 50 ms: the file stays
    # the size of the commits between two checkpoints. Without the thread every one of them stays in the log
    # (they are fewer pages than the commits' own checkpoint waits for): at least a page each.
    commits, until = 0, time.monotonic() + 1
    while time.monotonic() < until:
        _commit(database, 10)
        commits += 10
    assert log.stat().st_size < commits * 4096 / 2


def test_a_checkpoint_copies_the_whole_log_when_nothing_holds_it(database, tmp_path):
    _commit(database, 20)
    # The process's own thread may be checkpointing at the same moment (one checkpoint at a time): try again.
    for _ in range(100):
        busy, frames, copied = sqlite_wal.checkpoint(str(tmp_path / "wal.sqlite3"))
        if not busy:
            break
        time.sleep(0.01)
    assert busy == 0
    assert copied == frames


def test_a_checkpoint_waits_for_a_reader_only_briefly(database, tmp_path):
    """A long read holds the log; the checkpoint gives up after BUSY_SECONDS rather than stalling commits."""
    _commit(database, 5)
    with database.engine.connect() as reader:
        reader.execute(text("BEGIN"))
        reader.execute(text("SELECT count(*) FROM rows")).scalar_one()
        _commit(database, 5)
        started = time.monotonic()
        busy, _frames, _copied = sqlite_wal.checkpoint(str(tmp_path / "wal.sqlite3"))
        assert busy == 1
        assert time.monotonic() - started < 2
        reader.execute(text("ROLLBACK"))


def test_the_commits_own_checkpoint_is_only_a_safety_net(database):
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == sqlite_wal.AUTOCHECKPOINT_PAGES


def test_a_disposed_or_collected_database_is_no_longer_checkpointed(tmp_path):
    path = str(tmp_path / "gone.sqlite3")
    db = Database(f"sqlite:///{path}")
    with db.engine.connect():
        pass
    assert path in sqlite_wal._watched
    db.dispose()
    assert path not in sqlite_wal._watched
    deadline = time.monotonic() + 5
    while path in sqlite_wal._connections:  # the thread closes its own connection
        assert time.monotonic() < deadline, "the thread kept its connection to a disposed database"
        time.sleep(0.05)

    other = Database(f"sqlite:///{tmp_path / 'collected.sqlite3'}")
    with other.engine.connect():
        pass
    watched = str(tmp_path / "collected.sqlite3")
    assert watched in sqlite_wal._watched
    del other
    gc.collect()
    deadline = time.monotonic() + 5
    while watched in sqlite_wal._watched:
        assert time.monotonic() < deadline, "a collected engine's database is still watched"
        time.sleep(0.05)


def test_databases_disposed_of_while_the_thread_checkpoints_them(tmp_path, monkeypatch):
    """Only the thread closes its connections: one closed by another thread in the middle of a checkpoint
    brought the process down (Python's sqlite3 module does not survive it)."""
    monkeypatch.setattr(sqlite_wal, "INTERVAL", 0.001)
    for i in range(100):
        db = Database(f"sqlite:///{tmp_path / f'churn{i % 5}.sqlite3'}")
        _commit_schema(db)
        db.dispose()
    assert sqlite_wal._thread.is_alive()
    # Every commit is there: each of the five databases took twenty.
    db = Database(f"sqlite:///{tmp_path / 'churn0.sqlite3'}")
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM rows")).scalar_one() == 20
    db.dispose()


def _commit_schema(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, value TEXT)"))
        connection.execute(text("INSERT INTO rows (value) VALUES ('x')"))


def test_one_thread_checkpoints_every_database(tmp_path):
    databases = [Database(f"sqlite:///{tmp_path / f'db{i}.sqlite3'}") for i in range(3)]
    for db in databases:
        with db.engine.connect():
            pass
    assert [t.name for t in threading.enumerate()].count("sqlite-wal-checkpoint") == 1
    for db in databases:
        db.dispose()


def test_a_failing_round_does_not_end_the_thread(database, monkeypatch, caplog):
    rounds = []
    real = sqlite_wal._round

    def failing_once():
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("simulated defect")
        real()

    monkeypatch.setattr(sqlite_wal, "_round", failing_once)
    deadline = time.monotonic() + 5
    while len(rounds) < 3:
        assert time.monotonic() < deadline, "the thread stopped after a failing round"
        time.sleep(0.02)
    assert sqlite_wal._thread.is_alive()
    assert "WAL checkpoint round failed" in caplog.text
