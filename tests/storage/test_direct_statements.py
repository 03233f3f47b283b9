"""idp/storage/direct.py: Core statements run on the DBAPI connection, on the backend under test.

The token endpoint writes its rows this way; what its callers rely on is that the values stored are the ones
the ORM would store and read back, that a driver error is SQLAlchemy's exception (the app's handlers map those
to 503 and 400), that a statement never silently drops a column default, and that it runs in the caller's
transaction."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from sqlalchemy import exc, insert

from idp.audit.models import AuditEvent
from idp.storage.db import utcnow
from idp.storage.direct import DirectStatement

INSERT_EVENT = DirectStatement(insert(AuditEvent.__table__).inline())


def event_row(**changes) -> dict:
    row = dict(occurred_at=utcnow(), event="token.issued", actor="client:direct", subject_id=None, agreement_id=None,
               client_id=None, reason=secrets.token_hex(8), ip="192.0.2.1", user_agent=None,
               details={"with_refresh": False})
    row.update(changes)
    return row


def stored(db, reason: str) -> AuditEvent | None:
    db.expire_all()
    return db.query(AuditEvent).filter_by(reason=reason).one_or_none()


def test_values_read_back_as_the_orm_wrote_them(runtime, db):
    when = dt.datetime(2026, 11, 29, 9, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    row = event_row(occurred_at=when, details={"nested": {"a": [1, 2]}, "æøå": "ok"})
    with runtime.db.engine.begin() as connection:
        assert INSERT_EVENT.execute(connection, row) == 1
    event = stored(db, row["reason"])
    assert event.occurred_at == when and event.occurred_at.tzinfo is not None
    assert event.details == {"nested": {"a": [1, 2]}, "æøå": "ok"} and event.ip == "192.0.2.1"


def test_it_runs_in_the_callers_transaction(runtime, db):
    row = event_row()
    with runtime.db.engine.connect() as connection:
        with connection.begin() as transaction:
            INSERT_EVENT.execute(connection, row)
            transaction.rollback()
    assert stored(db, row["reason"]) is None


def test_a_driver_error_is_sqlalchemys(runtime, db):
    with pytest.raises(exc.IntegrityError):
        with runtime.db.engine.begin() as connection:
            INSERT_EVENT.execute(connection, event_row(event=None))  # NOT NULL


def test_a_column_default_is_never_silently_dropped(runtime):
    row = event_row()
    del row["details"]  # has a Python-side default (dict) that only SQLAlchemy's execution would compute
    with runtime.db.engine.begin() as connection:
        with pytest.raises(ValueError, match="details"):
            INSERT_EVENT.execute(connection, row)


def test_a_read_returns_the_row_by_column_name_with_types_restored(runtime):
    from sqlalchemy import bindparam, select

    table = AuditEvent.__table__
    read = DirectStatement(select(table.c.occurred_at, table.c.details, table.c.ip.label("address"))
                           .where(table.c.reason == bindparam("reason")))
    when = dt.datetime(2026, 11, 29, 8, 0, 0, 5, tzinfo=dt.timezone.utc)
    row = event_row(occurred_at=when, details={"with_refresh": True})
    with runtime.db.engine.begin() as connection:
        INSERT_EVENT.execute(connection, row)
    assert runtime.db.read(read, {"reason": row["reason"]}) == {
        "occurred_at": when, "details": {"with_refresh": True}, "address": "192.0.2.1"}
    assert runtime.db.read(read, {"reason": "no-such-event"}) is None


def test_a_row_reads_back_as_sqlalchemy_reads_it(runtime, db):
    from sqlalchemy import bindparam, select

    table = AuditEvent.__table__
    read = DirectStatement(select(table.c.occurred_at, table.c.details, table.c.subject_id, table.c.user_agent)
                           .where(table.c.reason == bindparam("reason")))
    row = event_row()  # subject_id and user_agent NULL
    with runtime.db.engine.begin() as connection:
        INSERT_EVENT.execute(connection, row)
    with runtime.db.engine.connect() as connection:
        expected = dict(connection.execute(read.statement, {"reason": row["reason"]}).one()._mapping)
    assert runtime.db.read(read, {"reason": row["reason"]}) == expected
    assert expected["subject_id"] is None and expected["details"] == {"with_refresh": False}


def _read_reason():
    from sqlalchemy import bindparam, select

    table = AuditEvent.__table__
    return DirectStatement(select(table.c.reason).where(table.c.reason == bindparam("reason")))


def in_a_thread_of_its_own(work) -> None:
    """Run ``work`` in a thread Python starts, as a thread-per-request server would (its end returns what it
    held: see ``_long_lived``); its exception is raised here."""
    import threading

    failures = []

    def run():
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


class Checkouts:
    """Counts pool check-outs on both of a database's engines while in use."""

    def __init__(self, database):
        self.engines = {database.engine, database.autocommit_engine}
        self.count = 0

    def _listener(self, *_args):
        self.count += 1

    def checked_out(self) -> list[int]:
        return [engine.pool.checkedout() for engine in self.engines]

    def __enter__(self):
        from sqlalchemy import event

        for engine in self.engines:
            event.listen(engine, "checkout", self._listener)
        return self

    def __exit__(self, *_exc):
        from sqlalchemy import event

        for engine in self.engines:
            event.remove(engine, "checkout", self._listener)


