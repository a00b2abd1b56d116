"""Units: convert once at the boundary, check plausibility, never score an implausible value.

Every clinical concept has one canonical unit, named in the concept itself
(``bilirubin_mg_per_dl``, ``fio2_fraction``, ``platelets_10e3_per_ul``). The accepted units, their factor
to the canonical unit and the plausibility range live in ``criteria/concepts.toml``.

>>> to_canonical("bilirubin_mg_per_dl", 205.248, "µmol/L")
12.0
>>> to_canonical("fio2_fraction", 40, "%")
0.4
>>> norepinephrine_base_ug_kg_min(0.2, "bitartrate_monohydrate")
0.1
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

from immunoguide.errors import CriteriaError, ImplausibleValueError, UnitError

__all__ = [
    "NOREPINEPHRINE_SALT_TO_BASE",
    "Concept",
    "check_plausible",
    "concept",
    "concepts",
    "from_canonical",
    "norepinephrine_base_ug_kg_min",
    "normalise_unit",
    "to_canonical",
]

#: SOFA-2 footnote k (Ranzani 2025, as transcribed in the reference doc §3.3): 1 mg norepinephrine base
#: ≈ 2 mg bitartrate monohydrate ≈ 1.89 mg anhydrous bitartrate ≈ 1.22 mg hydrochloride.
NOREPINEPHRINE_SALT_TO_BASE: Mapping[str, float] = MappingProxyType(
    {
        "base": 1.0,
        "bitartrate_monohydrate": 1 / 2.0,
        "bitartrate_anhydrous": 1 / 1.89,
        "hydrochloride": 1 / 1.22,
    }
)


@dataclass(frozen=True)
class Concept:
    """One clinical concept: canonical unit, accepted units and plausibility range."""

    name: str
    unit: str
    min: float
    max: float
    units: Mapping[str, float]
    description: str
    integer: bool = False


def normalise_unit(unit: str) -> str:
    """Spell a unit the way ``concepts.toml`` does: ``µg``/``mcg`` → ``ug``, case of common units fixed.

    >>> normalise_unit("mcg/kg/min")
    'ug/kg/min'
    >>> normalise_unit("K/uL")
    '10^3/uL'
    """
    u = unit.strip()
    for a, b in (("µ", "u"), ("μ", "u"), ("mcg", "ug")):
        u = u.replace(a, b)
    low = u.lower().replace(" ", "")
    table = {
        "mmhg": "mmHg",
        "kpa": "kPa",
        "mg/dl": "mg/dL",
        "umol/l": "umol/L",
        "k/ul": "10^3/uL",
        "x10^3/ul": "10^3/uL",
        "10^3/ul": "10^3/uL",
        "10e3/ul": "10^3/uL",
        "10^9/l": "10^9/L",
        "/ul": "/uL",
        "/mm3": "/mm3",
        "cells/ul": "/uL",
        "ng/ml": "ng/mL",
        "ug/l": "ug/L",
        "pmol/l": "pmol/L",
        "mmol/l": "mmol/L",
        "meq/l": "mEq/L",
        "ml/day": "mL/day",
        "ml/d": "mL/day",
        "ml/24h": "mL/day",
        "l/day": "L/day",
        "ml": "mL",
        "ml/kg/h": "mL/kg/h",
        "ml/kg/hr": "mL/kg/h",
        "ml/min": "mL/min",
        "ug/kg/min": "ug/kg/min",
        "mg/kg/min": "mg/kg/min",
        "ug/kg/h": "ug/kg/h",
        "ug/kg/hr": "ug/kg/h",
        "percent": "%",
        "%": "%",
        "fraction": "fraction",
        "ab/c": "AB/c",
        "abc": "AB/c",
        "antibodies/cell": "AB/c",
        "molecules/cell": "AB/c",
        "receptors/monocyte": "AB/c",
        "points": "points",
        "kg": "kg",
        "g": "g",
        "lb": "lb",
        "years": "years",
        "ph": "pH",
    }
    return table.get(low, u)


@cache
def concepts() -> Mapping[str, Concept]:
    """All concepts from ``criteria/concepts.toml`` (loaded and validated once)."""
    raw = tomllib.loads(resources.files("immunoguide.criteria").joinpath("concepts.toml").read_text("utf-8"))
    out: dict[str, Concept] = {}
    for name, c in raw["concepts"].items():
        if not c["min"] <= c["max"]:
            raise CriteriaError(
                expected="min <= max",
                got=(c["min"], c["max"]),
                where=f"concepts.toml [concepts.{name}]",
                todo="fix the plausibility range",
            )
        if c["unit"] not in c["units"] or c["units"][c["unit"]] != 1.0:
            raise CriteriaError(
                expected=f"the canonical unit {c['unit']!r} listed in units with factor 1.0",
                got=dict(c["units"]),
                where=f"concepts.toml [concepts.{name}]",
                todo="add the canonical unit with factor 1.0",
            )
        out[name] = Concept(
            name=name,
            unit=c["unit"],
            min=float(c["min"]),
            max=float(c["max"]),
            units=MappingProxyType({normalise_unit(k): float(v) for k, v in c["units"].items()}),
            description=c.get("description", ""),
            integer=bool(c.get("integer", False)),
        )
    return MappingProxyType(out)


def concept(name: str) -> Concept:
    """Look up one concept by its canonical name (``ferritin_ng_per_ml``)."""
    try:
        return concepts()[name]
    except KeyError:
        raise UnitError(
            expected="a known concept name",
            got=name,
            where="units.concept",
            todo=f"use one of: {', '.join(sorted(concepts()))}",
        ) from None


def check_plausible(name: str, value: float, *, where: str | None = None) -> float:
    """Return ``value`` if it is a finite number inside the concept's plausibility range, else raise.

    >>> check_plausible("gcs", 16)
    Traceback (most recent call last):
    ...
    immunoguide.errors.ImplausibleValueError: [IG-E102] expected gcs (points) between 3 and 15; got 16; what to do: check the value and its unit; implausible values are never scored
    """
    c = concept(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ImplausibleValueError(
            expected=f"a finite number for {name} ({c.unit})",
            got=value,
            where=where,
            todo="send a number; leave the field out when the value is missing",
        )
    if not (c.min <= value <= c.max):
        raise ImplausibleValueError(
            expected=f"{name} ({c.unit}) between {c.min:g} and {c.max:g}",
            got=value,
            where=where,
            todo="check the value and its unit; implausible values are never scored",
        )
    if c.integer and float(value) != int(value):
        raise ImplausibleValueError(
            expected=f"a whole number for {name}",
            got=value,
            where=where,
            todo="send the integer score",
        )
    return float(value)


def to_canonical(name: str, value: float, unit: str, *, where: str | None = None) -> float:
    """Convert ``value`` in ``unit`` to the concept's canonical unit and check plausibility.

    Raises :class:`~immunoguide.errors.UnitError` for a unit the concept does not accept and
    :class:`~immunoguide.errors.ImplausibleValueError` for a converted value outside the range.
    """
    c = concept(name)
    u = normalise_unit(unit)
    if u not in c.units:
        raise UnitError(
            expected=f"{name} in one of {sorted(c.units)}",
            got=unit,
            where=where,
            todo=f"convert to {c.unit} before sending, or send a supported unit",
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return check_plausible(name, value, where=where)  # raises ImplausibleValueError with the usual message
    converted = float(value) * c.units[u]
    # Round away binary noise from the factor so that exact table edges stay exact (205.248 umol/L -> 12.0).
    converted = round(converted, 10)
    if u != c.unit:
        converted = _snap(converted)
    return check_plausible(name, converted, where=where)


def from_canonical(name: str, value: float, unit: str) -> float:
    """Express a canonical value in another accepted unit (the inverse of :func:`to_canonical`)."""
    c = concept(name)
    u = normalise_unit(unit)
    if u not in c.units:
        raise UnitError(
            expected=f"{name} in one of {sorted(c.units)}",
            got=unit,
            where="units.from_canonical",
            todo=f"use one of {sorted(c.units)}",
        )
    return value / c.units[u]


def _snap(x: float) -> float:
    """Round a converted value to 6 significant digits (clinical precision; keeps table edges exact)."""
    if x == 0:
        return 0.0
    digits = 6 - int(math.floor(math.log10(abs(x)))) - 1
    return round(x, max(digits, 0))


def norepinephrine_base_ug_kg_min(dose_ug_kg_min: float, salt: str) -> float:
    """Convert a norepinephrine dose charted as a salt to the base dose SOFA-2 scores (footnote k).

    >>> round(norepinephrine_base_ug_kg_min(0.244, "hydrochloride"), 3)
    0.2
    """
    try:
        factor = NOREPINEPHRINE_SALT_TO_BASE[salt]
    except KeyError:
        raise UnitError(
            expected=f"norepinephrine salt in {sorted(NOREPINEPHRINE_SALT_TO_BASE)}",
            got=salt,
            where="norepinephrine_salt",
            todo="state how the pharmacy labels the dose (base or which salt)",
        ) from None
    return dose_ug_kg_min * factor
