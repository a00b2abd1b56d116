"""One endotype classification (:func:`classify_endotype`): usable results, which sample, criteria (censored values
as intervals, persistence), rules by precedence, and the indeterminate case with the endotypes left possible."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from immunoguide.errors import InputError
from immunoguide.protocols.model import (
    BiomarkerCriterion,
    ClassificationSpec,
    EndotypeRule,
)
from immunoguide.rules.endotype.results import (
    INDETERMINATE,
    BiomarkerResult,
    CriterionOutcome,
    EndotypeResult,
    ExcludedResult,
    InputUsed,
    Reason,
    _hours,
)
from immunoguide.rules.measurements import CensoredValue, decide
from immunoguide.units import concept

# ---------------------------------------------------------------------------------------------------------------
# helpers


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
    crit_keys = [[_key(crit) for crit in rule.all_of] for rule in rules]  # once, not per assignment and flags
    found: set[str] = set()
    for values in itertools.product(*choices):
        assignment = dict(zip(keys, values, strict=True))
        for flags in itertools.product((True, False), repeat=len(free)):
            forced = dict(zip(free, flags, strict=True))
            outcomes = []
            for ri, rule in enumerate(rules):
                per = []
                for ci, crit in enumerate(rule.all_of):
                    o = decide(assignment[crit_keys[ri][ci]], crit.comparator, crit.threshold)
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
