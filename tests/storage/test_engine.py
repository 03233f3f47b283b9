"""The PostgreSQL pool: a connection that died while idle is replaced before a request gets it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from idp.storage import db as db_module


@pytest.fixture
def pg_url(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the SQLite pass: the pool's ping is for PostgreSQL (the PostgreSQL pass runs this)")
    return database_url


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
