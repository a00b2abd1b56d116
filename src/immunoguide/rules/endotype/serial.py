"""Daily re-classification over time (:func:`reclassify_daily`): the endotype of every day with samples from the
baseline stratum on, the transitions between them and the reversal events of the protocol's reversal rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from immunoguide.errors import InputError
from immunoguide.protocols.model import (
    BiomarkerCriterion,
    Citation,
    ClassificationSpec,
    ReversalRule,
)
from immunoguide.rules.endotype.classify import (
    _canonical_methods,
    _check_time_kinds,
    _Context,
    _criterion_sentence,
    _evaluate,
    _evaluate_criterion,
    _input_used,
    _result_key,
    _rule_outcome,
    _select,
)
from immunoguide.rules.endotype.results import INDETERMINATE, BiomarkerResult, EndotypeResult, Reason, _hours, _iso
from immunoguide.rules.measurements import CensoredValue
from immunoguide.units import concept

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
