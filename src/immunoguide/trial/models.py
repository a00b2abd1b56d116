"""The trial store's tables (SQLAlchemy 2 typed ORM); ``trial/`` is the only owner of this schema.

Every time is stored in UTC (:class:`UTCDateTime`: timezone-aware on PostgreSQL, naive UTC on SQLite, always
returned timezone-aware) so that a row reads back identically on both backends — the audit trail compares rows
byte for byte through :func:`immunoguide.trial.audit.row_image`. Columns carry units in their names
(``value_lower`` is in the canonical unit of ``concept``, e.g. ng/mL for ``ferritin_ng_per_ml``).

Tables (one line each; the data dictionary of :mod:`immunoguide.trial.export` repeats them with every column):

``patients``               one row per screened patient (kept as a tombstone after a withdrawal with data removal)
``eligibility_evaluations`` the screening log: every evaluation of the protocol's eligibility, with its evidence
``consents``               informed consent (patient, first-degree relative or spouse; or refused)
``lab_results``            ferritin / mHLA-DR results with assay method and sample, receipt and result times
``classifications``        baseline immune classification (endotype = randomisation stratum) with its evidence
``allocation_lists``       imported (sealed) allocation lists, one per site and stratum, with their keyed MAC
``allocation_slots``       the slots of each list, in order: a keyed commitment to the arm (``arm_mac``), never the
                           arm; ``patient_id`` is set once the slot is taken
``kits``                   the IV and SC kit of each randomised patient (the content follows from the sealed arm)
``dose_administrations``   doses given from a kit
``followups``              visit-day assessments: SOFA, infection assessment (day 15), vital status (days 28, 90)
``adverse_events``         AEs with CTCAE grade, seriousness, relatedness, outcome and SAE report times
``unblindings``            emergency unblinding of one patient: who, when, why
``withdrawals``            withdrawal, with or without removal of the patient's data
``safety_lab_results``     safety laboratory results (haemoglobin, platelets, …) with the lab's LLN/ULN and CTCAE grade
``adverse_event_codings``  the CTCAE v5.0 term and MedDRA code each adverse event is coded to (verbatim term in the AE)
``lab_orders``             biomarker samples drawn whose result is pending (turnaround against the protocol window)
``audit_log``              append-only, hash-chained and keyed (MAC) record of every write; ``audit_head`` is its tip
``store_config``           one row: real or simulation store, the trial key's id, clock tolerance, trial start (MAC'd)
``store_clock``            a simulation store's simulated clock (ignored on a real store, whose clock is the system's)
``service_users``          accounts (role, site, salted scrypt hash); every change is in the audit trail
``service_tokens``         HMAC digests of login tokens with their expiry (not audited: short-lived credentials)

Columns marked *legacy* (``allocation_slots.arm``, ``block``, ``block_size``, ``allocation_lists.content_sha256``,
``file_sha256`` of a plaintext list, ``kits.regimen``) were written by revision 0002 stores; ``immunoguide trial
init`` seals such a store with the trial key (arms moved into ``arm_mac``, the legacy values set to NULL and their
audit payloads redacted), after which they are always NULL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from immunoguide.errors import InputError

__all__ = [
    "AdverseEvent",
    "AdverseEventCoding",
    "AllocationList",
    "AllocationSlot",
    "AuditHead",
    "AuditRecord",
    "Base",
    "Classification",
    "Consent",
    "DoseAdministration",
    "EligibilityEvaluation",
    "FollowUp",
    "Kit",
    "LabOrder",
    "LabResult",
    "Patient",
    "SafetyLabResult",
    "ServiceToken",
    "ServiceUser",
    "StoreClock",
    "StoreConfig",
    "Unblinding",
    "UTCDateTime",
    "Withdrawal",
    "ACCOUNT_TABLES",
    "AUDITED_TABLES",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware ``datetime`` stored in UTC; naive datetimes are refused (no silent local time)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputError(
                expected="a timezone-aware date-time",
                got=value.isoformat(),
                where="trial store",
                todo="send times with a UTC offset, e.g. 2025-03-01T08:30:00+00:00",
            )
        v = value.astimezone(UTC)
        return v.replace(tzinfo=None) if dialect.name == "sqlite" else v

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention (stable constraint names for migrations)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
    }


class Patient(Base):
    """A screened patient (study code, site); ``status``: screening, screen_failed, randomised, withdrawn."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    site: Mapped[str] = mapped_column(String(32), index=True)
    protocol: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    screened_at: Mapped[datetime]
    screened_by: Mapped[str] = mapped_column(String(64))
    sepsis3_onset: Mapped[datetime | None]
    covid19: Mapped[bool | None] = mapped_column(Boolean)
    stratum: Mapped[str | None] = mapped_column(String(32))
    screening_record: Mapped[dict[str, Any] | None]
    first_dose_at: Mapped[datetime | None]
    data_removed: Mapped[bool] = mapped_column(Boolean)


