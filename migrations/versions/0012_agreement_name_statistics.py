"""a finer histogram for the agreement name search

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 04:45:00

PostgreSQL estimates how many agreements a name fragment (``lower(name) LIKE '%bakery%'``) matches by trying
the pattern on the histogram of the trigram index's expression. At the default statistics target that is 99
inner bounds: a fragment that none of them happens to contain is estimated at the planner's floor (one row in
10,000), though it may match one name in twenty. Believing it rare, the planner then probes the person's
memberships once per matching agreement of the whole table instead of hashing them (bench/README.md: 5,032
probes and 42-69 ms for "bakery" with 100,000 agreements, against 17-28 ms hashed). A thousand bounds resolve
fragments down to about one name in a thousand. ANALYZE applies it now rather than at autovacuum's next visit.
"""

from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

#: Histogram bounds for ``lower(name)`` (PostgreSQL's default statistics target is 100).
NAME_STATISTICS = 1000


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX ix_agreements_name_trgm ALTER COLUMN 1 SET STATISTICS {NAME_STATISTICS}")
        op.execute("ANALYZE agreements")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_agreements_name_trgm ALTER COLUMN 1 SET STATISTICS -1")
