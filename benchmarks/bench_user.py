"""Benchmark: the work a user feels (issue 16), before and after, measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_user.py --before 68dc3ae            # every row, before = that commit
    .venv/bin/python benchmarks/bench_user.py --rows cli,mimic3 --rounds 9 # some rows, this tree only

Each variant is a source tree (``--before REV`` is exported with ``git archive`` into a temporary folder; "after" is
this checkout's ``src``) run through the same console script with ``PYTHONPATH``. Every command runs in a fresh
process, variants alternate (ABBA order), and the baselines run between them, so load on a shared machine hits
both alike. Per variant the first run is reported apart as *cold* (bytecode compiled into a fresh
``PYTHONPYCACHEPREFIX``, empty SQL cache under a fresh ``IMMUNOGUIDE_CACHE_DIR``) and left out of the ranges,
which are min–max (median) over the other rounds, of wall time and of CPU time (user + system of the process and
its threads). Rows and their floors (each printed as a ratio measured in this run):

* ``cli``: ``immunoguide --help``, ``classify`` and ``score sofa`` of one JSON line ÷ ``python -c pass``
  (target ≤ 5×); ``python -c "import typer"`` is printed as what any typer command costs at least, and the library
  work of ``classify`` and ``score sofa`` alone (no CLI: import the rules, load the protocol or criteria) as their
  floor below the CLI; and the prescribed stack alone (a typer command validating one line into one pydantic model;
  ``import duckdb, pyarrow.parquet``, the least any ``cohort run`` process imports).
* ``mimic3``: ``cohort run --source mimic3`` on the MIMIC-III demo ÷ DuckDB reading its source tables once
  (the 11 CSV tables the adapter reads, each into a table; time inside the process) — target ≤ 3×.
* ``synth``: ``synth mimic4 --stays N`` (timed, not a ratio), then ``cohort run --source mimic4`` ÷ (DuckDB reading
  every raw Parquet table once + the hourly floor: the timeline's observations bucketed into stay × hour and
  written to Parquet) — target ≤ 2×; the run's peak resident set is printed beside its CPU seconds (the issue's
  100,000-stay row: ``--rows synth --stays 100000``, one warm run per variant, whole run under 8 GB).
* ``demo``: ``immunoguide demo`` at its default size into the same folder for every variant, with
  ``SOURCE_DATE_EPOCH`` set (the reports' "generated" stamp); the files it writes are compared by
  ``demo_checksums.py`` (target ≤ 20 s, same reports byte for byte).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "immunoguide"
MIMIC3_DEMO = Path(os.environ.get("IMMUNOGUIDE_MIMIC3_DEMO", REPO.parent / "shared" / "data" / "mimic-iii-demo"))
#: The MIMIC-III tables the adapter reads (cohort/sources/mimic3.py).
MIMIC3_TABLES = ("icustays", "admissions", "patients", "chartevents", "labevents", "outputevents", "inputevents_cv",
                 "inputevents_mv", "prescriptions", "microbiologyevents", "diagnoses_icd")
ONE_CLASSIFY = '{"ferritin": 6000, "ferritin_unit": "ng/mL", "hla_dr_per_monocyte": 9000, "hla_dr_method": "quantibrite_abc"}\n'
ONE_SOFA = '{"pao2_mmhg": 80, "fio2_fraction": 0.5, "platelets_10e3_per_ul": 90, "gcs": 13, "map_mmhg": 65}\n'

#: The library work of ``classify`` and ``score sofa`` of one line without the CLI (this checkout's ``src``): what
#: the command costs at least whatever its command line does.
LIBRARY_FLOORS = {
    "library only: classify (rules + protocol loaded, one line)": (
        "from immunoguide.protocols import load_protocol; from immunoguide.rules.endotype import "
        "classify_endotype, results_from_record; p = load_protocol('immunosep-2025'); "
        "spec, label = p.classification, p.label; "
        "r, a, t = results_from_record(" + repr(json.loads(ONE_CLASSIFY)) + ", spec, where='line 1'); "
        "classify_endotype(spec, r, anchor_time=a, at=t, protocol_label=label)"
    ),
    "library only: score sofa (rules + criteria loaded, one line)": (
        "from immunoguide.criteria import load_criteria; from immunoguide.rules.sofa import SofaInputs, score_sofa; "
        "c = load_criteria('sofa1'); c.resolve_policies({}); "
        "score_sofa(SofaInputs.from_record(" + repr(json.loads(ONE_SOFA)) + ", where='line 1'), criteria=c, policies={})"
    ),
}
#: What the prescribed stack costs before any project code (the guide names typer for the CLI and pydantic 2 for typed
#: inputs): a typer command with one option that validates one line into one pydantic model — the least a ``classify``
#: or ``score sofa`` built on that stack can cost. And the least any ``cohort run`` process costs: the interpreter plus
#: DuckDB and pyarrow's Parquet module imported.
STACK_FLOORS = {
    "stack only: typer command, one option, one pydantic model": (
        "import sys, typer, pydantic\n"
        "class Line(pydantic.BaseModel):\n    ferritin: float | None = None\n    unit: str | None = None\n"
        "app = typer.Typer()\n"
        "@app.command()\ndef main(protocol: str = 'immunosep-2025') -> None:\n"
        "    print(Line.model_validate_json(sys.stdin.readline() or '{}').model_dump_json())\n"
        "app()"
    ),
    "stack only: import duckdb + pyarrow.parquet": "import duckdb, pyarrow.parquet",
}
_READ_MIMIC3 = """
import csv, sys, time, duckdb
d, tables = sys.argv[1], sys.argv[2].split(",")
kinds = {"integer": "BIGINT", "numeric": "DOUBLE", "character": "VARCHAR", "POSIXct": "TIMESTAMP"}
types = {r["table"]: dict(zip(r["colnames"].split("|"), [kinds[k] for k in r["types"].split("|")]))
         for r in csv.DictReader(open(f"{d}/_tables.csv"))}
