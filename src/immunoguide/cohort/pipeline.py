"""``immunoguide cohort run``: timeline tables → hourly SOFA, Sepsis-3, infection source, screening (Parquet).

Outputs in ``out_dir``:

``sofa_hourly.parquet``
    stay_id, hour_end, respiration, coagulation, liver, cardiovascular, cns, renal, total, n_imputed.
``sofa_hourly_evidence.parquet``
    stay_id, hour_end, component, points, source_hour_end, concept, value, value_time, source, detail — the input
    behind each hourly component (:func:`immunoguide.cohort.engine.hourly_evidence_expr`; ``immunoguide cohort
    explain`` prints it in words).
``sofa2_hourly.parquet`` (``sofa2=True`` only)
    the same columns for SOFA-2 "where inputs exist", computed set-wise by
    :func:`immunoguide.cohort.engine_sofa2.hourly_sofa2_expr` (inputs the timeline does not hold are missing).
``sepsis3.parquet``
    stay_id, status, suspected_infection_time, antibiotic_time, culture_time, onset_time, baseline_sofa,
    sofa_at_onset, delta, infection_source, pneumonia, bacteremia, excluded_source.
``screening.parquet``
    stay_id, endotype, endotype_reasons, eligible, reasons, ferritin/HLA-DR availability (see :mod:`.screening`).
``data_quality.parquet``
    every source row the adapter could not use, per stay and reason (from the timeline folder), and every row of the
    timeline the rules would refuse (:mod:`immunoguide.cohort.checks`; such rows are not scored, and a stay whose own
    row is broken is left out of the hourly and Sepsis-3 tables and screened as undetermined).
``metadata.json``
    criteria and protocol versions, every policy, the engine, and each choice that differs from ricu or mimic-code.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from immunoguide.cohort.checks import timeline_issues_expr, without_issues
from immunoguide.cohort.engine import (
    TimelineTables,
    hourly_evidence_expr,
    hourly_sofa_expr,
    left_join_on_stay,
    sepsis3_expr,
)
from immunoguide.cohort.engine_sofa2 import hourly_sofa2_expr
from immunoguide.criteria import load_criteria
from immunoguide.errors import InputError
from immunoguide.rules.sofa import COMPONENTS

__all__ = ["CohortRun", "connect", "infection_source_expr", "reference_differences", "run_cohort"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CohortRun:
    """What a cohort run wrote, how long each stage took, and the run metadata."""

    out_dir: str
    rows: dict[str, int]
    seconds: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)


def connect(engine: str, *, spark_session: Any = None) -> Any:
    """An Ibis backend: ``duckdb`` (embedded, default) or ``spark`` (local mode unless a session is given)."""
    if engine == "duckdb":
        import os

        return ibis.duckdb.connect(memory_limit=os.environ.get("IMMUNOGUIDE_DUCKDB_MEMORY", "4GB"))
    if engine == "spark":
        try:
            from immunoguide.cohort.spark import local_spark_session
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise InputError(
                expected="pyspark installed (pip install -r requirements-spark.txt) and Java 17",
                got=str(exc),
                where="--engine spark",
                todo="install the Spark extra or use --engine duckdb",
            ) from None
        return ibis.pyspark.connect(spark_session or local_spark_session())
    raise InputError(expected="engine duckdb or spark", got=engine, where="--engine", todo="pick duckdb or spark")


def _load_sources() -> dict[str, Any]:
    return tomllib.loads(resources.files("immunoguide.cohort").joinpath("infection_sources.toml").read_text("utf-8"))


def _code_match(code: ir.StringValue, prefixes: list[str]) -> ir.BooleanValue:
    out = ibis.literal(False)
    for p in prefixes:
        out = out | code.startswith(p)
    return out


def infection_source_expr(tables: TimelineTables, sepsis3: ir.Table) -> ir.Table:
    """Infection source per stay from diagnoses and cultures near the suspected infection.

    ``infection_source`` is ``CAP | HAP | VAP`` (pneumonia by timing), ``bacteremia`` (blood-stream evidence
    with no pneumonia and no excluded source — ImmunoSep's *primary* bacteremia also needs the organism rules of
    E7, which these tables do not carry), ``excluded`` (an E3 source), ``other`` or ``unknown`` (no suspected
    infection).
    """
    cfg = _load_sources()
    dx = tables.diagnoses
    cx = tables.cultures
    code = dx.code.upper().replace(".", "")
    flags = dx.group_by("stay_id").aggregate(
        pneu_dx=_code_match(code, cfg["pneumonia"]["icd9"] + cfg["pneumonia"]["icd10"]).any(),
        bact_dx=_code_match(code, cfg["bacteremia"]["icd9"] + cfg["bacteremia"]["icd10"]).any(),
        excl_dx=_code_match(code, [c for k, v in cfg["excluded_sources"].items() for c in v]).any(),
    )
    win = ibis.interval(hours=int(cfg["culture_window_h"]))
    s3 = sepsis3.select("stay_id", "suspected_infection_time")
    cj = s3.join(
        cx,
        [
            s3.stay_id == cx.stay_id,
            cx.positive == True,  # noqa: E712
            cx.time >= s3.suspected_infection_time - win,
            cx.time <= s3.suspected_infection_time + win,
        ],
    )
    cflags = cj.group_by(s3.stay_id).aggregate(
        pneu_cx=cj.specimen.isin(cfg["pneumonia"]["specimens"]).any(),
        bact_cx=cj.specimen.isin(cfg["bacteremia"]["specimens"]).any(),
    )
    v = tables.ventilation
    inv = v.filter(v.kind.isin(["invasive", "tracheostomy_ventilated"]))
    vj = s3.join(
        inv,
        [
            s3.stay_id == inv.stay_id,
            inv.start <= s3.suspected_infection_time - ibis.interval(hours=int(cfg["ventilator_associated_after_h"])),
            inv.stop >= s3.suspected_infection_time,
        ],
    )
    vflags = vj.group_by(s3.stay_id).aggregate(vap_vent=(vj.stop >= vj.start).any())
    st = tables.stays.select("stay_id", "admittime")
    base = s3.join(st, "stay_id")
    for right in (flags, cflags, vflags):
        base = left_join_on_stay(base, right)
    pneu = ibis.coalesce(base.pneu_dx, False) | ibis.coalesce(base.pneu_cx, False)
    bact = ibis.coalesce(base.bact_dx, False) | ibis.coalesce(base.bact_cx, False)
    excl = ibis.coalesce(base.excl_dx, False)
    hosp_h = int(cfg["hospital_acquired_after_h"])
    late = base.suspected_infection_time > base.admittime + ibis.interval(hours=hosp_h)
    ptype = ibis.cases(
        (~pneu, ibis.null("string")),
        (ibis.coalesce(base.vap_vent, False), "VAP"),
        (late, "HAP"),
        (base.admittime.isnull(), ibis.null("string")),
        else_="CAP",
    )
    source = ibis.cases(
        (base.suspected_infection_time.isnull(), "unknown"),
        (pneu & ptype.notnull(), ptype),
        (pneu, "pneumonia_unknown_timing"),
        (bact & ~excl, "bacteremia"),
        (excl, "excluded"),
        else_="other",
    )
    return base.select("stay_id", infection_source=source, pneumonia=pneu, bacteremia=bact, excluded_source=excl)


def reference_differences(sofa_policies: Mapping[str, str], sepsis3_policies: Mapping[str, str]) -> list[dict[str, str]]:
    """Each choice of this run that differs from mimic-code or ricu, named (from ``reference_choices.toml``)."""
    ref = tomllib.loads(resources.files("immunoguide.cohort").joinpath("reference_choices.toml").read_text("utf-8"))
    out: list[dict[str, str]] = []
    for scope, used in (("sofa", sofa_policies), ("sepsis3", sepsis3_policies)):
        for policy, anchors in ref.get(scope, {}).items():
            ours = used.get(policy)
            for anchor, their in anchors.items():
                if their != ours:
                    out.append({"choice": f"{scope}.{policy}", "ours": str(ours), "anchor": anchor, "theirs": str(their)})
    for item in ref.get("semantics", []):
        out.append({"choice": item["choice"], "ours": item["ours"], "anchor": item["anchor"], "theirs": item["theirs"]})
    return out


def run_cohort(
    timeline_dir: str | Path,
    out_dir: str | Path,
    *,
    engine: str = "duckdb",
    protocol: str | None = "immunosep-2025",
    sofa_policies: Mapping[str, str] | None = None,
    sepsis3_policies: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    con: Any = None,
    sofa2: bool = False,
    sofa2_policies: Mapping[str, str] | None = None,
    preset: str | None = None,
    evidence: bool = True,
) -> CohortRun:
    """Run the engine over a timeline-schema folder and write the cohort tables (see module docstring).

    ``preset`` (``immunoguide``, ``ricu``, ``mimic-code``; :mod:`immunoguide.criteria.presets`) sets every SOFA and
    Sepsis-3 policy; ``sofa_policies`` and ``sepsis3_policies`` override single choices on top of it. The timeline
    must have been read with the preset's source profile (``adapter.json``), else :class:`InputError`.
    ``sofa2=True`` also writes ``sofa2_hourly.parquet`` (SOFA-2 policies ``sofa2_policies`` over the defaults);
    ``evidence=False`` skips ``sofa_hourly_evidence.parquet`` (the input behind every hourly component).
    """
    from immunoguide.criteria.presets import load_preset, merge_policies

    preset_obj = load_preset(preset) if preset is not None else None
    say = progress or (lambda _msg: None)
    tdir, out = Path(timeline_dir), Path(out_dir)
    if not (tdir / "stays.parquet").exists():
        raise InputError(
            expected="a timeline folder with stays.parquet (written by an adapter)",
            got=str(tdir),
            where="cohort run",
            todo="convert the source first (immunoguide cohort run --source … does this for you)",
        )
    adapter_meta = json.loads((tdir / "adapter.json").read_text()) if (tdir / "adapter.json").exists() else {}
    if preset_obj is not None and adapter_meta.get("dataset"):
        read_with = adapter_meta.get("choices", {}).get("profile", "immunoguide")
        wanted = preset_obj.source_profile(str(adapter_meta["dataset"]))
        if read_with != wanted:
            raise InputError(
                expected=f"a timeline read with the {wanted!r} source profile (preset {preset_obj.label})",
                got=f"{adapter_meta['dataset']} read with profile {read_with!r} ({tdir / 'adapter.json'})",
                where="cohort run --preset",
                todo=f"convert the source again with --preset {preset_obj.id} (immunoguide cohort run --source … does both)",
            )
    out.mkdir(parents=True, exist_ok=True)
    con = con or connect(engine)
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    tabs = TimelineTables.from_parquet(con, str(tdir))
    # Rows the rules would refuse (a timeline not written by an adapter can hold them): counted, never scored.
    t0 = time.perf_counter()
    say("checking the timeline")
    refused = con.execute(timeline_issues_expr(tabs))
    refused_stays: dict[int, str] = {}
    if len(refused):
        tabs = without_issues(tabs)
        whole = refused[refused.item.str.startswith("stays.") & refused.stay_id.notna()]
        for r in whole.sort_values(["stay_id", "item", "issue"]).itertuples():
            refused_stays.setdefault(int(r.stay_id), f"{r.item} {r.issue} ({r.example})")  # removed whole
    seconds["timeline_check"] = time.perf_counter() - t0
    sofa_crit = load_criteria("sofa1")
    sofa_resolved = sofa_crit.resolve_policies(merge_policies(preset_obj, "sofa1", sofa_policies))
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    s3_crit = load_sepsis3_criteria()
    s3_resolved = s3_crit.resolve_policies(merge_policies(preset_obj, "sepsis3", sepsis3_policies))
    sofa2_crit = load_criteria("sofa2") if sofa2 else None
    sofa2_resolved = sofa2_crit.resolve_policies(sofa2_policies) if sofa2_crit is not None else None

    t0 = time.perf_counter()
    say("hourly SOFA")
    cols = ("stay_id", "hour_end", *COMPONENTS, "total", "n_imputed")
    if s3_resolved["sofa_rows_from"] == "first_sofa_datum":
        # One evaluation for both: the stay's rows (sofa_hourly) and Sepsis-3's rows from the earliest SOFA datum.
        everything = out / "_sofa_hourly_all.parquet"
        _write(con, hourly_sofa_expr(tabs, policies=sofa_resolved, rows_from="all"), everything)
        allr = con.read_parquet(str(everything), table_name=f"ig_hourly_all_{abs(hash(str(out)))}")
        _write(con, allr.filter(allr.hour_end >= allr.first).select(*cols).order_by(["stay_id", "hour_end"]),
               out / "sofa_hourly.parquet")  # fmt: skip
        hourly_back = allr.filter(allr.hour_end >= ibis.coalesce(allr.first_datum, allr.first)).select(*cols)
    else:
        everything = None
        _write(con, hourly_sofa_expr(tabs, policies=sofa_resolved).select(*cols), out / "sofa_hourly.parquet")
        hourly_back = con.read_parquet(str(out / "sofa_hourly.parquet"), table_name=f"ig_hourly_{abs(hash(str(out)))}")
    seconds["sofa_hourly"] = time.perf_counter() - t0
    if evidence:
        t0 = time.perf_counter()
        say("hourly SOFA evidence")
        ev = hourly_evidence_expr(tabs, policies=sofa_resolved).order_by(["stay_id", "hour_end", "component"])
        _write(con, ev, out / "sofa_hourly_evidence.parquet")
        seconds["sofa_hourly_evidence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("Sepsis-3")
    s3 = sepsis3_expr(tabs, hourly_back, policies=s3_resolved)
    _write(con, s3, out / "sepsis3_core.parquet")
    s3_back = con.read_parquet(str(out / "sepsis3_core.parquet"), table_name=f"ig_s3_{abs(hash(str(out)))}")
    src = infection_source_expr(tabs, s3_back)
    s3_full = left_join_on_stay(s3_back, src).order_by("stay_id")
    _write(con, s3_full, out / "sepsis3.parquet")
    (out / "sepsis3_core.parquet").unlink()
    if everything is not None:
        everything.unlink()
    seconds["sepsis3"] = time.perf_counter() - t0

    if sofa2_crit is not None:
        t0 = time.perf_counter()
        say("hourly SOFA-2 (where inputs exist)")
        hourly2 = hourly_sofa2_expr(tabs, criteria=sofa2_crit, policies=sofa2_resolved)
        hourly2_cols = hourly2.select("stay_id", "hour_end", *COMPONENTS, "total", "n_imputed")
        _write(con, hourly2_cols, out / "sofa2_hourly.parquet")
        seconds["sofa2_hourly"] = time.perf_counter() - t0

    if protocol is not None:
        t0 = time.perf_counter()
        say("endotype screening and eligibility")
        from immunoguide.cohort.screening import screen_cohort

        screening_rows = screen_cohort(tdir, out / "sepsis3.parquet", protocol=protocol, refused=refused_stays)
        screening_rows.write(out / "screening.parquet")
        seconds["screening"] = time.perf_counter() - t0

    import pyarrow as pa
    import pyarrow.parquet as pq

    from immunoguide.cohort.schema import SCHEMAS, write_table

    dq = [pq.read_table(tdir / "data_quality.parquet")] if (tdir / "data_quality.parquet").exists() else []
    if len(refused) or not dq:
        dq.append(pa.Table.from_pandas(refused, preserve_index=False).cast(SCHEMAS["data_quality"]))
    write_table(pa.concat_tables([t.cast(SCHEMAS["data_quality"]) for t in dq]), out / "data_quality.parquet", "data_quality")

    for f in sorted(out.glob("*.parquet")):
        rows[f.stem] = pq.read_metadata(f).num_rows
    meta = {
        "engine": engine,
        "preset": preset_obj.to_dict() if preset_obj is not None else None,
        "timeline_dir": str(tdir),
        "sofa_criteria": sofa_crit.label,
        "sofa_policies": sofa_resolved,
        "sepsis3_criteria": s3_crit.label,
        "sepsis3_policies": s3_resolved,
        "protocol": protocol,
        "sofa2_criteria": sofa2_crit.label if sofa2_crit is not None else None,
        "sofa2_policies": sofa2_resolved,
        "differences_from_reference_implementations": reference_differences(sofa_resolved, s3_resolved),
        "timeline_check": {"rows_refused": int(refused.n.sum()) if len(refused) else 0, "stays_refused": sorted(refused_stays)},
        "rows": rows,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    if adapter_meta:
        meta["adapter"] = adapter_meta
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    return CohortRun(out_dir=str(out), rows=rows, seconds=seconds, metadata=meta)


def _write(con: Any, expr: ir.Table, path: Path) -> None:
    """Write an expression to one Parquet file (DuckDB streams; Spark collects to one file via Arrow)."""
    name = getattr(con, "name", "")
    if name == "duckdb":
        con.to_parquet(expr, str(path))
        return
    import pyarrow.parquet as pq

    pq.write_table(con.to_pyarrow(expr), str(path))
