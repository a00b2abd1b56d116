"""The clinical-decisions page is generated from the data files and cannot drift from them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.criteria import available_criteria, load_criteria, load_criteria_text
from immunoguide.decisions import NOT_VERIFIED_FLAG, verification_markdown

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


def _rows(lines: list[str]) -> dict[str, str]:
    """Ladder-table rows of a verification section, by ladder name."""
    return {line.split("`")[1]: line for line in lines if line.startswith("| `")}


def test_every_sofa2_ladder_not_verified_against_the_primary_is_flagged_on_the_page() -> None:
    """On the committed page, each SOFA-2 ladder not checked against the JAMA table, and its component, carry the flag."""
    text = PAGE.read_text()
    c = load_criteria("sofa2")
    section = text.split(f"(`{c.label}`)", 1)[1].split("\n## ", 1)[0]
    rows = _rows(section.splitlines())
    unverified = c.ladders_not_verified_against_primary()
    assert unverified, "no unverified ladder: check this test still guards the flag"
    for name in unverified:
        assert NOT_VERIFIED_FLAG in rows[name], name
    for comp in {c.ladders[n].component for n in unverified}:
        assert any(line.startswith(f"| {comp} |") and NOT_VERIFIED_FLAG in line for line in section.splitlines()), comp
    assert f"{len(c.ladders) - len(unverified)} of {len(c.ladders)} ladders are verified" in section


def test_a_ladder_verified_against_the_primary_loses_the_flag_and_the_others_keep_it() -> None:
    """Marking one ladder 'primary' (with the primary reached) drops its flag only; every other ladder stays flagged."""
    text = resources.files("immunoguide.criteria").joinpath("sofa2_ranzani_2025.toml").read_text("utf-8")
    text = text.replace("primary_reached = false", "primary_reached = true", 1)
    text = text.replace(
        '[ladders.cns_gcs.verification]\nstatus = "secondary"', '[ladders.cns_gcs.verification]\nstatus = "primary"'
    )
    c = load_criteria_text(text)
    lines = verification_markdown(c)
    rows = _rows(lines)
    assert NOT_VERIFIED_FLAG not in rows["cns_gcs"] and "checked against the primary" in rows["cns_gcs"]
    assert all(NOT_VERIFIED_FLAG in rows[n] for n in c.ladders if n != "cns_gcs")
    assert f"1 of {len(c.ladders)} ladders are verified" in "\n".join(lines)
