"""The PostgreSQL pool: a connection that died while idle is replaced before a request gets it."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import create_engine, text

from idp.storage import db as db_module
from tests.conftest import _postgres_database


@pytest.fixture
def pg_url(database_url):
    if database_url.startswith("postgresql"):
        yield database_url
    elif os.environ.get("CI") == "true":
        # CI's SQLite pass too: PostgreSQL is there, and a missing one fails this test instead of skipping it.
        yield from _postgres_database("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    else:
        pytest.skip("no PostgreSQL configured: set IDP_TEST_DATABASE_URL (CI runs this in both passes)")


def _backend_pid(engine):
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_killed_while_idle_is_replaced_transparently(pg_url):
    engine = db_module.make_engine(pg_url)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        first = _backend_pid(engine)
        # As a database restart or a proxy's idle timeout would: the server ends the pooled connection.
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
        time.sleep(db_module.IDLE_PING_SECONDS + 0.2)
        # No error reaches the caller: the checkout's ping failed and the pool opened a new connection.
        second = _backend_pid(engine)
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


def test_postgresql_ends_a_statement_whose_client_is_gone(pg_url):
    """Both engines ask the server to check, while a statement runs, that the client is still there: a token
    response's single statement in autocommit must not commit after its worker died (tests/faults/
    test_worker_kill.py shows it end to end)."""
    for engine in (db_module.make_engine(pg_url), db_module.make_engine(pg_url, autocommit=True)):
        try:
            for _ in range(2):  # a new connection, then the pooled one after the pool's reset
                with engine.connect() as connection:
                    assert connection.execute(text("SHOW client_connection_check_interval")).scalar_one() \
                        == f"{db_module.CLIENT_CHECK_MS}ms"
        finally:
            engine.dispose()


def test_the_connection_that_wrote_last_is_handed_out_next(tmp_path):
    """SQLite drops a connection's page cache when another connection wrote since its last transaction; with
    the pool handing out the most recently returned connection, the writer keeps its cache (LIFO)."""
    engine = db_module.make_engine(f"sqlite:///{tmp_path / 'lifo.sqlite3'}")
    try:
        first, second = engine.connect(), engine.connect()
        first_dbapi, second_dbapi = first.connection.dbapi_connection, second.connection.dbapi_connection
        first.close()
        second.close()  # returned last
        with engine.begin() as connection:
            assert connection.connection.dbapi_connection is second_dbapi
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
        with engine.connect() as connection:
            assert connection.connection.dbapi_connection is second_dbapi
        assert first_dbapi is not second_dbapi
    finally:
        engine.dispose()
