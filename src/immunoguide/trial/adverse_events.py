"""Adverse events: CTCAE grade, seriousness, relatedness, outcome; SAE reporting clocks; automatic safety signals.

An AE is recorded with its term, onset, CTCAE grade (1 mild … 5 death related to the AE), serious yes/no,
relatedness to the study drug, outcome and the time the site became aware of it. A serious AE starts two
reporting clocks (``trial/safety.toml``: initial report within 24 h, full report within 15 days, both from
awareness — spec §3, *likely*); :func:`report_sae` records each report and every view shows each clock as
``pending``, ``overdue``, ``on_time`` or ``late`` at ``now``.

:func:`safety_signals` computes the signals the trial reported (spec §6.6: more anemia with anakinra; more
hemorrhage with interferon-γ, in patients with thrombocytopenia) per arm against the placebo arm of the same
stratum. Signals need the arm, so only the unblinded safety reviewer (``dsmb``) may see them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.errors import ConflictingInputError, DuplicateRecord, InputError, UnknownRecord
from immunoguide.protocols import load_protocol
from immunoguide.trial import audit
from immunoguide.trial._common import (
    aware,
    check_choice,
    get_patient,
    not_future,
    require_active,
    require_randomised,
)
from immunoguide.trial.access import Actor, authorize, site_filter
from immunoguide.trial.models import AdverseEvent, AllocationList, AllocationSlot, Patient

__all__ = [
    "CTCAE_GRADES",
    "OUTCOMES",
    "RELATEDNESS",
    "SafetyRules",
    "adverse_events_view",
    "load_safety_rules",
    "record_adverse_event",
    "report_sae",
    "safety_signals",
]

#: CTCAE v5 grades (general definitions).
CTCAE_GRADES: dict[int, str] = {1: "mild", 2: "moderate", 3: "severe or medically significant",
                                4: "life-threatening", 5: "death related to the adverse event"}
RELATEDNESS: tuple[str, ...] = ("not_related", "unlikely", "possible", "probable", "definite")
OUTCOMES: tuple[str, ...] = ("recovered", "recovering", "not_recovered", "recovered_with_sequelae", "fatal", "unknown")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SaeReporting(_Strict):
    """SAE reporting deadlines (hours and days from ``clock_start``)."""

    initial_report_h: float = Field(gt=0)
    full_report_days: float = Field(gt=0)
    clock_start: Literal["awareness"]
    citation: str
    confidence: Literal["confirmed", "likely", "unknown"]
    note: str = ""


class Signal(_Strict):
    """A safety signal: AE terms (case-insensitive substrings) in patients on ``drug``, optionally with context."""

    id: str
    text: str
    drug: str
    terms: tuple[str, ...] = Field(min_length=1)
    context_terms: tuple[str, ...] = ()
    context_text: str = ""
    citation: str
    confidence: Literal["confirmed", "likely", "unknown"]
    note: str = ""


class SafetyRules(_Strict):
    """``trial/safety.toml``."""

    schema_: str = Field(alias="schema")
    version: str
    protocol: str
    sae_reporting: SaeReporting
    signals: tuple[Signal, ...] = ()


@cache
def load_safety_rules() -> SafetyRules:
    """The shipped safety rules (validated; unknown keys refused)."""
    text = (resources.files("immunoguide.trial") / "safety.toml").read_text(encoding="utf-8")
    rules = SafetyRules.model_validate(tomllib.loads(text))
    proto = load_protocol(rules.protocol)
    drugs = {r.drug for r in proto.regimens.values()}
    for s in rules.signals:
        if s.drug not in drugs:
            raise ValueError(f"safety.toml: signal {s.id} names drug {s.drug!r}, not in {proto.label}: {sorted(drugs)}")
    return rules


def _clock(start: datetime, due: datetime, done: datetime | None, now: datetime) -> dict[str, Any]:
    if done is not None:
        status = "on_time" if done <= due else "late"
    else:
        status = "overdue" if now > due else "pending"
    return {"due": due.isoformat(), "reported_at": done.isoformat() if done else None, "status": status,
            "hours_left": None if done is not None else round((due - now).total_seconds() / 3600.0, 2)}


def _ae_dict(ae: AdverseEvent, code: str, now: datetime) -> dict[str, Any]:
    rules = load_safety_rules().sae_reporting
    out: dict[str, Any] = {
        "id": ae.id, "patient": code, "term": ae.term, "onset_at": ae.onset_at.isoformat(), "grade": ae.grade,
        "grade_text": CTCAE_GRADES[ae.grade], "serious": ae.serious, "relatedness": ae.relatedness,
        "outcome": ae.outcome, "aware_at": ae.aware_at.isoformat(), "recorded_by": ae.recorded_by,
    }
    if ae.serious:
        out["sae_clocks"] = {
            "initial": _clock(ae.aware_at, ae.aware_at + timedelta(hours=rules.initial_report_h),
                              ae.initial_report_at, now),
            "full": _clock(ae.aware_at, ae.aware_at + timedelta(days=rules.full_report_days),
                           ae.followup_report_at, now),
            "source": f"{rules.citation} [{rules.confidence}]",
        }
    return out


def record_adverse_event(
    session: Session, code: str, *, term: str, onset_at: datetime, grade: int, serious: bool, relatedness: str,
    outcome: str, actor: Actor, now: datetime, aware_at: datetime | None = None,
) -> dict[str, Any]:
    """Record an AE of a randomised patient; a serious one starts the SAE reporting clocks.

    Raises NotRandomized, PatientWithdrawn, InputError (grade not 1–5, unknown relatedness or outcome, empty
    term, times in the future or awareness before onset), ConflictingInputError (grade 5 without a fatal
    outcome or the reverse).
    """
    aware(now, "now")
    p = get_patient(session, code, actor, "adverse_event")
    require_active(p)
    require_randomised(session, p, "an adverse event")
    if not isinstance(term, str) or not term.strip() or len(term) > 128:
        raise InputError(expected="an AE term (1-128 characters, e.g. MedDRA/CTCAE term)", got=term,
                         where="field term", todo="enter the term", field="term")
    if isinstance(grade, bool) or not isinstance(grade, int) or grade not in CTCAE_GRADES:
        raise InputError(expected="a CTCAE grade 1-5", got=grade, where="field grade", todo="grade per CTCAE v5",
                         field="grade")
    if not isinstance(serious, bool):
        raise InputError(expected="serious true or false", got=serious, where="field serious", todo="say yes or no",
                         field="serious")
    check_choice(relatedness, RELATEDNESS, "relatedness")
    check_choice(outcome, OUTCOMES, "outcome")
    if (grade == 5) != (outcome == "fatal"):
        raise ConflictingInputError(expected="grade 5 exactly when the outcome is fatal", got=f"grade {grade}, {outcome}",
                                    where="adverse event", todo="CTCAE grade 5 is death related to the AE")
    aware(onset_at, "onset_at")
    not_future(onset_at, now, "onset_at")
    aware_at = aware_at or now
    aware(aware_at, "aware_at")
    not_future(aware_at, now, "aware_at")
    if aware_at < onset_at:
        raise InputError(expected="awareness at or after onset", got=aware_at.isoformat(), where="field aware_at",
                         todo="check the times", field="aware_at")
    ae = AdverseEvent(patient_id=p.id, term=term.strip(), onset_at=onset_at, grade=grade, serious=serious,
                      relatedness=relatedness, outcome=outcome, aware_at=aware_at, initial_report_at=None,
                      followup_report_at=None, recorded_at=now, recorded_by=actor.user)
    audit.insert(session, actor, now, ae)
    return _ae_dict(ae, p.code, now)


def report_sae(session: Session, code: str, ae_id: int, kind: str, reported_at: datetime, *, actor: Actor,
               now: datetime) -> dict[str, Any]:
    """Record the ``initial`` (24 h) or ``full`` (15 days) report of a serious AE.

    Raises UnknownRecord (no such AE for the patient), InputError (not serious, kind unknown, time in the future
    or before awareness, full report before the initial one), DuplicateRecord (already reported).
    """
    aware(now, "now")
    p = get_patient(session, code, actor, "adverse_event")
    check_choice(kind, ("initial", "full"), "kind")
    ae = session.execute(select(AdverseEvent).where(AdverseEvent.id == ae_id, AdverseEvent.patient_id == p.id)
                         .with_for_update()).scalar_one_or_none()
    if ae is None:
        raise UnknownRecord(expected=f"an adverse event of {p.code}", got=ae_id, where="adverse_events",
                            todo="list the patient's AEs (`immunoguide trial ae list`)")
    if not ae.serious:
        raise InputError(expected="a serious adverse event", got=f"AE {ae_id} (not serious)", where="SAE report",
                         todo="only SAEs have reporting clocks")
    aware(reported_at, "reported_at")
    not_future(reported_at, now, "reported_at")
    if reported_at < ae.aware_at:
        raise InputError(expected="a report at or after awareness", got=reported_at.isoformat(),
                         where="field reported_at", todo="check the time", field="reported_at")
    column = "initial_report_at" if kind == "initial" else "followup_report_at"
    if getattr(ae, column) is not None:
        raise DuplicateRecord(expected=f"no {kind} report yet", got=getattr(ae, column).isoformat(),
                              where=f"AE {ae_id}", todo="each report is recorded once")
    if kind == "full" and (ae.initial_report_at is None or reported_at < ae.initial_report_at):
        raise InputError(expected="the initial report recorded before the full report", got=reported_at.isoformat(),
                         where="SAE report", todo="record the initial report first")
    changes: dict[str, Any] = {column: reported_at}
    audit.update(session, actor, now, ae, **changes)
    return _ae_dict(ae, p.code, now)


def adverse_events_view(session: Session, code: str, *, actor: Actor, now: datetime) -> list[dict[str, Any]]:
    """The patient's AEs with SAE clock status at ``now`` (no arm: blinded-safe)."""
    p = get_patient(session, code, actor, "view", lock=False)
    rows = session.execute(select(AdverseEvent).where(AdverseEvent.patient_id == p.id)
                           .order_by(AdverseEvent.onset_at, AdverseEvent.id)).scalars()
    return [_ae_dict(ae, p.code, now) for ae in rows]


