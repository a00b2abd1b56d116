"""Units are converted once at the boundary, round-trip, and implausible values are rejected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunoguide.errors import ImplausibleValueError, UnitError
from immunoguide.units import (
    check_plausible,
    concepts,
    from_canonical,
    norepinephrine_base_ug_kg_min,
    normalise_unit,
    to_canonical,
)


@pytest.mark.parametrize(
    ("concept", "value", "unit", "expected"),
    [
        ("bilirubin_mg_per_dl", 205.248, "µmol/L", 12.0),
        ("bilirubin_mg_per_dl", 34.208, "umol/L", 2.0),
        ("creatinine_mg_per_dl", 442.1, "µmol/L", 5.0),
        ("creatinine_mg_per_dl", 106.104, "umol/L", 1.2),
        ("fio2_fraction", 40, "%", 0.4),
        ("platelets_10e3_per_ul", 150000, "/µL", 150.0),
        ("platelets_10e3_per_ul", 150, "10^9/L", 150.0),
        ("platelets_10e3_per_ul", 150, "K/uL", 150.0),
        ("norepinephrine_ug_kg_min", 0.0001, "mg/kg/min", 0.1),
        ("norepinephrine_ug_kg_min", 6, "mcg/kg/h", 0.1),
        ("ferritin_ng_per_ml", 9931.74, "pmol/L", 4420.0),
        ("ferritin_ng_per_ml", 4420, "µg/L", 4420.0),
    ],
)
def test_known_unit_converts_to_the_canonical_unit(concept: str, value: float, unit: str, expected: float) -> None:
    """Each accepted unit converts to the concept's canonical unit (table edges stay exact)."""
    assert to_canonical(concept, value, unit) == pytest.approx(expected, rel=1e-9)


def test_unknown_unit_is_rejected_with_the_accepted_units() -> None:
    """mg/L ferritin is not accepted: UnitError lists the accepted units."""
    with pytest.raises(UnitError, match="ng/mL"):
        to_canonical("ferritin_ng_per_ml", 4, "mg/L")


@pytest.mark.parametrize(("concept", "value"), [("gcs", 2), ("gcs", 16), ("fio2_fraction", 0.1), ("map_mmhg", 300), ("gcs", 12.5)])
def test_implausible_value_is_rejected_never_scored(concept: str, value: float) -> None:
    """Values outside the concept's plausibility range (or a fractional GCS) raise ImplausibleValueError."""
    with pytest.raises(ImplausibleValueError):
        check_plausible(concept, value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_non_numbers_are_rejected(value: float) -> None:
    """NaN, infinity and booleans are never accepted as measurements."""
    with pytest.raises(ImplausibleValueError):
        check_plausible("platelets_10e3_per_ul", value)


CONVERTIBLE = [(c.name, u) for c in concepts().values() for u in c.units if u != c.unit]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONVERTIBLE), st.floats(0, 1))
def test_unit_conversion_round_trips(pair: tuple[str, str], frac: float) -> None:
    """Converting a plausible canonical value to another unit and back gives it again (6 significant digits)."""
    name, unit = pair
    c = concepts()[name]
    canonical = round(c.min + frac * (c.max - c.min), 3)
    there = from_canonical(name, canonical, unit)
    back = to_canonical(name, there, unit)
    assert back == pytest.approx(canonical, rel=1e-5, abs=1e-9)


def test_norepinephrine_salt_converts_to_base_as_sofa2_footnote_k() -> None:
    """1 mg base ≈ 2 mg bitartrate monohydrate ≈ 1.89 mg anhydrous bitartrate ≈ 1.22 mg hydrochloride."""
    assert norepinephrine_base_ug_kg_min(0.2, "bitartrate_monohydrate") == pytest.approx(0.1)
    assert norepinephrine_base_ug_kg_min(0.189, "bitartrate_anhydrous") == pytest.approx(0.1)
    assert norepinephrine_base_ug_kg_min(0.122, "hydrochloride") == pytest.approx(0.1)
    assert norepinephrine_base_ug_kg_min(0.1, "base") == 0.1
    with pytest.raises(UnitError):
        norepinephrine_base_ug_kg_min(0.1, "tartrate?")


def test_unit_spellings_are_normalised() -> None:
    """µg, μg and mcg are the same unit; K/uL means 10^3/µL."""
    assert normalise_unit("µg/kg/min") == normalise_unit("mcg/kg/min") == normalise_unit("μg/kg/min") == "ug/kg/min"
    assert normalise_unit("K/uL") == "10^3/uL"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_value_in_another_unit_is_rejected_not_crashing(value: float) -> None:
    """Infinity or NaN sent in a convertible unit is an ImplausibleValueError, never an arithmetic crash."""
    with pytest.raises(ImplausibleValueError):
        to_canonical("bilirubin_mg_per_dl", value, "umol/L")
