"""``immunoguide cohort run``: timeline tables → hourly SOFA, Sepsis-3, infection source, screening (Parquet).

Outputs in ``out_dir``:

``sofa_hourly.parquet``
    stay_id, hour_end, respiration, coagulation, liver, cardiovascular, cns, renal, total, n_imputed (pivoted from
    the evidence when the run writes it: :func:`immunoguide.cohort.engine.hourly_from_evidence_expr`).
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
    criteria and protocol versions, every policy, the engine, and each choice that differs from ricu or mimic-code;
    the seconds of each stage and ``compiled_sql`` (how many stages took their SQL from the cache, how many were
    compiled, and the seconds compiling took).

Fixed costs (``benchmarks/RESULTS.md``, issue 16): on DuckDB a run opens one connection, registers the timeline
files as views and executes one SQL statement per stage. Ibis builds and compiles that SQL once per criteria,
policies, timeline schema and version of the code and libraries; the result is cached in memory and on disk
(``IMMUNOGUIDE_CACHE_DIR``, default ``~/.cache/immunoguide``; ``IMMUNOGUIDE_SQL_CACHE=off`` compiles every time),
so a repeated run imports neither Ibis nor sqlglot and builds no expression — about 2–3 s on the MIMIC-III demo.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import InputError

if TYPE_CHECKING:  # Ibis is imported only when an expression has to be built (a cold SQL cache, or Spark)
    import duckdb
    import ibis.expr.types as ir
    import pyarrow as pa

    from immunoguide.cohort.engine import TimelineTables

__all__ = ["CohortRun", "connect", "infection_source_expr", "reference_differences", "run_cohort"]

Progress = Callable[[str], None]

#: The timeline tables the engine reads (:class:`immunoguide.cohort.engine.TimelineTables`, in its field order).
_TIMELINE = ("stays", "observations", "infusions", "ventilation", "antibiotics", "cultures", "diagnoses")
#: Bump when the layout of the SQL cache changes.
_SQL_CACHE_FORMAT = 1
#: Stands for the run's view prefix in cached SQL (each run registers its Parquet files under a prefix of its own).
_RUN_TAG = "__ig_run__"


@dataclass(frozen=True)
class CohortRun:
    """What a cohort run wrote, how long each stage took, and the run metadata."""

    out_dir: str
    rows: dict[str, int]
    seconds: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)


def connect(engine: str, *, spark_session: Any = None) -> Any:
    """An Ibis backend: ``duckdb`` (embedded, default) or ``spark`` (local mode unless a session is given)."""
    import ibis

    if engine == "duckdb":
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


def _duckdb_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up as :func:`connect` (through Ibis) sets up its own: memory limit, UTC, no scans of
    Python variables."""
    import duckdb

    raw = duckdb.connect(config={"memory_limit": os.environ.get("IMMUNOGUIDE_DUCKDB_MEMORY", "4GB")})
    raw.execute("SET timezone = 'UTC'").fetchall()
    raw.execute("SET python_enable_replacements = false").fetchall()
    return raw


def _load_sources() -> dict[str, Any]:
    return tomllib.loads(resources.files("immunoguide.cohort").joinpath("infection_sources.toml").read_text("utf-8"))


