"""SAP endpoint derivations (spec §5): death → 24 after death, LOCF, the literal '> 1.4', missing baseline, traces."""

from __future__ import annotations

from fractions import Fraction
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunoguide.analysis import (
    BiomarkerDraw,
    DailySofaRecord,
    immune_reversal,
    infection_outcome_day15,
    load_sap,
    mean_sofa_survivors,
    mortality,
    sofa_response,
    sofa_response_arrays,
    sofa_response_by_patient,
)
from immunoguide.analysis.sap import load_sap_text
from immunoguide.errors import (
    ConflictingInputError,
    CriteriaError,
    ImplausibleValueError,
    InputError,
    PolicyError,
)

SAP = load_sap()
PRIMARY = SAP.sofa_response["d2_9"]
SAP_TEXT = resources.files("immunoguide.analysis").joinpath("immunosep_sap_v1.toml").read_text("utf-8")


def rows(pid: str, values: dict[int, int | None], died: int | None = None) -> list[DailySofaRecord]:
    """Daily records with row ids ``<pid>-d<day>``; ``died`` is stored on the last row only."""
    days = sorted(values)
    return [
        DailySofaRecord(pid, d, values[d], died_on_day=died if d == days[-1] else None, row_id=f"{pid}-d{d}")
        for d in days
    ]


