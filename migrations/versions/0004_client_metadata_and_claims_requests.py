"""client metadata and claims requests

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 01:25:48.784041
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('extra_metadata', idp.storage.db.JSONDict(), nullable=False, server_default='{}'))

    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claims_request', idp.storage.db.JSONDict(), nullable=False, server_default='{}'))



def downgrade() -> None:
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_column('claims_request')

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('extra_metadata')

