"""Clinical fidelity on real data: each reference preset against ricu 0.6.3's output on the MIMIC-III demo, with
every difference explained (immunoguide.cohort.validation) and the generated page kept in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from immunoguide.cohort.validation import validate_against_ricu, validation_markdown
from immunoguide.rules.sofa import COMPONENTS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "reference" / "ricu-0.6.3-mimic-iii-demo"
PAGE = REPO / "docs" / "validation.md"


@pytest.fixture(scope="module")
def results(mimic3_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    res = validate_against_ricu(mimic3_demo_dir, REFERENCE, workdir=tmp_path_factory.mktemp("validation"))
    return {r.preset: r for r in res}


def test_ricu_preset_reproduces_ricu_hourly_sofa_on_every_in_stay_hour(results: dict) -> None:
    """ricu preset on the MIMIC-III demo: total SOFA and each component equal to ricu's on all 14,565 in-stay hours
    (the issue's target is >= 98 %; this pins today's agreement so that it cannot silently fall)."""
    r = results["ricu"]
    assert r.hours == 14_565
    assert r.total_equal == r.hours
    assert all(r.component_equal[c] == r.hours for c in COMPONENTS)


def test_ricu_preset_finds_ricus_sepsis3_onsets_at_the_same_hours(results: dict) -> None:
    """The same 76 stays with a Sepsis-3 onset, each at ricu's hour, and the same 969 suspected infections."""
    s = results["ricu"].sepsis3
    assert (s["ricu_onsets"], s["our_onsets"], s["both"], s["same_hour"]) == (76, 76, 76, 76)
    assert results["ricu"].suspected_infection == (969, 969, 969)


def test_ricu_preset_inputs_match_ricus_hourly_inputs(results: dict) -> None:
    """Inputs first: platelets, bilirubin, creatinine, P/F, GCS and ventilation equal ricu's on every hour; MAP on all
    but the 4 hours where ricu charted 0 mmHg, which immunoguide's plausibility range refuses (data_quality)."""
    inputs = results["ricu"].inputs
    for name in ("plt", "bili", "crea", "gcs", "vent_ind"):
        eq, total = inputs[name]
        assert eq == total, name
    eq, total = inputs["map"]
    assert total - eq == 4


@pytest.mark.parametrize("preset", ["immunoguide", "mimic-code"])
def test_every_difference_of_the_other_presets_is_explained_by_a_named_choice(results: dict, preset: str) -> None:
    """No unexplained residue: every differing hour and stay is attributed to a documented choice or to the source
    profile, and the attributed hours add up to the differing hours."""
    r = results[preset]
    assert r.residue_hours == 0
    assert sum(c.hours for c in r.causes) == r.hours - r.total_equal > 0
    for comp in COMPONENTS:
        assert sum(c.per_component.get(comp, 0) for c in r.causes) == r.hours - r.component_equal[comp]
    assert sum(c.stays_sepsis3 for c in r.causes) == r.sepsis3["stays"] - r.sepsis3["agree"]
    assert all(c.category != "residue" for c in r.causes)


def test_validation_page_is_generated_from_the_current_code(results: dict) -> None:
    """docs/validation.md is exactly what `immunoguide docs validation` prints (regenerate it if not)."""
    page = validation_markdown(
        [results[p] for p in ("ricu", "immunoguide", "mimic-code")],
        data="../shared/data/mimic-iii-demo",
        reference="tests/reference/ricu-0.6.3-mimic-iii-demo",
    )
    assert PAGE.read_text() == page, (
        "run: immunoguide docs validation --mimic3 ../shared/data/mimic-iii-demo "
        "--reference tests/reference/ricu-0.6.3-mimic-iii-demo > docs/validation.md"
    )
