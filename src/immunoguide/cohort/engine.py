"""The set-based engine: hourly SOFA-1 and Sepsis-3 over whole ICU databases, through Ibis.

The engine computes exactly the rules of the single-patient path — :func:`immunoguide.rules.hourly.hourly_sofa`
(semantics H1–H13 in that module) and :mod:`immunoguide.rules.sepsis3` — as set operations, so that one
expression runs on DuckDB (embedded default) or on Spark (Ibis pyspark backend). The thresholds are not restated:
every component is a ``CASE`` expression generated from the same criteria ladders and policies the rules read.
A differential test compares the two paths on every stay of the MIMIC-III demo. Hourly SOFA-2 is built on the
same hour inputs in :mod:`immunoguide.cohort.engine_sofa2`.

Shape of the computation (for speed on 100k-stay cohorts, ``benchmarks/bench_cohort.py``):
:func:`_hour_parts` builds narrow sparse tables (observations, SBP/DBP pairs, P/F with ventilation, infusion hours,
GCS hours) next to the dense hour grid (which starts earlier for a stay with urine charted before it); SOFA-1 scores
each of them where it is and keeps each score as one bit of a 64-bit integer, so one ``UNION ALL`` and one narrow
``GROUP BY (stay_id, hour_end)`` with ``bit_or`` replace a join per input; one window gives the trailing urine sums
and one ``bit_or`` window of 24 rows the rolling worst of all six components.

The engine trusts its input to hold only rows the rules accept; :mod:`immunoguide.cohort.checks` finds and removes
the others (``cohort run`` does this first and counts them in ``data_quality``).

Portability (``../shared/docs/stack.md`` §2): no ``asof_join`` (a range join + aggregation instead), no
``bucket()`` (``truncate`` instead), no ``last(include_null=False)`` (not needed), tables loaded from Parquet
so that Spark sees NULL, not NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir

from immunoguide.criteria import Criteria, Ladder, criteria_for
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import CriteriaError
from immunoguide.rules.sofa import COMPONENTS

__all__ = [
    "TimelineTables",
    "ceil_hour",
    "effective_gcs_expr",
    "hour_inputs_expr",
    "hourly_evidence_expr",
    "hourly_from_evidence_expr",
    "hourly_sofa_expr",
    "ladder_points",
    "left_join_on_stay",
    "rolled_total_expr",
]

H = ibis.interval(hours=1)
_D = SOFA_DEFINITIONS  # criteria/sofa_definitions.toml: the vocabularies and constants the rules read too
_CATECHOLAMINES = _D.catecholamines
_OTHER_VASOACTIVES = _D.other_vasoactives
_VENT_ORDER = _D.ventilation_kinds


@dataclass(frozen=True)
class TimelineTables:
    """Ibis table expressions over the timeline schema (:mod:`immunoguide.cohort.schema`)."""

    stays: ir.Table
    observations: ir.Table
    infusions: ir.Table
    ventilation: ir.Table
    antibiotics: ir.Table
    cultures: ir.Table
    diagnoses: ir.Table

    @classmethod
    def from_parquet(cls, con: Any, directory: str) -> TimelineTables:
        """Read the timeline Parquet files of ``directory`` on backend ``con``."""
        def rd(name: str) -> ir.Table:
            return con.read_parquet(f"{directory}/{name}.parquet", table_name=f"ig_{name}_{abs(hash(directory))}")

        names = ("stays", "observations", "infusions", "ventilation", "antibiotics", "cultures", "diagnoses")
        return cls(*(rd(n) for n in names))


def ceil_hour(t: ir.TimestampValue) -> ir.TimestampValue:
    """``t`` on the hour stays; else the next clock hour (rule H1)."""
    tr = t.truncate("h")
    return ibis.ifelse(tr == t, tr, tr + H)


def _interval_cond(x: ir.NumericValue, lo: float, lo_inc: bool, hi: float, hi_inc: bool) -> ir.BooleanValue:
    conds = []
    if lo != float("-inf"):
        conds.append(x >= lo if lo_inc else x > lo)
    if hi != float("inf"):
        conds.append(x <= hi if hi_inc else x < hi)
    out = ibis.literal(True)
    for c in conds:
        out = out & c
    return out


def ladder_points(ladder: Ladder, x: ir.NumericValue, resolved: Mapping[str, str]) -> ir.IntegerValue:
    """A CASE expression scoring ``x`` on ``ladder`` exactly as :meth:`Ladder.points` (contested edges first)."""
    branches = []
    for edge in ladder.contested_edges:
        i0 = next(i for i, b in enumerate(ladder.bands) if b.interval.contains(edge.value))
        at_top = ladder.bands[i0].interval.hi == edge.value
        lower, upper = (i0, i0 + 1) if at_top else (i0 - 1, i0)
        side = edge.membership[resolved[edge.policy]]
        branches.append((x == edge.value, ladder.bands[lower if side == "lower" else upper].points))
    for b in ladder.bands:
        iv = b.interval
        branches.append((_interval_cond(x, iv.lo, iv.lo_inclusive, iv.hi, iv.hi_inclusive), b.points))
    dom = ladder.domain
    inside = _interval_cond(x, dom.lo, dom.lo_inclusive, dom.hi, dom.hi_inclusive)
    return ibis.ifelse(x.isnull() | ~inside, ibis.null("int64"), ibis.cases(*branches, else_=ibis.null("int64"))).cast("int64")


@ibis.udf.agg.builtin(name="bit_or")
def _bit_or(x: int) -> int:  # type: ignore[empty-body]
    """Bitwise OR aggregate (DuckDB and Spark SQL both name it ``bit_or``; Ibis compiles no BitOr for pyspark)."""


#: Bits per slot of the packed hour score (one bit per score 0–4).
_BITS = 5


@dataclass(frozen=True)
class _HourParts:
    """The sparse per-hour pieces of H1–H10, each narrow; ``hour_end`` may lie outside the grid (dropped later)."""

    stays: ir.Table  # stay_id, first, grid0, weight_kg, anchor — one row per stay (first output and grid row, urine anchor)
    grid: ir.Table  # stay_id, hour_end — one row per grid hour (H1, H2) and per urine row before it (H10)
    obs: ir.Table  # stay_id, hour_end, concept, value — platelets, MAP, bilirubin, creatinine, urine (H3, H10)
    map_d: ir.Table  # stay_id, hour_end, map_d — one row per SBP/DBP pair
    pf: ir.Table  # stay_id, hour_end, pf, vent_rank — one row per hour with a paired gas (H4, H5)
    infusions: ir.Table  # stay_id, hour_end, drug, rate_ug_kg_min — one row per active segment and hour (H6–H8)
    gcs: ir.Table  # stay_id, hour_end, gcs_unsed, gcs_sed, gcs_pre — one row per hour with an assessment (H9)


def _pf_cap(res: Mapping[str, str]) -> ir.IntegerValue:
    """Respiration points of a P/F below 200 without support (policy ``pf_below_200_without_support``)."""
    if res["pf_below_200_without_support"] == "two_points":
        return ibis.literal(_D.pf_without_support_cap_points, "int64")
    return ibis.null("int64")


def _grid_kind(res: Mapping[str, str]) -> str:
    """The ``hourly_grid`` option (SOFA-2 criteria have none: clock hours)."""
    return res.get("hourly_grid", "clock_hours")


def _window_rows(res: Mapping[str, str]) -> int:
    """Rows of the rolling window: 24 (H12) or 25 (``rolling_window = 25_rows``, ricu)."""
    return _D.ricu_window_rows if res.get("rolling_window") == "25_rows" else _D.window_rows


def row_end_expr(t: ir.TimestampValue, intime: ir.TimestampValue, grid: str) -> ir.TimestampValue:
    """``hour_end`` of the row holding ``t``: H1 (clock hours) or H15 (whole hours since ``intime``)."""
    if grid != "icu_admission_hours":
        return ceil_hour(t)
    k = ((t.epoch_seconds() - intime.epoch_seconds()) / 3600).floor().cast("int64")
    return (intime + (k + 1).as_interval("h")).cast(t.type())


def _hour_parts(
    tables: TimelineTables, res: Mapping[str, str], urine_windows_h: tuple[int, ...], *, from_first_datum: bool = False
) -> _HourParts:
    st, obs, inf, vent = tables.stays, tables.observations, tables.infusions, tables.ventilation
    max_w = max(urine_windows_h)
    grid_kind = _grid_kind(res)
    admission = grid_kind == "icu_admission_hours"
    w_rows = _window_rows(res)

    # H1/H2: the grid bounds per stay and one row per grid hour
    o = obs.filter(obs.value.notnull())
    if admission:
        o = o.join(st.select("stay_id", _intime=st.intime), "stay_id")
        o = o.mutate(hour_end=row_end_expr(o.time, o._intime, grid_kind)).drop("_intime")
    else:
        o = o.mutate(hour_end=ceil_hour(o.time))
    u = o.filter(o.concept == "urine_output_ml")
    first_u = u.group_by("stay_id").aggregate(first_u=u.time.min(), first_uh=u.hour_end.min(), last_uh=u.hour_end.max())
    s = st.select("stay_id", "weight_kg", "outtime", first=row_end_expr(st.intime, st.intime, grid_kind), intime=st.intime)
    s = left_join_on_stay(left_join_on_stay(s, first_u), _latest_event(tables, o))
    # H1: an open stay (no outtime) runs to its latest clinical time, never before its first row
    s = s.mutate(
        last=ibis.ifelse(
            s.outtime.notnull(),
            row_end_expr(s.outtime, s.intime, grid_kind),
            ibis.greatest(s.first, row_end_expr(ibis.coalesce(s.latest, s.intime), s.intime, grid_kind)),
        )
    )
    grid0 = s.first - ibis.interval(hours=w_rows - 1)
    if from_first_datum:
        fd = _first_datum(tables, o, s, grid_kind)
        s = left_join_on_stay(s, fd)
        grid0 = ibis.least(grid0, ibis.coalesce(s.first_datum, s.first) - ibis.interval(hours=w_rows - 1))
    else:
        s = s.mutate(first_datum=ibis.null("timestamp"))
    s = s.mutate(grid0=grid0, anchor=ibis.least(s.intime, ibis.coalesce(s.first_u, s.intime)))
    # H10 urine charted before the grid still counts in the windows of the first grid rows: such a stay's rows start
    # up to max_w − 1 hours earlier ("urine rows", dropped after the urine windows), so every window stays a dense
    # ROWS frame.
    first_uh = s.first_uh
    s = s.mutate(
        start=ibis.ifelse(
            first_uh.notnull() & (first_uh < s.grid0),
            ibis.greatest(first_uh, s.grid0 - ibis.interval(hours=max_w - 1)),
            s.grid0,
        )
    )
    g0 = s.select("stay_id", "grid0", "last", "intime")
    # An integer offset series (portable: Spark's timestamp SEQUENCE drops some ranges under Ibis 12).
    n_hours = ((s.last.epoch_seconds() - s.start.epoch_seconds()) / 3600).cast("int64")
    sk = s.mutate(k=ibis.range(0, n_hours + 1).unnest())
    grid = sk.select("stay_id", hour_end=sk.start + sk.k.as_interval("h"))

    simple = o.filter(o.concept.isin([*_SIMPLE.values(), "urine_output_ml"])).select(
        "stay_id", "hour_end", "concept", "value", "time", "source"
    )

    # MAP derived from SBP/DBP charted at the same time (policy map_from_sbp_dbp)
    sbp = o.filter(o.concept == "sbp_mmhg").select("stay_id", "time", "hour_end", sbp=o.value)
    dbp = o.filter(o.concept == "dbp_mmhg").select("stay_id", "time", dbp=o.value)
    pairs = sbp.join(dbp, ["stay_id", "time"])
    map_d = pairs.select("stay_id", "hour_end", "time", map_d=(pairs.dbp + (pairs.sbp - pairs.dbp) / 3.0).round(6))

    # H4 P/F pairing (or H15 ricu matching), H5 ventilation rank in rows with a gas
    pf = _pf_ricu(o, res) if res.get("pf_pairing") == "ricu_match_2h" else _pf_latest_fio2(o, res)
    rank = ibis.cases(*[(vent.kind == k, i) for i, k in enumerate(_VENT_ORDER)], else_=len(_VENT_ORDER) - 1)
    v = vent.select("stay_id", vs=vent.start, ve=vent.stop, rank=rank)
    active_end = (v.ve >= pf.hour_end - H) if admission else (v.ve > pf.hour_end - H)
    pv = pf.left_join(v, [pf.stay_id == v.stay_id, v.vs < pf.hour_end, active_end])
    pv = pv.group_by([pf.stay_id, pf.hour_end, pf.pf]).aggregate(vent_rank=pv.rank.min())

    per_stay = s.select("stay_id", "first", "grid0", "weight_kg", "anchor", "first_uh", "last_uh", "first_datum")
    gcs = _gcs_hours_ricu(o) if res.get("gcs_assembly") == "ricu_hourly_components" else _gcs_hours(o)
    return _HourParts(per_stay, grid, simple, map_d, pv, _infusion_hours(inf, g0, res), gcs)


def _pf_latest_fio2(o: ir.Table, res: Mapping[str, str]) -> ir.Table:
    """H4: each PaO2 with the latest FiO2 of the 4 h before it; the hour's lowest ratio (``stay_id, hour_end, pf``)."""
    pao2 = o.filter(o.concept == "pao2_mmhg").select("stay_id", pt=o.time, hour_end=o.hour_end, p=o.value)
    fio2 = o.filter(o.concept == "fio2_fraction").select("stay_id", ft=o.time, f=o.value)
    pj = pao2.join(fio2, [pao2.stay_id == fio2.stay_id, fio2.ft <= pao2.pt, fio2.ft >= pao2.pt - ibis.interval(hours=_D.fio2_lookback_h)])
    latest = pj.group_by([pj.stay_id, pj.pt, pj.p, pj.hour_end]).aggregate(ft=pj.ft.max())
    paired = latest.join(fio2, [latest.stay_id == fio2.stay_id, latest.ft == fio2.ft]).group_by(
        [latest.stay_id, latest.pt, latest.p, latest.hour_end]
    ).aggregate(f=fio2.f.max())
    if res["fio2_missing"] == "room_air":
        paired = pao2.left_join(paired, ["stay_id", "pt", "p", "hour_end"]).select(
            "stay_id", "pt", "p", "hour_end", f=ibis.coalesce(ibis._.f, _D.room_air_fio2)
        )
    return paired.group_by(["stay_id", "hour_end"]).aggregate(pf=(paired.p / paired.f).round(6).min())


