"""Concurrent ``immunoguide trial randomize`` processes against one store: the harness shared by the test
(tests/test_trial_availability.py) and the benchmark (benchmarks/bench_cli_concurrency.py).

:func:`run_cli_burst` seeds a fresh database (four allocation lists: sites ATH and MIL × strata MALS and
immunoparalysis, and ``P = N - N // 10`` screened, consented and classified patients, Sepsis-3 onset 10 h before
the system clock) and runs ``N`` OS processes, each the real command line (``immunoguide.cli.app`` with the
arguments a site coordinator types and its own database connection) randomising one patient — every patient once
and ``N // 10`` of them a second time, for which IG-E401 (already randomised) is the only correct answer. The
processes are forked from one parent that has imported the command line (so hundreds of processes fit in memory
and Python's import, ~2 s of CPU each, is not what is measured) and are released together by a barrier.

Counted afterwards: a **false refusal** is any non-zero exit other than IG-E401 for a patient some other process
did randomise; duplicates (a patient in two slots) and gaps (a free slot below a taken one) are counted in the
store; throughput = successful randomisations ÷ (last exit − first start); latency per process from its release
to its exit (p50, p99).

Two ways to say who acts: ``legacy=True`` passes ``--user/--role/--site`` (the command line before issue 14, on
a store without accounts); otherwise the store is a **real** store (system clock, ``trial init``) and each process
authenticates with a coordinator account's token in ``IMMUNOGUIDE_TOKEN``.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["SITES", "STRATA", "run_cli_burst"]

SITES = ("ATH", "MIL")
STRATA = ("MALS", "immunoparalysis")
PASSWORD = "bench-password-123"


def _seed(url: str, n_patients: int, legacy: bool) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Lists, patients (code, site) and, unless legacy, one coordinator account + token per site."""
    from immunoguide import trial
    from immunoguide.trial.access import Actor
    from immunoguide.trial.store import TrialStore
    from service_support import lab_record, screening_record

    st = TrialStore(url, pool_size=4)
    if legacy:
        st.upgrade()
    else:
        st.initialise()
    now = datetime.now(UTC)
    onset = now - timedelta(hours=10)
    admin = Actor("admin", "administrator")
    per_list = n_patients // (len(SITES) * len(STRATA)) + 8
    with tempfile.TemporaryDirectory() as d:
        for site in SITES:
            for stratum in STRATA:
                kwargs: dict[str, Any] = {"out_dir": d}
                kwargs["seed"] = f"bench-{site}-{stratum}" if legacy else None
                f = trial.generate_allocation_list(site, stratum, per_list, **kwargs)
                with st.session() as s:
                    trial.import_allocation_list(s, f.csv, actor=admin, now=datetime.now(UTC) if not legacy else now)
    patients = [(f"{SITES[i % 2]}-C{i:05d}", SITES[i % 2]) for i in range(n_patients)]

    def one(i: int) -> None:
        code, site = patients[i]
        co = Actor(f"seed_{site}", "site_coordinator", site)
        ferritin, hla = (6200, 9000) if (i // 2) % 2 else (820, 3100)
        with st.session() as s:
            t = datetime.now(UTC)
            trial.screen(s, code, site, screening_record(onset), actor=co, now=t)
            trial.record_consent(s, code, "patient", t - timedelta(minutes=30), actor=co, now=t)
            trial.enter_labs(s, code, lab_record(ferritin, hla, onset + timedelta(hours=1)), actor=co, now=t)

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(one, range(n_patients)))
    tokens: dict[str, str] = {}
    if not legacy:
        from immunoguide.service.auth import UserStore

        users = UserStore(st)
        for site in SITES:
            name = f"coord-{site.lower()}"
            users.create_user(name, PASSWORD, "site_coordinator", site)
            tokens[site], _ = users.login(name, PASSWORD, now=datetime.now(UTC))
    st.dispose()
    return patients, tokens


def _child(idx: int, url: str, code: str, site: str, legacy: bool, token: str | None, barrier: Any,
           out: str) -> None:
    from immunoguide.cli import app

    for var in ("IMMUNOGUIDE_NOW", "IMMUNOGUIDE_ROLE", "IMMUNOGUIDE_SITE", "IMMUNOGUIDE_USER", "IMMUNOGUIDE_PASSWORD"):
        os.environ.pop(var, None)
    os.environ["IMMUNOGUIDE_DB_URL"] = url
    if legacy:
        args = ["trial", "--user", f"coord_{site}", "--role", "site_coordinator", "--site", site, "randomize", code]
    else:
        os.environ["IMMUNOGUIDE_TOKEN"] = token or ""
        args = ["trial", "randomize", code]
    fd_out = os.open(f"{out}/{idx}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fd_err = os.open(f"{out}/{idx}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process ends with os._exit
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    barrier.wait()
    t0 = time.monotonic()
    try:
        app(args=args, prog_name="immunoguide")
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a crash is reported as exit 1 with its traceback on stderr
        import traceback

        traceback.print_exc()
        rc = 1
    t1 = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    Path(f"{out}/{idx}.json").write_text(json.dumps({"idx": idx, "code": code, "rc": rc, "t0": t0, "t1": t1}))
    os._exit(0)


def _warm(url: str) -> None:
    """Import what a randomisation touches (the CLI, the trial package, the PostgreSQL driver) and load the protocol
    once in the parent, so the forked processes measure the command, not Python's imports."""
    import immunoguide.cli  # noqa: F401
    import immunoguide.service.auth  # noqa: F401
    import immunoguide.trial  # noqa: F401
    import immunoguide.trial.kits  # noqa: F401
    from immunoguide.protocols import load_protocol
    from immunoguide.trial._common import _protocol
    from immunoguide.trial.store import TrialStore

    load_protocol("immunosep-2025")
    _protocol(load_protocol("immunosep-2025").label)
    st = TrialStore(url)
    st.schema_revision()
    st.dispose()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]


