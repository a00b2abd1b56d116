"""Adverse events: CTCAE v5.0 coding, grade, seriousness, relatedness, outcome; SAE reporting clocks; safety signals.

An AE is recorded with its term **coded to a CTCAE v5.0 term** (:func:`immunoguide.rules.ctcae.lookup_term`: the
CTCAE term or a listed synonym, any case; free text is refused with ``IG-E113`` and the closest terms; the AE keeps
the verbatim term and ``adverse_event_codings`` holds the CTCAE term, its MedDRA LLT code — empty and flagged when
not confirmed — and SOC), onset, CTCAE grade (1 mild … 5 death related to the AE; a grade the term does not define
is refused), serious yes/no, relatedness to the study drug, outcome and the time the site became aware of it. A
serious AE starts two reporting clocks (``trial/safety.toml``: initial report within 24 h, full report within 15
days, both from awareness — spec §3, *likely*); :func:`report_sae` records each report and every view shows each
clock as ``pending``, ``overdue``, ``on_time`` or ``late`` at ``now``.

The onset, awareness and report times are clinical event times checked like the trial's others
(:mod:`immunoguide.trial.clock`): never in the future, the onset not before the trial's start, and an AE recorded
(or an SAE report entered) more than the store's late-entry limit after the site became aware of it (after the
report was sent) needs a reason, which the audit trail keeps — an SAE report cannot be back-dated silently.

:func:`safety_signals` computes the signals the trial reported (spec §6.6: more anemia with anakinra; more
hemorrhage with interferon-γ, in patients with thrombocytopenia) from **coded** data only — AEs coded to the signal's
CTCAE terms and structured safety labs graded by CTCAE (``trial/safety_labs.py``) — honouring each signal's condition
(e.g. thrombocytopenia: a *Platelet count decreased* AE or a platelet count of grade >= 1), per arm against the
placebo arm of the same stratum, under the DSMB's statistical rule (``[signal_rule]``: Newcombe risk-difference
interval, or a Bayesian posterior threshold; :mod:`immunoguide.rules.signal_rule`). Signals need the arm, so only
the unblinded safety reviewer (``dsmb``) may see them.
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

from immunoguide.errors import ConflictingInputError, CriteriaError, DuplicateRecord, InputError, UnknownRecord
from immunoguide.protocols import load_protocol
from immunoguide.rules.ctcae import load_ctcae, lookup_term
from immunoguide.rules.signal_rule import SIGNAL_METHODS, SignalRule, evaluate_signal_rule
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor, authorize, site_filter
from immunoguide.trial._common import (
    aware,
    check_choice,
    get_patient,
    not_future,
    require_active,
    require_randomised,
)
from immunoguide.trial.models import (
    AdverseEvent,
    AdverseEventCoding,
    AllocationList,
    AllocationSlot,
    Patient,
    SafetyLabResult,
)

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


class SignalRuleSpec(_Strict):
    """The DSMB's statistical rule (``[signal_rule]``), with who set it and how sure that is."""

    method: Literal["newcombe_rd_lower_bound", "bayes_beta_binomial"]
    confidence_level: float = Field(gt=0.5, lt=1)
    margin: float = 0.0
    prior_alpha: int = Field(ge=1)
    prior_beta: int = Field(ge=1)
    posterior_threshold: float = Field(gt=0, lt=1)
    set_by: str
    confidence: Literal["confirmed", "likely", "unknown"]

    def rule(self, method: str | None = None) -> SignalRule:
        """The :class:`~immunoguide.rules.signal_rule.SignalRule` (``method`` overrides the file's)."""
        return SignalRule(method=method or self.method, confidence_level=self.confidence_level,  # type: ignore[arg-type]
                          margin=self.margin, prior_alpha=self.prior_alpha, prior_beta=self.prior_beta,
                          posterior_threshold=self.posterior_threshold)


