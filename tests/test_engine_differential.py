"""The set-based engine (Ibis on DuckDB) gives the single-patient hourly SOFA on every MIMIC-III demo stay.

Differential test, as the issue asks: every (stay, hour) row of the engine equals
:func:`immunoguide.rules.hourly.hourly_sofa` on the timeline built from the same tables, under the default
policies and under policy sets that exercise every alternative branch.
"""

from __future__ import annotations

from pathlib import Path

import ibis
import pytest

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr
from immunoguide.cohort.timelines import iter_timelines
from immunoguide.criteria.presets import load_preset
from immunoguide.rules.hourly import hourly_sofa
from immunoguide.rules.sofa import COMPONENTS

POLICY_SETS = [
    {},
    {"fio2_missing": "room_air", "respiratory_support": "imv_only", "gcs_when_sedated": "as_measured", "urine_output_window": "ricu"},
    {
        "vasopressor_min_duration": "none",
        "zero_rate_infusion": "mimic_code",
        "missing_component": "no_imputation",
        "gcs_when_sedated": "assume_normal",
        "urine_output_window": "as_recorded",
    },
    {"gcs_when_sedated": "unscored", "pf_below_200_without_support": "unscored", "map_from_sbp_dbp": "do_not_derive", "dopamine_exactly_5": "three_points"},
]


@pytest.fixture(scope="module")
def timelines(mimic3_timeline: Path) -> list:
    return list(iter_timelines(mimic3_timeline))


@pytest.mark.parametrize("policies", POLICY_SETS, ids=["defaults", "ricu_like", "mimic_code_like", "literal_table"])
def test_engine_hourly_sofa_equals_single_patient_rules_on_every_demo_stay(
    mimic3_timeline: Path, timelines: list, policies: dict
) -> None:
    """Same rows, same six components and same total for all 136 stays of the demo."""
    con = ibis.duckdb.connect()
    df = hourly_sofa_expr(TimelineTables.from_parquet(con, str(mimic3_timeline)), policies=policies).execute()
    ref = {(tl.stay_id, r.hour_end): r for tl in timelines for r in hourly_sofa(tl, policies=policies)}
    assert len(df) == len(ref) > 10_000
    assert df["stay_id"].nunique() == 136
    assert _mismatches(df, ref) == []


def _mismatches(df, ref: dict) -> list:  # noqa: ANN001
    """Engine rows whose six components or total differ from the rules' row of the same stay and hour."""
    out = []
    for row in df.itertuples(index=False):
        r = ref[(row.stay_id, row.hour_end.to_pydatetime())]
        got = tuple(None if v != v else int(v) for v in (getattr(row, c) for c in (*COMPONENTS, "total")))
        want = tuple(getattr(r, c) for c in (*COMPONENTS, "total"))
        if got != want:
            out.append((row.stay_id, row.hour_end, got, want))
    return out


#: The reference presets' SOFA policies, and mixtures that put each ricu semantics next to the defaults' others.
PRESET_SETS = {
    "ricu": dict(load_preset("ricu").sofa_policies),
    "mimic_code": dict(load_preset("mimic-code").sofa_policies),
    "ricu_grid_only": {"hourly_grid": "icu_admission_hours"},
    "ricu_window_pf_gcs": {"rolling_window": "25_rows", "pf_pairing": "ricu_match_2h", "gcs_assembly": "ricu_hourly_components",
                           "gcs_when_sedated": "as_measured", "urine_output_window": "ricu"},
}  # fmt: skip


@pytest.fixture(scope="module")
def ricu_timelines(mimic3_ricu_timeline: Path) -> list:
    return list(iter_timelines(mimic3_ricu_timeline))


@pytest.mark.parametrize("name", sorted(PRESET_SETS))
@pytest.mark.parametrize("profile", ["immunoguide", "ricu"])
def test_engine_hourly_sofa_equals_single_patient_rules_under_reference_presets(
    mimic3_timeline: Path, mimic3_ricu_timeline: Path, timelines: list, ricu_timelines: list, name: str, profile: str
) -> None:
    """Under the ricu and mimic-code presets (and mixtures), on timelines read with either source profile, the engine
    gives the single-patient rules' hourly SOFA on every demo stay."""
    policies = PRESET_SETS[name]
    folder, tls = (mimic3_ricu_timeline, ricu_timelines) if profile == "ricu" else (mimic3_timeline, timelines)
    df = hourly_sofa_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(folder)), policies=policies).execute()
    ref = {(tl.stay_id, r.hour_end): r for tl in tls for r in hourly_sofa(tl, policies=policies)}
    assert len(df) == len(ref) > 10_000
    assert _mismatches(df, ref) == []


