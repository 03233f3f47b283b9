"""logout deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 01:33:02.948123
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('logout_deliveries',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('uri', sa.String(length=2000), nullable=False),
    sa.Column('logout_token', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], name=op.f('fk_logout_deliveries_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_logout_deliveries'))
    )
    with op.batch_alter_table('logout_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_logout_deliveries_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_logout_deliveries_delivered_at'), ['delivered_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('logout_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_logout_deliveries_delivered_at'))
        batch_op.drop_index(batch_op.f('ix_logout_deliveries_client_id'))

    op.drop_table('logout_deliveries')
