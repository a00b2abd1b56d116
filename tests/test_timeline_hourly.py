"""Patient timeline and hourly SOFA-1: hour grid, worst value per hour, 24 h rolling worst, policies per hour.

Expected points are read from the same criteria file the rule reads (``load_criteria("sofa1")``), so a threshold
change moves the expectation with it; what is pinned here is the hourly behaviour (which values, which rows).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.timeline_tables import engine_hourly_sofa

from immunoguide.criteria import load_criteria
from immunoguide.errors import ConflictingInputError, ImplausibleValueError, InputError, UnitError
from immunoguide.rules.hourly import (
    HOUR,
    hourly_sofa,
)
from immunoguide.rules.sofa import COMPONENTS, SofaInputs, score_sofa
from immunoguide.rules.timeline import (
    Infusion,
    Observation,
    PatientTimeline,
    SedationEpisode,
    VentilationEpisode,
)

T0 = datetime(2024, 1, 1, 8, 0)  # ICU admission, on the hour
CRIT = load_criteria("sofa1")
DEFAULTS = CRIT.resolve_policies()
# Pinned semantics (module docstring H4, H8, H12), written out so that a change to the code's constants fails here.
WINDOW_ROWS = 24  # mimic-code score/sofa.sql: ROWS BETWEEN 23 PRECEDING AND CURRENT ROW
VASOPRESSOR_MIN_EPISODE = timedelta(minutes=60)  # Singer 2016 Table 1 footnote: 'for at least 1 hour'
VASOPRESSOR_MERGE_GAP = timedelta(minutes=5)  # ricu vaso60: windows merged across gaps <= 5 min
FIO2_LOOKBACK = timedelta(hours=4)  # mimic-code measurement/bg.sql: charted FiO2 within 4 h before the gas


@pytest.fixture(name="hourly_sofa", params=["single_patient", "engine"])
def _hourly_sofa_both_paths(request: pytest.FixtureRequest):  # noqa: ANN202
    """The scenario tests below run on both paths: the single-patient rule and the set-based engine on DuckDB
    (the timeline written as the engine's tables, tests/timeline_tables.py), with the same assertions."""
    return hourly_sofa if request.param == "single_patient" else engine_hourly_sofa


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def obs(hours: float, concept: str, value: float | bool) -> Observation:
    return Observation(time=at(hours), concept=concept, value=value)


def timeline(days: float = 3, **kw: object) -> PatientTimeline:
    return PatientTimeline(stay_id="test", icu_intime=T0, icu_outtime=at(24 * days), **kw)  # type: ignore[arg-type]


def row(rows, t: datetime):  # type: ignore[no-untyped-def]
    return next(r for r in rows if r.hour_end == t)


def points(ladder: str, x: float, policies: dict[str, str] | None = None) -> int:
    p = CRIT.ladders[ladder].points(x, {**DEFAULTS, **(policies or {})})
    assert p is not None
    return p


# --------------------------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------------------------


def test_rows_run_from_admission_hour_to_discharge_hour(hourly_sofa):
    """One row per clock hour from ceil(intime) to ceil(outtime), both included."""
    tl = PatientTimeline(stay_id=1, icu_intime=datetime(2024, 1, 1, 8, 20), icu_outtime=datetime(2024, 1, 2, 7, 5))
    rows = hourly_sofa(tl)
    assert rows[0].hour_end == datetime(2024, 1, 1, 9, 0)
    assert rows[-1].hour_end == datetime(2024, 1, 2, 8, 0)
    assert all(b.hour_end - a.hour_end == HOUR for a, b in zip(rows, rows[1:], strict=False))


def test_value_charted_exactly_on_the_hour_belongs_to_the_hour_ending_then(hourly_sofa):
    """A row covers (hour_end - 1 h, hour_end]: 10:00:00 is in the 10:00 row, 10:00:01 in the 11:00 row."""
    on = hourly_sofa(timeline(observations=[obs(2, "platelets_10e3_per_ul", 40)]))
    after = hourly_sofa(
        timeline(
            observations=[Observation(time=at(2) + timedelta(seconds=1), concept="platelets_10e3_per_ul", value=40)]
        )
    )
    assert row(on, at(2)).hour_components["coagulation"] == points("coagulation_platelets", 40)
    assert row(after, at(2)).hour_components["coagulation"] is None
    assert row(after, at(3)).hour_components["coagulation"] == points("coagulation_platelets", 40)


def test_lab_charted_within_23_hours_before_icu_admission_enters_the_first_row(hourly_sofa):
    """The 23 look-back rows let an ED lab 20 h before admission count; one 25 h before does not."""
    near = hourly_sofa(timeline(observations=[obs(-20, "bilirubin_mg_per_dl", 7.0)]))
    far = hourly_sofa(timeline(observations=[obs(-25, "bilirubin_mg_per_dl", 7.0)]))
    assert near[0].liver == points("liver_bilirubin", 7.0) > 0
    assert far[0].liver == 0 and "liver" in far[0].imputed_components


# --------------------------------------------------------------------------------------------------------------
# Worst value per hour and the 24 h rolling worst
# --------------------------------------------------------------------------------------------------------------


def test_platelet_nadir_keeps_scoring_for_24_rows_then_drops(hourly_sofa):
    """A single low platelet count scores in its own row and the 23 after it, then the component falls back."""
    tl = timeline(observations=[obs(2.5, "platelets_10e3_per_ul", 40), obs(0.5, "platelets_10e3_per_ul", 200)])
    rows = hourly_sofa(tl)
    expected = points("coagulation_platelets", 40)
    scoring = [r.hour_end for r in rows if r.coagulation == expected]
    assert scoring == [at(3) + i * HOUR for i in range(WINDOW_ROWS)]
    assert row(rows, at(3 + WINDOW_ROWS)).coagulation == points("coagulation_platelets", 200) == 0
    assert "coagulation" in row(rows, at(3 + WINDOW_ROWS)).imputed_components


def test_worst_value_per_hour_follows_each_concept_direction(hourly_sofa):
    """Within one hour platelets, MAP and GCS take the minimum, bilirubin and creatinine the maximum."""
    charted = {
        "platelets_10e3_per_ul": (160, 90, 140),
        "map_mmhg": (75, 65, 80),
        "gcs": (15, 12, 14),
        "bilirubin_mg_per_dl": (1.0, 2.5, 1.4),
        "creatinine_mg_per_dl": (1.0, 3.6, 2.1),
    }
    o = [obs(1 + (k + 1) / 10, c, v) for c, vals in charted.items() for k, v in enumerate(vals)]
    r = row(hourly_sofa(timeline(observations=o)), at(2))
    expected = {
        "coagulation": points("coagulation_platelets", 90),
        "cardiovascular": points("cardiovascular_map", 65),
        "cns": points("cns_gcs", 12),
        "liver": points("liver_bilirubin", 2.5),
        "renal": points("renal_creatinine", 3.6),
    }
    assert {c: r.hour_components[c] for c in expected} == expected
    # The direction matters: the opposite extreme would have scored differently for every concept.
    assert points("coagulation_platelets", 160) != expected["coagulation"]
    assert points("liver_bilirubin", 1.0) != expected["liver"]
    assert points("renal_creatinine", 1.0) != expected["renal"]
    assert points("cns_gcs", 15) != expected["cns"]
    assert points("cardiovascular_map", 80) != expected["cardiovascular"]


def test_rolling_component_is_never_below_the_hour_component(hourly_sofa):
    """The 24 h worst includes the row itself."""
    o = [obs(h, "platelets_10e3_per_ul", 200 - 4 * h) for h in range(0, 40, 3)]
    for r in hourly_sofa(timeline(observations=o)):
        for c in COMPONENTS:
            if r.hour_components[c] is not None:
                assert r.components[c] >= r.hour_components[c]


# --------------------------------------------------------------------------------------------------------------
# Catecholamines and the one-hour rule
# --------------------------------------------------------------------------------------------------------------


def _norepi(start_h: float, minutes: float, rate: float = 0.05) -> Infusion:
    return Infusion(
        drug="norepinephrine", start=at(start_h), stop=at(start_h) + timedelta(minutes=minutes), rate_ug_kg_min=rate
    )


def test_norepinephrine_for_30_minutes_scores_nothing_under_the_one_hour_rule(hourly_sofa):
    """Singer 2016's 'for at least 1 hour': a 30-min norepinephrine run leaves cardiovascular at 0."""
    rows = hourly_sofa(timeline(infusions=[_norepi(2.2, 30)]))
    assert all(r.cardiovascular == 0 for r in rows)
    assert all(r.hour_components["cardiovascular"] is None for r in rows)


def test_norepinephrine_for_2_hours_scores_three_points(hourly_sofa):
    """A 2-hour norepinephrine run at 0.05 ug/kg/min scores the <= 0.1 band in each hour it ran, then 24 rows on."""
    rows = hourly_sofa(timeline(infusions=[_norepi(2, 120)]))
    expected = points("cardiovascular_norepinephrine", 0.05)
    assert expected == 3
    assert [r.hour_end for r in rows if r.hour_components["cardiovascular"] == expected] == [at(3), at(4)]
    assert row(rows, at(4 + WINDOW_ROWS - 1)).cardiovascular == expected
    assert row(rows, at(4 + WINDOW_ROWS)).cardiovascular == 0


def test_norepinephrine_for_30_minutes_scores_under_policy_none(hourly_sofa):
    """mimic-code has no duration rule: with vasopressor_min_duration=none the 30-min run scores in its hour."""
    rows = hourly_sofa(timeline(infusions=[_norepi(2.2, 30)]), policies={"vasopressor_min_duration": "none"})
    expected = points("cardiovascular_norepinephrine", 0.05)
    assert [r.hour_end for r in rows if r.hour_components["cardiovascular"] == expected] == [at(3)]


def test_vasopressor_episode_of_exactly_60_minutes_counts_and_59_does_not(hourly_sofa):
    """The one-hour rule is >= 60 min of episode length."""
    minutes = VASOPRESSOR_MIN_EPISODE / timedelta(minutes=1)
    full = hourly_sofa(timeline(infusions=[_norepi(2.5, minutes)]))
    short = hourly_sofa(timeline(infusions=[_norepi(2.5, minutes - 1)]))
    assert max(r.cardiovascular for r in full) == points("cardiovascular_norepinephrine", 0.05)
    assert max(r.cardiovascular for r in short) == 0


def test_vasopressor_segments_with_a_gap_of_5_minutes_merge_into_one_episode(hourly_sofa):
    """Two 35-min segments 5 min apart are one 75-min episode (ricu vaso60); 6 min apart they are two short runs."""
    gap = VASOPRESSOR_MERGE_GAP / timedelta(minutes=1)
    first = _norepi(2, 35)
    joined = Infusion(
        drug="norepinephrine",
        start=first.stop + VASOPRESSOR_MERGE_GAP,
        stop=first.stop + VASOPRESSOR_MERGE_GAP + timedelta(minutes=35),
        rate_ug_kg_min=0.2,
    )
    apart = Infusion(
        drug="norepinephrine",
        start=first.stop + timedelta(minutes=gap + 1),
        stop=first.stop + timedelta(minutes=gap + 36),
        rate_ug_kg_min=0.2,
    )
    merged = hourly_sofa(timeline(infusions=[first, joined]))
    split = hourly_sofa(timeline(infusions=[first, apart]))
    assert max(r.cardiovascular for r in merged) == points("cardiovascular_norepinephrine", 0.2) == 4
    assert max(r.cardiovascular for r in split) == 0


def test_infusion_ending_exactly_on_the_hour_does_not_count_in_the_next_hour(hourly_sofa):
    """An interval is active in a row when start < hour_end and stop > hour_end - 1 h."""
    rows = hourly_sofa(timeline(infusions=[_norepi(2, 120)]), policies={"vasopressor_min_duration": "none"})
    assert row(rows, at(4)).hour_components["cardiovascular"] == 3
    assert row(rows, at(5)).hour_components["cardiovascular"] is None
    assert row(rows, at(2)).hour_components["cardiovascular"] is None


def test_highest_rate_of_overlapping_segments_is_the_hours_rate(hourly_sofa):
    """Two segments of one drug in an hour: the row takes the higher rate."""
    inf = [_norepi(2, 90, rate=0.05), Infusion(drug="norepinephrine", start=at(3.5), stop=at(5), rate_ug_kg_min=0.3)]
    rows = hourly_sofa(timeline(infusions=inf))
    assert row(rows, at(4)).hour_components["cardiovascular"] == points("cardiovascular_norepinephrine", 0.3)
    assert row(rows, at(3)).hour_components["cardiovascular"] == points("cardiovascular_norepinephrine", 0.05)


def test_zero_rate_norepinephrine_scores_only_under_the_mimic_code_policy(hourly_sofa):
    """A pump charted at 0 is no infusion (ricu) unless zero_rate_infusion=mimic_code ('<= 0.1' read literally)."""
    tl = timeline(infusions=[_norepi(2, 120, rate=0.0)])
    assert max(r.cardiovascular for r in hourly_sofa(tl)) == 0
    lit = hourly_sofa(tl, policies={"zero_rate_infusion": "mimic_code"})
    assert (
        max(r.cardiovascular for r in lit)
        == points("cardiovascular_norepinephrine", 0.0, {"zero_rate_infusion": "mimic_code"})
        == 3
    )


# --------------------------------------------------------------------------------------------------------------
# Respiration: P/F pairing and support
# --------------------------------------------------------------------------------------------------------------


def test_pao2_pairs_with_the_latest_fio2_in_the_previous_4_hours(hourly_sofa):
    """FiO2 0.4 three hours before and 0.8 one hour before a PaO2 of 120: the ratio uses 0.8 (P/F 150)."""
    o = [obs(0.5, "fio2_fraction", 0.4), obs(2.5, "fio2_fraction", 0.8), obs(3.5, "pao2_mmhg", 120)]
    vent = [VentilationEpisode(start=at(0), end=at(10), kind="invasive")]
    r = row(hourly_sofa(timeline(observations=o, ventilation=vent)), at(4))
    assert r.hour_components["respiration"] == points("respiration_pf", 120 / 0.8) != points("respiration_pf", 300)


def test_fio2_exactly_4_hours_before_pairs_and_older_does_not(hourly_sofa):
    """The pairing window is [PaO2 time - 4 h, PaO2 time]; without a FiO2 the gas is unscored (fio2_missing)."""
    gas = at(6)
    inside = [Observation(time=gas - FIO2_LOOKBACK, concept="fio2_fraction", value=0.5), obs(6, "pao2_mmhg", 80)]
    outside = [
        Observation(time=gas - FIO2_LOOKBACK - timedelta(seconds=1), concept="fio2_fraction", value=0.5),
        obs(6, "pao2_mmhg", 80),
    ]
    unsupported = score_sofa(SofaInputs(pao2_mmhg=80, fio2_fraction=0.5, ventilation="none"))
    assert (
        row(hourly_sofa(timeline(observations=inside)), gas).hour_components["respiration"]
        == (unsupported.components["respiration"])
    )
    assert row(hourly_sofa(timeline(observations=outside)), gas).hour_components["respiration"] is None
    room = hourly_sofa(timeline(observations=outside), policies={"fio2_missing": "room_air"})
    assert row(room, gas).hour_components["respiration"] == points("respiration_pf", 80 / 0.21)


def test_low_pf_scores_three_only_with_ventilation_active_in_the_hour(hourly_sofa):
    """P/F 150 scores 3 with invasive ventilation in the hour, 2 without (pf_below_200_without_support)."""
    o = [obs(2.2, "fio2_fraction", 0.6), obs(2.5, "pao2_mmhg", 90)]
    vent = [VentilationEpisode(start=at(2.75), end=at(8), kind="invasive")]
    hfnc = [VentilationEpisode(start=at(0), end=at(8), kind="hfnc")]
    with_vent = row(hourly_sofa(timeline(observations=o, ventilation=vent)), at(3))
    no_vent = row(hourly_sofa(timeline(observations=o)), at(3))
    on_hfnc = row(hourly_sofa(timeline(observations=o, ventilation=hfnc)), at(3))
    assert with_vent.hour_components["respiration"] == points("respiration_pf", 150) == 3
    assert no_vent.hour_components["respiration"] == 2
    assert on_hfnc.hour_components["respiration"] == 2
    niv_only = hourly_sofa(
        timeline(observations=o, ventilation=[VentilationEpisode(start=at(0), end=at(8), kind="noninvasive")]),
        policies={"respiratory_support": "imv_only"},
    )
    assert row(niv_only, at(3)).hour_components["respiration"] == 2


# --------------------------------------------------------------------------------------------------------------
# CNS under sedation
# --------------------------------------------------------------------------------------------------------------


def _sedated_gcs_timeline() -> PatientTimeline:
    return timeline(
        observations=[
            obs(1, "gcs", 14),  # awake before sedation
            obs(5, "gcs", 7),
            obs(5, "gcs_sedated", True),  # charted through the tube
        ]
    )


@pytest.mark.parametrize(
    "policy, expected_gcs",
    [("presedation_else_normal", 14), ("assume_normal", 15), ("as_measured", 7), ("unscored", None)],
)
def test_gcs_charted_under_sedation_follows_gcs_when_sedated(hourly_sofa, policy, expected_gcs):
    """A GCS flagged 'No Response-ETT' is scored by the policy: pre-sedation 14, normal 15, as measured 7, or not."""
    rows = hourly_sofa(_sedated_gcs_timeline(), policies={"gcs_when_sedated": policy})
    got = row(rows, at(5)).hour_components["cns"]
    assert got == (None if expected_gcs is None else points("cns_gcs", expected_gcs))


def test_presedation_gcs_is_the_last_awake_gcs_before_the_sedated_charting(hourly_sofa):
    """An awake GCS charted after sedation ended is not the pre-sedation GCS of the earlier sedated hour."""
    tl = timeline(
        observations=[
            obs(0.5, "gcs", 15),
            obs(1, "gcs", 14),
            obs(5, "gcs", 7),
            obs(5, "gcs_sedated", True),
            obs(8, "gcs", 9),
        ]
    )
    assert row(hourly_sofa(tl), at(5)).hour_components["cns"] == points("cns_gcs", 14) != points("cns_gcs", 9)


def test_gcs_inside_a_sedation_episode_is_a_sedated_assessment(hourly_sofa):
    """A sedation episode marks every GCS charted inside it, like the ETT flag."""
    tl = timeline(
        observations=[obs(1, "gcs", 15), obs(5, "gcs", 6)],
        sedation=[SedationEpisode(start=at(3), end=at(10), agent="propofol")],
    )
    assert row(hourly_sofa(tl), at(5)).hour_components["cns"] == points("cns_gcs", 15) == 0
    assert row(hourly_sofa(tl, policies={"gcs_when_sedated": "as_measured"}), at(5)).hour_components["cns"] == 3


def test_unsedated_gcs_in_the_same_hour_wins_over_a_sedated_one(hourly_sofa):
    """A real assessment in the hour is scored; the sedated charting does not replace it."""
    tl = timeline(observations=[obs(4.2, "gcs", 11), obs(4.6, "gcs", 5), obs(4.6, "gcs_sedated", True)])
    assert row(hourly_sofa(tl), at(5)).hour_components["cns"] == points("cns_gcs", 11)


# --------------------------------------------------------------------------------------------------------------
# Renal: urine window policy; MAP derivation
# --------------------------------------------------------------------------------------------------------------


def _hourly_urine(ml: float, hours: int) -> list[Observation]:
    return [obs(h, "urine_output_ml", ml) for h in range(1, hours + 1)]


@pytest.mark.parametrize(
    "policy, first_scored_h",
    [("mimic_code", 22), ("ricu", 12), ("as_recorded", 1)],
)
def test_urine_output_scores_from_the_hour_the_window_policy_allows(hourly_sofa, policy, first_scored_h):
    """15 mL/h charted hourly from admission: mimic-code scores from 22 h observed, ricu from 12 h, as_recorded at once."""
    rows = hourly_sofa(timeline(observations=_hourly_urine(15, 40)), policies={"urine_output_window": policy})
    scored = [r.hour_end for r in rows if r.hour_components["renal"] is not None]
    assert scored[0] == at(first_scored_h)
    daily = 15 * 24 if policy != "as_recorded" else 15  # 360 mL/day extrapolated; as_recorded takes 15 mL as the day
    assert row(rows, at(first_scored_h)).hour_components["renal"] == points("renal_urine", daily)


def test_urine_sum_is_the_trailing_24_hours(hourly_sofa):
    """After 30 h of 15 mL/h then nothing, the trailing sum still holds chartings of the last 24 h only."""
    rows = hourly_sofa(
        timeline(observations=_hourly_urine(15, 30) + [obs(30.5, "urine_output_ml", 600)]),
        policies={"urine_output_window": "mimic_code"},
    )
    # At 31 h: chartings at 8..30 h (23 x 15 = 345) + 600 = 945 mL over 24 h -> >= 500 mL/day -> 0 points.
    assert row(rows, at(31)).hour_components["renal"] == points("renal_urine", 945)
    # At 29 h: chartings at 6..29 h = 24 x 15 = 360 mL -> 3 points.
    assert row(rows, at(29)).hour_components["renal"] == points("renal_urine", 360)


def test_map_is_derived_from_a_same_time_blood_pressure_pair_only_when_policy_derives(hourly_sofa):
    """SBP 80 / DBP 50 charted together give MAP 60 (1 point) under derive; nothing under do_not_derive."""
    o = [obs(2.5, "sbp_mmhg", 80), obs(2.5, "dbp_mmhg", 50)]
    assert row(hourly_sofa(timeline(observations=o)), at(3)).hour_components["cardiovascular"] == points(
        "cardiovascular_map", 60
    )
    off = hourly_sofa(timeline(observations=o), policies={"map_from_sbp_dbp": "do_not_derive"})
    assert row(off, at(3)).hour_components["cardiovascular"] is None


# --------------------------------------------------------------------------------------------------------------
# Missing components
# --------------------------------------------------------------------------------------------------------------


def test_missing_components_are_imputed_after_the_window_and_listed(hourly_sofa):
    """Only platelets charted: the five other components are 0 and listed as imputed (impute_normal)."""
    r = row(hourly_sofa(timeline(observations=[obs(1.5, "platelets_10e3_per_ul", 90)])), at(2))
    assert r.imputed_components == tuple(c for c in COMPONENTS if c != "coagulation")
    assert r.total == r.coagulation == points("coagulation_platelets", 90)


def test_no_imputation_leaves_missing_components_and_the_total_missing(hourly_sofa):
    """Under missing_component=no_imputation a component with no data in 24 h is None and so is the total."""
    rows = hourly_sofa(
        timeline(observations=[obs(1.5, "platelets_10e3_per_ul", 90)]), policies={"missing_component": "no_imputation"}
    )
    r = row(rows, at(2))
    assert r.total is None and r.respiration is None and r.imputed_components == ()
    assert r.missing_components == tuple(c for c in COMPONENTS if c != "coagulation")
    assert r.coagulation == points("coagulation_platelets", 90)


_CONCEPTS = st.sampled_from(
    [
        ("platelets_10e3_per_ul", 1.0, 400.0),
        ("bilirubin_mg_per_dl", 0.1, 20.0),
        ("creatinine_mg_per_dl", 0.3, 8.0),
        ("map_mmhg", 30.0, 120.0),
        ("gcs", 3, 15),
        ("pao2_mmhg", 40.0, 500.0),
        ("fio2_fraction", 0.21, 1.0),
        ("urine_output_ml", 0.0, 400.0),
    ]
)


@st.composite
def _observations(draw):  # type: ignore[no-untyped-def]
    out = []
    for _ in range(draw(st.integers(0, 25))):
        name, lo, hi = draw(_CONCEPTS)
        minute = draw(st.integers(-30 * 60, 60 * 60))
        v = draw(st.integers(lo, hi)) if name == "gcs" else draw(st.floats(lo, hi, allow_nan=False))
        out.append(Observation(time=T0 + timedelta(minutes=minute), concept=name, value=v))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    o=_observations(),
    rate=st.floats(0, 0.5),
    run_min=st.integers(0, 180),
    missing=st.sampled_from(["impute_normal", "no_imputation"]),
)
def test_hourly_total_equals_the_sum_of_components(o, rate, run_min, missing):
    """Invariant: every component is 0-4 or None, and the total is their sum (None iff one is None)."""
    tl = timeline(days=2, observations=o, infusions=[_norepi(5, run_min, rate=rate)])
    for r in hourly_sofa(tl, policies={"missing_component": missing}):
        comps = list(r.components.values())
        assert all(c is None or 0 <= c <= 4 for c in comps)
        if None in comps:
            assert missing == "no_imputation" and r.total is None
        else:
            assert r.total == sum(comps)  # type: ignore[arg-type]
        assert set(r.imputed_components) <= set(r.missing_components)


