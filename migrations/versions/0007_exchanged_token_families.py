"""exchanged token families

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 01:42:45.663873
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_token_families_parent_id'), ['parent_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_token_families_parent_id_token_families'), 'token_families', ['parent_id'], ['id'], ondelete='CASCADE')



def downgrade() -> None:
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_token_families_parent_id_token_families'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_token_families_parent_id'))
        batch_op.drop_column('parent_id')