def _pf_ricu(o: ir.Table, res: Mapping[str, str]) -> ir.Table:
    """H15 ``pf_pairing = ricu_match_2h``: the row's lowest PaO2 and highest FiO2, matched both ways with the latest
    value of the other in the same row or the two before (ricu ``pafi``); ``stay_id, hour_end, pf``."""
    po2 = o.filter(o.concept == "pao2_mmhg")
    po2 = po2.group_by(["stay_id", "hour_end"]).aggregate(p=po2.value.min())
    fio2 = o.filter(o.concept == "fio2_fraction")
    fio2 = fio2.group_by(["stay_id", "hour_end"]).aggregate(f=fio2.value.max())
    win = ibis.interval(hours=_D.ricu_pf_match_rows)

    def latest(left: ir.Table, right: ir.Table, lcol: str, rcol: str) -> ir.Table:
        """Each row of ``left`` with the value of the latest ``right`` row at most two rows before it."""
        r = right.select(stay_id=right.stay_id, rh=right.hour_end, rv=right[rcol])
        j = left.join(r, [left.stay_id == r.stay_id, r.rh <= left.hour_end, r.rh >= left.hour_end - win])
        last = j.group_by([j.stay_id, j.hour_end]).aggregate(rh=j.rh.max())
        return last.join(r, [last.stay_id == r.stay_id, last.rh == r.rh]).select(
            stay_id=last.stay_id, hour_end=last.hour_end, other=r.rv
        )

    p_rows = po2.left_join(latest(po2, fio2, "p", "f"), ["stay_id", "hour_end"]).select(
        "stay_id", "hour_end", p=po2.p, f=ibis._.other
    )
    if res["fio2_missing"] == "room_air":
        p_rows = p_rows.mutate(f=ibis.coalesce(p_rows.f, _D.room_air_fio2))
    p_rows = p_rows.filter(p_rows.f.notnull())
    f_rows = latest(fio2, po2, "f", "p").join(fio2, ["stay_id", "hour_end"]).select(
        "stay_id", "hour_end", p=ibis._.other, f=ibis._.f
    )
    both = p_rows.select("stay_id", "hour_end", "p", "f").union(f_rows.select("stay_id", "hour_end", "p", "f"))
    return both.group_by(["stay_id", "hour_end"]).aggregate(pf=(both.p / both.f).round(6).min())