def overdue_sae_reports(session: Session, *, actor: Actor, now: datetime) -> list[dict[str, Any]]:
    """Every SAE report that is overdue at ``now`` (the actor's site only for site roles)."""
    authorize(actor, "view")
    stmt = select(AdverseEvent, Patient.code).join(Patient).where(AdverseEvent.serious.is_(True))
    site = site_filter(actor)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    out = []
    for ae, code in session.execute(stmt).all():
        d = _ae_dict(ae, code, now)
        if any(c["status"] == "overdue" for k, c in d["sae_clocks"].items() if k != "source"):
            out.append(d)
    return out


def _matches(term: str, needles: Sequence[str]) -> bool:
    t = term.lower()
    return any(n.lower() in t for n in needles)


def safety_signals(session: Session, *, actor: Actor, now: datetime) -> dict[str, Any]:
    """The reported safety signals per arm vs the placebo arm of the same stratum (``dsmb`` only).

    For each signal: per arm, the randomised patients (withdrawals with data removal excluded: their data are
    gone), the patients with a matching AE (and, for a signal with context terms, those who also have a
    context AE), the events, and ``raised`` when the drug arm's proportion exceeds its placebo comparator's.
    """
    authorize(actor, "safety_signals")
    aware(now, "now")
    rules = load_safety_rules()
    from immunoguide.trial.randomization import arm_of  # arms are sealed: opened with the trial key

    rows = [(arm_of(session, slot, lst), lst.protocol, lst.stratum, p) for slot, lst, p in session.execute(
        select(AllocationSlot, AllocationList, Patient)
        .join(AllocationList, AllocationSlot.list_id == AllocationList.id)
        .join(Patient, AllocationSlot.patient_id == Patient.id)
    ).all()]
    aes: dict[int, list[AdverseEvent]] = {}
    for ae in session.execute(select(AdverseEvent)).scalars():
        aes.setdefault(ae.patient_id, []).append(ae)
    out_signals = []
    for sig in rules.signals:
        per_arm: dict[tuple[str, str], dict[str, Any]] = {}
        for arm_code, proto_label, stratum, p in rows:
            if p.data_removed:
                continue
            proto = load_protocol(proto_label)
            arm = proto.arm(arm_code)
            on_drug = any(proto.regimens[rid].drug == sig.drug for rid in arm.kits.values())
            entry = per_arm.setdefault((stratum, arm_code), {
                "stratum": stratum, "arm": arm_code, "role": arm.role, "on_drug": on_drug, "randomised": 0,
                "patients_with_event": 0, "patients_with_event_and_context": 0, "events": []})
            entry["randomised"] += 1
            mine = aes.get(p.id, [])
            hits = [a for a in mine if _matches(a.term, sig.terms)]
            ctx = bool(sig.context_terms) and any(_matches(a.term, sig.context_terms) for a in mine)
            if hits:
                entry["patients_with_event"] += 1
                if ctx:
                    entry["patients_with_event_and_context"] += 1
                entry["events"].extend({"patient": p.code, "term": a.term, "grade": a.grade, "serious": a.serious,
                                        "onset_at": a.onset_at.isoformat(), "with_context": ctx} for a in hits)
        arms = []
        for _key, e in sorted(per_arm.items()):
            e["proportion"] = e["patients_with_event"] / e["randomised"] if e["randomised"] else None
            arms.append(e)
        raised = False
        comparisons = []
        for e in arms:
            if not e["on_drug"]:
                continue
            ctrl = [c for c in arms if c["stratum"] == e["stratum"] and c["role"] == "placebo"]
            c = ctrl[0] if ctrl else None
            diff = None if c is None or c["proportion"] is None else e["proportion"] - c["proportion"]
            up = e["patients_with_event"] > 0 and (diff is None or diff > 0)
            raised = raised or up
            comparisons.append({"stratum": e["stratum"], "arm": e["arm"], "comparator": c["arm"] if c else None,
                                "risk_difference": diff, "raised": up})
        out_signals.append({"id": sig.id, "text": sig.text, "drug": sig.drug, "terms": list(sig.terms),
                            "context": sig.context_text or None, "citation": sig.citation,
                            "confidence": sig.confidence, "note": sig.note, "raised": raised,
                            "comparisons": comparisons, "arms": arms})
    return {"at": now.isoformat(), "rules_version": rules.version, "signals": out_signals}
