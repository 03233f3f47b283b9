"""The schema: migrations match the models, go up and down, and the app refuses an old schema."""

from __future__ import annotations

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from idp.app import create_app
from idp.models import metadata
from idp.storage import migrations
from tests.conftest import _postgres_database


@pytest.fixture
def fresh_url(tmp_path):
    configured = os.environ.get("IDP_TEST_DATABASE_URL", "")
    if configured.startswith("postgresql"):
        yield from _postgres_database(configured)
    else:
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"


def test_head_matches_models(fresh_url):
    migrations.upgrade(fresh_url)
    engine = create_engine(fresh_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
    engine.dispose()
    diff = [d for d in diff if not (d[0] == "remove_index" and d[1].name in migrations.POSTGRES_ONLY_INDEXES)]
    assert diff == [], f"models and migrations differ; generate a revision: {diff}"


def test_upgrade_and_downgrade_round_trip(fresh_url):
    migrations.upgrade(fresh_url)
    engine = create_engine(fresh_url)
    assert {"identities", "clients", "token_families", "refresh_tokens"} <= set(inspect(engine).get_table_names())
    migrations.downgrade(fresh_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrations.upgrade(fresh_url)
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def test_app_refuses_to_start_on_an_outdated_schema(fresh_url, settings):
    with pytest.raises(migrations.SchemaOutOfDateError, match="idp db upgrade"):
        create_app(settings.with_(database_url=fresh_url))
    migrations.upgrade(fresh_url)
    app = create_app(settings.with_(database_url=fresh_url))
    app.extensions["idp"].db.dispose()