def full_window(baseline: int, total: int) -> dict[int, int]:
    """Day 1 = baseline and days 2–9 summing to ``total`` (values differ by at most 1)."""
    n = PRIMARY.n_values
    vals = [total // n + (1 if i < total % n else 0) for i in range(n)]
    return {1: baseline, **dict(zip(range(PRIMARY.first_day, PRIMARY.last_day + 1), vals, strict=True))}


# ----------------------------------------------------------------------------------------------------------------
# Threshold: boundary tests generated from the SAP file
# ----------------------------------------------------------------------------------------------------------------
def _boundary_totals(baseline: int) -> tuple[int, int]:
    """Largest window total that still responds and the smallest that does not, from the SAP threshold."""
    thr = Fraction(str(PRIMARY.threshold))
    n = PRIMARY.n_values
    responding = [t for t in range(0, 24 * n + 1) if baseline - Fraction(t, n) > thr]
    return max(responding), max(responding) + 1


@pytest.mark.parametrize("baseline", [4, 10, 17, 24])
def test_mean_just_below_threshold_responds_and_just_above_does_not(baseline: int) -> None:
    """Δ just above the SAP's 1.4 (one SOFA point less in the 8-day sum) responds; Δ just below does not."""
    yes, no = _boundary_totals(baseline)
    r_yes = sofa_response(rows("p", full_window(baseline, yes)))
    r_no = sofa_response(rows("p", full_window(baseline, no)))
    assert r_yes.responder is True and r_yes.delta > PRIMARY.threshold
    assert r_no.responder is False and r_no.delta <= PRIMARY.threshold


def test_delta_exactly_at_threshold_is_not_a_response_because_the_sap_says_greater_than() -> None:
    """With a threshold reachable by integers (1.5 in a test SAP), Δ = threshold does not respond under '>' but does
    under '>=': the comparator is applied literally (spec §5.1 'Responder if Δ > 1.4')."""
    sap_gt = load_sap_text(SAP_TEXT.replace("threshold = 1.4", "threshold = 1.5", 1))
    sap_ge = load_sap_text(
        SAP_TEXT.replace("threshold = 1.4", "threshold = 1.5", 1).replace('comparator = ">"', 'comparator = ">="', 1)
    )
    recs = rows("p", full_window(10, 8 * 10 - 12))  # mean 8.5, Δ = 1.5 exactly
    assert sofa_response(recs, sap=sap_gt).delta == 1.5
    assert sofa_response(recs, sap=sap_gt).responder is False
    assert sofa_response(recs, sap=sap_ge).responder is True


def test_integer_sofa_never_gives_delta_exactly_1_4() -> None:
    """Spec §5.1 note: with integer SOFA the 8-day mean is a multiple of 1/8 (14-day: 1/14), so Δ ≠ 1.4 always."""
    for n in (SAP.sofa_response["d2_9"].n_values, SAP.sofa_response["d2_15"].n_values):
        assert all(Fraction(b) - Fraction(t, n) != Fraction("1.4") for b in range(25) for t in range(24 * n + 1))


# ----------------------------------------------------------------------------------------------------------------
# Death, LOCF, missing baseline, traceability
# ----------------------------------------------------------------------------------------------------------------
def test_days_after_death_are_scored_24_and_flagged() -> None:
    """A patient dying on day 5 has days 6–9 scored 24 (flag death_24); the death day keeps its measured SOFA."""
    r = sofa_response(rows("p", {1: 12, 2: 11, 3: 11, 4: 12, 5: 13}, died=5))
    flags = {d.day: (d.sofa, d.flag) for d in r.days}
    assert flags[5] == (13, "measured")
    assert all(flags[d] == (24, "death_24") for d in range(6, 10))
    assert r.n_death_scored == 4 and r.mean_sofa == (11 + 11 + 12 + 13 + 4 * 24) / 8
    assert r.responder is False


def test_death_day_without_sofa_is_carried_forward_under_the_default_policy() -> None:
    """Default death_day='as_other_days': an unmeasured death day is LOCF (the SAP scores only days AFTER death)."""
    r = sofa_response(rows("p", {1: 12, 2: 11, 3: None}, died=3))
    d3 = next(d for d in r.days if d.day == 3)
    assert (d3.sofa, d3.flag, d3.source_day) == (11, "locf", 2)
    assert r.policies["death_day"] == "as_other_days"


def test_death_day_policy_score_24_scores_the_death_day_too() -> None:
    """death_day='score_24' scores the death day itself 24 and is recorded in the result."""
    r = sofa_response(rows("p", {1: 12, 2: 11, 3: 10}, died=3), policies={"death_day": "score_24"})
    assert [(d.day, d.flag) for d in r.days][:2] == [(2, "measured"), (3, "death_24")]
    assert r.policies["death_day"] == "score_24"


def test_gaps_are_filled_by_last_observation_carried_forward_with_their_source_row() -> None:
    """Missing days take the last measured value (baseline included) and name the row they came from."""
    r = sofa_response(rows("p", {1: 10, 2: None, 3: 8, 6: 7, 9: None}))
    trace = {d.day: (d.sofa, d.flag, d.source_day, d.source_row_id) for d in r.days}
    assert trace[2] == (10, "locf", 1, "p-d1")
    assert trace[3] == (8, "measured", 3, "p-d3")
    assert trace[4] == trace[5] == (8, "locf", 3, "p-d3")
    assert trace[6] == (7, "measured", 6, "p-d6")
    assert trace[9] == (7, "locf", 6, "p-d6")
    assert r.n_locf == 6 and r.n_measured == 2 and r.baseline_row_id == "p-d1"
    assert r.mean_sofa == (10 + 8 + 8 + 8 + 7 + 7 + 7 + 7) / 8


def test_missing_day1_sofa_makes_the_endpoint_not_evaluable_with_a_reason() -> None:
    """Without a day-1 SOFA the endpoint is not evaluable (responder None); nothing is imputed for the baseline."""
    for values in ({1: None, **{d: 5 for d in range(2, 10)}}, {d: 5 for d in range(2, 10)}):
        r = sofa_response(rows("p", values))
        assert r.evaluable is False and r.responder is None and r.days == ()
        assert "day 1" in r.reason and "not evaluable" in r.reason


def test_days_2_to_15_endpoint_averages_14_values() -> None:
    """The secondary endpoint divides the sum of days 2–15 by 14 (SAP pp. 68–69)."""
    r = sofa_response(rows("p", {1: 10, 2: 8}), endpoint="d2_15")
    assert len(r.days) == 14 and r.mean_sofa == 8.0 and r.responder is True
    assert r.label.startswith(">= 1.4-point decrease") and r.n_values == 14


def test_result_records_sap_version_policies_and_trace_in_to_dict() -> None:
    """Every result carries the SAP id/version, the policies used and the per-day trace."""
    d = sofa_response(rows("p", {1: 10, 2: 8})).to_dict()
    assert d["sap_id"] == "immunosep_sap_v1" and d["sap_version"] == "1.0"
    assert d["policies"] == {
        "death_day": "as_other_days",
        "survivors": "alive_through_last_day",
        "reversal_window": "day_28",
    }
    assert len(d["days"]) == 8 and d["n_locf"] == 7


def test_unknown_policy_option_is_rejected() -> None:
    """An option the SAP file does not declare raises IG-E300."""
    with pytest.raises(PolicyError):
        sofa_response(rows("p", {1: 10}), policies={"death_day": "score_zero"})


@pytest.mark.parametrize("bad", [25, -1, True, 7.5])
def test_implausible_sofa_is_rejected(bad: object) -> None:
    """SOFA outside 0–24, booleans and fractions are refused when the record is built."""
    with pytest.raises(ImplausibleValueError):
        DailySofaRecord("p", 2, bad)  # type: ignore[arg-type]


def test_conflicting_rows_are_refused() -> None:
    """Two rows for one day, two death days, SOFA after death or two patients raise IG-E104."""
    cases = [
        [DailySofaRecord("p", 1, 10), DailySofaRecord("p", 1, 9)],
        [DailySofaRecord("p", 1, 10, died_on_day=4), DailySofaRecord("p", 2, 9, died_on_day=5)],
        [DailySofaRecord("p", 1, 10, died_on_day=3), DailySofaRecord("p", 4, 9)],
        [DailySofaRecord("p", 1, 10), DailySofaRecord("q", 2, 9)],
    ]
    for recs in cases:
        with pytest.raises(ConflictingInputError):
            sofa_response(recs)


def test_day_before_one_is_rejected() -> None:
    """Study days start at 1 (baseline); day 0 is an input error."""
    with pytest.raises(InputError):
        DailySofaRecord("p", 0, 10)


def test_by_patient_groups_records() -> None:
    """sofa_response_by_patient derives one result per patient id."""
    out = sofa_response_by_patient(rows("a", {1: 10, 2: 8}) + rows("b", {1: 5, 2: 5}))
    assert {k: v.responder for k, v in out.items()} == {"a": True, "b": False}


# ----------------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------------
sofa_or_none = st.one_of(st.none(), st.integers(0, 24))


@st.composite
def patients(draw: st.DrawFn) -> tuple[dict[int, int | None], int | None]:
    values = {1: draw(sofa_or_none)}
    died = draw(st.one_of(st.none(), st.integers(1, 30)))
    for d in range(2, 16):
        if died is not None and d > died:
            break
        if draw(st.booleans()):
            values[d] = draw(sofa_or_none)
    return values, died


@settings(max_examples=200, deadline=None)
@given(patients())
def test_primary_mean_always_uses_exactly_8_values(p: tuple[dict[int, int | None], int | None]) -> None:
    """Property: an evaluable primary endpoint lists 8 days (2..9), each flagged, and the mean is their sum / 8."""
    values, died = p
    r = sofa_response(rows("p", values, died))
    if values.get(1) is None:
        assert not r.evaluable
        return
    assert [d.day for d in r.days] == list(range(2, 10))
    assert all(d.flag in ("measured", "locf", "death_24") for d in r.days)
    assert r.mean_sofa == sum(d.sofa for d in r.days) / 8
    assert r.n_measured + r.n_locf + r.n_death_scored == 8
    assert r.responder == (Fraction(values[1]) - Fraction(sum(d.sofa for d in r.days), 8) > Fraction("1.4"))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(patients(), min_size=1, max_size=8),
    st.sampled_from(["d2_9", "d2_15"]),
    st.sampled_from(["as_other_days", "score_24"]),
)
def test_vectorised_derivation_equals_the_per_patient_one(
    cohort: list[tuple[dict[int, int | None], int | None]], endpoint: str, death_day: str
) -> None:
    """Property: sofa_response_arrays (used by the simulator) gives the same responders, means and LOCF counts."""
    spec = SAP.sofa_response[endpoint]
    base = np.array([np.nan if v.get(1) is None else v[1] for v, _ in cohort], dtype=float)
    win = np.array(
        [[np.nan if v.get(d) is None else v[d] for d in range(spec.first_day, spec.last_day + 1)] for v, _ in cohort],
        dtype=float,
    )
    died = np.array([np.nan if dd is None else dd for _, dd in cohort], dtype=float)
    arr = sofa_response_arrays(base, win, died, endpoint=endpoint, policies={"death_day": death_day})  # type: ignore[arg-type]
    for i, (values, dd) in enumerate(cohort):
        r = sofa_response(rows(f"p{i}", values, dd), endpoint=endpoint, policies={"death_day": death_day})  # type: ignore[arg-type]
        assert bool(arr.evaluable[i]) == r.evaluable
        if r.evaluable:
            assert bool(arr.responder[i]) == r.responder
            assert arr.mean_sofa[i] == pytest.approx(r.mean_sofa)
            assert int(arr.n_locf[i]) == r.n_locf and int(arr.n_death_scored[i]) == r.n_death_scored


