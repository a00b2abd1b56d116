"""Screening log, informed consent and the baseline immune classification from entered laboratory results.

Each step is one function over an open session (the caller's transaction: nothing is committed here, so a
refused step leaves nothing behind), takes the acting :class:`~immunoguide.trial.access.Actor` and an explicit
``now`` (timezone-aware), writes through the audit trail and returns a JSON-safe view built by the read layer.

* :func:`screen` stores the patient and the protocol engine's eligibility result
  (:func:`immunoguide.rules.eligibility.evaluate_eligibility`) with its evidence — the screening log. A patient
  an inclusion fails or an exclusion hits is a *screen failure*, with the blocking criteria as its reason
  (this feeds the CONSORT diagram).
* :func:`record_consent` records who consented (the protocol's I3 values: patient, first-degree relative,
  spouse) or that consent was refused (exclusion E2), once per patient.
* :func:`enter_labs` stores ferritin and mHLA-DR results (value as reported, unit, assay method, sample /
  receipt / result times) and, before randomisation, classifies the endotype
  (:func:`immunoguide.rules.endotype.classify_endotype`) from all results so far; the endotype is the
  randomisation stratum. After randomisation, results are serial samples (see
  :func:`immunoguide.trial.followup.serial_endotypes`).

After consent and classification the eligibility is evaluated again, so the log holds every evaluation with
the stage that triggered it (``screening``, ``consent``, ``classification``, ``randomisation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.errors import DuplicateConsent, DuplicateRecord, InputError, NotEligible
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.rules.eligibility import EligibilityResult, PatientRecord, evaluate_eligibility
from immunoguide.rules.endotype import classify_endotype
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor, authorize
from immunoguide.trial._common import (
    DEFAULT_PROTOCOL,
    aware,
    check_choice,
    consent_of,
    get_patient,
    iso,
    latest_classification,
    not_future,
    protocol_of,
    require_active,
    slot_of,
    validation_error,
)
from immunoguide.trial._labs import lab_results_of, store_lab_record
from immunoguide.trial.models import Classification, Consent, EligibilityEvaluation, Patient

__all__ = [
    "consent_values",
    "eligibility_record",
    "enter_labs",
    "evaluate",
    "evaluate_now",
    "lab_results_of",
    "record_consent",
    "require_eligible",
    "screen",
    "store_evaluation",
]

#: PatientRecord fields set by later workflow steps, never in the screening record.
_LATER_FIELDS = {"consent": "record consent with `immunoguide trial consent`",
                 "endotype": "enter the laboratory results with `immunoguide trial classify-lab`",
                 "planned_first_dose_time": "set at randomisation",
                 "patient_id": "the study code is given separately"}


def consent_values(protocol: Protocol) -> dict[str, str]:
    """Consent values the protocol knows: value → ``"given"`` (inclusion I3) or ``"refused"`` (exclusion E2)."""
    out: dict[str, str] = {}
    for c in protocol.inclusion:
        if c.kind == "value_in" and c.field == "consent":
            out.update({v: "given" for v in c.values or ()})
    for c in protocol.exclusion:
        if c.kind == "value_in" and c.field == "consent":
            out.update({v: "refused" for v in c.values or ()})
    return out


_UNSET: Any = object()


def eligibility_record(session: Session, p: Patient, *, planned_first_dose: datetime | None = None,
                       consent: Consent | None = _UNSET, classification: Classification | None = _UNSET) -> PatientRecord:
    """The patient's screening record completed with consent, endotype and (optionally) the first-dose time.

    ``consent`` and ``classification`` may be passed when already loaded (else they are read).
    """
    proto = protocol_of(p)
    data: dict[str, Any] = dict(p.screening_record or {})
    data["patient_id"] = p.code
    c = consent_of(session, p) if consent is _UNSET else consent
    if c is not None:
        data["consent"] = c.given_by
    cl = latest_classification(session, p) if classification is _UNSET else classification
    if cl is not None and proto.classification is not None:
        known = set(proto.endotype_names) | {proto.classification.otherwise}
        if cl.endotype in known:
            data["endotype"] = cl.endotype
    if planned_first_dose is not None:
        data["planned_first_dose_time"] = planned_first_dose
    return PatientRecord.model_validate(data)


def evaluate_now(session: Session, p: Patient, now: datetime, *, planned_first_dose: datetime | None = None,
                 consent: Consent | None = _UNSET, classification: Classification | None = _UNSET) -> EligibilityResult:
    """The protocol engine's eligibility for the patient at ``now`` (nothing stored)."""
    record = eligibility_record(session, p, planned_first_dose=planned_first_dose, consent=consent,
                                classification=classification)
    return evaluate_eligibility(protocol_of(p), record, at=now)