t = time.perf_counter()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
for name in tables:  # as the adapter reads them: typed columns from _tables.csv, quote and escape '"'
    cols = "{" + ", ".join(f"'{c}': '{ty}'" for c, ty in types[name].items()) + "}"
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv('{d}/{name}.csv.gz', header=true, quote='\\"', "
                f"escape='\\"', columns={cols})").fetchall()
print(time.perf_counter() - t)
"""
_READ_RAW = """
import sys, time, duckdb
from pathlib import Path
raw = Path(sys.argv[1])
t = time.perf_counter()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
for i, d in enumerate(sorted(p for m in ("hosp", "icu") for p in (raw / m).iterdir() if p.is_dir())):
    con.execute(f"CREATE TABLE t{i} AS SELECT * FROM read_parquet('{d}/*.parquet')").fetchall()
print(time.perf_counter() - t)
"""
_HOURLY = """
import sys, time, duckdb
tl, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET threads = 2")
con.execute(f"COPY (SELECT stay_id, date_trunc('hour', time) AS hour, count(*), min(value), max(value) "
            f"FROM '{tl}/observations.parquet' GROUP BY ALL) TO '{out}' (FORMAT parquet)").fetchall()
print(time.perf_counter() - t)
"""


def run(cmd: list[str], env: dict[str, str], stdin: str = "") -> dict[str, float | str]:
    """Run ``cmd``; wall seconds, CPU seconds of the process (all its threads) and its stdout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out, err = p.communicate(stdin)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return {"wall": wall, "stdout": out}


def run_timed(cmd: list[str], env: dict[str, str], stdin: str = "", *, peak: bool = False) -> dict[str, float | str]:
    """:func:`run` with the child's CPU time (from the children's resource usage before and after); with ``peak``,
    also its peak resident set in MB, read by GNU time (``/usr/bin/time``) around the command: the children's
    resource usage only keeps the largest peak of any child so far."""
    import resource

    gnu_time = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wrapped = [str(gnu_time), "-f", "%M", "-o", rss.name, *cmd] if peak and gnu_time.exists() else cmd
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = run(wrapped, env, stdin)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if wrapped is not cmd:
            res["peak_mb"] = int(rss.read().split()[-1]) / 1024
    res["cpu"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return res


class Variant:
    def __init__(self, label: str, src: Path, work: Path) -> None:
        self.label, self.src = label, src
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env.update(PYTHONPATH=str(src), PYTHONPYCACHEPREFIX=str(work / f"pyc-{label}"),
                        IMMUNOGUIDE_CACHE_DIR=str(work / f"cache-{label}"), COLUMNS="120")


def spread(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{min(xs):.2f}–{max(xs):.2f} ({statistics.median(xs):.2f})"


def measure(results: dict, key: str, label: str, res: dict) -> None:
    results.setdefault(key, {}).setdefault(label, []).append(
        {"wall": res["wall"], "cpu": res.get("cpu"), **({"peak_mb": res["peak_mb"]} if "peak_mb" in res else {})})


def rounds_order(variants: list[Variant], r: int) -> list[Variant]:
    return variants if r % 2 == 0 else list(reversed(variants))


def bench_cli(variants: list[Variant], rounds: int, results: dict) -> None:
    base_env = variants[-1].env
    for r in range(rounds + 1):
        measure(results, "python -c pass", "floor", run_timed([sys.executable, "-c", "pass"], base_env))
        measure(results, "python -c 'import typer'", "floor", run_timed([sys.executable, "-c", "import typer"], base_env))
        for key, code in {**LIBRARY_FLOORS, **STACK_FLOORS}.items():
            measure(results, key, "floor", run_timed([sys.executable, "-c", code], base_env, ONE_CLASSIFY))
        for v in rounds_order(variants, r):
            measure(results, "immunoguide --help", v.label, run_timed([str(SCRIPT), "--help"], v.env))
            measure(results, "classify, one line", v.label, run_timed([str(SCRIPT), "classify"], v.env, ONE_CLASSIFY))
            measure(results, "score sofa, one line", v.label, run_timed([str(SCRIPT), "score", "sofa"], v.env, ONE_SOFA))


def bench_mimic3(variants: list[Variant], rounds: int, work: Path, results: dict) -> None:
    env = variants[-1].env
    for r in range(rounds + 1):
        res = run_timed([sys.executable, "-c", _READ_MIMIC3, str(MIMIC3_DEMO), ",".join(MIMIC3_TABLES)], env)
        res["process_wall"], res["wall"] = res["wall"], float(res["stdout"].split()[-1])
        measure(results, "mimic3 floor: DuckDB reads the source once", "floor", res)
        for v in rounds_order(variants, r):
            out = work / f"m3-{v.label}"
            shutil.rmtree(out, ignore_errors=True)
            measure(results, "cohort run, MIMIC-III demo", v.label, run_timed(
                [str(SCRIPT), "cohort", "run", "--source", "mimic3", "--data", str(MIMIC3_DEMO), "--out", str(out)],
                v.env))


def bench_synth(variants: list[Variant], stays: int, rounds: int, work: Path, results: dict) -> None:
    raw = work / f"raw-{stays}"
    for v in variants:  # the generator of each variant, timed once (the data are the same: same seed)
        shutil.rmtree(raw, ignore_errors=True)
        measure(results, f"synth mimic4, {stays:,} stays", v.label, run_timed(
            [str(SCRIPT), "synth", "mimic4", "--stays", str(stays), "--seed", "20261123", "--out", str(raw),
             "--quiet"], v.env))
    env = variants[-1].env
    for r in range(rounds + 1):
        res = run_timed([sys.executable, "-c", _READ_RAW, str(raw)], env)
        res["wall"] = float(res["stdout"].split()[-1])
        measure(results, f"{stays:,} floor: DuckDB reads the raw tables once", "floor", res)
        for v in rounds_order(variants, r):
            out = work / f"s{stays}-{v.label}"
            shutil.rmtree(out, ignore_errors=True)
            measure(results, f"cohort run, {stays:,} synthetic stays", v.label, run_timed(
                [str(SCRIPT), "cohort", "run", "--source", "mimic4", "--data", str(raw), "--out", str(out)], v.env,
                peak=True))
        tl = work / f"s{stays}-{variants[-1].label}" / "timeline"
        res = run_timed([sys.executable, "-c", _HOURLY, str(tl), str(work / "hourly.parquet")], env)
        res["wall"] = float(res["stdout"].split()[-1])
        measure(results, f"{stays:,} floor: hourly (stay x hour)", "floor", res)
    shutil.rmtree(raw, ignore_errors=True)


def bench_demo(variants: list[Variant], rounds: int, work: Path, results: dict) -> dict[str, list[str]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from demo_checksums import checksums, differences

    out = work / "demo"
    sums: dict[str, dict[str, str]] = {}
    for r in range(rounds + 1):
        for v in rounds_order(variants, r):
            shutil.rmtree(out, ignore_errors=True)
            env = {**v.env, "SOURCE_DATE_EPOCH": "1767225600"}  # the reports' "generated" stamp, fixed
            measure(results, "immunoguide demo (1,500 stays)", v.label,
                    run_timed([str(SCRIPT), "demo", "--out", str(out)], env))
            sums.setdefault(v.label, checksums(out))
    labels = list(sums)
    return {f"{labels[0]} vs {b}": differences(sums[labels[0]], sums[b]) for b in labels[1:]}


def report(results: dict, labels: list[str]) -> list[str]:
    lines = ["| work | " + " | ".join(f"{lb}: wall s (cold) | {lb}: CPU s" for lb in labels) + " | floor s |",
             "|---|" + "---:|---:|" * len(labels) + "---:|"]
    floors = {k: v["floor"] for k, v in results.items() if "floor" in v}
    for key, per in results.items():
        if "floor" in per:
            continue
        cells = []
        for lb in labels:
            xs = per.get(lb, [])
            warm = [x["wall"] for x in xs[1:]] or [x["wall"] for x in xs]
            cpu = [x["cpu"] for x in xs[1:] if x["cpu"] is not None] or [x["cpu"] for x in xs if x["cpu"] is not None]
            cold = f" ({xs[0]['wall']:.2f})" if xs else ""
            peaks = [x["peak_mb"] for x in xs if "peak_mb" in x]
            cells += [spread(warm) + cold, spread(cpu) + (f"; peak RSS {max(peaks):,.0f} MB" if peaks else "")]
        lines.append(f"| {key} | " + " | ".join(cells) + " | |")
    for key, xs in floors.items():
        lines.append(f"| {key} | " + " | ".join("" for _ in range(2 * len(labels))) +
                     f" | {spread([x['wall'] for x in xs[1:]] or [x['wall'] for x in xs])} |")
    return lines


def ratios(results: dict, labels: list[str], sizes: list[int]) -> list[str]:
    def med(key: str, label: str) -> float | None:
        xs = results.get(key, {}).get(label, [])
        xs = [x["wall"] for x in xs[1:]] or [x["wall"] for x in xs]
        return statistics.median(xs) if xs else None

    def cpu(key: str, label: str) -> float | None:
        xs = results.get(key, {}).get(label, [])
        xs = [x["cpu"] for x in (xs[1:] or xs) if x.get("cpu") is not None]
        return statistics.median(xs) if xs else None

    out = []
    p = med("python -c pass", "floor")
    typer_ = med("python -c 'import typer'", "floor")
    if p:
        out.append(f"python -c pass {p:.3f} s; python -c 'import typer' {typer_:.3f} s = {typer_ / p:.1f}x")
        for key in ("immunoguide --help", "classify, one line", "score sofa, one line"):
            out.append(f"{key}: " + ", ".join(f"{lb} {med(key, lb) / p:.1f}x" for lb in labels if med(key, lb))
                       + " of python -c pass (target <= 5x)")
        for key in (*LIBRARY_FLOORS, *STACK_FLOORS):
            if med(key, "floor"):
                out.append(f"{key}: {med(key, 'floor'):.3f} s = {med(key, 'floor') / p:.1f}x python -c pass")
        pc_ = cpu("python -c pass", "floor")
        if pc_:  # CPU seconds: less disturbed by other work on a shared machine than wall time
            for key in ("python -c 'import typer'", *LIBRARY_FLOORS, *STACK_FLOORS):
                if cpu(key, "floor"):
                    out.append(f"CPU: {key} {cpu(key, 'floor') / pc_:.1f}x python -c pass ({pc_:.3f} s)")
            for key in ("immunoguide --help", "classify, one line", "score sofa, one line"):
                out.append(f"CPU: {key}: " + ", ".join(f"{lb} {cpu(key, lb) / pc_:.1f}x" for lb in labels
                                                     if cpu(key, lb)) + " of python -c pass")
    f = med("mimic3 floor: DuckDB reads the source once", "floor")
    if f:
        key = "cohort run, MIMIC-III demo"
        out.append(f"{key}: " + ", ".join(f"{lb} {med(key, lb) / f:.1f}x" for lb in labels if med(key, lb))
                   + f" of DuckDB reading the source once ({f:.2f} s; target <= 3x)")
    for n in sizes:
        fr, fh = med(f"{n:,} floor: DuckDB reads the raw tables once", "floor"), med(f"{n:,} floor: hourly (stay x hour)", "floor")
        if fr and fh:
            key = f"cohort run, {n:,} synthetic stays"
            out.append(f"{key}: " + ", ".join(f"{lb} {med(key, lb) / (fr + fh):.1f}x" for lb in labels if med(key, lb))
                       + f" of read once + hourly floor ({fr:.2f} + {fh:.2f} s; target <= 2x)")
    d = "immunoguide demo (1,500 stays)"
    if d in results:
        out.append(f"{d}: " + ", ".join(f"{lb} {med(d, lb):.1f} s" for lb in labels if med(d, lb)) + " (target <= 20 s)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="git revision (or a folder holding src/) measured as 'before'")
    ap.add_argument("--after", help="git revision (or a folder holding src/) measured as 'after' (default: this checkout)")
    ap.add_argument("--rows", default="cli,mimic3,synth,demo")
    ap.add_argument("--stays", default="1000,10000")
    ap.add_argument("--rounds", type=int, default=5, help="warm rounds per row (cli: x2; 10,000 stays and demo: fewer; more than 10,000 stays: one)")
    ap.add_argument("--json", type=Path, help="write the raw measurements here")
    ap.add_argument("--from-json", type=Path, help="print the tables of an earlier run's --json file")
    a = ap.parse_args()
    rows, sizes = a.rows.split(","), [int(s) for s in a.stays.split(",") if s]
    if a.from_json:
        saved = json.loads(a.from_json.read_text())
        labels = [lb for lb in ("before", "after") if any(lb in per for per in saved["results"].values())]
        print("\n".join(report(saved["results"], labels)) + "\n\n" + "\n".join(ratios(saved["results"], labels, sizes)))
        for pair, d in saved["demo_differences"].items():
            print(f"demo files, {pair}: {'identical' if not d else f'{len(d)} differ: ' + ', '.join(d)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="ig-bench-user-") as tmp:
        work = Path(tmp)
        def tree(rev: str, label: str) -> Path:
            src = Path(rev)
            if (src / "src").is_dir():
                return src / "src"
            src = work / label
            src.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
            return src / "src"

        variants = []
        if a.before:
            variants.append(Variant("before", tree(a.before, "before"), work))
        variants.append(Variant("after", tree(a.after, "after") if a.after else REPO / "src", work))
        labels = [v.label for v in variants]
        results: dict = {}
        diffs: dict = {}
        t0 = time.perf_counter()
        print(f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()}", flush=True)
        jobs = []
        if "cli" in rows:
            jobs.append(("cli", lambda: bench_cli(variants, 2 * a.rounds, results)))
        if "mimic3" in rows:
            jobs.append(("mimic3", lambda: bench_mimic3(variants, a.rounds, work, results)))
        if "synth" in rows:
            for n in sizes:
                warm = a.rounds if n <= 1000 else max(2, a.rounds // 2) if n <= 10_000 else 1
                jobs.append((f"synth {n}", lambda n=n, warm=warm: bench_synth(variants, n, warm, work, results)))
        if "demo" in rows:
            jobs.append(("demo", lambda: diffs.update(bench_demo(variants, max(1, a.rounds // 3), work, results))))
        for name, job in jobs:  # a failing row is reported and the others still run
            t = time.perf_counter()
            try:
                job()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, then the next row
                print(f"row {name} failed: {exc}", flush=True)
            print(f"row {name}: {time.perf_counter() - t:.0f} s", flush=True)
            if a.json:
                a.json.write_text(json.dumps({"results": results, "demo_differences": diffs}, indent=1, default=str))
        print(f"\nmeasured in {time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()}\n")
        print("\n".join(report(results, labels)))
        print()
        print("\n".join(ratios(results, labels, sizes)))
        for pair, d in diffs.items():
            print(f"demo files, {pair}: {'identical' if not d else f'{len(d)} differ: ' + ', '.join(d)}")
        if a.json:
            a.json.write_text(json.dumps({"results": results, "demo_differences": diffs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
