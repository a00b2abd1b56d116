"""Daily follow-up on the protocol's days: SOFA, labs and serial endotype, day-15 infection, day-28/90 vital status.

Study day ``d`` is the 24 h starting ``d`` × 24 h after randomisation (day 0 = the first 24 h). Follow-up is
accepted on the protocol's visit days (ImmunoSep ``[visits]``: 0, 2, 3, 4, 5, 7, 8, 15, 28, 90) and on the
days its SOFA endpoints need (``[[endpoints]]`` of kind ``sofa_mean_decrease``: baseline day 1 and days 2–15);
:func:`followup_days` says which item each day collects:

* SOFA: entered as a total (0–24) or computed from the entered worst values with
  :func:`immunoguide.rules.sofa.score_sofa` (SOFA-1 by default), with its components and missing/imputed parts;
* structured safety laboratory results (haemoglobin, platelets, neutrophils, lymphocytes, bilirubin, creatinine,
  AST, ALT) graded by CTCAE v5.0 (:mod:`immunoguide.trial.safety_labs`), on any follow-up day;
* laboratory results (ferritin, mHLA-DR) as in :func:`immunoguide.trial.enrolment.enter_labs`; the serial
  endotype of each day, its transitions and the reversal of the baseline endotype come from
  :func:`immunoguide.rules.endotype.reclassify_daily` (:func:`serial_endotypes`);
* the infection assessment on the day of the protocol's ordinal infection endpoint (ImmunoSep day 15:
  resolution < intermediate < failure < superinfection; category definitions are not captured, spec §5.2);
* vital status (alive / dead with the time of death) on the horizons of the mortality endpoints (days 28, 90).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from immunoguide.errors import ConflictingInputError, DuplicateRecord, InputError, NotAVisitDay
from immunoguide.protocols import Protocol
from immunoguide.rules.endotype import reclassify_daily
from immunoguide.rules.sofa import SofaInputs, score_sofa
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor
from immunoguide.trial._common import (
    aware,
    check_choice,
    get_patient,
    latest_classification,
    not_future,
    protocol_of,
    protocol_of_label,
    require_active,
    require_randomised,
)
from immunoguide.trial._labs import lab_results_of, pending_orders, serial_alerts, store_lab_record
from immunoguide.trial.models import AllocationSlot, FollowUp, Patient
from immunoguide.units import concept

__all__ = [
    "INFECTION_CATEGORIES",
    "VITAL_STATUS",
    "FollowUpEntry",
    "followup_days",
    "followup_view",
    "record_followup",
    "record_followups",
    "serial_endotypes",
]

#: Day-15 infection assessment, ordered from best to worst (JAMA Table 2 via A1; SAP p. 70; spec §5.2).
INFECTION_CATEGORIES: tuple[str, ...] = ("resolution", "intermediate", "failure", "superinfection")
VITAL_STATUS: tuple[str, ...] = ("alive", "dead")


def followup_days(protocol: Protocol) -> dict[int, tuple[str, ...]]:
    """Study day → the items collected that day, from the protocol's visits and endpoints.

    >>> from immunoguide.protocols import load_protocol
    >>> d = followup_days(load_protocol("immunosep-2025"))
    >>> d[15], d[28], sorted(d)[:4]
    (('visit', 'sofa', 'labs', 'infection_assessment'), ('visit', 'sofa', 'labs', 'vital_status'), [0, 1, 2, 3])
    """
    items: dict[int, list[str]] = {}
    for d in protocol.visits.days if protocol.visits else ():
        items.setdefault(d, []).extend(["visit", "sofa", "labs"])
    for e in protocol.endpoints:
        if e.kind == "sofa_mean_decrease" and e.baseline_day is not None and e.last_day is not None:
            for d in range(min(e.baseline_day, e.first_day or e.baseline_day), e.last_day + 1):
                items.setdefault(d, [])
                if "sofa" not in items[d]:
                    items[d].append("sofa")
    for e in protocol.endpoints:
        if e.kind == "ordinal" and e.horizon_days is not None:
            items.setdefault(e.horizon_days, []).append("infection_assessment")
        if e.kind == "mortality" and e.horizon_days is not None:
            items.setdefault(e.horizon_days, []).append("vital_status")
    return {d: tuple(dict.fromkeys(v)) for d, v in sorted(items.items())}


@lru_cache(maxsize=64)
def _days_of(protocol: str) -> dict[int, tuple[str, ...]]:
    """:func:`followup_days` of a patient's protocol (shipped protocols are immutable: computed once; read only)."""
    return followup_days(protocol_of_label(protocol))


def _anchor(session: Session, p: Patient) -> datetime:
    slot = require_randomised(session, p, "follow-up")
    assert slot.allocated_at is not None
    return slot.allocated_at