def _first_datum(tables: TimelineTables, o: ir.Table, s: ir.Table, grid: str) -> ir.Table:
    """``stay_id, first_datum``: the row of the stay's earliest SOFA datum (Sepsis-3 ``sofa_rows_from =
    first_sofa_datum``; :func:`immunoguide.rules.sepsis3.earliest_sofa_datum`)."""
    from immunoguide.rules.sepsis3 import SOFA_DATA_CONCEPTS

    inf, vent = tables.infusions, tables.ventilation
    t = o.filter(o.concept.isin(sorted(SOFA_DATA_CONCEPTS))).select("stay_id", t=o.time)
    t = t.union(inf.filter(inf.drug.isin(list(_CATECHOLAMINES))).select("stay_id", t=inf.start), distinct=False)
    t = t.union(vent.select("stay_id", t=vent.start), distinct=False)
    t = t.group_by("stay_id").aggregate(t=t.t.min())
    j = t.join(s.select("stay_id", "intime"), "stay_id")
    return j.select("stay_id", first_datum=row_end_expr(j.t, j.intime, grid))


def _latest_event(tables: TimelineTables, o: ir.Table) -> ir.Table:
    """``stay_id, latest``: the latest clinical time of each open stay — SOFA observations with a value, infusion stops,
    ventilation ends (:meth:`immunoguide.rules.timeline.PatientTimeline.last_event_time` over the timeline that
    :func:`immunoguide.cohort.timelines.iter_timelines` builds)."""
    from immunoguide.cohort.timelines import SOFA_OBSERVATION_CONCEPTS

    inf, vent, st = tables.infusions, tables.ventilation, tables.stays
    times = o.filter(o.concept.isin(sorted(SOFA_OBSERVATION_CONCEPTS))).select("stay_id", t=o.time)
    times = times.union(inf.select("stay_id", t=inf.stop), distinct=False).union(vent.select("stay_id", t=vent.stop), distinct=False)
    times = times.semi_join(st.filter(st.outtime.isnull()).select("stay_id"), "stay_id")  # only open stays need it
    return times.group_by("stay_id").aggregate(latest=times.t.max())


#: H3 concepts scored on their worst value per hour: column name → concept.
_SIMPLE = {"plt": "platelets_10e3_per_ul", "map_c": "map_mmhg", "bili": "bilirubin_mg_per_dl", "crea": "creatinine_mg_per_dl"}


def _grouped_hours(
    parts: list[ir.Table],
    aggs: Mapping[str, str],
    urine_windows_h: tuple[int, ...],
    stays: ir.Table,
    in_grid: Callable[[ir.Table], ir.BooleanValue],
) -> ir.Table:
    """``UNION ALL`` of ``parts`` (same columns), one ``GROUP BY (stay_id, hour_end)`` with ``aggs`` (column →
    min/max/sum/bit_or; ``uvol`` holds the urine volumes), the groups that hold a grid row (``in_grid(h)``), the
    per-stay columns of ``stays`` joined (after the group-by: fewer aggregates), then the trailing urine sums per
    window (H10): one window over the dense rows — ``ROWS`` frames are exact because the grid has one row per hour
    — after which the urine rows before the grid are dropped."""
    allp = parts[0]
    for p in parts[1:]:
        allp = allp.union(p, distinct=False)
    fn = {"min": lambda c: c.min(), "max": lambda c: c.max(), "sum": lambda c: c.sum(), "bit_or": _bit_or}
    h = allp.group_by(["stay_id", "hour_end"]).aggregate(**{c: fn[a](allp[c]) for c, a in aggs.items()})
    h = h.filter(in_grid(h))
    h = h.join(stays, "stay_id")
    out: dict[str, ir.Value] = {}
    for w in urine_windows_h:
        win = ibis.window(group_by="stay_id", order_by="hour_end", preceding=w - 1, following=0)
        charted = h.uvol.sum().over(win)  # NULL when no urine was charted in the window
        out[f"urine_ml_{w}h"] = ibis.coalesce(charted, 0.0).round(6)
        out[f"urine_charted_{w}h"] = charted.notnull()
    h = h.mutate(urine_observed_h=(h.hour_end.epoch_seconds() - h.anchor.epoch_seconds()) / 3600.0, **out)
    h = h.filter(h.hour_end >= h.grid0)
    return h.drop("anchor", "grid0", "uvol")


def _part(t: ir.Table, schema: Mapping[str, str], **cols: ir.Value) -> ir.Table:
    """``t`` as ``stay_id, hour_end`` + every column of ``schema`` (those not given are typed NULLs)."""
    return t.select(
        stay_id=t.stay_id,
        hour_end=t.hour_end,
        **{c: (cols[c].cast(typ) if c in cols else ibis.null(typ)) for c, typ in schema.items()},
    )


def hour_inputs_expr(
    tables: TimelineTables,
    *,
    policies: Mapping[str, str],
    urine_windows_h: tuple[int, ...] = (_D.urine_window_h,),
) -> ir.Table:
    """One row per stay and grid hour (H1, H2, look-back rows included) with the hour's inputs (H3–H10).

    ``policies`` must be resolved (every key present). Columns: ``stay_id, hour_end, first`` (the first output
    row), ``weight_kg``; worst values ``plt, map_c, bili, crea`` (H3), ``map_d`` (MAP from SBP/DBP pairs), ``pf``
    and ``vent_rank`` (H4, H5; rank in :data:`_VENT_ORDER`, NULL when no episode is active), the catecholamine
    rates (H7, H8), ``other_vasoactive`` (1 when a vasopressin, phenylephrine or milrinone segment is active, H6),
    ``gcs_any, gcs_unsed, gcs_sed, gcs_pre`` (H9; ``gcs_any`` is 1 in an hour with an assessment), and per urine
    window ``W`` ``urine_ml_<W>h`` / ``urine_charted_<W>h`` (volume, 0 when nothing was charted, and whether
    anything was charted in ``(hour_end - W h, hour_end]``, H10) with ``urine_observed_h`` (hours since the earlier
    of ICU admission and the first urine charting, uncapped). The SOFA-1 engine does not use this table (it scores inside each part, see
    :func:`hourly_sofa_expr`); SOFA-2, whose components combine several inputs, does.
    """
    p = _hour_parts(tables, policies, urine_windows_h)
    f8, i8 = "float64", "int64"
    schema = {
        "g": i8, **{c: f8 for c in _SIMPLE}, "map_d": f8, "pf": f8,
        "vent_rank": i8, **{d: f8 for d in _CATECHOLAMINES}, "other_vasoactive": i8, "gcs_any": i8,
        "gcs_unsed": f8, "gcs_sed": f8, "gcs_pre": f8, "uvol": f8,
    }  # fmt: skip
    ob, inf = p.obs, p.infusions
    parts = [
        _part(p.grid, schema, g=ibis.literal(1)),
        _part(
            ob,
            schema,
            **{k: ibis.ifelse(ob.concept == c, ob.value, ibis.null("float64")) for k, c in _SIMPLE.items()},
            uvol=ibis.ifelse(ob.concept == "urine_output_ml", ob.value, ibis.null("float64")),
        ),
        _part(p.map_d, schema, map_d=p.map_d.map_d),
        _part(p.pf, schema, pf=p.pf.pf, vent_rank=p.pf.vent_rank),
        _part(
            inf,
            schema,
            **{d: ibis.ifelse(inf.drug == d, inf.rate_ug_kg_min, ibis.null("float64")) for d in _CATECHOLAMINES},
            other_vasoactive=ibis.ifelse(inf.drug.isin(list(_OTHER_VASOACTIVES)), 1, ibis.null("int64")),
        ),
        _part(p.gcs, schema, gcs_any=ibis.literal(1), **{c: p.gcs[c] for c in ("gcs_unsed", "gcs_sed", "gcs_pre")}),
    ]
    aggs = {c: "min" for c in ("plt", "map_c", "map_d", "pf", "vent_rank", "gcs_unsed", "gcs_sed", "gcs_pre")}
    aggs |= {c: "max" for c in ("g", "bili", "crea", *_CATECHOLAMINES, "other_vasoactive", "gcs_any")}
    aggs |= {"uvol": "sum"}
    return _grouped_hours(parts, aggs, urine_windows_h, p.stays, lambda t: t.g == 1).drop("g")


