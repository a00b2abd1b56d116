"""Safety monitoring: structured safety labs, CTCAE coding of adverse events, pending biomarker orders, store clock.

Self-contained (only new tables; no column of an existing table changes, so the audit trail of an upgraded store
still matches its rows):

* ``safety_lab_results``    safety laboratory results with the lab's LLN/ULN and the CTCAE v5.0 grade;
* ``adverse_event_codings`` the CTCAE v5.0 term and MedDRA code of each adverse event (one per AE);
* ``lab_orders``            biomarker samples drawn whose result is pending;
* ``store_clock``           the simulated clock of a simulation store (a real store's clock is the system clock:
  :mod:`immunoguide.trial.clock` ignores the table there).

Revision ID: 0004
Revises: 0003 (0003_trial_integrity)
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('adverse_event_codings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ae_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('ctcae_term', sa.String(length=128), nullable=False),
    sa.Column('meddra_code', sa.String(length=16), nullable=True),
    sa.Column('soc', sa.String(length=128), nullable=False),
    sa.Column('criteria', sa.String(length=64), nullable=False),
    sa.Column('coded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('coded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['ae_id'], ['adverse_events.id'], name=op.f('fk_adverse_event_codings_ae_id_adverse_events')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_adverse_event_codings_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adverse_event_codings')),
    sa.UniqueConstraint('ae_id', name=op.f('uq_adverse_event_codings_ae_id'))
    )
    with op.batch_alter_table('adverse_event_codings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adverse_event_codings_patient_id'), ['patient_id'], unique=False)

    op.create_table('safety_lab_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('analyte', sa.String(length=32), nullable=False),
    sa.Column('concept', sa.String(length=64), nullable=False),
    sa.Column('raw_value', sa.String(length=64), nullable=False),
    sa.Column('raw_unit', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('lln', sa.Float(), nullable=True),
    sa.Column('uln', sa.Float(), nullable=True),
    sa.Column('sample_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('result_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('study_day', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=128), nullable=True),
    sa.Column('ctcae_term', sa.String(length=128), nullable=False),
    sa.Column('meddra_code', sa.String(length=16), nullable=True),
    sa.Column('grade', sa.Integer(), nullable=True),
    sa.Column('grade_reason', sa.Text(), nullable=False),
    sa.Column('criteria', sa.String(length=64), nullable=False),
    sa.Column('entered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entered_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_safety_lab_results_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_safety_lab_results'))
    )
    with op.batch_alter_table('safety_lab_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_safety_lab_results_patient_id'), ['patient_id'], unique=False)

    op.create_table('lab_orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('analyte', sa.String(length=32), nullable=False),
    sa.Column('concept', sa.String(length=64), nullable=False),
    sa.Column('sample_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=True),
    sa.Column('method', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=True),
    sa.Column('ordered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ordered_by', sa.String(length=64), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_lab_orders_patient_id_patients')),
    sa.ForeignKeyConstraint(['result_id'], ['lab_results.id'], name=op.f('fk_lab_orders_result_id_lab_results')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lab_orders'))
    )
    with op.batch_alter_table('lab_orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lab_orders_patient_id'), ['patient_id'], unique=False)

    op.create_table('store_clock',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('simulated_epoch', sa.DateTime(timezone=True), nullable=True),
    sa.Column('wall_epoch', sa.DateTime(timezone=True), nullable=True),
    sa.Column('frozen', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('set_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_store_clock'))
    )


def downgrade() -> None:
    op.drop_table('store_clock')
    with op.batch_alter_table('lab_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lab_orders_patient_id'))
    op.drop_table('lab_orders')
    with op.batch_alter_table('safety_lab_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_safety_lab_results_patient_id'))
    op.drop_table('safety_lab_results')
    with op.batch_alter_table('adverse_event_codings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adverse_event_codings_patient_id'))
    op.drop_table('adverse_event_codings')
