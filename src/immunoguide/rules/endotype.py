"""Immune endotype classification (MALS, immunoparalysis, …) from biomarker results, and daily re-classification.

The thresholds, precedence, timing window and reversal rules are protocol data
(:class:`~immunoguide.protocols.model.ClassificationSpec`, loaded from a versioned protocol file); this module
only evaluates them. It never guesses: when the data cannot decide, the endotype is ``"indeterminate"`` and the
result says why, with machine-readable reason codes and the endotypes that remain possible.

How a classification is made (:func:`classify_endotype`)
---------------------------------------------------------
1. **Usable results.** For each criterion (analyte, comparator, threshold, accepted assay methods) the results of
   its concept are filtered. A result is *not usable* when its assay method is not one the criterion accepts
   (``assay_method_mismatch``; mHLA-DR in MFI is not comparable with QuantiBRITE AB/c) or is not stated
   (``assay_method_missing``), when it was sampled after ``at`` (``sampled_after_at``) or resulted after ``at``
   (``not_yet_resulted``), or when its sample lies outside the protocol window
   ``[anchor − window_before_anchor_h, anchor + window_after_anchor_h]`` (``outside_window``, bounds inclusive;
   a side the protocol leaves ``None`` is not limited and a warning says so) or has no sample time to check
   against it (``sample_time_missing``).
2. **Which sample.** The *latest usable sample* (by sample time) is used. Several samples with the same latest
   sample time and different values → ``conflicting_results``; several samples of which some have no sample time
   → ``sample_time_missing`` (they cannot be ordered). The chosen sample is ``stale`` when it is older than the
   protocol's ``max_result_age_h`` at ``at``; older samples are never used instead of a stale one.
3. **Criteria.** A criterion is met (True), not met (False) or undecidable (None): censored values are compared
   as intervals (:func:`~immunoguide.rules.measurements.decide`), so ``">5000"`` decides ``> 4420`` but
   ``"GREATER THAN 2000"`` does not (``censored_undecidable``). With ``persistence_count`` N > 1 the latest sample
   must qualify and so must the latest sample of each of the N − 1 calendar days before it (consecutive days) or
   the N − 1 samples before it; when the latest qualifies but the run is shorter → undecidable
   (``persistence_not_established``), when the latest does not qualify → not met.
4. **Rules.** A rule is met when all its criteria are True, not met when any is False, else undecidable. Rules are
   taken by precedence (lower number first): the first met rule wins unless a rule before it is undecidable.
   If no rule is met, the result is ``spec.otherwise``.
5. **Indeterminate.** Otherwise every value the data leave open is tried (each uncertain concept over its possible
   interval, each unestablished persistence both ways); if all lead to the same endotype, that is the answer,
   else the endotype is ``"indeterminate"`` and ``possible_endotypes`` lists what the data cannot tell apart.

Every result records the protocol label, the inputs used with their sample/receipt/result times, their age at
``at`` (hours since sampling) and assay turnaround (sample → result hours), the results that were excluded and why,
and warnings for timing settings the protocol leaves unset (tagged *unknown* in the spec).

Examples
--------
>>> from immunoguide.protocols.model import (BiomarkerCriterion, Citation, ClassificationSpec, EndotypeRule,
...     SampleTiming)
>>> cite = Citation("example", "confirmed")
>>> high = BiomarkerCriterion("ferritin", "ferritin_ng_per_ml", ">", 4420.0, "ng/mL", cite)
>>> spec = ClassificationSpec((EndotypeRule("MALS", 1, (high,), cite),), "unclassified",
...     SampleTiming("sepsis3_onset", None, None, None, cite))
>>> r = classify_endotype(spec, [BiomarkerResult.measured("ferritin_ng_per_ml", ">5000", "ng/mL")],
...     anchor_time=None, at=None, protocol_label="example@1")
>>> r.endotype, r.reasons[0].code
('MALS', 'criteria_met')
>>> r = classify_endotype(spec, [BiomarkerResult.measured("ferritin_ng_per_ml", "GREATER THAN 2000", "ng/mL")],
...     anchor_time=None, at=None, protocol_label="example@1")
>>> r.endotype, r.possible_endotypes, r.reasons[0].code
('indeterminate', ('MALS', 'unclassified'), 'censored_undecidable')
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any

from immunoguide.errors import ConflictingInputError, InputError, MissingInputError, WrongTypeError
from immunoguide.protocols.model import (
    BiomarkerCriterion,
    Citation,
    ClassificationSpec,
    EndotypeRule,
    ReversalRule,
)
from immunoguide.rules.measurements import CensoredValue, check_interval_plausible, decide, measure
from immunoguide.units import check_plausible, check_plausible_time, concept, normalise_unit

__all__ = [
    "INDETERMINATE",
    "REASON_CODES",
    "BiomarkerResult",
    "CriterionOutcome",
    "DailyEndotype",
    "EndotypeResult",
    "ExcludedResult",
    "InputUsed",
    "Reason",
    "Reclassification",
    "ReversalEvent",
    "Transition",
    "PendingSample",
    "classify_endotype",
    "pending_from_record",
    "reclassify_daily",
    "results_from_record",
]

#: The endotype reported when the data cannot decide between endotypes.
INDETERMINATE = "indeterminate"

#: Every reason and warning code this module emits, with its meaning (stable: append, never rename).
REASON_CODES: Mapping[str, str] = MappingProxyType(
    {
        # outcome
        "criteria_met": "every criterion of the endotype rule is met",
        "criteria_not_met": "at least one criterion of the endotype rule is not met",
        "otherwise": "no endotype rule is met: the protocol's fallback endotype",
        "possible_endotypes": "which endotypes the data leave possible (several: indeterminate)",
        "outranked": "a lower-precedence endotype rule is met too; the higher-precedence one wins",
        # why a criterion cannot be decided / a result is not usable
        "missing": "no result for the analyte",
        "censored_undecidable": "a censored value (e.g. >2000) cannot decide the comparison",
        "assay_method_mismatch": "the assay method is not one the criterion accepts (values not comparable)",
        "assay_method_missing": "the criterion requires an assay method and the result does not state one",
        "outside_window": "the sample lies outside the protocol's window around the anchor",
        "stale": "the latest sample is older than the protocol's maximum result age",
        "sample_time_missing": "a sample time is needed (window, age, ordering or persistence) but not given",
        "sampled_after_at": "the sample was taken after the classification time",
        "not_yet_resulted": "the result was reported after the classification time",
        "conflicting_results": "several samples with the same sample time disagree",
        "persistence_not_established": "the latest sample qualifies but not on enough consecutive days/samples",
        "no_samples": "no sample of any analyte of the protocol on this day",
        # warnings
        "window_not_set": "the protocol sets no limit on one side of the sample window (not applied)",
        "max_result_age_not_set": "the protocol sets no maximum result age (staleness not checked)",
        "anchor_time_missing": "no anchor time given: the sample window is not checked",
        "at_missing": "no classification time given: result age and staleness not checked",
        "unused_result": "a result's concept is not used by the protocol's classification",
        "unknown_citation": "a rule the result depends on is tagged unknown in its source",
        "daily_timing": "daily re-classification uses each day's samples; window and age limits are not applied",
        "result_pending": "a sample was drawn and its result is not reported yet (not used; watched against the window)",
        "stratum_switch": "a serial sample classifies into another stratum than the randomisation stratum",
        "baseline_is_stratum": "serial endotypes start from the randomisation stratum (the classification sample)",
    }
)


@dataclass(frozen=True)
class Reason:
    """One explanation: a stable machine ``code`` (see :data:`REASON_CODES`), human ``text`` and context."""

    code: str
    text: str
    rule: str | None = None
    concept: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"code": self.code, "text": self.text, "rule": self.rule, "concept": self.concept}


@dataclass(frozen=True)
class BiomarkerResult:
    """One biomarker result in the canonical unit of its concept, with its assay method and times.

    Build it from raw lab values with :meth:`measured` (parses censored text, converts units, checks
    plausibility). Times are ``datetime`` objects, all naive or all timezone-aware within one classification.

    Attributes
    ----------
    concept : str
        Canonical concept (``"ferritin_ng_per_ml"``, ``"hla_dr_per_monocyte"``).
    value : CensoredValue
        Interval of possible true values in the concept's canonical unit (ng/mL, AB/c …).
    method : str or None
        Assay-method tag (``"quantibrite_abc"``, ``"mfi"``); ``None`` when not stated.
    sample_time, receipt_time, result_time : datetime or None
        When the blood was drawn, received by the laboratory and the result reported.
    source : str or None
        Where the result comes from (lab system, row id), for provenance.
    """

    concept: str
    value: CensoredValue
    method: str | None = None
    sample_time: datetime | None = None
    receipt_time: datetime | None = None
    result_time: datetime | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        c = concept(self.concept)
        for bound in (self.value.lower, self.value.upper):
            if bound is not None:
                check_plausible(self.concept, bound, where=f"{self.concept} ({c.unit})")
        check_interval_plausible(self.concept, self.value, where=f"{self.concept} ({c.unit})")
        times = [t for t in (self.sample_time, self.receipt_time, self.result_time) if t is not None]
        if len({t.tzinfo is None for t in times}) > 1:
            raise InputError(
                expected="sample, receipt and result times all naive or all timezone-aware",
                got=[t.isoformat() for t in times],
                where=f"{self.concept} result",
                todo="send every time with a UTC offset (or none of them)",
            )
        order = [
            ("sample_time", self.sample_time),
            ("receipt_time", self.receipt_time),
            ("result_time", self.result_time),
        ]
        known = [(n, t) for n, t in order if t is not None]
        for (n1, t1), (n2, t2) in itertools.pairwise(known):
            if t2 < t1:
                raise InputError(
                    expected=f"{n1} <= {n2}",
                    got=f"{n1} {t1.isoformat()}, {n2} {t2.isoformat()}",
                    where=f"{self.concept} result",
                    todo="check the times: a sample is drawn, then received, then resulted",
                )

    @classmethod
    def measured(
        cls,
        concept_name: str,
        raw: float | int | str,
        unit: str,
        *,
        method: str | None = None,
        sample_time: datetime | None = None,
        receipt_time: datetime | None = None,
        result_time: datetime | None = None,
        source: str | None = None,
        where: str | None = None,
    ) -> BiomarkerResult:
        """Build a result from a raw value (number or censored text) in ``unit``.

        >>> BiomarkerResult.measured("ferritin_ng_per_ml", "<15", "ug/L").value.describe()
        '<15'
        """
        value = measure(concept_name, raw, unit, where=where)
        return cls(concept_name, value, method, sample_time, receipt_time, result_time, source)

    @property
    def turnaround_h(self) -> float | None:
        """Assay turnaround: hours from sampling to the reported result (None if either time is unknown)."""
        return _hours(self.sample_time, self.result_time)


@dataclass(frozen=True)
class InputUsed:
    """A result the classification used, with its times, age and turnaround (hours)."""

    analyte: str
    concept: str
    value: str
    unit: str
    method: str | None
    sample_time: datetime | None
    receipt_time: datetime | None
    result_time: datetime | None
    age_h: float | None
    turnaround_h: float | None
    transport_h: float | None
    laboratory_h: float | None
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (times as ISO 8601)."""
        return {
            "analyte": self.analyte,
            "concept": self.concept,
            "value": self.value,
            "unit": self.unit,
            "method": self.method,
            "sample_time": _iso(self.sample_time),
            "receipt_time": _iso(self.receipt_time),
            "result_time": _iso(self.result_time),
            "age_h": self.age_h,
            "turnaround_h": self.turnaround_h,
            "transport_h": self.transport_h,
            "laboratory_h": self.laboratory_h,
            "source": self.source,
        }


