"""Fixed-cost profile of a small ``cohort run``: what each second of ``immunoguide cohort run`` goes to.

Usage::

    .venv/bin/python benchmarks/profile_cohort_run.py [--source mimic3 --data DIR] [--repeat 3]

Runs, in fresh processes, (1) ``python -c pass`` and (2) the imports a ``cohort run`` makes, each timed alone; then,
in one process, what the command does, stage by stage: the adapter with every DuckDB statement it executes timed
(the connection it opens is wrapped; the adapter's code is not changed), then ``run_cohort`` twice — once with an
empty SQL cache (Ibis imported, expressions built and compiled) and once with the cache filled — with the seconds
of each stage from its metadata. Prints one table per repeat; the ranges over repeats go into RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORTS = (
    ("typer (the CLI)", "import typer"),
    ("immunoguide.cli", "import immunoguide.cli"),
    ("duckdb", "import duckdb"),
    ("pyarrow + parquet", "import pyarrow, pyarrow.parquet"),
    ("pandas (pulled in by pyarrow's conversions from Python objects)", "import pandas"),
    ("ibis (only when SQL is compiled)", "import ibis"),
    ("criteria + Sepsis-3 criteria loaded", "from immunoguide.criteria import load_criteria; "
     "from immunoguide.rules.sepsis3 import load_sepsis3_criteria; load_criteria('sofa1').resolve_policies(); "
     "load_sepsis3_criteria().resolve_policies()"),
    ("protocol immunosep-2025 loaded (screening)", "from immunoguide.protocols import load_protocol; "
     "load_protocol('immunosep-2025')"),
)


def _child(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    return time.perf_counter() - t


def stage_profile(source: str, data: Path, work: Path) -> dict:
    """In this process: adapter statements, then run_cohort cold and warm."""
    import duckdb

    if source == "mimic3":
        import immunoguide.cohort.sources.mimic3 as adapter_mod
        from immunoguide.cohort.sources.mimic3 import convert_mimic3 as convert
    else:
        import immunoguide.cohort.sources.mimic3 as adapter_mod
        from immunoguide.cohort.sources.mimic4 import convert_mimic4 as convert

    statements: list[tuple[str, float]] = []
    real_connect = duckdb.connect

    class Timed:
        def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
            self._con = con

        def execute(self, sql: str, *a: object, **k: object) -> object:
            t = time.perf_counter()
            res = self._con.execute(sql, *a, **k)
            head = " ".join(str(sql).split())[:70]
            statements.append((head, time.perf_counter() - t))
            return res

        def __getattr__(self, name: str) -> object:
            return getattr(self._con, name)

    t_connect = time.perf_counter()
    con = real_connect(config={"memory_limit": os.environ.get("IMMUNOGUIDE_DUCKDB_MEMORY", "4GB")})
    t_connect = time.perf_counter() - t_connect
    adapter_mod.duckdb.connect = lambda *a, **k: Timed(con)  # type: ignore[attr-defined]
    try:
        t = time.perf_counter()
        convert(data, work / "timeline")
        adapter_s = time.perf_counter() - t
    finally:
        adapter_mod.duckdb.connect = real_connect  # type: ignore[attr-defined]
    from immunoguide.cohort.pipeline import run_cohort

    runs = {}
    for label, cache in (("cold (compile)", "off"), ("warm (cached SQL)", "on")):
        os.environ["IMMUNOGUIDE_SQL_CACHE"] = cache
        if cache == "on":  # fill the cache first
            run_cohort(work / "timeline", work / "fill")
        t = time.perf_counter()
        r = run_cohort(work / "timeline", work / label.split()[0])
        runs[label] = {"total": time.perf_counter() - t, **r.metadata["seconds"],
                       "compile": r.metadata["compiled_sql"]["compile_seconds"]}
    return {"duckdb_connect": t_connect, "adapter": adapter_s, "statements": statements, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="mimic3")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("IMMUNOGUIDE_MIMIC3_DEMO", REPO.parent / "shared" / "data" / "mimic-iii-demo")))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(stage_profile(a.source, a.data, a.work)))
        return 0
    for rep in range(a.repeat):
        print(f"\n## repeat {rep + 1} (load average {os.getloadavg()[0]:.1f})")
        base = _child("pass")
        print(f"python -c pass: {base:.3f} s")
        for label, code in IMPORTS:
            print(f"import {label}: {_child(code) - base:.3f} s (beyond python -c pass)")
        with tempfile.TemporaryDirectory(prefix="ig-profile-") as tmp:
            env = {**os.environ, "IMMUNOGUIDE_CACHE_DIR": str(Path(tmp) / "cache")}
            p = subprocess.run([sys.executable, __file__, "--child", "--source", a.source, "--data", str(a.data),
                                "--work", tmp], capture_output=True, text=True, env=env, check=True)
            prof = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"adapter ({a.source}): {prof['adapter']:.3f} s, of which DuckDB statements "
              f"{sum(s for _, s in prof['statements']):.3f} s; a DuckDB connection {prof['duckdb_connect'] * 1000:.1f} ms")
        for head, s in sorted(prof["statements"], key=lambda x: -x[1])[:12]:
            print(f"    {s:6.3f} s  {head}")
        for label, r in prof["runs"].items():
            parts = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k != "total")
            print(f"run_cohort {label}: {r['total']:.3f} s ({parts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