# ----------------------------------------------------------------------------------------------------------------
# Other endpoints
# ----------------------------------------------------------------------------------------------------------------
def test_mean_sofa_days_1_to_9_among_survivors_divides_by_9() -> None:
    """Survivors: (sum of days 1–9, LOCF for gaps) / 9; a death by day 9 makes it not evaluable."""
    r = mean_sofa_survivors(rows("p", {1: 9, 5: 0}))
    assert r.mean_sofa == (9 * 4 + 0 * 5) / 9 and len(r.days) == 9
    dead = mean_sofa_survivors(rows("q", {1: 9, 2: 9}, died=9))
    assert dead.evaluable is False and dead.survivor is False and "died on day 9" in dead.reason


def test_mean_sofa_survivor_policy_alive_at_day_28_excludes_later_deaths() -> None:
    """With survivors='alive_at_day_28' a patient dying on day 20 is not a survivor; by default they are."""
    recs = rows("p", {1: 9, 2: 8}, died=20)
    assert mean_sofa_survivors(recs).evaluable is True
    assert mean_sofa_survivors(recs, policies={"survivors": "alive_at_day_28"}).evaluable is False


@pytest.mark.parametrize(
    ("died", "alive", "horizon", "dead"),
    [
        (28, None, 28, True),
        (29, None, 28, False),
        (None, 28, 28, False),
        (None, 27, 28, None),
        (40, 39, 90, True),
        (None, None, 90, None),
    ],
)
def test_mortality_by_horizon(died: int | None, alive: int | None, horizon: int, dead: bool | None) -> None:
    """Death on or before the horizon counts; known alive at the horizon does not; shorter follow-up is unknown."""
    r = mortality("p", died_on_day=died, last_known_alive_day=alive, horizon_days=horizon)
    assert r.dead is dead and r.evaluable is (dead is not None)


