"""Fixtures: one database and app per test run, unique data per test.

The backend comes from the environment, so the same suite runs on the embedded
default and on production parts:
  IDP_TEST_DATABASE_URL  unset: a SQLite file in a temp dir; a PostgreSQL URL:
                         a fresh database is created beside it for this run
  IDP_TEST_REDIS_URL     unset: no Redis (database fallback); set: Redis with a
                         key prefix unique to this run
Tests never share rows: factories make fresh identities and clients, so no
test depends on another's leftovers and nothing needs rolling back.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from idp.app import create_app
from idp.settings import Settings
from idp.storage import migrations

ISSUER = "https://idp.test"


def _postgres_database(base_url: str):
    """Create a throw-away database on the server of ``base_url``; yield its URL."""
    url = make_url(base_url)
    name = f"idp_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    configured = os.environ.get("IDP_TEST_DATABASE_URL", "")
    if configured.startswith("postgresql"):
        yield from _postgres_database(configured)
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'idp.sqlite3'}"


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("IDP_TEST_REDIS_URL", "")
    if url:
        import redis

        # Fail loudly when the configured Redis is missing: never skip.
        redis.Redis.from_url(url).ping()
    return url


@pytest.fixture(scope="session")
def settings(database_url, redis_url, tmp_path_factory) -> Settings:
    return Settings(
        env="test",
        issuer=ISSUER,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"idp-test-{uuid.uuid4().hex[:8]}:",
        secret_key="test-secret-key-" + "x" * 32,
        keys_dir=Path(tmp_path_factory.mktemp("keys")),
        # Cheap hashes keep the suite fast; production parameters are the defaults.
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        argon2_parallelism=1,
        # Every request of the suite comes from 127.0.0.1: per-IP limits would
        # trip across unrelated tests. Tests of the limits build their own app.
        rate_limit_factor=1000.0,
        login_ip_lock_after=100_000,
    )


@pytest.fixture(scope="session")
def app(settings):
    migrations.upgrade(settings.database_url)
    application = create_app(settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app):
    return app.extensions["idp"]


@pytest.fixture
def db(app):
    """A database session of the test's own, outside any app context, so each
    request the test makes still gets a fresh context (and ``flask.g``)."""
    session = app.extensions["idp"].db.session_factory()
    yield session
    session.close()


@pytest.fixture
def factory(app, db):
    from tests.helpers.factories import Factory

    return Factory(app, db)


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 (see tests/helpers/smtp.py)."""
    from tests.helpers.smtp import SmtpServer

    with SmtpServer() as server:
        yield server