# --------------------------------------------------------------------------------------------------------------
# Timeline validation and speed
# --------------------------------------------------------------------------------------------------------------


def test_infusion_stopping_before_it_starts_is_rejected_naming_the_infusion():
    """stop < start raises an InputError that names the drug and its start."""
    with pytest.raises(InputError, match="infusion norepinephrine starting 2024-01-01T10:00:00") as e:
        Infusion(drug="norepinephrine", start=at(2), stop=at(1), rate_ug_kg_min=0.1)
    assert e.value.field == "stop"


def test_implausible_observation_is_rejected_naming_concept_and_time():
    """A GCS of 16 is never scored: ImplausibleValueError naming the observation."""
    with pytest.raises(ImplausibleValueError, match="observation gcs at"):
        obs(1, "gcs", 16)


def test_unknown_concept_and_rate_as_observation_are_rejected():
    """Unknown concepts and catecholamine rates sent as point observations raise InputErrors."""
    with pytest.raises(UnitError, match="a concept of criteria/concepts.toml"):
        obs(1, "lactate_mmol_per_l", 2.0)
    with pytest.raises(InputError, match="Infusion"):
        obs(1, "norepinephrine_ug_kg_min", 0.1)
    with pytest.raises(InputError, match="flag"):
        obs(1, "gcs_sedated", False)