class EligibilityEvaluation(Base):
    """One entry of the screening log: the protocol engine's eligibility result with its evidence."""

    __tablename__ = "eligibility_evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    evaluated_at: Mapped[datetime]
    evaluated_by: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(64))
    eligible: Mapped[bool | None] = mapped_column(Boolean)
    blocking: Mapped[list[Any]]
    undetermined: Mapped[list[Any]]
    result: Mapped[dict[str, Any] | None]


class Consent(Base):
    """Informed consent: ``given_by`` patient / first_degree_relative / spouse, or ``refused``."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), unique=True)
    given_by: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))


class LabResult(Base):
    """A biomarker result: raw text and unit as reported, canonical interval, assay method and times."""

    __tablename__ = "lab_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    concept: Mapped[str] = mapped_column(String(64))
    raw_value: Mapped[str] = mapped_column(String(64))
    raw_unit: Mapped[str] = mapped_column(String(32))
    value_lower: Mapped[float | None] = mapped_column(Float)
    value_upper: Mapped[float | None] = mapped_column(Float)
    lower_inclusive: Mapped[bool] = mapped_column(Boolean)
    upper_inclusive: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str | None] = mapped_column(String(32))
    sample_time: Mapped[datetime | None]
    receipt_time: Mapped[datetime | None]
    result_time: Mapped[datetime | None]
    source: Mapped[str | None] = mapped_column(String(128))
    entered_at: Mapped[datetime]
    entered_by: Mapped[str] = mapped_column(String(64))


class Classification(Base):
    """The baseline immune classification from the entered results (endotype, reasons, inputs used)."""

    __tablename__ = "classifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    classified_at: Mapped[datetime]
    classified_by: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(64))
    endotype: Mapped[str] = mapped_column(String(32))
    result: Mapped[dict[str, Any]]


class AllocationList(Base):
    """An imported allocation list (one per site and stratum) with the checksums it was verified against."""

    __tablename__ = "allocation_lists"
    __table_args__ = (UniqueConstraint("site", "stratum"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    site: Mapped[str] = mapped_column(String(32))
    stratum: Mapped[str] = mapped_column(String(32))
    protocol: Mapped[str] = mapped_column(String(64))
    n_slots: Mapped[int] = mapped_column(Integer)
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]]
    imported_at: Mapped[datetime]
    imported_by: Mapped[str] = mapped_column(String(64))
    list_mac: Mapped[str | None] = mapped_column(String(64))


class AllocationSlot(Base):
    """One slot of an allocation list: ``arm_mac`` commits to the arm under the trial key (the arm is not stored);
    ``patient_id`` is set when the slot is taken. ``arm``, ``block``, ``block_size``: legacy (NULL once sealed)."""

    __tablename__ = "allocation_slots"
    __table_args__ = (UniqueConstraint("list_id", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_lists.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    block: Mapped[int | None] = mapped_column(Integer)
    block_size: Mapped[int | None] = mapped_column(Integer)
    arm: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), unique=True)
    allocated_at: Mapped[datetime | None]
    allocated_by: Mapped[str | None] = mapped_column(String(64))
    arm_mac: Mapped[str | None] = mapped_column(String(64))


class Kit(Base):
    """A double-dummy kit (``route`` IV or SC) given to a randomised patient; its content follows from the sealed arm
    of the patient's slot (``regimen``: legacy, NULL once sealed)."""

    __tablename__ = "kits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kit_number: Mapped[str] = mapped_column(String(32), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    route: Mapped[str] = mapped_column(String(8))
    regimen: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(Text)
    assigned_at: Mapped[datetime]