class Signal(_Strict):
    """A safety signal on coded data: patients on ``drug`` with an event (an AE coded to one of ``event_terms`` of
    at least ``event_min_grade``, or a ``event_lab`` result graded >= ``event_lab_min_grade``), optionally only
    counted when the patient also has the condition (an AE coded to ``condition_terms``, or a ``condition_lab``
    result graded >= ``condition_lab_min_grade``) at any time or at or before the event (``condition_timing``)."""

    id: str
    text: str
    drug: str
    event_terms: tuple[str, ...] = Field(min_length=1)
    event_min_grade: int = Field(ge=1, le=5, default=1)
    event_lab: str | None = None
    event_lab_min_grade: int = Field(ge=1, le=4, default=1)
    condition_terms: tuple[str, ...] = ()
    condition_lab: str | None = None
    condition_lab_min_grade: int = Field(ge=1, le=4, default=1)
    condition_timing: Literal["any_time", "at_or_before_event"] = "any_time"
    condition_text: str = ""
    citation: str
    confidence: Literal["confirmed", "likely", "unknown"]
    note: str = ""

    @property
    def has_condition(self) -> bool:
        """Whether the signal counts only patients with its condition."""
        return bool(self.condition_terms or self.condition_lab)


class SafetyRules(_Strict):
    """``trial/safety.toml``."""

    schema_: str = Field(alias="schema")
    version: str
    protocol: str
    sae_reporting: SaeReporting
    signal_rule: SignalRuleSpec
    signals: tuple[Signal, ...] = ()


@cache
def load_safety_rules() -> SafetyRules:
    """The shipped safety rules (validated: unknown keys refused; every term a CTCAE v5.0 term, every lab a graded
    safety lab, every drug one of the protocol's)."""
    text = (resources.files("immunoguide.trial") / "safety.toml").read_text(encoding="utf-8")
    rules = SafetyRules.model_validate(tomllib.loads(text))
    proto = load_protocol(rules.protocol)
    drugs = {r.drug for r in proto.regimens.values()}
    ctcae = load_ctcae()
    for s in rules.signals:
        where = f"safety.toml signal {s.id}"
        if s.drug not in drugs:
            raise CriteriaError(expected=f"a drug of {proto.label}: {sorted(drugs)}", got=s.drug, where=where,
                                todo="fix the signal's drug")
        for t in (*s.event_terms, *s.condition_terms):
            try:
                if ctcae.term(t).term != t:
                    raise KeyError(t)
            except KeyError:
                raise CriteriaError(expected="a CTCAE v5.0 term of criteria/ctcae_v5.toml (exact spelling)", got=t,
                                    where=where, todo="use the CTCAE term, not a synonym") from None
        for lab in (s.event_lab, s.condition_lab):
            if lab is not None and lab not in ctcae.labs:
                raise CriteriaError(expected=f"a graded safety lab {sorted(ctcae.labs)}", got=lab, where=where,
                                    todo="fix the lab name")
    return rules


def _clock(start: datetime, due: datetime, done: datetime | None, now: datetime) -> dict[str, Any]:
    if done is not None:
        status = "on_time" if done <= due else "late"
    else:
        status = "overdue" if now > due else "pending"
    return {"due": due.isoformat(), "reported_at": done.isoformat() if done else None, "status": status,
            "hours_left": None if done is not None else round((due - now).total_seconds() / 3600.0, 2)}


def _coding_dict(c: AdverseEventCoding | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"ctcae_term": c.ctcae_term, "meddra_code": c.meddra_code, "soc": c.soc, "criteria": c.criteria,
            "meddra_flag": None if c.meddra_code else "MedDRA code not confirmed from a citable source"}


def _codings(session: Session, ae_ids: Sequence[int]) -> dict[int, AdverseEventCoding]:
    if not ae_ids:
        return {}
    rows = session.execute(select(AdverseEventCoding).where(AdverseEventCoding.ae_id.in_(list(ae_ids)))).scalars()
    return {c.ae_id: c for c in rows}