def test_icu_discharge_before_admission_is_rejected():
    """icu_outtime < icu_intime raises an InputError naming the stay."""
    with pytest.raises(InputError, match="timeline of stay x"):
        PatientTimeline(stay_id="x", icu_intime=at(5), icu_outtime=at(1))


def test_mixing_naive_and_aware_times_is_rejected():
    """All times of a timeline must be naive, or all aware."""
    aware = Observation(time=datetime(2024, 1, 1, 9, tzinfo=UTC), concept="gcs", value=15)
    with pytest.raises(ConflictingInputError, match="observations"):
        PatientTimeline(stay_id="x", icu_intime=T0, observations=[aware])


def test_timeline_from_record_names_the_bad_field():
    """A malformed record gives an InputError whose field is the path of the bad item."""
    with pytest.raises(InputError) as e:
        PatientTimeline.from_record(
            {
                "stay_id": 1,
                "icu_intime": "2024-01-01T08:00",
                "infusions": [
                    {
                        "drug": "dopamine",
                        "start": "2024-01-01T09:00",
                        "stop": "2024-01-01T10:00",
                        "rate_ug_kg_min": "fast",
                    }
                ],
            }
        )
    assert e.value.field == "infusions.0.rate_ug_kg_min"


def test_hourly_error_names_the_hour():
    """A blood-pressure pair with DBP above SBP is reported with its charting time."""
    tl = timeline(observations=[obs(2.5, "sbp_mmhg", 50), obs(2.5, "dbp_mmhg", 80)])
    with pytest.raises(ConflictingInputError, match="charted at 2024-01-01T10:30"):
        hourly_sofa(tl)


