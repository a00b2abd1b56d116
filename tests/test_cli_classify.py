"""`immunoguide classify`: JSON lines in, endotype + reasons out; bad lines get error records, the rest are classified.

Runs the command's own Typer object (``classify_app``) with the shipped protocols (immunosep-2025 by default).
"""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from endotype_specs import immunosep_like
from immunoguide.cli._classify import classify_app, load_classification, record_handler

runner = CliRunner()


def run(records: list[dict[str, Any] | str], *args: str) -> tuple[Any, list[dict[str, Any]]]:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    res = runner.invoke(classify_app, list(args), input="\n".join(lines) + "\n")
    return res, [json.loads(x) for x in res.stdout.splitlines() if x.strip()]


def test_each_line_gets_endotype_reasons_and_protocol() -> None:
    """MALS, immunoparalysis, unclassified and indeterminate lines, each with reasons and the protocol label."""
    res, out = run(
        [
            {"id": "p1", "ferritin": 6000, "ferritin_unit": "ng/mL"},
            {
                "id": "p2",
                "ferritin": "<15",
                "ferritin_unit": "ug/L",
                "hla_dr_per_monocyte": 3000,
                "hla_dr_method": "quantibrite_abc",
            },
            {
                "id": "p3",
                "ferritin": 4420,
                "ferritin_unit": "ng/mL",
                "hla_dr_per_monocyte": 5000,
                "hla_dr_method": "quantibrite_abc",
            },
            {"id": "p4", "ferritin": "GREATER THAN 2000", "ferritin_unit": "ng/mL"},
        ]
    )
    assert res.exit_code == 0, res.output
    assert [o["id"] for o in out] == ["p1", "p2", "p3", "p4"]
    assert [o["endotype"] for o in out] == ["MALS", "immunoparalysis", "unclassified", "indeterminate"]
    assert all(o["protocol"] == "immunosep-2025@1.0.0" for o in out)
    assert out[3]["reasons"][0]["code"] == "censored_undecidable"
    assert out[3]["possible_endotypes"] == ["MALS", "immunoparalysis", "unclassified"]


def test_pmol_per_l_at_the_edge_is_not_mals() -> None:
    """9931.74 pmol/L is exactly 4420 ng/mL: with mHLA-DR 6000 the line is unclassified."""
    _, out = run(
        [
            {
                "ferritin": 9931.74,
                "ferritin_unit": "pmol/L",
                "hla_dr_per_monocyte": 6000,
                "hla_dr_method": "quantibrite_abc",
            }
        ]
    )
    assert out[0]["endotype"] == "unclassified"
    assert out[0]["inputs_used"][0]["value"] == "4420"


def test_bad_lines_get_error_records_naming_field_and_line_and_others_are_classified() -> None:
    """mg/L (line 2), a missing unit (line 3), "DONE" (line 4), an unknown field (line 5) and broken JSON (line 6)
    are rejected with the field named; lines 1 and 7 are still classified; exit code 1."""
    res, out = run(
        [
            {"ferritin": 6000, "ferritin_unit": "ng/mL"},
            {"ferritin": 5, "ferritin_unit": "mg/L"},
            {"ferritin": 800},
            {"ferritin_ng_per_ml": 800, "hla_dr_per_monocyte": "DONE", "hla_dr_method": "quantibrite_abc"},
            {"ferritin_ng_per_ml": 800, "hladr": 3000},
            "{oops",
            {"ferritin_ng_per_ml": 800, "hla_dr_per_monocyte": 3000, "hla_dr_method": "quantibrite_abc"},
        ]
    )
    assert res.exit_code == 1
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5, 6, 7]
    errors = {o["line"]: o["error"] for o in out if "error" in o}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert (errors[2]["code"], errors[2]["field"]) == ("IG-E101", "ferritin")
    assert (errors[3]["code"], errors[3]["field"]) == ("IG-E103", "ferritin_unit")
    assert errors[4]["field"] == "hla_dr_per_monocyte" and errors[4]["got"] == "DONE"
    assert errors[5]["field"] == "hladr"
    assert errors[6]["code"] == "IG-E100"
    for line, err in errors.items():
        assert f"line {line}" in err["message"]
    assert out[0]["endotype"] == "MALS" and out[6]["endotype"] == "immunoparalysis"


def test_mfi_method_gives_indeterminate_with_the_reason() -> None:
    """mHLA-DR measured as MFI is not comparable with AB/c: indeterminate, assay_method_mismatch."""
    _, out = run([{"ferritin_ng_per_ml": 800, "hla_dr_per_monocyte": 3000, "hla_dr_method": "mfi"}])
    assert out[0]["endotype"] == "indeterminate"
    assert "assay_method_mismatch" in [r["code"] for r in out[0]["reasons"]]
    assert out[0]["excluded"][0]["code"] == "assay_method_mismatch"


