"""`immunoguide demo`: the whole story on a small synthetic population, reproducible from its seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from immunoguide.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _fixed_generation_stamp() -> Any:
    """Reports stamp their generation time; SOURCE_DATE_EPOCH fixes it so that re-runs are byte-identical."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "1767225600")
        yield


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--stays", "400", "--seed", "7"])
    assert res.exit_code == 0, res.output
    return out


def test_demo_writes_store_cohort_and_both_reports(demo_dir: Path) -> None:
    """The store, the cohort tables, the blinded and the DSMB report (HTML + PDF with figures) all exist."""
    for rel in ("demo.db", "cohort/sofa_hourly.parquet", "cohort/sepsis3.parquet", "cohort/screening.parquet",
                "report/report.html", "report/report.pdf", "report_dsmb/report_dsmb.html", "report_dsmb/report_dsmb.pdf"):
        assert (demo_dir / rel).exists(), rel
    assert list((demo_dir / "report").rglob("*.svg")), "report figures"


def test_demo_enrols_through_the_trial_store_and_keeps_the_audit_trail(demo_dir: Path) -> None:
    """Patients are randomised into both arms and strata and the hash-chained audit trail verifies."""
    s = json.loads((demo_dir / "demo_summary.json").read_text())
    assert s["audit_intact"] is True
    assert s["randomised"].get("arm:active", 0) > 0 and s["randomised"].get("arm:placebo", 0) > 0
    assert s["screened_in_trial"] >= sum(v for k, v in s["randomised"].items() if k.startswith("arm:"))


def test_summary_numbers_match_the_dsmb_report(demo_dir: Path) -> None:
    """The primary-endpoint counts printed by the demo are those of the DSMB report's summary."""
    s = json.loads((demo_dir / "demo_summary.json").read_text())
    report_summary = json.loads(next((demo_dir / "report_dsmb").glob("*summary*.json")).read_text())
    assert report_summary["primary"]["responders"] == s["primary"]["responders"]
    assert report_summary["primary"]["n"] == s["primary"]["n"]


def test_same_seed_gives_the_same_report(demo_dir: Path, tmp_path: Path) -> None:
    """Re-running with the same seed into the same folder reproduces the reports byte for byte."""
    before = {p: (demo_dir / p).read_bytes() for p in ("report/report.html", "report/report.pdf", "report_dsmb/report_dsmb.pdf")}
    keep = tmp_path / "population"
    shutil.copytree(demo_dir / "population", keep)
    res = CliRunner().invoke(app, ["demo", "--out", str(demo_dir), "--stays", "400", "--seed", "7"])
    assert res.exit_code == 0, res.output
    for p, content in before.items():
        assert (demo_dir / p).read_bytes() == content, p


def test_demo_store_has_graded_safety_labs_a_stratum_switch_and_runs_on_its_clock(demo_dir: Path) -> None:
    """The demo enters structured safety labs (CTCAE-graded), shows a stratum-switch alert, codes AEs to CTCAE terms
    and sets the store's clock to its simulated time (the dashboard's study days are the data's)."""
    from sqlalchemy import func, select

    from immunoguide.trial import Actor, TrialStore
    from immunoguide.trial.clock import read_store_clock
    from immunoguide.trial.keys import load_key
    from immunoguide.trial.models import AdverseEvent, AdverseEventCoding, SafetyLabResult
    from immunoguide.trial.monitoring import alerts_view

    key = load_key(environ={"IMMUNOGUIDE_TRIAL_KEY_FILE": str(demo_dir / "trial.key")})  # the demo store's own key
    st = TrialStore(f"sqlite:///{demo_dir / 'demo.db'}", key=key)
    try:
        with st.session() as s:
            graded = s.execute(select(func.count()).select_from(SafetyLabResult)
                               .where(SafetyLabResult.grade.is_not(None))).scalar_one()
            n_ae = s.execute(select(func.count()).select_from(AdverseEvent)).scalar_one()
            n_coded = s.execute(select(func.count()).select_from(AdverseEventCoding)).scalar_one()
            clock = read_store_clock(s)
            alerts = alerts_view(s, actor=Actor("stat", "statistician"), now=clock.now(clock.simulated_epoch))
    finally:
        st.dispose()
    assert graded > 0 and n_ae == n_coded > 0
    assert clock.mode == "simulated" and clock.frozen and clock.simulated_epoch.year > 2100
    assert any(a["code"] == "stratum_switch" for a in alerts["alerts"])


def test_dsmb_report_states_the_signal_rule_and_the_alerts(demo_dir: Path) -> None:
    """The DSMB report prints the DSMB statistical rule with the comparisons and the stratum-switch alert."""
    html = (demo_dir / "report_dsmb" / "report_dsmb.html").read_text()
    assert "DSMB statistical rule" in html and "Newcombe interval" in html and "P(drug &gt; placebo)" in html
    assert "stratum switch" in html and "Safety laboratory results (CTCAE v5.0 grade, patients)" in html