def test_ten_day_stay_gives_one_row_per_hour_of_the_grid(hourly_sofa):
    """A densely charted 10-day stay (labs 4-hourly, vitals hourly) gives 241 hourly rows (its time is measured by
    ``benchmarks/bench_rules.py``, never asserted here)."""
    o = []
    for h in range(240):
        o += [
            obs(h + 0.1, "map_mmhg", 60 + h % 20),
            obs(h + 0.2, "gcs", 10 + h % 6),
            obs(h + 0.3, "urine_output_ml", 40 + h % 7),
        ]
        if h % 4 == 0:
            o += [
                obs(h + 0.5, c, v)
                for c, v in (
                    ("platelets_10e3_per_ul", 80 + h % 50),
                    ("bilirubin_mg_per_dl", 1.1),
                    ("creatinine_mg_per_dl", 1.9),
                    ("fio2_fraction", 0.5),
                    ("pao2_mmhg", 90 + h % 30),
                )
            ]
    inf = [_norepi(h, 55, rate=0.08) for h in range(0, 200, 1)]  # 5-min gaps: one long episode
    tl = timeline(
        days=10,
        observations=o,
        infusions=inf,
        ventilation=[VentilationEpisode(start=at(0), end=at(120), kind="invasive")],
    )
    rows = hourly_sofa(tl)
    assert len(rows) == 241


