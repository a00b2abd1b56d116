"""Immune endotype classification (issue 3 part B): censored values, units, thresholds, timing, persistence,
precedence, daily re-classification and reversal.

Thresholds come from the specs in ``endotype_specs.py`` (mirroring immunosep-spec.md §2, §5.2, §8); boundary
cases are generated from the specs' criteria, so a new threshold cannot ship untested.
"""

from __future__ import annotations

import math
import operator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endotype_specs import immunosep_like, meisel_like, registry_wording
from immunoguide.errors import ImplausibleValueError, InputError, MissingInputError, UnitError
from immunoguide.protocols import load_protocol
from immunoguide.protocols.model import ClassificationSpec
from immunoguide.rules.endotype import (
    INDETERMINATE,
    REASON_CODES,
    BiomarkerResult,
    EndotypeResult,
    classify_endotype,
    reclassify_daily,
    results_from_record,
)
from immunoguide.rules.measurements import CensoredValue, decide, measure, parse_censored
from immunoguide.units import concept

ONSET = datetime(2025, 3, 1, 8, 0)  # Sepsis-3 onset (the ImmunoSep anchor)
QB = "quantibrite_abc"


def ferritin(value: float | str, unit: str = "ng/mL", *, hours: float | None = 2.0, **kw: object) -> BiomarkerResult:
    """A ferritin result sampled ``hours`` after onset."""
    t = None if hours is None else ONSET + timedelta(hours=hours)
    return BiomarkerResult.measured("ferritin_ng_per_ml", value, unit, sample_time=t, **kw)  # type: ignore[arg-type]


def hla_dr(value: float | str, method: str | None = QB, *, hours: float | None = 2.0, **kw: object) -> BiomarkerResult:
    """An mHLA-DR result (AB/c) sampled ``hours`` after onset."""
    t = None if hours is None else ONSET + timedelta(hours=hours)
    return BiomarkerResult.measured(
        "hla_dr_per_monocyte",
        value,
        "AB/c",
        method=method,
        sample_time=t,
        **kw,  # type: ignore[arg-type]
    )


def classify(
    *results: BiomarkerResult,
    spec: ClassificationSpec | None = None,
    anchor: datetime | None = ONSET,
    at: datetime | None = ONSET + timedelta(hours=48),
) -> EndotypeResult:
    return classify_endotype(
        spec or immunosep_like(), list(results), anchor_time=anchor, at=at, protocol_label="fixture@test"
    )


# ---------------------------------------------------------------------------------------------------------------
# censored-value parser and comparison


@pytest.mark.parametrize(
    ("text", "lower", "upper", "lower_inclusive", "upper_inclusive"),
    [
        ("GREATER THAN 2000", 2000.0, None, False, False),
        (">2000", 2000.0, None, False, False),
        (">= 2000", 2000.0, None, True, False),
        ("≥2000", 2000.0, None, True, False),
        ("<15", None, 15.0, False, False),
        ("LESS THAN 15", None, 15.0, False, False),
        ("less than or equal to 15", None, 15.0, False, True),
        ("<= 15", None, 15.0, False, True),
        ("2,000", 2000.0, 2000.0, True, True),
        ("12,500.5", 12500.5, 12500.5, True, True),
        (" 302 ", 302.0, 302.0, True, True),
        ("AT LEAST 5", 5.0, None, True, False),
    ],
)
def test_censored_text_becomes_an_interval_of_possible_values(
    text: str, lower: float | None, upper: float | None, lower_inclusive: bool, upper_inclusive: bool
) -> None:
    """Laboratory texts such as "GREATER THAN 2000" or "<15" parse to the interval of possible true values."""
    v = parse_censored(text)
    assert (v.lower, v.upper, v.lower_inclusive, v.upper_inclusive) == (lower, upper, lower_inclusive, upper_inclusive)
    assert v.text == text


@pytest.mark.parametrize(
    "raw", ["DONE", "see comment", "", "  ", "GREATER THAN", ">", "2,5", "2000 ng/mL", "1e3", True]
)
def test_placeholders_and_malformed_values_are_rejected_with_a_clear_error(raw: object) -> None:
    """Anything that is not a number or a censored number ("DONE", "see comment", "2,5") is an InputError."""
    with pytest.raises(InputError) as err:
        parse_censored(raw, where="line 1, field ferritin")  # type: ignore[arg-type]
    assert err.value.where == "line 1, field ferritin"
    assert "expected" in str(err.value)


def test_decimal_comma_error_says_to_use_a_point() -> None:
    """A decimal comma ("2,5") is refused with advice, never read as 25 or 2500."""
    with pytest.raises(InputError, match="decimals with a point"):
        parse_censored("2,5")


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(raw: float) -> None:
    """NaN and infinity are not measurements."""
    with pytest.raises(InputError):
        parse_censored(raw)


@given(
    value=st.floats(min_value=0, max_value=1e5, allow_nan=False),
    threshold=st.floats(min_value=0, max_value=1e5, allow_nan=False),
    comparator=st.sampled_from([">", ">=", "<", "<="]),
)
def test_exact_values_always_decide_like_plain_comparison(value: float, threshold: float, comparator: str) -> None:
    """An uncensored value is never undecidable and compares exactly like Python's operators."""
    ops = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
    assert decide(CensoredValue.exact(value), comparator, threshold) is ops[comparator](value, threshold)


