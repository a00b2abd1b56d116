"""Concurrent ``immunoguide trial randomize`` processes on PostgreSQL: false refusals, duplicates, gaps, throughput, p99.

Usage::

    .venv/bin/python benchmarks/bench_cli_concurrency.py --processes 60 300
    IMMUNOGUIDE_PG_URL=postgresql+psycopg://user@127.0.0.1:5432/postgres .venv/bin/python benchmarks/bench_cli_concurrency.py

The harness is ``tests/cli_concurrency.py`` (shared with the test of issue 14). What one run does, for each number
of processes ``N``:

1. a fresh database on the server (``$IMMUNOGUIDE_PG_URL``, or a throw-away cluster started with
   ``tests/conftest_pg.py``'s helper and ``max_connections`` large enough for every process), migrated;
2. four allocation lists (sites ATH and MIL × strata MALS and immunoparalysis) and ``P = N - N // 10`` screened,
   consented and classified patients spread over them (onset 10 h ago: inside the 72 h window);
3. ``N`` OS processes, each running the real command line (``immunoguide.cli.app`` with the arguments a site
   coordinator types, its own database connection) to randomise one patient: every patient once, and ``N // 10``
   patients a second time (a true refusal, IG-E401, is the only correct answer for the second attempt). The
   processes are forked from one parent that has imported the CLI (so 300 processes fit in memory and the import,
   ~2 s of CPU per process, is not what is measured) and released together by a barrier;
4. the results: a **false refusal** is any non-zero exit other than IG-E401 for a patient some other process did
   randomise; duplicates (a patient in two slots, a slot twice) and gaps (a free slot below a taken one) are
   counted in the store afterwards; throughput = randomisations ÷ (last exit − release); latency per process
   from the release to its exit (p50, p99).

The command line's authentication differs between versions: with ``--legacy-flags`` every process passes
``--user/--role/--site`` — the CLI before issue 14; run it with that code on the path, e.g.
``git archive 68dc3ae src | tar -x -C /tmp/before && PYTHONPATH=/tmp/before/src python benchmarks/… --legacy-flags``;
otherwise the store is a real store and each process authenticates as a coordinator account with a token from
``IMMUNOGUIDE_TOKEN`` (issue 14; a throw-away trial key is made when none is configured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _pg_server(max_connections: int) -> tuple[str, Any]:
    url = os.environ.get("IMMUNOGUIDE_PG_URL")
    if url:
        return (url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url,
                None)
    import conftest_pg

    initdb = conftest_pg._initdb()
    if initdb is None:
        raise SystemExit("no PostgreSQL: set IMMUNOGUIDE_PG_URL or install the Debian package 'postgresql'")
    cluster = conftest_pg._Cluster(initdb, max_connections=max_connections)
    cluster.start()
    return cluster.url, cluster


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, nargs="+", default=[60, 300])
    p.add_argument("--legacy-flags", action="store_true",
                   help="pass --user/--role/--site (the CLI before issue 14) instead of an account token")
    p.add_argument("--repeat", type=int, default=1, help="runs per number of processes")
    args = p.parse_args(argv)
    from cli_concurrency import run_cli_burst

    if not args.legacy_flags and not (os.environ.get("IMMUNOGUIDE_TRIAL_KEY") or os.environ.get("IMMUNOGUIDE_TRIAL_KEY_FILE")):
        from immunoguide.trial.keys import TrialKey

        os.environ["IMMUNOGUIDE_TRIAL_KEY"] = TrialKey.generate().to_hex()  # a throw-away key for the benchmark store
    server, cluster = _pg_server(max(args.processes) + 50)
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, PostgreSQL at "
              f"{server.rsplit('@', 1)[-1]}", flush=True)
        for n in args.processes:
            for _ in range(args.repeat):
                res = run_cli_burst(server, n, legacy=args.legacy_flags)
                res["load_after"] = round(os.getloadavg()[0], 1)
                print(json.dumps(res), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