def test_a_requests_reads_share_one_connection_which_its_end_returns(runtime):
    in_a_thread_of_its_own(lambda: _reads_share_one_connection(runtime))


def _reads_share_one_connection(runtime):
    database, read = runtime.db, _read_reason()
    database.remove()
    with Checkouts(database) as checkouts:
        before = checkouts.checked_out()
        for _ in range(3):
            assert database.read(read, {"reason": "nothing"}) is None
        with database.own_transaction(held=True) as connection:  # a token response's rows
            INSERT_EVENT.execute(connection, event_row())
        assert database.read(read, {"reason": "nothing"}) is None
        assert checkouts.count == 1
        database.remove()
        assert checkouts.checked_out() == before


def test_postgresql_reads_stay_in_autocommit_on_connections_that_are_never_switched(runtime):
    from sqlalchemy import event

    database, read = runtime.db, _read_reason()
    if database.engine.dialect.name == "sqlite":
        assert database.autocommit_engine is database.engine
        return
    switched = []
    listener = lambda *_args: switched.append(1)  # noqa: E731
    event.listen(database.autocommit_engine, "set_connection_execution_options", listener)
    try:
        database.read(read, {"reason": "nothing"})
        assert database._local.reader.connection.dbapi_connection.autocommit is True
        assert database.autocommit_engine.pool is not database.engine.pool
        assert switched == []
    finally:
        database.remove()
        event.remove(database.autocommit_engine, "set_connection_execution_options", listener)


def test_a_held_reader_sees_what_others_commit_meanwhile(runtime):
    database, read = runtime.db, _read_reason()
    row = event_row()
    try:
        assert database.read(read, {"reason": row["reason"]}) is None
        with database.engine.begin() as connection:  # another request's commit
            INSERT_EVENT.execute(connection, row)
        assert database.read(read, {"reason": row["reason"]}) == {"reason": row["reason"]}
    finally:
        database.remove()


def test_the_sql_stores_operations_in_a_request_share_its_connection_and_never_commit_its_transaction(runtime):
    """A sign-in page reads the browser session and writes an interaction or a code: one pool check-out for all
    of it. A store write while the request's unit of work (its ORM session) is open commits only itself."""
    in_a_thread_of_its_own(lambda: _store_shares_the_connection(runtime))