@dataclass(frozen=True)
class ExcludedResult:
    """A result that was not usable for a criterion, and why (``reason.code``)."""

    concept: str
    value: str
    method: str | None
    sample_time: datetime | None
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {
            "concept": self.concept,
            "value": self.value,
            "method": self.method,
            "sample_time": _iso(self.sample_time),
            **{k: v for k, v in self.reason.to_dict().items() if k in ("code", "text")},
        }


@dataclass(frozen=True)
class CriterionOutcome:
    """How one criterion of one rule came out: ``met`` is True, False or None (undecidable)."""

    rule: str
    analyte: str
    comparator: str
    threshold: float
    unit: str
    value: str | None
    met: bool | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {
            "rule": self.rule,
            "criterion": f"{self.analyte} {self.comparator} {self.threshold:g} {self.unit}",
            "value": self.value,
            "met": self.met,
        }


@dataclass(frozen=True)
class EndotypeResult:
    """The classification of one patient at one time.

    Attributes
    ----------
    endotype : str
        A rule name (``"MALS"``, ``"immunoparalysis"``), the protocol's fallback (``"unclassified"``) or
        ``"indeterminate"``.
    possible_endotypes : tuple of str
        The endotypes the data leave possible (one element when decided).
    reasons : tuple of Reason
        Why: the met / not-met rules, or for an indeterminate result every undecidable criterion and why.
    criteria : tuple of CriterionOutcome
        Every criterion of every rule with its outcome.
    inputs_used : tuple of InputUsed
        The samples the decision rests on, with ages and turnaround: the chosen sample of each criterion of the
        rules examined up to the first met rule (all rules when none is met), then samples that established
        persistence. (MALS by ferritin alone does not list mHLA-DR.)
    excluded : tuple of ExcludedResult
        Results that were not usable, with the reason.
    protocol : str
        Protocol label (id and version) the classification used.
    anchor_time, at : datetime or None
        The anchor (e.g. Sepsis-3 onset) and the classification time.
    warnings : tuple of Reason
        Settings the protocol leaves unset, checks that could not be applied, unused inputs.
    """

    endotype: str
    possible_endotypes: tuple[str, ...]
    reasons: tuple[Reason, ...]
    criteria: tuple[CriterionOutcome, ...]
    inputs_used: tuple[InputUsed, ...]
    excluded: tuple[ExcludedResult, ...]
    protocol: str
    anchor_time: datetime | None
    at: datetime | None
    warnings: tuple[Reason, ...] = ()

    @property
    def is_indeterminate(self) -> bool:
        """True when the data cannot decide the endotype."""
        return self.endotype == INDETERMINATE

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """The machine codes of :attr:`reasons`, in order."""
        return tuple(r.code for r in self.reasons)

    @property
    def oldest_input_age_h(self) -> float | None:
        """Age at ``at`` of the oldest input used (hours since sampling), None if unknown."""
        ages = [i.age_h for i in self.inputs_used if i.age_h is not None]
        return max(ages) if ages else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (the CLI's output record)."""
        return {
            "endotype": self.endotype,
            "possible_endotypes": list(self.possible_endotypes),
            "reasons": [r.to_dict() for r in self.reasons],
            "protocol": self.protocol,
            "anchor_time": _iso(self.anchor_time),
            "at": _iso(self.at),
            "ages_h": _first_per_analyte(self.inputs_used, "age_h"),
            "turnaround_h": _first_per_analyte(self.inputs_used, "turnaround_h"),
            "oldest_input_age_h": self.oldest_input_age_h,
            "inputs_used": [i.to_dict() for i in self.inputs_used],
            "excluded": [e.to_dict() for e in self.excluded],
            "criteria": [c.to_dict() for c in self.criteria],
            "warnings": [w.to_dict() for w in self.warnings],
        }


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _first_per_analyte(inputs: Sequence[InputUsed], attribute: str) -> dict[str, float | None]:
    """``{analyte: value}`` of the first input per analyte (the chosen sample; persistence samples follow it)."""
    out: dict[str, float | None] = {}
    for i in inputs:
        out.setdefault(i.analyte, getattr(i, attribute))
    return out


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _hours(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() / 3600.0, 6)


def _opt_time_key(t: datetime | None) -> tuple[Any, ...]:
    return (0,) if t is None else (1, t)


def _result_key(r: BiomarkerResult) -> tuple[Any, ...]:
    """A total order on results (so that the outcome never depends on the order they were given in)."""
    v = r.value
    return (
        r.concept,
        _opt_time_key(r.sample_time),
        (v.lower is not None, v.lower or 0.0, v.lower_inclusive),
        (v.upper is not None, v.upper or 0.0, v.upper_inclusive),
        r.method or "",
        _opt_time_key(r.result_time),
        _opt_time_key(r.receipt_time),
        r.source or "",
        v.text,
    )


def _criterion_text(c: BiomarkerCriterion) -> str:
    return f"{c.analyte} {c.comparator} {c.threshold:g} {c.unit}"


def _value_text(r: BiomarkerResult) -> str:
    return f"{r.value.describe()} {concept(r.concept).unit}"


def _norm_method(m: str | None) -> str | None:
    return None if m is None else m.strip().lower()


def _canonical_methods(spec: ClassificationSpec, results: Sequence[BiomarkerResult]) -> list[BiomarkerResult]:
    """The results with their assay method as the protocol's tag (aliases resolved, case-insensitive)."""
    out = []
    for r in results:
        tag = spec.canonical_method(r.method)
        out.append(r if tag == r.method else replace(r, method=tag))
    return out


def _check_time_kinds(results: Sequence[BiomarkerResult], *others: datetime | None) -> None:
    kinds = {t.tzinfo is None for r in results for t in (r.sample_time, r.receipt_time, r.result_time) if t}
    kinds |= {t.tzinfo is None for t in others if t is not None}
    if len(kinds) > 1:
        raise InputError(
            expected="all times naive or all timezone-aware",
            got="a mix of naive and timezone-aware times",
            where="classification inputs",
            todo="send every time with a UTC offset (or none of them)",
        )


@dataclass(frozen=True)
class _Selection:
    """The usable results of one (concept, accepted methods) pair and the sample chosen from them."""

    usable: tuple[BiomarkerResult, ...]
    chosen: BiomarkerResult | None
    problems: tuple[Reason, ...]
    excluded: tuple[ExcludedResult, ...]


@dataclass(frozen=True)
class _Context:
    """What a selection depends on besides the results.

    ``apply_timing`` switches the protocol window and maximum result age on (baseline classification) or off
    (daily re-classification). ``day_start`` (daily re-classification): the chosen sample must be drawn at or
    after it, earlier samples only count towards persistence.
    """

    spec: ClassificationSpec
    anchor_time: datetime | None
    at: datetime | None
    apply_timing: bool
    day_start: datetime | None = None


def _key(crit: BiomarkerCriterion) -> tuple[str, tuple[str, ...]]:
    """Criteria with the same concept and accepted methods share one selection (one chosen sample)."""
    return crit.concept, tuple(sorted(m.strip().lower() for m in crit.methods))


def _exclusion(r: BiomarkerResult, crit: BiomarkerCriterion, ctx: _Context) -> Reason | None:
    """Why ``r`` cannot be used for ``crit`` (None if usable)."""
    methods = _key(crit)[1]
    if methods:
        m = _norm_method(r.method)
        if m is None:
            return Reason(
                "assay_method_missing",
                f"{crit.analyte} {_value_text(r)} has no assay method; the threshold {_criterion_text(crit)} "
                f"is defined for {', '.join(crit.methods)}",
                concept=r.concept,
            )
        if m not in methods:
            return Reason(
                "assay_method_mismatch",
                f"{crit.analyte} {_value_text(r)} measured by {r.method!r}; the threshold "
                f"{_criterion_text(crit)} is defined for {', '.join(crit.methods)} and values are not comparable",
                concept=r.concept,
            )
    if ctx.at is not None:
        if r.sample_time is not None and r.sample_time > ctx.at:
            return Reason(
                "sampled_after_at",
                f"{crit.analyte} sampled {r.sample_time.isoformat()}, after the classification time "
                f"{ctx.at.isoformat()}",
                concept=r.concept,
            )
        if r.result_time is not None and r.result_time > ctx.at:
            return Reason(
                "not_yet_resulted",
                f"{crit.analyte} resulted {r.result_time.isoformat()}, after the classification time "
                f"{ctx.at.isoformat()}",
                concept=r.concept,
            )
    timing = ctx.spec.timing
    before, after = timing.window_before_anchor_h, timing.window_after_anchor_h
    if ctx.apply_timing and ctx.anchor_time is not None and (before is not None or after is not None):
        if r.sample_time is None:
            return Reason(
                "sample_time_missing",
                f"{crit.analyte} {_value_text(r)} has no sample time: cannot check the window around {timing.anchor}",
                concept=r.concept,
            )
        lo = None if before is None else ctx.anchor_time - timedelta(hours=before)
        hi = None if after is None else ctx.anchor_time + timedelta(hours=after)
        if (lo is not None and r.sample_time < lo) or (hi is not None and r.sample_time > hi):
            rel = _hours(ctx.anchor_time, r.sample_time)
            left = "(-inf" if before is None else f"[-{before:g} h"
            right = "+inf)" if after is None else f"+{after:g} h]"
            return Reason(
                "outside_window",
                f"{crit.analyte} sampled {rel:+g} h from {timing.anchor}, outside the protocol window {left}, {right}",
                concept=r.concept,
            )
    return None


def _select(crit: BiomarkerCriterion, results: Sequence[BiomarkerResult], ctx: _Context) -> _Selection:
    """Filter the results of ``crit.concept`` and choose the latest usable sample (see the module docstring).

    ``results`` must be sorted by :func:`_result_key`.
    """
    usable: list[BiomarkerResult] = []
    excluded: list[ExcludedResult] = []
    for r in results:
        if r.concept != crit.concept:
            continue
        why = _exclusion(r, crit, ctx)
        if why is None:
            usable.append(r)
        else:
            excluded.append(ExcludedResult(r.concept, _value_text(r), r.method, r.sample_time, why))

    def fail(problem: Reason, extra: tuple[ExcludedResult, ...] = ()) -> _Selection:
        return _Selection(tuple(usable), None, (problem,), (*excluded, *extra))

    if not usable:
        if excluded:
            first: dict[str, Reason] = {}
            for e in excluded:
                first.setdefault(e.reason.code, e.reason)
            return _Selection((), None, tuple(first.values()), tuple(excluded))
        return fail(Reason("missing", f"no {crit.analyte} result", concept=crit.concept))
    if len(usable) > 1 and any(r.sample_time is None for r in usable):
        return fail(
            Reason(
                "sample_time_missing",
                f"{len(usable)} {crit.analyte} results, some without a sample time: cannot tell which is the latest",
                concept=crit.concept,
            )
        )
    latest_time = usable[-1].sample_time
    tied = [r for r in usable if r.sample_time == latest_time]
    if any(not r.value.same_interval(tied[0].value) for r in tied):
        return fail(
            Reason(
                "conflicting_results",
                f"{crit.analyte} results sampled at the same time disagree: " + ", ".join(_value_text(r) for r in tied),
                concept=crit.concept,
            )
        )
    chosen = tied[0]
    if ctx.day_start is not None and (chosen.sample_time is None or chosen.sample_time < ctx.day_start):
        return fail(Reason("missing", f"no {crit.analyte} sample on this day", concept=crit.concept))
    max_age = ctx.spec.timing.max_result_age_h
    if ctx.apply_timing and ctx.at is not None and max_age is not None:
        if chosen.sample_time is None:
            return fail(
                Reason(
                    "sample_time_missing",
                    f"{crit.analyte} {_value_text(chosen)} has no sample time: cannot check its age "
                    f"(maximum {max_age:g} h)",
                    concept=crit.concept,
                )
            )
        age = _hours(chosen.sample_time, ctx.at)
        assert age is not None
        if age > max_age:
            problem = Reason(
                "stale",
                f"latest {crit.analyte} ({_value_text(chosen)}) was sampled {age:g} h before the classification "
                f"time; the protocol accepts at most {max_age:g} h",
                concept=crit.concept,
            )
            return fail(
                problem,
                (ExcludedResult(chosen.concept, _value_text(chosen), chosen.method, chosen.sample_time, problem),),
            )
    return _Selection(tuple(usable), chosen, (), tuple(excluded))


def _persistence_run(crit: BiomarkerCriterion, sel: _Selection) -> tuple[int, tuple[BiomarkerResult, ...]]:
    """Length of the qualifying run ending at the chosen sample (the chosen one counted) and the earlier samples.

    Consecutive days: the latest sample of each calendar day before the chosen sample's day must qualify, day
    after day, with no day missing. Otherwise: the samples just before the chosen one must qualify.
    """
    chosen = sel.chosen
    assert chosen is not None
    if chosen.sample_time is None:
        return 1, ()
    earlier = [r for r in sel.usable if r.sample_time is not None and r.sample_time < chosen.sample_time]
    used: list[BiomarkerResult] = []
    run = 1
    if crit.persistence_consecutive_days:
        by_day: dict[date, list[BiomarkerResult]] = {}
        for r in earlier:
            assert r.sample_time is not None
            by_day.setdefault(r.sample_time.date(), []).append(r)
        day = chosen.sample_time.date() - timedelta(days=1)
        while run < crit.persistence_count and day in by_day:
            samples = by_day[day]
            last_time = samples[-1].sample_time
            last = [r for r in samples if r.sample_time == last_time]
            if not all(decide(r.value, crit.comparator, crit.threshold) is True for r in last):
                break
            used.append(last[0])
            run += 1
            day -= timedelta(days=1)
    else:
        for r in reversed(earlier):
            if run >= crit.persistence_count or decide(r.value, crit.comparator, crit.threshold) is not True:
                break
            used.append(r)
            run += 1
    return run, tuple(used)


def _criterion_at(crit: BiomarkerCriterion, value: CensoredValue | None, established: bool) -> bool | None:
    """Outcome of ``crit`` for a value of its concept (None = unknown) given whether persistence is established."""
    if value is None:
        return None
    d = decide(value, crit.comparator, crit.threshold)
    if d is True and crit.persistence_count > 1 and not established:
        return None
    return d


def _rule_outcome(outcomes: Iterable[bool | None]) -> bool | None:
    """All True → True; any False → False; else None."""
    vals = list(outcomes)
    if any(v is False for v in vals):
        return False
    if all(v is True for v in vals):
        return True
    return None


def _first_by_precedence(rules: Sequence[EndotypeRule], outcomes: Sequence[bool | None], otherwise: str) -> str:
    """The first met rule (rules sorted by precedence); INDETERMINATE if an undecidable rule comes first."""
    for rule, o in zip(rules, outcomes, strict=True):
        if o is None:
            return INDETERMINATE
        if o:
            return rule.name
    return otherwise


@dataclass(frozen=True)
class _CritEval:
    crit: BiomarkerCriterion
    selection: _Selection
    established: bool
    outcome: bool | None
    problems: tuple[Reason, ...]
    persistence_used: tuple[BiomarkerResult, ...]


def _evaluate_criterion(crit: BiomarkerCriterion, sel: _Selection) -> _CritEval:
    chosen = sel.chosen
    if chosen is None:
        return _CritEval(crit, sel, crit.persistence_count <= 1, None, sel.problems, ())
    established = True
    used: tuple[BiomarkerResult, ...] = ()
    run = 1
    if crit.persistence_count > 1:
        run, used = _persistence_run(crit, sel)
        established = run >= crit.persistence_count
    d = decide(chosen.value, crit.comparator, crit.threshold)
    outcome = _criterion_at(crit, chosen.value, established)
    problems: tuple[Reason, ...] = ()
    if d is None:
        problems = (
            Reason(
                "censored_undecidable",
                f"{crit.analyte} is {_value_text(chosen)} (reported {chosen.value.text!r})",
                concept=crit.concept,
            ),
        )
    elif d is True and not established:
        span = "consecutive calendar days" if crit.persistence_consecutive_days else "consecutive samples"
        problems = (
            Reason(
                "persistence_not_established",
                f"{crit.analyte} {_value_text(chosen)} qualifies on {run} of the {crit.persistence_count} "
                f"{span} required",
                concept=crit.concept,
            ),
        )
    return _CritEval(crit, sel, established, outcome, problems, used if outcome is True else ())


def _representatives(name: str, interval: CensoredValue | None, thresholds: Iterable[float]) -> list[CensoredValue]:
    """Exact values covering every way threshold comparisons on concept ``name`` can come out within ``interval``.

    ``None`` (no usable value) stands for the whole plausibility range of the concept.
    """
    c = concept(name)
    box = interval if interval is not None else CensoredValue(c.min, c.max, True, True, "")
    lo = c.min if box.lower is None else max(box.lower, c.min)
    hi = c.max if box.upper is None else min(box.upper, c.max)
    points = {lo, hi, (lo + hi) / 2.0}
    for t in thresholds:
        d = max(abs(t), 1.0) * 1e-9
        points |= {t, t - d, t + d}
    return [CensoredValue.exact(p) for p in sorted(points) if box.contains(p) and c.min <= p <= c.max]


def _possible_endotypes(
    spec: ClassificationSpec,
    rules: Sequence[EndotypeRule],
    evals: Sequence[Sequence[_CritEval]],
    selections: Mapping[tuple[str, tuple[str, ...]], _Selection],
) -> tuple[str, ...]:
    """Every endotype some true value consistent with the data leads to (step 5 of the module docstring)."""
    thresholds: dict[str, set[float]] = {}
    for rule in rules:
        for crit in rule.all_of:
            thresholds.setdefault(crit.concept, set()).add(float(crit.threshold))
    keys = sorted(selections)
    choices: list[list[CensoredValue]] = []
    for key in keys:
        chosen = selections[key].chosen
        if chosen is not None and chosen.value.is_exact:
            choices.append([chosen.value])
        else:
            choices.append(_representatives(key[0], None if chosen is None else chosen.value, thresholds[key[0]]))
    free = [(ri, ci) for ri, row in enumerate(evals) for ci, e in enumerate(row) if not e.established]
    found: set[str] = set()
    for values in itertools.product(*choices):
        assignment = dict(zip(keys, values, strict=True))
        for flags in itertools.product((True, False), repeat=len(free)):
            forced = dict(zip(free, flags, strict=True))
            outcomes = []
            for ri, rule in enumerate(rules):
                per = []
                for ci, crit in enumerate(rule.all_of):
                    o = decide(assignment[_key(crit)], crit.comparator, crit.threshold)
                    if o is True and (ri, ci) in forced:
                        o = forced[(ri, ci)]
                    per.append(o)
                outcomes.append(_rule_outcome(per))
            found.add(_first_by_precedence(rules, outcomes, spec.otherwise))
    order = [r.name for r in rules] + [spec.otherwise]
    return tuple(sorted(found, key=lambda e: (order.index(e) if e in order else len(order), e)))


def _criterion_sentence(e: _CritEval) -> str:
    chosen = e.selection.chosen
    value = "no value" if chosen is None else _value_text(chosen)
    verb = {True: "meets", False: "does not meet", None: "cannot decide"}[e.outcome]
    return f"{e.crit.analyte} {value} {verb} {_criterion_text(e.crit)}"


def _reasons(
    rules: Sequence[EndotypeRule],
    evals: Sequence[Sequence[_CritEval]],
    outcomes: Sequence[bool | None],
    endotype: str,
    possible: Sequence[str],
    otherwise: str,
    naive: str,
) -> tuple[Reason, ...]:
    """Reasons for rules up to the first met one, then outranked rules, the fallback and what stays possible."""
    out: list[Reason] = []
    first_met: EndotypeRule | None = None
    for rule, row, o in zip(rules, evals, outcomes, strict=True):
        if o is True:
            if first_met is None:
                first_met = rule
                text = "; ".join(_criterion_sentence(e) for e in row)
                out.append(Reason("criteria_met", f"{rule.name}: {text}", rule=rule.name))
            elif endotype == first_met.name and rule.name != first_met.name:
                out.append(
                    Reason(
                        "outranked",
                        f"{rule.name} criteria are met too, but {first_met.name} takes precedence "
                        f"(precedence {first_met.precedence} before {rule.precedence})",
                        rule=rule.name,
                    )
                )
            continue
        if first_met is not None:
            continue
        if o is False:
            text = "; ".join(_criterion_sentence(e) for e in row if e.outcome is False)
            out.append(Reason("criteria_not_met", f"{rule.name}: {text}", rule=rule.name))
            continue
        met = [_criterion_sentence(e) for e in row if e.outcome is True]
        context = f" ({rule.name}" + (f"; {'; '.join(met)}" if met else "") + ")"
        for e in row:
            if e.outcome is not None:
                continue
            for p in e.problems:
                r = replace(p, text=f"{p.text}: cannot decide {_criterion_text(e.crit)}{context}", rule=rule.name)
                if r not in out:
                    out.append(r)
    if all(o is False for o in outcomes):
        out.append(Reason("otherwise", f"no endotype rule is met: {otherwise}"))
    if len(possible) > 1:
        listed = (
            " from ".join(possible) if len(possible) == 2 else f"apart {', '.join(possible[:-1])} and {possible[-1]}"
        )
        out.append(Reason("possible_endotypes", f"the data cannot tell {listed}"))
    elif naive == INDETERMINATE:
        out.append(Reason("possible_endotypes", f"every value the data leave open leads to {endotype}"))
    return tuple(out)


@dataclass(frozen=True)
class _Evaluation:
    endotype: str
    possible: tuple[str, ...]
    reasons: tuple[Reason, ...]
    criteria: tuple[CriterionOutcome, ...]
    inputs: tuple[tuple[str, BiomarkerResult], ...]
    excluded: tuple[ExcludedResult, ...]


def _evaluate(spec: ClassificationSpec, results: Sequence[BiomarkerResult], ctx: _Context) -> _Evaluation:
    """Steps 1-5 of the module docstring."""
    rules = sorted(spec.endotypes, key=lambda r: (r.precedence, r.name))
    ordered = sorted(results, key=_result_key)
    selections: dict[tuple[str, tuple[str, ...]], _Selection] = {}
    evals: list[list[_CritEval]] = []
    for rule in rules:
        row = []
        for crit in rule.all_of:
            key = _key(crit)
            if key not in selections:
                selections[key] = _select(crit, ordered, ctx)
            row.append(_evaluate_criterion(crit, selections[key]))
        evals.append(row)
    outcomes = [_rule_outcome(e.outcome for e in row) for row in evals]
    naive = _first_by_precedence(rules, outcomes, spec.otherwise)
    if naive != INDETERMINATE:
        possible: tuple[str, ...] = (naive,)
        endotype = naive
    else:
        possible = _possible_endotypes(spec, rules, evals, selections)
        endotype = possible[0] if len(possible) == 1 else INDETERMINATE
    reasons = _reasons(rules, evals, outcomes, endotype, possible, spec.otherwise, naive)
    criteria = tuple(
        CriterionOutcome(
            rule.name,
            e.crit.analyte,
            e.crit.comparator,
            e.crit.threshold,
            e.crit.unit,
            None if e.selection.chosen is None else _value_text(e.selection.chosen),
            e.outcome,
        )
        for rule, row in zip(rules, evals, strict=True)
        for e in row
    )
    # inputs used: the samples of the rules that had to be examined (up to the first met rule, or all)
    first_met = next((i for i, o in enumerate(outcomes) if o is True), len(rules) - 1)
    inputs: list[tuple[str, BiomarkerResult]] = []
    for row in evals[: first_met + 1]:
        for e in row:
            for r in (e.selection.chosen, *e.persistence_used):
                if r is not None and all(r is not u for _, u in inputs):
                    inputs.append((e.crit.analyte, r))
    excluded: list[ExcludedResult] = []
    for key in sorted(selections):
        for x in selections[key].excluded:
            if x not in excluded:
                excluded.append(x)
    return _Evaluation(endotype, possible, reasons, criteria, tuple(inputs), tuple(excluded))


def _timing_warnings(spec: ClassificationSpec, anchor_time: datetime | None, at: datetime | None) -> list[Reason]:
    t = spec.timing
    out: list[Reason] = []
    src = f"source: {t.citation.source}, confidence {t.citation.confidence}"
    for side, limit in (("before", t.window_before_anchor_h), ("after", t.window_after_anchor_h)):
        if limit is None:
            out.append(
                Reason(
                    "window_not_set", f"the protocol sets no limit on samples {side} {t.anchor} ({src}): not applied"
                )
            )
    if t.max_result_age_h is None:
        out.append(
            Reason("max_result_age_not_set", f"the protocol sets no maximum result age ({src}): staleness not checked")
        )
    if anchor_time is None and (t.window_before_anchor_h is not None or t.window_after_anchor_h is not None):
        out.append(
            Reason("anchor_time_missing", f"no {t.anchor} time given: the protocol's sample window is not checked")
        )
    if at is None:
        out.append(
            Reason(
                "at_missing",
                "no classification time given: input ages are not reported"
                + (" and staleness is not checked" if t.max_result_age_h is not None else ""),
            )
        )
    return out


def _citation_warnings(spec: ClassificationSpec) -> list[Reason]:
    out: list[Reason] = []
    for rule in sorted(spec.endotypes, key=lambda r: (r.precedence, r.name)):
        cites = [(rule.name, rule.citation)] + [(_criterion_text(c), c.citation) for c in rule.all_of]
        for what, cite in cites:
            if cite.confidence == "unknown":
                out.append(Reason("unknown_citation", f"{what} is tagged unknown ({cite.source})", rule=rule.name))
    return out


def _input_used(analyte: str, r: BiomarkerResult, at: datetime | None) -> InputUsed:
    return InputUsed(
        analyte=analyte,
        concept=r.concept,
        value=r.value.describe(),
        unit=concept(r.concept).unit,
        method=r.method,
        sample_time=r.sample_time,
        receipt_time=r.receipt_time,
        result_time=r.result_time,
        age_h=_hours(r.sample_time, at),
        turnaround_h=_hours(r.sample_time, r.result_time),
        transport_h=_hours(r.sample_time, r.receipt_time),
        laboratory_h=_hours(r.receipt_time, r.result_time),
        source=r.source,
    )


def classify_endotype(
    spec: ClassificationSpec,
    results: Sequence[BiomarkerResult],
    *,
    anchor_time: datetime | None,
    at: datetime | None,
    protocol_label: str,
) -> EndotypeResult:
    """Classify the immune endotype from biomarker results under a protocol's classification rules.

    Parameters
    ----------
    spec : ClassificationSpec
        Endotype rules with precedence, fallback and sample timing (from the protocol file).
    results : sequence of BiomarkerResult
        Results in canonical units (ferritin ng/mL, mHLA-DR AB/c), in any order; several per analyte allowed.
    anchor_time : datetime or None
        The protocol's anchor (``spec.timing.anchor``, e.g. Sepsis-3 onset). None: the window is not checked
        (warning ``anchor_time_missing``).
    at : datetime or None
        Classification time: results sampled or reported later are not used; ages (hours) are measured to it
        and staleness is checked against it. None: ages and staleness are not reported (warning ``at_missing``).
    protocol_label : str
        Protocol id and version recorded in the result (``"immunosep-2025@1.0.0"``).

    Returns
    -------
    EndotypeResult
        ``endotype`` is a rule name, ``spec.otherwise`` or ``"indeterminate"`` (with reasons).

    Raises
    ------
    InputError
        Naive and timezone-aware times mixed.

    Notes
    -----
    See the module docstring: latest usable sample per analyte at or before ``at``; rules by precedence; censored
    values compared as intervals; an undecidable higher-precedence rule blocks lower ones; indeterminate when the
    data leave several endotypes possible.
    """
    _check_time_kinds(results, anchor_time, at)
    results = _canonical_methods(spec, results)
    ev = _evaluate(spec, results, _Context(spec, anchor_time, at, apply_timing=True))
    warnings = _timing_warnings(spec, anchor_time, at) + _citation_warnings(spec)
    used_concepts = {c.concept for r in spec.endotypes for c in r.all_of}
    for unused in sorted({r.concept for r in results} - used_concepts):
        warnings.append(
            Reason("unused_result", f"{unused} is not used by this protocol's classification", concept=unused)
        )
    return EndotypeResult(
        endotype=ev.endotype,
        possible_endotypes=ev.possible,
        reasons=ev.reasons,
        criteria=ev.criteria,
        inputs_used=tuple(_input_used(a, r, at) for a, r in ev.inputs),
        excluded=ev.excluded,
        protocol=protocol_label,
        anchor_time=anchor_time,
        at=at,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------------------------------------------
# daily re-classification


@dataclass(frozen=True)
class DailyEndotype:
    """The endotype of one study day (``day`` 0 = the first 24 h from the anchor), from that day's samples.

    ``endotype`` is None on a day without any sample of the protocol's analytes.
    """

    day: int
    start: datetime
    end: datetime
    endotype: str | None
    reasons: tuple[Reason, ...]
    result: EndotypeResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {
            "day": self.day,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "endotype": self.endotype,
            "possible_endotypes": None if self.result is None else list(self.result.possible_endotypes),
            "reasons": [r.to_dict() for r in self.reasons],
        }


@dataclass(frozen=True)
class Transition:
    """A change between two decided endotypes (indeterminate days and days without samples are skipped)."""

    from_endotype: str
    to_endotype: str
    from_day: int
    day: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"from": self.from_endotype, "to": self.to_endotype, "from_day": self.from_day, "day": self.day}


@dataclass(frozen=True)
class ReversalEvent:
    """A day on which a reversal rule of the baseline endotype holds.

    ``kind`` is ``"relative_fall"`` (e.g. ferritin fell by ≥ 15 % from the baseline sample) or ``"all_of"``
    (e.g. mHLA-DR > 8000 AB/c with ferritin < 4420 ng/mL on that day).
    """

    endotype: str
    day: int
    days_from_baseline: int
    kind: str
    text: str
    hours_from_baseline_sample: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {
            "endotype": self.endotype,
            "day": self.day,
            "days_from_baseline": self.days_from_baseline,
            "kind": self.kind,
            "text": self.text,
            "hours_from_baseline_sample": self.hours_from_baseline_sample,
        }


@dataclass(frozen=True)
class Reclassification:
    """Daily endotypes over a patient's serial samples, the transitions between them and reversal events.

    The *baseline* is the first day whose endotype is one of the protocol's endotype rules (not the fallback,
    not indeterminate); reversal is evaluated for that endotype on the later days. ``time_to_reversal_days`` is
    the number of days from the baseline day to the first reversal day (None: no reversal seen).
    """

    protocol: str
    anchor_time: datetime
    days: tuple[DailyEndotype, ...]
    transitions: tuple[Transition, ...]
    baseline_day: int | None
    baseline_endotype: str | None
    reversals: tuple[ReversalEvent, ...]
    warnings: tuple[Reason, ...] = field(default=())

    @property
    def time_to_reversal_days(self) -> int | None:
        """Days from the baseline day to the first reversal (None when none occurred)."""
        return self.reversals[0].days_from_baseline if self.reversals else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {
            "protocol": self.protocol,
            "anchor_time": _iso(self.anchor_time),
            "days": [d.to_dict() for d in self.days],
            "transitions": [t.to_dict() for t in self.transitions],
            "baseline_day": self.baseline_day,
            "baseline_endotype": self.baseline_endotype,
            "reversals": [r.to_dict() for r in self.reversals],
            "time_to_reversal_days": self.time_to_reversal_days,
            "warnings": [w.to_dict() for w in self.warnings],
        }


def _relative_fall(base: CensoredValue, new: CensoredValue, fraction: float) -> bool | None:
    """Whether ``new`` is at least ``fraction`` below ``base`` (True/False/None for censored values).

    A relative tolerance of 1e-9 keeps an exact 15 % fall a fall despite binary rounding (1000 → 850).
    """
    factor = 1.0 - fraction
    tol = 1e-9
    if new.upper is not None and base.lower is not None and new.upper <= factor * base.lower * (1 + tol):
        return True
    if new.lower is not None and base.upper is not None and new.lower > factor * base.upper * (1 + tol):
        return False
    return None


def reclassify_daily(
    spec: ClassificationSpec,
    results: Sequence[BiomarkerResult],
    *,
    anchor_time: datetime,
    days: int | Sequence[int],
    protocol_label: str,
    baseline_endotype: str | None = None,
    baseline_day: int | None = None,
) -> Reclassification:
    """Classify each study day from that day's samples; report transitions and reversal of the baseline endotype.

    Parameters
    ----------
    spec : ClassificationSpec
        Endotype rules and reversal rules (``spec.reversals``).
    results : sequence of BiomarkerResult
        Serial results; each needs a sample time (results without one are ignored, with a warning).
    anchor_time : datetime
        Day 0 is ``[anchor_time, anchor_time + 24 h)``, day k is ``[anchor + 24k h, anchor + 24(k+1) h)``.
    days : int or sequence of int
        ``n`` → days 0 … n−1; or explicit day numbers (e.g. the visit schedule ``(0, 2, 3, 4, 5, 7)``).
    protocol_label : str
        Protocol id and version recorded in the result.
    baseline_endotype, baseline_day : str and int, optional
        The baseline is fixed: the randomisation stratum (``baseline_endotype``) established on ``baseline_day``
        (the day of the classification sample; may be negative, before the anchor; must be one of ``days``).
        Transitions then start from the stratum (a patient randomised as immunoparalysis who is MALS on day 3 has
        a transition on day 3) and reversal is evaluated for the stratum's reversal rules only. Without them the
        baseline is the first day whose endotype is one of the protocol's endotype rules.

    Returns
    -------
    Reclassification

    Notes
    -----
    A day's endotype uses the latest sample per analyte drawn on that day; earlier days' samples count only
    towards persistence (Meisel 2009: 2 consecutive days). The protocol's classification window and maximum
    result age govern the baseline classification (:func:`classify_endotype`) and are not applied here.
    Reversal (ImmunoSep SAP p. 69, mapping to endotypes *likely*): a
    :class:`~immunoguide.protocols.model.ReversalRule` of the baseline endotype holds on a later day when its
    concept fell by at least ``relative_fall_fraction`` from the baseline day's sample (ferritin fall ≥ 15 %) or
    when all its ``all_of`` criteria are met by that day's samples (mHLA-DR > 8000 AB/c with ferritin
    < 4420 ng/mL).
    """
    _check_time_kinds(results, anchor_time)
    results = _canonical_methods(spec, results)
    day_list = list(range(days)) if isinstance(days, int) else sorted(set(days))
    warnings = [
        Reason(
            "daily_timing",
            "each day is classified from that day's samples; the protocol's sample window and maximum result age "
            "govern the baseline classification and are not applied here",
        )
    ]
    timed = sorted((r for r in results if r.sample_time is not None), key=_result_key)
    if len(timed) < len(results):
        warnings.append(
            Reason(
                "sample_time_missing",
                f"{len(results) - len(timed)} result(s) without a sample time cannot be placed on a day; ignored",
            )
        )
    used_concepts = {c.concept for r in spec.endotypes for c in r.all_of}
    daily: list[DailyEndotype] = []
    upto: dict[int, list[BiomarkerResult]] = {}
    contexts: dict[int, _Context] = {}
    for k in day_list:
        start = anchor_time + timedelta(hours=24 * k)
        end = start + timedelta(hours=24)
        before_end = [r for r in timed if r.sample_time is not None and r.sample_time < end]
        upto[k] = before_end
        contexts[k] = _Context(spec, None, None, apply_timing=False, day_start=start)
        todays = [r for r in before_end if r.sample_time is not None and r.sample_time >= start]
        if not any(r.concept in used_concepts for r in todays):
            daily.append(DailyEndotype(k, start, end, None, (Reason("no_samples", f"no samples on day {k}"),)))
            continue
        ev = _evaluate(spec, before_end, contexts[k])
        excluded = tuple(x for x in ev.excluded if x.sample_time is not None and x.sample_time >= start)
        res = EndotypeResult(
            endotype=ev.endotype,
            possible_endotypes=ev.possible,
            reasons=ev.reasons,
            criteria=ev.criteria,
            inputs_used=tuple(_input_used(a, r, None) for a, r in ev.inputs),
            excluded=excluded,
            protocol=protocol_label,
            anchor_time=anchor_time,
            at=None,
        )
        daily.append(DailyEndotype(k, start, end, ev.endotype, ev.reasons, res))

    rule_names = {r.name for r in spec.endotypes}
    baseline: DailyEndotype | None
    if baseline_endotype is not None:
        if baseline_endotype not in rule_names:
            raise InputError(expected=f"a baseline endotype among {sorted(rule_names)}", got=baseline_endotype,
                             where="reclassify_daily", todo="pass the patient's randomisation stratum")
        if baseline_day is None or baseline_day not in day_list:
            raise InputError(expected=f"baseline_day among the days {day_list}", got=baseline_day,
                             where="reclassify_daily", todo="include the classification sample's day in days")
        found = next(d for d in daily if d.day == baseline_day)
        baseline = replace(found, endotype=baseline_endotype)
        warnings.append(Reason("baseline_is_stratum", f"baseline: the randomisation stratum {baseline_endotype} "
                                                      f"(classification sample on day {baseline_day})"))
    else:
        baseline = next((d for d in daily if d.endotype in rule_names), None)

    transitions: list[Transition] = []
    last: DailyEndotype | None = baseline if baseline_endotype is not None else None
    for d in daily:
        if d.endotype is None or d.endotype == INDETERMINATE:
            continue
        if baseline_endotype is not None and baseline is not None and d.day <= baseline.day:
            continue
        if last is not None and last.endotype is not None and d.endotype != last.endotype:
            transitions.append(Transition(last.endotype, d.endotype, last.day, d.day))
        last = d

    events: list[ReversalEvent] = []
    if baseline is not None:
        for rule in spec.reversals:
            if rule.endotype == baseline.endotype:
                events.extend(_reversal_events(rule, baseline, daily, upto, contexts))
    events.sort(key=lambda e: (e.day, e.kind))
    return Reclassification(
        protocol=protocol_label,
        anchor_time=anchor_time,
        days=tuple(daily),
        transitions=tuple(transitions),
        baseline_day=None if baseline is None else baseline.day,
        baseline_endotype=None if baseline is None else baseline.endotype,
        reversals=tuple(events),
        warnings=tuple(warnings),
    )


#: Citation of the internal criterion used to pick a day's sample of a concept (no threshold is applied).
_NO_CITATION = Citation("immunoguide: latest sample of the day (no threshold)", "confirmed")


def _day_sample(results: Sequence[BiomarkerResult], concept_name: str, ctx: _Context) -> BiomarkerResult | None:
    """The latest sample of ``concept_name`` on the context's day (None if none or if tied samples disagree)."""
    crit = BiomarkerCriterion(concept_name, concept_name, ">", 0.0, concept(concept_name).unit, _NO_CITATION)
    return _select(crit, results, ctx).chosen


def _reversal_events(
    rule: ReversalRule,
    baseline: DailyEndotype,
    daily: Sequence[DailyEndotype],
    upto: Mapping[int, Sequence[BiomarkerResult]],
    contexts: Mapping[int, _Context],
) -> list[ReversalEvent]:
    events: list[ReversalEvent] = []
    base_sample = None
    if rule.relative_fall_concept is not None and rule.relative_fall_fraction is not None:
        base_sample = _day_sample(upto[baseline.day], rule.relative_fall_concept, contexts[baseline.day])
    base_result = baseline.result
    base_times = [] if base_result is None else [i.sample_time for i in base_result.inputs_used if i.sample_time]
    base_time = max(base_times) if base_times else None
    for d in daily:
        if d.day <= baseline.day:
            continue
        ctx = contexts[d.day]
        if base_sample is not None and rule.relative_fall_fraction is not None:
            new = _day_sample(upto[d.day], base_sample.concept, ctx)
            if new is not None and _relative_fall(base_sample.value, new.value, rule.relative_fall_fraction):
                unit = concept(new.concept).unit
                events.append(
                    ReversalEvent(
                        endotype=rule.endotype,
                        day=d.day,
                        days_from_baseline=d.day - baseline.day,
                        kind="relative_fall",
                        text=(
                            f"{new.concept} {new.value.describe()} {unit} on day {d.day} is at least "
                            f"{rule.relative_fall_fraction:.0%} below {base_sample.value.describe()} {unit} on "
                            f"day {baseline.day}"
                        ),
                        hours_from_baseline_sample=_hours(base_sample.sample_time, new.sample_time),
                    )
                )
        if rule.all_of:
            evals = [_evaluate_criterion(c, _select(c, upto[d.day], ctx)) for c in rule.all_of]
            if _rule_outcome(e.outcome for e in evals) is True:
                times = [e.selection.chosen.sample_time for e in evals if e.selection.chosen is not None]
                latest = max((t for t in times if t is not None), default=None)
                events.append(
                    ReversalEvent(
                        endotype=rule.endotype,
                        day=d.day,
                        days_from_baseline=d.day - baseline.day,
                        kind="all_of",
                        text=f"day {d.day}: " + "; ".join(_criterion_sentence(e) for e in evals),
                        hours_from_baseline_sample=_hours(base_time, latest),
                    )
                )
    return events


# ---------------------------------------------------------------------------------------------------------------
# flat records (CLI / service boundary)


def _parse_time(value: Any, field_name: str, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(
            expected=f"an ISO 8601 date-time text for {field_name}",
            got=value,
            where=f"{where}, field {field_name}",
            todo="send e.g. '2025-03-01T08:30:00+01:00'",
            field=field_name,
        )
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            expected=f"an ISO 8601 date-time for {field_name}",
            got=value,
            where=f"{where}, field {field_name}",
            todo="send e.g. '2025-03-01T08:30:00+01:00'",
            field=field_name,
        ) from None
    return check_plausible_time(t, field=field_name, where=f"{where}, field {field_name}")


@dataclass(frozen=True)
class PendingSample:
    """A sample drawn whose result has not been reported yet (a sample time without a value)."""

    analyte: str
    concept: str
    sample_time: datetime
    source: str | None = None
    method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"analyte": self.analyte, "concept": self.concept, "sample_time": _iso(self.sample_time),
                "source": self.source, "method": self.method}