def store_evaluation(session: Session, p: Patient, actor: Actor, now: datetime, stage: str,
                     result: EligibilityResult) -> dict[str, Any]:
    """Store an evaluation in the screening log, update the screening status; return the stored evidence."""
    evidence = result.to_dict()
    audit.insert(session, actor, now, EligibilityEvaluation(
        patient_id=p.id, stage=stage, evaluated_at=now, evaluated_by=actor.user, protocol=result.protocol,
        eligible=result.eligible, blocking=list(result.blocking), undetermined=list(result.undetermined),
        result=evidence,
    ))
    if p.status in ("screening", "screen_failed"):
        audit.update(session, actor, now, p, status="screen_failed" if result.eligible is False else "screening")
    return evidence


def evaluate(
    session: Session, p: Patient, actor: Actor, now: datetime, stage: str, *,
    planned_first_dose: datetime | None = None, consent: Consent | None = _UNSET,
    classification: Classification | None = _UNSET,
) -> tuple[EligibilityResult, dict[str, Any]]:
    """Evaluate eligibility now, store it in the screening log, update the screening status.

    Returns the result and its stored evidence (JSON form).
    """
    result = evaluate_now(session, p, now, planned_first_dose=planned_first_dose, consent=consent,
                          classification=classification)
    return result, store_evaluation(session, p, actor, now, stage, result)


def _screening_view(p: Patient, result: EligibilityResult, stage: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient": p.code,
        "site": p.site,
        "status": p.status,
        "stage": stage,
        "protocol": result.protocol,
        "eligible": result.eligible,
        "screen_failure": result.eligible is False,
        "blocking": [{"id": r.id, "text": r.text, "reason": r.reason} for r in result.criteria if r.blocks],
        "undetermined": [
            {"id": r.id, "text": r.text, "reason": r.reason}
            for r in result.criteria if r.applied and r.status == "unknown"
        ],
        "warnings": [w.to_dict() for w in result.warnings],
        "evidence": evidence,
    }


