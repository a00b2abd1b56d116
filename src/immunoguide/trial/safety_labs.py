"""Structured safety laboratory results at follow-up, graded by CTCAE v5.0.

The trial's reported safety signals are anaemia (anakinra) and bleeding in patients with thrombocytopenia
(interferon-γ; spec §6.6), so haemoglobin, platelets and the other safety labs are entered as numbers with their
unit — never only as free-text adverse events — and graded by :func:`immunoguide.rules.ctcae.grade_lab` with the
laboratory's own reference limits.

A record (one blood draw; JSON object, e.g. ``immunoguide safety labs CODE --labs …`` or the ``safety_labs`` of a
follow-up day)::

    {"sample_time": "2025-03-04T06:00:00+00:00", "result_time": "…", "source": "central lab ATH",
     "hemoglobin": 7.4, "hemoglobin_unit": "g/dL", "hemoglobin_lln": 13.0,
     "platelets": 42, "platelets_unit": "10^9/L", "platelets_lln": 150,
     "bilirubin": 41, "bilirubin_unit": "umol/L", "bilirubin_uln": 21}

Analytes: :data:`~immunoguide.rules.ctcae.LAB_ANALYTES` (hemoglobin, platelets, neutrophils, lymphocytes,
bilirubin, creatinine, ast, alt), each with ``<analyte>_unit`` (required; units of ``criteria/concepts.toml``) and
the optional ``<analyte>_lln`` / ``<analyte>_uln`` as the laboratory reports them (same unit). Unknown fields,
booleans, implausible values, unknown units and times out of order are refused, naming the field.

The sample and result times are clinical event times and are checked like the trial's others
(:mod:`immunoguide.trial.clock`): not before the trial's start, not in the future, and a result entered more than
the store's late-entry limit after it was available (``result_time``, else ``sample_time``) needs a reason, which the
audit trail keeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.errors import InputError, MissingInputError, WrongTypeError
from immunoguide.rules.ctcae import LAB_ANALYTES, grade_lab, load_ctcae
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor
from immunoguide.trial._common import aware, get_patient, not_future, require_active, slot_of
from immunoguide.trial.models import Patient, SafetyLabResult
from immunoguide.units import check_plausible_time, concept, from_canonical

__all__ = [
    "RECORD_FIELDS",
    "check_safety_lab_times",
    "record_safety_labs",
    "safety_lab_dict",
    "safety_labs_view",
    "worst_grades",
]

#: Record-level fields of a safety-lab record.
RECORD_FIELDS = ("sample_time", "result_time", "source")


def _time(record: Mapping[str, Any], name: str) -> datetime | None:
    v = record.get(name)
    if v is None:
        return None
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            raise InputError(expected=f"an ISO 8601 date-time for {name}", got=v, where=f"safety labs, field {name}",
                             todo="send e.g. 2025-03-04T06:00:00+00:00", field=name) from None
    else:
        raise InputError(expected=f"an ISO 8601 date-time text for {name}", got=v, where=f"safety labs, field {name}",
                         todo="send e.g. 2025-03-04T06:00:00+00:00", field=name)
    aware(t, name)
    return check_plausible_time(t, field=name, where=f"safety labs, field {name}")


def _fields() -> set[str]:
    out = set(RECORD_FIELDS)
    for a in LAB_ANALYTES:
        out |= {a, f"{a}_unit", f"{a}_lln", f"{a}_uln"}
    return out


def _as_reported(concept_name: str, canonical: float | None, unit: str) -> float | None:
    """A canonical limit in the unit the laboratory reported (for display; None when not convertible)."""
    if canonical is None:
        return None
    try:
        return from_canonical(concept_name, canonical, unit)
    except Exception:  # noqa: BLE001 - display only: an unconvertible unit shows the canonical limit alone
        return None


def safety_lab_dict(r: SafetyLabResult) -> dict[str, Any]:
    """A stored result as JSON (blind-safe: no arm). ``value``, ``lln`` and ``uln`` are in the concept's canonical
    ``unit``; ``lln_as_reported`` / ``uln_as_reported`` in the reported ``raw_unit``."""
    return {"id": r.id, "analyte": r.analyte, "term": r.ctcae_term, "meddra_code": r.meddra_code,
            "raw_value": r.raw_value, "raw_unit": r.raw_unit, "value": r.value, "concept": r.concept,
            "unit": concept(r.concept).unit,
            "lln": r.lln, "uln": r.uln, "lln_as_reported": _as_reported(r.concept, r.lln, r.raw_unit),
            "uln_as_reported": _as_reported(r.concept, r.uln, r.raw_unit), "sample_time": r.sample_time.isoformat(),
            "result_time": r.result_time.isoformat() if r.result_time else None, "study_day": r.study_day,
            "source": r.source, "grade": r.grade, "grade_reason": r.grade_reason, "criteria": r.criteria,
            "entered_by": r.entered_by}


def check_safety_lab_times(session: Session, rows: list[SafetyLabResult], now: datetime,
                           late_entry_reason: str | None) -> str | None:
    """The trial's time rules for one draw (:mod:`immunoguide.trial.clock`): the sample not before the trial, and a
    result entered more than the late-entry limit after it was available (``result_time``, else ``sample_time``)
    only with a reason. Returns the reason to record (None when not late); raises ImplausibleTime."""
    if not rows:
        return None
    sample, result = rows[0].sample_time, rows[0].result_time
    clock.check_not_before_trial(session, sample, "sample_time")
    field = "result_time" if result is not None else "sample_time"
    return clock.check_late_entry(session, result or sample, now, field, late_entry_reason)


def record_safety_labs(session: Session, code: str, record: Mapping[str, Any], *, actor: Actor,
                       now: datetime, default_sample_time: datetime | None = None,
                       late_entry_reason: str | None = None) -> dict[str, Any]:
    """Store one draw's safety laboratory results, each graded by CTCAE v5.0; return them with their grades.

    Parameters
    ----------
    record : mapping
        The fields of the module docstring (``sample_time`` required unless ``default_sample_time`` is given).
    default_sample_time : datetime, optional
        Used when the record has no ``sample_time`` (a follow-up day's assessment time).
    late_entry_reason : str, optional
        Why the result is entered late (required beyond the store's late-entry limit; kept in the audit trail).

    Raises
    ------
    InputError
        Unknown field, value without unit, boolean, implausible value or limit, unknown unit, times in the future,
        result before sample, nothing entered.
    ImplausibleTime
        Sample before the trial's start; a late entry without its reason.
    PatientWithdrawn, UnknownPatient, NotAuthorized
    """
    aware(now, "now")
    p = get_patient(session, code, actor, "followup")
    require_active(p)
    rows = _rows(p, record, actor, now, default_sample_time, slot_of(session, p))
    late = check_safety_lab_times(session, rows, now, late_entry_reason)
    with audit.reasoned(session, late):
        audit.insert_many(session, actor, now, rows)
    return {"patient": p.code, "stored": len(rows), "results": [safety_lab_dict(r) for r in rows],
            "criteria": load_ctcae().label}


def _rows(p: Patient, record: Mapping[str, Any], actor: Actor, now: datetime, default_sample_time: datetime | None,
          slot: Any) -> list[SafetyLabResult]:
    if not isinstance(record, Mapping):
        raise InputError(expected="a JSON object of safety laboratory results", got=type(record).__name__,
                         where="safety labs", todo="send one object per blood draw")
    known = _fields()
    for k in record:
        if k not in known:
            raise InputError(expected="a safety-lab field", got=k, where="safety labs", field=str(k),
                             todo=f"fields: {', '.join(sorted(known))}")
    sample = _time(record, "sample_time") or default_sample_time
    if sample is None:
        raise MissingInputError(expected="sample_time", got=None, where="safety labs, field sample_time",
                                todo="state when the blood was drawn", field="sample_time")
    aware(sample, "sample_time")
    not_future(sample, now, "sample_time")
    result = _time(record, "result_time")
    if result is not None:
        not_future(result, now, "result_time")
        if result < sample:
            raise InputError(expected="result_time at or after sample_time", got=result.isoformat(),
                             where="safety labs, field result_time", todo="check the times", field="result_time")
    source = record.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > 128):
        raise InputError(expected="a laboratory name (text, at most 128 characters)", got=source,
                         where="safety labs, field source", todo="name the laboratory", field="source")
    day = None
    if slot is not None and slot.allocated_at is not None:
        day = math.floor((sample - slot.allocated_at) / timedelta(days=1))
    out: list[SafetyLabResult] = []
    for a in LAB_ANALYTES:
        value = record.get(a)
        if value is None:
            for extra in (f"{a}_unit", f"{a}_lln", f"{a}_uln"):
                if record.get(extra) is not None:
                    raise MissingInputError(expected=f"{a} together with {extra}", got=None,
                                            where=f"safety labs, field {a}", todo=f"send the {a} value", field=a)
            continue
        if isinstance(value, bool):
            raise WrongTypeError(expected=f"a number for {a}", got=value, where=f"safety labs, field {a}",
                                 todo="send the measured number", field=a)
        unit = record.get(f"{a}_unit")
        if not isinstance(unit, str) or not unit.strip():
            raise MissingInputError(expected=f"{a}_unit together with {a}", got=unit, where=f"safety labs, field {a}_unit",
                                    todo="state the unit as the laboratory reports it", field=f"{a}_unit")
        try:
            g = grade_lab(a, value, unit, lln=record.get(f"{a}_lln"), uln=record.get(f"{a}_uln"))
        except InputError as exc:
            exc.field = exc.field or a
            exc.where = f"safety labs, {exc.where or 'field ' + a}"
            raise
        out.append(SafetyLabResult(
            patient_id=p.id, analyte=a, concept=g.concept, raw_value=str(value), raw_unit=unit.strip(), value=g.value,
            lln=g.lln, uln=g.uln, sample_time=sample, result_time=result, study_day=day, source=source,
            ctcae_term=g.term, meddra_code=g.meddra_code, grade=g.grade, grade_reason=g.reason, criteria=g.criteria,
            entered_at=now, entered_by=actor.user,
        ))
    if not out:
        raise InputError(expected=f"at least one safety laboratory result ({', '.join(LAB_ANALYTES)})", got=None,
                         where="safety labs", todo="send e.g. hemoglobin with hemoglobin_unit")
    return out


def safety_labs_view(session: Session, code: str, *, actor: Actor) -> list[dict[str, Any]]:
    """The patient's safety laboratory results in sample order (every role that may view the patient)."""
    p = get_patient(session, code, actor, "view", lock=False)
    rows = session.execute(select(SafetyLabResult).where(SafetyLabResult.patient_id == p.id)
                           .order_by(SafetyLabResult.sample_time, SafetyLabResult.id)).scalars()
    return [safety_lab_dict(r) for r in rows]


def worst_grades(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """CTCAE term → the worst graded result (grade, value, study day), from :func:`safety_labs_view` rows."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["grade"] is None:
            continue
        cur = out.get(r["term"])
        if cur is None or r["grade"] > cur["grade"]:
            out[r["term"]] = {"grade": r["grade"], "value": r["value"], "study_day": r["study_day"],
                              "sample_time": r["sample_time"], "analyte": r["analyte"]}
    return out
