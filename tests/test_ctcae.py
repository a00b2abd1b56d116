"""CTCAE v5.0 as data: laboratory grades at every band edge (generated from the data file), exact comparison,
LLN/ULN handling, validated bands, and the AE term look-up with MedDRA codes that are cited or flagged."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from importlib import resources

import pytest

from immunoguide.errors import (
    BandGapError,
    BandOverlapError,
    ImplausibleValueError,
    UnitError,
    UnknownTermError,
    WrongTypeError,
)
from immunoguide.rules.ctcae import LAB_ANALYTES, grade_lab, load_ctcae, load_ctcae_text, lookup_term, search_terms
from immunoguide.units import concept

D = load_ctcae()
TEXT = resources.files("immunoguide.criteria").joinpath("ctcae_v5.toml").read_text("utf-8")


def _edge_cases() -> list[tuple[str, float, int | None, str]]:
    """(analyte, x on the ladder's scale, expected grade, why) just below, at and just above every finite edge."""
    out = []
    for analyte, lab in D.labs.items():
        for band in lab.ladder.bands:
            lo = band.interval.lo
            if lo == 0 or not math.isfinite(lo):
                continue
            below = next(b for b in lab.ladder.bands if b.interval.contains(lo - 1e-9))
            at = next(b for b in lab.ladder.bands if b.interval.contains(lo))
            above = next(b for b in lab.ladder.bands if b.interval.contains(lo + 1e-9))
            for x, b, why in ((lo - 1e-9, below, "below"), (lo, at, "at"), (lo + 1e-9, above, "above")):
                out.append((analyte, x, b.points, f"{why} {lo:g}"))
    return out


@pytest.mark.parametrize(("analyte", "x", "points", "why"), _edge_cases())
def test_lab_grade_at_every_band_edge_is_the_data_files(analyte: str, x: float, points: int, why: str) -> None:
    """Below / at / above each edge of each CTCAE ladder grades as its band says (LLN far above, ULN = 2)."""
    lab = D.labs[analyte]
    unit = concept(lab.concept).unit
    if lab.scale == "uln_multiple":
        uln = 2.0
        g = grade_lab(analyte, x * uln, unit, uln=uln)
        assert g.grade == points, (why, g.reason)
    else:
        lln = min(x * 4 + 1, concept(lab.concept).max)
        g = grade_lab(analyte, x, unit, lln=lln)
        assert g.grade == (1 if points == -1 else points), (why, g.reason)


@pytest.mark.parametrize("analyte", [a for a, lab in D.labs.items() if lab.needs == "lln"])
def test_top_band_is_grade_1_below_the_lln_and_0_at_it(analyte: str) -> None:
    """In the band above the grade-2 edge the lab's LLN decides: below it grade 1, at or above grade 0, none: ungraded."""
    lab = D.labs[analyte]
    top = max(b.interval.lo for b in lab.ladder.bands)
    unit = concept(lab.concept).unit
    assert grade_lab(analyte, top + 1, unit, lln=top + 2).grade == 1
    assert grade_lab(analyte, top + 2, unit, lln=top + 2).grade == 0
    g = grade_lab(analyte, top + 1, unit)
    assert g.grade is None and "LLN" in g.reason


@pytest.mark.parametrize("analyte", [a for a, lab in D.labs.items() if lab.scale == "uln_multiple"])
def test_uln_multiple_without_uln_is_not_graded(analyte: str) -> None:
    """A ULN-based grade needs the lab's upper limit of normal; without it the result says why, never guesses."""
    g = grade_lab(analyte, 5, concept(D.labs[analyte].concept).unit)
    assert g.grade is None and "upper limit of normal" in g.reason
    assert any("not applied" in n for n in g.notes)


def test_platelets_75_is_grade_1_or_0_by_lln_and_just_below_is_grade_2() -> None:
    """75 x10^3/uL is the grade-2 edge (<75 - 50): exactly 75 is not grade 2; 74.9999999 is."""
    assert grade_lab("platelets", 75, "10^9/L", lln=150).grade == 1
    assert grade_lab("platelets", 74.9999999, "10^9/L", lln=150).grade == 2
    assert grade_lab("platelets", 75000, "/uL", lln=150000).grade == 1


def test_bilirubin_in_umol_per_l_grades_exactly_at_1_5_x_uln() -> None:
    """30.78 umol/L with ULN 20.52 is exactly 1.5 x ULN: grade 1 (>ULN - 1.5 x ULN), not 2."""
    assert grade_lab("bilirubin", 30.78, "umol/L", uln=20.52).grade == 1
    assert grade_lab("bilirubin", 30.79, "umol/L", uln=20.52).grade == 2


def test_haemoglobin_7_9_g_per_dl_is_anemia_grade_3_and_g_per_l_converts() -> None:
    """Hgb < 8.0 g/dL is grade 3; 79 g/L is 7.9 g/dL."""
    assert grade_lab("hemoglobin", 7.9, "g/dL").grade == 3
    assert grade_lab("hemoglobin", 79, "g/L").grade == 3
    assert grade_lab("hemoglobin", 80, "g/L").grade == 2


@pytest.mark.parametrize(("value", "unit", "exc"), [(True, "g/dL", WrongTypeError), (7.9, "mmol/L", UnitError),
                                                   (99, "g/dL", ImplausibleValueError)])
def test_bad_safety_lab_values_are_refused(value: object, unit: str, exc: type) -> None:
    """Booleans, unknown units and implausible values raise, never grade."""
    with pytest.raises(exc):
        grade_lab("hemoglobin", value, unit)


def test_band_overlap_and_gap_in_the_data_file_are_refused_on_load() -> None:
    """A mistyped band edge (overlap or gap) makes the file invalid."""
    with pytest.raises(BandGapError):
        load_ctcae_text(TEXT.replace('"25 <= x < 50", grade = 3', '"26 <= x < 50", grade = 3'))
    with pytest.raises(BandOverlapError):
        load_ctcae_text(TEXT.replace('"25 <= x < 50", grade = 3', '"24 <= x < 50", grade = 3'))


def test_every_meddra_code_is_eight_digits_with_a_source_or_empty_and_flagged() -> None:
    """MedDRA codes are cited 8-digit LLT codes; a code that could not be confirmed is empty and flagged unknown."""
    for t in D.terms:
        assert re.fullmatch(r"\d{8}", t.meddra_code) or (t.meddra_code == "" and t.meddra_confidence == "unknown")
        assert t.meddra_source
        if not t.meddra_code:
            assert t.to_dict()["meddra_flag"]
    assert {D.labs[a].term for a in LAB_ANALYTES} <= {t.term for t in D.terms}


def test_anemia_and_platelet_codes_are_the_cited_ones() -> None:
    """Anemia 10002272 (CTCAE v5.0 table) and Platelet count decreased 10035528 (NCI list)."""
    assert D.term("Anemia").meddra_code == "10002272" and D.term("Anemia").meddra_confidence == "confirmed"
    assert D.term("platelet count decreased").meddra_code == "10035528"


def test_synonym_codes_to_the_ctcae_term_and_free_text_is_refused_with_suggestions() -> None:
    """'anaemia' codes to Anemia; 'foo bar' and 'hemorrhage' are refused (IG-E113), the latter naming site terms."""
    assert lookup_term("ANAEMIA").term == "Anemia"
    assert lookup_term("thrombocytopenia").term == "Platelet count decreased"
    with pytest.raises(UnknownTermError):
        lookup_term("foo bar")
    with pytest.raises(UnknownTermError) as e:
        lookup_term("hemorrhage")
    assert "gastrointestinal hemorrhage" in (e.value.todo or "")


def test_term_search_finds_by_name_synonym_and_code() -> None:
    """The look-up finds terms by part of the name, a synonym and a MedDRA code."""
    assert [t.term for t in search_terms("10035528")] == ["Platelet count decreased"]
    assert "Anemia" in [t.term for t in search_terms("anaem")]
    assert all("hemorrhage" in t.term.lower() or "hemorrhage" in " ".join(t.synonyms) for t in search_terms("hemorrhage"))


def test_grading_uses_exact_rationals() -> None:
    """The ULN multiple is a rational: 3 x ULN exactly is grade 1 for AST (>ULN - 3.0 x ULN)."""
    assert grade_lab("ast", Fraction(3 * 37, 1).__float__(), "U/L", uln=37).grade == 1
    assert grade_lab("ast", 111.0001, "U/L", uln=37).grade == 2
