"""Load benchmark of the REST service on loopback: throughput and p50/p99 latency under 100 concurrent clients.

Usage::

    .venv/bin/python benchmarks/bench_service.py                      # 10 s per scenario, 100 clients, 2 workers
    .venv/bin/python benchmarks/bench_service.py --seconds 5 --clients 50 --workers 1
    IMMUNOGUIDE_PG_URL=postgresql+psycopg://user@127.0.0.1:5432/postgres .venv/bin/python benchmarks/bench_service.py

Scenarios (each against ``immunoguide serve``'s app started by uvicorn in a subprocess on 127.0.0.1, access log
off):

1. ``POST /rules/classify`` — one flat record (ferritin + QuantiBRITE mHLA-DR).
2. ``POST /cds-services/immunoguide-patient-view`` — the immunoparalysis prefetch of the service tests
   (Patient, Encounter, 2 Conditions, 10 Observations, 3 flag Observations).
3. ``POST /trial/patients/{code}/randomize`` on **PostgreSQL** — every request randomises a different, screened,
   consented and classified patient (one new slot each). The server comes from ``$IMMUNOGUIDE_PG_URL`` (a user
   that may CREATE DATABASE) or, when a Debian PostgreSQL ``initdb`` is installed, a throw-away cluster started
   by the test suite's helper (``tests/conftest_pg.py``); otherwise the scenario is skipped and says so.

Each client is its own ``httpx.AsyncClient`` (one connection) looping for the bounded time; latency is measured
per request on the client. Target (issue 7): p99 < 50 ms on 2 cores. The client runs on the same cores as the
server, so the numbers include its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PASSWORD = "bench-password-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``uvicorn immunoguide.service.app:app_from_env --factory`` in a subprocess on 127.0.0.1."""

    def __init__(self, db_url: str, workers: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "IMMUNOGUIDE_DB_URL": db_url, "IMMUNOGUIDE_SECRET": "bench-secret"}
        self.log = tempfile.NamedTemporaryFile(prefix="bench_service_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "immunoguide.service.app:app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers), "--no-access-log",
             "--log-level", "warning"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start within 60 s")

    def token(self, user: str) -> str:
        r = httpx.post(self.url + "/auth/token", json={"username": user, "password": PASSWORD}, timeout=10)
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


async def _load(url: str, token: str, seconds: float, clients: int, make_request: Any,
                rate: float | None = None) -> dict[str, Any]:
    """``clients`` AsyncClients sending requests for ``seconds``; returns the statistics.

    Closed loop (``rate`` None): each client sends its next request as soon as the previous one answers — this
    measures saturation throughput, and by Little's law p50 ≈ clients / throughput. Paced (``rate`` requests per
    second per client): each client sends on a fixed schedule (staggered start) and latency is measured from the
    *scheduled* send time, so a slow server cannot hide queueing (no coordinated omission).
    """
    latencies: list[float] = []
    slow: list[tuple[float, float]] = []
    statuses: dict[int, int] = {}
    # clients are created and connected before the clock starts (an AsyncClient builds an SSL context, ~10 ms)
    pool = [httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                              limits=httpx.Limits(max_connections=1)) for _ in range(clients)]
    await asyncio.gather(*(c.get("/auth/me") for c in pool))
    # The load generator's own garbage-collector pauses would count as server latency: freeze its start-up heap
    # (as the service does) and record any collection that still takes > 20 ms.
    gc.collect()
    gc.freeze()
    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started and time.perf_counter() - started[0] > 0.02:
            pauses.append(round((time.perf_counter() - started[0]) * 1000, 1))

    gc.callbacks.append(on_gc)
    gc.disable()  # the measuring tool's own collections are not the server's latency (re-enabled below)
    stop_at = time.perf_counter() + seconds

    async def one(i: int, client: httpx.AsyncClient) -> None:
        n = 0
        start = time.perf_counter() + (i / clients / rate if rate else 0.0)
        while time.perf_counter() < stop_at:
            req = make_request(i, n)
            if req is None:
                return
            method, path, body = req
            if rate:
                t = start + n / rate
                delay = t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if t >= stop_at:
                    return
            else:
                t = time.perf_counter()
            r = await client.request(method, path, json=body)
            latencies.append(time.perf_counter() - t)
            if latencies[-1] > 0.05:  # when the slow requests were sent (wall clock), to match with server logs
                slow.append((round(time.time() - (time.perf_counter() - t), 3), round(latencies[-1] * 1000, 1)))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            n += 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i, c) for i, c in enumerate(pool)))
    finally:
        gc.enable()
        gc.callbacks.remove(on_gc)
        await asyncio.gather(*(c.aclose() for c in pool))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [lat[0]] * 99
    return {"requests": len(lat), "seconds": round(wall, 2), "throughput_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1), "max_ms": round(lat[-1] * 1000, 1),
            "statuses": statuses, "slow_over_50ms": len(slow), "slow_first": sorted(slow)[:8],
            "client_gc_pauses_ms": pauses}