def _analytes(spec: ClassificationSpec) -> dict[str, str]:
    analytes: dict[str, str] = {}
    crits = [c for r in spec.endotypes for c in r.all_of] + [c for rv in spec.reversals for c in rv.all_of]
    for c in crits:
        analytes.setdefault(c.analyte, c.concept)
    return analytes


def pending_from_record(
    record: Mapping[str, Any], spec: ClassificationSpec, *, where: str = "record"
) -> tuple[PendingSample, ...]:
    """The samples a flat record announces without a result: ``<analyte>_sample_time`` given, value absent.

    A pending sample is never classified; it is reported (warning ``result_pending``) and, in the trial store,
    recorded as an open order so that the assay's turnaround can be watched against the protocol window.

    >>> from immunoguide.protocols import load_protocol
    >>> spec = load_protocol("immunosep-2025").classification
    >>> [p.analyte for p in pending_from_record({"hla_dr_sample_time": "2025-03-01T08:00:00+00:00"}, spec)]
    ['hla_dr']
    """
    out: list[PendingSample] = []
    for a, conc in _analytes(spec).items():
        if record.get(a) is not None or record.get(conc) is not None:
            continue
        t = _parse_time(record.get(f"{a}_sample_time"), f"{a}_sample_time", where)
        if t is None:
            continue
        src, method = record.get(f"{a}_source"), record.get(f"{a}_method")
        if record.get(f"{a}_result_time") is not None:
            raise MissingInputError(
                expected=f"a value for {a} together with {a}_result_time", got=None, where=f"{where}, field {a}",
                todo="a reported result carries its value; leave result_time out while the result is pending",
                field=a,
            )
        out.append(PendingSample(a, conc, t, None if src is None else str(src), method if isinstance(method, str) else None))
    return tuple(out)


