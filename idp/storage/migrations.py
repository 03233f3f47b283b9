"""Alembic, driven from code: upgrade, and the boot-time check that the schema is current."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from ..settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


#: Indexes only PostgreSQL has (trigram search); the models leave them out, so
#: comparing models with the schema ignores them.
POSTGRES_ONLY_INDEXES = ("ix_agreements_name_trgm", "ix_agreements_number_pattern", "ix_memberships_identity_recent")


class SchemaOutOfDateError(RuntimeError):
    pass


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a % in a password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def check_current(engine: Engine) -> None:
    """Raise SchemaOutOfDateError, naming the fix, unless the schema is at head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDateError(
            f"The database schema is at {current or 'nothing (empty database)'} but this version of "
            f"Connect IdP needs {head}. Run `idp db upgrade` and start again."
        )
