"""agreement search indexes

Revision ID: 0009b
Revises: 0009
Create Date: 2026-11-29 02:04:05.621153
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0009b'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The chooser's "most recent first" order, straight from an index.
        op.execute("CREATE INDEX ix_memberships_identity_recent ON memberships "
                   "(identity_id, last_used_at DESC NULLS LAST)")
        # Searching a bookkeeper's agreements by name fragment or number prefix
        # must not scan every agreement (bench/README.md): trigram and pattern indexes.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_agreements_name_trgm ON agreements USING gin (lower(name) gin_trgm_ops)")
        op.execute("CREATE INDEX ix_agreements_number_pattern ON agreements (number varchar_pattern_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_agreements_number_pattern")
        op.execute("DROP INDEX IF EXISTS ix_agreements_name_trgm")
        op.execute("DROP INDEX IF EXISTS ix_memberships_identity_recent")

