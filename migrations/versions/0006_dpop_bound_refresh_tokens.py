"""dpop bound refresh tokens

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 01:40:45.869559
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')