def _code_match(code: ir.StringValue, prefixes: list[str]) -> ir.BooleanValue:
    import ibis

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
    import ibis

    from immunoguide.cohort.engine import left_join_on_stay

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
    inv = v.filter(v.kind.isin(list(SOFA_DEFINITIONS.invasive_ventilation)))
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

    On DuckDB the run uses one connection (``con``'s, or its own) and executes SQL that Ibis compiled from the
    engine's expressions; the compiled SQL is cached (in memory and under ``IMMUNOGUIDE_CACHE_DIR``, by default
    ``~/.cache/immunoguide``) per criteria, policies, timeline schema and version of the code and of Ibis, sqlglot
    and DuckDB, so that a repeated run neither builds nor compiles the expressions (``IMMUNOGUIDE_SQL_CACHE=off``
    compiles every time). Spark runs the Ibis expressions directly.
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
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    from immunoguide.criteria import load_criteria
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    sofa_crit = load_criteria("sofa1")
    sofa_resolved = sofa_crit.resolve_policies(merge_policies(preset_obj, "sofa1", sofa_policies))
    s3_crit = load_sepsis3_criteria()
    s3_resolved = s3_crit.resolve_policies(merge_policies(preset_obj, "sepsis3", sepsis3_policies))
    sofa2_crit = load_criteria("sofa2") if sofa2 else None
    sofa2_resolved = sofa2_crit.resolve_policies(sofa2_policies) if sofa2_crit is not None else None

    t0 = time.perf_counter()
    if con is None and engine == "duckdb" or con is not None and getattr(con, "name", "") == "duckdb":
        run: _Run = _DuckDBRun(tdir, out, con)
    else:
        run = _IbisRun(tdir, out, con if con is not None else connect(engine))
    run.key = {
        "sofa": [sofa_crit.label, sofa_resolved],
        "sepsis3": [s3_crit.label, s3_resolved],
        "sofa2": [sofa2_crit.label, sofa2_resolved] if sofa2_crit is not None else None,
    }
    seconds["connect"] = time.perf_counter() - t0

    # Rows the rules would refuse (a timeline not written by an adapter can hold them): counted, never scored.
    t0 = time.perf_counter()
    say("checking the timeline")
    refused = run.issues()
    refused_stays: dict[int, str] = {}
    if refused.num_rows:
        run.clean = True
        whole = [r for r in refused.select(["stay_id", "item", "issue", "example"]).to_pylist()
                 if r["stay_id"] is not None and r["item"].startswith("stays.")]
        for r in sorted(whole, key=lambda r: (r["stay_id"], r["item"], r["issue"])):
            refused_stays.setdefault(int(r["stay_id"]), f"{r['item']} {r['issue']} ({r['example']})")  # removed whole
    seconds["timeline_check"] = time.perf_counter() - t0

    from_datum = s3_resolved["sofa_rows_from"] == "first_sofa_datum"
    # A run that writes the evidence holds every windowed component score of sofa_hourly's rows in it: the evidence
    # is written first and pivoted (a fraction of evaluating the hours a second time). Under ``first_sofa_datum`` the
    # hours are evaluated once for sofa_hourly and Sepsis-3's rows instead.
    pivot = evidence and not from_datum
    cols = ("stay_id", "hour_end", "respiration", "coagulation", "liver", "cardiovascular", "cns", "renal", "total",
            "n_imputed")  # fmt: skip

    def hourly_expr() -> ir.Table:
        from immunoguide.cohort.engine import hourly_sofa_expr

        if from_datum:  # the stay's rows, from the table that also holds Sepsis-3's rows from the first SOFA datum
            allr = run.table("_sofa_hourly_all")
            return allr.filter(allr.hour_end >= allr.first).select(*cols).order_by(["stay_id", "hour_end"])
        return hourly_sofa_expr(run.tables(), policies=sofa_resolved).select(*cols)

    def hourly_all_expr() -> ir.Table:
        from immunoguide.cohort.engine import hourly_sofa_expr

        return hourly_sofa_expr(run.tables(), policies=sofa_resolved, rows_from="all")

    def sepsis3_rows_expr() -> ir.Table:
        import ibis

        allr = run.table("_sofa_hourly_all")
        return allr.filter(allr.hour_end >= ibis.coalesce(allr.first_datum, allr.first)).select(*cols)

    def hourly_from_evidence() -> ir.Table:
        from immunoguide.cohort.engine import hourly_from_evidence_expr

        return hourly_from_evidence_expr(run.table("sofa_hourly_evidence"), policies=sofa_resolved).select(*cols)

    def evidence_expr() -> ir.Table:
        from immunoguide.cohort.engine import hourly_evidence_expr

        return hourly_evidence_expr(run.tables(), policies=sofa_resolved).order_by(["stay_id", "hour_end", "component"])

    if evidence:
        t0 = time.perf_counter()
        say("hourly SOFA evidence")
        run.write("sofa_hourly_evidence", evidence_expr, out / "sofa_hourly_evidence.parquet")
        seconds["sofa_hourly_evidence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("hourly SOFA")
    everything = out / "_sofa_hourly_all.parquet"
    if from_datum:
        # One evaluation for both: the stay's rows (sofa_hourly) and Sepsis-3's rows from the earliest SOFA datum.
        run.write("_sofa_hourly_all", hourly_all_expr, everything)
        run.register("_sofa_hourly_all", everything)
        run.write("sofa_hourly", hourly_expr, out / "sofa_hourly.parquet")
        run.write("_sepsis3_rows", sepsis3_rows_expr, out / "_sepsis3_rows.parquet")
        run.register("sofa_hourly", out / "_sepsis3_rows.parquet")
    elif pivot:
        run.register("sofa_hourly_evidence", out / "sofa_hourly_evidence.parquet")
        run.write("sofa_hourly_from_evidence", hourly_from_evidence, out / "sofa_hourly.parquet")
        run.forget("sofa_hourly_evidence")
        run.register("sofa_hourly", out / "sofa_hourly.parquet")
    else:
        run.write("sofa_hourly", hourly_expr, out / "sofa_hourly.parquet")
        run.register("sofa_hourly", out / "sofa_hourly.parquet")
    seconds["sofa_hourly"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("Sepsis-3")

    def sepsis3_core_expr() -> ir.Table:
        from immunoguide.cohort.engine import sepsis3_expr

        return sepsis3_expr(run.tables(), run.table("sofa_hourly"), policies=s3_resolved)

    def sepsis3_full_expr() -> ir.Table:
        from immunoguide.cohort.engine import left_join_on_stay

        s3_back = run.table("sepsis3_core")
        return left_join_on_stay(s3_back, infection_source_expr(run.tables(), s3_back)).order_by("stay_id")

    run.write("sepsis3_core", sepsis3_core_expr, out / "sepsis3_core.parquet")
    run.register("sepsis3_core", out / "sepsis3_core.parquet")
    run.write("sepsis3", sepsis3_full_expr, out / "sepsis3.parquet")
    run.forget("sepsis3_core")
    (out / "sepsis3_core.parquet").unlink()
    if from_datum:
        run.forget("sofa_hourly")
        run.forget("_sofa_hourly_all")
        everything.unlink()
        (out / "_sepsis3_rows.parquet").unlink()
    seconds["sepsis3"] = time.perf_counter() - t0

    if sofa2_crit is not None:
        t0 = time.perf_counter()
        say("hourly SOFA-2 (where inputs exist)")

        def hourly2_expr() -> ir.Table:
            from immunoguide.cohort.engine_sofa2 import hourly_sofa2_expr
            from immunoguide.rules.sofa import COMPONENTS

            hourly2 = hourly_sofa2_expr(run.tables(), criteria=sofa2_crit, policies=sofa2_resolved)
            return hourly2.select("stay_id", "hour_end", *COMPONENTS, "total", "n_imputed")

        run.write("sofa2_hourly", hourly2_expr, out / "sofa2_hourly.parquet")
        seconds["sofa2_hourly"] = time.perf_counter() - t0

    if protocol is not None:
        t0 = time.perf_counter()
        say("endotype screening and eligibility")
        from immunoguide.cohort.screening import screen_cohort

        screening_rows = screen_cohort(tdir, out / "sepsis3.parquet", protocol=protocol, refused=refused_stays)
        screening_rows.write(out / "screening.parquet")
        seconds["screening"] = time.perf_counter() - t0

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from immunoguide.cohort.schema import SCHEMAS, read_rows, write_table

    dq = [read_rows(tdir / "data_quality.parquet")] if (tdir / "data_quality.parquet").exists() else []
    if refused.num_rows or not dq:
        dq.append(refused.cast(SCHEMAS["data_quality"]))
    write_table(pa.concat_tables([t.cast(SCHEMAS["data_quality"]) for t in dq]), out / "data_quality.parquet", "data_quality")
    run.close()

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
        "timeline_check": {
            "rows_refused": int(pc.sum(refused["n"]).as_py() or 0) if refused.num_rows else 0,
            "stays_refused": sorted(refused_stays),
        },
        "rows": rows,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "compiled_sql": run.sql_stats(),
    }
    if adapter_meta:
        meta["adapter"] = adapter_meta
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    return CohortRun(out_dir=str(out), rows=rows, seconds=seconds, metadata=meta)


class _Run:
    """How a run reaches its backend: the timeline check, writing a stage's table, reading a written table back."""

    key: dict[str, Any]
    clean = False  # True once the check refused rows: the stages then read the timeline without them

    def __init__(self, tdir: Path, out: Path) -> None:
        self.tdir, self.out = tdir, out
        self.key = {}
        self._tables: TimelineTables | None = None
        self._clean_tables: TimelineTables | None = None

    def tables(self) -> TimelineTables:
        """The timeline as Ibis tables (without the refused rows once the check found some)."""
        if self._tables is None:
            self._tables = self._timeline()
        if not self.clean:
            return self._tables
        if self._clean_tables is None:
            from immunoguide.cohort.checks import without_issues

            self._clean_tables = without_issues(self._tables)
        return self._clean_tables

    def _timeline(self) -> TimelineTables:
        raise NotImplementedError

    def issues(self) -> pa.Table:
        raise NotImplementedError

    def write(self, stage: str, build: Callable[[], ir.Table], path: Path) -> None:
        raise NotImplementedError

    def register(self, name: str, path: Path) -> None:
        raise NotImplementedError

    def table(self, name: str) -> ir.Table:
        raise NotImplementedError

    def forget(self, name: str) -> None:
        """The table ``name`` is no longer read (its file is about to be removed)."""

    def close(self) -> None:
        """Release what the run opened."""

    def sql_stats(self) -> dict[str, Any]:
        return {}


class _IbisRun(_Run):
    """Any Ibis backend (Spark): the expressions are built and executed through Ibis."""

    def __init__(self, tdir: Path, out: Path, con: Any) -> None:
        super().__init__(tdir, out)
        self.con = con
        self._registered: dict[str, ir.Table] = {}

    def _timeline(self) -> TimelineTables:
        from immunoguide.cohort.engine import TimelineTables

        return TimelineTables.from_parquet(self.con, str(self.tdir))

    def issues(self) -> pa.Table:
        import pyarrow as pa

        from immunoguide.cohort.checks import timeline_issues_expr

        return pa.Table.from_pandas(self.con.execute(timeline_issues_expr(self.tables())), preserve_index=False)

    def write(self, stage: str, build: Callable[[], ir.Table], path: Path) -> None:
        _write(self.con, build(), path)

    def register(self, name: str, path: Path) -> None:
        self._registered[name] = self.con.read_parquet(str(path), table_name=f"ig_{name}_{abs(hash(str(self.out)))}")

    def table(self, name: str) -> ir.Table:
        return self._registered[name]


class _DuckDBRun(_Run):
    """DuckDB through one connection: each stage is one SQL statement, compiled by Ibis or taken from the cache.

    The timeline files and the tables read back are registered as temporary views named ``<run tag>_<table>``;
    the cached SQL holds a placeholder for the tag, so it serves any folder whose tables have the same schema.
    """

    def __init__(self, tdir: Path, out: Path, con: Any) -> None:
        super().__init__(tdir, out)
        self._ibis = con
        self.raw = con.con if con is not None else _duckdb_connection()
        self._own = con is None
        self.tag = f"ig_{secrets.token_hex(8)}"
        self._views: list[str] = []
        self.hits = self.compiled = 0
        self.compile_s = 0.0
        for name in _TIMELINE:
            self._view(name, self.tdir / f"{name}.parquet")
        self._schema = {name: self._exec(f"DESCRIBE {self.tag}_{name}") for name in _TIMELINE}

    def _view(self, name: str, path: Path) -> None:
        self._exec(f"CREATE OR REPLACE TEMP VIEW {self.tag}_{name} AS SELECT * FROM read_parquet({_literal(path)})")
        self._views.append(f"{self.tag}_{name}")

    def _exec(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` and fetch its result (DuckDB refuses other work while a result is left unread)."""
        return self.raw.execute(sql).fetchall()

    def _backend(self) -> Any:
        if self._ibis is None:
            import ibis

            self._ibis = ibis.duckdb.from_connection(self.raw)
        return self._ibis

    def _timeline(self) -> TimelineTables:
        from immunoguide.cohort.engine import TimelineTables

        con = self._backend()
        return TimelineTables(*(con.table(f"{self.tag}_{name}") for name in _TIMELINE))

    def table(self, name: str) -> ir.Table:
        return self._backend().table(f"{self.tag}_{name}")

    def register(self, name: str, path: Path) -> None:
        self._view(name, path)

    def forget(self, name: str) -> None:
        self._exec(f"DROP VIEW IF EXISTS {self.tag}_{name}")
        self._views.remove(f"{self.tag}_{name}")

    def close(self) -> None:
        for v in self._views:
            self._exec(f"DROP VIEW IF EXISTS {v}")
        self._views.clear()
        if self._own:
            self.raw.close()

    def sql(self, stage: str, build: Callable[[], ir.Table]) -> str:
        """The SQL of ``stage`` for this run: cached, or compiled by Ibis from ``build()`` (and then cached)."""
        import duckdb

        ident = {
            "format": _SQL_CACHE_FORMAT, "stage": stage, "code": _code_digest(), "libraries": _library_versions(),
            "duckdb": duckdb.__version__, "database": self._exec("SELECT current_database()"),
            "schema": self._schema, "criteria": self.key, "clean": self.clean,
        }
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        text = _sql_cache_get(digest)
        if text is None:
            t0 = time.perf_counter()
            text = str(self._backend().compile(build())).replace(self.tag, _RUN_TAG)
            self.compile_s += time.perf_counter() - t0
            self.compiled += 1
            _sql_cache_put(digest, text)
        else:
            self.hits += 1
        return text.replace(_RUN_TAG, self.tag)

    def issues(self) -> pa.Table:
        def build() -> ir.Table:
            from immunoguide.cohort.checks import timeline_issues_expr

            return timeline_issues_expr(self.tables())

        return self.raw.sql(self.sql("timeline_check", build)).to_arrow_table()

    def write(self, stage: str, build: Callable[[], ir.Table], path: Path) -> None:
        # what Ibis's to_parquet runs for the expression
        copy = f"COPY ({self.sql(stage, build)}) TO {_literal(path)} (FORMAT 'parquet')"
        disabled = _DISABLED_OPTIMIZERS.get(stage)
        if disabled is None:
            self._exec(copy)
            return
        (before,) = self._exec("SELECT current_setting('disabled_optimizers')")[0]
        self._exec(f"SET disabled_optimizers = {_literal(','.join(filter(None, (before, disabled))))}")
        try:
            self._exec(copy)
        finally:
            self._exec(f"SET disabled_optimizers = {_literal(before)}")

    def sql_stats(self) -> dict[str, Any]:
        return {"from_cache": self.hits, "compiled": self.compiled, "compile_seconds": round(self.compile_s, 3),
                "cache_dir": str(_sql_cache_dir()) if _sql_cache_dir() is not None else None}


#: DuckDB optimizers a stage runs without (the plan changes, the result does not). The evidence's last join keeps
#: its written sides: the hours' best records (the smaller table) are hashed and the windowed rows probe them; left
#: to its estimates DuckDB hashes the twice as many windowed rows with their payload instead, and the statement costs
#: 12–17 % more CPU (1,000 and 10,000 synthetic stays, DuckDB 2.0).
_DISABLED_OPTIMIZERS = {"sofa_hourly_evidence": "build_side_probe_side"}


def _literal(path: Path | str) -> str:
    """``path`` (or any text) as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _sql_cache_enabled() -> bool:
    return os.environ.get("IMMUNOGUIDE_SQL_CACHE", "on").lower() not in ("off", "0", "no", "false")


def _sql_cache_dir() -> Path | None:
    """Where compiled SQL is kept between processes (None: caching is off)."""
    if not _sql_cache_enabled():
        return None
    base = os.environ.get("IMMUNOGUIDE_CACHE_DIR")
    if base:
        return Path(base) / "sql"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "immunoguide" / "sql"


_SQL_MEMORY: dict[str, str] = {}


def _sql_cache_get(digest: str) -> str | None:
    if not _sql_cache_enabled():
        return None
    if digest in _SQL_MEMORY:
        return _SQL_MEMORY[digest]
    d = _sql_cache_dir()
    if d is None:
        return None
    try:
        entry = json.loads((d / f"{digest}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("digest") != digest or not isinstance(entry.get("sql"), str):
        return None
    _SQL_MEMORY[digest] = entry["sql"]
    return entry["sql"]


def _sql_cache_put(digest: str, sql: str) -> None:
    """Keep ``sql`` in memory and on disk (written whole, then renamed; a cache that cannot be written is skipped)."""
    if not _sql_cache_enabled():
        return
    _SQL_MEMORY[digest] = sql
    d = _sql_cache_dir()
    if d is None:
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{digest}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps({"digest": digest, "sql": sql}), "utf-8")
        os.replace(tmp, d / f"{digest}.json")
    except OSError:
        pass


@cache
def _code_digest() -> str:
    """SHA-256 over the code and data files the expressions are built from (engine, checks, criteria, rules …)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    files = [root / "units.py"]
    for sub in ("cohort", "criteria", "rules"):
        files += [p for p in (root / sub).rglob("*") if p.suffix in (".py", ".toml")]
    for p in sorted(files):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@cache
def _library_versions() -> dict[str, str]:
    """The installed Ibis and sqlglot that compile the SQL, without importing them: each package's
    ``__init__.py`` (path, size, modification time; an upgrade rewrites it). ``importlib.metadata.version`` scans
    every distribution on the path: 0.1–0.3 s of each ``cohort run`` on the project's machine."""
    from importlib.util import find_spec

    out = {}
    for pkg in ("ibis", "sqlglot"):
        spec = find_spec(pkg)
        try:
            st = os.stat(spec.origin) if spec is not None and spec.origin else None
        except OSError:  # pragma: no cover - both are required
            st = None
        out[pkg] = f"{spec.origin}:{st.st_size}:{st.st_mtime_ns}" if st is not None and spec is not None else "unknown"
    return out


def _write(con: Any, expr: ir.Table, path: Path) -> None:
    """Write an expression to one Parquet file (DuckDB streams; Spark collects to one file via Arrow)."""
    name = getattr(con, "name", "")
    if name == "duckdb":
        con.to_parquet(expr, str(path))
        return
    import pyarrow.parquet as pq

    pq.write_table(con.to_pyarrow(expr), str(path))
