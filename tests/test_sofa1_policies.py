"""Each named SOFA-1 policy of reference doc §3.2: its default and its alternatives, recorded in the result."""

from __future__ import annotations

import pytest

from immunoguide.criteria import load_criteria
from immunoguide.errors import ConflictingInputError, ImplausibleValueError, InputError, PolicyError
from immunoguide.rules.sofa import SofaInputs, score_sofa

CRIT = load_criteria("sofa1")


def test_every_policy_is_recorded_in_the_result_with_its_default() -> None:
    """A result lists every policy of the criteria file with the option used (defaults when not overridden)."""
    r = score_sofa(SofaInputs(gcs=15))
    assert dict(r.policies) == {name: p.default for name, p in CRIT.policies.items()}
    assert r.criteria == "sofa1@vincent-1996.singer-2016-t1.v1"


def test_niv_counts_as_respiratory_support_by_default_but_not_under_imv_only() -> None:
    """P/F 150 on non-invasive ventilation scores 3 by default; mimic-code's IMV-only reading caps it at 2."""
    inp = SofaInputs(pao2_mmhg=75, fio2_fraction=0.5, ventilation="noninvasive")
    assert score_sofa(inp).components["respiration"] == 3
    assert score_sofa(inp, policies={"respiratory_support": "imv_only"}).components["respiration"] == 2


def test_hfnc_is_not_respiratory_support_for_sofa1() -> None:
    """High-flow nasal oxygen is not ventilation: P/F 90 scores at most 2."""
    inp = SofaInputs(pao2_mmhg=45, fio2_fraction=0.5, ventilation="hfnc")
    assert score_sofa(inp).components["respiration"] == 2


def test_pf_below_200_without_support_is_unscored_under_the_literal_policy() -> None:
    """Under pf_below_200_without_support=unscored, no band applies and the component is missing."""
    inp = SofaInputs(pao2_mmhg=60, fio2_fraction=0.4, respiratory_support=False)
    r = score_sofa(inp, policies={"pf_below_200_without_support": "unscored"})
    assert "respiration" in r.missing_components


def test_unknown_support_status_is_treated_as_unsupported_and_noted() -> None:
    """A P/F < 200 with no support information scores 2 and says why."""
    r = score_sofa(SofaInputs(pao2_mmhg=60, fio2_fraction=0.4))
    assert r.components["respiration"] == 2
    assert any("respiratory_support not given" in n for n in r.notes)


def test_pao2_without_fio2_is_unscored_by_default_and_room_air_under_ricu_policy() -> None:
    """PaO2 70 without FiO2: no P/F (mimic-code); ricu's room-air imputation gives P/F 333 → 1 point."""
    assert "respiration" in score_sofa(SofaInputs(pao2_mmhg=70)).missing_components
    r = score_sofa(SofaInputs(pao2_mmhg=70), policies={"fio2_missing": "room_air"})
    assert r.components["respiration"] == 1 and r.inputs_used["fio2_fraction"] == 0.21


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("presedation_else_normal", 1), ("assume_normal", 0), ("as_measured", 3), ("unscored", None)],
)
def test_gcs_in_a_sedated_patient_follows_the_sedation_policy(policy: str, expected: int | None) -> None:
    """Sedated with measured GCS 7 and pre-sedation GCS 14: each policy scores as it says."""
    inp = SofaInputs(gcs=7, sedated=True, gcs_presedation=14)
    r = score_sofa(inp, policies={"gcs_when_sedated": policy, "missing_component": "no_imputation"})
    assert r.components["cns"] == expected


def test_sedated_without_presedation_gcs_assumes_normal_and_says_so() -> None:
    """The default sedation policy falls back to 15 when no pre-sedation GCS is known, with a note."""
    r = score_sofa(SofaInputs(gcs=6, sedated=True))
    assert r.components["cns"] == 0 and any("assumed 15" in n for n in r.notes)


@pytest.mark.parametrize(
    ("policy", "hours", "expected"),
    [("mimic_code", 24, 3), ("mimic_code", 20, None), ("mimic_code", 30, 4), ("ricu", 12, 3), ("ricu", 11, None), ("as_recorded", 12, 3)],
)
def test_partial_urine_collection_follows_the_urine_output_window_policy(
    policy: str, hours: float, expected: int | None
) -> None:
    """200 mL over h hours is scaled to 24 h (24 h → 200, 30 h → 160, 12 h → 400 mL/day) only when the policy allows."""
    inp = SofaInputs(urine_output_ml=200, urine_output_observed_h=hours)
    r = score_sofa(inp, policies={"urine_output_window": policy, "missing_component": "no_imputation"})
    assert r.components["renal"] == expected


