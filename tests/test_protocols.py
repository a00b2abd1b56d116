"""Protocol files as data: the three shipped protocols in one suite, loader rejections, generated boundaries, CLI.

The shipped protocols are ImmunoSep (immunosep-spec.md §1–§6), SAVE-MORE and GM-CSF Meisel 2009 (§8), all in the
same format with no protocol-specific code. Boundary cases are generated from the files themselves, so a new
threshold cannot ship untested.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from immunoguide.cli._protocol import protocol_app
from immunoguide.errors import CriteriaError, PolicyError, UnknownCriteriaError
from immunoguide.protocols import (
    available_protocols,
    compare,
    diff_protocols,
    load_protocol,
    load_protocol_text,
)
from immunoguide.rules.eligibility import PatientRecord, evaluate_eligibility
from immunoguide.rules.regimen import dose_schedule

SHIPPED = available_protocols()
PROTO_DIR = resources.files("immunoguide.protocols")
IMMUNOSEP_TEXT = PROTO_DIR.joinpath("immunosep-2025.toml").read_text("utf-8")
MEISEL_TEXT = PROTO_DIR.joinpath("gm-csf-meisel-2009.toml").read_text("utf-8")
runner = CliRunner()
T0 = datetime(2024, 3, 1, 8, 0)

#: below / at / above the threshold, read from the comparator's definition (not from the implementation).
EXPECTED_BELOW_AT_ABOVE = {
    ">": (False, False, True),
    ">=": (False, True, True),
    "<": (True, False, False),
    "<=": (True, True, False),
}


def mutate(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace ``old`` by ``new`` in a protocol text, failing loudly if the anchor text is not there."""
    assert text.count(old) >= count, f"anchor not found: {old!r}"
    return text.replace(old, new, count)


# ---------------------------------------------------------------------------------------------------------------
# The three shipped protocols, one parametrised suite
# ---------------------------------------------------------------------------------------------------------------


def test_three_protocols_are_shipped() -> None:
    """ImmunoSep, SAVE-MORE and Meisel 2009 GM-CSF are the shipped protocol ids."""
    assert SHIPPED == ["gm-csf-meisel-2009", "immunosep-2025", "save-more-2021"]


@pytest.mark.parametrize("pid", SHIPPED)
class TestShippedProtocol:
    def test_loads_with_version_registry_and_citation_keys(self, pid: str) -> None:
        """Each shipped file loads, is named after its id, and records id@version and its citation keys."""
        p = load_protocol(pid)
        assert p.id == pid and p.label == f"{pid}@{p.version}"
        assert p.meta.citations and len(p.sha256) == 64

    def test_every_rule_carries_a_citation_and_a_confidence_tag(self, pid: str) -> None:
        """Every criterion, endotype criterion, arm and regimen is cited and tagged confirmed/likely/unknown."""
        p = load_protocol(pid)
        items: list[Any] = [*p.criteria, *p.arms, *p.regimens.values(), *p.settings.values()]
        assert p.classification is not None
        cites = [r.citation for r in p.classification.endotypes] + [
            b.citation for r in p.classification.endotypes for b in r.all_of
        ]
        for it in items:
            assert it.citation.strip() and it.confidence in {"confirmed", "likely", "unknown"}
        for c in cites:
            assert c.source.strip() and c.confidence in {"confirmed", "likely", "unknown"}

    def test_unknown_items_are_settings_defaulting_to_not_applied_or_a_confirmed_option(self, pid: str) -> None:
        """An unknown setting never defaults to an invented value: 'not_applied' or an option read in a primary text."""
        p = load_protocol(pid)
        assert p.unknown_settings
        for name in p.unknown_settings:
            s = p.settings[name]
            assert s.default == "not_applied" or s.options[s.default].confidence == "confirmed", name
            assert s.warning.strip()

    def test_criteria_the_sources_do_not_give_are_governed_by_a_setting(self, pid: str) -> None:
        """Each criterion of kind 'unknown' points at a declared, not-applied setting and is tagged unknown."""
        p = load_protocol(pid)
        unknown = [c for c in p.criteria if c.kind == "unknown"]
        assert unknown
        for c in unknown:
            assert c.setting in p.settings and p.settings[c.setting].default == "not_applied"
            assert c.confidence == "unknown"

    def test_every_arm_has_a_schedule_or_says_why_not(self, pid: str) -> None:
        """Each arm yields due doses (all inside the course) or an empty schedule with a warning naming the gap."""
        p = load_protocol(pid)
        for arm in p.arms:
            s = dose_schedule(p, arm.code, T0, weight_kg=70, crcl_ml_per_min=90)
            if arm.kits:
                assert s.doses and all(d.due >= T0 for d in s.doses)
                for d in s.doses:
                    assert 1 <= d.day <= p.regimens[d.regimen].duration_days
            else:
                assert not s.doses and {w.setting for w in s.warnings} >= set(arm.depends_on_settings)

    def test_show_lists_every_criterion_with_its_confidence(self, pid: str) -> None:
        """`protocol show` prints every criterion id and flags the unknown settings."""
        res = runner.invoke(protocol_app, ["show", pid, "--width", "240"])
        assert res.exit_code == 0, res.output
        p = load_protocol(pid)
        lines = res.stdout.splitlines()
        for c in p.criteria:
            (row,) = [ln for ln in lines if ln.startswith(f"│ {c.id} ")]
            assert f"│ {c.confidence} " in row
        assert "unknown item(s)" in res.stdout and p.label in res.stdout

    def test_validate_accepts_the_shipped_file_by_path(self, pid: str) -> None:
        """`protocol validate PATH` exits 0 for the shipped file read from disk."""
        path = str(Path(str(PROTO_DIR.joinpath(f"{pid}.toml"))))
        res = runner.invoke(protocol_app, ["validate", path])
        assert res.exit_code == 0 and f"OK {path}" in res.stdout

    def test_a_protocol_does_not_differ_from_itself(self, pid: str) -> None:
        """diff(p, p) is empty, and the same file loaded from its path gives the same outline."""
        p = load_protocol(pid)
        assert diff_protocols(p, p) == ()
        assert diff_protocols(p, load_protocol(str(PROTO_DIR.joinpath(f"{pid}.toml")))) == ()