def screen(
    session: Session,
    code: str,
    site: str,
    record: Mapping[str, Any],
    *,
    actor: Actor,
    now: datetime,
    protocol: str = DEFAULT_PROTOCOL,
) -> dict[str, Any]:
    """Screen a patient: store them with the eligibility result and its evidence (the screening log).

    Parameters
    ----------
    code : str
        Study code of the patient (unique in the store).
    site : str
        Site code; a site user may screen at their own site only.
    record : mapping
        The screening facts, as :class:`~immunoguide.rules.eligibility.PatientRecord` fields (age_years, sex,
        infection_source, admission_source, sofa_total, sepsis3_onset_time (with UTC offset), covid19, flags …).
        Consent, endotype and the first-dose time are set by later steps and refused here.
    actor, now
        Who screens, and when (timezone-aware).
    protocol : str
        Protocol id (``"immunosep-2025"``, optionally ``@version``).

    Returns
    -------
    dict
        ``status`` (``screening`` or ``screen_failed``), ``eligible`` (True / False / None = undetermined),
        ``blocking`` and ``undetermined`` criteria with reasons, setting ``warnings`` and the full ``evidence``.

    Raises
    ------
    DuplicateRecord
        The study code is already in the store.
    InputError
        Unknown or malformed field, naive time, a field of a later step.
    NotAuthorized
        Role or site.
    """
    authorize(actor, "screen", site=site)
    aware(now, "now")
    if not code or not isinstance(code, str) or len(code) > 64:
        raise InputError(expected="a study code of 1-64 characters", got=code, where="field code",
                         todo="give the patient's study code", field="code")
    if not site or len(site) > 32:
        raise InputError(expected="a site code of 1-32 characters", got=site, where="field site",
                         todo="give the site code", field="site")
    proto = load_protocol(protocol)
    if not isinstance(record, Mapping):
        raise InputError(expected="a JSON object of screening facts", got=type(record).__name__,
                         where="screening record", todo="send one JSON object")
    for f, todo in _LATER_FIELDS.items():
        if f in record:
            raise InputError(expected="screening facts only", got=f, where=f"screening record, field {f}",
                             todo=todo, field=f)
    try:
        rec = PatientRecord.model_validate(dict(record))
    except ValidationError as exc:
        raise validation_error(exc, "screening record") from None
    clock.check_not_before_trial(session, now, "screening time (now)")
    for f in ("sepsis3_onset_time", "sepsis_onset_time", "hospital_admission_time", "icu_admission_time"):
        t = getattr(rec, f)
        if t is not None:
            aware(t, f)
            not_future(t, now, f)
    if rec.sepsis3_onset_time is not None:
        clock.check_not_before_trial(session, rec.sepsis3_onset_time, "sepsis3_onset_time", margin=timedelta(days=7))
    if session.execute(select(Patient.id).where(Patient.code == code)).first() is not None:
        raise DuplicateRecord(expected="a study code not yet screened", got=code, where="patients",
                              todo="each patient is screened once; use a new code or look the patient up")
    p = Patient(
        code=code, site=site, protocol=proto.label, status="screening", screened_at=now, screened_by=actor.user,
        sepsis3_onset=rec.sepsis3_onset_time, covid19=rec.covid19, stratum=None,
        screening_record=rec.model_dump(mode="json", exclude_none=True, exclude={"patient_id"}),
        first_dose_at=None, data_removed=False,
    )
    audit.insert(session, actor, now, p)
    result, evidence = evaluate(session, p, actor, now, "screening", consent=None, classification=None)
    return _screening_view(p, result, "screening", evidence)


def record_consent(
    session: Session, code: str, given_by: str, signed_at: datetime, *, actor: Actor, now: datetime,
) -> dict[str, Any]:
    """Record informed consent (or its refusal) once, then re-evaluate eligibility.

    ``given_by`` is one of the protocol's consent values (ImmunoSep I3: ``patient``, ``first_degree_relative``,
    ``spouse``; E2: ``refused``). Raises DuplicateConsent when a consent is already recorded,
    InputError for an unknown value or a signature time in the future, PatientWithdrawn, UnknownPatient.
    """
    p = get_patient(session, code, actor, "consent")
    require_active(p)
    proto = protocol_of(p)
    values = consent_values(proto)
    check_choice(given_by, tuple(values), "given_by")
    aware(signed_at, "signed_at")
    not_future(signed_at, now, "signed_at")
    clock.check_not_before_trial(session, signed_at, "signed_at")
    existing = consent_of(session, p)
    if existing is not None:
        raise DuplicateConsent(
            expected="no consent recorded yet", got=f"{p.code}: {existing.given_by} at {existing.signed_at.isoformat()}",
            where="consents", todo="a consent is recorded once; a withdrawal is recorded with `trial withdraw`",
        )
    consent = Consent(patient_id=p.id, given_by=given_by, signed_at=signed_at, recorded_at=now, recorded_by=actor.user)
    audit.insert(session, actor, now, consent)
    result, evidence = evaluate(session, p, actor, now, "consent", consent=consent)
    view = _screening_view(p, result, "consent", evidence)
    view["consent"] = {"given_by": given_by, "signed_at": iso(signed_at), "kind": values[given_by]}
    return view