def run_cli_burst(server: str, n: int, *, legacy: bool = False, keep_db: bool = False) -> dict[str, Any]:
    """Seed a fresh database on ``server`` and run ``n`` concurrent CLI randomisations; return the figures."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ig_cli_burst_{os.getpid()}_{n}_{int(time.time() * 1000) % 100000}"
    admin_engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        repeats = n // 10
        t_seed = time.perf_counter()
        patients, tokens = _seed(url, n - repeats, legacy)
        t_seed = time.perf_counter() - t_seed
        work = patients + patients[:repeats]
        _warm(url)
        gc.collect()
        gc.freeze()
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(len(work) + 1)
        with tempfile.TemporaryDirectory(prefix="ig-cli-burst-") as out:
            procs = [ctx.Process(target=_child, args=(i, url, code, site, legacy, tokens.get(site), barrier, out))
                     for i, (code, site) in enumerate(work)]
            for p in procs:
                p.start()
            barrier.wait()
            t_go = time.monotonic()  # fallback start of a process that wrote no result
            for p in procs:
                p.join(timeout=900)
            gc.unfreeze()
            results = []
            errors_seen: list[str] = []
            for i in range(len(work)):
                f = Path(out) / f"{i}.json"
                r = json.loads(f.read_text()) if f.exists() else {"idx": i, "code": work[i][0], "rc": -1,
                                                                    "t0": t_go, "t1": time.monotonic()}
                err = (Path(out) / f"{i}.err").read_text().strip().splitlines()
                r["error"] = None
                if r["rc"] != 0 and err:
                    try:
                        r["error"] = json.loads(err[-1])["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        r["error"] = err[-1][:200]
                        errors_seen.append("\n".join(err[-20:]))
                results.append(r)
        eng = create_engine(url)
        with eng.connect() as conn:
            slots = conn.execute(text(
                "SELECT l.name, s.seq, s.patient_id FROM allocation_slots s JOIN allocation_lists l "
                "ON l.id = s.list_id ORDER BY l.name, s.seq")).all()
            randomised_codes = set(conn.execute(text(
                "SELECT p.code FROM patients p JOIN allocation_slots s ON s.patient_id = p.id")).scalars())
        eng.dispose()
        held = [pid for _, _, pid in slots if pid is not None]
        duplicates = len(held) - len(set(held))
        gaps = 0
        by_list: dict[str, list[tuple[int, int | None]]] = {}
        for lname, seq, pid in slots:
            by_list.setdefault(lname, []).append((seq, pid))
        for rows in by_list.values():
            taken = [seq for seq, pid in rows if pid is not None]
            if taken:
                gaps += sum(1 for seq, pid in rows if pid is None and seq < max(taken))
        ok = [r for r in results if r["rc"] == 0]
        false_refusals = [r for r in results if r["rc"] != 0 and not (r["error"] == "IG-E401"
                                                                      and r["code"] in randomised_codes)]
        distinct = {c for c, _ in patients}
        start = min(r["t0"] for r in results)
        end = max(r["t1"] for r in results)
        lat = [r["t1"] - r["t0"] for r in results]
        lat_ok = [r["t1"] - r["t0"] for r in ok]
        out_: dict[str, Any] = {
            "processes": len(work), "patients": len(distinct), "repeat_attempts": repeats,
            "seed_s": round(t_seed, 1), "randomised": len(randomised_codes), "exit_0": len(ok),
            "false_refusals": len(false_refusals),
            "false_refusal_codes": dict(Counter(str(r["error"]) for r in false_refusals)),
            "patients_without_randomisation": len(distinct - {r["code"] for r in ok}),
            "true_refusals_IG_E401": sum(1 for r in results if r["rc"] != 0 and r not in false_refusals),
            "duplicates": duplicates, "gaps": gaps,
            "wall_s": round(end - start, 2),
            "throughput_per_s": round(len(ok) / (end - start), 1) if end > start else None,
            "latency_p50_s": round(_pct(lat, 0.5), 3), "latency_p99_s": round(_pct(lat, 0.99), 3),
            "latency_max_s": round(max(lat), 3),
            "latency_ok_p50_s": round(_pct(lat_ok, 0.5), 3) if lat_ok else None,
            "latency_ok_p99_s": round(_pct(lat_ok, 0.99), 3) if lat_ok else None,
            "mean_latency_s": round(statistics.fmean(lat), 3),
            "crash_tracebacks": errors_seen[:3],
        }
        if keep_db:
            out_["url"] = url
        return out_
    finally:
        if not keep_db:
            with admin_engine.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin_engine.dispose()