def _infusion_hours(inf: ir.Table, g0: ir.Table, res: Mapping[str, str]) -> ir.Table:
    """H6–H8: one row per active segment and grid hour (catecholamines and the other vasoactive agents of SOFA-2)."""
    seg = inf.filter(inf.drug.isin([*_CATECHOLAMINES, *_OTHER_VASOACTIVES]))
    cat = seg.drug.isin(list(_CATECHOLAMINES))
    if res["vasopressor_min_duration"] == "one_hour":
        pos = seg.filter(cat & (seg.rate_ug_kg_min > 0))
        w_prev = ibis.window(group_by=[pos.stay_id, pos.drug], order_by=[pos.start, pos.stop], rows=(None, -1))
        pos = pos.mutate(prev_stop=pos.stop.max().over(w_prev))
        pos = pos.mutate(
            new_ep=ibis.ifelse(pos.prev_stop.isnull() | (pos.start > pos.prev_stop + ibis.interval(minutes=_D.vasopressor_merge_gap_min)), 1, 0)
        )
        w_cum = ibis.window(group_by=[pos.stay_id, pos.drug], order_by=[pos.start, pos.stop], preceding=None, following=0)
        pos = pos.mutate(ep=pos.new_ep.sum().over(w_cum))
        w_ep = ibis.window(group_by=[pos.stay_id, pos.drug, pos.ep])
        pos = pos.mutate(ep_start=pos.start.min().over(w_ep), ep_stop=pos.stop.max().over(w_ep))
        pos = pos.filter(pos.ep_stop >= pos.ep_start + ibis.interval(minutes=_D.vasopressor_min_episode_min))
        cols = ("stay_id", "drug", "start", "stop", "rate_ug_kg_min", "source")
        kept = pos.select(*cols).union(seg.filter(~cat | (seg.rate_ug_kg_min == 0)).select(*cols), distinct=False)
    else:
        kept = seg.select("stay_id", "drug", "start", "stop", "rate_ug_kg_min", "source")
    kg = kept.join(g0, "stay_id")
    if _grid_kind(res) == "icu_admission_hours":  # H15: from the row holding start to the row holding stop
        kg = kg.mutate(lo=row_end_expr(kg.start, kg.intime, "icu_admission_hours"), hi=row_end_expr(kg.stop, kg.intime, "icu_admission_hours"))
    else:
        kg = kg.mutate(lo=kg.start.truncate("h") + H, hi=ceil_hour(kg.stop))
    kg = kg.mutate(lo=ibis.greatest(kg.lo, kg.grid0), hi=ibis.least(kg.hi, kg.last))
    kg = kg.filter(kg.hi >= kg.lo)
    kg = kg.mutate(k=ibis.range(0, ((kg.hi.epoch_seconds() - kg.lo.epoch_seconds()) / 3600).cast("int64") + 1).unnest())
    return kg.select("stay_id", "drug", "rate_ug_kg_min", "start", "source", hour_end=kg.lo + kg.k.as_interval("h"))


def _gcs_hours(o: ir.Table) -> ir.Table:
    """H9: per hour with an assessment the minimum unsedated and sedated GCS, and the last unsedated GCS charted
    before a sedated-only hour's first sedated assessment."""
    flags_h = o.filter(o.concept == "gcs_sedated").select("stay_id", "time", "hour_end").distinct()  # a flag needs a value
    flags = flags_h.select("stay_id", "time")
    gv = o.filter(o.concept == "gcs").select("stay_id", "time", "hour_end", gcs=o.value)
    gs = gv.left_join(flags.mutate(flag=True), ["stay_id", "time"]).select(
        "stay_id", "time", "hour_end", "gcs", sed=ibis.coalesce(ibis._.flag, False)
    )
    flag_only = flags_h.anti_join(gv, ["stay_id", "time"]).select(
        "stay_id", "time", "hour_end", gcs=ibis.null("float64"), sed=ibis.literal(True)
    )
    allg = gs.union(flag_only)
    per_row = allg.group_by(["stay_id", "hour_end"]).aggregate(
        unsed=allg.gcs.min(where=~allg.sed),
        sedv=allg.gcs.min(where=allg.sed),
        first_sed=allg.time.min(where=allg.sed),
    )
    unsed_hist = gs.filter(~gs.sed).select("stay_id", ut=gs.time, uv=gs.gcs)
    need = per_row.filter(per_row.unsed.isnull())
    pj2 = need.join(unsed_hist, [need.stay_id == unsed_hist.stay_id, unsed_hist.ut < need.first_sed])
    lastt = pj2.group_by([need.stay_id, need.hour_end]).aggregate(ut=pj2.ut.max())
    pres = lastt.join(unsed_hist, [lastt.stay_id == unsed_hist.stay_id, lastt.ut == unsed_hist.ut]).group_by(
        [lastt.stay_id, lastt.hour_end]
    ).aggregate(pre=unsed_hist.uv.max())
    gr = per_row.left_join(pres, ["stay_id", "hour_end"])
    return gr.select("stay_id", "hour_end", gcs_unsed=gr.unsed, gcs_sed=gr.sedv, gcs_pre=gr.pre)


def _gcs_hours_ricu(o: ir.Table) -> ir.Table:
    """H15 ``gcs_assembly = ricu_hourly_components`` (ricu ``gcs``): per row with an assessment, each component's
    lowest value carried forward from the latest assessed row of the 6 h before; missing components normal; a
    charted total wins; a row with a sedated assessment is sedated (``gcs_sed``), else ``gcs_unsed``."""
    normal = {p: float(v) for p, v in _D.normal_gcs_components.items()}
    parts = (*normal, "gcs_total_charted")
    c = o.filter(o.concept.isin(list(parts)))
    rows = c.group_by(["stay_id", "hour_end"]).aggregate(
        **{p: c.value.min(where=c.concept == p) for p in parts}
    )
    r2 = rows.view()
    j = rows.join(
        r2, [rows.stay_id == r2.stay_id, r2.hour_end <= rows.hour_end, r2.hour_end >= rows.hour_end - ibis.interval(hours=_D.ricu_gcs_valid_h)]
    )
    # for each component: the latest row of the window that has it
    last = j.group_by([rows.stay_id, rows.hour_end]).aggregate(
        **{f"t_{p}": r2.hour_end.max(where=r2[p].notnull()) for p in parts}
    )
    carried = last
    for p in parts:
        v = rows.select(stay_id=rows.stay_id, **{f"t_{p}": rows.hour_end, f"v_{p}": rows[p]})
        carried = carried.left_join(v, ["stay_id", f"t_{p}"]).select(carried, v[f"v_{p}"])
    total = ibis.coalesce(
        carried["v_gcs_total_charted"], sum(ibis.coalesce(carried[f"v_{p}"], n) for p, n in normal.items())
    )
    flags = o.filter(o.concept == "gcs_sedated").select("stay_id", "hour_end").distinct().mutate(sed=ibis.literal(True))
    g = carried.select("stay_id", "hour_end", total=total).left_join(flags, ["stay_id", "hour_end"])
    sed = ibis.coalesce(g.sed, False)
    return g.select(
        "stay_id",
        "hour_end",
        gcs_unsed=ibis.ifelse(sed, ibis.null("float64"), g.total),
        gcs_sed=ibis.ifelse(sed, g.total, ibis.null("float64")),
        gcs_pre=ibis.null("float64"),
    )


def effective_gcs_expr(h: ir.Table, res: Mapping[str, str]) -> ir.FloatingValue:
    """The hour's GCS after policy ``gcs_when_sedated`` (H9; :func:`immunoguide.rules.sofa.effective_gcs`)."""
    pol = res["gcs_when_sedated"]
    measured = ibis.ifelse(h.gcs_sed.notnull(), ibis.least(h.gcs_unsed, h.gcs_sed), h.gcs_unsed) if pol == "as_measured" else h.gcs_unsed
    if pol == "presedation_else_normal":
        sed = ibis.coalesce(h.gcs_pre, float(_D.normal_gcs))
    elif pol == "assume_normal":
        sed = ibis.literal(float(_D.normal_gcs))
    elif pol == "as_measured":
        sed = h.gcs_sed
    else:
        sed = ibis.null("float64")
    eff = ibis.ifelse(h.gcs_unsed.notnull(), measured, sed).floor()
    if "gcs_any" not in h.columns:  # a table of assessed hours only
        return eff
    return ibis.ifelse(h.gcs_any.isnull(), ibis.null("float64"), eff)
