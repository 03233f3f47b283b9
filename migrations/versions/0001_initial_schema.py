"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-29 01:02:43.432526
"""

from alembic import op
import sqlalchemy as sa
import idp.storage.db


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ephemeral_entries',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('consumed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_ephemeral_entries'))
    )
    with op.batch_alter_table('ephemeral_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ephemeral_entries_expires_at'), ['expires_at'], unique=False)

    op.create_table('identities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('email_normalized', sa.String(length=320), nullable=False),
    sa.Column('email_verified', sa.Boolean(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('given_name', sa.String(length=100), nullable=False),
    sa.Column('family_name', sa.String(length=100), nullable=False),
    sa.Column('locale', sa.String(length=10), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identities')),
    sa.UniqueConstraint('email_normalized', name=op.f('uq_identities_email_normalized'))
    )
    op.create_table('products',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_products'))
    )
    op.create_table('agreements',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('product_id', sa.String(length=64), nullable=False),
    sa.Column('require_second_factor', sa.Boolean(), nullable=False),
    sa.Column('closed', sa.Boolean(), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_agreements_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agreements')),
    sa.UniqueConstraint('number', name=op.f('uq_agreements_number'))
    )
    with op.batch_alter_table('agreements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agreements_product_id'), ['product_id'], unique=False)

    op.create_table('clients',
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('client_secret_hash', sa.String(length=64), nullable=True),
    sa.Column('client_name', sa.String(length=200), nullable=False),
    sa.Column('product_id', sa.String(length=64), nullable=True),
    sa.Column('application_type', sa.String(length=16), nullable=False),
    sa.Column('redirect_uris', idp.storage.db.JSONList(), nullable=False),
    sa.Column('post_logout_redirect_uris', idp.storage.db.JSONList(), nullable=False),
    sa.Column('grant_types', idp.storage.db.JSONList(), nullable=False),
    sa.Column('response_types', idp.storage.db.JSONList(), nullable=False),
    sa.Column('token_endpoint_auth_method', sa.String(length=40), nullable=False),
    sa.Column('scope', sa.String(length=1000), nullable=False),
    sa.Column('id_token_signed_response_alg', sa.String(length=10), nullable=False),
    sa.Column('first_party', sa.Boolean(), nullable=False),
    sa.Column('require_second_factor', sa.Boolean(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_clients_product_id_products')),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_clients'))
    )
    op.create_table('grants',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('identity_id', sa.String(length=36), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('scope', sa.String(length=1000), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], name=op.f('fk_grants_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_grants_identity_id_identities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grants')),
    sa.UniqueConstraint('identity_id', 'client_id', name='uq_grants_identity_client')
    )
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grants_client_id'), ['client_id'], unique=False)

    op.create_table('memberships',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('identity_id', sa.String(length=36), nullable=False),
    sa.Column('agreement_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('last_used_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agreement_id'], ['agreements.id'], name=op.f('fk_memberships_agreement_id_agreements'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_memberships_identity_id_identities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memberships')),
    sa.UniqueConstraint('identity_id', 'agreement_id', name='uq_memberships_identity_agreement')
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memberships_agreement_id'), ['agreement_id'], unique=False)
        batch_op.create_index('ix_memberships_identity_last_used', ['identity_id', 'last_used_at'], unique=False)

    op.create_table('token_families',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('identity_id', sa.String(length=36), nullable=True),
    sa.Column('scope', sa.String(length=1000), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('auth_time', sa.Integer(), nullable=True),
    sa.Column('acr', sa.String(length=100), nullable=True),
    sa.Column('amr', idp.storage.db.JSONList(), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], name=op.f('fk_token_families_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_token_families_identity_id_identities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_token_families'))
    )
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_token_families_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_token_families_identity_id'), ['identity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_token_families_sid'), ['sid'], unique=False)

    op.create_table('access_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=64), nullable=True),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('identity_id', sa.String(length=36), nullable=True),
    sa.Column('scope', sa.String(length=1000), nullable=False),
    sa.Column('expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['family_id'], ['token_families.id'], name=op.f('fk_access_tokens_family_id_token_families'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_access_tokens'))
    )
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_access_tokens_expires_at', ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_tokens_family_id'), ['family_id'], unique=False)

    op.create_table('refresh_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', idp.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['family_id'], ['token_families.id'], name=op.f('fk_refresh_tokens_family_id_token_families'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_refresh_tokens'))
    )
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refresh_tokens_family_id'), ['family_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_tokens_family_id'))

    op.drop_table('refresh_tokens')
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_tokens_family_id'))
        batch_op.drop_index('ix_access_tokens_expires_at')

    op.drop_table('access_tokens')
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_token_families_sid'))
        batch_op.drop_index(batch_op.f('ix_token_families_identity_id'))
        batch_op.drop_index(batch_op.f('ix_token_families_client_id'))

    op.drop_table('token_families')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index('ix_memberships_identity_last_used')
        batch_op.drop_index(batch_op.f('ix_memberships_agreement_id'))

    op.drop_table('memberships')
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grants_client_id'))

    op.drop_table('grants')
    op.drop_table('clients')
    with op.batch_alter_table('agreements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agreements_product_id'))

    op.drop_table('agreements')
    op.drop_table('products')
    op.drop_table('identities')
    with op.batch_alter_table('ephemeral_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ephemeral_entries_expires_at'))

    op.drop_table('ephemeral_entries')
