"""`immunoguide score sofa`: JSON lines in, JSON lines out; bad lines get error records, the rest are scored."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from immunoguide.cli import app

runner = CliRunner()


def run(lines: list[str], *args: str):
    res = runner.invoke(app, ["score", "sofa", *args], input="\n".join(lines) + "\n")
    return res, [json.loads(x) for x in res.stdout.splitlines() if x.strip()]


def test_each_line_gets_total_and_six_components() -> None:
    """A valid line yields total and components with the six canonical names."""
    res, out = run(['{"platelets_10e3_per_ul": 45, "gcs": 11, "bilirubin_umol_per_l": 40}'])
    assert res.exit_code == 0
    assert out[0]["total"] == 3 + 2 + 2
    assert set(out[0]["components"]) == {"respiration", "coagulation", "liver", "cardiovascular", "cns", "renal"}
    assert out[0]["criteria"].startswith("sofa1@")


def test_bad_line_gets_an_error_record_naming_field_and_line_and_others_are_scored() -> None:
    """Line 2 is implausible and line 3 is not JSON; lines 1 and 4 are still scored; exit code 1."""
    res, out = run(['{"gcs": 15}', '{"gcs": 16}', "{oops", '{"creatinine_mg_per_dl": 3.6}'])
    assert res.exit_code == 1
    assert [o["line"] for o in out] == [1, 2, 3, 4]
    assert out[1]["error"]["field"] == "gcs" and out[1]["error"]["code"] == "IG-E102"
    assert "line 2" in out[1]["error"]["message"]
    assert out[2]["error"]["code"] == "IG-E100"
    assert out[3]["components"]["renal"] == 3


def test_policy_option_changes_the_score_and_is_reported() -> None:
    """--policy bilirubin_exactly_12=three_points scores bilirubin 12.0 as 3 and echoes the policy."""
    res, out = run(['{"bilirubin_mg_per_dl": 12.0}'], "--policy", "bilirubin_exactly_12=three_points")
    assert res.exit_code == 0 and out[0]["components"]["liver"] == 3
    assert out[0]["policies"]["bilirubin_exactly_12"] == "three_points"


def test_unknown_policy_is_a_usage_error() -> None:
    """A mistyped --policy exits 2 with the allowed names on stderr and scores nothing."""
    res = runner.invoke(app, ["score", "sofa", "--policy", "nope=1"], input='{"gcs": 15}\n')
    assert res.exit_code == 2 and res.stdout == ""


def test_unknown_criteria_is_a_usage_error() -> None:
    """--criteria sofa9 exits 2 and names the shipped criteria."""
    res = runner.invoke(app, ["score", "sofa", "--criteria", "sofa9"], input='{"gcs": 15}\n')
    assert res.exit_code == 2 and "sofa1" in res.stderr


def test_bundled_example_patients_score_as_described() -> None:
    """The example patients shipped with the package score without error; the shock patient scores 23."""
    from importlib import resources

    lines = resources.files("immunoguide.examples").joinpath("patients.jsonl").read_text("utf-8").splitlines()
    res, out = run([json.dumps(json.loads(x)["sofa"]) for x in lines])
    assert res.exit_code == 0 and len(out) == len(lines)
    assert out[2]["total"] == 23  # EX-03: septic shock with multi-organ failure