def record_followup(
    session: Session,
    code: str,
    day: int,
    *,
    actor: Actor,
    now: datetime,
    assessed_at: datetime | None = None,
    sofa_total: int | None = None,
    sofa_inputs: Mapping[str, Any] | None = None,
    sofa_criteria: str = "sofa1",
    labs: Mapping[str, Any] | None = None,
    infection_assessment: str | None = None,
    vital_status: str | None = None,
    death_at: datetime | None = None,
    late_entry_reason: str | None = None,
    safety_labs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record one study day's follow-up (once per day).

    ``assessed_at`` must lie in the study day (SOFA, labs; vital status and infection outcome: not before it) and,
    more than the store's late-entry limit before ``now``, needs ``late_entry_reason`` (kept in the audit trail;
    :mod:`immunoguide.trial.clock`).

    ``safety_labs`` (any follow-up day) is one draw's safety laboratory record
    (:func:`immunoguide.trial.safety_labs.record_safety_labs`; its ``sample_time`` defaults to ``assessed_at``); its
    times are checked like the day's (not before the trial; a late result needs ``late_entry_reason``).

    Raises NotRandomized, PatientWithdrawn, NotAVisitDay (day not in :func:`followup_days`, or an item not
    collected that day), DuplicateRecord (day already recorded), ConflictingInputError (SOFA total and inputs
    both given), InputError (nothing entered, bad values, death time missing or given for a living patient).
    """
    return record_followups(session, code, [FollowUpEntry(
        day, now, assessed_at=assessed_at, sofa_total=sofa_total, sofa_inputs=sofa_inputs, sofa_criteria=sofa_criteria,
        labs=labs, infection_assessment=infection_assessment, vital_status=vital_status, death_at=death_at,
        late_entry_reason=late_entry_reason, safety_labs=safety_labs,
    )], actor=actor)


@dataclass(frozen=True)
class FollowUpEntry:
    """One study day of :func:`record_followups`: the arguments :func:`record_followup` takes for it."""

    day: int
    now: datetime
    assessed_at: datetime | None = None
    sofa_total: int | None = None
    sofa_inputs: Mapping[str, Any] | None = None
    sofa_criteria: str = "sofa1"
    labs: Mapping[str, Any] | None = None
    infection_assessment: str | None = None
    vital_status: str | None = None
    death_at: datetime | None = None
    late_entry_reason: str | None = None
    safety_labs: Mapping[str, Any] | None = None


def record_followups(session: Session, code: str, days: Sequence[FollowUpEntry], *, actor: Actor) -> dict[str, Any]:
    """Record several study days of one patient, in order: what :func:`record_followup` does for each, in one pass.

    Each day is checked, written and audited as :func:`record_followup` would (same checks and errors, same rows,
    same audit entries in the same order, each with the day's own ``now`` and late-entry reason). The patient (with
    the permission check), its slot and its recorded days are read once and the follow-up view is built once: the
    return value is what :func:`record_followup` returns for the last day. A day that is refused raises its
    error; the days before it stay recorded in the transaction, as after the same calls of :func:`record_followup`.
    """
    if not days:
        raise InputError(expected="at least one follow-up day", got=[], where="record_followups",
                         todo="give the days to record")
    aware(days[0].now, "now")
    p = get_patient(session, code, actor, "followup")
    require_active(p)
    slot = require_randomised(session, p, "follow-up")
    assert slot.allocated_at is not None
    anchor = slot.allocated_at
    recorded = set(session.execute(_RECORDED_DAYS, {"patient_id": p.id}).scalars())
    staged: list[tuple[Any, datetime, str | None]] = []
    try:
        for i, entry in enumerate(days):
            if i:
                aware(entry.now, "now")
            _record_day(session, p, slot, anchor, recorded, staged, entry, actor)
    finally:
        if staged:  # the rows of the days recorded so far, in one flush, each with its audit entry
            audit.insert_each(session, actor, staged)
            staged.clear()  # unreferenced, the view reads them back as the store returns them (as record_followup's)
    return followup_view(session, code, actor=actor, now=days[-1].now, _patient=p, _anchor_time=anchor)


_RECORDED_DAYS = select(FollowUp.day).where(FollowUp.patient_id == bindparam("patient_id"))


def _record_day(session: Session, p: Patient, slot: AllocationSlot, anchor: datetime, recorded: set[int],
                staged: list[tuple[Any, datetime, str | None]], entry: FollowUpEntry, actor: Actor) -> None:
    """Check and record one study day of the patient (``recorded``: the days already recorded, which gets it).

    The day's safety results and follow-up row are staged (with their time and late-entry reason) in ``staged``,
    for :func:`immunoguide.trial.audit.insert_each`; a day with biomarker results writes the staged rows first, so
    the rows and their audit entries keep the order of the days."""
    (day, now, assessed_at, sofa_total, sofa_inputs, sofa_criteria, labs, infection_assessment, vital_status,
     death_at, late_entry_reason, safety_labs) = (
        entry.day, entry.now, entry.assessed_at, entry.sofa_total, entry.sofa_inputs, entry.sofa_criteria,
        entry.labs, entry.infection_assessment, entry.vital_status, entry.death_at, entry.late_entry_reason,
        entry.safety_labs)
    proto = protocol_of(p)
    days = _days_of(p.protocol)
    if isinstance(day, bool) or not isinstance(day, int) or day not in days:
        raise NotAVisitDay(expected=f"a follow-up day of {proto.label}: {sorted(days)}", got=day, where="field day",
                           todo="follow-up is recorded on the protocol's visit and SOFA days")
    allowed = days[day]
    assessed_at = assessed_at or now
    aware(assessed_at, "assessed_at")
    not_future(assessed_at, now, "assessed_at")
    given = {"sofa": sofa_total is not None or sofa_inputs is not None, "labs": bool(labs),
             "infection_assessment": infection_assessment is not None, "vital_status": vital_status is not None}
    if not any(given.values()) and not safety_labs:
        raise InputError(expected=f"at least one item for day {day}: {list(allowed)} or safety_labs", got=None,
                         where="follow-up", todo="enter the SOFA, labs, safety labs, infection assessment or vital status")
    for item, present in given.items():
        if present and item not in allowed:
            raise NotAVisitDay(expected=f"items collected on day {day}: {list(allowed)}", got=item,
                               where=f"follow-up day {day}", todo=f"enter {item} on its protocol day")
    if sofa_total is not None and sofa_inputs is not None:
        raise ConflictingInputError(expected="either sofa_total or sofa_inputs", got="both", where="follow-up SOFA",
                                    todo="enter the total, or the worst values to compute it from")
    detail: dict[str, Any] | None = None
    source = None
    if sofa_total is not None:
        if isinstance(sofa_total, bool) or not isinstance(sofa_total, int) or not 0 <= sofa_total <= 24:
            raise InputError(expected="sofa_total an integer 0-24", got=sofa_total, where="field sofa_total",
                             todo="enter the total SOFA score", field="sofa_total")
        source = "entered"
    elif sofa_inputs is not None:
        res = score_sofa(SofaInputs.from_record(sofa_inputs, where="sofa_inputs"), criteria=sofa_criteria)
        if res.total is None:
            raise InputError(expected="SOFA inputs that give a total", got=res.missing_components,
                             where="sofa_inputs", todo="enter the missing components, or the total")
        sofa_total, source, detail = res.total, "computed", res.to_dict()
    if infection_assessment is not None:
        check_choice(infection_assessment, INFECTION_CATEGORIES, "infection_assessment")
    if vital_status is not None:
        check_choice(vital_status, VITAL_STATUS, "vital_status")
        if vital_status == "dead":
            aware(death_at, "death_at")
            assert death_at is not None
            not_future(death_at, now, "death_at")
            if death_at < anchor:
                raise InputError(expected="a death after randomisation", got=death_at.isoformat(),
                                 where="field death_at", todo="check the date", field="death_at")
    if death_at is not None and vital_status != "dead":
        raise InputError(expected="death_at only with vital_status dead", got=death_at.isoformat(),
                         where="field death_at", todo="leave death_at out for a living patient", field="death_at")
    if day in recorded:
        raise DuplicateRecord(expected=f"day {day} not yet recorded", got=f"{p.code} day {day}", where="followups",
                              todo="each follow-up day is recorded once")
    clock.check_study_day(anchor, day, assessed_at, within_day=given["sofa"] or given["labs"])
    late = clock.check_late_entry(session, assessed_at, now, "assessed_at", late_entry_reason)
    safety_rows: list[Any] = []
    if safety_labs:
        from immunoguide.trial.safety_labs import _rows as safety_rows_of
        from immunoguide.trial.safety_labs import check_safety_lab_times

        safety_rows = safety_rows_of(p, safety_labs, actor, now, assessed_at, slot)
        late = check_safety_lab_times(session, safety_rows, now, late_entry_reason) or late
    if labs:
        audit.insert_each(session, actor, staged)
        staged.clear()
        with audit.reasoned(session, late):
            store_lab_record(session, proto, labs, p, actor, now)
    # the draw's safety results, then the day's row
    staged.extend((row, now, late) for row in [*safety_rows, FollowUp(
        patient_id=p.id, day=day, assessed_at=assessed_at, sofa_total=sofa_total, sofa_source=source,
        sofa_detail=detail, infection_assessment=infection_assessment, vital_status=vital_status,
        death_at=death_at if vital_status == "dead" else None, recorded_at=now, recorded_by=actor.user,
    )])
    recorded.add(day)


def serial_endotypes(session: Session, code: str, *, actor: Actor, now: datetime,
                     _patient: Patient | None = None, _anchor_time: datetime | None = None) -> dict[str, Any]:
    """Daily endotypes from the randomisation stratum on: every day with a sample (visit day or not) and every
    visit day so far, transitions from the stratum, reversal of the stratum, every sample, and the alerts.

    The baseline is the randomisation stratum, established on the day of the classification sample (before
    randomisation: a negative study day); a patient randomised as immunoparalysis who is MALS on day 3 has a
    transition (``stratum_switch`` alert) on day 3, and only the stratum's reversal rules are evaluated
    (:func:`immunoguide.rules.endotype.reclassify_daily` with ``baseline_endotype``). A sample on a day that is not
    a protocol visit day is classified and listed like any other (``visit_day`` false).
    """
    p = _patient or get_patient(session, code, actor, "view", lock=False)
    anchor = _anchor_time or _anchor(session, p)
    proto = protocol_of(p)
    assert proto.classification is not None
    visit_days = {d for d, items in _days_of(p.protocol).items() if "labs" in items}
    elapsed = math.floor((now - anchor) / timedelta(days=1))
    results = [r for r in lab_results_of(session, p) if r.sample_time is not None]
    sample_day = {id(r): math.floor((r.sample_time - anchor) / timedelta(days=1)) for r in results if r.sample_time}
    cl = latest_classification(session, p)
    base_times = [datetime.fromisoformat(i["sample_time"]) for i in ((cl.result or {}).get("inputs_used", [])
                                                                        if cl is not None else []) if i.get("sample_time")]
    baseline_day = (math.floor((max(base_times) - anchor) / timedelta(days=1)) if base_times
                    else min([*sample_day.values(), 0]))
    days = sorted({d for d in visit_days if d <= elapsed} | set(sample_day.values()) | {baseline_day})
    stratum = p.stratum if p.stratum in proto.endotype_names else None
    rec = reclassify_daily(proto.classification, results, anchor_time=anchor, days=days, protocol_label=proto.label,
                           baseline_endotype=stratum, baseline_day=baseline_day if stratum else None)
    out = rec.to_dict()
    for d in out["days"]:
        d["visit_day"] = d["day"] in visit_days
        d["baseline"] = d["day"] == baseline_day
    out["baseline_stratum"] = p.stratum
    out["baseline_day"] = baseline_day if stratum else out["baseline_day"]
    out["day_zero"] = anchor.isoformat()
    out["samples"] = [
        {"concept": r.concept, "value": r.value.describe(), "unit": concept(r.concept).unit, "method": r.method,
         "sample_time": r.sample_time.isoformat() if r.sample_time else None,
         "result_time": r.result_time.isoformat() if r.result_time else None,
         "turnaround_h": None if r.turnaround_h is None else round(r.turnaround_h, 2),
         "study_day": sample_day[id(r)], "visit_day": sample_day[id(r)] in visit_days, "source": r.source}
        for r in sorted(results, key=lambda r: (r.sample_time, r.concept))
    ]
    out["pending"] = [{"analyte": o.analyte, "concept": o.concept, "sample_time": o.sample_time.isoformat(),
                       "source": o.source, "study_day": math.floor((o.sample_time - anchor) / timedelta(days=1))}
                      for o in pending_orders(session, p)]
    out["alerts"] = serial_alerts(p, out, proto.endotype_names)
    return out


def followup_view(session: Session, code: str, *, actor: Actor, now: datetime,
                  _patient: Patient | None = None, _anchor_time: datetime | None = None) -> dict[str, Any]:
    """Every recorded follow-up day, the days still expected, and the serial endotypes."""
    p = _patient or get_patient(session, code, actor, "view", lock=False)
    anchor = _anchor_time or _anchor(session, p)
    rows = session.execute(select(FollowUp).where(FollowUp.patient_id == p.id).order_by(FollowUp.day)).scalars().all()
    days = _days_of(p.protocol)
    recorded = {r.day for r in rows}
    elapsed = (now - anchor) / timedelta(days=1)
    return {
        "patient": p.code,
        "day_zero": anchor.isoformat(),
        "days": [
            {"day": r.day, "assessed_at": r.assessed_at.isoformat(), "sofa_total": r.sofa_total,
             "sofa_source": r.sofa_source, "sofa_components": (r.sofa_detail or {}).get("components"),
             "infection_assessment": r.infection_assessment, "vital_status": r.vital_status,
             "death_at": r.death_at.isoformat() if r.death_at else None, "recorded_by": r.recorded_by}
            for r in rows
        ],
        "overdue_days": [d for d in days if d not in recorded and d + 1 <= elapsed],
        "serial": serial_endotypes(session, code, actor=actor, now=now, _patient=p, _anchor_time=anchor),
    }