def _ae_dict(ae: AdverseEvent, code: str, now: datetime, coding: AdverseEventCoding | None = None) -> dict[str, Any]:
    rules = load_safety_rules().sae_reporting
    out: dict[str, Any] = {
        "id": ae.id, "patient": code, "term": ae.term, "coding": _coding_dict(coding),
        "ctcae_term": coding.ctcae_term if coding else None, "meddra_code": coding.meddra_code if coding else None,
        "onset_at": ae.onset_at.isoformat(), "grade": ae.grade,
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
    late_entry_reason: str | None = None,
) -> dict[str, Any]:
    """Record an AE of a randomised patient, coded to its CTCAE v5.0 term; a serious one starts the SAE clocks.

    ``term`` is the CTCAE v5.0 term or a listed synonym (``immunoguide safety terms QUERY``); it is stored verbatim
    with its coding (CTCAE term, MedDRA LLT code, SOC). An AE recorded more than the store's late-entry limit after
    ``aware_at`` needs ``late_entry_reason`` (kept in the audit trail).

    Raises NotRandomized, PatientWithdrawn, UnknownTermError (free text, ``IG-E113``), InputError (grade not
    1–5 or not defined for the term, unknown relatedness or outcome, times in the future or awareness before
    onset), ConflictingInputError (grade 5 without a fatal outcome or the reverse), ImplausibleTime (onset before
    the trial, a late entry without its reason).
    """
    aware(now, "now")
    p = get_patient(session, code, actor, "adverse_event")
    require_active(p)
    require_randomised(session, p, "an adverse event")
    coded = lookup_term(term)
    if isinstance(grade, bool) or not isinstance(grade, int) or grade not in CTCAE_GRADES:
        raise InputError(expected="a CTCAE grade 1-5", got=grade, where="field grade", todo="grade per CTCAE v5",
                         field="grade")
    if grade not in coded.grades:
        raise InputError(expected=f"a grade CTCAE v5.0 defines for {coded.term}: {list(coded.grades)}", got=grade,
                         where="field grade", todo="grade per the term's CTCAE v5.0 definitions", field="grade")
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
    clock.check_not_before_trial(session, onset_at, "onset_at")
    late = clock.check_late_entry(session, aware_at, now, "aware_at", late_entry_reason)
    ae = AdverseEvent(patient_id=p.id, term=term.strip(), onset_at=onset_at, grade=grade, serious=serious,
                      relatedness=relatedness, outcome=outcome, aware_at=aware_at, initial_report_at=None,
                      followup_report_at=None, recorded_at=now, recorded_by=actor.user)
    with audit.reasoned(session, late):
        audit.insert(session, actor, now, ae)
        coding = AdverseEventCoding(ae_id=ae.id, patient_id=p.id, ctcae_term=coded.term,
                                    meddra_code=coded.meddra_code or None, soc=coded.soc, criteria=load_ctcae().label,
                                    coded_at=now, coded_by=actor.user)
        audit.insert(session, actor, now, coding)
    return _ae_dict(ae, p.code, now, coding)


def report_sae(session: Session, code: str, ae_id: int, kind: str, reported_at: datetime, *, actor: Actor,
               now: datetime, late_entry_reason: str | None = None) -> dict[str, Any]:
    """Record the ``initial`` (24 h) or ``full`` (15 days) report of a serious AE.

    A report entered more than the store's late-entry limit after ``reported_at`` needs ``late_entry_reason`` (kept
    in the audit trail: the reporting clock is judged on ``reported_at``, so it is never back-dated silently).

    Raises UnknownRecord (no such AE for the patient), InputError (not serious, kind unknown, time in the future
    or before awareness, full report before the initial one), DuplicateRecord (already reported), ImplausibleTime
    (a late entry without its reason).
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
    late = clock.check_late_entry(session, reported_at, now, "reported_at", late_entry_reason)
    changes: dict[str, Any] = {column: reported_at}
    with audit.reasoned(session, late):
        audit.update(session, actor, now, ae, **changes)
    return _ae_dict(ae, p.code, now, _codings(session, [ae.id]).get(ae.id))


def adverse_events_view(session: Session, code: str, *, actor: Actor, now: datetime) -> list[dict[str, Any]]:
    """The patient's AEs with SAE clock status at ``now`` (no arm: blinded-safe)."""
    p = get_patient(session, code, actor, "view", lock=False)
    rows = list(session.execute(select(AdverseEvent).where(AdverseEvent.patient_id == p.id)
                                .order_by(AdverseEvent.onset_at, AdverseEvent.id)).scalars())
    codings = _codings(session, [ae.id for ae in rows])
    return [_ae_dict(ae, p.code, now, codings.get(ae.id)) for ae in rows]


