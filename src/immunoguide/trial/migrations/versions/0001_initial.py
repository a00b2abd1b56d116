"""Initial schema of the trial store (written by Alembic autogenerate from ``trial/models.py``, then reviewed).

Also writes the genesis row of the audit chain head (``audit_head``: seq 0, hash 64 zeros).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('allocation_lists',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('site', sa.String(length=32), nullable=False),
    sa.Column('stratum', sa.String(length=32), nullable=False),
    sa.Column('protocol', sa.String(length=64), nullable=False),
    sa.Column('n_slots', sa.Integer(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('imported_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_allocation_lists')),
    sa.UniqueConstraint('name', name=op.f('uq_allocation_lists_name')),
    sa.UniqueConstraint('site', 'stratum', name=op.f('uq_allocation_lists_site'))
    )
    audit_head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "hash": "0" * 64}])
    op.create_table('audit_log',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('table_name', sa.String(length=64), nullable=False),
    sa.Column('row_id', sa.String(length=64), nullable=True),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('payload_sha256', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('redacted_by', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('hash', name=op.f('uq_audit_log_hash'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_patient_id'), ['patient_id'], unique=False)

    op.create_table('patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=32), nullable=False),
    sa.Column('protocol', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('screened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('screened_by', sa.String(length=64), nullable=False),
    sa.Column('sepsis3_onset', sa.DateTime(timezone=True), nullable=True),
    sa.Column('covid19', sa.Boolean(), nullable=True),
    sa.Column('stratum', sa.String(length=32), nullable=True),
    sa.Column('screening_record', sa.JSON(), nullable=True),
    sa.Column('first_dose_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('data_removed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('code', name=op.f('uq_patients_code'))
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patients_site'), ['site'], unique=False)

    op.create_table('adverse_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('term', sa.String(length=128), nullable=False),
    sa.Column('onset_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('grade', sa.Integer(), nullable=False),
    sa.Column('serious', sa.Boolean(), nullable=False),
    sa.Column('relatedness', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('aware_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('initial_report_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('followup_report_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_adverse_events_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adverse_events'))
    )
    with op.batch_alter_table('adverse_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adverse_events_patient_id'), ['patient_id'], unique=False)

    op.create_table('allocation_slots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('list_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('block', sa.Integer(), nullable=False),
    sa.Column('block_size', sa.Integer(), nullable=False),
    sa.Column('arm', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('allocated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('allocated_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['list_id'], ['allocation_lists.id'], name=op.f('fk_allocation_slots_list_id_allocation_lists')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_allocation_slots_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_allocation_slots')),
    sa.UniqueConstraint('list_id', 'seq', name=op.f('uq_allocation_slots_list_id')),
    sa.UniqueConstraint('patient_id', name=op.f('uq_allocation_slots_patient_id'))
    )
    with op.batch_alter_table('allocation_slots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_allocation_slots_list_id'), ['list_id'], unique=False)

    op.create_table('classifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('classified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('classified_by', sa.String(length=64), nullable=False),
    sa.Column('protocol', sa.String(length=64), nullable=False),
    sa.Column('endotype', sa.String(length=32), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_classifications_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_classifications'))
    )
    with op.batch_alter_table('classifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_classifications_patient_id'), ['patient_id'], unique=False)

    op.create_table('consents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('given_by', sa.String(length=32), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_consents_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consents')),
    sa.UniqueConstraint('patient_id', name=op.f('uq_consents_patient_id'))
    )
    op.create_table('eligibility_evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('evaluated_by', sa.String(length=64), nullable=False),
    sa.Column('protocol', sa.String(length=64), nullable=False),
    sa.Column('eligible', sa.Boolean(), nullable=True),
    sa.Column('blocking', sa.JSON(), nullable=False),
    sa.Column('undetermined', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_eligibility_evaluations_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_eligibility_evaluations'))
    )
    with op.batch_alter_table('eligibility_evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eligibility_evaluations_patient_id'), ['patient_id'], unique=False)

    op.create_table('followups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('assessed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sofa_total', sa.Integer(), nullable=True),
    sa.Column('sofa_source', sa.String(length=16), nullable=True),
    sa.Column('sofa_detail', sa.JSON(), nullable=True),
    sa.Column('infection_assessment', sa.String(length=32), nullable=True),
    sa.Column('vital_status', sa.String(length=16), nullable=True),
    sa.Column('death_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_followups_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_followups')),
    sa.UniqueConstraint('patient_id', 'day', name=op.f('uq_followups_patient_id'))
    )
    with op.batch_alter_table('followups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_followups_patient_id'), ['patient_id'], unique=False)

    op.create_table('kits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kit_number', sa.String(length=32), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('route', sa.String(length=8), nullable=False),
    sa.Column('regimen', sa.String(length=64), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_kits_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kits')),
    sa.UniqueConstraint('kit_number', name=op.f('uq_kits_kit_number'))
    )
    with op.batch_alter_table('kits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kits_patient_id'), ['patient_id'], unique=False)

    op.create_table('lab_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('concept', sa.String(length=64), nullable=False),
    sa.Column('raw_value', sa.String(length=64), nullable=False),
    sa.Column('raw_unit', sa.String(length=32), nullable=False),
    sa.Column('value_lower', sa.Float(), nullable=True),
    sa.Column('value_upper', sa.Float(), nullable=True),
    sa.Column('lower_inclusive', sa.Boolean(), nullable=False),
    sa.Column('upper_inclusive', sa.Boolean(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=True),
    sa.Column('sample_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('receipt_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.String(length=128), nullable=True),
    sa.Column('entered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entered_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_lab_results_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lab_results'))
    )
    with op.batch_alter_table('lab_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lab_results_patient_id'), ['patient_id'], unique=False)

    op.create_table('unblindings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('unblinded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unblinded_by', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_unblindings_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unblindings'))
    )
    with op.batch_alter_table('unblindings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unblindings_patient_id'), ['patient_id'], unique=False)

    op.create_table('withdrawals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_by', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('data_removal', sa.Boolean(), nullable=False),
    sa.Column('removed', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_withdrawals_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_withdrawals')),
    sa.UniqueConstraint('patient_id', name=op.f('uq_withdrawals_patient_id'))
    )
    op.create_table('dose_administrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('kit_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('given_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['kit_id'], ['kits.id'], name=op.f('fk_dose_administrations_kit_id_kits')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_dose_administrations_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dose_administrations')),
    sa.UniqueConstraint('kit_id', 'number', name=op.f('uq_dose_administrations_kit_id'))
    )
    with op.batch_alter_table('dose_administrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dose_administrations_patient_id'), ['patient_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('dose_administrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dose_administrations_patient_id'))

    op.drop_table('dose_administrations')
    op.drop_table('withdrawals')
    with op.batch_alter_table('unblindings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unblindings_patient_id'))

    op.drop_table('unblindings')
    with op.batch_alter_table('lab_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lab_results_patient_id'))

    op.drop_table('lab_results')
    with op.batch_alter_table('kits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kits_patient_id'))

    op.drop_table('kits')
    with op.batch_alter_table('followups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_followups_patient_id'))

    op.drop_table('followups')
    with op.batch_alter_table('eligibility_evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eligibility_evaluations_patient_id'))

    op.drop_table('eligibility_evaluations')
    op.drop_table('consents')
    with op.batch_alter_table('classifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_classifications_patient_id'))

    op.drop_table('classifications')
    with op.batch_alter_table('allocation_slots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_allocation_slots_list_id'))

    op.drop_table('allocation_slots')
    with op.batch_alter_table('adverse_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adverse_events_patient_id'))

    op.drop_table('adverse_events')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_site'))

    op.drop_table('patients')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_patient_id'))

    op.drop_table('audit_log')
    op.drop_table('audit_head')
    op.drop_table('allocation_lists')
