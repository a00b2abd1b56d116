"""The endotype classification's result types: a biomarker result (value, unit, method, times), the reason codes,
the inputs used and excluded, each criterion's outcome and the classification result."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from immunoguide.errors import InputError
from immunoguide.rules.measurements import CensoredValue, check_interval_plausible, measure
from immunoguide.units import check_plausible, concept

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
