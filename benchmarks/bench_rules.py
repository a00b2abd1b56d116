"""Benchmark: the single-patient hourly SOFA-1 path on one densely charted 10-day stay.

Usage::

    .venv/bin/python benchmarks/bench_rules.py [REPEATS]      # default 7

The stay is the one of ``tests/test_timeline_hourly.py::test_ten_day_stay_gives_one_row_per_hour_of_the_grid``
(vitals hourly, labs 4-hourly, 200 h of norepinephrine in 5-minute gaps, 120 h of invasive ventilation; 241 hourly
rows). That test asserted "< 1 s" until the figure moved here (issue 16: no timed assertion in the suite). Printed:
the first call (criteria loaded on first use), then min / median / max of REPEATS further calls, and each as a
fraction of the former 1 s budget.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timedelta


def dense_ten_day_stay():  # type: ignore[no-untyped-def]
    """The test's 10-day timeline (see the module docstring)."""
    from immunoguide.rules.timeline import Infusion, Observation, PatientTimeline, VentilationEpisode

    t0 = datetime(2024, 1, 1, 8, 0)

    def at(h: float) -> datetime:
        return t0 + timedelta(hours=h)

    def obs(h: float, concept: str, value: float) -> Observation:
        return Observation(time=at(h), concept=concept, value=value)

    o = []
    for h in range(240):
        o += [obs(h + 0.1, "map_mmhg", 60 + h % 20), obs(h + 0.2, "gcs", 10 + h % 6),
              obs(h + 0.3, "urine_output_ml", 40 + h % 7)]
        if h % 4 == 0:
            o += [obs(h + 0.5, c, v) for c, v in (("platelets_10e3_per_ul", 80 + h % 50), ("bilirubin_mg_per_dl", 1.1),
                                                  ("creatinine_mg_per_dl", 1.9), ("fio2_fraction", 0.5),
                                                  ("pao2_mmhg", 90 + h % 30))]
    inf = [Infusion(drug="norepinephrine", start=at(h), stop=at(h) + timedelta(minutes=55), rate_ug_kg_min=0.08)
           for h in range(0, 200)]
    return PatientTimeline(stay_id="bench", icu_intime=t0, icu_outtime=at(240), observations=o, infusions=inf,
                           ventilation=[VentilationEpisode(start=at(0), end=at(120), kind="invasive")])


def main(argv: list[str]) -> int:
    repeats = int(argv[0]) if argv else 7
    from immunoguide.rules.hourly import hourly_sofa

    tl = dense_ten_day_stay()
    t = time.perf_counter()
    rows = hourly_sofa(tl)
    first = time.perf_counter() - t
    assert len(rows) == 241
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        hourly_sofa(tl)
        runs.append(time.perf_counter() - t)
    print(f"hourly SOFA-1, one 10-day stay ({len(rows)} rows): first call {first:.3f} s; "
          f"then min {min(runs):.3f} / median {statistics.median(runs):.3f} / max {max(runs):.3f} s over {repeats} "
          f"calls = {statistics.median(runs) / 1.0:.2f} of the former 1 s budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
