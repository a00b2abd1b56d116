"""The REST service's accounts move into the trial store's schema (``service_users``, ``service_tokens``).

Until this revision the service created both tables itself (``metadata.create_all`` in ``service/auth.py``);
a database that already has them keeps them as they are (same columns), every other database gets them here.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if 'service_users' not in existing:
        op.create_table('service_users',
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('password_hash', sa.String(length=255), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=False),
        sa.Column('site', sa.String(length=32), nullable=True),
        sa.Column('demo', sa.Boolean(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('username', name=op.f('pk_service_users'))
        )
    if 'service_tokens' not in existing:
        op.create_table('service_tokens',
        sa.Column('token_hmac', sa.String(length=64), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['username'], ['service_users.username'],
                                name=op.f('fk_service_tokens_username_service_users')),
        sa.PrimaryKeyConstraint('token_hmac', name=op.f('pk_service_tokens'))
        )
        with op.batch_alter_table('service_tokens', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_service_tokens_username'), ['username'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('service_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_tokens_username'))
    op.drop_table('service_tokens')
    op.drop_table('service_users')