# ---------------------------------------------------------------------------------------------------------------
# Described patients, per protocol (one table, the same evaluation path for all three)
# ---------------------------------------------------------------------------------------------------------------

_IS_BASE: dict[str, Any] = dict(
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
_SM_BASE: dict[str, Any] = dict(flags={"hospitalised": True}, covid19=True, infection_source="LRTI", endotype="suPAR_high")
_GM_BASE: dict[str, Any] = dict(flags={"severe_sepsis_or_septic_shock": True}, endotype="immunosuppression")

#: (protocol, description, record fields, settings, expected eligible, expected blocking/undetermined ids)
DESCRIBED: list[tuple[str, str, dict[str, Any], dict[str, str], bool | None, set[str]]] = [
    ("immunosep-2025", "70-year-old man, CAP via ED, SOFA 9, immunoparalysis, first dose at 36 h", {}, {}, True, set()),
    ("immunosep-2025", "COVID-19 pneumonia classified immunoparalysis (I8: MALS arm only)", {"covid19": True}, {},
     False, {"I8"}),
    ("immunosep-2025", "COVID-19 pneumonia classified MALS", {"covid19": True, "endotype": "MALS"}, {}, True, set()),
    ("immunosep-2025", "unclassified (ferritin <= 4420, HLA-DR >= 5000): not randomised", {"endotype": "unclassified"},
     {}, False, {"I6"}),
    ("immunosep-2025", "meningitis: outside I4 and excluded by E3", {"infection_source": "meningitis"}, {}, False,
     {"I4", "E3"}),
    ("immunosep-2025", "ANC 1200/mm3 under the registry threshold (1500): excluded", {"anc_per_mm3": 1200}, {}, False,
     {"E5"}),
    ("immunosep-2025", "ANC 1200/mm3 under the protocol v1.0 threshold (1000): not excluded", {"anc_per_mm3": 1200},
     {"neutropenia_anc_threshold": "protocol_v1_0_1000"}, True, set()),
    ("immunosep-2025", "DNR status not recorded: undetermined", {"dnr_order": None}, {}, None, {"E6"}),
    ("immunosep-2025", "first blinded dose exactly 72 h after Sepsis-3: too late", {
        "planned_first_dose_time": T0 + timedelta(hours=72)}, {}, False, {"I7"}),
    ("immunosep-2025", "already hospitalised, SOFA 3 -> 4 (increase 1): not Sepsis-3",
     {"admission_source": "hospitalised", "sofa_admission": 3, "sofa_total": 4}, {}, False, {"I5"}),
    ("immunosep-2025", "woman who has not stated unwillingness to become pregnant: undetermined",
     {"sex": "female"}, {}, None, {"I2"}),
    ("immunosep-2025", "bacteremia with coagulase-negative staphylococci: excluded by E7",
     {"infection_source": "primary_BSI", "bsi_skin_commensal_or_catheter_related": True}, {}, False, {"E7"}),
    ("save-more-2021", "hospitalised COVID-19 LRTI with suPAR >= 6 ng/mL", {}, {}, True, set()),
    ("save-more-2021", "suPAR below 6 ng/mL", {"endotype": "suPAR_below_threshold"}, {}, False, {"I4"}),
    ("save-more-2021", "pneumonia recorded as 'CAP', not a term of this protocol: undetermined",
     {"infection_source": "CAP"}, {}, None, {"I3"}),
    ("save-more-2021", "not COVID-19", {"covid19": False}, {}, False, {"I2"}),
    ("gm-csf-meisel-2009", "septic shock with mHLA-DR < 8000 AB/c on 2 consecutive days", {}, {}, True, set()),
    ("gm-csf-meisel-2009", "mHLA-DR not persistently low", {"endotype": "not_immunosuppressed"}, {}, False, {"I2"}),
    ("gm-csf-meisel-2009", "severity not assessed yet: undetermined", {"flags": {}}, {}, None, {"I1"}),
]


@pytest.mark.parametrize(
    ("pid", "description", "fields", "settings", "eligible", "ids"),
    DESCRIBED,
    ids=[f"{d[0]}: {d[1]}" for d in DESCRIBED],
)
def test_described_patient_gets_the_expected_screening_decision(
    pid: str, description: str, fields: dict[str, Any], settings: dict[str, str], eligible: bool | None, ids: set[str]
) -> None:
    """Each described patient is eligible, ineligible or undetermined for the stated criteria, with warnings listed."""
    base = {"immunosep-2025": _IS_BASE, "save-more-2021": _SM_BASE, "gm-csf-meisel-2009": _GM_BASE}[pid]
    p = load_protocol(pid)
    r = evaluate_eligibility(p, PatientRecord(**{**base, **fields}), settings=settings)
    assert r.eligible is eligible, description
    assert set(r.blocking if eligible is False else r.undetermined) == ids
    assert r.protocol == p.label
    assert {w.setting for w in r.warnings} >= {c.setting for c in p.criteria if c.kind == "unknown"}


# ---------------------------------------------------------------------------------------------------------------
# Boundary cases generated from the protocol files
# ---------------------------------------------------------------------------------------------------------------


def _thresholds() -> list[tuple[str, Any]]:
    return [(pid, t) for pid in SHIPPED for t in load_protocol(pid).thresholds()]


THRESHOLDS = _thresholds()


@pytest.mark.parametrize(("pid", "t"), THRESHOLDS, ids=[f"{pid} {t.where} {t.quantity}" for pid, t in THRESHOLDS])
def test_every_threshold_keeps_its_comparator_below_at_and_above(pid: str, t: Any) -> None:
    """threshold - eps / threshold / threshold + eps follow the written comparator ('>' 4420 excludes 4420 itself)."""
    eps = 1.0 if t.unit in ("points",) else 0.01
    got = tuple(compare(x, t.comparator, t.threshold) for x in (t.threshold - eps, t.threshold, t.threshold + eps))
    assert got == EXPECTED_BELOW_AT_ABOVE[t.comparator]


def _criterion_cases() -> list[tuple[str, str, str | None, float, str]]:
    """(protocol, criterion id, setting option, value, expected status) for every numeric eligibility threshold."""
    out = []
    for pid, t in THRESHOLDS:
        if t.criterion_id is None or t.quantity not in ("age_years", "anc_per_mm3"):
            continue
        opt = t.setting[1] if t.setting else None
        for x, hit in zip((t.threshold - 0.5, t.threshold, t.threshold + 0.5), EXPECTED_BELOW_AT_ABOVE[t.comparator], strict=True):
            out.append((pid, t.criterion_id, opt, x, "met" if hit else "not_met"))
        out.append((pid, t.criterion_id, opt, None, "unknown"))
    return out


CRITERION_CASES = _criterion_cases()


@pytest.mark.parametrize(("pid", "cid", "option", "value", "expected"), CRITERION_CASES)
def test_eligibility_threshold_at_its_edges(pid: str, cid: str, option: str | None, value: float | None,
                                            expected: str) -> None:
    """Age and ANC criteria are met / not met just below, at and just above their threshold, unknown when missing."""
    p = load_protocol(pid)
    c = p.criterion(cid)
    settings = {c.threshold_setting: option} if option and c.threshold_setting else {}
    r = evaluate_eligibility(p, PatientRecord(**{c.concept: value}), settings=settings)
    assert r.result(cid).status == expected
    if value is not None:
        assert r.result(cid).evidence[0].value == value


def test_there_are_generated_edge_cases_for_age_and_both_neutropenia_options() -> None:
    """The generator sees I1, E1 and E5 under both neutropenia options (so a new threshold cannot ship untested)."""
    seen = {(cid, opt) for pid, cid, opt, _, _ in CRITERION_CASES if pid == "immunosep-2025"}
    assert seen == {("I1", None), ("E1", None), ("E5", "registry_1500"), ("E5", "protocol_v1_0_1000")}


@pytest.mark.parametrize("delta", [-1, 0, 1])
@pytest.mark.parametrize("route", ["emergency_department", "hospitalised"])
def test_sepsis3_sofa_levels_at_their_edges(route: str, delta: int) -> None:
    """I5: ED total SOFA and in-hospital SOFA increase are met from the protocol's level (>= 2) upwards."""
    p = load_protocol("immunosep-2025")
    c = p.criterion("I5")
    level = c.ed_min_total_sofa if route == "emergency_department" else c.hospitalised_min_sofa_increase
    assert level is not None
    rec = (
        PatientRecord(admission_source=route, sofa_total=level + delta)
        if route == "emergency_department"
        else PatientRecord(admission_source=route, sofa_admission=5, sofa_total=5 + level + delta)
    )
    assert evaluate_eligibility(p, rec).result("I5").status == ("met" if delta >= 0 else "not_met")


@pytest.mark.parametrize("minutes", [-1, 0, 1])
def test_window_to_first_dose_at_its_edge(minutes: int) -> None:
    """I7: a first dose one minute before 72 h is in time; exactly 72 h and later is not ('<' 72 h)."""
    p = load_protocol("immunosep-2025")
    c = p.criterion("I7")
    assert c.hours is not None
    rec = PatientRecord(sepsis3_onset_time=T0, planned_first_dose_time=T0 + timedelta(hours=c.hours, minutes=minutes))
    assert evaluate_eligibility(p, rec).result("I7").status == ("met" if minutes < 0 else "not_met")


@pytest.mark.parametrize("ferritin", [4419.99, 4420.0, 4420.01])
def test_ferritin_exactly_4420_is_immunoparalysis_not_mals(ferritin: float) -> None:
    """With HLA-DR < 5000, exactly one ImmunoSep endotype rule holds at every ferritin edge; 4420 itself is SII."""
    spec = load_protocol("immunosep-2025").classification
    assert spec is not None
    values = {"ferritin_ng_per_ml": ferritin, "hla_dr_per_monocyte": 4999.0}
    hits = [r.name for r in spec.endotypes if all(compare(values[b.concept], b.comparator, b.threshold) for b in r.all_of)]
    assert hits == (["MALS"] if ferritin > 4420 else ["immunoparalysis"])


def test_meisel_rule_requires_two_consecutive_days_by_quantibrite() -> None:
    """Meisel 2009: mHLA-DR < 8000 AB/c by QuantiBRITE on 2 consecutive days (persistence kept as data)."""
    spec = load_protocol("gm-csf-meisel-2009").classification
    assert spec is not None
    (b,) = spec.endotypes[0].all_of
    assert (b.concept, b.comparator, b.threshold, b.unit, b.methods) == (
        "hla_dr_per_monocyte", "<", 8000.0, "AB/c", ("quantibrite_abc",))
    assert b.persistence_count == 2 and b.persistence_consecutive_days


def test_immunosep_classification_is_the_spec() -> None:
    """MALS > 4420 wins (precedence 1); SII <= 4420 AND HLA-DR < 5000 by QuantiBRITE; 72 h window; reversals."""
    p = load_protocol("immunosep-2025")
    spec = p.classification
    assert spec is not None
    mals, sii = spec.endotypes
    assert (mals.name, mals.precedence, [(b.comparator, b.threshold) for b in mals.all_of]) == ("MALS", 1, [(">", 4420)])
    assert (sii.name, sii.precedence) == ("immunoparalysis", 2)
    assert [(b.concept, b.comparator, b.threshold, b.methods) for b in sii.all_of] == [
        ("ferritin_ng_per_ml", "<=", 4420, ()), ("hla_dr_per_monocyte", "<", 5000, ("quantibrite_abc",))]
    assert spec.otherwise == "unclassified"
    assert (spec.timing.anchor, spec.timing.window_after_anchor_h, spec.timing.max_result_age_h) == (
        "sepsis3_onset", 72, None)
    assert set(p.classification_settings) == {"classification_sample_before_anchor", "classification_max_result_age"}
    mals_rev, sii_rev = spec.reversals
    assert (mals_rev.relative_fall_concept, mals_rev.relative_fall_fraction) == ("ferritin_ng_per_ml", 0.15)
    assert [(b.comparator, b.threshold) for b in sii_rev.all_of] == [(">", 8000), ("<", 4420)]


def test_immunosep_visits_randomisation_and_primary_endpoint_are_the_spec() -> None:
    """Visit days 0…90, 1:1 ratio with unknown strata/blocks, primary SOFA d1 - mean(d2-9) > 1.4, death = 24, LOCF."""
    p = load_protocol("immunosep-2025")
    assert p.visits is not None and p.visits.days == (0, 2, 3, 4, 5, 7, 8, 15, 28, 90)
    assert p.randomisation is not None and p.randomisation.ratio is not None
    assert p.randomisation.ratio.value == {"active": 1, "placebo": 1}
    assert set(p.randomisation.depends_on_settings) == {"randomisation_stratification", "randomisation_block_size"}
    (primary,) = [e for e in p.endpoints if e.role == "primary"]
    assert (primary.baseline_day, primary.first_day, primary.last_day, primary.comparator, primary.threshold,
            primary.death_score, primary.missing) == (1, 2, 9, ">", 1.4, 24, "locf")
    assert p.sap["n_per_arm"].value == 117 and p.sap["total_randomised_target"].value == 280


# ---------------------------------------------------------------------------------------------------------------
# Loader rejections (authoring mistakes a reviewer would catch)
# ---------------------------------------------------------------------------------------------------------------

REJECTIONS: list[tuple[str, str, str, str, str]] = [
    # (name, old, new, expected message fragment, base)
    ("misspelt_key_is_rejected_not_ignored", 'comparator = ">="\nthreshold = 18', 'comparator = ">="\nthreshhold = 18',
     "threshhold", "immunosep"),
    ("duplicate_criterion_id", 'id = "E2"', 'id = "E1"', "unique criterion ids", "immunosep"),
    ("comparator_outside_the_set", 'comparator = ">"\nthreshold = 4420', 'comparator = "=>"\nthreshold = 4420',
     "'>'", "immunosep"),
    ("ferritin_threshold_in_pmol_per_l", 'threshold = 4420\nunit = "ng/mL"\ncitation = "ABS; A2 N001',
     'threshold = 4420\nunit = "pmol/L"\ncitation = "ABS; A2 N001', "canonical unit", "immunosep"),
    ("hla_dr_threshold_by_undeclared_mfi_method", 'threshold = 5000\nunit = "AB/c"\nmethods = ["quantibrite_abc"]',
     'threshold = 5000\nunit = "AB/c"\nmethods = ["mfi"]', "assay-method tag", "immunosep"),
    ("hla_dr_threshold_without_assay_method", 'threshold = 5000\nunit = "AB/c"\nmethods = ["quantibrite_abc"]\n',
     'threshold = 5000\nunit = "AB/c"\n', "assay method", "immunosep"),
    ("mfi_method_declared_for_an_antibodies_per_cell_concept", 'unit = "AB/c"\nconcepts = ["hla_dr_per_monocyte"]',
     'unit = "MFI"\nconcepts = ["hla_dr_per_monocyte"]', "canonical unit", "immunosep"),
    ("arm_for_an_undeclared_endotype", 'endotypes = ["immunoparalysis"]\nkits = { IV = "placebo_iv", SC = "ifng_sc" }',
     'endotypes = ["SIP"]\nkits = { IV = "placebo_iv", SC = "ifng_sc" }', "endotypes declared", "immunosep"),
    ("overlay_naming_an_undeclared_arm", 'allowed_arms = ["mals_anakinra", "mals_placebo"]',
     'allowed_arms = ["mals_anakinra", "mals_pbo"]', "declared arm codes", "immunosep"),
    ("inclusion_naming_an_undeclared_endotype", 'values = ["MALS", "immunoparalysis"]', 'values = ["MALS", "SII"]',
     "endotype names", "immunosep"),
    ("equal_precedence_endotypes_that_can_both_be_true", 'precedence = 2', 'precedence = 1', "cannot both be true",
     "immunosep_sii_ferritin_ge"),
    ("endotype_rule_that_can_never_be_true", '[[classification.endotypes.all_of]]\nanalyte = "hla_dr"',
     '[[classification.endotypes.all_of]]\nanalyte = "ferritin"\nconcept = "ferritin_ng_per_ml"\ncomparator = ">"\n'
     'threshold = 9000\nunit = "ng/mL"\ncitation = "ABS"\nconfidence = "confirmed"\n'
     '[[classification.endotypes.all_of]]\nanalyte = "hla_dr"', "can meet together", "immunosep"),
    ("setting_default_not_among_its_options", 'default = "registry_1500"', 'default = "registry_2000"',
     "default among", "immunosep"),
    ("confidence_outside_the_three_tags", 'citation = "REG; EU; NL (spec §1.1 I1)"\nconfidence = "confirmed"',
     'citation = "REG; EU; NL (spec §1.1 I1)"\nconfidence = "probable"', "'confirmed'", "immunosep"),
    ("dosing_interval_of_zero_hours", 'interval_h = 8\nduration_days = 15\ndepends_on_settings = ["treatment_stopping_rules"]\nrenal',
     'interval_h = 0\nduration_days = 15\ndepends_on_settings = ["treatment_stopping_rules"]\nrenal', "interval_h > 0",
     "immunosep"),
    ("negative_course_duration", 'interval_h = 48\nduration_days = 15\ndepends_on_settings = ["treatment_stopping_rules"]\nschedule_confidence',
     'interval_h = 48\nduration_days = -15\ndepends_on_settings = ["treatment_stopping_rules"]\nschedule_confidence',
     "duration_days > 0", "immunosep"),
    ("exclusion_that_excludes_every_adult", 'id = "E1"\ntext = "Age < 18 years"\nkind = "threshold"\nconcept = "age_years"\ncomparator = "<"',
     'id = "E1"\ntext = "Age < 18 years"\nkind = "threshold"\nconcept = "age_years"\ncomparator = ">="',
     "excludes every value", "immunosep"),
    ("infection_both_included_and_excluded", 'values = ["acute_pyelonephritis", "intra_abdominal"',
     'values = ["CAP", "acute_pyelonephritis", "intra_abdominal"', "both included and excluded", "immunosep"),
    ("reference_to_an_undeclared_setting", 'setting = "steroid_exclusion"', 'setting = "steroid_dose"',
     "setting declared", "immunosep"),
    ("citation_naming_no_declared_source", 'citation = "REG (spec §1.2 E1)"', 'citation = "the registry"',
     "citation naming", "immunosep"),
    ("threshold_outside_the_plausible_range", 'threshold = 4420\nunit = "ng/mL"\ncitation = "ABS; A2 N001',
     'threshold = 4420000\nunit = "ng/mL"\ncitation = "ABS; A2 N001', "plausible range", "immunosep"),
    ("setting_option_without_a_threshold", 'thresholds = { registry_1500 = 1500, protocol_v1_0_1000 = 1000 }',
     'thresholds = { registry_1500 = 1500 }', "one threshold per option", "immunosep"),
    ("double_dummy_arm_missing_a_kit", 'kits = { IV = "anakinra_iv", SC = "placebo_sc" }', 'kits = { IV = "anakinra_iv" }',
     "same kits in every arm", "immunosep"),
    ("dummy_not_mirroring_its_drug", 'volume_ml = 0.5\nroute = "SC"\ninterval_h = 48', 'volume_ml = 0.5\nroute = "SC"\ninterval_h = 24',
     "mirrored regimen", "immunosep"),
    ("kit_holding_a_regimen_of_another_route", 'kits = { IV = "placebo_iv", SC = "ifng_sc" }',
     'kits = { IV = "ifng_sc", SC = "placebo_sc" }', "kit's route", "immunosep"),
    ("threshold_criterion_without_comparator", 'concept = "age_years"\ncomparator = ">="\n', 'concept = "age_years"\n',
     "needs", "immunosep"),
    ("flag_criterion_with_a_threshold", 'flag = "dnr_order"\nmet_when = true', 'flag = "dnr_order"\nmet_when = true\nthreshold = 1',
     "only the keys kind", "immunosep"),
    ("flag_not_declared", 'flag = "stage_iv_malignancy"', 'flag = "stage_4_cancer"', "vocabularies.flags", "immunosep"),
    ("criterion_kind_outside_the_closed_set", 'kind = "sepsis3"', 'kind = "sepsis_3"', "criterion kind from the closed set",
     "immunosep"),
    ("criterion_without_a_kind", 'kind = "sepsis3"\n', "", "required key 'kind'", "immunosep"),
    ("window_criterion_without_hours", 'comparator = "<"\nhours = 72\n', 'comparator = "<"\n', r"add \['hours'\]",
     "immunosep"),
    ("misspelt_key_in_a_criterion_names_the_keys_of_its_kind", 'flag = "dnr_order"\nmet_when = true',
     'flag = "dnr_order"\nmet_wen = true', "kind 'flag' uses", "immunosep"),
    ("placebo_with_an_active_dose", 'drug = "placebo"\nproduct = "normal saline 0.9 %"\nvolume_ml = 20',
     'drug = "placebo"\ndose = 200\ndose_unit = "mg"\nproduct = "normal saline 0.9 %"\nvolume_ml = 20', "placebo",
     "immunosep"),
    ("consecutive_days_with_a_single_sample", "persistence_count = 2", "persistence_count = 1", "persistence_count >= 2",
     "meisel"),
    ("wrong_format_version", 'schema = "immunoguide.protocol/1"', 'schema = "immunoguide.protocol/2"', "format /1",
     "immunosep"),
]


@pytest.mark.parametrize(("name", "old", "new", "match", "base"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_loader_rejects_authoring_mistake(name: str, old: str, new: str, match: str, base: str) -> None:
    """Each authoring mistake fails to load with a CriteriaError that says what was expected and where."""
    text = MEISEL_TEXT if base == "meisel" else IMMUNOSEP_TEXT
    if base == "immunosep_sii_ferritin_ge":
        text = mutate(text, 'comparator = "<="\nthreshold = 4420', 'comparator = ">="\nthreshold = 4420')
    with pytest.raises(CriteriaError, match=match) as info:
        load_protocol_text(mutate(text, old, new), where="edited.toml")
    err = info.value
    assert err.where and err.where.startswith("edited.toml") and err.todo


def test_equal_precedence_is_accepted_when_the_rules_are_mutually_exclusive() -> None:
    """MALS (> 4420) and SII (<= 4420 and …) may share a precedence: they can never both be true."""
    p = load_protocol_text(mutate(IMMUNOSEP_TEXT, "precedence = 2", "precedence = 1"))
    assert p.classification is not None and {r.precedence for r in p.classification.endotypes} == {1}


def test_rejection_names_the_criterion_by_id() -> None:
    """A structural error inside E5 is located as exclusion[4] (E5), not only by index."""
    bad = mutate(IMMUNOSEP_TEXT, 'concept = "anc_per_mm3"\ncomparator = "<"', 'concept = "anc_per_mm3"\ncomparator = "lt"')
    with pytest.raises(CriteriaError) as info:
        load_protocol_text(bad, where="x.toml")
    assert "exclusion[4] (E5).comparator" in str(info.value)


def test_kind_key_errors_name_the_criterion_by_section_and_id() -> None:
    """A key missing for the criterion's kind is reported against the criterion (inclusion I7), with the kind's keys."""
    bad = mutate(IMMUNOSEP_TEXT, 'comparator = "<"\nhours = 72\n', 'comparator = "<"\n')
    with pytest.raises(CriteriaError) as info:
        load_protocol_text(bad, where="x.toml")
    err = info.value
    assert err.where == "x.toml [inclusion I7]"
    assert err.expected == "the keys kind 'window_from_anchor' needs: ['anchor', 'comparator', 'event', 'hours']"


def test_every_criterion_kind_has_an_eligibility_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules check themselves against the protocol format's kinds at first use: a kind without an evaluator fails."""
    from immunoguide.protocols import CRITERION_TYPES, ThresholdCriterion
    from immunoguide.rules import eligibility

    assert set(eligibility._evaluators()) == set(CRITERION_TYPES.values())

    class NewKindCriterion(ThresholdCriterion):
        pass

    monkeypatch.setattr(eligibility, "CRITERION_TYPES", {**CRITERION_TYPES, "new_kind": NewKindCriterion})
    eligibility._evaluators.cache_clear()
    try:
        with pytest.raises(CriteriaError, match="new_kind"):
            eligibility._evaluators()
    finally:
        monkeypatch.undo()
        eligibility._evaluators.cache_clear()


def test_protocols_never_import_the_rules() -> None:
    """The protocol format owns its screening-record vocabulary: no import chain leads from protocols to a rule."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("immunoguide")
    rule_modules = sorted(m for m in graph.modules if m.startswith("immunoguide.rules."))
    assert "immunoguide.rules.eligibility" in rule_modules
    leaks = [m for m in rule_modules if graph.chain_exists(importer="immunoguide.protocols", imported=m, as_packages=True)]
    assert leaks == []


def test_invalid_toml_is_a_criteria_error() -> None:
    """A syntax error is reported as invalid TOML, not as a Python traceback."""
    with pytest.raises(CriteriaError, match="valid TOML"):
        load_protocol_text("schema = ")


def test_unknown_protocol_id_and_wrong_pinned_version() -> None:
    """An unshipped id and a pinned version other than the shipped one raise UnknownCriteriaError."""
    with pytest.raises(UnknownCriteriaError, match="shipped protocol id"):
        load_protocol("immunosep-2024")
    assert load_protocol("immunosep-2025@1.0.0").version == "1.0.0"
    with pytest.raises(UnknownCriteriaError, match="version"):
        load_protocol("immunosep-2025@0.9")


def test_setting_override_must_name_a_declared_setting_and_option() -> None:
    """resolve_settings rejects unknown settings and options with PolicyError."""
    p = load_protocol("immunosep-2025")
    with pytest.raises(PolicyError):
        p.resolve_settings({"neutropenia": "registry_1500"})
    with pytest.raises(PolicyError):
        p.resolve_settings({"neutropenia_anc_threshold": "anc_500"})


# ---------------------------------------------------------------------------------------------------------------
# CLI: show / validate / diff
# ---------------------------------------------------------------------------------------------------------------


def test_show_json_outline_lists_thresholds_and_settings() -> None:
    """`protocol show --json` gives the flat outline: E5 under both options, MALS rule, neutropenia setting."""
    res = runner.invoke(protocol_app, ["show", "immunosep-2025", "--json"])
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    th = out["outline"]["thresholds"]
    assert th["exclusion E5 [neutropenia_anc_threshold=registry_1500]"] == "anc_per_mm3 < 1500 /mm3"
    assert th["exclusion E5 [neutropenia_anc_threshold=protocol_v1_0_1000]"] == "anc_per_mm3 < 1000 /mm3"
    assert out["outline"]["classification"]["MALS"] == "precedence 1: ferritin > 4420 ng/mL"


def test_validate_reports_an_invalid_file_and_exits_3(tmp_path: Path) -> None:
    """A broken file among valid ones is named with its error; the exit code is 3."""
    bad = tmp_path / "bad.toml"
    bad.write_text(mutate(IMMUNOSEP_TEXT, 'id = "E2"', 'id = "E1"'), "utf-8")
    res = runner.invoke(protocol_app, ["validate", "immunosep-2025", str(bad)])
    assert res.exit_code == 3
    assert "OK immunosep-2025" in res.stdout
    assert f"INVALID {bad}" in res.output and "unique criterion ids" in res.output


def test_show_of_an_unknown_id_is_a_usage_error() -> None:
    """`protocol show nope` exits 2 with the list of shipped ids."""
    res = runner.invoke(protocol_app, ["show", "nope"])
    assert res.exit_code == 2 and "immunosep-2025" in res.output


def test_diff_shows_a_changed_threshold_an_added_setting_and_a_changed_regimen(tmp_path: Path) -> None:
    """Lowering the neutropenia default, adding a setting and shortening anakinra appear as ~ / + lines."""
    text = mutate(IMMUNOSEP_TEXT, 'default = "registry_1500"', 'default = "protocol_v1_0_1000"')
    text = mutate(text, "[settings.steroid_exclusion]", '[settings.new_item]\nquestion = "q"\ndefault = "not_applied"\n'
                  'confidence = "unknown"\ncitation = "SPEC"\nwarning = "w"\n'
                  'options.not_applied = { description = "d" }\n\n[settings.steroid_exclusion]')
    text = mutate(text, 'duration_days = 15\ndepends_on_settings = ["treatment_stopping_rules"]\nrenal',
                  'duration_days = 14\ndepends_on_settings = ["treatment_stopping_rules"]\nrenal')
    text = mutate(text, 'interval_h = 8\nduration_days = 15\nmirrors', 'interval_h = 8\nduration_days = 14\nmirrors')
    text = mutate(text, 'version = "1.0.0"', 'version = "1.1.0"')
    new = tmp_path / "immunosep-2025-v1.1.toml"
    new.write_text(text, "utf-8")
    changes = diff_protocols(load_protocol("immunosep-2025"), load_protocol(str(new)))
    keys = {(c.section, c.key, c.change) for c in changes}
    assert ("settings", "neutropenia_anc_threshold", "changed") in keys
    assert ("settings", "new_item", "added") in keys
    assert ("regimens", "anakinra_iv", "changed") in keys
    assert ("protocol", "version", "changed") in keys
    res = runner.invoke(protocol_app, ["diff", "immunosep-2025", str(new)])
    assert res.exit_code == 0
    assert "~ regimens.anakinra_iv: anakinra 200 mg IV q8h x 15 d -> anakinra 200 mg IV q8h x 14 d" in res.stdout
    assert "+ settings.new_item" in res.stdout


def test_immunosep_has_inclusion_i1_to_i8_and_exclusion_e1_to_e9() -> None:
    """The ImmunoSep file carries the registry's I1–I8 and E1–E9 (E8, E9 as not-captured settings)."""
    p = load_protocol("immunosep-2025")
    assert [c.id for c in p.inclusion] == [f"I{i}" for i in range(1, 9)]
    assert [c.id for c in p.exclusion] == [f"E{i}" for i in range(1, 10)]
    assert {c.id for c in p.exclusion if c.kind == "unknown"} == {"E8", "E9"}