def overdue_sae_reports(session: Session, *, actor: Actor, now: datetime) -> list[dict[str, Any]]:
    """Every SAE report that is overdue at ``now`` (the actor's site only for site roles)."""
    authorize(actor, "view")
    stmt = select(AdverseEvent, Patient.code).join(Patient).where(AdverseEvent.serious.is_(True))
    site = site_filter(actor)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    out = []
    found = session.execute(stmt).all()
    codings = _codings(session, [ae.id for ae, _ in found])
    for ae, code in found:
        d = _ae_dict(ae, code, now, codings.get(ae.id))
        if any(c["status"] == "overdue" for k, c in d["sae_clocks"].items() if k != "source"):
            out.append(d)
    return out


def _evidence(sig_terms: Sequence[str], min_grade: int, lab: str | None, lab_min_grade: int,
              aes: Sequence[tuple[AdverseEvent, AdverseEventCoding]], labs: Sequence[SafetyLabResult]) -> list[dict[str, Any]]:
    """Coded AEs and graded safety labs that match (term set / lab and minimum grades), each with its time."""
    terms = set(sig_terms)
    out: list[dict[str, Any]] = []
    for ae, c in aes:
        if c.ctcae_term in terms and ae.grade >= min_grade:
            out.append({"kind": "adverse_event", "id": ae.id, "term": c.ctcae_term, "meddra_code": c.meddra_code,
                        "verbatim": ae.term, "grade": ae.grade, "serious": ae.serious, "at": ae.onset_at})
    if lab is not None:
        for r in labs:
            if r.analyte == lab and r.grade is not None and r.grade >= lab_min_grade:
                out.append({"kind": "safety_lab", "id": r.id, "term": r.ctcae_term, "meddra_code": r.meddra_code,
                            "verbatim": f"{r.raw_value} {r.raw_unit}", "grade": r.grade, "serious": None,
                            "at": r.sample_time})
    return sorted(out, key=lambda e: (e["at"], e["kind"], e["id"]))


def _iso_ev(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "at": e["at"].isoformat()}