def _store_shares_the_connection(runtime):
    from idp.storage.ephemeral import SQLStore

    database = runtime.db
    database.remove()
    store = SQLStore(database, held=lambda: True)
    with Checkouts(database) as checkouts:
        before = checkouts.checked_out()
        key = secrets.token_hex(8)
        assert store.get("session", key) is None
        store.put("code", key, {"n": 1}, 60)
        assert store.consume("code", key).first is True
        assert store.consume("code", key).first is False
        assert store.incr("counter", key, 60) == 1
        assert checkouts.count == 1
        row = event_row()
        connection = database.session.connection()  # the request's unit of work, on a connection of its own
        if connection.dialect.name == "sqlite":
            # One writer at a time: the store cannot write while the request's transaction holds the write lock, so
            # here the request has read only; the store still reads on the connection it holds.
            assert store.get("code", key) is None
            assert checkouts.count == 2
        else:
            INSERT_EVENT.execute(connection, row)  # not committed yet
            store.put("code", key + "-2", {"n": 2}, 60)  # on the held connection, in autocommit: committed
            assert store.get("code", key + "-2") == {"n": 2}
        database.remove()  # the request ends without committing
        assert checkouts.checked_out() == before
        assert database.read(_read_reason(), {"reason": row["reason"]}) is None
        if connection.dialect.name != "sqlite":
            assert store.get("code", key + "-2") == {"n": 2}
        database.remove()


def test_a_long_lived_thread_keeps_its_connection_for_its_next_requests(runtime):
    """The main thread (a sync worker's) and a server's own threads (granian's) serve request after request:
    they keep the reading connection instead of a pool check-out and check-in per request, and a token request
    writes on it too."""
    from idp.storage.ephemeral import SQLStore

    database, read = runtime.db, _read_reason()
    store = SQLStore(database, held=lambda: True)
    database.read(read, {"reason": "nothing"})
    database.remove()  # the end of one request
    with Checkouts(database) as checkouts:
        before = checkouts.checked_out()
        for _ in range(3):  # three more requests
            key = secrets.token_hex(8)
            assert database.read(read, {"reason": "nothing"}) is None
            store.put("code", key, {"n": 1}, 60)
            assert store.consume("code", key).first is True
            row = event_row()
            with database.own_transaction(held=True) as connection:
                INSERT_EVENT.execute(connection, row)
            database.remove()
            assert database.read(read, {"reason": row["reason"]}) == {"reason": row["reason"]}
            database.remove()
        assert checkouts.count == 0
        assert checkouts.checked_out() == before


def test_a_kept_connection_idle_for_long_is_checked_and_replaced_if_the_server_is_gone(runtime, monkeypatch):
    from idp.storage import db as db_module

    database, read = runtime.db, _read_reason()
    database.read(read, {"reason": "nothing"})
    database.remove()
    kept = database._local.reader
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.0)
    if database.engine.dialect.name == "sqlite":
        # A file, not a server: nothing to ask.
        assert database.read(read, {"reason": "nothing"}) is None and database._local.reader is kept
        database.remove()
        return
    pid = kept.connection.dbapi_connection.info.backend_pid
    with database.autocommit_engine.connect() as other:
        other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    with Checkouts(database) as checkouts:
        assert database.read(read, {"reason": "nothing"}) is None  # no error: a fresh connection answered
        assert checkouts.count == 1 and database._local.reader is not kept and kept.closed
    database.remove()


def test_a_forked_child_leaves_its_parents_connection_alone(runtime):
    from idp.storage import db as db_module

    database, read = runtime.db, _read_reason()
    database.read(read, {"reason": "nothing"})  # forked in the middle of a request, or after it (below)
    in_use = database._local.reader
    db_module._after_fork()
    database.read(read, {"reason": "nothing"})
    assert database._local.reader is not in_use and in_use in db_module._forsaken and not in_use.closed
    db_module._forsaken.remove(in_use)
    in_use.close()
    database.remove()
    parents = database._local.reader
    db_module._after_fork()  # as os.register_at_fork runs it in a child
    try:
        assert database.read(read, {"reason": "nothing"}) is None
        assert database._local.reader is not parents
        # Not closed (closing would end the parent's session on the shared socket), and kept from collection.
        assert not parents.closed and parents in db_module._forsaken
    finally:
        database.remove()
        db_module._forsaken.remove(parents)
        parents.close()
