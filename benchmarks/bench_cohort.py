"""Benchmark: hourly SOFA + Sepsis-3 over synthetic MIMIC-IV cohorts (issue "Cohort engine", Performance).

Usage::

    .venv/bin/python benchmarks/bench_cohort.py [STAYS ...]      # default: 1000 10000 100000

For each size, in a fresh child process (so peak RSS is that run's own):

1. ``immunoguide synth mimic4`` data (timed, not part of the ratio);
2. the MIMIC-IV adapter into the timeline schema (timed, reported);
3. **the engine**: hourly SOFA-1 + Sepsis-3 (DuckDB via Ibis, 2 threads) written to Parquet — the measured work;
4. **floor**: a DuckDB scan-and-aggregate of the same Parquet columns (min/max/count per stay and concept, infusion
   and antibiotic aggregates) — target engine/floor ≤ 3×;
5. **pandas baseline**: a straightforward per-stay pandas implementation (hourly grid, worst value per hour,
   ladder scoring, 24 h rolling max, first SOFA ≥ 2 around the first antibiotic) on a sample of stays, scaled to
   the cohort — target engine ≥ 50× faster.

Printed: seconds, events/s, peak RSS, and the two ratios, plus a growth table across sizes. Speed targets live
here, never in the unit tests.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [int(a) for a in sys.argv[1:]] or [1000, 10000, 100000]
PANDAS_SAMPLE = 200


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pandas_hourly_sofa_sample(tl: Path, n: int) -> tuple[float, int]:
    """Time a straightforward per-stay pandas hourly SOFA + onset on ``n`` stays; returns (seconds, stays)."""
    import numpy as np
    import pandas as pd

    from immunoguide.criteria import load_criteria

    crit = load_criteria("sofa1")
    res = crit.resolve_policies()
    stays = pd.read_parquet(tl / "stays.parquet").head(n)
    ids = set(stays.stay_id)
    obs = pd.read_parquet(tl / "observations.parquet", filters=[("stay_id", "in", list(ids))])
    inf = pd.read_parquet(tl / "infusions.parquet", filters=[("stay_id", "in", list(ids))])
    abx = pd.read_parquet(tl / "antibiotics.parquet", filters=[("stay_id", "in", list(ids))])

    def score(ladder: str, x: pd.Series) -> pd.Series:
        lad = crit.ladders[ladder]
        return x.map(lambda v: np.nan if pd.isna(v) else lad.points(float(v), res))

    t0 = time.perf_counter()
    for st in stays.itertuples():
        o = obs[obs.stay_id == st.stay_id].copy()
        first = st.intime.ceil("h")
        grid = pd.date_range(first - pd.Timedelta(hours=23), st.outtime.ceil("h"), freq="h")
        o["hour"] = o.time.dt.ceil("h")
        mins = o[o.concept.isin(["platelets_10e3_per_ul", "map_mmhg", "gcs", "pao2_mmhg"])].pivot_table(
            index="hour", columns="concept", values="value", aggfunc="min")
        maxs = o[o.concept.isin(["bilirubin_mg_per_dl", "creatinine_mg_per_dl", "fio2_fraction"])].pivot_table(
            index="hour", columns="concept", values="value", aggfunc="max")
        h = pd.DataFrame(index=grid).join(mins).join(maxs)
        uo = o[o.concept == "urine_output_ml"].groupby("hour").value.sum().reindex(grid, fill_value=0.0)
        h["uo24"] = uo.rolling(24, min_periods=1).sum()
        i = inf[inf.stay_id == st.stay_id]
        for drug in ("dopamine", "dobutamine", "epinephrine", "norepinephrine"):
            col = pd.Series(np.nan, index=grid)
            for seg in i[i.drug == drug].itertuples():
                m = (grid > seg.start) & (grid - pd.Timedelta(hours=1) < seg.stop)
                col[m] = np.fmax(col[m], seg.rate_ug_kg_min)
            h[drug] = col
        comp = pd.DataFrame(index=grid)
        pf = h.get("pao2_mmhg", pd.Series(np.nan, index=grid)) / h.get("fio2_fraction", pd.Series(np.nan, index=grid))
        comp["respiration"] = score("respiration_pf", pf).clip(upper=2)
        comp["coagulation"] = score("coagulation_platelets", h.get("platelets_10e3_per_ul", pd.Series(np.nan, index=grid)))
        comp["liver"] = score("liver_bilirubin", h.get("bilirubin_mg_per_dl", pd.Series(np.nan, index=grid)))
        cv = [score("cardiovascular_map", h.get("map_mmhg", pd.Series(np.nan, index=grid)))]
        cv += [score(f"cardiovascular_{d}", h[d]) for d in ("dopamine", "dobutamine", "epinephrine", "norepinephrine")]
        comp["cardiovascular"] = pd.concat(cv, axis=1).max(axis=1)
        comp["cns"] = score("cns_gcs", h.get("gcs", pd.Series(np.nan, index=grid)))
        comp["renal"] = pd.concat(
            [score("renal_creatinine", h.get("creatinine_mg_per_dl", pd.Series(np.nan, index=grid))), score("renal_urine", h.uo24)], axis=1
        ).max(axis=1)
        rolled = comp.rolling(24, min_periods=1).max().fillna(0)
        total = rolled.sum(axis=1)[grid >= first]
        a = abx[abx.stay_id == st.stay_id]
        if len(a):
            si = a.time.min()
            win = total[(total.index >= si - pd.Timedelta(hours=48)) & (total.index <= si + pd.Timedelta(hours=24))]
            _ = win[win >= 2].index.min() if len(win) else None
    return time.perf_counter() - t0, len(stays)


def child(stays: int, work: Path) -> dict:
    """One benchmark size, run in a child process."""
    import duckdb
    import ibis

    from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr, sepsis3_expr
    from immunoguide.cohort.sources.mimic4 import convert_mimic4
    from immunoguide.cohort.synth import generate_mimic4

    out: dict = {"stays": stays}
    raw, tl, res = work / "raw", work / "timeline", work / "out"
    t = time.perf_counter()
    s = generate_mimic4(raw, stays=stays, seed=20261123)
    out["synth_s"] = time.perf_counter() - t
    out["events"] = int(s.events)
    t = time.perf_counter()
    convert_mimic4(raw, tl)
    out["adapter_s"] = time.perf_counter() - t
    res.mkdir()
    con = ibis.duckdb.connect(threads=2, memory_limit="6GB")
    t = time.perf_counter()
    tabs = TimelineTables.from_parquet(con, str(tl))
    hourly = hourly_sofa_expr(tabs)
    con.to_parquet(hourly.select("stay_id", "hour_end", "respiration", "coagulation", "liver", "cardiovascular", "cns", "renal", "total"), str(res / "sofa_hourly.parquet"))
    back = con.read_parquet(str(res / "sofa_hourly.parquet"))
    con.to_parquet(sepsis3_expr(tabs, back), str(res / "sepsis3.parquet"))
    out["engine_s"] = time.perf_counter() - t
    out["hourly_rows"] = duckdb.sql(f"select count(*) from '{res}/sofa_hourly.parquet'").fetchall()[0][0]
    floor = duckdb.connect()
    floor.execute("SET threads = 2")
    t = time.perf_counter()
    floor.sql(
        f"""select stay_id, concept, count(*), min(value), max(value), min(time), max(time)
            from '{tl}/observations.parquet' group by all"""
    ).fetchall()
    floor.sql(f"select stay_id, drug, count(*), max(rate_ug_kg_min), min(start), max(stop) from '{tl}/infusions.parquet' group by all").fetchall()
    floor.sql(f"select stay_id, count(*), min(time) from '{tl}/antibiotics.parquet' group by all").fetchall()
    floor.sql(f"select stay_id, count(*), min(time) from '{tl}/cultures.parquet' group by all").fetchall()
    out["floor_s"] = time.perf_counter() - t
    sample = min(PANDAS_SAMPLE, stays)
    secs, n = pandas_hourly_sofa_sample(tl, sample)
    out["pandas_sample_s"] = secs
    out["pandas_scaled_s"] = secs / n * stays
    out["peak_rss_mb"] = _rss_mb()
    return out


def main() -> None:
    if os.environ.get("IG_BENCH_CHILD"):
        stays = int(os.environ["IG_BENCH_CHILD"])
        print(json.dumps(child(stays, Path(os.environ["IG_BENCH_WORK"]))))
        return
    rows = []
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix=f"ig-bench-{n}-") as work:
            env = {**os.environ, "IG_BENCH_CHILD": str(n), "IG_BENCH_WORK": work}
            p = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                print(p.stderr[-3000:])
                raise SystemExit(f"size {n} failed")
            r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(
            f"{n:>7} stays | {r['events'] / 1e6:6.1f} M events | synth {r['synth_s']:6.1f} s | adapter {r['adapter_s']:6.1f} s | "
            f"engine {r['engine_s']:6.1f} s ({r['events'] / r['engine_s'] / 1e6:.2f} M events/s) | floor {r['floor_s']:5.2f} s "
            f"| engine/floor {r['engine_s'] / r['floor_s']:5.1f}x (target <= 3x) | pandas scaled {r['pandas_scaled_s']:8.1f} s "
            f"| speed-up vs pandas {r['pandas_scaled_s'] / r['engine_s']:6.1f}x (target >= 50x) | peak RSS {r['peak_rss_mb']:7.0f} MB",
            flush=True,
        )
    print("\ngrowth (engine seconds per 1,000 stays):")
    for r in rows:
        print(f"  {r['stays']:>7} stays: {1000 * r['engine_s'] / r['stays']:.3f} s / 1k stays, hourly rows {r['hourly_rows']:,}")


if __name__ == "__main__":
    main()