# ---------------------------------------------------------------------------------------------------------------
# Hourly SOFA-2 (H14)
# ---------------------------------------------------------------------------------------------------------------


def _sofa2_stay(**extra):  # noqa: ANN003, ANN202
    from datetime import datetime, timedelta

    from immunoguide.rules.timeline import Observation, PatientTimeline

    t0 = datetime(2024, 5, 1, 8, 0)
    obs = [Observation(time=t0 + timedelta(hours=h), concept="urine_output_ml", value=v) for h, v in ((1, 20), (4, 20), (7, 20))]
    obs.append(Observation(time=t0 + timedelta(hours=1), concept="creatinine_mg_per_dl", value=1.0))
    return PatientTimeline(stay_id=1, icu_intime=t0, icu_outtime=t0 + timedelta(hours=30), observations=obs, **extra), t0


def test_sofa2_hourly_urine_rate_under_half_ml_per_kg_per_h_for_six_hours_scores_one(hourly_sofa) -> None:
    """60 mL over the first 7 h at 70 kg is < 0.5 mL/kg/h over 6 h: kidney 1 once 6 h have been observed, not before."""
    from datetime import timedelta

    tl, t0 = _sofa2_stay(weight_kg=70)
    rows = {r.hour_end: r for r in hourly_sofa(tl, criteria="sofa2")}
    assert rows[t0 + timedelta(hours=5)].renal == 0
    assert rows[t0 + timedelta(hours=7)].renal == 1
    assert rows[t0 + timedelta(hours=7)].criteria.startswith("sofa2@")