def test_times_give_ages_turnaround_and_window_checks() -> None:
    """Sample/receipt/result times and `at` give ages and turnaround; a sample 80 h after onset is outside."""
    rec = {
        "ferritin": 6000,
        "ferritin_unit": "ng/mL",
        "ferritin_sample_time": "2025-03-01T08:00:00+01:00",
        "ferritin_receipt_time": "2025-03-01T09:30:00+01:00",
        "ferritin_result_time": "2025-03-01T12:00:00+01:00",
        "anchor_time": "2025-03-01T02:00:00+01:00",
        "at": "2025-03-01T20:00:00+01:00",
    }
    late = dict(
        rec,
        ferritin_sample_time="2025-03-04T10:00:00+01:00",
        ferritin_receipt_time=None,
        ferritin_result_time=None,
        at="2025-03-04T12:00:00+01:00",
    )
    res, out = run([rec, late])
    assert res.exit_code == 0
    assert out[0]["endotype"] == "MALS"
    assert out[0]["ages_h"] == {"ferritin": 12.0} and out[0]["turnaround_h"] == {"ferritin": 4.0}
    assert out[0]["inputs_used"][0]["transport_h"] == 1.5
    assert out[1]["endotype"] == "indeterminate" and out[1]["reasons"][0]["code"] == "outside_window"


def test_bad_time_is_an_error_naming_the_field() -> None:
    """A time that is not ISO 8601 is rejected naming its field."""
    res, out = run([{"ferritin_ng_per_ml": 6000, "at": "yesterday"}])
    assert res.exit_code == 1 and out[0]["error"]["field"] == "at"


def test_other_shipped_protocol_uses_its_own_rules() -> None:
    """--protocol gm-csf-meisel-2009: one mHLA-DR value cannot establish "2 consecutive days" (indeterminate);
    a normal value is not immunosuppressed."""
    res, out = run(
        [
            {"hla_dr_per_monocyte": 6000, "hla_dr_method": "quantibrite_abc"},
            {"hla_dr_per_monocyte": 9000, "hla_dr_method": "quantibrite_abc"},
        ],
        "--protocol",
        "gm-csf-meisel-2009",
    )
    assert res.exit_code == 0
    assert [o["endotype"] for o in out] == ["indeterminate", "not_immunosuppressed"]
    assert out[0]["reasons"][0]["code"] == "persistence_not_established"
    assert out[0]["protocol"] == "gm-csf-meisel-2009@1.0.0"


def test_unknown_protocol_is_a_usage_error() -> None:
    """--protocol nope exits 2, names the shipped protocols on stderr and classifies nothing."""
    res = runner.invoke(classify_app, ["--protocol", "nope"], input='{"ferritin_ng_per_ml": 6000}\n')
    assert res.exit_code == 2 and res.stdout == ""
    assert "immunosep-2025" in res.stderr


def test_shipped_immunosep_classification_matches_the_fixture_mirroring_the_spec() -> None:
    """The shipped immunosep-2025 classification has the thresholds, methods, precedence and timing of the
    fixture built from immunosep-spec.md §2/§5.2 (citations aside)."""
    shipped, label = load_classification("immunosep-2025")
    fixture = immunosep_like()

    def strip(spec: Any) -> Any:
        def crit(c: Any) -> tuple[Any, ...]:
            return (
                c.analyte,
                c.concept,
                c.comparator,
                c.threshold,
                c.unit,
                c.methods,
                c.persistence_count,
                c.persistence_consecutive_days,
            )

        return (
            sorted((r.name, r.precedence, tuple(crit(c) for c in r.all_of)) for r in spec.endotypes),
            spec.otherwise,
            (
                spec.timing.anchor,
                spec.timing.window_before_anchor_h,
                spec.timing.window_after_anchor_h,
                spec.timing.max_result_age_h,
            ),
            sorted(
                (v.endotype, v.relative_fall_concept, v.relative_fall_fraction, tuple(crit(c) for c in v.all_of))
                for v in spec.reversals
            ),
        )

    assert label == "immunosep-2025@1.0.0"
    assert strip(shipped) == strip(fixture)


def test_record_handler_works_with_any_spec() -> None:
    """The handler classifies a flat record under a spec given directly (the service layer reuses it)."""
    handle = record_handler(immunosep_like(), "fixture@1")
    out = handle({"id": 7, "ferritin_ng_per_ml": ">5000"}, "line 1")
    assert (out["id"], out["endotype"], out["protocol"]) == (7, "MALS", "fixture@1")