def enter_labs(
    session: Session, code: str, record: Mapping[str, Any], *, actor: Actor, now: datetime,
) -> dict[str, Any]:
    """Store laboratory results and, before randomisation, classify the immune endotype (the stratum).

    ``record`` uses the fields of :func:`immunoguide.rules.endotype.results_from_record`: per analyte of the
    protocol (``ferritin``, ``hla_dr``) the value (number or censored text), ``<analyte>_unit``,
    ``<analyte>_method`` (``quantibrite_abc`` for mHLA-DR) and ``<analyte>_sample_time`` (required),
    ``_receipt_time`` and ``_result_time`` (ISO 8601 with offset).

    Returns the classification (endotype, reasons, inputs used with their ages and turnaround, warnings) and
    the eligibility re-evaluated with it; ``unclassified`` (neither MALS nor immunoparalysis) is a screen
    failure (inclusion I6). After randomisation the results are stored as serial samples and the stratum is
    not changed.
    """
    p = get_patient(session, code, actor, "enter_labs")
    require_active(p)
    aware(now, "now")
    proto = protocol_of(p)
    if proto.classification is None:
        raise InputError(expected="a protocol with an immune classification", got=proto.label, where="protocol",
                         todo="this protocol has no laboratory classification")
    if not isinstance(record, Mapping):
        raise InputError(expected="a JSON object of laboratory results", got=type(record).__name__,
                         where="lab record", todo="send one JSON object")
    rows, orders = store_lab_record(session, proto, record, p, actor, now)
    pending = [{"analyte": o.analyte, "sample_time": o.sample_time.isoformat(), "source": o.source} for o in orders]
    if not rows:
        return {"patient": p.code, "stored": 0, "stage": "pending", "pending": pending, "classification": None,
                "todo": "enter the results when they arrive; `immunoguide safety alerts` watches the window"}
    if slot_of(session, p) is not None:
        from immunoguide.trial.followup import serial_endotypes

        return {"patient": p.code, "stored": len(rows), "stage": "serial", "classification": None, "pending": pending,
                "serial": serial_endotypes(session, code, actor=actor, now=now, _patient=p)}
    res = classify_endotype(proto.classification, lab_results_of(session, p), anchor_time=p.sepsis3_onset, at=now,
                            protocol_label=proto.label)
    classification = Classification(
        patient_id=p.id, classified_at=now, classified_by=actor.user, protocol=proto.label, endotype=res.endotype,
        result=res.to_dict(),
    )
    audit.insert(session, actor, now, classification)
    stratum = res.endotype if res.endotype in proto.endotype_names else None
    audit.update(session, actor, now, p, stratum=stratum)
    result, evidence = evaluate(session, p, actor, now, "classification", classification=classification)
    view = _screening_view(p, result, "classification", evidence)
    view["stored"] = len(rows)
    view["pending"] = pending
    view["classification"] = res.to_dict()
    view["stratum"] = stratum
    return view


def require_eligible(result: EligibilityResult, code: str) -> None:
    """NotEligible unless the evaluation says eligible (naming the blocking or undetermined criteria)."""
    if result.eligible is True:
        return
    what = result.blocking if result.eligible is False else result.undetermined
    reasons = "; ".join(f"{r.id}: {r.reason}" for r in result.criteria if r.id in what)
    raise NotEligible(
        expected="an eligible patient (every inclusion met, no exclusion)",
        got=f"{code}: {'not eligible' if result.eligible is False else 'undetermined'} ({reasons})",
        where="eligibility", todo="complete the missing data, or record the screen failure",
    )
