"""Reference presets as data (criteria/presets): complete, cited, applied by every entry point, and honest about which
source reading they need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.criteria import load_criteria
from immunoguide.criteria.presets import available_presets, load_preset, load_preset_text
from immunoguide.errors import CriteriaError, InputError, PolicyError
from immunoguide.rules.sepsis3 import load_sepsis3_criteria

PRESET_DIR = Path(__file__).resolve().parents[1] / "src" / "immunoguide" / "criteria" / "presets"


def test_the_shipped_presets_are_immunoguide_ricu_and_mimic_code() -> None:
    """Three presets ship, each with a version and the reference it reproduces."""
    assert available_presets() == ["immunoguide", "mimic-code", "ricu"]
    assert load_preset("ricu").reference.startswith("eth-mds/ricu 0.6.3")
    assert "MIT-LCP/mimic-code" in load_preset("mimic-code").reference


@pytest.mark.parametrize("preset", ["immunoguide", "ricu", "mimic-code"])
def test_every_sofa_and_sepsis3_policy_is_set_and_cited(preset: str) -> None:
    """A preset leaves no policy to a default by accident, and cites the reference's own source for each choice."""
    p = load_preset(preset)
    assert set(p.sofa_policies) == set(load_criteria("sofa1").policies)
    assert set(p.sepsis3_policies) == set(load_sepsis3_criteria().policies)
    assert all(len(c) > 20 for c in p.citations.values())


def test_the_immunoguide_preset_names_todays_defaults() -> None:
    """The immunoguide preset equals the criteria files' defaults, so the two cannot drift apart."""
    p = load_preset("immunoguide")
    assert dict(p.sofa_policies) == load_criteria("sofa1").resolve_policies()
    assert dict(p.sepsis3_policies) == load_sepsis3_criteria().resolve_policies()


def test_a_preset_missing_a_policy_or_a_citation_or_naming_an_unknown_option_is_refused() -> None:
    """The loader refuses an incomplete preset, an uncited choice and an option the criteria do not declare."""
    text = (PRESET_DIR / "ricu.toml").read_text()
    with pytest.raises(CriteriaError, match="every sofa1 policy"):
        load_preset_text(text.replace("[sofa1.map_from_sbp_dbp]", "[sofa1_unused]"))
    cited = 'citation = "ricu R/callback-sofa.R sofa_renal: cre >= 5 -> 4"'
    with pytest.raises(CriteriaError, match="citation"):
        load_preset_text(text.replace(cited, 'citation = ""'))
    with pytest.raises(CriteriaError, match="an option of sofa1 policy 'rolling_window'"):
        load_preset_text(text.replace('option = "25_rows"', 'option = "26_rows"'))


def test_the_ricu_preset_refuses_a_source_it_defines_no_reading_for() -> None:
    """ricu reads MIMIC-III and MIMIC-IV its own way; a long-format or FHIR source is refused, not half-translated."""
    p = load_preset("ricu")
    assert (p.source_profile("mimic3"), p.source_profile("mimic4")) == ("ricu", "ricu")
    with pytest.raises(PolicyError, match="defines a reading for"):
        p.source_profile("fhir")


def test_score_sofa_applies_the_preset_and_lets_a_policy_override_it() -> None:
    """PaO2 70 without FiO2: unscored by default, 1 point under ricu (room air), unscored again when overridden."""
    line = json.dumps({"pao2_mmhg": 70}) + "\n"

    def resp(*args: str) -> object:
        out = json.loads(CliRunner().invoke(app, ["score", "sofa", *args], input=line).stdout)
        return None if "respiration" in out["missing_components"] else out["components"]["respiration"]

    assert resp() is None
    assert resp("--preset", "ricu") == 1
    assert resp("--preset", "ricu", "--policy", "fio2_missing=unscored") is None
    res = CliRunner().invoke(app, ["score", "sofa", "--criteria", "sofa2", "--preset", "ricu"], input=line)
    assert res.exit_code != 0 and "presets set the SOFA-1 policies" in res.output


def test_a_timeline_read_the_immunoguide_way_is_refused_under_the_ricu_preset(mimic3_timeline: Path, tmp_path: Path) -> None:
    """run_cohort checks adapter.json: ricu's hourly rules on a timeline not read with ricu's profile would mislead."""
    from immunoguide.cohort.pipeline import run_cohort

    with pytest.raises(InputError, match="read with the 'ricu' source profile"):
        run_cohort(mimic3_timeline, tmp_path, protocol=None, preset="ricu")


def test_cohort_run_with_the_ricu_preset_records_it_and_scores_like_ricu(mimic3_ricu_timeline: Path, tmp_path: Path) -> None:
    """The run's metadata names the preset and every policy it set; Sepsis-3 finds ricu's 76 onsets."""
    import pandas as pd

    from immunoguide.cohort.pipeline import run_cohort

    run = run_cohort(mimic3_ricu_timeline, tmp_path, protocol=None, preset="ricu", sepsis3_policies={"si_window": "first"})
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["preset"]["id"] == "ricu" and meta["sofa_policies"]["hourly_grid"] == "icu_admission_hours"
    assert meta["adapter"]["choices"]["profile"] == "ricu"
    s3 = pd.read_parquet(tmp_path / "sepsis3.parquet")
    assert (s3.status == "onset").sum() == 76 and run.rows["sepsis3"] == 136
