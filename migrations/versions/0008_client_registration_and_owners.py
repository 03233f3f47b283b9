"""client registration and owners

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 01:46:07.527991
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('initial_access_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('product_id', sa.String(length=64), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_initial_access_tokens_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_initial_access_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_initial_access_tokens_token_hash'))
    )
    op.create_table('client_owners',
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('identity_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], name=op.f('fk_client_owners_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_client_owners_identity_id_identities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id', 'identity_id', name=op.f('pk_client_owners'))
    )
    with op.batch_alter_table('client_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_client_owners_identity_id'), ['identity_id'], unique=False)

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('registration_access_token_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('previous_secret_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('previous_secret_expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('previous_secret_expires_at')
        batch_op.drop_column('previous_secret_hash')
        batch_op.drop_column('registration_access_token_hash')

    with op.batch_alter_table('client_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_client_owners_identity_id'))

    op.drop_table('client_owners')
    op.drop_table('initial_access_tokens')
