"""Set-wise checks of a timeline folder before the engine scores it: the rows the single-patient rules would refuse.

The adapters never write such rows (they count them in ``data_quality`` instead), but a timeline folder can also be
written by hand or by another tool. Without these checks the engine would drop some of them without a word (an
outtime before the intime gives an empty grid; a row of a stay that is not in ``stays`` never joins) and score
others (a platelet count of −5, a NaN). :func:`timeline_issues_expr` finds them with the same limits the rules use
— :class:`immunoguide.rules.timeline.PatientTimeline` and its parts, the plausibility ranges of
``criteria/concepts.toml``, only for the rows :func:`immunoguide.cohort.timelines.iter_timelines` passes to the
rules — and :func:`without_issues` removes exactly those rows (a broken stay row removes the stay), so that every
one of them is counted per stay in ``data_quality`` and none is scored. :func:`immunoguide.cohort.pipeline.run_cohort`
runs both.

Issue names follow the adapters': ``times_out_of_order``, ``missing_time``, ``missing_rate``,
``implausible_value`` (out of range, NaN, or a fraction where the concept counts whole points), ``no_stay`` (the
stay is not in ``stays``), plus ``duplicate_stay``, ``unknown_drug`` and ``unknown_kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import get_args

import ibis
import ibis.expr.types as ir

from immunoguide.cohort.engine import TimelineTables

__all__ = ["ISSUES_SOURCE", "timeline_issues_expr", "without_issues"]

#: The ``source`` column of the data-quality rows written by these checks.
ISSUES_SOURCE = "engine timeline check"


@dataclass(frozen=True)
class _Check:
    table: str
    issue: str
    item: Callable[[ir.Table], ir.StringValue]
    bad: Callable[[ir.Table], ir.BooleanValue]
    example: Callable[[ir.Table], ir.Value]


def _is_nan(x: ir.FloatingValue) -> ir.BooleanValue:
    """NaN, tested on the value's text: DuckDB folds ``isnan`` (and comparisons) to false from Parquet row-group
    statistics, which pyarrow writes without the NaNs (seen with DuckDB 2.0); Spark writes "NaN", DuckDB "nan"."""
    return x.cast("string").lower().isin(["nan", "-nan"])


def _outside(x: ir.FloatingValue, lo: float, hi: float, *, whole: bool = False) -> ir.BooleanValue:
    bad = _is_nan(x) | (x < lo) | (x > hi)
    if whole:
        bad = bad | (x != x.floor())
    return bad  # NULL for a NULL value (no value, nothing to refuse); not x.notnull(): Ibis on Spark calls NaN null


def _lit(text: str) -> Callable[[ir.Table], ir.StringValue]:
    return lambda _t: ibis.literal(text)


def _checks() -> list[_Check]:
    from immunoguide.cohort.timelines import SOFA_OBSERVATION_CONCEPTS
    from immunoguide.rules.sofa import Ventilation
    from immunoguide.rules.timeline import CATECHOLAMINES, FLAG_CONCEPTS, Drug
    from immunoguide.units import concept

    numeric = sorted(SOFA_OBSERVATION_CONCEPTS - set(FLAG_CONCEPTS))
    ranges = {n: concept(n) for n in numeric}

    def obs_implausible(t: ir.Table) -> ir.BooleanValue:
        return ibis.cases(
            *[(t.concept == n, _outside(t.value, c.min, c.max, whole=c.integer)) for n, c in ranges.items()],
            else_=False,
        )

    rate_range = {d: concept(f"{d}_ug_kg_min") for d in CATECHOLAMINES}

    def rate_implausible(t: ir.Table) -> ir.BooleanValue:
        return ibis.cases(
            *[(t.drug == d, _outside(t.rate_ug_kg_min, c.min, c.max)) for d, c in rate_range.items()],
            else_=_outside(t.rate_ug_kg_min, 0.0, 100.0),  # the other agents' rate, when given (Infusion)
        )

    def col(name: str) -> Callable[[ir.Table], ir.Value]:
        return lambda t: t[name].cast("string")

    def times(a: str, b: str) -> Callable[[ir.Table], ir.Value]:
        return lambda t: t[a].cast("string").concat(" > ", t[b].cast("string"))

    sofa_obs = sorted(SOFA_OBSERVATION_CONCEPTS)
    return [
        _Check("stays", "missing_time", _lit("intime"), lambda t: t.intime.isnull(), col("stay_id")),
        _Check("stays", "times_out_of_order", _lit("outtime"), lambda t: t.outtime < t.intime, times("intime", "outtime")),
        _Check("stays", "implausible_value", _lit("weight_kg"), lambda t: _outside(t.weight_kg, concept("weight_kg").min, concept("weight_kg").max), col("weight_kg")),  # noqa: E501
        # observations: only the rows the rules read (SOFA concepts with a value)
        _Check("observations", "missing_time", lambda t: t.concept, lambda t: t.concept.isin(sofa_obs) & t.value.notnull() & t.time.isnull(), col("value")),  # noqa: E501
        _Check("observations", "implausible_value", lambda t: t.concept, obs_implausible, col("value")),
        _Check("infusions", "unknown_drug", lambda t: t.drug, lambda t: t.drug.isnull() | ~t.drug.isin(list(get_args(Drug))), col("drug")),  # noqa: E501
        _Check("infusions", "missing_time", lambda t: t.drug, lambda t: t.start.isnull() | t.stop.isnull(), col("drug")),
        _Check("infusions", "times_out_of_order", lambda t: t.drug, lambda t: t.stop < t.start, times("start", "stop")),
        _Check("infusions", "missing_rate", lambda t: t.drug, lambda t: t.drug.isin(list(CATECHOLAMINES)) & t.rate_ug_kg_min.isnull(), col("start")),  # noqa: E501
        _Check("infusions", "implausible_value", lambda t: t.drug, rate_implausible, col("rate_ug_kg_min")),
        _Check("ventilation", "unknown_kind", _lit("kind"), lambda t: t.kind.isnull() | ~t.kind.isin(list(get_args(Ventilation))), col("kind")),  # noqa: E501
        _Check("ventilation", "missing_time", _lit("kind"), lambda t: t.start.isnull() | t.stop.isnull(), col("kind")),
        _Check("ventilation", "times_out_of_order", _lit("kind"), lambda t: t.stop < t.start, times("start", "stop")),
        _Check("antibiotics", "missing_time", _lit("time"), lambda t: t.time.isnull(), col("name")),
        _Check("cultures", "missing_time", _lit("time"), lambda t: t.time.isnull(), col("specimen")),
    ]


_ROW_TABLES = ("observations", "infusions", "ventilation", "antibiotics", "cultures")


def _duplicate_stays(st: ir.Table) -> ir.Table:
    """``stay_id, n``: stay ids with more than one row in ``stays``."""
    dup = st.group_by("stay_id").aggregate(n=st.count())
    return dup.filter(dup.n > 1)


def _bad_rows(t: ir.Table, checks: list[_Check]) -> ir.BooleanValue:
    out = ibis.literal(False)
    for c in checks:
        out = out | ibis.coalesce(c.bad(t), False)
    return out


def timeline_issues_expr(tables: TimelineTables) -> ir.Table:
    """Every row the rules would refuse, counted per stay: ``stay_id, source, item, issue, n, example`` (the
    ``data_quality`` schema; ``item`` is ``<table>.<column or concept>``). Empty for an adapter's output. The stays
    :func:`without_issues` removes whole are exactly those with an ``item`` of ``stays.``."""
    parts: list[ir.Table] = []
    checks = _checks()
    for c in checks:
        t = getattr(tables, c.table)
        bad = t.filter(ibis.coalesce(c.bad(t), False))
        parts.append(
            bad.select(
                stay_id=bad.stay_id,
                item=ibis.literal(f"{c.table}.").concat(ibis.coalesce(c.item(bad), "")),
                issue=ibis.literal(c.issue),
                example=c.example(bad),
            )
        )
    st = tables.stays
    dup = _duplicate_stays(st)
    parts.append(dup.select("stay_id", item=ibis.literal("stays.stay_id"), issue=ibis.literal("duplicate_stay"), example=dup.n.cast("string")))
    known = st.select("stay_id")
    for name in _ROW_TABLES:
        t = getattr(tables, name)
        orphan = t.anti_join(known, "stay_id")
        parts.append(orphan.select("stay_id", item=ibis.literal(f"{name}.stay_id"), issue=ibis.literal("no_stay"), example=orphan.stay_id.cast("string")))  # noqa: E501
    allp = parts[0]
    for p in parts[1:]:
        allp = allp.union(p, distinct=False)
    out = allp.group_by(["stay_id", "item", "issue"]).aggregate(n=allp.count(), example=allp.example.min())
    return out.select("stay_id", source=ibis.literal(ISSUES_SOURCE), item=out.item, issue=out.issue, n=out.n, example=out.example)


def without_issues(tables: TimelineTables) -> TimelineTables:
    """``tables`` without the rows :func:`timeline_issues_expr` reports; a stay whose own row is broken (or
    duplicated) is removed with all its rows, so it is neither scored nor half-scored."""
    checks = _checks()
    st = tables.stays
    st_ok = st.filter(~_bad_rows(st, [c for c in checks if c.table == "stays"]))
    st_ok = st_ok.anti_join(_duplicate_stays(st).select("stay_id"), "stay_id")
    keep = st_ok.select("stay_id")
    cleaned = {"stays": st_ok}
    for name in _ROW_TABLES:
        t = getattr(tables, name)
        cleaned[name] = t.filter(~_bad_rows(t, [c for c in checks if c.table == name])).semi_join(keep, "stay_id")
    return replace(tables, **cleaned)