def test_sofa2_hourly_urine_needs_a_body_weight(hourly_sofa) -> None:
    """Without a weight there is no mL/kg/h rate: the kidney component rests on creatinine alone."""
    from datetime import timedelta

    tl, t0 = _sofa2_stay()
    rows = {r.hour_end: r for r in hourly_sofa(tl, criteria="sofa2")}
    assert rows[t0 + timedelta(hours=7)].renal == 0


def test_sofa2_hourly_counts_a_vasopressin_infusion_as_another_vasoactive_agent(hourly_sofa) -> None:
    """Vasopressin running alone scores 2 cardiovascular points under SOFA-2 and nothing under SOFA-1."""
    from datetime import timedelta

    from immunoguide.rules.timeline import Infusion

    base, t0 = _sofa2_stay(weight_kg=70)
    vaso = Infusion(drug="vasopressin", start=t0 + timedelta(hours=2), stop=t0 + timedelta(hours=5))
    tl = base.model_copy(update={"infusions": (vaso,)})
    h = t0 + timedelta(hours=4)
    assert {r.hour_end: r for r in hourly_sofa(tl, criteria="sofa2")}[h].hour_components["cardiovascular"] == 2
    assert {r.hour_end: r for r in hourly_sofa(tl)}[h].hour_components["cardiovascular"] is None


def test_sofa2_hourly_total_is_the_sum_of_its_components_on_the_demo(mimic3_timeline) -> None:  # noqa: ANN001
    """On every MIMIC-III demo stay the hourly SOFA-2 total is the sum of six components within 0–4."""
    from immunoguide.cohort.timelines import iter_timelines
    from immunoguide.rules.sofa import COMPONENTS

    for tl in iter_timelines(mimic3_timeline):
        for r in hourly_sofa(tl, criteria="sofa2"):
            comps = [getattr(r, c) for c in COMPONENTS]
            assert all(0 <= c <= 4 for c in comps) and r.total == sum(comps)