def results_from_record(
    record: Mapping[str, Any], spec: ClassificationSpec, *, where: str = "record"
) -> tuple[tuple[BiomarkerResult, ...], datetime | None, datetime | None]:
    """Read biomarker results and times from one flat record (one JSON line of ``immunoguide classify``).

    For each analyte of the protocol (e.g. ``ferritin`` → ``ferritin_ng_per_ml``, ``hla_dr`` →
    ``hla_dr_per_monocyte``) the record may hold the value either as ``<analyte>`` (number or censored text) with
    a required ``<analyte>_unit``, or as ``<concept>`` (the unit is in the name), plus ``<analyte>_method`` and
    ``<analyte>_sample_time`` / ``_receipt_time`` / ``_result_time`` (ISO 8601). Record-level fields:
    ``anchor_time``, ``at`` and ``id`` (echoed by the CLI). ``null`` means missing.

    Returns
    -------
    (results, anchor_time, at)

    Raises
    ------
    InputError
        Unknown field, value without unit, both spellings given, bad time, unparseable value; the error names
        the field.

    Examples
    --------
    >>> from immunoguide.protocols.model import (BiomarkerCriterion, Citation, ClassificationSpec,
    ...     EndotypeRule, SampleTiming)
    >>> cite = Citation("example", "confirmed")
    >>> spec = ClassificationSpec((EndotypeRule("MALS", 1, (BiomarkerCriterion("ferritin",
    ...     "ferritin_ng_per_ml", ">", 4420.0, "ng/mL", cite),), cite),), "unclassified",
    ...     SampleTiming("sepsis3_onset", None, 72.0, None, cite))
    >>> rs, anchor, at = results_from_record({"ferritin": "GREATER THAN 2000", "ferritin_unit": "ng/mL"}, spec)
    >>> rs[0].value.describe(), anchor, at
    ('>2000', None, None)
    """
    if not isinstance(record, Mapping):
        raise InputError(
            expected="a JSON object", got=type(record).__name__, where=where, todo="send one object per line"
        )
    analytes = _analytes(spec)
    known = {"id", "anchor_time", "at"}
    for a, conc in analytes.items():
        known |= {a, f"{a}_unit", conc, f"{a}_method", f"{a}_source"}
        known |= {f"{a}_{t}" for t in ("sample_time", "receipt_time", "result_time")}
    for key in record:
        if key not in known:
            raise InputError(
                expected="a known classification field",
                got=key,
                where=where,
                todo=f"check the spelling; fields are {', '.join(sorted(known))}",
                field=key,
            )
    results: list[BiomarkerResult] = []
    for a, conc in analytes.items():
        raw, by_concept = record.get(a), record.get(conc)
        if raw is not None and by_concept is not None and a != conc:
            raise InputError(
                expected=f"only one of {a} (+ {a}_unit) and {conc}",
                got="both",
                where=f"{where}, field {a}",
                todo="send the value once",
                field=a,
            )
        if raw is None and by_concept is None:
            continue
        if raw is not None:
            unit = record.get(f"{a}_unit")
            if unit is None:
                raise MissingInputError(
                    expected=f"{a}_unit together with {a}",
                    got=None,
                    where=f"{where}, field {a}_unit",
                    todo=f"state the unit ({', '.join(sorted(concept(conc).units))}) or send {conc}",
                    field=f"{a}_unit",
                )
            if not isinstance(unit, str):
                raise InputError(
                    expected=f"a unit text for {a}_unit",
                    got=unit,
                    where=f"{where}, field {a}_unit",
                    todo="send e.g. 'ng/mL'",
                    field=f"{a}_unit",
                )
            value, fname = raw, a
        else:
            unit, value, fname = concept(conc).unit, by_concept, conc
            stated = record.get(f"{a}_unit")
            if stated is not None and (not isinstance(stated, str) or normalise_unit(stated) != concept(conc).unit):
                raise ConflictingInputError(
                    expected=f"{conc} in {concept(conc).unit} (the unit is in the field name)",
                    got=f"{a}_unit = {stated!r}",
                    where=f"{where}, field {a}_unit",
                    todo=f"send the value as {a} with {a}_unit = {stated!r}, or drop {a}_unit",
                    field=f"{a}_unit",
                )
        if isinstance(value, bool):
            raise WrongTypeError(
                expected=f"a number or a censored value text for {fname}", got=value,
                where=f"{where}, field {fname}", todo="send the reported result (true/false is not a result)",
                field=fname,
            )
        method = record.get(f"{a}_method")
        if method is not None and not isinstance(method, str):
            raise InputError(
                expected=f"a method tag text for {a}_method",
                got=method,
                where=f"{where}, field {a}_method",
                todo="send e.g. 'quantibrite_abc'",
                field=f"{a}_method",
            )
        source = record.get(f"{a}_source")
        times = {
            t: _parse_time(record.get(f"{a}_{t}"), f"{a}_{t}", where)
            for t in ("sample_time", "receipt_time", "result_time")
        }
        try:
            results.append(
                BiomarkerResult.measured(
                    conc,
                    value,
                    unit,
                    method=method,
                    sample_time=times["sample_time"],
                    receipt_time=times["receipt_time"],
                    result_time=times["result_time"],
                    source=None if source is None else str(source),
                    where=f"{where}, field {fname}",
                )
            )
        except InputError as exc:
            if exc.field is None:
                exc.field = fname
            if exc.where is None or where not in exc.where:
                exc.where = f"{where}, field {fname}" + (f" ({exc.where})" if exc.where else "")
            raise
    anchor = _parse_time(record.get("anchor_time"), "anchor_time", where)
    at = _parse_time(record.get("at"), "at", where)
    _check_time_kinds(results, anchor, at)
    return tuple(results), anchor, at
