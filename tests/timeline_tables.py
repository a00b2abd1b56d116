"""Single-patient timelines as the engine's timeline tables, and the set-based engine run on them.

:func:`write_timelines` writes :class:`~immunoguide.rules.timeline.PatientTimeline` values in the timeline schema
(:mod:`immunoguide.cohort.schema`), so a scenario written for the single-patient rules runs through the cohort
engine too; :func:`engine_hourly_sofa` is ``hourly_sofa`` computed by the engine (DuckDB) and returned as
:class:`~immunoguide.rules.hourly.HourlySofa` rows, :func:`engine_sepsis3` the engine's Sepsis-3 per stay.

The timeline schema has no sedation table: a sedation episode is written as a ``gcs_sedated`` flag at every GCS
charted inside it, which is what H9 (``gcs_assembly = as_charted``) makes of it; under ``ricu_hourly_components``
(which reads flags only) a timeline with episodes is refused here rather than translated wrongly.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import ibis
import pyarrow as pa

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr, sepsis3_expr
from immunoguide.cohort.engine_sofa2 import hourly_sofa2_expr
from immunoguide.cohort.schema import SCHEMAS, TABLES, write_table
from immunoguide.criteria import Criteria, criteria_for, load_sepsis3_criteria
from immunoguide.rules.hourly import Grid, HourlySofa
from immunoguide.rules.sofa import COMPONENTS
from immunoguide.rules.timeline import PatientTimeline

_SEQ = itertools.count()


def _sid(tl: PatientTimeline, default: int) -> int:
    return tl.stay_id if isinstance(tl.stay_id, int) else default


def write_timelines(timelines: Iterable[PatientTimeline], folder: Path) -> dict[int, PatientTimeline]:
    """Write the timelines as the seven timeline tables in ``folder``; returns stay id (int) → timeline."""
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    out: dict[int, PatientTimeline] = {}
    for k, tl in enumerate(timelines, start=1):
        sid = _sid(tl, k)
        out[sid] = tl
        rows["stays"].append(
            {"stay_id": sid, "subject_id": sid, "hadm_id": sid, "intime": tl.icu_intime, "outtime": tl.icu_outtime,
             "admittime": tl.admission_time, "deathtime": None, "admission_source": tl.admission_source,
             "age_years": 60.0, "sex": "F", "weight_kg": tl.weight_kg, "dataset": "test"}
        )  # fmt: skip
        flags = {o.time for o in tl.observations if o.concept == "gcs_sedated"}
        for o in tl.observations:
            value = 1.0 if o.concept == "gcs_sedated" else float(o.value)
            rows["observations"].append(
                {"stay_id": sid, "time": o.time, "concept": o.concept, "value": value, "value_text": None,
                 "unit": None, "method": None, "source": "test"}
            )  # fmt: skip
            if o.concept == "gcs" and o.time not in flags and any(e.start <= o.time <= e.end for e in tl.sedation):
                flags.add(o.time)
                rows["observations"].append(
                    {"stay_id": sid, "time": o.time, "concept": "gcs_sedated", "value": 1.0, "value_text": None,
                     "unit": None, "method": None, "source": "test:sedation_episode"}
                )  # fmt: skip
        for i in tl.infusions:
            rows["infusions"].append(
                {"stay_id": sid, "drug": i.drug, "start": i.start, "stop": i.stop,
                 "rate_ug_kg_min": None if i.rate_ug_kg_min is None else float(i.rate_ug_kg_min), "source": "test"}
            )  # fmt: skip
        for a in tl.antibiotics:
            rows["antibiotics"].append(
                {"stay_id": sid, "time": a.time, "name": a.name, "route": a.route, "time_is_date_only": False}
            )
        for c in tl.cultures:
            rows["cultures"].append(
                {
                    "stay_id": sid,
                    "time": c.time,
                    "specimen": c.specimen,
                    "positive": c.positive,
                    "time_is_date_only": False,
                }
            )
        for v in tl.ventilation:
            rows["ventilation"].append({"stay_id": sid, "start": v.start, "stop": v.end, "kind": v.kind})
    folder.mkdir(parents=True, exist_ok=True)
    for t in TABLES:
        write_table(pa.Table.from_pylist(rows[t], schema=SCHEMAS[t]), folder / f"{t}.parquet", t)
    return out


def _fresh_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"ig-engine-{next(_SEQ)}-"))


def _int(v: Any) -> int | None:
    return None if v is None or v != v else int(v)


def engine_rows(
    df: Any, crit: Criteria, resolved: Mapping[str, str], hour_df: Any = None
) -> dict[int, tuple[HourlySofa, ...]]:
    """Engine output rows as :class:`HourlySofa` per stay; ``hour_df`` (the engine's ``hour_scores=True`` table)
    fills ``hour_components``."""
    policies = MappingProxyType(dict(resolved))
    hour: dict[tuple[int, Any], dict[str, int | None]] = {}
    if hour_df is not None:
        for r in hour_df.itertuples(index=False):
            hour[(int(r.stay_id), r.hour_end.to_pydatetime())] = {c: _int(getattr(r, c)) for c in COMPONENTS}
    empty = dict.fromkeys(COMPONENTS)
    out: dict[int, list[HourlySofa]] = {}
    for r in df.sort_values(["stay_id", "hour_end"]).itertuples(index=False):
        comps = {c: _int(getattr(r, c)) for c in COMPONENTS}
        imputed = tuple(c for c in COMPONENTS if bool(getattr(r, f"{c}_imputed")))
        missing = imputed if imputed else tuple(c for c in COMPONENTS if comps[c] is None)
        end = r.hour_end.to_pydatetime()
        out.setdefault(int(r.stay_id), []).append(
            HourlySofa(
                hour_end=end, total=_int(r.total), imputed_components=imputed, missing_components=missing,
                hour_components=MappingProxyType(hour.get((int(r.stay_id), end), empty)), criteria=crit.label,
                policies=policies, **comps,
            )
        )  # fmt: skip
    return {k: tuple(v) for k, v in out.items()}


def engine_hourly_sofa(
    timeline: PatientTimeline,
    *,
    criteria: str | Criteria = "sofa1",
    policies: Mapping[str, str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> tuple[HourlySofa, ...]:
    """``hourly_sofa(timeline, criteria=..., policies=..., start=..., end=...)`` computed by the set-based engine on
    DuckDB. ``start``/``end`` select rows of the engine's grid (look-back rows included), which must hold them."""
    crit = criteria_for(criteria, ("sofa1", "sofa2"), where="engine_hourly_sofa", todo="sofa1 or sofa2")
    resolved = crit.resolve_policies(policies)
    if timeline.sedation and resolved.get("gcs_assembly") == "ricu_hourly_components":
        raise NotImplementedError("sedation episodes are written as gcs_sedated flags, exact only for as_charted")
    folder = _fresh_folder()
    sid = next(iter(write_timelines([timeline], folder)))
    tabs = TimelineTables.from_parquet(ibis.duckdb.connect(), str(folder))
    lookback = start is not None or end is not None
    fn = hourly_sofa2_expr if crit.rule == "sofa2" else hourly_sofa_expr
    df = fn(tabs, criteria=crit, policies=resolved, keep_lookback=lookback).execute()
    hour_df = fn(tabs, criteria=crit, policies=resolved, keep_lookback=lookback, hour_scores=True).execute()
    rows = engine_rows(df, crit, resolved, hour_df).get(sid, ())
    if not lookback:
        return rows
    grid = Grid.for_stay(resolved, timeline.icu_intime)
    lo = grid.row_end(start) if start is not None else grid.row_end(timeline.icu_intime)
    hi = grid.row_end(end) if end is not None else rows[-1].hour_end
    if not rows or rows[0].hour_end > lo or rows[-1].hour_end < hi:
        raise NotImplementedError(f"rows {lo} to {hi} are outside the engine's grid of this stay")
    return tuple(r for r in rows if lo <= r.hour_end <= hi)


def engine_sepsis3(
    folder: Path, sofa_policies: Mapping[str, str], sepsis3_policies: Mapping[str, str]
) -> dict[int, Any]:
    """The engine's Sepsis-3 row per stay (as the cohort pipeline builds it: hourly rows from the policy's start)."""
    s3 = load_sepsis3_criteria().resolve_policies(sepsis3_policies)
    tabs = TimelineTables.from_parquet(ibis.duckdb.connect(), str(folder))
    hourly = hourly_sofa_expr(tabs, policies=sofa_policies, rows_from=s3["sofa_rows_from"])
    df = sepsis3_expr(tabs, hourly, policies=s3).execute()
    return {int(r.stay_id): r for r in df.itertuples(index=False)}
