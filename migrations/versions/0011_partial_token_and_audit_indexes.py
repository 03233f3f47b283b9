"""partial indexes for token families and audit subjects

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 15:55:00

A client_credentials token has no family, and its audit row neither a subject nor an agreement: those rows
are never looked up through these indexes, and leaving them out saves three index insertions per token
(bench/README.md). Every query on these columns compares them with a value, which implies IS NOT NULL, so
the partial indexes serve them (tests/migrations/test_partial_indexes.py checks the plans).
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

#: (index, table, columns, the column that is NULL in the rows left out)
PARTIAL = (
    ("ix_access_tokens_family_id", "access_tokens", ["family_id"], "family_id"),
    ("ix_audit_events_agreement_time", "audit_events", ["agreement_id", "occurred_at"], "agreement_id"),
    ("ix_audit_events_subject_time", "audit_events", ["subject_id", "occurred_at"], "subject_id"),
)


def upgrade() -> None:
    for name, table, columns, column in PARTIAL:
        op.drop_index(name, table_name=table)
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, table, columns, _column in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
