"""Eligibility screening against a protocol file: one result per criterion, with the evidence used.

:func:`evaluate_eligibility` reads every inclusion and exclusion criterion of a loaded protocol
(:func:`immunoguide.protocols.load_protocol`) and returns, per criterion, ``"met"``, ``"not_met"`` or
``"unknown"`` with the values, times and sources it used and a reason — the screening log a coordinator signs.
For an *exclusion*, ``"met"`` means the patient is excluded.

Overall ``eligible`` is

* ``False`` when an inclusion is not met or an exclusion is met;
* ``None`` (undetermined) when, otherwise, a criterion that is applied is unknown (missing data);
* ``True`` otherwise.

Criteria whose content the sources do not give (kind ``unknown``, e.g. ImmunoSep E8 steroid cut-off) are never
invented: they are reported as ``"unknown"`` with ``applied=False`` and do not block the overall answer, but the
setting that stands for them is listed in ``warnings``. Every result records the protocol ``id@version`` and the
settings used. The rule is pure: no clocks (``at`` is passed in), files or randomness.

Examples
--------
>>> from datetime import datetime
>>> from immunoguide.protocols import load_protocol
>>> p = load_protocol("immunosep-2025")
>>> t0 = datetime(2024, 3, 1, 8, 0)
>>> patient = PatientRecord(
...     age_years=70, sex="male", consent="patient", infection_source="CAP", admission_source="emergency_department",
...     sofa_total=9, endotype="immunoparalysis", sepsis3_onset_time=t0, planned_first_dose_time=datetime(2024, 3, 2, 20),
...     covid19=False, stage_iv_malignancy=False, dnr_order=False, anc_per_mm3=6200)
>>> r = evaluate_eligibility(p, patient)
>>> r.eligible, r.protocol, r.result("E5").status
(True, 'immunosep-2025@1.0.0', 'not_met')
>>> [(w.setting, w.decisive) for w in r.warnings]  # doctest: +NORMALIZE_WHITESPACE
[('infection_type_definitions', None), ('neutropenia_anc_threshold', False), ('other_exclusions', None),
 ('steroid_exclusion', None)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from types import MappingProxyType
from typing import Any, Literal

from immunoguide.errors import CriteriaError, InputError
from immunoguide.protocols import Protocol, SettingWarning, compare
from immunoguide.protocols._schema import (
    CRITERION_TYPES,
    Condition,
    EligibilityCriterion,
    EndotypeInCriterion,
    FlagCriterion,
    OverlayCriterion,
    Sepsis3Criterion,
    ThresholdCriterion,
    UnknownCriterion,
    ValueInCriterion,
    WindowCriterion,
)
from immunoguide.protocols.model import Citation
from immunoguide.protocols.record import TIME_POINT_FIELDS, PatientRecord, Provenance
from immunoguide.units import concept

__all__ = [
    "TIME_POINT_FIELDS",
    "CriterionResult",
    "EligibilityResult",
    "Evidence",
    "PatientRecord",
    "Provenance",
    "Status",
    "eligibility_verdict",
    "evaluate_eligibility",
]

Status = Literal["met", "not_met", "unknown"]

@dataclass(frozen=True)
class Evidence:
    """One value a criterion used: field, value, unit, when it was observed and where it comes from."""

    field: str
    value: Any
    unit: str | None
    time: datetime | None
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "field": self.field,
            "value": self.value.isoformat() if isinstance(self.value, datetime) else self.value,
            "unit": self.unit,
            "time": self.time.isoformat() if self.time else None,
            "source": self.source,
        }


@dataclass(frozen=True)
class CriterionResult:
    """The outcome of one criterion for one patient.

    ``applied`` is False for a criterion the protocol sources do not give (kind ``unknown``): it is reported,
    never decides ``eligible``, and its setting is listed in the warnings.
    """

    id: str
    section: Literal["inclusion", "exclusion"]
    kind: str
    text: str
    status: Status
    reason: str
    evidence: tuple[Evidence, ...]
    citation: Citation
    applied: bool = True
    settings_used: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def blocks(self) -> bool:
        """True when this result makes the patient ineligible."""
        return (self.section == "inclusion" and self.status == "not_met") or (
            self.section == "exclusion" and self.status == "met"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "id": self.id,
            "section": self.section,
            "kind": self.kind,
            "text": self.text,
            "status": self.status,
            "applied": self.applied,
            "reason": self.reason,
            "evidence": [e.to_dict() for e in self.evidence],
            "citation": self.citation.source,
            "confidence": self.citation.confidence,
            "settings_used": dict(self.settings_used),
        }


@dataclass(frozen=True)
class EligibilityResult:
    """The screening log of one patient against one protocol version."""

    protocol: str
    eligible: bool | None
    inclusion: tuple[CriterionResult, ...]
    exclusion: tuple[CriterionResult, ...]
    settings: Mapping[str, str]
    warnings: tuple[SettingWarning, ...]
    allowed_arms: tuple[str, ...]
    evaluated_at: datetime | None
    patient_id: str | None = None

    @property
    def criteria(self) -> tuple[CriterionResult, ...]:
        """Inclusion then exclusion results."""
        return self.inclusion + self.exclusion

    def result(self, criterion_id: str) -> CriterionResult:
        """The result of one criterion by id."""
        for r in self.criteria:
            if r.id == criterion_id:
                return r
        raise KeyError(criterion_id)

    @property
    def blocking(self) -> tuple[str, ...]:
        """Ids of the criteria that make the patient ineligible."""
        return _blocking(self.criteria)

    @property
    def undetermined(self) -> tuple[str, ...]:
        """Ids of applied criteria whose status is unknown (data to collect)."""
        return _undetermined(self.criteria)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "protocol": self.protocol,
            "patient_id": self.patient_id,
            "eligible": self.eligible,
            "blocking": list(self.blocking),
            "undetermined": list(self.undetermined),
            "allowed_arms": list(self.allowed_arms),
            "evaluated_at": self.evaluated_at.isoformat() if self.evaluated_at else None,
            "settings": dict(self.settings),
            "warnings": [w.to_dict() for w in self.warnings],
            "criteria": [r.to_dict() for r in self.criteria],
        }


# ---------------------------------------------------------------------------------------------------------------

#: What one criterion evaluates to: status, reason, the evidence used and the settings used.
_Outcome = tuple[Status, str, list[Evidence], dict[str, str]]

#: Criterion model → the :class:`_Eval` method that evaluates it (checked against the protocol format at first use).
_EVALUATORS: Mapping[type, str] = MappingProxyType(
    {
        ThresholdCriterion: "threshold",
        FlagCriterion: "flag",
        ValueInCriterion: "value_in",
        Sepsis3Criterion: "sepsis3",
        EndotypeInCriterion: "endotype_in",
        WindowCriterion: "window",
        OverlayCriterion: "overlay",
        UnknownCriterion: "unknown",
    }
)


@cache
def _evaluators() -> Mapping[type, str]:
    """:data:`_EVALUATORS`, once checked to cover exactly the criterion kinds of the protocol format.

    The protocol format (``immunoguide.protocols``) owns the criterion vocabulary and knows nothing of these
    rules; the rules check themselves against it the first time they run, so a kind added to the format without
    an evaluator fails loudly instead of being skipped.
    """
    kinds = {m: k for k, m in CRITERION_TYPES.items()}
    if set(kinds) != set(_EVALUATORS):
        raise CriteriaError(
            expected=f"an eligibility evaluator for every criterion kind of the protocol format: {sorted(kinds.values())}",
            got=sorted(kinds.get(m, m.__name__) for m in set(kinds) ^ set(_EVALUATORS)),
            where="rules.eligibility",
            todo="add (or remove) the evaluator of that kind in immunoguide/rules/eligibility.py",
        )
    return _EVALUATORS


class _Eval:
    def __init__(self, protocol: Protocol, patient: PatientRecord, settings: Mapping[str, str], at: datetime | None):
        self.p = protocol
        self.pt = patient
        self.settings = settings
        self.at = at

    def ev(self, name: str, unit: str | None = None) -> Evidence:
        value = self.pt.value_of(name)
        prov = self.pt.provenance.get(name)
        time = prov.time if prov and prov.time else (value if isinstance(value, datetime) else None)
        source = prov.source if prov and prov.source else self.pt.source
        return Evidence(field=name, value=value, unit=unit, time=time, source=source)

    # each returns (status, reason, evidence, settings_used)

    def threshold(self, c: ThresholdCriterion, option: str | None = None) -> _Outcome:
        unit = concept(c.concept).unit
        used: dict[str, str] = {}
        if c.threshold is not None:
            t = c.threshold
        else:  # the loader guarantees threshold_setting with a threshold per option
            setting, thresholds = str(c.threshold_setting), dict(c.thresholds or {})
            opt = option or self.settings[setting]
            used[setting] = opt
            t = thresholds[opt]
        ev = self.ev(c.concept, unit)
        v = ev.value
        rule = f"{c.concept} {c.comparator} {t:g} {unit}"
        if v is None:
            return "unknown", f"{c.concept} not recorded (rule: {rule})", [ev], used
        ok = compare(float(v), c.comparator, t)
        return ("met" if ok else "not_met"), f"{v:g} {unit}: {rule} is {'true' if ok else 'false'}", [ev], used

    def flag(self, c: FlagCriterion) -> _Outcome:
        want = c.met_when
        ev = self.ev(c.flag)
        if ev.value is None:
            return "unknown", f"{c.flag} not recorded", [ev], {}
        ok = bool(ev.value) == want
        return ("met" if ok else "not_met"), f"{c.flag} is {ev.value} (criterion requires {want})", [ev], {}

    def value_in(self, c: ValueInCriterion) -> _Outcome:
        ev = self.ev(c.field)
        v = ev.value
        if v is None:
            return "unknown", f"{c.field} not recorded", [ev], {}
        if c.field == "infection_source" and v not in self.p.vocabularies.infection_sources:
            return (
                "unknown",
                f"infection_source {v!r} is not a term of {self.p.id} "
                f"({sorted(self.p.vocabularies.infection_sources)}); record it in this protocol's terms",
                [ev],
                {},
            )
        ok = v in c.values
        return ("met" if ok else "not_met"), f"{c.field} is {v!r}; {'in' if ok else 'not in'} {list(c.values)}", [ev], {}

    def sepsis3(self, c: Sepsis3Criterion) -> _Outcome:
        route, tot, adm = self.pt.admission_source, self.pt.sofa_total, self.pt.sofa_admission
        evs = [self.ev("admission_source"), self.ev("sofa_total", "points")]
        ed_ok = None if tot is None else tot >= c.ed_min_total_sofa
        if route == "emergency_department":
            if ed_ok is None:
                return "unknown", "admitted through the ED; total SOFA not recorded", evs, {}
            return (
                ("met" if ed_ok else "not_met"),
                f"admitted through the ED; total SOFA {tot} {'>=' if ed_ok else '<'} {c.ed_min_total_sofa}",
                evs,
                {},
            )
        evs.append(self.ev("sofa_admission", "points"))
        inc_ok = None if tot is None or adm is None else tot - adm >= c.hospitalised_min_sofa_increase
        if route == "hospitalised":
            if inc_ok is None or tot is None or adm is None:
                return "unknown", "already hospitalised; current and admission SOFA both needed", evs, {}
            return (
                ("met" if inc_ok else "not_met"),
                f"already hospitalised; SOFA increase {tot - adm} (from {adm} to {tot}) "
                f"{'>=' if inc_ok else '<'} {c.hospitalised_min_sofa_increase}",
                evs,
                {},
            )
        # admission route unknown: decided only if both readings agree
        if ed_ok is True and inc_ok is True:
            return "met", "admission route not recorded; both Sepsis-3 readings are met", evs, {}
        if ed_ok is False:  # SOFA below the ED level also rules out an increase of that size from >= 0
            if c.hospitalised_min_sofa_increase >= c.ed_min_total_sofa:
                return "not_met", f"total SOFA {tot} < {c.ed_min_total_sofa}: neither reading can be met", evs, {}
        return "unknown", "admission route (emergency department or already hospitalised) not recorded", evs, {}

    def endotype_in(self, c: EndotypeInCriterion) -> _Outcome:
        ev = self.ev("endotype")
        v = ev.value
        if v is None:
            return "unknown", "endotype not classified yet", [ev], {}
        ok = v in c.values
        return ("met" if ok else "not_met"), f"endotype {v!r}; {'in' if ok else 'not in'} {list(c.values)}", [ev], {}

    def window(self, c: WindowCriterion) -> _Outcome:
        fa, fe = TIME_POINT_FIELDS[c.anchor], TIME_POINT_FIELDS[c.event]
        ea, ee = self.ev(fa), self.ev(fe)
        rule = f"{c.event} - {c.anchor} {c.comparator} {c.hours:g} h"
        if ea.value is None:
            return "unknown", f"{fa} not recorded (rule: {rule})", [ea, ee], {}
        if ee.value is None:
            if self.at is not None and c.comparator in ("<", "<="):
                elapsed = _hours(self.at, ea.value)
                if not compare(elapsed, c.comparator, c.hours):
                    return (
                        "not_met",
                        f"{fe} not recorded and {elapsed:g} h have already passed at {self.at.isoformat()} "
                        f"(rule: {rule}): the window has closed",
                        [ea, ee],
                        {},
                    )
            return "unknown", f"{fe} not recorded (rule: {rule})", [ea, ee], {}
        elapsed = _hours(ee.value, ea.value)
        if elapsed < 0:
            return "not_met", f"{fe} is {-elapsed:g} h before {fa}", [ea, ee], {}
        ok = compare(elapsed, c.comparator, c.hours)
        return ("met" if ok else "not_met"), f"{elapsed:g} h: {rule} is {'true' if ok else 'false'}", [ea, ee], {}

    def overlay(self, c: OverlayCriterion) -> _Outcome:
        o = next(o for o in self.p.overlays if o.id == c.overlay)
        applies, evs = self.condition(o.when)
        ee = self.ev("endotype")
        evs.append(ee)
        served = {e for a in self.p.arms if a.code in o.allowed_arms for e in a.endotypes}
        endo_ok = None if ee.value is None else ee.value in served
        if applies is False:
            return "met", f"overlay {o.id} does not apply ({o.when.field} is {self.pt.value_of(o.when.field)})", evs, {}
        if endo_ok is True:
            return "met", f"endotype {ee.value!r} is served by the arms open under {o.id}: {list(o.allowed_arms)}", evs, {}
        if applies is True and endo_ok is False:
            return (
                "not_met",
                f"{o.when.field} is {self.pt.value_of(o.when.field)}: only arms {list(o.allowed_arms)} are open, "
                f"none serves endotype {ee.value!r}",
                evs,
                {},
            )
        missing = [e.field for e in evs if e.value is None]
        return "unknown", f"overlay {o.id}: {', '.join(missing)} not recorded", evs, {}

    def unknown(self, c: UnknownCriterion) -> _Outcome:
        s = self.p.settings[c.setting]
        opt = self.settings[c.setting]
        return "unknown", f"not evaluated (setting {c.setting}={opt}): {s.warning}", [], {c.setting: opt}

    def condition(self, cond: Condition) -> tuple[bool | None, list[Evidence]]:
        ev = self.ev(cond.field)
        if ev.value is None:
            return None, [ev]
        return ev.value in cond.values and isinstance(ev.value, bool) == isinstance(cond.values[0], bool), [ev]

    def run(self, c: EligibilityCriterion, section: Literal["inclusion", "exclusion"]) -> CriterionResult:
        status, reason, evs, used = getattr(self, _evaluators()[type(c)])(c)
        if c.applies_if is not None:
            applies, cevs = self.condition(c.applies_if)
            evs = cevs + evs
            passing = status == ("met" if section == "inclusion" else "not_met")
            cond_text = f"{c.applies_if.field} in {list(c.applies_if.values)}"
            if applies is False:
                status = "met" if section == "inclusion" else "not_met"
                reason = f"not applicable: applies only if {cond_text}"
            elif applies is None and not passing:
                status, reason = "unknown", f"applies only if {cond_text}, which is not recorded; {reason}"
        for s in c.depends_on_settings:
            used.setdefault(s, self.settings[s])
        return CriterionResult(
            id=c.id,
            section=section,
            kind=c.kind,
            text=c.text,
            status=status,
            reason=reason,
            evidence=tuple(evs),
            citation=c.cite(),
            applied=c.kind != "unknown",
            settings_used=MappingProxyType(used),
        )


def _hours(later: datetime, earlier: datetime) -> float:
    try:
        return (later - earlier).total_seconds() / 3600.0
    except TypeError:
        raise InputError(
            expected="times that are all timezone-aware or all naive",
            got=f"{later!r} and {earlier!r}",
            where="eligibility times",
            todo="send every time with an offset (or none of them)",
        ) from None


def _allowed_arms(protocol: Protocol, patient: PatientRecord, ev: _Eval) -> tuple[str, ...]:
    arms = [a for a in protocol.arms if patient.endotype is None or not a.endotypes or patient.endotype in a.endotypes]
    codes = [a.code for a in arms]
    for o in protocol.overlays:
        applies, _ = ev.condition(o.when)
        if applies is not False:  # applies, or unknown: stay conservative
            codes = [c for c in codes if c in o.allowed_arms]
    return tuple(codes)


def evaluate_eligibility(
    protocol: Protocol,
    patient: PatientRecord,
    *,
    at: datetime | None = None,
    settings: Mapping[str, str] | None = None,
) -> EligibilityResult:
    """Evaluate every inclusion and exclusion criterion of ``protocol`` for ``patient``.

    Parameters
    ----------
    protocol : Protocol
        A loaded protocol (:func:`immunoguide.protocols.load_protocol`).
    patient : PatientRecord
        What screening knows; ``None`` fields are unknown.
    at : datetime, optional
        The time of screening. Used only to close a time window whose event (e.g. the first dose) is not
        planned yet: when the window has already elapsed the criterion is ``not_met`` instead of ``unknown``.
    settings : mapping, optional
        Overrides of the protocol's settings (``{"neutropenia_anc_threshold": "protocol_v1_0_1000"}``);
        unknown names or options raise :class:`~immunoguide.errors.PolicyError`.

    Returns
    -------
    EligibilityResult
        One :class:`CriterionResult` per criterion, ``eligible`` True / False / None (undetermined), the arms
        still open to the patient, the settings used and a :class:`SettingWarning` for every *unknown* setting
        the result depends on (``decisive`` tells whether another option would have changed it).

    Raises
    ------
    InputError
        An endotype that the protocol does not declare, or mixed naive and aware times.
    """
    used, ev, incl, excl, eligible = _judge(protocol, patient, at, settings)
    depends: dict[str, list[str]] = {}
    decisive: dict[str, bool | None] = {}
    for c in protocol.criteria:
        setting_names = list(c.depends_on_settings)
        if isinstance(c, UnknownCriterion):
            setting_names.append(c.setting)
        if isinstance(c, ThresholdCriterion) and c.threshold_setting:
            setting_names.append(c.threshold_setting)
            statuses = {ev.threshold(c, opt)[0] for opt in protocol.settings[c.threshold_setting].options}
            decisive[c.threshold_setting] = decisive.get(c.threshold_setting) or len(statuses) > 1
        for n in setting_names:
            depends.setdefault(n, []).append(c.id)
    warnings = protocol.setting_warnings(dict(sorted(depends.items())), used, decisive)
    return EligibilityResult(
        protocol=protocol.label,
        eligible=eligible,
        inclusion=incl,
        exclusion=excl,
        settings=MappingProxyType(used),
        warnings=warnings,
        allowed_arms=() if eligible is False else _allowed_arms(protocol, patient, ev),
        evaluated_at=at,
        patient_id=patient.patient_id,
    )


def eligibility_verdict(
    protocol: Protocol, patient: PatientRecord, *, at: datetime | None = None
) -> tuple[bool | None, tuple[str, ...], tuple[str, ...]]:
    """``eligible``, ``blocking`` and ``undetermined`` of :func:`evaluate_eligibility` with the protocol's settings,
    without the setting warnings and open arms it also works out.

    A cohort screening keeps only these three per stay; the warnings re-evaluate every threshold criterion once per
    option of its setting, which is most of the remaining cost per stay. Same criteria, same answers, same errors.
    """
    _, _, incl, excl, eligible = _judge(protocol, patient, at, None)
    return eligible, _blocking(incl + excl), _undetermined(incl + excl)


def _judge(
    protocol: Protocol, patient: PatientRecord, at: datetime | None, settings: Mapping[str, str] | None
) -> tuple[dict[str, str], _Eval, tuple[CriterionResult, ...], tuple[CriterionResult, ...], bool | None]:
    """Settings used, the evaluator, inclusion and exclusion results and the overall answer (see
    :func:`evaluate_eligibility`)."""
    used = protocol.resolve_settings(settings)
    if patient.endotype is not None and protocol.classification is not None:
        names = set(protocol.endotype_names) | {protocol.classification.otherwise}
        if patient.endotype not in names:
            raise InputError(
                expected=f"an endotype of {protocol.label}: {sorted(names)}",
                got=patient.endotype,
                where="field endotype",
                todo="classify with this protocol's classification (immunoguide classify) or leave it empty",
                field="endotype",
            )
    ev = _Eval(protocol, patient, used, at)
    incl = tuple(ev.run(c, "inclusion") for c in protocol.inclusion)
    excl = tuple(ev.run(c, "exclusion") for c in protocol.exclusion)
    results = incl + excl
    eligible = False if _blocking(results) else None if _undetermined(results) else True
    return used, ev, incl, excl, eligible


def _blocking(results: tuple[CriterionResult, ...]) -> tuple[str, ...]:
    """Ids of the criteria that make the patient ineligible."""
    return tuple(r.id for r in results if r.blocks)


def _undetermined(results: tuple[CriterionResult, ...]) -> tuple[str, ...]:
    """Ids of applied criteria whose status is unknown (data to collect)."""
    return tuple(r.id for r in results if r.applied and r.status == "unknown")