def _report(name: str, res: dict[str, Any]) -> None:
    ok = "meets" if res["p99_ms"] < 50 else "misses"
    print(f"{name:<34} {res['requests']:>7} req in {res['seconds']:>5} s  {res['throughput_per_s']:>8} req/s  "
          f"p50 {res['p50_ms']:>7} ms  p99 {res['p99_ms']:>7} ms  (max {res['max_ms']} ms; {ok} p99 < 50 ms)  "
          f"statuses {res['statuses']}")
    if res["slow_over_50ms"]:
        print(f"{'':<34} {res['slow_over_50ms']} requests over 50 ms, first sent at (unix s, ms): {res['slow_first']}; "
              f"client GC pauses > 20 ms: {res['client_gc_pauses_ms'] or 'none'}")


def _store_with_user(url: str, role: str = "site_coordinator", site: str | None = "ATH") -> None:
    from immunoguide.service.auth import UserStore
    from immunoguide.trial.store import TrialStore

    st = TrialStore(url)
    st.initialise()  # a real store: the server's clock is the system clock
    users = UserStore(st)
    users.create_user("bench", PASSWORD, role, site)
    st.dispose()


def bench_rules_and_cds(args: argparse.Namespace) -> None:
    import service_support

    service_support.NOW = datetime.now(UTC)  # the prefetch times are relative to the server's clock
    cds_call = service_support.patient_view_request("immunoparalysis")
    record = {"ferritin": 820, "ferritin_unit": "ng/mL", "hla_dr_per_monocyte": 3100,
              "hla_dr_method": "quantibrite_abc"}
    with tempfile.TemporaryDirectory(prefix="bench_service_") as d:
        url = f"sqlite:///{Path(d) / 'bench.db'}"
        _store_with_user(url)
        server = Server(url, args.workers)
        try:
            token = server.token("bench")
            check = httpx.post(server.url + "/cds-services/immunoguide-patient-view", json=cds_call,
                               headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            print(f"CDS card: {check['cards'][0]['summary']}")
            res = asyncio.run(_load(server.url, token, args.seconds, args.clients,
                                    lambda i, n: ("POST", "/rules/classify", {"record": record})))
            _report("POST /rules/classify", res)
            res = asyncio.run(_load(server.url, token, args.seconds, args.clients,
                                    lambda i, n: ("POST", "/cds-services/immunoguide-patient-view", cds_call)))
            _report("POST /cds-services/…patient-view", res)
            for rate in args.rate:  # latency against offered load: where p99 crosses 50 ms
                if not rate:
                    continue
                offered = rate * args.clients
                res = asyncio.run(_load(server.url, token, args.seconds, args.clients,
                                        lambda i, n: ("POST", "/rules/classify", {"record": record}), rate=rate))
                _report(f"classify paced {offered:g} req/s", res)
                res = asyncio.run(_load(server.url, token, args.seconds, args.clients,
                                        lambda i, n: ("POST", "/cds-services/immunoguide-patient-view", cds_call),
                                        rate=rate))
                _report(f"CDS hook paced {offered:g} req/s", res)
        finally:
            server.stop()


def _pg_server() -> tuple[str | None, Any]:
    url = os.environ.get("IMMUNOGUIDE_PG_URL")
    if url:
        return (url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url,
                None)
    import conftest_pg

    initdb = conftest_pg._initdb()
    if initdb is None:
        return None, None
    cluster = conftest_pg._Cluster(initdb)
    cluster.start()
    return cluster.url, cluster


def _seed_patients(url: str, n: int) -> list[str]:
    """n screened, consented, classified ATH patients (alternating strata), onset 10 h ago; lists for both strata."""
    from concurrent.futures import ThreadPoolExecutor

    from immunoguide import trial
    from immunoguide.trial.access import Actor
    from immunoguide.trial.store import TrialStore
    from service_support import lab_record, screening_record

    st = TrialStore(url, pool_size=4)
    now = datetime.now(UTC)
    onset = now - timedelta(hours=10)
    admin = Actor("admin", "administrator")
    with tempfile.TemporaryDirectory() as d:
        for stratum in ("MALS", "immunoparalysis"):
            f = trial.generate_allocation_list("ATH", stratum, n // 2 + 8, out_dir=d)
            with st.session() as s:
                trial.import_allocation_list(s, f.csv, actor=admin, now=now)
    co = Actor("seed", "site_coordinator", "ATH")
    codes = [f"ATH-B{i:05d}" for i in range(n)]

    def one(i: int) -> None:
        code = codes[i]
        ferritin, hla = (6200, 9000) if i % 2 else (820, 3100)
        with st.session() as s:  # a real store: every event at the system's time
            t = datetime.now(UTC)
            trial.screen(s, code, "ATH", screening_record(onset), actor=co, now=t)
            trial.record_consent(s, code, "patient", t - timedelta(minutes=5), actor=co, now=t)
            trial.enter_labs(s, code, lab_record(ferritin, hla, onset + timedelta(hours=1)), actor=co, now=t)

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(one, range(n)))
    st.dispose()
    return codes


def bench_randomisation_pg(args: argparse.Namespace) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server_url, cluster = _pg_server()
    if server_url is None:
        print("randomisation on PostgreSQL: skipped (IMMUNOGUIDE_PG_URL unset and no PostgreSQL initdb installed)")
        return
    name = f"ig_bench_{os.getpid()}"
    admin_engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin_engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        db_url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        _store_with_user(db_url)
        t0 = time.perf_counter()
        codes = _seed_patients(db_url, args.patients)
        print(f"seeded {len(codes)} patients on PostgreSQL in {time.perf_counter() - t0:.1f} s")
        server = Server(db_url, args.workers)
        try:
            token = server.token("bench")
            queue = iter(codes)

            def next_request(i: int, n: int) -> tuple[str, str, dict[str, Any]] | None:
                code = next(queue, None)
                return None if code is None else ("POST", f"/trial/patients/{code}/randomize", {})

            res = asyncio.run(_load(server.url, token, args.seconds, args.clients, next_request))
            _report("POST …/randomize (PostgreSQL)", res)
            if args.pg_rate:
                res = asyncio.run(_load(server.url, token, args.seconds, args.clients, next_request, rate=args.pg_rate))
                _report(f"randomize paced {args.pg_rate * args.clients:g} req/s", res)
            if res["requests"] >= len(codes):
                print("  (all seeded patients were randomised before the time was up: raise --patients)")
            v = httpx.get(server.url + "/trial/allocation-lists/verify", headers={"Authorization": f"Bearer {token}"},
                          timeout=60).json()
            print(f"  allocation lists verify after the run: ok={v['ok']} "
                  f"({sum(c['level'] == 'error' for c in v['checks'])} errors)")
        finally:
            server.stop()
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin_engine.dispose()
        if cluster is not None:
            cluster.stop()


def main(argv: list[str]) -> int:
    if not (os.environ.get("IMMUNOGUIDE_TRIAL_KEY") or os.environ.get("IMMUNOGUIDE_TRIAL_KEY_FILE")):
        from immunoguide.trial.keys import TrialKey

        os.environ["IMMUNOGUIDE_TRIAL_KEY"] = TrialKey.generate().to_hex()  # a throw-away key for the bench stores
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each scenario")
    p.add_argument("--clients", type=int, default=100, help="concurrent clients")
    p.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    p.add_argument("--patients", type=int, default=1500, help="patients seeded for the randomisation scenario")
    p.add_argument("--skip-pg", action="store_true", help="skip the PostgreSQL randomisation scenario")
    p.add_argument("--rate", type=float, nargs="*", default=[1.0, 2.0, 4.0],
                   help="also run paced scenarios at these requests per second per client (0 = closed loop only)")
    p.add_argument("--pg-rate", type=float, default=0.2,
                   help="also run randomisation paced: requests per second per client (0 = closed loop only)")
    args = p.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.clients} clients, {args.workers} uvicorn "
          f"worker(s), {args.seconds:g} s per scenario")
    bench_rules_and_cds(args)
    if not args.skip_pg:
        bench_randomisation_pg(args)
    print(json.dumps({"note": "latency measured on the client, same 2 cores as the server"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
