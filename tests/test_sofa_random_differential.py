"""Random timelines: the single-patient rules and the set-based engine agree row by row under every policy option.

Seeded generation (one seed per stay, reproducible): values on and around every ladder threshold, infusion segments
around the 60-minute episode and the 5-minute merge gap, FiO2 charted around the 4-hour look-back, sedated and
component GCS, urine around the observation windows, ICU admissions off the clock hour, open stays, antibiotics and
cultures at equal and near times. The stays are written once as the engine's timeline tables
(tests/timeline_tables.py) and every policy set runs on both paths:

* SOFA-1 and Sepsis-3: covering sets in which every option of every policy appears at least once (set ``k`` takes
  option ``k mod n`` of each policy, options in sorted order), plus each reference preset (criteria/presets/*.toml);
* SOFA-2: covering sets over every option of every policy of ``rules.sofa2.IMPLEMENTED_POLICIES`` (the engine's
  ``TRANSLATED_POLICIES`` is that table; this is the test that every option is translated).

Hourly SOFA is compared on every (stay, hour) row: six components, total and imputed components; Sepsis-3 on every
stay: status, suspected-infection time, onset hour, baseline and SOFA at onset. Sized for CI (well under a minute).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import pytest
from tests.timeline_tables import engine_rows, engine_sepsis3, write_timelines

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr
from immunoguide.cohort.engine_sofa2 import TRANSLATED_POLICIES, hourly_sofa2_expr
from immunoguide.criteria import load_criteria, load_sepsis3_criteria
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.criteria.presets import available_presets, load_preset
from immunoguide.rules.hourly import hourly_sofa
from immunoguide.rules.sepsis3 import sepsis3_onset
from immunoguide.rules.sofa import COMPONENTS
from immunoguide.rules.sofa2 import IMPLEMENTED_POLICIES
from immunoguide.rules.timeline import (
    AntibioticAdministration,
    CultureSample,
    Infusion,
    Observation,
    PatientTimeline,
    VentilationEpisode,
)

N_STAYS = 24
BASE = datetime(2150, 3, 1)

#: Concept → values drawn around its SOFA thresholds (plausible, canonical units).
_VALUES: dict[str, list[float]] = {
    "platelets_10e3_per_ul": [10, 19.9, 20, 49, 50, 99.5, 100, 149, 150, 300],
    "bilirubin_mg_per_dl": [0.5, 1.19, 1.2, 1.9, 2.0, 5.9, 6.0, 11.9, 12.0, 15],
    "creatinine_mg_per_dl": [0.8, 1.2, 1.99, 2.0, 3.4, 3.5, 4.9, 5.0, 7.5],
    "map_mmhg": [45, 60, 64, 65, 69.9, 70, 85],
    "pao2_mmhg": [45, 60, 75, 90, 120, 200, 350],
    "fio2_fraction": [0.21, 0.3, 0.4, 0.5, 0.6, 1.0],
    "gcs": [3, 5, 6, 9, 10, 12, 13, 14, 15],
    "urine_output_ml": [0, 5, 20, 40, 80, 150, 300],
}
_RATES = {
    "dopamine": [0.0, 2.5, 5.0, 5.1, 10.0, 15.0, 20.0],
    "dobutamine": [0.0, 2.0, 5.0],
    "epinephrine": [0.0, 0.05, 0.1, 0.15, 0.3],
    "norepinephrine": [0.0, 0.05, 0.1, 0.2, 0.4],
    "vasopressin": [0.0, 0.03],
    "phenylephrine": [0.5, 1.0],
    "milrinone": [0.375],
}


def _time(rng: random.Random, t0: datetime, lo_h: float, hi_h: float) -> datetime:
    """A time in [t0 + lo_h, t0 + hi_h], on the hour, on a minute or on a second (edges of H1 and H15)."""
    t = t0 + timedelta(minutes=rng.randint(int(lo_h * 60), int(hi_h * 60)))
    kind = rng.random()
    if kind < 0.25:
        return t.replace(minute=0, second=0)
    if kind < 0.35:
        return t + timedelta(seconds=rng.randint(1, 59))
    return t


def random_timeline(seed: int) -> PatientTimeline:
    """One reproducible random stay (see the module docstring)."""
    rng = random.Random(seed)
    intime = BASE + timedelta(days=seed, minutes=rng.choice([0, 0, 7, 20, 45, 59]), seconds=rng.choice([0, 0, 30]))
    los_h = rng.uniform(18, 60)
    outtime = None if rng.random() < 0.15 else intime + timedelta(hours=los_h)
    obs: list[Observation] = []
    for concept, values in _VALUES.items():
        for _ in range(rng.randint(0, 14 if concept in ("urine_output_ml", "gcs", "fio2_fraction") else 6)):
            obs.append(Observation(time=_time(rng, intime, -26, los_h + 1), concept=concept, value=rng.choice(values)))
    for _ in range(rng.randint(0, 4)):  # same-time SBP/DBP pairs (MAP derivation)
        t = _time(rng, intime, -2, los_h)
        dbp = rng.choice([30, 40, 50, 60])
        obs += [Observation(time=t, concept="sbp_mmhg", value=dbp + rng.choice([20, 40, 60])),
                Observation(time=t, concept="dbp_mmhg", value=dbp)]  # fmt: skip
    for _ in range(rng.randint(0, 8)):  # blood gases with a FiO2 around the 4-hour look-back
        t = _time(rng, intime, -4, los_h)
        back = rng.choice([0, 0, 20, 120, 240, 241]) if rng.random() < 0.85 else None
        if back is not None:
            obs.append(
                Observation(
                    time=t - timedelta(minutes=back), concept="fio2_fraction", value=rng.choice([0.4, 0.6, 1.0])
                )
            )
        obs.append(Observation(time=t, concept="pao2_mmhg", value=rng.choice([50, 70, 95, 150, 250, 420])))
    gcs_times = [o.time for o in obs if o.concept == "gcs"]
    for t in gcs_times:  # GCS charted under sedation, and sedated assessments without a value
        if rng.random() < 0.3:
            obs.append(Observation(time=t, concept="gcs_sedated", value=True))
    for _ in range(rng.randint(0, 2)):
        obs.append(Observation(time=_time(rng, intime, 0, los_h), concept="gcs_sedated", value=True))
    for _ in range(rng.randint(0, 6)):  # charted GCS components (gcs_assembly = ricu_hourly_components)
        t = _time(rng, intime, -3, los_h)
        for c, hi in (("gcs_eye", 4), ("gcs_verbal", 5), ("gcs_motor", 6)):
            if rng.random() < 0.7:
                obs.append(Observation(time=t, concept=c, value=rng.randint(1, hi)))
        if rng.random() < 0.2:
            obs.append(Observation(time=t, concept="gcs_total_charted", value=rng.randint(3, 15)))
    infusions: list[Infusion] = []
    for drug, rates in _RATES.items():
        if rng.random() < 0.45:
            continue
        t = _time(rng, intime, -3, los_h - 1)
        for _ in range(rng.randint(1, 4)):  # segments around the 60-min episode and the 5-min merge gap
            dur = rng.choice([10, 30, 55, 59, 60, 61, 90, 180])
            infusions.append(
                Infusion(drug=drug, start=t, stop=t + timedelta(minutes=dur), rate_ug_kg_min=rng.choice(rates))
            )
            t += timedelta(minutes=dur + rng.choice([0, 3, 5, 6, 30, 240]))
    vent = []
    t = _time(rng, intime, -2, los_h / 2)
    for _ in range(rng.randint(0, 3)):
        dur = timedelta(minutes=rng.choice([30, 90, 300, 900, 1800]))
        vent.append(VentilationEpisode(start=t, end=t + dur, kind=rng.choice(SOFA_DEFINITIONS.ventilation_kinds[:-1])))
        t += dur + timedelta(minutes=rng.choice([0, 60, 400]))
    abx, cx = [], []
    for _ in range(rng.randint(0, 3)):
        ta = _time(rng, intime, -10, los_h)
        abx.append(AntibioticAdministration(time=ta, name=rng.choice(["vancomycin", "meropenem"]), route="IV"))
        if rng.random() < 0.8:
            tc = ta + timedelta(hours=rng.choice([-80, -72, -30, -2, 0, 0, 3, 24, 30]))
            cx.append(
                CultureSample(
                    time=tc, specimen=rng.choice(["BLOOD CULTURE", "URINE"]), positive=rng.choice([True, False, None])
                )
            )
    return PatientTimeline(
        stay_id=seed,
        icu_intime=intime,
        icu_outtime=outtime,
        admission_time=intime - timedelta(hours=rng.choice([0, 2, 30])) if rng.random() < 0.9 else None,
        admission_source=rng.choice(["emergency_department", "inpatient", None]),
        weight_kg=rng.choice([55.0, 80.0, 110.0, None]),
        observations=obs,
        infusions=infusions,
        antibiotics=abx,
        cultures=cx,
        ventilation=vent,
    )


def covering_sets(policies: dict[str, Any]) -> list[dict[str, str]]:
    """Policy sets in which every option of every policy appears: set ``k`` takes option ``k mod n`` of each."""
    opts = {name: sorted(p) for name, p in policies.items()}
    return [{name: o[k % len(o)] for name, o in opts.items()} for k in range(max(len(o) for o in opts.values()))]


SOFA1_SETS = {
    f"cover{k}": s
    for k, s in enumerate(covering_sets({n: p.options for n, p in load_criteria("sofa1").policies.items()}))
}
SOFA1_SETS |= {f"preset_{p}": dict(load_preset(p).sofa_policies) for p in available_presets()}
SOFA2_SETS = {f"cover{k}": s for k, s in enumerate(covering_sets(dict(IMPLEMENTED_POLICIES["sofa2"])))}
S3_SETS = {
    f"cover{k}": (dict(load_preset("immunoguide").sofa_policies), s)
    for k, s in enumerate(covering_sets({n: p.options for n, p in load_sepsis3_criteria().policies.items()}))
}
S3_SETS |= {
    f"preset_{p}": (dict(load_preset(p).sofa_policies), dict(load_preset(p).sepsis3_policies))
    for p in available_presets()
}


@pytest.fixture(scope="module")
def random_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, PatientTimeline]]:
    folder = tmp_path_factory.mktemp("random_timelines")
    return folder, write_timelines([random_timeline(seed) for seed in range(1, N_STAYS + 1)], folder)


def _key(r: Any) -> tuple[Any, ...]:
    return (*(getattr(r, c) for c in COMPONENTS), r.total, r.imputed_components)


def _compare(folder: Path, stays: dict[int, PatientTimeline], criteria: str, policies: dict[str, str]) -> list[Any]:
    crit = load_criteria(criteria)
    res = crit.resolve_policies(policies)
    tabs = TimelineTables.from_parquet(ibis.duckdb.connect(), str(folder))
    expr = hourly_sofa2_expr(tabs, policies=res) if criteria == "sofa2" else hourly_sofa_expr(tabs, policies=res)
    got = engine_rows(expr.execute(), crit, res)
    bad: list[Any] = []
    for sid, tl in stays.items():
        want = hourly_sofa(tl, criteria=crit, policies=res)
        mine = got.get(sid, ())
        if [r.hour_end for r in mine] != [r.hour_end for r in want]:
            bad.append((sid, "rows", len(mine), len(want)))
            continue
        bad += [(sid, a.hour_end, _key(a), _key(b)) for a, b in zip(mine, want, strict=True) if _key(a) != _key(b)]
    return bad


def test_the_generated_stays_reach_the_branches_they_are_meant_to(
    random_cohort: tuple[Path, dict[int, PatientTimeline]],
) -> None:
    """The generator is not vacuous: scored rows in every component, open stays, short and long infusions."""
    _, stays = random_cohort
    rows = [r for tl in stays.values() for r in hourly_sofa(tl, policies={"missing_component": "no_imputation"})]
    assert all(any((r.hour_components[c] or 0) >= 3 for r in rows) for c in COMPONENTS)
    assert any(tl.icu_outtime is None for tl in stays.values())
    assert any(
        i.stop - i.start < SOFA_DEFINITIONS.vasopressor_min_episode for tl in stays.values() for i in tl.infusions
    )
    assert sum(sepsis3_onset(tl).status == "onset" for tl in stays.values()) >= 3


@pytest.mark.parametrize("name", sorted(SOFA1_SETS))
def test_random_timelines_sofa1_engine_equals_single_patient(random_cohort, name: str) -> None:  # noqa: ANN001
    folder, stays = random_cohort
    assert _compare(folder, stays, "sofa1", SOFA1_SETS[name]) == []


@pytest.mark.parametrize("name", sorted(SOFA2_SETS))
def test_random_timelines_sofa2_engine_equals_single_patient(random_cohort, name: str) -> None:  # noqa: ANN001
    folder, stays = random_cohort
    assert _compare(folder, stays, "sofa2", SOFA2_SETS[name]) == []


def test_every_sofa2_option_of_the_rules_is_translated_by_the_engine() -> None:
    """One table: the engine's translations are the rules' table, and the covering sets above run every option."""
    assert dict(TRANSLATED_POLICIES) == dict(IMPLEMENTED_POLICIES["sofa2"])
    covered = {(n, s[n]) for s in SOFA2_SETS.values() for n in s}
    assert covered == {(n, o) for n, opts in IMPLEMENTED_POLICIES["sofa2"].items() for o in opts}


@pytest.mark.parametrize("name", sorted(S3_SETS))
def test_random_timelines_sepsis3_engine_equals_single_patient(random_cohort, name: str) -> None:  # noqa: ANN001
    folder, stays = random_cohort
    sofa, s3 = S3_SETS[name]
    sofa_res = load_criteria("sofa1").resolve_policies(sofa)
    s3_res = load_sepsis3_criteria().resolve_policies(s3)
    got = engine_sepsis3(folder, sofa_res, s3_res)

    def norm(x: Any) -> Any:
        if x is None or x != x:
            return None
        return x.to_pydatetime() if hasattr(x, "to_pydatetime") else int(x)

    bad = []
    for sid, tl in stays.items():
        ref = sepsis3_onset(tl, policies=s3_res, sofa_policies=sofa_res)
        g = got[sid]
        mine = (
            g.status,
            norm(g.suspected_infection_time),
            norm(g.onset_time),
            norm(g.baseline_sofa),
            norm(g.sofa_at_onset),
        )
        want = (ref.status, ref.suspected_infection_time, ref.onset_time, ref.baseline_sofa, ref.sofa_at_onset)
        if mine != want:
            bad.append((sid, mine, want))
    assert bad == []
