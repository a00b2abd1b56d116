"""The input edge refuses silent wrong answers: every case of issue 15's list gets a coded error for its line, and the
batch goes on (``immunoguide classify``, ``immunoguide score sofa``); conversions near the 4420 ng/mL cut-off are
exact; booleans are never numbers.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.cli._classify import classify_app
from immunoguide.errors import (
    ConflictingInputError,
    DuplicateFieldError,
    ImplausibleValueError,
    InputError,
    InputTooLargeError,
    WrongTypeError,
)
from immunoguide.jsonsafe import loads_strict
from immunoguide.protocols import load_protocol
from immunoguide.rules.endotype import classify_endotype, pending_from_record, results_from_record
from immunoguide.rules.measurements import decide, measure
from immunoguide.rules.sofa import SofaInputs, score_sofa
from immunoguide.units import concept, to_canonical, to_canonical_exact

runner = CliRunner()
SPEC = load_protocol("immunosep-2025").classification
HLA = {"hla_dr_per_monocyte": 3000, "hla_dr_method": "quantibrite_abc"}


def classify_lines(lines: list[str]) -> tuple[int, list[dict[str, Any]]]:
    res = runner.invoke(classify_app, [], input="\n".join(lines) + "\n")
    return res.exit_code, [json.loads(x) for x in res.stdout.splitlines() if x.strip()]


def test_stated_unit_on_a_canonical_field_is_refused_not_ignored() -> None:
    """``ferritin_ng_per_ml: 9000`` with ``ferritin_unit: pmol/L`` is a conflict (9000 pmol/L is ~4005 ng/mL), not MALS."""
    code, out = classify_lines([json.dumps({"ferritin_ng_per_ml": 9000, "ferritin_unit": "pmol/L"}),
                                json.dumps({"ferritin_ng_per_ml": 9000, "ferritin_unit": "ng/mL"})])
    assert out[0]["error"]["code"] == ConflictingInputError.code
    assert out[0]["error"]["field"] == "ferritin_unit"
    assert out[1]["endotype"] == "MALS"  # the batch goes on; the matching unit is accepted
    assert code == 1


def test_duplicate_key_is_refused_instead_of_keeping_the_last_value() -> None:
    """``{"ferritin": 100, …, "ferritin": 6100}`` is refused (IG-E110), never classified MALS from the last value."""
    code, out = classify_lines(['{"ferritin": 100, "ferritin_unit": "ng/mL", "ferritin": 6100}'])
    assert out[0]["error"]["code"] == DuplicateFieldError.code == "IG-E110"
    assert out[0]["error"]["field"] == "ferritin"


@pytest.mark.parametrize("text", ["9" * 400, "9" * 4301, "1" + "0" * 19])
def test_huge_integers_are_refused_per_line_and_the_batch_continues(text: str) -> None:
    """A 400-digit, a > 4300-digit and a 20-digit integer are refused with IG-E112; the next line is classified."""
    code, out = classify_lines([f'{{"ferritin": {text}, "ferritin_unit": "ng/mL"}}',
                                '{"ferritin": 5000, "ferritin_unit": "ng/mL"}'])
    assert out[0]["error"]["code"] == InputTooLargeError.code == "IG-E112"
    assert out[1]["endotype"] == "MALS"


def test_arrays_nested_100000_deep_are_refused_without_a_traceback() -> None:
    """A 100 000-deep array is refused for its line (IG-E112); the decoder never recurses."""
    code, out = classify_lines(["[" * 100_000 + "]" * 100_000, '{"ferritin": 5000, "ferritin_unit": "ng/mL"}'])
    assert out[0]["error"]["code"] == "IG-E112"
    assert out[1]["endotype"] == "MALS"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(literal: str) -> None:
    """JSON has no NaN/Infinity and 1e400 overflows a double: each is an input error, never a value."""
    with pytest.raises(InputError):
        loads_strict(f'{{"ferritin": {literal}}}')


def test_boolean_ferritin_is_refused_as_a_wrong_type() -> None:
    """``ferritin: true`` is not a result (IG-E111)."""
    code, out = classify_lines(['{"ferritin": true, "ferritin_unit": "ng/mL"}'])
    assert out[0]["error"]["code"] == WrongTypeError.code == "IG-E111"


def test_boolean_platelets_are_not_scored_as_zero() -> None:
    """``platelets_10e3_per_ul: false`` used to score coagulation 4; it is refused (IG-E111) on the CLI and in the rule."""
    res = runner.invoke(app, ["score", "sofa"], input='{"platelets_10e3_per_ul": false}\n{"platelets_10e3_per_ul": 45}\n')
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert out[0]["error"]["code"] == "IG-E111"
    assert out[1]["components"]["coagulation"] == 3
    with pytest.raises(WrongTypeError):
        SofaInputs.from_record({"platelets_10e3_per_ul": False})
    with pytest.raises(WrongTypeError):
        SofaInputs.from_record({"respiratory_support": 1})


def test_sample_dated_year_0001_is_refused() -> None:
    """A sample time in year 0001 is implausible (IG-E102), never classified."""
    code, out = classify_lines([json.dumps({"ferritin": 6000, "ferritin_unit": "ng/mL",
                                            "ferritin_sample_time": "0001-01-01T00:00:00+00:00"})])
    assert out[0]["error"]["code"] == ImplausibleValueError.code
    assert out[0]["error"]["field"] == "ferritin_sample_time"


@pytest.mark.parametrize(
    ("value", "unit", "endotype"),
    [
        (9931.75, "pmol/L", "MALS"),            # = 4420.0045 ng/mL (> 4420)
        (9931.74, "pmol/L", "immunoparalysis"),  # = 4420 ng/mL exactly (not > 4420)
        (4420.0004, "ug/L", "MALS"),
        (4420, "ug/L", "immunoparalysis"),
        ("9931.75", "pmol/L", "MALS"),
        (">9931.74", "pmol/L", "MALS"),
    ],
)
def test_unit_conversion_never_moves_a_value_across_the_4420_cut_off(value: Any, unit: str, endotype: str) -> None:
    """Ferritin converted from pmol/L or µg/L is compared with 4420 ng/mL exactly (stated decimal × exact factor)."""
    results, _, _ = results_from_record({"ferritin": value, "ferritin_unit": unit, **HLA}, SPEC)
    res = classify_endotype(SPEC, results, anchor_time=None, at=None, protocol_label="immunosep-2025")
    assert res.endotype == endotype


def test_exact_conversion_is_the_stated_decimal_times_the_stated_factor() -> None:
    """9931.75 pmol/L is exactly 9931.75 / 2.247 ng/mL; the float is that rational rounded once."""
    q = to_canonical_exact("ferritin_ng_per_ml", 9931.75, "pmol/L")
    assert q == Fraction(Decimal("9931.75")) / Fraction(Decimal("2.247"))
    assert to_canonical("ferritin_ng_per_ml", 9931.75, "pmol/L") == float(q)
    assert decide(measure("ferritin_ng_per_ml", 9931.74, "pmol/L"), ">", 4420) is False
    assert concept("ferritin_ng_per_ml").exact["pmol/L"] == Fraction(1000, 2247)


def test_sample_time_without_value_is_reported_pending_not_ignored() -> None:
    """``hla_dr_sample_time`` without a value is a pending sample; a result time without a value is refused."""
    pend = pending_from_record({"ferritin": 1000, "ferritin_unit": "ng/mL",
                                "hla_dr_sample_time": "2025-03-01T08:00:00+00:00", "hla_dr_source": "central-lab-GR"},
                               SPEC)
    assert [(p.analyte, p.source) for p in pend] == [("hla_dr", "central-lab-GR")]
    with pytest.raises(InputError):
        pending_from_record({"hla_dr_sample_time": "2025-03-01T08:00:00+00:00",
                             "hla_dr_result_time": "2025-03-01T12:00:00+00:00"}, SPEC)


def test_sofa_scoring_unchanged_for_valid_numbers() -> None:
    """Valid numbers still score as before (45 x10^3/µL platelets: coagulation 3)."""
    assert score_sofa(SofaInputs.from_record({"platelets_10e3_per_ul": 45})).components["coagulation"] == 3
