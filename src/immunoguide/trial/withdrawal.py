"""Withdrawal of consent, with or without removal of the patient's data.

ImmunoSep: five patients withdrew consent **and requested removal of all data** (spec §6.2); the analysed
population is the randomised patients minus these (SAP; protocol ``[sap.analysis_population]``
``randomised_minus_data_removal_withdrawals``). So:

* **without data removal** the patient's status becomes ``withdrawn``: no further doses, follow-up or data entry;
  data collected so far stay and are analysed;
* **with data removal** the patient's clinical rows (:data:`CLINICAL_TABLES`: screening evidence, laboratory
  results, classifications, doses, follow-up, adverse events) are deleted, the clinical fields of the patient
  row are cleared (the row stays as a *tombstone*: study code, site, stratum, status, the flag
  ``data_removed``), and the payloads of the patient's earlier audit entries for those tables are redacted
  (:func:`immunoguide.trial.audit.redact`). What the trial must keep stays: the consent and withdrawal records,
  the allocation slot (never reused; the arm stays for CONSORT counts), the kits (drug accountability) and any
  unblinding. The CONSORT counts (:func:`immunoguide.trial.access.consort`) therefore still show the patient as
  randomised and withdrawn with data removal, and exclude them from the analysed set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.errors import ConsentMissing, DuplicateRecord, InputError
from immunoguide.trial import audit
from immunoguide.trial._authz import Actor
from immunoguide.trial._common import aware, consent_of, get_patient, slot_of
from immunoguide.trial.models import (
    AdverseEvent,
    AdverseEventCoding,
    Classification,
    DoseAdministration,
    EligibilityEvaluation,
    FollowUp,
    LabOrder,
    LabResult,
    SafetyLabResult,
    Withdrawal,
)

__all__ = ["CLINICAL_TABLES", "withdraw"]

#: Tables whose rows of the patient are deleted on withdrawal with data removal.
CLINICAL_TABLES = (EligibilityEvaluation, LabOrder, LabResult, Classification, DoseAdministration, FollowUp,
                   SafetyLabResult, AdverseEventCoding, AdverseEvent)


def withdraw(
    session: Session, code: str, reason: str, *, actor: Actor, now: datetime, remove_data: bool = False,
) -> dict[str, Any]:
    """Record a withdrawal (once); with ``remove_data`` delete the patient's clinical data and keep a tombstone.

    Raises ConsentMissing (no consent was given: nothing to withdraw from), DuplicateRecord (already withdrawn),
    InputError (empty reason), UnknownPatient, NotAuthorized.
    """
    aware(now, "now")
    p = get_patient(session, code, actor, "withdraw")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(expected="the reason for the withdrawal", got=reason, where="field reason",
                         todo="state the reason (e.g. consent withdrawn by the patient)", field="reason")
    if not isinstance(remove_data, bool):
        raise InputError(expected="remove_data true or false", got=remove_data, where="field remove_data",
                         todo="say whether the patient asked for their data to be removed", field="remove_data")
    existing = session.execute(select(Withdrawal).where(Withdrawal.patient_id == p.id)).scalar_one_or_none()
    if existing is not None or p.status == "withdrawn":
        raise DuplicateRecord(expected="a patient not yet withdrawn", got=f"{p.code} withdrawn", where="withdrawals",
                              todo="a withdrawal is recorded once")
    consent = consent_of(session, p)
    if consent is None or consent.given_by == "refused":
        raise ConsentMissing(expected="a patient who gave consent", got=None if consent is None else "refused",
                             where=p.code, todo="without consent there is nothing to withdraw from; the screening "
                             "log already records the patient")
    removed: dict[str, int] = {}
    randomised = slot_of(session, p) is not None
    if remove_data:
        cutoff = audit.head_seq(session)
        for model in CLINICAL_TABLES:
            rows = list(session.execute(select(model).where(model.patient_id == p.id)).scalars())
            for row in rows:
                audit.delete(session, actor, now, row, redact_before=True)
            session.flush()  # table by table, in CLINICAL_TABLES order: a coding goes before its AE, an order before its result
            removed[model.__tablename__] = len(rows)
        audit.update(session, actor, now, p, redact_before=True, status="withdrawn", data_removed=True,
                     screening_record=None, sepsis3_onset=None, covid19=None, first_dose_at=None)
        redacted = audit.redact(session, actor, now, patient_id=p.id,
                                tables=[m.__tablename__ for m in CLINICAL_TABLES] + ["patients"],
                                reason="withdrawal with removal of the patient's data", up_to_seq=cutoff)
        removed["audit_payloads_redacted"] = redacted
    else:
        audit.update(session, actor, now, p, status="withdrawn")
    audit.insert(session, actor, now, Withdrawal(patient_id=p.id, withdrawn_at=now, withdrawn_by=actor.user,
                                                 reason=reason.strip(), data_removal=remove_data, removed=removed))
    return {"patient": p.code, "withdrawn_at": now.isoformat(), "randomised": randomised,
            "data_removal": remove_data, "removed": removed, "status": p.status}