class DoseAdministration(Base):
    """A dose given from a kit (``number`` = dose number within the kit's schedule)."""

    __tablename__ = "dose_administrations"
    __table_args__ = (UniqueConstraint("kit_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kits.id"))
    number: Mapped[int] = mapped_column(Integer)
    given_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))


class FollowUp(Base):
    """One visit day's assessment (study day 0 = the 24 h from randomisation)."""

    __tablename__ = "followups"
    __table_args__ = (UniqueConstraint("patient_id", "day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    day: Mapped[int] = mapped_column(Integer)
    assessed_at: Mapped[datetime]
    sofa_total: Mapped[int | None] = mapped_column(Integer)
    sofa_source: Mapped[str | None] = mapped_column(String(16))
    sofa_detail: Mapped[dict[str, Any] | None]
    infection_assessment: Mapped[str | None] = mapped_column(String(32))
    vital_status: Mapped[str | None] = mapped_column(String(16))
    death_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))


class AdverseEvent(Base):
    """An adverse event with CTCAE grade (1–5), seriousness, relatedness, outcome and SAE report times."""

    __tablename__ = "adverse_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    term: Mapped[str] = mapped_column(String(128))
    onset_at: Mapped[datetime]
    grade: Mapped[int] = mapped_column(Integer)
    serious: Mapped[bool] = mapped_column(Boolean)
    relatedness: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    aware_at: Mapped[datetime]
    initial_report_at: Mapped[datetime | None]
    followup_report_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))


class AdverseEventCoding(Base):
    """The CTCAE v5.0 term and MedDRA LLT code an adverse event is coded to (one per AE; the AE keeps the verbatim
    term as typed). AEs recorded before coding existed have none ("uncoded")."""

    __tablename__ = "adverse_event_codings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_id: Mapped[int] = mapped_column(ForeignKey("adverse_events.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    ctcae_term: Mapped[str] = mapped_column(String(128))
    meddra_code: Mapped[str | None] = mapped_column(String(16))
    soc: Mapped[str] = mapped_column(String(128))
    criteria: Mapped[str] = mapped_column(String(64))
    coded_at: Mapped[datetime]
    coded_by: Mapped[str] = mapped_column(String(64))


class SafetyLabResult(Base):
    """A safety laboratory result: value as reported, canonical value, the lab's limits and the CTCAE grade."""

    __tablename__ = "safety_lab_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    analyte: Mapped[str] = mapped_column(String(32))
    concept: Mapped[str] = mapped_column(String(64))
    raw_value: Mapped[str] = mapped_column(String(64))
    raw_unit: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    lln: Mapped[float | None] = mapped_column(Float)
    uln: Mapped[float | None] = mapped_column(Float)
    sample_time: Mapped[datetime]
    result_time: Mapped[datetime | None]
    study_day: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(128))
    ctcae_term: Mapped[str] = mapped_column(String(128))
    meddra_code: Mapped[str | None] = mapped_column(String(16))
    grade: Mapped[int | None] = mapped_column(Integer)
    grade_reason: Mapped[str] = mapped_column(Text)
    criteria: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime]
    entered_by: Mapped[str] = mapped_column(String(64))


class LabOrder(Base):
    """A biomarker sample drawn for the protocol's classification; ``pending`` until its result is entered."""

    __tablename__ = "lab_orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    analyte: Mapped[str] = mapped_column(String(32))
    concept: Mapped[str] = mapped_column(String(64))
    sample_time: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(128))
    method: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    result_id: Mapped[int | None] = mapped_column(ForeignKey("lab_results.id"))
    ordered_at: Mapped[datetime]
    ordered_by: Mapped[str] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None]