def test_infection_outcome_categories_are_ranked_best_to_worst() -> None:
    """resolution < intermediate < failure < superinfection (spec §5.2); unknown labels are refused."""
    assert [infection_outcome_day15("p", c).rank for c in SAP.infection_categories] == [0, 1, 2, 3]
    assert infection_outcome_day15("p", None).evaluable is False
    with pytest.raises(InputError):
        infection_outcome_day15("p", "cured")


# ----------------------------------------------------------------------------------------------------------------
# Reversal
# ----------------------------------------------------------------------------------------------------------------
def _mals_fall_boundary() -> tuple[float, float]:
    frac = SAP.reversals["MALS"].relative_fall_fraction
    base = 10000.0
    return base * (1 - frac), base * (1 - frac) + 1  # exactly the fraction, and 1 ng/mL short of it


def test_mals_reversal_at_exactly_15_percent_fall_counts() -> None:
    """MALS reverses on a ferritin fall >= 15 % (SAP p. 69): exactly 15 % counts, 1 ng/mL less does not."""
    at, short = _mals_fall_boundary()
    base = BiomarkerDraw("p", 1, ferritin_ng_per_ml=10000.0, row_id="b")
    yes = immune_reversal([base, BiomarkerDraw("p", 5, ferritin_ng_per_ml=at, row_id="f")], endotype="MALS")
    no = immune_reversal([base, BiomarkerDraw("p", 5, ferritin_ng_per_ml=short)], endotype="MALS")
    assert (yes.reversed, yes.reversal_day, yes.time_days, yes.event) == (True, 5, 4.0, True)
    assert yes.evidence[0].row_id == "f" and yes.baseline_row_id == "b"
    assert (no.reversed, no.event, no.time_days) == (False, False, 4.0)