def hourly_sofa_expr(
    tables: TimelineTables,
    *,
    criteria: str | Criteria = "sofa1",
    policies: Mapping[str, str] | None = None,
    keep_lookback: bool = False,
    rows_from: str = "icu_admission",
    evidence: bool = False,
    hour_scores: bool = False,
) -> ir.Table:
    """Hourly SOFA-1 rows for every stay: ``stay_id, hour_end, <six components>, total, n_imputed, imputed``.

    ``evidence=True`` returns :func:`hourly_evidence_expr`'s table instead (the input behind each component);
    ``hour_scores=True`` returns each row's own component scores before the 24 h window (H11; the single-patient
    ``HourlySofa.hour_components``): ``stay_id, hour_end, <six components>``, same rows.

    ``rows_from``: ``"icu_admission"`` (rows from the row holding ICU admission), ``"first_sofa_datum"`` (from the
    row of the stay's earliest SOFA datum, before or after admission: Sepsis-3 policy ``sofa_rows_from``), or
    ``"all"`` (both sets of rows and the look-back rows, with the columns ``first`` and ``first_datum`` — the row ends
    of ICU admission and of the earliest datum — to filter on). ``keep_lookback`` keeps every grid row.

    Semantics are those of :func:`immunoguide.rules.hourly.hourly_sofa` (H1–H13), computed set-wise.

    How (for speed on 100k-stay cohorts): each sparse part of :func:`_hour_parts` is *scored where it is*, and a
    score is kept as one bit (bit ``5·slot + points``) of a 64-bit integer, so the hour's many inputs become a
    single ``bit_or`` in one narrow ``GROUP BY``. Scoring each value and keeping the highest score equals scoring
    the hour's worst value (H3, H7) because every ladder used so is monotone in the direction of "worse" and its
    domain holds the concept's whole plausibility range (values outside it are refused by the adapters and by the
    single-patient rules) — both checked on the criteria at call time (:func:`_require_per_value_scoring`). MAP
    from SBP/DBP counts only in an hour without a charted MAP (two slots).
    """
    crit = criteria_for(criteria, ("sofa1",), where="cohort engine", todo="use hourly_sofa2_expr for SOFA-2")
    res = crit.resolve_policies(policies)
    L = crit.ladders
    ricu_urine = res["urine_output_window"] == "ricu"
    windows = (_D.ricu_window_rows,) if ricu_urine else (_D.urine_window_h,)
    p = _hour_parts(tables, res, windows, from_first_datum=rows_from != "icu_admission")
    worst_min = ("coagulation_platelets", "cardiovascular_map", "respiration_pf", "cns_gcs")
    worst_max = ("liver_bilirubin", "renal_creatinine", *(f"cardiovascular_{d}" for d in _CATECHOLAMINES))
    for name in worst_min:
        _require_per_value_scoring(L[name], "min")
    for name in worst_max:
        _require_per_value_scoring(L[name], "max")

    schema = {"bits": "int64", "uvol": "float64"}

    # observations: platelets, MAP, bilirubin, creatinine (scored) and urine (summed)
    ob = p.obs
    scored = {"plt": ("coagulation_platelets", _SLOT["coagulation"]), "map_c": ("cardiovascular_map", _SLOT_MAP_C),
              "bili": ("liver_bilirubin", _SLOT["liver"]), "crea": ("renal_creatinine", _SLOT["renal"])}  # fmt: skip
    branches = [
        (ob.concept == _SIMPLE[col], _bit(slot, ladder_points(L[ladder], ob.value, res)))
        for col, (ladder, slot) in scored.items()
    ]
    is_urine = ob.concept == "urine_output_ml"
    map_d_bit = _bit(_SLOT_MAP_D, ladder_points(L["cardiovascular_map"], p.map_d.map_d, res))

    # P/F (one row per hour with a gas) and the H5 support policies
    pf = p.pf
    support_kinds = _D.support_kinds(res["respiratory_support"])
    supported = ibis.coalesce(pf.vent_rank, len(_VENT_ORDER) - 1).isin([_VENT_ORDER.index(k) for k in support_kinds])
    rp = ladder_points(L["respiration_pf"], pf.pf, res)
    capped = _pf_cap(res)

    inf = p.infusions
    drug_bit = ibis.cases(
        *[(inf.drug == d, _bit(_SLOT["cardiovascular"], ladder_points(L[f"cardiovascular_{d}"], inf.rate_ug_kg_min, res)))
          for d in _CATECHOLAMINES],
        else_=ibis.literal(0, "int64"),
    )  # fmt: skip
    parts = [
        _part(p.grid, schema, bits=ibis.literal(_GRID_BIT, "int64")),
        _part(ob, schema, bits=ibis.cases(*branches, else_=ibis.literal(0, "int64")),
              uvol=ibis.ifelse(is_urine, ob.value, ibis.null("float64"))),
        _part(p.map_d, schema, bits=map_d_bit),
        _part(pf, schema, bits=_bit(_SLOT["respiration"], ibis.ifelse((rp >= 3) & ~supported, capped, rp))),
        _part(inf, schema, bits=drug_bit),
        _part(p.gcs, schema, bits=_bit(_SLOT["cns"], ladder_points(L["cns_gcs"], effective_gcs_expr(p.gcs, res), res))),
    ]  # fmt: skip
    aggs = {"bits": "bit_or", "uvol": "sum"}
    h = _grouped_hours(parts, aggs, windows, p.stays, lambda t: (t.bits & _GRID_BIT) != 0)

    # H10 urine policy → renal points
    policy = res["urine_output_window"]
    day_h = float(_D.urine_window_h)
    if policy == "ricu":  # H15: ricu urine24 on rows since admission (see rules.hourly._urine_ricu)
        def idx(t: ir.TimestampValue) -> ir.IntegerValue:
            return ((t.epoch_seconds() - h.first.epoch_seconds()) / 3600).round().cast("int64")

        k, uf, ul = idx(h.hour_end), idx(h.first_uh), idx(h.last_uh)
        n = k - ibis.greatest(k - (windows[0] - 1), uf) + 1
        ok = h.first_uh.notnull() & (k >= uf) & (k <= ul - uf) & (n >= _D.urine_ricu_min_h)
        daily = ibis.ifelse(ok, (h[f"urine_ml_{windows[0]}h"] * day_h / n).round(6), ibis.null("float64"))
    else:
        observed = ibis.least(h.urine_observed_h, day_h)
        ml = h[f"urine_ml_{windows[0]}h"]
        if policy == "mimic_code":
            lo, hi = _D.urine_mimic_code_h
            daily = ibis.ifelse((observed >= lo) & (observed <= hi), (ml * day_h / observed).round(6), ibis.null("float64"))
        else:
            daily = ml
        daily = ibis.ifelse(h.urine_charted_24h & (observed > 0), daily, ibis.null("float64"))

    # H11: MAP from its two slots (charted first), then the six component slots
    bits = ibis.coalesce(h.bits, ibis.literal(0, "int64"))
    six = bits & ((1 << (_BITS * len(COMPONENTS))) - 1)
    map_pts = _top(bits, _SLOT_MAP_C)
    if res["map_from_sbp_dbp"] == "derive":
        map_pts = ibis.coalesce(map_pts, _top(bits, _SLOT_MAP_D))
    six = six | _bit(_SLOT["cardiovascular"], map_pts) | _bit(_SLOT["renal"], ladder_points(L["renal_urine"], daily, res))
    scored = h.select("stay_id", "first", "first_datum", "hour_end", bits=six, urine_daily=daily)
    if evidence:
        return _evidence(p, scored, res, L, keep_lookback=keep_lookback, rows_from=rows_from)
    if hour_scores:
        return hour_scores_expr(scored, rows_from=rows_from, keep_lookback=keep_lookback)
    return _roll_packed(
        scored.select("stay_id", "first", "first_datum", "hour_end", "bits"), res, keep_lookback=keep_lookback, rows_from=rows_from
    )


