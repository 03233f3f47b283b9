"""legacy users and invitations

Revision ID: 0010
Revises: 0009b
Create Date: 2026-11-29 02:01:12.824973
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0010'
down_revision = '0009b'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('invitations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('agreement_id', sa.String(length=36), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('email_normalized', sa.String(length=320), nullable=False),
    sa.Column('role', sa.String(length=32), server_default='user', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('invited_by', sa.String(length=36), nullable=True),
    sa.Column('sent_count', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('accepted_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('accepted_by', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['accepted_by'], ['identities.id'], name=op.f('fk_invitations_accepted_by_identities'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['agreement_id'], ['agreements.id'], name=op.f('fk_invitations_agreement_id_agreements'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['invited_by'], ['identities.id'], name=op.f('fk_invitations_invited_by_identities'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_invitations_token_hash'))
    )
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_index('ix_invitations_agreement_status', ['agreement_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_invitations_email_normalized'), ['email_normalized'], unique=False)

    op.create_table('legacy_users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('agreement_id', sa.String(length=36), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('username_normalized', sa.String(length=100), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('role', sa.String(length=32), server_default='user', nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('activated_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('identity_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agreement_id'], ['agreements.id'], name=op.f('fk_legacy_users_agreement_id_agreements'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_legacy_users_identity_id_identities'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legacy_users')),
    sa.UniqueConstraint('agreement_id', 'username_normalized', name='uq_legacy_users_agreement_username')
    )
    with op.batch_alter_table('legacy_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_legacy_users_agreement_id'), ['agreement_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_legacy_users_identity_id'), ['identity_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('legacy_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_legacy_users_identity_id'))
        batch_op.drop_index(batch_op.f('ix_legacy_users_agreement_id'))

    op.drop_table('legacy_users')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invitations_email_normalized'))
        batch_op.drop_index('ix_invitations_agreement_status')

    op.drop_table('invitations')