def test_vasopressor_run_under_one_hour_is_not_scored_by_default() -> None:
    """Norepinephrine 0.2 for 30 min does not score (Singer: 'for at least 1 hour'); it does under policy none."""
    inp = SofaInputs(norepinephrine_ug_kg_min=0.2, norepinephrine_duration_min=30, map_mmhg=75)
    assert score_sofa(inp).components["cardiovascular"] == 0
    assert score_sofa(inp, policies={"vasopressor_min_duration": "none"}).components["cardiovascular"] == 4


def test_zero_rate_norepinephrine_scores_nothing_by_default_and_three_like_mimic_code() -> None:
    """A charted norepinephrine rate of 0 is no infusion (ricu); mimic-code's '<= 0.1' scores it 3."""
    inp = SofaInputs(norepinephrine_ug_kg_min=0.0, map_mmhg=75)
    assert score_sofa(inp).components["cardiovascular"] == 0
    assert score_sofa(inp, policies={"zero_rate_infusion": "mimic_code"}).components["cardiovascular"] == 3


def test_map_is_derived_from_sbp_and_dbp_only_under_the_derive_policy() -> None:
    """Cuff 90/55 → MAP 66.7 (1 point) by default; with do_not_derive the component is missing."""
    inp = SofaInputs(sbp_mmhg=90, dbp_mmhg=55)
    assert score_sofa(inp).components["cardiovascular"] == 1
    r = score_sofa(inp, policies={"map_from_sbp_dbp": "do_not_derive"})
    assert "cardiovascular" in r.missing_components


def test_swapped_systolic_and_diastolic_pressures_are_rejected() -> None:
    """DBP above SBP is an error, not a silently wrong MAP."""
    with pytest.raises(ConflictingInputError):
        score_sofa(SofaInputs(sbp_mmhg=60, dbp_mmhg=90))


def test_unknown_policy_name_or_option_is_rejected_with_the_choices() -> None:
    """A mistyped policy name or option raises PolicyError listing what is allowed."""
    with pytest.raises(PolicyError, match="gcs_when_sedated"):
        score_sofa(SofaInputs(), policies={"gcs_when_sedated": "maybe"})
    with pytest.raises(PolicyError, match="policy of sofa1"):
        score_sofa(SofaInputs(), policies={"gsc_when_sedated": "assume_normal"})


@pytest.mark.parametrize(
    ("record", "error", "field"),
    [
        ({"gcs": 2}, ImplausibleValueError, "gcs"),
        ({"platelets_10e3_per_ul": -1}, ImplausibleValueError, "platelets_10e3_per_ul"),
        ({"fio2_fraction": 40}, ImplausibleValueError, "fio2_fraction"),
        ({"fio2_percent": 15}, ImplausibleValueError, "fio2_percent"),
        ({"fio2_percent": 40, "fio2_fraction": 0.4}, ConflictingInputError, "fio2_percent"),
        ({"creatinine": 1.2}, InputError, "creatinine"),
        ({"map_mmhg": "low"}, InputError, "map_mmhg"),
        ({"bilirubin_umol_per_l": "12"}, InputError, "bilirubin_umol_per_l"),
        ({"urine_output_ml": 300}, InputError, "urine_output_observed_h"),
    ],
)
def test_bad_input_is_rejected_naming_the_field_and_never_scored(record: dict, error: type, field: str) -> None:
    """Implausible, conflicting, misspelt or mistyped inputs raise an InputError that names the field."""
    with pytest.raises(error) as info:
        SofaInputs.from_record(record, where="line 7")
    assert info.value.field == field
    assert "line 7" in str(info.value)
    assert info.value.code.startswith("IG-E1")


def test_infusion_too_short_to_count_is_not_a_zero_rate_under_mimic_code() -> None:
    """Norepinephrine 0.5 for 30 min rejected by the 1 h rule is no infusion, not a charted 0 that scores 3."""
    inp = SofaInputs(norepinephrine_ug_kg_min=0.5, norepinephrine_duration_min=30, map_mmhg=80)
    r = score_sofa(inp, policies={"zero_rate_infusion": "mimic_code"})
    assert r.components["cardiovascular"] == 0