@given(
    bound=st.integers(min_value=0, max_value=100),
    side=st.sampled_from(["lower", "upper"]),
    inclusive=st.booleans(),
    threshold=st.integers(min_value=0, max_value=100),
    comparator=st.sampled_from([">", ">=", "<", "<="]),
)
def test_censored_decision_is_true_only_if_every_possible_value_agrees(
    bound: int, side: str, inclusive: bool, threshold: int, comparator: str
) -> None:
    """decide() says True/False only when all possible values agree, None when some satisfy and some do not."""
    ops = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
    if side == "lower":
        v = CensoredValue(float(bound), None, inclusive, False, "x")
    else:
        v = CensoredValue(None, float(bound), False, inclusive, "x")
    probes = [
        p
        for p in (bound, threshold, threshold - 0.5, threshold + 0.5, bound - 0.5, bound + 0.5, -1e9, 1e9)
        if v.contains(p)
    ]
    truths = {ops[comparator](p, threshold) for p in probes}
    got = decide(v, comparator, threshold)
    if got is None:
        assert truths == {True, False}
    else:
        assert truths == {got}


# ---------------------------------------------------------------------------------------------------------------
# units


def test_ferritin_9931_74_pmol_per_l_is_exactly_4420_ng_per_ml_and_not_mals() -> None:
    """4420 ng/mL = 9931.74 pmol/L (1 ng/mL = 2.247 pmol/L): the edge stays exact after conversion, so not MALS."""
    v = measure("ferritin_ng_per_ml", 9931.74, "pmol/L")
    assert v.value == 4420.0
    r = classify(ferritin(9931.74, "pmol/L"), hla_dr(3000))
    assert r.endotype == "immunoparalysis"


def test_ferritin_just_above_the_edge_in_pmol_per_l_is_mals() -> None:
    """9931.77 pmol/L (4420.01 ng/mL) is above 4420 ng/mL: MALS."""
    assert classify(ferritin(9931.77, "pmol/L")).endotype == "MALS"


@pytest.mark.parametrize("unit", ["ug/L", "µg/L", "mcg/L", "ng/ml", "NG/ML"])
def test_ferritin_in_ug_per_l_counts_as_ng_per_ml(unit: str) -> None:
    """µg/L is the same as ng/mL (any spelling): 4420.01 µg/L is MALS, 4420 µg/L is not."""
    assert classify(ferritin(4420.01, unit)).endotype == "MALS"
    assert classify(ferritin(4420, unit), hla_dr(6000)).endotype == "unclassified"


@pytest.mark.parametrize("unit", ["mg/L", "mg/dL", "pg/mL", "", "AB/c"])
def test_ferritin_in_another_unit_is_a_unit_error(unit: str) -> None:
    """Only ng/mL, µg/L and pmol/L are accepted for ferritin; mg/L (and anything else) is an error."""
    with pytest.raises(UnitError):
        ferritin(5, unit)


def test_censored_ferritin_in_pmol_per_l_converts_its_bound() -> None:
    """A censored pmol/L value converts its bound: ">11235 pmol/L" is ">5000 ng/mL" and decides MALS."""
    r = classify(ferritin(">11235", "pmol/L"))
    assert r.endotype == "MALS"
    assert r.inputs_used[0].value == ">5000"


@pytest.mark.parametrize("raw", [600000, ">600000", "<0", -1])
def test_implausible_ferritin_is_rejected(raw: float | str) -> None:
    """Values outside the concept's plausibility range (0–500000 ng/mL), or intervals holding none, are rejected."""
    with pytest.raises(ImplausibleValueError):
        ferritin(raw)


# ---------------------------------------------------------------------------------------------------------------
# thresholds (named clinical cases, then cases generated from the spec)


def test_ferritin_exactly_4420_is_not_mals() -> None:
    """MALS needs ferritin strictly above 4420 ng/mL; exactly 4420 with normal mHLA-DR is unclassified."""
    r = classify(ferritin(4420), hla_dr(6000))
    assert r.endotype == "unclassified"
    assert r.reason_codes == ("criteria_not_met", "criteria_not_met", "otherwise")


def test_ferritin_4420_01_is_mals() -> None:
    """Ferritin 4420.01 ng/mL is above 4420: MALS, whatever mHLA-DR is."""
    r = classify(ferritin(4420.01))
    assert r.endotype == "MALS"
    assert r.reason_codes == ("criteria_met",)


def test_hla_dr_exactly_5000_is_not_immunoparalysis() -> None:
    """Immunoparalysis needs mHLA-DR strictly below 5000 AB/c; exactly 5000 is unclassified."""
    assert classify(ferritin(800), hla_dr(5000)).endotype == "unclassified"


def test_hla_dr_4999_with_ferritin_4420_is_immunoparalysis() -> None:
    """mHLA-DR 4999 AB/c with ferritin ≤ 4420 (here exactly 4420) is immunoparalysis."""
    r = classify(ferritin(4420), hla_dr(4999))
    assert r.endotype == "immunoparalysis"
    assert r.possible_endotypes == ("immunoparalysis",)


_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _oracle(spec: ClassificationSpec, values: dict[str, float]) -> str:
    """Independent reading of the spec for exact values: first rule by precedence whose criteria all hold."""
    for rule in sorted(spec.endotypes, key=lambda r: r.precedence):
        if all(_OPS[c.comparator](values[c.concept], c.threshold) for c in rule.all_of):
            return rule.name
    return spec.otherwise


def _comfortably_meets(c: object) -> float:
    t, cmp = c.threshold, c.comparator  # type: ignore[attr-defined]
    margin = max(1.0, abs(t) * 0.1)
    return t + margin if cmp in (">", ">=") else max(t - margin, concept(c.concept).min)  # type: ignore[attr-defined]


def _boundary_cases(spec: ClassificationSpec, eps: float = 0.01) -> list[tuple[str, dict[str, float]]]:
    """For every criterion: threshold − ε, threshold, threshold + ε, with the rule's other criteria met."""
    cases = []
    crits = [c for r in spec.endotypes for c in r.all_of]
    for rule in spec.endotypes:
        for crit in rule.all_of:
            for label, delta in (("below", -eps), ("at", 0.0), ("above", eps)):
                values = {o.concept: _comfortably_meets(o) for o in rule.all_of if o is not crit}
                values[crit.concept] = crit.threshold + delta
                for other in crits:
                    values.setdefault(other.concept, _comfortably_meets(other))
                cases.append((f"{rule.name}:{crit.analyte}{crit.comparator}{crit.threshold:g}:{label}", values))
    return cases