def test_engine_sepsis3_equals_single_patient_onset_under_the_ricu_preset(mimic3_ricu_timeline: Path, ricu_timelines: list) -> None:
    """ricu's hourly suspected-infection pairing and rows from the first SOFA datum: same SI, onset hour, baseline and
    SOFA at onset in both paths for all 136 stays."""
    from immunoguide.cohort.engine import sepsis3_expr
    from immunoguide.criteria import load_criteria
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria, sepsis3_onset

    preset = load_preset("ricu")
    sofa = load_criteria("sofa1").resolve_policies(preset.sofa_policies)
    s3 = load_sepsis3_criteria().resolve_policies(preset.sepsis3_policies)
    con = ibis.duckdb.connect()
    tabs = TimelineTables.from_parquet(con, str(mimic3_ricu_timeline))
    df = sepsis3_expr(tabs, hourly_sofa_expr(tabs, policies=sofa, rows_from="first_sofa_datum"), policies=s3).execute()
    got = {r.stay_id: r for r in df.itertuples(index=False)}

    def norm(x):  # noqa: ANN001, ANN202
        if x is None or x != x:
            return None
        return x.to_pydatetime() if hasattr(x, "to_pydatetime") else int(x)

    onsets = 0
    for tl in ricu_timelines:
        ref = sepsis3_onset(tl, policies=s3, sofa_policies=sofa)
        g = got[tl.stay_id]
        onsets += ref.status == "onset"
        assert (g.status, norm(g.suspected_infection_time), norm(g.onset_time), norm(g.baseline_sofa), norm(g.sofa_at_onset)) == (
            ref.status, ref.suspected_infection_time, ref.onset_time, ref.baseline_sofa, ref.sofa_at_onset
        ), tl.stay_id
    assert onsets == 76  # ricu 0.6.3 finds 76 onsets on the demo (tests/reference/ricu-0.6.3-mimic-iii-demo)


@pytest.mark.parametrize(
    "policies",
    [{}, {"baseline": "zero"}, {"baseline": "immunosep_registry", "si_window": "any"}, {"simultaneous_antibiotic_culture": "paired", "si_window": "any"}],
    ids=["ricu_running_minimum", "mimic_code_zero", "immunosep_registry_any_si", "paired_simultaneous"],
)
def test_engine_sepsis3_equals_single_patient_onset_on_every_demo_stay(
    mimic3_timeline: Path, timelines: list, policies: dict
) -> None:
    """Status, suspected-infection time, onset hour, baseline and SOFA at onset agree for all 136 stays."""
    from immunoguide.cohort.engine import sepsis3_expr
    from immunoguide.rules.sepsis3 import sepsis3_onset

    con = ibis.duckdb.connect()
    tabs = TimelineTables.from_parquet(con, str(mimic3_timeline))
    df = sepsis3_expr(tabs, hourly_sofa_expr(tabs), policies=policies).execute()
    assert len(df) == 136

    def norm(x):  # noqa: ANN001, ANN202
        if x is None or x != x:
            return None
        return x.to_pydatetime() if hasattr(x, "to_pydatetime") else int(x)

    got = {r.stay_id: r for r in df.itertuples(index=False)}
    statuses = set()
    for tl in timelines:
        ref = sepsis3_onset(tl, policies=policies)
        g = got[tl.stay_id]
        statuses.add(ref.status)
        assert (g.status, norm(g.suspected_infection_time), norm(g.onset_time), norm(g.baseline_sofa), norm(g.sofa_at_onset)) == (
            ref.status, ref.suspected_infection_time, ref.onset_time, ref.baseline_sofa, ref.sofa_at_onset
        ), tl.stay_id
    assert {"onset", "no_onset", "no_suspected_infection"} <= statuses


def _write_timeline(d: Path, stays: list[dict], observations: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from immunoguide.cohort.schema import SCHEMAS

    d.mkdir(parents=True, exist_ok=True)
    rows = {"stays": stays, "observations": observations}
    for table, schema in SCHEMAS.items():
        data = rows.get(table, [])
        pq.write_table(pa.table({f.name: [r.get(f.name) for r in data] for f in schema}, schema=schema), d / f"{table}.parquet")


@pytest.mark.parametrize("policies", [{}, {"urine_output_window": "as_recorded"}], ids=["mimic_code", "as_recorded"])
def test_urine_charted_before_the_look_back_rows_reaches_them_as_in_the_single_patient_rules(
    tmp_path: Path, policies: dict
) -> None:
    """Urine charted 30 h before ICU admission (ED or ward) enters the trailing 24 h sums of the first look-back
    rows and so the first day's renal score (H10)."""
    from datetime import datetime, timedelta

    t0 = datetime(2024, 1, 2, 12)
    obs = [(t0 - timedelta(hours=60), "urine_output_ml", 3000.0), (t0 - timedelta(hours=30), "urine_output_ml", 100.0)]
    obs += [(t0 + timedelta(hours=1, minutes=10), "map_mmhg", 68.0), (t0 + timedelta(hours=1, minutes=20), "map_mmhg", 75.0)]
    _write_timeline(
        tmp_path,
        [{"stay_id": 1, "intime": t0, "outtime": t0 + timedelta(hours=30), "weight_kg": 70.0}],
        [{"stay_id": 1, "time": t, "concept": c, "value": v} for t, c, v in obs],
    )
    (tl,) = iter_timelines(tmp_path)
    want = [(r.hour_end, r.renal, r.cardiovascular) for r in hourly_sofa(tl, policies=policies)]
    df = hourly_sofa_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(tmp_path)), policies=policies).execute()
    got = [(r.hour_end.to_pydatetime(), int(r.renal), int(r.cardiovascular)) for r in df.sort_values("hour_end").itertuples()]
    assert got == want
    assert want[0][1] == 4  # 100 mL in the 24 h before admission: the first rows score renal 4
    assert {c for _, _, c in want} == {0, 1}  # MAP 68 (the hour's worst) scores 1 for 24 h


