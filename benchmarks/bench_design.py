"""Benchmark: 10,000 simulated 280-patient trials with the full SAP primary analysis (plain script, not a test).

Per trial: simulate 280 randomised patients (endotype mix, 1:1, 15 % dropout, deaths, daily SOFA days 1-9 with
LOCF gaps), derive the SAP responder endpoint per patient (death -> 24 after death, LOCF, delta > 1.4), then the
Newcombe risk difference, the Woolf odds ratio and the two-sided Fisher exact test. Target: under 10 s on 2 cores.

The same analysis is then run as a per-trial Python loop (typed DailySofaRecord rows -> ``sofa_response`` per patient
-> ``two_proportions`` with scipy's Fisher test) on a sample of trials, scaled to 10,000, and checked to give
identical results on that sample.

Run: ``.venv/bin/python benchmarks/bench_design.py [--trials 10000] [--sample 40] [--seed 2025]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np

from immunoguide.analysis import DailySofaRecord, sofa_response, two_proportions
from immunoguide.design import PrimaryAnalysisBatch, Scenario, calibrate_slope, load_priors, primary_analysis
from immunoguide.design.simulate import ENDOTYPES, simulate_trials


def loop_analysis(sim, trials: range) -> list[tuple[int, int, int, int, float, float]]:
    """Per-trial, per-patient Python loop over typed records (the reference implementation)."""
    out = []
    for t in trials:
        events = {True: 0, False: 0}
        n = {True: 0, False: 0}
        for j in range(sim.active.shape[1]):
            if not sim.analysable[t, j]:
                continue
            died = sim.died_on_day[t, j]
            dead = math.isfinite(died)
            recs = [DailySofaRecord(f"t{t}p{j}", 1, int(sim.baseline[t, j]), row_id=f"{t}-{j}-1")]
            for d, v in zip(range(2, 10), sim.window[t, j], strict=True):
                if dead and d > died:
                    break
                recs.append(DailySofaRecord(f"t{t}p{j}", d, None if np.isnan(v) else int(v), row_id=f"{t}-{j}-{d}"))
            if dead:
                recs.append(DailySofaRecord(f"t{t}p{j}", int(died) + 1, None, died_on_day=int(died)))
            arm = bool(sim.active[t, j])
            events[arm] += bool(sofa_response(recs).responder)
            n[arm] += 1
        r = two_proportions(events[True], n[True], events[False], n[False])
        out.append((events[True], n[True], events[False], n[False], r.fisher.p_value, r.risk_difference.ci_low))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=40, help="trials analysed by the Python loop")
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--chunk", type=int, default=500)
    args = ap.parse_args()

    pri = load_priors()
    sc = Scenario.from_priors(
        n_randomised=280,
        dropout=pri.value("design.dropout_planning"),
        placebo_response=0.20,
        response_effect=0.20,
        placebo_mortality_28d=pri.value("placebo_mortality_28d.overall"),
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, os.cpu_count() = {os.cpu_count()}, numpy {np.__version__}"
    )
    print(f"scenario: 280 randomised, dropout {sc.dropout:.0%}, responders 20% vs 40%, MALS {sc.mals_fraction:.1%}")

    t0 = time.perf_counter()
    for e in ENDOTYPES:
        for a in (False, True):
            calibrate_slope(sc, e, a)
    t_cal = time.perf_counter() - t0
    print(f"one-off SOFA-trajectory calibration (cached): {t_cal:.2f} s")

    seeds = np.random.SeedSequence(args.seed).spawn(math.ceil(args.trials / args.chunk))
    t_sim = t_ana = 0.0
    parts = []
    first_chunk = None
    t0 = time.perf_counter()
    for i, s in enumerate(seeds):
        size = min(args.chunk, args.trials - i * args.chunk)
        a = time.perf_counter()
        sim = simulate_trials(sc, size, seed=s)
        b = time.perf_counter()
        parts.append(primary_analysis(sim))
        t_sim += b - a
        t_ana += time.perf_counter() - b
        if i == 0:
            first_chunk = sim
    batch = PrimaryAnalysisBatch.concatenate(parts)
    t_vec = time.perf_counter() - t0
    power = float((batch.p_value <= 0.05).mean())
    se = math.sqrt(power * (1 - power) / batch.n_trials)
    print(
        f"vectorised: {batch.n_trials} trials x 280 patients in {t_vec:.2f} s wall "
        f"(simulation {t_sim:.2f} s, SAP derivation + Newcombe + Woolf + Fisher {t_ana:.2f} s); "
        f"target < 10 s: {'met' if t_vec < 10 else 'NOT met'}"
    )
    print(
        f"  power (Fisher, alpha 0.05) {power:.4f} +/- {se:.4f} (MC SE); mean analysable/arm {batch.n_active.mean():.1f}"
    )

    assert first_chunk is not None
    k = min(args.sample, first_chunk.n_trials)
    t0 = time.perf_counter()
    ref = loop_analysis(first_chunk, range(k))
    t_loop = time.perf_counter() - t0
    for t, (ea, na, ec, nc, p, lo) in enumerate(ref):
        assert (ea, na, ec, nc) == (
            batch.events_active[t],
            batch.n_active[t],
            batch.events_control[t],
            batch.n_control[t],
        )
        assert math.isclose(p, batch.p_value[t], rel_tol=1e-9) and math.isclose(lo, batch.ci_low[t], rel_tol=1e-12)
    per_trial = t_loop / k
    est = per_trial * batch.n_trials
    print(
        f"python loop: {k} trials in {t_loop:.2f} s ({1000 * per_trial:.1f} ms/trial; analysis only, same simulated "
        f"data) -> {est:.0f} s estimated for {batch.n_trials}; identical results on the sample"
    )
    print(
        f"speed-up: {est / t_ana:.0f}x on the analysis alone (vectorised {t_ana:.2f} s), "
        f"{est / t_vec:.0f}x against the whole vectorised run including simulation"
    )


if __name__ == "__main__":
    main()
