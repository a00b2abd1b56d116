"""`immunoguide demo`: the whole story on a small synthetic population, reproducible from its seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immunoguide.cli import app

pytestmark = pytest.mark.slow


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
