"""The clinical-decisions page is generated from the data files and cannot drift from them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.criteria import available_criteria, load_criteria

PAGE = Path(__file__).resolve().parents[1] / "docs" / "clinical-decisions.md"


def test_committed_page_equals_the_generated_page() -> None:
    """docs/clinical-decisions.md is exactly what `immunoguide docs decisions` prints (regenerate it if not)."""
    res = CliRunner().invoke(app, ["docs", "decisions"])
    assert res.exit_code == 0
    assert PAGE.read_text() == res.stdout, "run: immunoguide docs decisions > docs/clinical-decisions.md"


def test_every_policy_of_every_criteria_file_is_on_the_page() -> None:
    """Each SOFA policy appears with its default."""
    text = PAGE.read_text()
    for cid in available_criteria():
        for p in load_criteria(cid).policies.values():
            assert f"`{p.name}`" in text and f"`{p.default}`" in text
