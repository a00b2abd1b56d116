"""Benchmark the synthetic MIMIC-IV generator: wall time, events/s and peak RSS per size.

Usage::

    .venv/bin/python benchmarks/bench_synth.py               # 1,000 and 10,000 stays
    .venv/bin/python benchmarks/bench_synth.py 1000 100000   # any sizes (100,000 stays ≈ 100 M events)

Each size runs in its own child process so that its peak RSS (``ru_maxrss``) is measured alone. Output goes to a
temporary directory that is deleted afterwards (pass ``--keep DIR`` to keep it). Target (issue 4): 100,000 stays on
2 cores with peak RSS < 8 GB.

``tests/test_synth.py`` asserted "2,000 stays in < 8 s" until issue 16 moved the figure here (it failed at 22.6 s on
a loaded machine): ``bench_synth.py 2000`` prints it, with events per stay.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(stays: int, out: Path, chunk_stays: int) -> dict[str, float]:
    from immunoguide.synth import generate_mimic4

    t0 = time.perf_counter()
    summary = generate_mimic4(out, stays=stays, seed=2024, chunk_stays=chunk_stays)
    wall = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "stays": stays,
        "events": summary.events,
        "seconds": wall,
        "events_per_s": summary.events / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "disk_mb": disk / 2**20,
        "chartevents": summary.rows["chartevents"],
        "labevents": summary.rows["labevents"],
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        stays, out, chunk = int(argv[1]), Path(argv[2]), int(argv[3])
        print(json.dumps(_one(stays, out, chunk)))
        return 0
    keep = None
    if "--keep" in argv:
        i = argv.index("--keep")
        keep = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    sizes = [int(a) for a in argv] or [1000, 10000]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'stays':>8} {'events':>12} {'ev/stay':>8} {'seconds':>8} {'events/s':>11} {'peak RSS MB':>12} {'disk MB':>8}")
    for n in sizes:
        base = keep if keep is not None else Path(tempfile.mkdtemp(prefix="bench_synth_"))
        out = base / f"stays-{n}"
        try:
            res = subprocess.run(
                [sys.executable, __file__, "--one", str(n), str(out), "5000"],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
        finally:
            if keep is None:
                shutil.rmtree(base, ignore_errors=True)
        print(
            f"{r['stays']:>8,} {r['events']:>12,} {r['events'] / r['stays']:>8.0f} {r['seconds']:>8.1f} {r['events_per_s']:>11,.0f} "
            f"{r['peak_rss_mb']:>12,.0f} {r['disk_mb']:>8,.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