class StoreClock(Base):
    """The store's clock (one row, ``id`` = 1; absent = wall time). A simulated clock maps wall time to the data's
    time line: ``simulated_epoch + (wall now − wall_epoch)``, or stands at ``simulated_epoch`` when ``frozen``."""

    __tablename__ = "store_clock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    mode: Mapped[str] = mapped_column(String(16))
    simulated_epoch: Mapped[datetime | None]
    wall_epoch: Mapped[datetime | None]
    frozen: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text)
    set_at: Mapped[datetime]
    set_by: Mapped[str] = mapped_column(String(64))


class Unblinding(Base):
    """An emergency unblinding of one patient: who (user, role), when and why."""

    __tablename__ = "unblindings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    unblinded_at: Mapped[datetime]
    unblinded_by: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))


class Withdrawal(Base):
    """A withdrawal; with ``data_removal`` the patient's clinical rows were deleted (``removed`` counts them)."""

    __tablename__ = "withdrawals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), unique=True)
    withdrawn_at: Mapped[datetime]
    withdrawn_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    data_removal: Mapped[bool] = mapped_column(Boolean)
    removed: Mapped[dict[str, Any]]


class AuditRecord(Base):
    """One link of the append-only audit chain (see :mod:`immunoguide.trial.audit`)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_table_row", "table_name", "row_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    table_name: Mapped[str] = mapped_column(String(64))
    row_id: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(Integer, index=True)
    payload: Mapped[dict[str, Any] | None]
    payload_sha256: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    redacted_by: Mapped[int | None] = mapped_column(Integer)
    system_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    mac: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """The tip of the audit chain (one row, ``id`` = 1); locked by every writing transaction; ``mac`` keyed."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64))


class StoreConfig(Base):
    """The store's configuration (one row, ``id`` = 1), MAC'd with the trial key (:mod:`immunoguide.trial.clock`).

    ``mode`` is ``real`` (times come from the system clock; accounts required) or ``simulation`` (the demo's: the
    caller's clock is accepted and recorded beside the system time). ``keyed_from_seq`` is the first audit entry
    carrying a MAC (entries of a store upgraded from revision 0002 before it have none).
    """

    __tablename__ = "store_config"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    mode: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    trial_start: Mapped[datetime | None]
    clock_tolerance_s: Mapped[int] = mapped_column(Integer)
    late_entry_after_h: Mapped[float] = mapped_column(Float)
    keyed_from_seq: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(64))


#: Tables whose every row is created, changed and deleted through the audit trail, in foreign-key order.
AUDITED_TABLES: tuple[type[Base], ...] = (
    Patient,
    EligibilityEvaluation,
    Consent,
    LabResult,
    Classification,
    AllocationList,
    AllocationSlot,
    Kit,
    DoseAdministration,
    FollowUp,
    AdverseEvent,
    Unblinding,
    Withdrawal,
    AdverseEventCoding,
    SafetyLabResult,
    LabOrder,
)


class ServiceUser(Base):
    """An account of the REST service (:mod:`immunoguide.service.auth` reads and writes it): a trial role, the
    site for site roles, and the password only as a salted scrypt hash. ``demo`` marks the well-known demo accounts."""

    __tablename__ = "service_users"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    site: Mapped[str | None] = mapped_column(String(32))
    demo: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]


class ServiceToken(Base):
    """A bearer token of the REST service, kept only as its HMAC-SHA-256 digest, with its expiry and revocation."""

    __tablename__ = "service_tokens"
    token_hmac: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), ForeignKey("service_users.username"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked: Mapped[bool] = mapped_column(Boolean)


#: Tables of the accounts: not trial data (not exported). Every change to ``service_users`` is recorded in the audit
#: trail (:mod:`immunoguide.trial.accounts`) and the accounts are in a backup; tokens are neither.
ACCOUNT_TABLES: tuple[type[Base], ...] = (ServiceUser, ServiceToken)
