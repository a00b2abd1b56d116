"""Why a score is what it is: the evidence table behind every hourly component, and `cohort explain` in words."""

from __future__ import annotations

from pathlib import Path

import ibis
import pytest
from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.cohort.engine import TimelineTables, hourly_evidence_expr, hourly_sofa_expr
from immunoguide.cohort.explain import explain_hour
from immunoguide.criteria import load_criteria
from immunoguide.criteria.presets import load_preset
from immunoguide.errors import InputError
from immunoguide.rules.sofa import COMPONENTS


@pytest.mark.parametrize("preset", ["immunoguide", "ricu"])
def test_every_hourly_component_has_the_input_that_scored_it(
    mimic3_timeline: Path, mimic3_ricu_timeline: Path, preset: str
) -> None:
    """On every demo stay and hour, the evidence gives each component's points exactly, a record (value, source) for
    every scored component, and no points where the component was missing and imputed."""
    folder = mimic3_ricu_timeline if preset == "ricu" else mimic3_timeline
    res = load_criteria("sofa1").resolve_policies(load_preset(preset).sofa_policies)
    con = ibis.duckdb.connect()
    tabs = TimelineTables.from_parquet(con, str(folder))
    h = hourly_sofa_expr(tabs, policies=res).execute()
    ev = hourly_evidence_expr(tabs, policies=res).execute().set_index(["stay_id", "hour_end", "component"])
    assert len(ev) == 6 * len(h)
    for c in COMPONENTS:
        e = ev.xs(c, level="component").reindex(h.set_index(["stay_id", "hour_end"]).index)
        scored = ~h[f"{c}_imputed"].to_numpy()
        assert (e.points.to_numpy()[scored] == h[c].to_numpy()[scored]).all(), c
        assert e.points.isna().to_numpy()[~scored].all(), c
        assert e.concept.notna().to_numpy()[scored].all(), c
        assert (e.source_hour_end <= e.index.get_level_values("hour_end")).to_numpy()[scored].all(), c


@pytest.fixture(scope="module")
def ricu_run(mimic3_ricu_timeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from immunoguide.cohort.pipeline import run_cohort

    out = tmp_path_factory.mktemp("explain_run")
    import shutil

    shutil.copytree(mimic3_ricu_timeline, out / "timeline")
    run_cohort(out / "timeline", out, protocol=None, preset="ricu")
    return out


def test_explain_names_each_components_value_time_source_and_window_hour(ricu_run: Path) -> None:
    """Stay 201006, hour 55 (ricu reports SOFA 11 there: resp 4, cardio 4, renal 3): the total as its sum, the P/F
    with its ventilation, the norepinephrine rate and item, the urine per day, and the liver as missing, imputed."""
    x = explain_hour(ricu_run, 201006, 55)
    assert x.total == 11 and x.components == {"respiration": 4, "coagulation": 0, "liver": 0, "cardiovascular": 4, "cns": 0, "renal": 3}
    text = x.text
    assert "Total SOFA 11 = respiration 4 + coagulation 0" in text
    assert "PaO2/FiO2 ratio" in text and "ventilation: invasive" in text
    assert "norepinephrine" in text and "inputevents_cv:30120" in text
    assert "urine output" in text and "mL/day" in text
    assert "Liver 0: no value in the window — counted as normal (missing_component = impute_normal)" in text


def test_explain_by_time_and_bad_hours(ricu_run: Path) -> None:
    """A time inside the row gives the same hour; an hour outside the stay is an input error naming the range, and the
    CLI prints it and exits with the bad-data code."""
    assert explain_hour(ricu_run, 201006, "2107-03-26 11:30").hours_since_admission == 55
    with pytest.raises(InputError, match="an hour of stay 201006"):
        explain_hour(ricu_run, 201006, 999)
    res = CliRunner().invoke(app, ["cohort", "explain", "--out", str(ricu_run), "--stay", "201006", "--hour", "999"])
    assert res.exit_code == 3 and "IG-E100" in res.output