def safety_signals(session: Session, *, actor: Actor, now: datetime, rule_method: str | None = None) -> dict[str, Any]:
    """The reported safety signals per arm vs the placebo arm of the same stratum, under the DSMB rule (``dsmb`` only).

    For each signal and arm: the randomised patients (withdrawals with data removal excluded: their data are gone),
    the patients with an event, with the event *and* the condition (when the signal has one; timing per
    ``condition_timing``), and the evidence (coded AEs, graded labs). ``counted`` is what the rule compares: patients
    with event and condition, or with the event when there is no condition. Each drug arm is compared with its
    placebo comparator under the DSMB rule (``rule_method`` overrides the file's method: one of
    :data:`~immunoguide.rules.signal_rule.SIGNAL_METHODS`); ``raised`` only when the rule says so.
    """
    authorize(actor, "safety_signals")
    aware(now, "now")
    rules = load_safety_rules()
    if rule_method is not None and rule_method not in SIGNAL_METHODS:
        raise InputError(expected=f"a signal rule method of {SIGNAL_METHODS}", got=rule_method, where="signal rule",
                         todo="choose one of the rules")
    rule = rules.signal_rule.rule(rule_method)
    from immunoguide.trial.randomization import arm_of  # arms are sealed: opened with the trial key

    rows = [(arm_of(session, slot, lst), lst.protocol, lst.stratum, p) for slot, lst, p in session.execute(
        select(AllocationSlot, AllocationList, Patient)
        .join(AllocationList, AllocationSlot.list_id == AllocationList.id)
        .join(Patient, AllocationSlot.patient_id == Patient.id)
    ).all()]
    aes: dict[int, list[tuple[AdverseEvent, AdverseEventCoding]]] = {}
    uncoded: dict[int, int] = {}
    codings = {c.ae_id: c for c in session.execute(select(AdverseEventCoding)).scalars()}
    for ae in session.execute(select(AdverseEvent)).scalars():
        c = codings.get(ae.id)
        if c is None:
            uncoded[ae.patient_id] = uncoded.get(ae.patient_id, 0) + 1
        else:
            aes.setdefault(ae.patient_id, []).append((ae, c))
    labs: dict[int, list[SafetyLabResult]] = {}
    for r in session.execute(select(SafetyLabResult)).scalars():
        labs.setdefault(r.patient_id, []).append(r)
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
                "patients_with_event": 0, "patients_with_event_and_condition": 0, "counted": 0, "events": [],
                "uncoded_adverse_events": 0})
            entry["randomised"] += 1
            entry["uncoded_adverse_events"] += uncoded.get(p.id, 0)
            mine, my_labs = aes.get(p.id, []), labs.get(p.id, [])
            events = _evidence(sig.event_terms, sig.event_min_grade, sig.event_lab, sig.event_lab_min_grade, mine, my_labs)
            if not events:
                continue
            conds = _evidence(sig.condition_terms, 1, sig.condition_lab, sig.condition_lab_min_grade, mine, my_labs)
            if sig.condition_timing == "at_or_before_event":
                first = events[0]["at"]
                conds = [c for c in conds if c["at"] <= first]
            with_cond = bool(conds)
            entry["patients_with_event"] += 1
            if with_cond:
                entry["patients_with_event_and_condition"] += 1
            if with_cond or not sig.has_condition:
                entry["counted"] += 1
            entry["events"].append({"patient": p.code, "with_condition": with_cond if sig.has_condition else None,
                                    "evidence": [_iso_ev(e) for e in events],
                                    "condition_evidence": [_iso_ev(c) for c in conds]})
        arms = []
        for _key, e in sorted(per_arm.items()):
            e["proportion"] = e["counted"] / e["randomised"] if e["randomised"] else None
            arms.append(e)
        comparisons = []
        for e in arms:
            if not e["on_drug"]:
                continue
            ctrl = next((c for c in arms if c["stratum"] == e["stratum"] and c["role"] == "placebo"), None)
            cmp: dict[str, Any] = {"stratum": e["stratum"], "arm": e["arm"], "comparator": ctrl["arm"] if ctrl else None}
            if ctrl is None:
                cmp.update({"raised": False, "reason": "no placebo comparator randomised in this stratum yet"})
            else:
                d = evaluate_signal_rule(rule, e["counted"], e["randomised"], ctrl["counted"], ctrl["randomised"])
                cmp.update(d.to_dict())
            comparisons.append(cmp)
        out_signals.append({
            "id": sig.id, "text": sig.text, "drug": sig.drug, "event_terms": list(sig.event_terms),
            "event_lab": None if sig.event_lab is None else {"lab": sig.event_lab, "min_grade": sig.event_lab_min_grade},
            "condition": (None if not sig.has_condition else {
                "text": sig.condition_text, "terms": list(sig.condition_terms), "lab": sig.condition_lab,
                "lab_min_grade": sig.condition_lab_min_grade, "timing": sig.condition_timing}),
            "citation": sig.citation, "confidence": sig.confidence, "note": sig.note,
            "raised": any(c["raised"] for c in comparisons), "comparisons": comparisons, "arms": arms,
        })
    spec = rules.signal_rule
    return {"at": now.isoformat(), "rules_version": rules.version, "coding": load_ctcae().label,
            "rule": {**rule.to_dict(), "set_by": spec.set_by, "confidence": spec.confidence,
                     "overridden": rule_method is not None and rule_method != spec.method},
            "uncoded_adverse_events": sum(uncoded.values()), "signals": out_signals}