def test_a_ladder_whose_points_fall_as_values_worsen_cannot_be_scored_per_value() -> None:
    """The engine scores each value and keeps the highest score; a non-monotone ladder would make that differ from
    scoring the hour's worst value, so it is refused with the criteria error code."""
    import dataclasses

    from immunoguide.cohort.engine import _require_per_value_scoring
    from immunoguide.criteria import load_criteria
    from immunoguide.errors import CriteriaError

    lad = load_criteria("sofa1").ladders["coagulation_platelets"]
    _require_per_value_scoring(lad, "min")
    bad = dataclasses.replace(lad, bands=tuple(dataclasses.replace(b, points=i % 2) for i, b in enumerate(lad.bands)))
    with pytest.raises(CriteriaError) as e:
        _require_per_value_scoring(bad, "min")
    assert e.value.code.startswith("IG-E2")


def _engine_and_rules(d: Path, policies: dict | None = None) -> tuple[list, list]:
    """(hour_end, six components, total) of the single-patient rules and of the engine for the one stay in ``d``."""
    (tl,) = iter_timelines(d)
    want = [(r.hour_end, *(getattr(r, c) for c in (*COMPONENTS, "total"))) for r in hourly_sofa(tl, policies=policies)]
    df = hourly_sofa_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(d)), policies=policies).execute()
    got = [
        (r.hour_end.to_pydatetime(), *(None if v is None or v != v else int(v) for v in (getattr(r, c) for c in (*COMPONENTS, "total"))))
        for r in df.sort_values("hour_end").itertuples()
    ]
    return want, got


# The three cases below were found by an adversarial review of the engine (session 3); each failed before its fix.


def test_open_stay_runs_to_its_latest_clinical_time_in_the_engine_too(tmp_path: Path) -> None:
    """An open stay (no outtime, e.g. a FHIR extract) has rows up to its latest charted time (H1), not just the
    admission hour: platelets 40 at 17:10 give coagulation 3 in the 18:00 row."""
    from datetime import datetime, timedelta

    t0 = datetime(2024, 1, 2, 12)
    _write_timeline(
        tmp_path,
        [{"stay_id": 1, "intime": t0, "outtime": None, "weight_kg": 70.0}],
        [{"stay_id": 1, "time": t0 + timedelta(hours=5, minutes=10), "concept": "platelets_10e3_per_ul", "value": 40.0}],
    )
    want, got = _engine_and_rules(tmp_path)
    assert len(want) == 7 and want[-1][2] == 3
    assert got == want


def test_two_diastolic_pressures_at_one_time_derive_map_from_the_lowest_of_each(tmp_path: Path) -> None:
    """SBP 90 with DBP 50 and 60 charted at the same time (arterial line and cuff): MAP = 50 + 40/3 = 63.3, the
    worst pairing, scores 1 point in both paths (H3)."""
    from datetime import datetime, timedelta

    t0 = datetime(2024, 1, 2, 12)
    t = t0 + timedelta(hours=2, minutes=15)
    obs = [(t, "sbp_mmhg", 90.0), (t, "dbp_mmhg", 50.0), (t, "dbp_mmhg", 60.0)]
    _write_timeline(
        tmp_path,
        [{"stay_id": 1, "intime": t0, "outtime": t0 + timedelta(hours=30), "weight_kg": 70.0}],
        [{"stay_id": 1, "time": a, "concept": c, "value": v} for a, c, v in obs],
    )
    want, got = _engine_and_rules(tmp_path)
    assert {r[4] for r in want} == {0, 1}
    assert got == want


def test_a_sedation_flag_without_a_value_does_not_mark_the_gcs_as_sedated(tmp_path: Path) -> None:
    """A gcs_sedated row with no value is not a flag (the timeline drops it), so GCS 8 charted at that time scores
    CNS 3 in both paths instead of being replaced by a presumed normal GCS."""
    from datetime import datetime, timedelta

    t0 = datetime(2024, 1, 2, 12)
    t = t0 + timedelta(hours=3)
    _write_timeline(
        tmp_path,
        [{"stay_id": 1, "intime": t0, "outtime": t0 + timedelta(hours=30), "weight_kg": 70.0}],
        [{"stay_id": 1, "time": t, "concept": "gcs", "value": 8.0}, {"stay_id": 1, "time": t, "concept": "gcs_sedated", "value": None}],
    )
    want, got = _engine_and_rules(tmp_path)
    assert max(r[5] for r in want) == 3
    assert got == want
