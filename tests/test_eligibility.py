"""Eligibility screening against protocol files: statuses, evidence, overlays, settings and their warnings.

Criteria and thresholds are those of the shipped ImmunoSep file (immunosep-spec.md §1.1–§1.2); the rule reads them
from the file, the tests state the clinical behaviour.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunoguide.errors import ImplausibleValueError, InputError, PolicyError
from immunoguide.protocols import load_protocol
from immunoguide.rules.eligibility import PatientRecord, Provenance, eligibility_verdict, evaluate_eligibility

P = load_protocol("immunosep-2025")
T0 = datetime(2024, 3, 1, 8, 0)

ELIGIBLE: dict[str, Any] = dict(
    age_years=70,
    sex="male",
    consent="patient",
    infection_source="CAP",
    admission_source="emergency_department",
    sofa_total=9,
    endotype="immunoparalysis",
    sepsis3_onset_time=T0,
    planned_first_dose_time=T0 + timedelta(hours=36),
    covid19=False,
    stage_iv_malignancy=False,
    dnr_order=False,
    anc_per_mm3=6200,
)


def screen(**fields: Any) -> Any:
    return evaluate_eligibility(P, PatientRecord(**{**ELIGIBLE, **fields}))


def test_fully_documented_eligible_patient_is_eligible_with_every_criterion_reported() -> None:
    """All 17 ImmunoSep criteria are reported; the patient is eligible and E8/E9 are listed as not applied."""
    r = screen()
    assert r.eligible is True
    assert [x.id for x in r.criteria] == [f"I{i}" for i in range(1, 9)] + [f"E{i}" for i in range(1, 10)]
    not_applied = [x for x in r.criteria if not x.applied]
    assert [x.id for x in not_applied] == ["E8", "E9"] and all(x.status == "unknown" for x in not_applied)
    assert r.protocol == "immunosep-2025@1.0.0"


def test_not_applied_exclusions_are_warnings_not_blockers() -> None:
    """The steroid cut-off and the truncated exclusion list are never invented: they warn, they do not decide."""
    r = screen()
    warned = {w.setting: w for w in r.warnings}
    assert warned["steroid_exclusion"].depends == ("E8",) and warned["steroid_exclusion"].option == "not_applied"
    assert warned["other_exclusions"].depends == ("E9",)
    assert "not captured" in r.result("E8").reason


def test_evidence_records_value_unit_time_and_source() -> None:
    """The ANC used by E5 is reported with its unit, the lab time and the lab source; others fall back to the record."""
    lab_time = T0 + timedelta(hours=2)
    r = screen(source="screening CRF", provenance={"anc_per_mm3": Provenance(time=lab_time, source="LIS order 991")})
    (ev,) = r.result("E5").evidence
    assert (ev.field, ev.value, ev.unit, ev.time, ev.source) == ("anc_per_mm3", 6200, "/mm3", lab_time, "LIS order 991")
    (age,) = r.result("I1").evidence
    assert (age.value, age.unit, age.source) == (70, "years", "screening CRF")
    onset, dose = r.result("I7").evidence
    assert onset.time == T0 and dose.time == T0 + timedelta(hours=36)


def test_anc_between_the_two_thresholds_makes_the_neutropenia_setting_decisive() -> None:
    """ANC 1200: excluded under the registry 1500, not under protocol v1.0 1000 — the warning says the choice matters."""
    r = screen(anc_per_mm3=1200)
    assert r.eligible is False and r.blocking == ("E5",)
    (w,) = [w for w in r.warnings if w.setting == "neutropenia_anc_threshold"]
    assert w.decisive is True and w.option == "registry_1500"
    assert r.result("E5").settings_used == {"neutropenia_anc_threshold": "registry_1500"}
    r2 = evaluate_eligibility(
        P, PatientRecord(**{**ELIGIBLE, "anc_per_mm3": 1200}), settings={"neutropenia_anc_threshold": "protocol_v1_0_1000"}
    )
    assert r2.eligible is True and r2.settings["neutropenia_anc_threshold"] == "protocol_v1_0_1000"


def test_anc_far_from_both_thresholds_is_not_decisive() -> None:
    """ANC 6200 is not neutropenic under either threshold: the warning remains but says the choice does not matter."""
    (w,) = [w for w in screen().warnings if w.setting == "neutropenia_anc_threshold"]
    assert w.decisive is False


def test_pregnancy_criterion_does_not_apply_to_men() -> None:
    """I2 is met (not applicable) for a man with no pregnancy statement."""
    r = screen(sex="male", unwilling_to_become_pregnant=None)
    assert r.result("I2").status == "met" and "not applicable" in r.result("I2").reason


@pytest.mark.parametrize(
    ("sex", "unwilling", "expected"),
    [("female", True, "met"), ("female", False, "not_met"), ("female", None, "unknown"), (None, True, "met"),
     (None, None, "unknown")],
)
def test_pregnancy_criterion_for_women_and_unknown_sex(sex: str | None, unwilling: bool | None, expected: str) -> None:
    """I2: a woman must state unwillingness to become pregnant; unknown sex is decided only if the statement exists."""
    assert screen(sex=sex, unwilling_to_become_pregnant=unwilling).result("I2").status == expected


def test_catheter_related_bacteremia_exclusion_applies_only_to_bacteremia() -> None:
    """E7 excludes bacteremia with skin commensals, but not a pneumonia patient with the same flag."""
    assert screen(infection_source="primary_BSI", bsi_skin_commensal_or_catheter_related=True).result("E7").status == "met"
    assert screen(infection_source="CAP", bsi_skin_commensal_or_catheter_related=True).result("E7").status == "not_met"
    assert screen(infection_source=None).result("E7").status == "unknown"


def test_consent_refused_is_excluded_and_relative_consent_is_accepted() -> None:
    """E2 excludes a refusal; consent by a first-degree relative meets I3."""
    r = screen(consent="refused")
    assert r.eligible is False and set(r.blocking) == {"I3", "E2"}
    assert screen(consent="first_degree_relative").result("I3").status == "met"


@pytest.mark.parametrize(("endotype", "covid", "status", "arms"), [
    ("MALS", True, "met", ("mals_anakinra", "mals_placebo")),
    ("immunoparalysis", True, "not_met", ()),
    ("immunoparalysis", False, "met", ("sii_ifng", "sii_placebo")),
    ("MALS", None, "met", ("mals_anakinra", "mals_placebo")),
    ("immunoparalysis", None, "unknown", ()),
])
def test_covid19_overlay_opens_only_the_mals_arms(endotype: str, covid: bool | None, status: str,
                                                 arms: tuple[str, ...]) -> None:
    """I8: a COVID-19 patient is eligible only as MALS; the open arms follow the endotype and the overlay."""
    r = screen(endotype=endotype, covid19=covid)
    assert r.result("I8").status == status
    assert r.allowed_arms == arms


def test_unclassified_patient_is_not_eligible_and_no_arm_is_open() -> None:
    """Neither MALS nor immunoparalysis: I6 not met, no arm."""
    r = screen(endotype="unclassified")
    assert r.eligible is False and r.blocking == ("I6",) and r.allowed_arms == ()


def test_endotype_not_declared_by_the_protocol_is_an_input_error() -> None:
    """An endotype label from another classification ('SIP') is rejected, not silently unmatched."""
    with pytest.raises(InputError, match="endotype"):
        screen(endotype="SIP")


def test_first_dose_not_planned_is_unknown_until_the_window_has_closed() -> None:
    """I7 without a planned dose is unknown at 10 h after onset and not met at 72 h (the window has closed)."""
    r = evaluate_eligibility(P, PatientRecord(**{**ELIGIBLE, "planned_first_dose_time": None}), at=T0 + timedelta(hours=10))
    assert r.result("I7").status == "unknown" and r.eligible is None
    r = evaluate_eligibility(P, PatientRecord(**{**ELIGIBLE, "planned_first_dose_time": None}), at=T0 + timedelta(hours=72))
    assert r.result("I7").status == "not_met" and r.eligible is False


def test_first_dose_before_sepsis_onset_is_not_met() -> None:
    """A planned first dose before the Sepsis-3 onset does not meet I7."""
    assert screen(planned_first_dose_time=T0 - timedelta(hours=1)).result("I7").status == "not_met"


def test_sepsis3_with_unknown_admission_route_is_decided_only_when_both_readings_agree() -> None:
    """I5 without the admission route: met if both readings hold, not met if SOFA < 2, else unknown."""
    assert screen(admission_source=None, sofa_total=6, sofa_admission=2).result("I5").status == "met"
    assert screen(admission_source=None, sofa_total=1).result("I5").status == "not_met"
    assert screen(admission_source=None, sofa_total=6, sofa_admission=5).result("I5").status == "unknown"


def test_mixed_naive_and_aware_times_are_an_input_error() -> None:
    """A timezone-aware onset with a naive dose time is rejected instead of compared wrongly."""
    with pytest.raises(InputError, match="timezone"):
        screen(sepsis3_onset_time=T0.replace(tzinfo=UTC))


def test_implausible_anc_is_rejected_at_the_record() -> None:
    """An ANC of -5/mm3 is implausible and never screened."""
    with pytest.raises(ImplausibleValueError):
        PatientRecord(anc_per_mm3=-5)


def test_unknown_setting_override_is_a_policy_error() -> None:
    """Overriding a setting the protocol does not declare raises PolicyError."""
    with pytest.raises(PolicyError):
        evaluate_eligibility(P, PatientRecord(**ELIGIBLE), settings={"steroid_exclusion": "prednisolone_20mg"})


def test_infection_type_warning_lists_both_criteria_that_use_it() -> None:
    """The infection-definition setting is reported once, naming I4 and E3."""
    (w,) = [w for w in screen().warnings if w.setting == "infection_type_definitions"]
    assert w.depends == ("I4", "E3") and w.decisive is None


def test_result_is_json_serialisable_for_the_screening_log() -> None:
    """to_dict gives a JSON-safe screening log with statuses, evidence, settings and warnings."""
    d = screen(provenance={"age_years": Provenance(time=T0, source="ID card")}).to_dict()
    text = json.dumps(d)
    assert '"E5"' in text and d["eligible"] is True and d["settings"]["neutropenia_anc_threshold"] == "registry_1500"
    assert d["criteria"][0]["evidence"][0]["source"] == "ID card"


def test_provenance_for_a_field_that_does_not_exist_is_rejected() -> None:
    """Provenance must describe a field of the record."""
    with pytest.raises(InputError):
        PatientRecord(provenance={"lactate": Provenance(source="x")})


# --- properties ------------------------------------------------------------------------------------------------

_OPTIONAL = [k for k in ELIGIBLE]


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    return dict(
        age_years=draw(st.one_of(st.none(), st.floats(16, 100))),
        sex=draw(st.sampled_from([None, "female", "male"])),
        unwilling_to_become_pregnant=draw(st.sampled_from([None, True, False])),
        consent=draw(st.sampled_from([None, "patient", "spouse", "refused"])),
        infection_source=draw(st.sampled_from([None, "CAP", "VAP", "primary_BSI", "meningitis"])),
        admission_source=draw(st.sampled_from([None, "emergency_department", "hospitalised"])),
        sofa_total=draw(st.one_of(st.none(), st.integers(0, 24))),
        sofa_admission=draw(st.one_of(st.none(), st.integers(0, 24))),
        endotype=draw(st.sampled_from([None, "MALS", "immunoparalysis", "unclassified"])),
        sepsis3_onset_time=T0,
        planned_first_dose_time=draw(st.one_of(st.none(), st.integers(0, 100).map(lambda h: T0 + timedelta(hours=h)))),
        covid19=draw(st.sampled_from([None, True, False])),
        stage_iv_malignancy=draw(st.sampled_from([None, False, True])),
        dnr_order=draw(st.sampled_from([None, False, True])),
        bsi_skin_commensal_or_catheter_related=draw(st.sampled_from([None, False, True])),
        anc_per_mm3=draw(st.one_of(st.none(), st.floats(0, 20000))),
    )


@settings(max_examples=150, deadline=None)
@given(records(), st.sampled_from(_OPTIONAL + ["bsi_skin_commensal_or_catheter_related", "sofa_admission",
                                                "unwilling_to_become_pregnant"]))
def test_forgetting_one_value_never_turns_a_decision_into_its_opposite(rec: dict[str, Any], field: str) -> None:
    """Removing one recorded value can make a decision undetermined, never flip eligible into ineligible or back."""
    before = evaluate_eligibility(P, PatientRecord(**rec)).eligible
    after = evaluate_eligibility(P, PatientRecord(**{**rec, field: None})).eligible
    if before is True:
        assert after in (True, None)
    if before is False:
        assert after in (False, None)
    if before is None:
        assert after is None


@settings(max_examples=50, deadline=None)
@given(records())
def test_eligibility_is_deterministic_and_consistent_with_its_criteria(rec: dict[str, Any]) -> None:
    """Same inputs give the same log; eligible is False iff some criterion blocks, True iff nothing is undetermined."""
    a = evaluate_eligibility(P, PatientRecord(**rec))
    b = evaluate_eligibility(P, PatientRecord(**rec))
    assert a.to_dict() == b.to_dict()
    assert (a.eligible is False) == bool(a.blocking)
    assert (a.eligible is True) == (not a.blocking and not a.undetermined)


@settings(max_examples=60, deadline=None)
@given(records(), st.sampled_from([None, T0, T0 + timedelta(days=3)]))
def test_eligibility_verdict_is_the_full_evaluation_without_its_warnings(rec: dict[str, Any], at: datetime | None) -> None:
    """The cohort screening's shortcut answers exactly what the full screening log says."""
    full = evaluate_eligibility(P, PatientRecord(**rec), at=at)
    assert eligibility_verdict(P, PatientRecord(**rec), at=at) == (full.eligible, full.blocking, full.undetermined)