@pytest.mark.parametrize(
    ("hla", "ferritin", "expected"),
    [(8001, 4419, True), (8000, 4419, False), (8001, 4420, False), (None, 1000, None)],
)
def test_sii_reversal_needs_hla_dr_above_8000_and_ferritin_below_4420(
    hla: float | None, ferritin: float, expected: bool | None
) -> None:
    """SII reverses when HLA-DR > 8000 AB/c and ferritin < 4420 ng/mL at the same draw (strict, as printed)."""
    draws = [
        BiomarkerDraw("p", 1, ferritin_ng_per_ml=1000, hla_dr_per_monocyte=3000),
        BiomarkerDraw("p", 7, ferritin_ng_per_ml=ferritin, hla_dr_per_monocyte=hla),
    ]
    r = immune_reversal(draws, endotype="SII")
    assert r.evidence[0].met is expected
    assert r.reversed is (expected is True)


def test_reversal_needs_two_draws_and_codes_the_rest_as_censored_non_reversal() -> None:
    """One draw: not evaluable for the binary endpoint, coded as non-reversal censored at 0 (eFigure 6)."""
    r = immune_reversal([BiomarkerDraw("p", 1, ferritin_ng_per_ml=6000)], endotype="MALS")
    assert r.evaluable is False and r.reversed is None and (r.event, r.time_days) == (False, 0.0)


def test_reversal_window_policy_day_15_ignores_later_draws() -> None:
    """reversal_window='day_15' (SAP p. 69) ignores a day-21 reversal that the default 'day_28' (Table 2) counts."""
    d = [
        BiomarkerDraw("p", 1, ferritin_ng_per_ml=6000),
        BiomarkerDraw("p", 8, ferritin_ng_per_ml=5900),
        BiomarkerDraw("p", 21, ferritin_ng_per_ml=3000),
    ]
    assert immune_reversal(d, endotype="MALS").reversal_day == 21
    r15 = immune_reversal(d, endotype="MALS", policies={"reversal_window": "day_15"})
    assert (r15.reversed, r15.time_days, r15.window_last_day) == (False, 7.0, 15)


# ----------------------------------------------------------------------------------------------------------------
# SAP file validation
# ----------------------------------------------------------------------------------------------------------------
def test_sap_file_with_window_and_divisor_disagreeing_is_rejected() -> None:
    """n_values must equal the number of days in the window, so 'divide by 8' cannot drift from days 2–9."""
    with pytest.raises(CriteriaError):
        load_sap_text(SAP_TEXT.replace("n_values = 8", "n_values = 9", 1))


def test_sap_policy_default_must_be_one_of_its_options() -> None:
    """A policy default that is not among its options is rejected when the file loads."""
    with pytest.raises(CriteriaError):
        load_sap_text(SAP_TEXT.replace('default = "as_other_days"', 'default = "score_zero"', 1))