def hourly_evidence_expr(
    tables: TimelineTables,
    *,
    criteria: str | Criteria = "sofa1",
    policies: Mapping[str, str] | None = None,
    rows_from: str = "icu_admission",
) -> ir.Table:
    """Why each hourly component has its points: one row per stay, output hour and component.

    Columns: ``stay_id, hour_end, component, points`` (the component after the 24 h window; NULL when no input was
    in the window), ``source_hour_end`` (the latest row of the window whose own score gave those points),
    ``concept, value, value_time, source`` (the input of that row that scored them: a charted value with its
    charting time and source item, a catecholamine segment with its start, the hour's P/F ratio, GCS or derived
    daily urine) and ``detail`` (ventilation kind for P/F; ``sedated`` for a GCS; ``from SBP/DBP`` for a derived MAP).
    Same rows and same points as :func:`hourly_sofa_expr` (a test keeps them equal).
    """
    return hourly_sofa_expr(tables, criteria=criteria, policies=policies, rows_from=rows_from, evidence=True)


def _evidence(
    p: _HourParts, scored: ir.Table, res: Mapping[str, str], L: Mapping[str, Ladder], *, keep_lookback: bool, rows_from: str
) -> ir.Table:
    """The records behind each hour's points, and for each output row the record of the window's best row."""
    f8 = "float64"
    ob = p.obs
    recs: list[ir.Table] = []

    def rec(t: ir.Table, component: str, points: ir.IntegerValue, concept: ir.Value, value: ir.Value, time: ir.Value,
            source: ir.Value, detail: ir.Value) -> ir.Table:  # fmt: skip
        return t.select(
            stay_id=t.stay_id, hour_end=t.hour_end, component=ibis.literal(component), points=points.cast("int64"),
            concept=concept.cast("string"), value=value.cast(f8), value_time=time.cast("timestamp"),
            source=source.cast("string"), detail=detail.cast("string"),
        )  # fmt: skip

    none = ibis.literal("", "string")
    for col, (ladder, comp) in {"plt": ("coagulation_platelets", "coagulation"), "bili": ("liver_bilirubin", "liver"),
                                 "crea": ("renal_creatinine", "renal"), "map_c": ("cardiovascular_map", "cardiovascular")}.items():  # fmt: skip
        t = ob.filter(ob.concept == _SIMPLE[col])
        recs.append(rec(t, comp, ladder_points(L[ladder], t.value, res), t.concept, t.value, t.time, t.source, none))
    if res["map_from_sbp_dbp"] == "derive":
        charted = ob.filter(ob.concept == "map_mmhg").select("stay_id", "hour_end").distinct()
        md = p.map_d.anti_join(charted, ["stay_id", "hour_end"])
        recs.append(rec(md, "cardiovascular", ladder_points(L["cardiovascular_map"], md.map_d, res), ibis.literal("map_mmhg"),
                        md.map_d, md.time, ibis.literal("sbp_mmhg + dbp_mmhg"), ibis.literal("derived from SBP/DBP")))  # fmt: skip
    pf = p.pf
    support_kinds = _D.support_kinds(res["respiratory_support"])
    supported = ibis.coalesce(pf.vent_rank, len(_VENT_ORDER) - 1).isin([_VENT_ORDER.index(k) for k in support_kinds])
    rp = ladder_points(L["respiration_pf"], pf.pf, res)
    capped = _pf_cap(res)
    kind = ibis.cases(*[(pf.vent_rank == i, k) for i, k in enumerate(_VENT_ORDER)], else_="none")
    recs.append(rec(pf, "respiration", ibis.ifelse((rp >= 3) & ~supported, capped, rp), ibis.literal("pf_ratio_mmhg"),
                    pf.pf, ibis.null("timestamp"), ibis.literal("pao2_mmhg / fio2_fraction"), "ventilation: " + kind))  # fmt: skip
    inf = p.infusions.filter(p.infusions.drug.isin(list(_CATECHOLAMINES)))
    dp = ibis.cases(*[(inf.drug == d, ladder_points(L[f"cardiovascular_{d}"], inf.rate_ug_kg_min, res)) for d in _CATECHOLAMINES],
                    else_=ibis.null("int64"))  # fmt: skip
    recs.append(rec(inf, "cardiovascular", dp, inf.drug + "_ug_kg_min", inf.rate_ug_kg_min, inf.start, inf.source, none))
    g = p.gcs
    eff = effective_gcs_expr(g, res)
    recs.append(rec(g, "cns", ladder_points(L["cns_gcs"], eff, res), ibis.literal("gcs"), eff, ibis.null("timestamp"),
                    ibis.literal("gcs assessments of the hour"), ibis.ifelse(g.gcs_unsed.isnull(), "sedated", "")))  # fmt: skip
    u = scored.filter(scored.urine_daily.notnull())
    recs.append(rec(u, "renal", ladder_points(L["renal_urine"], u.urine_daily, res), ibis.literal("urine_output_ml_per_day"),
                    u.urine_daily, ibis.null("timestamp"), ibis.literal("urine_output_ml over the trailing window"), none))  # fmt: skip
    allr = recs[0]
    for r in recs[1:]:
        allr = allr.union(r, distinct=False)
    allr = allr.filter(allr.points.notnull())
    w = ibis.window(group_by=[allr.stay_id, allr.hour_end, allr.component],
                    order_by=[ibis.desc(allr.points), ibis.desc(allr.value_time), allr.source, allr.value])  # fmt: skip
    best = allr.mutate(rn=ibis.row_number().over(w))
    best = best.filter(best.rn == 0).drop("rn")

    # the window's best row per component: key = points * 2^40 + seconds since 1970 (latest row among equal points)
    secs = scored.hour_end.epoch_seconds().cast("int64")
    win = ibis.window(group_by="stay_id", order_by="hour_end", preceding=_window_rows(res) - 1, following=0)
    keyed = scored.select(
        "stay_id", "first", "first_datum", "hour_end",
        **{f"k_{c}": ibis.ifelse(_top(scored.bits, _SLOT[c]).notnull(), _top(scored.bits, _SLOT[c]) * (1 << 40) + secs,
                                 ibis.null("int64")).max().over(win) for c in COMPONENTS},
    )  # fmt: skip
    if rows_from == "first_sofa_datum":
        keyed = keyed.filter(keyed.hour_end >= ibis.coalesce(keyed.first_datum, keyed.first))
    elif not keep_lookback:
        keyed = keyed.filter(keyed.hour_end >= keyed.first)
    parts = []
    for c in COMPONENTS:
        k = keyed[f"k_{c}"]
        src_s = k % (1 << 40)
        parts.append(keyed.select(
            "stay_id", "hour_end", component=ibis.literal(c), points=(k // (1 << 40)).cast("int64"),
            source_hour_end=ibis.ifelse(k.isnull(), ibis.null("timestamp"), src_s.cast("int64").as_timestamp("s").cast(keyed.hour_end.type())),
        ))  # fmt: skip
    out = parts[0]
    for q in parts[1:]:
        out = out.union(q, distinct=False)
    j = out.left_join(best, [out.stay_id == best.stay_id, out.source_hour_end == best.hour_end,
                             out.component == best.component, out.points == best.points])  # fmt: skip
    return j.select(
        out.stay_id, out.hour_end, out.component, out.points, out.source_hour_end,
        best.concept, best.value, best.value_time, best.source, best.detail,
    )  # fmt: skip


#: Slot of each component in the packed hour score; two more slots hold charted and derived MAP (H11).
_SLOT = {c: i for i, c in enumerate(COMPONENTS)}
_SLOT_MAP_C, _SLOT_MAP_D = len(COMPONENTS), len(COMPONENTS) + 1
#: Set by the grid's own row of each hour (groups without it lie outside the grid and are dropped).
_GRID_BIT = 1 << 62


def _bit(slot: int, pts: ir.IntegerValue) -> ir.IntegerValue:
    """The bit of score ``pts`` in ``slot`` (0 when ``pts`` is NULL).

    The powers of two are constants computed here: Spark shifts a literal 1 as a 32-bit integer, which overflows
    from slot 6 on.
    """
    branches = [(pts == s, ibis.literal(1 << (_BITS * slot + s), "int64")) for s in range(_BITS)]
    return ibis.cases(*branches, else_=ibis.literal(0, "int64"))


def _top(bits: ir.IntegerValue, slot: int) -> ir.IntegerValue:
    """The highest score set in ``slot`` of ``bits`` (NULL when none)."""
    branches = [((bits & (1 << (_BITS * slot + s))) != 0, s) for s in range(4, -1, -1)]
    return ibis.cases(*branches, else_=ibis.null("int64")).cast("int64")


def _require_per_value_scoring(ladder: Ladder, worst: str) -> None:
    """Scoring each value and keeping the highest score equals scoring the hour's worst value only when the ladder's
    points never fall as the value gets worse and every plausible value lies in the ladder's domain."""
    from immunoguide.units import concept

    pts = [b.points for b in sorted(ladder.bands, key=lambda b: (b.interval.lo, not b.interval.lo_inclusive))]
    pairs = list(zip(pts, pts[1:], strict=False))
    monotone = all(a >= b for a, b in pairs) if worst == "min" else all(a <= b for a, b in pairs)
    c = concept(ladder.concept)
    covered = ladder.domain.contains(c.min) and ladder.domain.contains(c.max)
    if not (monotone and covered):
        raise CriteriaError(
            expected=f"points that never fall as {ladder.concept} gets worse (worst = {worst}) and a domain holding "
            f"its plausibility range [{c.min:g}, {c.max:g}]",
            got=f"ladder {ladder.name}: points {pts} in band order, domain {ladder.domain}",
            where="cohort engine (scoring per value)",
            todo="fix the criteria file, or score this ladder on the hour's worst value instead",
        )


def hour_scores_expr(scored: ir.Table, *, rows_from: str = "icu_admission", keep_lookback: bool = False) -> ir.Table:
    """Each row's own component scores (H11, before the window) from packed ``bits``, rows filtered as
    :func:`_roll_packed` filters them: ``stay_id, hour_end, <six components>``."""
    if rows_from == "first_sofa_datum":
        scored = scored.filter(scored.hour_end >= ibis.coalesce(scored.first_datum, scored.first))
    elif not keep_lookback:
        scored = scored.filter(scored.hour_end >= scored.first)
    return scored.select("stay_id", "hour_end", **{c: _top(scored.bits, _SLOT[c]) for c in COMPONENTS})


def rolled_total_expr(hour: ir.Table, res: Mapping[str, str], *, keep_lookback: bool = False) -> ir.Table:
    """H12 (24 h rolling worst) and H13 (missing components) over hour scores ``stay_id, first, hour_end, <six>``."""
    packed = ibis.literal(0, "int64")
    for c in COMPONENTS:
        packed = packed | _bit(_SLOT[c], hour[c])
    return _roll_packed(
        hour.select("stay_id", "first", first_datum=ibis.null("timestamp"), hour_end=hour.hour_end, bits=packed),
        res,
        keep_lookback=keep_lookback,
    )


def _roll_packed(
    hour: ir.Table, res: Mapping[str, str], *, keep_lookback: bool, rows_from: str = "icu_admission"
) -> ir.Table:
    """H12 and H13 over packed hour scores (``bits``: slot ``c`` of component ``c``).

    The six 0–4 scores are rolled with a single ``bit_or`` window of 24 rows; the highest set bit of each slot is
    the component's worst score in the window. One window instead of six is exact because the grid has one row
    per hour (H1).
    """
    w = ibis.window(group_by="stay_id", order_by="hour_end", preceding=_window_rows(res) - 1, following=0)
    rolled = hour.select("stay_id", "first", "first_datum", "hour_end", bits=_bit_or(hour.bits).over(w))
    if rows_from == "first_sofa_datum":
        rolled = rolled.filter(rolled.hour_end >= ibis.coalesce(rolled.first_datum, rolled.first))
    elif rows_from == "all":
        rolled = rolled.filter(rolled.hour_end >= ibis.least(rolled.first, ibis.coalesce(rolled.first_datum, rolled.first)))
    elif not keep_lookback:
        rolled = rolled.filter(rolled.hour_end >= rolled.first)
    rolled = rolled.mutate(**{c: _top(rolled.bits, _SLOT[c]) for c in COMPONENTS})
    return _totals(rolled, res, extra=("first", "first_datum") if rows_from == "all" else ())


def hourly_from_evidence_expr(evidence: ir.Table, *, criteria: str | Criteria = "sofa1",
                              policies: Mapping[str, str] | None = None) -> ir.Table:
    """:func:`hourly_sofa_expr`'s rows (from ICU admission) out of :func:`hourly_evidence_expr`'s table: the same
    rows and component points, one evidence row per stay, hour and component, pivoted; H13 applied as there.

    Why: a run that writes the evidence already holds every windowed component score in it; pivoting the written
    table costs a fraction of evaluating the hour parts, the 24 h window and the packed scores a second time.
    """
    crit = criteria_for(criteria, ("sofa1",), where="cohort engine", todo="use hourly_sofa2_expr for SOFA-2")
    res = crit.resolve_policies(policies)
    ev = evidence.mutate(hour=evidence.hour_end)
    # hour_end is taken as a value of its group, not as the key: DuckDB writes a key read from a column without
    # NULLs as a required Parquet column, which sofa_hourly's hour_end has never been.
    rolled = ev.group_by(["stay_id", "hour"]).aggregate(
        hour_end=ev.hour_end.arbitrary(), **{c: ev.points.max(where=ev.component == c) for c in COMPONENTS}
    )
    return _totals(rolled, res)


def _totals(rolled: ir.Table, res: Mapping[str, str], *, extra: tuple[str, ...] = ()) -> ir.Table:
    """H13 (missing components: imputed as normal, or no total) over the windowed scores ``<six components>`` of
    ``rolled`` (NULL: no input in the window): the hourly columns with ``total``, ``n_imputed`` and the flags."""
    n_missing = sum(rolled[c].isnull().cast("int64") for c in COMPONENTS)
    if res["missing_component"] == "impute_normal":
        out = rolled.mutate(
            imputed_mask=n_missing,
            **{f"{c}_imputed": rolled[c].isnull() for c in COMPONENTS},
            **{c: ibis.coalesce(rolled[c], 0) for c in COMPONENTS},
        )
        out = out.mutate(total=sum(out[c] for c in COMPONENTS))
    else:
        out = rolled.mutate(
            imputed_mask=ibis.literal(0, "int64"),
            **{f"{c}_imputed": ibis.literal(False) for c in COMPONENTS},
        )
        out = out.mutate(total=ibis.ifelse(n_missing > 0, ibis.null("int64"), sum(ibis.coalesce(out[c], 0) for c in COMPONENTS)))
    return out.select(
        "stay_id", "hour_end", *COMPONENTS, "total", *extra, n_imputed=out.imputed_mask,
        **{f"{c}_imputed": out[f"{c}_imputed"] for c in COMPONENTS},
    )  # fmt: skip


def left_join_on_stay(left: ir.Table, right: ir.Table) -> ir.Table:
    """``left`` with the columns of ``right`` joined on ``stay_id`` (one ``stay_id`` column kept)."""
    j = left.left_join(right, left.stay_id == right.stay_id)
    return j.select(left, *[right[c] for c in right.columns if c != "stay_id"])


def suspected_infection_expr(tables: TimelineTables, *, policies: Mapping[str, str] | None = None) -> ir.Table:
    """Every suspected infection, as :func:`immunoguide.rules.sepsis3.suspected_infections` pairs them.

    Per antibiotic the earliest culture (ties: positive, then unknown, then negative, then specimen name) with
    ``abx − 72 h <= culture < abx`` (``<= abx`` under ``simultaneous_antibiotic_culture = paired``); only if there
    is none, the earliest with ``abx < culture <= abx + 24 h``. Columns: ``stay_id, si_time, antibiotic_time,
    culture_time, direction``.
    """
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    crit = load_sepsis3_criteria()
    res = crit.resolve_policies(policies)
    w_cx = ibis.interval(seconds=int(crit.window("culture_then_antibiotic_h").total_seconds()))
    w_ab = ibis.interval(seconds=int(crit.window("antibiotic_then_culture_h").total_seconds()))
    abx = tables.antibiotics.select("stay_id", ta=tables.antibiotics.time).distinct()
    cx = tables.cultures
    cx = cx.select(
        "stay_id",
        ct=cx.time,
        prank=ibis.cases((cx.positive == True, 0), (cx.positive == False, 2), else_=1),  # noqa: E712
        spec=ibis.coalesce(cx.specimen, "unknown"),
    )
    if res["suspected_infection_pairing"] == "ricu_hourly_rolling":
        return _ricu_suspected_infection(tables, w_ab, w_cx)
    paired = res["simultaneous_antibiotic_culture"] == "paired"

    def first_culture(cond_fn: Any, direction: str) -> ir.Table:
        j = abx.join(cx, [abx.stay_id == cx.stay_id, *cond_fn(abx, cx)])
        w = ibis.window(group_by=[j.stay_id, j.ta], order_by=[j.ct, j.prank, j.spec])
        j = j.mutate(rn=ibis.row_number().over(w))
        j = j.filter(j.rn == 0)
        return j.select(j.stay_id, j.ta, j.ct, direction=ibis.literal(direction))

    before = first_culture(
        lambda a, c: [c.ct >= a.ta - w_cx, (c.ct <= a.ta) if paired else (c.ct < a.ta)], "culture_first"
    )
    after = first_culture(lambda a, c: [c.ct > a.ta, c.ct <= a.ta + w_ab], "antibiotic_first")
    after = after.anti_join(before, ["stay_id", "ta"])
    both = before.union(after, distinct=False)
    return both.select(
        "stay_id",
        si_time=ibis.ifelse(both.direction == "culture_first", both.ct, both.ta),
        antibiotic_time=both.ta,
        culture_time=both.ct,
        direction=ibis.ifelse((both.direction == "culture_first") & (both.ct == both.ta), "simultaneous", both.direction),
    )


def _ricu_suspected_infection(tables: TimelineTables, w_ab: ir.IntervalValue, w_cx: ir.IntervalValue) -> ir.Table:
    """ricu ``si_and`` on whole hours since ICU admission (:func:`immunoguide.rules.sepsis3.suspected_infections`
    with ``suspected_infection_pairing = ricu_hourly_rolling``): times are the starts of their hours."""
    st = tables.stays.select("stay_id", "intime")

    def hours(t: ir.Table, col: str) -> ir.Table:
        j = t.join(st, "stay_id")
        k = ((j[col].epoch_seconds() - j.intime.epoch_seconds()) / 3600).floor().cast("int64")
        return j.select("stay_id", "intime", hs=j.intime + k.as_interval("h")).distinct()

    a = hours(tables.antibiotics, "time").rename(ta="hs")
    c = hours(tables.cultures, "time").rename(tc="hs").drop("intime")
    ab = a.join(c, [a.stay_id == c.stay_id, c.tc >= a.ta, c.tc <= a.ta + w_ab])
    ab = ab.group_by([a.stay_id, a.ta]).aggregate(tc=ab.tc.min())
    ab = ab.select("stay_id", si_time=ab.ta, antibiotic_time=ab.ta, culture_time=ab.tc, direction=ibis.literal("antibiotic_first"), pri=ibis.literal(0))
    a2 = a.drop("intime")
    ca = c.join(a2, [c.stay_id == a2.stay_id, a2.ta >= c.tc, a2.ta <= c.tc + w_cx])
    ca = ca.group_by([c.stay_id, c.tc]).aggregate(ta=ca.ta.min())
    ca = ca.select(
        "stay_id", si_time=ca.tc, antibiotic_time=ca.ta, culture_time=ca.tc,
        direction=ibis.ifelse(ca.ta == ca.tc, "simultaneous", "culture_first"), pri=ibis.literal(1),
    )  # fmt: skip
    both = ab.union(ca, distinct=False)
    w = ibis.window(group_by=[both.stay_id, both.si_time], order_by=both.pri)
    both = both.mutate(rn=ibis.row_number().over(w))
    return both.filter(both.rn == 0).select("stay_id", "si_time", "antibiotic_time", "culture_time", "direction")


def sepsis3_expr(
    tables: TimelineTables,
    hourly: ir.Table,
    *,
    policies: Mapping[str, str] | None = None,
) -> ir.Table:
    """Sepsis-3 per stay, as :func:`immunoguide.rules.sepsis3.sepsis3_onset` decides it, set-wise.

    ``hourly`` is :func:`hourly_sofa_expr` output (rows from ICU admission). Columns: ``stay_id, status,
    suspected_infection_time, antibiotic_time, culture_time, onset_time, baseline_sofa, sofa_at_onset, delta``.
    """
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    crit = load_sepsis3_criteria()
    res = crit.resolve_policies(policies)
    before = ibis.interval(seconds=int(crit.window("sofa_before_si_h").total_seconds()))
    after = ibis.interval(seconds=int(crit.window("sofa_after_si_h").total_seconds()))
    thr = int(crit.sofa_rise_points)
    si = suspected_infection_expr(tables, policies=res)
    w_si = ibis.window(group_by="stay_id", order_by=["si_time", "antibiotic_time", "culture_time"])
    si = si.mutate(si_rank=ibis.row_number().over(w_si))
    if res["si_window"] == "first":
        si = si.filter(si.si_rank == 0)

    hr = hourly.filter(hourly.total.notnull()).select("stay_id", "hour_end", "total")
    st = tables.stays
    baseline_policy = res["baseline"]
    fixed = None
    stay_base = st.select("stay_id", indeterminate=ibis.literal(False), fixed=ibis.null("int64"))
    if baseline_policy == "zero":
        fixed = True
        stay_base = st.select("stay_id", indeterminate=ibis.literal(False), fixed=ibis.literal(0, "int64"))
    elif baseline_policy == "immunosep_registry":
        fixed = True
        adm = st.select("stay_id", "admittime", "admission_source")
        j = adm.join(hr, [adm.stay_id == hr.stay_id, hr.hour_end >= adm.admittime])
        w_adm = ibis.window(group_by=j.stay_id, order_by=j.hour_end)
        j = j.mutate(rn=ibis.row_number().over(w_adm))
        adm_sofa = j.filter(j.rn == 0).select(stay_id=j.stay_id, adm_sofa=j.total)
        a = left_join_on_stay(adm, adm_sofa)
        base = ibis.ifelse(a.admission_source == "emergency_department", ibis.literal(0, "int64"), a.adm_sofa)
        stay_base = a.select(
            stay_id=a.stay_id,
            indeterminate=a.admission_source.isnull() | ((a.admission_source == "inpatient") & a.adm_sofa.isnull()),
            fixed=base.cast("int64"),
        )

    # ricu pairing: SI is an hour start and rows are compared by their starts (hour_end − 1 h)
    shift = H if res["suspected_infection_pairing"] == "ricu_hourly_rolling" else ibis.interval(hours=0)
    win = si.join(
        hr, [si.stay_id == hr.stay_id, hr.hour_end - shift >= si.si_time - before, hr.hour_end - shift <= si.si_time + after]
    )
    win = win.select(si.stay_id, si.si_rank, si.si_time, hr.hour_end, hr.total)
    win = win.join(stay_base, "stay_id")
    w_run = ibis.window(group_by=[win.stay_id, win.si_rank], order_by=win.hour_end, preceding=None, following=0)
    base_expr = win.fixed if fixed else win.total.min().over(w_run)
    win = win.mutate(base=base_expr)
    hits = win.filter((win.total - win.base >= thr) & ~win.indeterminate)
    w_first = ibis.window(group_by=hits.stay_id, order_by=[hits.si_rank, hits.hour_end])
    hits = hits.mutate(rn=ibis.row_number().over(w_first))
    onset = hits.filter(hits.rn == 0).select(
        "stay_id", onset_si_rank=hits.si_rank, onset_time=hits.hour_end, baseline_sofa=hits.base, sofa_at_onset=hits.total
    )
    first_si = si.filter(si.si_rank == 0)
    out = st.select("stay_id")
    for right in (onset, stay_base, si.select("stay_id", "si_rank", "si_time", "antibiotic_time", "culture_time")):
        out = left_join_on_stay(out, right)
    # the SI reported: the one with the onset, else the first SI
    chosen = ibis.ifelse(out.onset_time.notnull(), out.si_rank == out.onset_si_rank, out.si_rank == 0)
    out = out.filter(out.si_rank.isnull() | chosen)
    status = ibis.cases(
        (out.si_time.isnull(), "no_suspected_infection"),
        (out.indeterminate, "indeterminate"),
        (out.onset_time.notnull(), "onset"),
        else_="no_onset",
    )
    _ = first_si
    return out.select(
        stay_id=out.stay_id,
        status=status,
        suspected_infection_time=out.si_time,
        antibiotic_time=out.antibiotic_time,
        culture_time=out.culture_time,
        onset_time=out.onset_time,
        baseline_sofa=out.baseline_sofa,
        sofa_at_onset=out.sofa_at_onset,
        delta=(out.sofa_at_onset - out.baseline_sofa),
    ).order_by("stay_id")
