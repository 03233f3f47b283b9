"""Migration 0011: three indexes leave out the rows whose column is NULL, and still serve every look-up by a
value (a query's ``column = value`` implies ``column IS NOT NULL``), on the backend under test."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

_MIGRATION = pathlib.Path(__file__).resolve().parents[2] / "migrations/versions/0011_partial_token_and_audit_indexes.py"
_spec = importlib.util.spec_from_file_location("partial", _MIGRATION)
PARTIAL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(PARTIAL)

#: A look-up the app (or a foreign key's cascade) makes through each index.
LOOKUPS = {
    "ix_access_tokens_family_id": "SELECT jti FROM access_tokens WHERE family_id = 'f'",
    "ix_audit_events_agreement_time": "SELECT id FROM audit_events WHERE agreement_id = 'a' ORDER BY occurred_at DESC",
    "ix_audit_events_subject_time": "SELECT id FROM audit_events WHERE subject_id = 's' ORDER BY occurred_at DESC",
}


@pytest.mark.parametrize("name,table,columns,column", PARTIAL.PARTIAL)
def test_the_index_is_partial_and_serves_look_ups_by_value(runtime, name, table, columns, column):
    with runtime.db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            definition = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?",
                                                    (name,)).scalar_one()
            plan = " ".join(row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + LOOKUPS[name]))
        else:
            definition = connection.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE indexname = %(name)s",
                                                    {"name": name}).scalar_one()
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny tables: is the index usable at all?
            plan = " ".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + LOOKUPS[name]))
        assert f"{column} IS NOT NULL" in definition, definition
        assert name in plan, plan


def test_deleting_a_family_still_deletes_its_access_tokens(runtime, db, factory):
    """The foreign key's ON DELETE CASCADE finds a family's tokens through the partial index."""
    import datetime as dt

    from idp.grants.models import AccessToken, TokenFamily
    from idp.storage.db import utcnow

    client, _secret = factory.client()
    identity = factory.identity()
    family = TokenFamily(id="fam-partial", client_id=client.client_id, identity_id=identity.id, scope="openid",
                         amr=[], created_at=utcnow(), expires_at=utcnow() + dt.timedelta(hours=1))
    db.add(family)
    db.add_all([AccessToken(jti="in-family", family_id=family.id, client_id=client.client_id, scope="openid",
                            expires_at=utcnow() + dt.timedelta(hours=1)),
                AccessToken(jti="no-family", family_id=None, client_id=client.client_id, scope="",
                            expires_at=utcnow() + dt.timedelta(hours=1))])
    db.commit()
    db.delete(family)
    db.commit()
    db.expire_all()
    assert db.get(AccessToken, "in-family") is None
    assert db.get(AccessToken, "no-family") is not None
