"""Trial integrity (issue 14): sealed allocation lists, a keyed audit chain with system time and reason, store config.

Adds (all nullable, so a revision-0002 store upgrades in place and keeps every row):

* ``store_config`` — one row written by ``immunoguide trial init`` (not by this migration: it needs the trial key):
  mode (real / simulation), the trial key's id, creation time, trial start, clock tolerance, late-entry limit, the
  first keyed audit entry, and its MAC;
* ``audit_log.system_at`` (the database server's clock at commit), ``audit_log.reason`` (why), ``audit_log.mac``
  (HMAC of the entry's hash under the trial key) and the index ``ix_audit_log_table_row`` (table, row id);
* ``audit_head.mac``;
* ``allocation_lists.list_mac``; ``allocation_slots.arm_mac`` (keyed commitment to the arm).

Makes nullable the columns a sealed store no longer fills (legacy plaintext of revision 0002):
``allocation_slots.arm``, ``block``, ``block_size``, ``allocation_lists.content_sha256``, ``file_sha256`` and
``kits.regimen``. Their values stay until ``trial init`` seals the store with the key. A downgrade is possible only
before that (the legacy columns become NOT NULL again).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('store_config',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trial_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clock_tolerance_s', sa.Integer(), nullable=False),
    sa.Column('late_entry_after_h', sa.Float(), nullable=False),
    sa.Column('keyed_from_seq', sa.Integer(), nullable=False),
    sa.Column('mac', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_store_config'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('system_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_audit_log_table_row', ['table_name', 'row_id'], unique=False)
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))
    with op.batch_alter_table('allocation_lists', schema=None) as batch_op:
        batch_op.add_column(sa.Column('list_mac', sa.String(length=64), nullable=True))
        batch_op.alter_column('file_sha256', existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column('content_sha256', existing_type=sa.String(length=64), nullable=True)
    with op.batch_alter_table('allocation_slots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('arm_mac', sa.String(length=64), nullable=True))
        batch_op.alter_column('block', existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column('block_size', existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column('arm', existing_type=sa.String(length=64), nullable=True)
    with op.batch_alter_table('kits', schema=None) as batch_op:
        batch_op.alter_column('regimen', existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('kits', schema=None) as batch_op:
        batch_op.alter_column('regimen', existing_type=sa.String(length=64), nullable=False)
    with op.batch_alter_table('allocation_slots', schema=None) as batch_op:
        batch_op.alter_column('arm', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('block_size', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('block', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('arm_mac')
    with op.batch_alter_table('allocation_lists', schema=None) as batch_op:
        batch_op.alter_column('content_sha256', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('file_sha256', existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column('list_mac')
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.drop_column('mac')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_table_row')
        batch_op.drop_column('mac')
        batch_op.drop_column('reason')
        batch_op.drop_column('system_at')
    op.drop_table('store_config')
