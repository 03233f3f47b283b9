"""agreements in tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 01:13:07.792627
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agreements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_registrants_mobile_only', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mobile_app', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agreement_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_token_families_agreement_id'), ['agreement_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_token_families_agreement_id_agreements'), 'agreements', ['agreement_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_token_families_agreement_id_agreements'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_token_families_agreement_id'))
        batch_op.drop_column('agreement_id')

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('mobile_app')

    with op.batch_alter_table('agreements', schema=None) as batch_op:
        batch_op.drop_column('time_registrants_mobile_only')