def _results_for(spec: ClassificationSpec, values: dict[str, float]) -> list[BiomarkerResult]:
    """One result per concept (N samples on N consecutive days when a criterion needs persistence)."""
    crits = [c for r in spec.endotypes for c in r.all_of]
    out = []
    for conc, v in values.items():
        related = [c for c in crits if c.concept == conc]
        method = next((c.methods[0] for c in related if c.methods), None)
        n = max(c.persistence_count for c in related)
        for k in range(n):
            out.append(
                BiomarkerResult.measured(
                    conc, v, concept(conc).unit, method=method, sample_time=ONSET + timedelta(hours=2 + 24 * k)
                )
            )
    return out


_SHIPPED = ("immunosep-2025", "gm-csf-meisel-2009", "save-more-2021")
_FIXTURE_SPECS: dict[str, ClassificationSpec] = {
    "immunosep_like": immunosep_like(),
    "registry_wording": registry_wording(),
    "meisel_like": meisel_like(),
    # the shipped protocol files, through the protocol loader (issue 3 part A)
    **{pid: load_protocol(pid).classification for pid in _SHIPPED},
}


@pytest.mark.parametrize(
    ("spec_name", "case", "values"),
    [(name, case, values) for name, spec in _FIXTURE_SPECS.items() for case, values in _boundary_cases(spec)],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_every_threshold_below_at_and_above_classifies_as_the_spec_reads(
    spec_name: str, case: str, values: dict[str, float]
) -> None:
    """Generated from the spec: each criterion's threshold ± 0.01 and exactly at it gives the endotype of a plain
    reading of the rules (strict vs non-strict kept exactly)."""
    spec = _FIXTURE_SPECS[spec_name]
    r = classify_endotype(
        spec, _results_for(spec, values), anchor_time=ONSET, at=ONSET + timedelta(days=5), protocol_label="t"
    )
    assert r.endotype == _oracle(spec, values), (case, r.reasons)


# ---------------------------------------------------------------------------------------------------------------
# censored values in the classification


def test_ferritin_greater_than_2000_is_indeterminate_with_the_reason() -> None:
    """MIMIC's "GREATER THAN 2000" cannot decide > 4420: indeterminate, naming the censored value."""
    r = classify(ferritin("GREATER THAN 2000"), hla_dr(6000))
    assert r.endotype == INDETERMINATE
    assert r.possible_endotypes == ("MALS", "unclassified")
    assert r.reason_codes[0] == "censored_undecidable"
    assert "GREATER THAN 2000" in r.reasons[0].text and "4420" in r.reasons[0].text
    assert r.reason_codes[-1] == "possible_endotypes"


def test_ferritin_greater_than_2000_with_low_hla_dr_cannot_tell_mals_from_immunoparalysis() -> None:
    """With mHLA-DR 3000, ">2000" ferritin leaves exactly MALS or immunoparalysis possible."""
    r = classify(ferritin(">2000"), hla_dr(3000))
    assert r.endotype == INDETERMINATE
    assert r.possible_endotypes == ("MALS", "immunoparalysis")


def test_ferritin_greater_than_5000_is_mals() -> None:
    """A censored ">5000" is certainly above 4420: MALS (no mHLA-DR needed)."""
    r = classify(ferritin(">5000"))
    assert r.endotype == "MALS"
    assert r.inputs_used[0].value == ">5000"


def test_ferritin_greater_than_or_equal_4420_is_indeterminate_but_greater_than_4420_is_mals() -> None:
    """A censored ">=4420" may be exactly 4420 (not MALS); ">4420" cannot be."""
    assert classify(ferritin(">=4420"), hla_dr(6000)).endotype == INDETERMINATE
    assert classify(ferritin(">4420")).endotype == "MALS"


def test_ferritin_less_than_15_with_hla_dr_3000_is_immunoparalysis() -> None:
    """A censored "<15" ferritin is certainly ≤ 4420; with mHLA-DR 3000 AB/c: immunoparalysis."""
    assert classify(ferritin("<15"), hla_dr(3000)).endotype == "immunoparalysis"


def test_censored_hla_dr_below_5000_decides_immunoparalysis() -> None:
    """mHLA-DR "<4000" AB/c is certainly below 5000."""
    assert classify(ferritin(800), hla_dr("<4000")).endotype == "immunoparalysis"


# ---------------------------------------------------------------------------------------------------------------
# missing data and assay methods


def test_hla_dr_missing_with_ferritin_at_most_4420_is_indeterminate() -> None:
    """Ferritin 820 ≤ 4420 without mHLA-DR cannot tell immunoparalysis from unclassified."""
    r = classify(ferritin(820))
    assert r.endotype == INDETERMINATE
    assert r.possible_endotypes == ("immunoparalysis", "unclassified")
    assert r.reason_codes == ("criteria_not_met", "missing", "possible_endotypes")
    missing = r.reasons[1]
    assert missing.concept == "hla_dr_per_monocyte" and missing.rule == "immunoparalysis"
    assert "ferritin 820 ng/mL meets ferritin <= 4420 ng/mL" in missing.text


def test_ferritin_missing_is_indeterminate() -> None:
    """Without ferritin neither MALS nor its exclusion can be decided."""
    low = classify(hla_dr(3000))
    assert low.endotype == INDETERMINATE and low.possible_endotypes == ("MALS", "immunoparalysis")
    normal = classify(hla_dr(6000))
    assert normal.endotype == INDETERMINATE and normal.possible_endotypes == ("MALS", "unclassified")
    assert "missing" in normal.reason_codes


def test_no_results_at_all_leave_every_endotype_possible() -> None:
    """An empty record is indeterminate between all three states."""
    r = classify()
    assert r.possible_endotypes == ("MALS", "immunoparalysis", "unclassified")


def test_hla_dr_in_mfi_is_not_comparable_with_ab_per_cell() -> None:
    """mHLA-DR measured as MFI cannot be compared with 5000 AB/c: indeterminate, reason assay_method_mismatch."""
    r = classify(ferritin(800), hla_dr(3000, method="mfi"))
    assert r.endotype == INDETERMINATE
    assert "assay_method_mismatch" in r.reason_codes
    assert r.excluded[0].reason.code == "assay_method_mismatch"


def test_mfi_result_is_ignored_when_a_quantibrite_result_decides() -> None:
    """A usable QuantiBRITE result decides even if a later MFI result exists (which is listed as excluded)."""
    r = classify(ferritin(800), hla_dr(3000, hours=1), hla_dr(20000, method="mfi", hours=3))
    assert r.endotype == "immunoparalysis"
    assert [e.reason.code for e in r.excluded] == ["assay_method_mismatch"]


def test_method_tags_are_compared_case_insensitively() -> None:
    """The method tag " QuantiBRITE_ABC " is the same as "quantibrite_abc"."""
    assert classify(ferritin(800), hla_dr(3000, method=" QuantiBRITE_ABC ")).endotype == "immunoparalysis"


def test_hla_dr_without_method_is_indeterminate() -> None:
    """A criterion with accepted methods cannot use a result whose method is not stated."""
    r = classify(ferritin(800), hla_dr(3000, method=None))
    assert r.endotype == INDETERMINATE
    assert "assay_method_missing" in r.reason_codes


def test_wrong_hla_dr_method_does_not_matter_when_ferritin_decides_mals() -> None:
    """Ferritin > 4420 is MALS regardless of an unusable mHLA-DR result."""
    assert classify(ferritin(6000), hla_dr(3000, method="mfi")).endotype == "MALS"


# ---------------------------------------------------------------------------------------------------------------
# precedence


def test_both_states_present_is_mals_by_precedence() -> None:
    """Ferritin > 4420 with mHLA-DR < 5000 is MALS (ImmunoSep: both states → hyper-inflammation arm)."""
    assert classify(ferritin(6000), hla_dr(3000)).endotype == "MALS"


def test_overlapping_rules_resolve_by_precedence_not_by_order_in_the_file() -> None:
    """With the registry's overlapping wording (immunoparalysis = mHLA-DR < 5000 alone, listed first), MALS
    (precedence 1) still wins and the outranked rule is reported."""
    r = classify(ferritin(6000), hla_dr(3000), spec=registry_wording())
    assert r.endotype == "MALS"
    assert r.reason_codes == ("criteria_met", "outranked")


def test_undecidable_higher_precedence_rule_blocks_a_met_lower_one() -> None:
    """If MALS cannot be decided (">2000"), a met immunoparalysis rule cannot be concluded."""
    r = classify(ferritin(">2000"), hla_dr(3000), spec=registry_wording())
    assert r.endotype == INDETERMINATE
    assert r.possible_endotypes == ("MALS", "immunoparalysis")
    assert r.reason_codes == ("censored_undecidable", "criteria_met", "possible_endotypes")


# ---------------------------------------------------------------------------------------------------------------
# timing: window, staleness, look-ahead, choice of sample


def test_sample_73_hours_after_onset_is_outside_the_72_hour_window() -> None:
    """A ferritin drawn 73 h after Sepsis-3 onset is outside the protocol window and not used."""
    r = classify(ferritin(6000, hours=73), at=ONSET + timedelta(hours=80))
    assert r.endotype == INDETERMINATE
    assert r.reason_codes[0] == "outside_window"
    assert "+73 h" in r.reasons[0].text


def test_sample_exactly_72_hours_after_onset_is_inside_the_window() -> None:
    """The window bound is inclusive: 72 h exactly is used."""
    assert classify(ferritin(6000, hours=72), at=ONSET + timedelta(hours=80)).endotype == "MALS"


def test_window_before_onset_when_the_protocol_sets_one() -> None:
    """With a 24 h pre-onset limit, a sample 25 h before onset is outside, 24 h before is inside."""
    spec = immunosep_like(window_before_anchor_h=24)
    assert classify(ferritin(6000, hours=-25), spec=spec).reason_codes[0] == "outside_window"
    assert classify(ferritin(6000, hours=-24), spec=spec).endotype == "MALS"


def test_unset_timing_limits_are_reported_as_warnings() -> None:
    """ImmunoSep sets no pre-onset limit and no maximum result age (unknown): both surface as warnings."""
    codes = [w.code for w in classify(ferritin(6000)).warnings]
    assert codes.count("window_not_set") == 1 and "max_result_age_not_set" in codes


def test_without_anchor_time_the_window_is_not_checked_and_a_warning_says_so() -> None:
    """No Sepsis-3 onset given: the sample is used and the result warns anchor_time_missing."""
    r = classify(ferritin(6000, hours=500), anchor=None, at=None)
    assert r.endotype == "MALS"
    assert {"anchor_time_missing", "at_missing"} <= {w.code for w in r.warnings}


def test_stale_sample_is_not_used() -> None:
    """With a 24 h maximum result age, a sample 25 h old at classification time is stale: indeterminate."""
    spec = immunosep_like(max_result_age_h=24)
    r = classify(ferritin(6000, hours=1), spec=spec, at=ONSET + timedelta(hours=26))
    assert r.endotype == INDETERMINATE
    assert r.reason_codes[0] == "stale"
    assert classify(ferritin(6000, hours=2), spec=spec, at=ONSET + timedelta(hours=26)).endotype == "MALS"


def test_stale_latest_sample_is_not_replaced_by_an_older_one() -> None:
    """Staleness is judged on the latest usable sample; an even older sample is never used instead."""
    spec = immunosep_like(max_result_age_h=24)
    r = classify(
        ferritin(6000, hours=0),
        ferritin(800, hours=1),
        hla_dr(3000, hours=30),
        spec=spec,
        at=ONSET + timedelta(hours=30),
    )
    assert r.endotype == INDETERMINATE and "stale" in r.reason_codes


def test_latest_usable_sample_is_used() -> None:
    """Of two ferritin samples the later one decides (6000 at 2 h, 800 at 20 h → not MALS)."""
    r = classify(ferritin(6000, hours=2), ferritin(800, hours=20), hla_dr(3000))
    assert r.endotype == "immunoparalysis"
    assert r.inputs_used[0].value == "800"


def test_results_reported_after_the_classification_time_are_not_used() -> None:
    """No look-ahead: a result reported after `at` (or sampled after it) is excluded."""
    at = ONSET + timedelta(hours=10)
    later_result = ferritin(800, hours=8, result_time=ONSET + timedelta(hours=12))
    r = classify(ferritin(6000, hours=2), later_result, at=at)
    assert r.endotype == "MALS"
    assert [e.reason.code for e in r.excluded] == ["not_yet_resulted"]
    r2 = classify(ferritin(6000, hours=2), ferritin(800, hours=11), at=at)
    assert r2.endotype == "MALS" and r2.excluded[0].reason.code == "sampled_after_at"


def test_disagreeing_samples_at_the_same_time_are_indeterminate() -> None:
    """Two ferritin values with the same sample time and different values: conflicting_results."""
    r = classify(ferritin(6000), ferritin(800), hla_dr(3000))
    assert r.endotype == INDETERMINATE
    assert "conflicting_results" in r.reason_codes


def test_several_samples_some_untimed_cannot_be_ordered() -> None:
    """Several results of which some lack a sample time cannot be ordered: indeterminate, sample_time_missing."""
    r = classify(ferritin(6000, hours=None), ferritin(800), hla_dr(3000), anchor=None)
    assert r.endotype == INDETERMINATE and "sample_time_missing" in r.reason_codes


def test_untimed_sample_cannot_be_checked_against_the_window() -> None:
    """With an anchor and a window, a result without sample time is not usable."""
    r = classify(ferritin(6000, hours=None))
    assert r.endotype == INDETERMINATE and r.reason_codes[0] == "sample_time_missing"


def test_ages_and_assay_turnaround_are_reported_in_hours() -> None:
    """Sampled 08:00, received 10:00, resulted 14:00, classified 20:00: age 12 h, turnaround 6 h (2 + 4)."""
    s = ONSET
    f = ferritin(6000, hours=0, receipt_time=s + timedelta(hours=2), result_time=s + timedelta(hours=6))
    r = classify(f, at=s + timedelta(hours=12))
    used = r.inputs_used[0]
    assert (used.age_h, used.turnaround_h, used.transport_h, used.laboratory_h) == (12.0, 6.0, 2.0, 4.0)
    assert r.oldest_input_age_h == 12.0
    d = r.to_dict()
    assert d["ages_h"] == {"ferritin": 12.0} and d["turnaround_h"] == {"ferritin": 6.0}


def test_result_reported_before_it_was_sampled_is_rejected() -> None:
    """Times must run sample ≤ receipt ≤ result."""
    with pytest.raises(InputError, match="sample_time <= result_time"):
        ferritin(6000, hours=5, result_time=ONSET)


def test_naive_and_timezone_aware_times_cannot_be_mixed() -> None:
    """Mixing naive and aware times is an InputError, never a silent offset."""
    aware = BiomarkerResult.measured(
        "ferritin_ng_per_ml", 6000, "ng/mL", sample_time=datetime(2025, 3, 1, 9, tzinfo=UTC)
    )
    with pytest.raises(InputError, match="naive"):
        classify(aware)


def test_result_for_a_concept_outside_the_protocol_is_reported_as_unused() -> None:
    """A suPAR result is not part of ImmunoSep's classification: warning unused_result."""
    supar = BiomarkerResult.measured("suPAR_ng_per_ml", 7, "ng/mL", sample_time=ONSET)
    r = classify(ferritin(6000), supar)
    assert r.endotype == "MALS" and "unused_result" in {w.code for w in r.warnings}


# ---------------------------------------------------------------------------------------------------------------
# persistence (Meisel 2009: mHLA-DR < 8000 on 2 consecutive days)


def _day(d: int, hour: int = 9) -> datetime:
    return datetime(2025, 3, 1 + d, hour)


def _meisel(*samples: tuple[datetime, float | str]) -> EndotypeResult:
    results = [BiomarkerResult.measured("hla_dr_per_monocyte", v, "AB/c", method=QB, sample_time=t) for t, v in samples]
    return classify_endotype(meisel_like(), results, anchor_time=None, at=_day(10), protocol_label="meisel@test")


def test_meisel_low_hla_dr_on_two_consecutive_days_is_immunosuppression() -> None:
    """mHLA-DR < 8000 on day 1 and day 2 meets the persistence requirement; both samples are inputs."""
    r = _meisel((_day(1), 6000), (_day(2, 23), 7000))
    assert r.endotype == "immunosuppression"
    assert [i.value for i in r.inputs_used] == ["7000", "6000"]


def test_meisel_low_hla_dr_on_two_non_consecutive_days_is_not_established() -> None:
    """Day 1 and day 3 (no sample on day 2) are not consecutive: indeterminate, persistence_not_established."""
    r = _meisel((_day(1), 6000), (_day(3), 7000))
    assert r.endotype == INDETERMINATE
    assert r.reason_codes[0] == "persistence_not_established"
    assert "1 of the 2 consecutive calendar days" in r.reasons[0].text
    assert r.possible_endotypes == ("immunosuppression", "not_immunosuppressed")


def test_meisel_single_low_sample_is_not_established() -> None:
    """One low sample is not yet persistent."""
    assert _meisel((_day(1), 6000)).reason_codes[0] == "persistence_not_established"


def test_meisel_latest_sample_normal_is_not_immunosuppressed() -> None:
    """If the latest sample does not qualify, persistence is not met regardless of earlier days."""
    assert _meisel((_day(1), 6000), (_day(2), 6000), (_day(3), 9000)).endotype == "not_immunosuppressed"


def test_meisel_previous_day_uses_its_latest_sample() -> None:
    """The previous day counts by its latest sample: low at 08:00 but 9000 at 20:00 breaks the run."""
    r = _meisel((_day(1, 8), 6000), (_day(1, 20), 9000), (_day(2), 6000))
    assert r.endotype == INDETERMINATE


def test_meisel_threshold_8000_exactly_does_not_qualify() -> None:
    """mHLA-DR exactly 8000 on the latest day is not < 8000."""
    assert _meisel((_day(1), 6000), (_day(2), 8000)).endotype == "not_immunosuppressed"


# ---------------------------------------------------------------------------------------------------------------
# properties

_FERRITIN_VALUES = st.sampled_from([15, 820, 4420, 4420.01, 9000, ">2000", "<15", ">5000", ">=4420"])
_HLA_VALUES = st.sampled_from([1000, 4999, 5000, 8000, 9000, "<5000", ">8000"])
_result = st.one_of(
    st.builds(
        lambda v, h, u: ferritin(v, hours=h, result_time=None if u is None else ONSET + timedelta(hours=h + u)),
        _FERRITIN_VALUES,
        st.integers(-30, 100),
        st.one_of(st.none(), st.integers(0, 30)),
    ),
    st.builds(
        lambda v, h, m: hla_dr(v, method=m, hours=h),
        _HLA_VALUES,
        st.integers(-30, 100),
        st.sampled_from([QB, "mfi", None]),
    ),
)


@settings(max_examples=150, deadline=None)
@given(results=st.lists(_result, max_size=6), order=st.randoms(use_true_random=False), at_h=st.integers(0, 120))
def test_classification_is_deterministic_and_ignores_the_order_of_results(
    results: list[BiomarkerResult], order: object, at_h: int
) -> None:
    """Same results in any order → the same result; the endotype is a rule, the fallback or indeterminate, and a
    decided endotype is the only possible one."""
    spec = immunosep_like(max_result_age_h=48)
    at = ONSET + timedelta(hours=at_h)
    a = classify(*results, spec=spec, at=at)
    shuffled = list(results)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    b = classify(*shuffled, spec=spec, at=at)
    assert a == b
    assert a.endotype in {"MALS", "immunoparalysis", "unclassified", INDETERMINATE}
    if a.endotype != INDETERMINATE:
        assert a.possible_endotypes == (a.endotype,)
    else:
        assert len(a.possible_endotypes) > 1
    assert set(a.reason_codes) | {w.code for w in a.warnings} <= set(REASON_CODES)


@settings(max_examples=100, deadline=None)
@given(f=st.floats(0, 20000, allow_nan=False), h=st.floats(0, 20000, allow_nan=False))
def test_an_exact_ferritin_and_quantibrite_hla_dr_always_decide(f: float, h: float) -> None:
    """With both values exact, measured in time and by the right method, the result is never indeterminate."""
    r = classify(ferritin(f), hla_dr(h))
    assert r.endotype == _oracle(immunosep_like(), {"ferritin_ng_per_ml": f, "hla_dr_per_monocyte": h})


# ---------------------------------------------------------------------------------------------------------------
# daily re-classification, transitions and reversal


def _at(day: int, hour: int = 6) -> float:
    """Hours after onset of ``hour`` o'clock offset on study day ``day`` (day 0 = first 24 h)."""
    return 24 * day + hour


def _daily(*results: BiomarkerResult, days: int = 8):  # noqa: ANN202
    return reclassify_daily(immunosep_like(), list(results), anchor_time=ONSET, days=days, protocol_label="fixture@t")


def test_daily_reclassification_shows_mals_to_immunoparalysis_with_mals_reversal() -> None:
    """MALS on day 0 (6000), still MALS on day 1 (5200, −13 %), immunoparalysis on day 3 (ferritin 3000,
    mHLA-DR 3000): transition MALS → immunoparalysis on day 3 and MALS reversal (ferritin fall ≥ 15 %) on day 3."""
    rc = _daily(
        ferritin(6000, hours=_at(0)),
        ferritin(5200, hours=_at(1)),
        ferritin(3000, hours=_at(3)),
        hla_dr(3000, hours=_at(3)),
    )
    assert [d.endotype for d in rc.days] == ["MALS", "MALS", None, "immunoparalysis", None, None, None, None]
    assert [(t.from_endotype, t.to_endotype, t.from_day, t.day) for t in rc.transitions] == [
        ("MALS", "immunoparalysis", 1, 3)
    ]
    assert (rc.baseline_day, rc.baseline_endotype) == (0, "MALS")
    assert [(e.kind, e.day) for e in rc.reversals] == [("relative_fall", 3)]
    assert rc.time_to_reversal_days == 3
    assert rc.reversals[0].hours_from_baseline_sample == 72.0


@pytest.mark.parametrize(("later", "reversed_"), [(5100, True), (5101, False), ("<5000", True), (">5000", False)])
def test_mals_reversal_needs_a_ferritin_fall_of_at_least_15_percent(later: float | str, reversed_: bool) -> None:
    """From 6000 ng/mL a fall to 5100 is exactly 15 % (reversal), to 5101 is not; censored values decide too."""
    rc = _daily(ferritin(6000, hours=_at(0)), ferritin(later, hours=_at(2)))
    assert bool(rc.reversals) is reversed_


def test_immunoparalysis_reversal_needs_hla_dr_above_8000_with_ferritin_below_4420() -> None:
    """Immunoparalysis on day 0; mHLA-DR 8000 on day 2 is not > 8000; 8001 with ferritin 900 on day 4 reverses."""
    rc = _daily(
        ferritin(800, hours=_at(0)),
        hla_dr(3000, hours=_at(0)),
        ferritin(900, hours=_at(2)),
        hla_dr(8000, hours=_at(2)),
        ferritin(900, hours=_at(4)),
        hla_dr(8001, hours=_at(4)),
    )
    assert rc.baseline_endotype == "immunoparalysis"
    assert [(e.kind, e.day, e.days_from_baseline) for e in rc.reversals] == [("all_of", 4, 4)]
    assert rc.time_to_reversal_days == 4
    assert [(t.from_endotype, t.to_endotype, t.day) for t in rc.transitions] == [("immunoparalysis", "unclassified", 2)]


def test_immunoparalysis_reversal_needs_ferritin_on_the_same_day() -> None:
    """mHLA-DR 9000 alone (no ferritin that day) cannot show ferritin < 4420: no reversal."""
    rc = _daily(ferritin(800, hours=_at(0)), hla_dr(3000, hours=_at(0)), hla_dr(9000, hours=_at(2)))
    assert rc.reversals == ()


def test_immunoparalysis_reversal_ignores_mfi_hla_dr() -> None:
    """mHLA-DR > 8000 measured as MFI is not comparable: no reversal."""
    rc = _daily(
        ferritin(800, hours=_at(0)),
        hla_dr(3000, hours=_at(0)),
        ferritin(900, hours=_at(2)),
        hla_dr(20000, method="mfi", hours=_at(2)),
    )
    assert rc.reversals == ()


def test_immunoparalysis_reversal_is_not_confused_with_mals_reversal() -> None:
    """A 50 % ferritin fall in an immunoparalysis patient is not a reversal (that rule belongs to MALS)."""
    rc = _daily(
        ferritin(800, hours=_at(0)), hla_dr(3000, hours=_at(0)), ferritin(400, hours=_at(1)), hla_dr(3000, hours=_at(1))
    )
    assert rc.reversals == () and rc.time_to_reversal_days is None


def test_transitions_skip_indeterminate_days_and_days_without_samples() -> None:
    """MALS (day 0), indeterminate (day 1: ferritin ">2000"), no sample (day 2), immunoparalysis (day 3): one
    transition MALS → immunoparalysis from day 0 to day 3."""
    rc = _daily(
        ferritin(6000, hours=_at(0)),
        ferritin(">2000", hours=_at(1)),
        hla_dr(3000, hours=_at(1)),
        ferritin(1000, hours=_at(3)),
        hla_dr(3000, hours=_at(3)),
        days=4,
    )
    assert [d.endotype for d in rc.days] == ["MALS", INDETERMINATE, None, "immunoparalysis"]
    assert [(t.from_day, t.day) for t in rc.transitions] == [(0, 3)]
    assert rc.days[2].reasons[0].code == "no_samples"


def test_daily_reclassification_uses_only_that_days_samples() -> None:
    """Day 1 has ferritin only: mHLA-DR from day 0 is not carried forward, so day 1 is indeterminate."""
    rc = _daily(ferritin(800, hours=_at(0)), hla_dr(3000, hours=_at(0)), ferritin(700, hours=_at(1)), days=2)
    assert [d.endotype for d in rc.days] == ["immunoparalysis", INDETERMINATE]
    assert "no hla_dr sample on this day" in rc.days[1].reasons[1].text


def test_daily_reclassification_on_a_visit_schedule() -> None:
    """Explicit day numbers (the ImmunoSep visit days 0, 2, 3, …) are classified in order."""
    rc = reclassify_daily(
        immunosep_like(),
        [ferritin(6000, hours=_at(0)), ferritin(4000, hours=_at(7))],
        anchor_time=ONSET,
        days=(7, 0, 2),
        protocol_label="t",
    )
    assert [d.day for d in rc.days] == [0, 2, 7]
    assert rc.reversals[0].day == 7 and rc.time_to_reversal_days == 7


def test_daily_meisel_persistence_is_established_on_the_second_consecutive_day() -> None:
    """Daily view of Meisel: day 0 low (not yet persistent) → indeterminate; day 1 low → immunosuppression."""
    spec = meisel_like()
    rs = [
        BiomarkerResult.measured("hla_dr_per_monocyte", 6000, "AB/c", method=QB, sample_time=ONSET + timedelta(hours=h))
        for h in (2, 26)
    ]
    rc = reclassify_daily(spec, rs, anchor_time=ONSET, days=2, protocol_label="meisel@t")
    assert [d.endotype for d in rc.days] == [INDETERMINATE, "immunosuppression"]


def test_daily_reclassification_warns_about_untimed_results() -> None:
    """Results without a sample time cannot be placed on a day; the reclassification says so."""
    rc = _daily(ferritin(6000, hours=None), days=1)
    assert rc.days[0].endotype is None
    assert "sample_time_missing" in {w.code for w in rc.warnings}


def test_shipped_immunosep_daily_reclassification_reports_both_reversal_kinds() -> None:
    """With the shipped immunosep-2025 file: a MALS patient reverses by ferritin fall (6000 → 5000, −17 %) on day 2;
    an immunoparalysis patient reverses by mHLA-DR 9000 with ferritin 1000 on day 5."""
    spec = load_protocol("immunosep-2025").classification
    mals = reclassify_daily(
        spec,
        [ferritin(6000, hours=_at(0)), ferritin(5000, hours=_at(2))],
        anchor_time=ONSET,
        days=7,
        protocol_label="immunosep-2025@1.0.0",
    )
    assert [(e.endotype, e.kind, e.day) for e in mals.reversals] == [("MALS", "relative_fall", 2)]
    ip = reclassify_daily(
        spec,
        [
            ferritin(800, hours=_at(0)),
            hla_dr(3000, hours=_at(0)),
            ferritin(1000, hours=_at(5)),
            hla_dr(9000, hours=_at(5)),
        ],
        anchor_time=ONSET,
        days=7,
        protocol_label="immunosep-2025@1.0.0",
    )
    assert [(e.endotype, e.kind, e.day) for e in ip.reversals] == [("immunoparalysis", "all_of", 5)]
    assert [(t.from_endotype, t.to_endotype) for t in ip.transitions] == [("immunoparalysis", "unclassified")]


def test_shipped_immunosep_warns_about_its_unknown_timing_settings() -> None:
    """immunosep-2025 leaves the pre-onset window and maximum result age unset: both are warnings."""
    r = classify(ferritin(6000), spec=load_protocol("immunosep-2025").classification)
    assert r.endotype == "MALS"
    assert {"window_not_set", "max_result_age_not_set"} <= {w.code for w in r.warnings}


def test_shipped_meisel_needs_two_consecutive_days() -> None:
    """With the shipped gm-csf-meisel-2009 file: 2 consecutive low days qualify, 2 non-consecutive do not."""
    spec = load_protocol("gm-csf-meisel-2009").classification

    def run(*days: int) -> str:
        rs = [
            BiomarkerResult.measured("hla_dr_per_monocyte", 6000, "AB/c", method=QB, sample_time=_day(d)) for d in days
        ]
        return classify_endotype(spec, rs, anchor_time=None, at=_day(9), protocol_label="m").endotype

    assert (run(1, 2), run(1, 3)) == ("immunosuppression", INDETERMINATE)


# ---------------------------------------------------------------------------------------------------------------
# flat records


def test_record_requires_a_ferritin_unit() -> None:
    """A ferritin value without ferritin_unit is a MissingInputError naming ferritin_unit (no default unit)."""
    with pytest.raises(MissingInputError) as err:
        results_from_record({"ferritin": 800}, immunosep_like(), where="line 3")
    assert err.value.field == "ferritin_unit" and "line 3" in (err.value.where or "")


def test_record_accepts_the_canonical_field_name_without_a_unit() -> None:
    """ferritin_ng_per_ml carries its unit in its name."""
    (r,), _, _ = results_from_record({"ferritin_ng_per_ml": "<15"}, immunosep_like())
    assert r.value.describe() == "<15"


def test_record_with_both_spellings_is_rejected() -> None:
    """ferritin + ferritin_unit and ferritin_ng_per_ml together are ambiguous."""
    with pytest.raises(InputError):
        results_from_record({"ferritin": 1, "ferritin_unit": "ng/mL", "ferritin_ng_per_ml": 2}, immunosep_like())


def test_record_error_names_the_field_of_a_bad_value() -> None:
    """An unparseable value names its field."""
    with pytest.raises(InputError) as err:
        results_from_record({"hla_dr_per_monocyte": "DONE"}, immunosep_like(), where="line 7")
    assert err.value.field == "hla_dr_per_monocyte" and "line 7" in (err.value.where or "")


# ---------------------------------------------------------------------------------------------------------------
# real censored strings: MIMIC-III demo ferritin (itemid 50924)


def test_every_mimic_demo_ferritin_value_parses_and_greater_than_2000_is_indeterminate(mimic3_demo_dir: Path) -> None:
    """All 50 ferritin rows of the MIMIC-III demo (SOURCE.md) parse; numeric ones equal valuenum; the 4 "GREATER
    THAN 2000" rows cannot decide > 4420 and classify as indeterminate with reason censored_undecidable."""
    labs = pd.read_csv(
        mimic3_demo_dir / "labevents.csv.gz",
        usecols=["subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"],
        dtype={"value": str},
    )
    fer = labs[labs["itemid"] == 50924]
    assert len(fer) == 50
    censored = 0
    for row in fer.itertuples():
        v = BiomarkerResult.measured(
            "ferritin_ng_per_ml", row.value, row.valueuom, sample_time=datetime.fromisoformat(row.charttime)
        )
        if pd.isna(row.valuenum):
            censored += 1
            assert row.value == "GREATER THAN 2000"
            assert decide(v.value, ">", 4420) is None
            r = classify_endotype(immunosep_like(), [v], anchor_time=None, at=None, protocol_label="mimic")
            assert r.endotype == INDETERMINATE and r.reason_codes[0] == "censored_undecidable"
        else:
            assert v.value.value == row.valuenum
    assert censored == 4


def test_inputs_used_are_those_the_decision_rests_on() -> None:
    """MALS by ferritin alone lists only ferritin as input (and its age); immunoparalysis lists both."""
    mals = classify(ferritin(6000, hours=2), hla_dr(3000, hours=1), at=ONSET + timedelta(hours=10))
    assert [i.analyte for i in mals.inputs_used] == ["ferritin"]
    assert mals.oldest_input_age_h == 8.0
    ip = classify(ferritin(800, hours=2), hla_dr(3000, hours=1), at=ONSET + timedelta(hours=10))
    assert [i.analyte for i in ip.inputs_used] == ["ferritin", "hla_dr"]
    assert ip.oldest_input_age_h == 9.0
