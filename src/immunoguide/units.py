"""Units: convert once at the boundary, check plausibility, never score an implausible value.

Every clinical concept has one canonical unit, named in the concept itself
(``bilirubin_mg_per_dl``, ``fio2_fraction``, ``platelets_10e3_per_ul``). The accepted units, their factor
to the canonical unit and the plausibility range live in ``criteria/concepts.toml``.

Conversions are **exact**: the stated value is read as the decimal it was written as (a JSON number's shortest
representation, or the text), multiplied by the unit's exact factor (a rational such as ``1/2.247`` for ferritin
in pmol/L, from the ``exact`` table of ``concepts.toml``; otherwise the decimal the factor is written as), and only
the result is rounded — once, correctly — to a double. So 9931.75 pmol/L is 4420.00445… ng/mL (> 4420, MALS) and
9931.74 pmol/L exactly 4420 (not > 4420); :func:`to_canonical_exact` keeps the exact rational for comparisons
(:func:`immunoguide.rules.measurements.decide` uses it, so no rounding can move a value across a cut-off).

Clinical date-times must lie in the plausible range of ``[dates]`` in ``concepts.toml`` (:func:`check_plausible_time`):
a sample dated year 0001 is a typing error, never a result to classify.

>>> to_canonical("bilirubin_mg_per_dl", 205.248, "µmol/L")
12.0
>>> to_canonical("fio2_fraction", 40, "%")
0.4
>>> norepinephrine_base_ug_kg_min(0.2, "bitartrate_monohydrate")
0.1
>>> to_canonical("ferritin_ng_per_ml", 9931.75, "pmol/L") > 4420, to_canonical("ferritin_ng_per_ml", 9931.74, "pmol/L")
(True, 4420.0)
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import cache
from importlib import resources
from types import MappingProxyType

from immunoguide.errors import CriteriaError, ImplausibleValueError, UnitError

__all__ = [
    "CONVERSION_SLACK",
    "NOREPINEPHRINE_SALT_TO_BASE",
    "Concept",
    "check_plausible",
    "check_plausible_time",
    "concept",
    "concepts",
    "exact_number",
    "finite_float",
    "from_canonical",
    "norepinephrine_base_ug_kg_min",
    "normalise_unit",
    "plausible_time_range",
    "to_canonical",
    "to_canonical_exact",
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
    #: unit → exact factor to the canonical unit (a rational); ``units`` holds the same factors as floats
    exact: Mapping[str, Fraction] = field(default_factory=dict)


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
        "g/dl": "g/dL",
        "g/l": "g/L",
        "u/l": "U/L",
        "iu/l": "U/L",
        "ukat/l": "ukat/L",
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


def exact_number(value: int | float | str | Decimal | Fraction, *, where: str | None = None) -> Fraction:
    """The exact rational a stated number means: a float by its shortest decimal representation (what the JSON
    text said), a text by its decimal digits, a fraction text ``"1/2.247"`` as that quotient.

    >>> exact_number(0.1), exact_number("1/2.247"), exact_number(4420)
    (Fraction(1, 10), Fraction(1000, 2247), Fraction(4420, 1))
    """
    if isinstance(value, bool):
        raise ImplausibleValueError(expected="a number", got=value, where=where, todo="send a number, not true/false")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ImplausibleValueError(expected="a finite number", got=value, where=where, todo="send a number")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ImplausibleValueError(expected="a finite number", got=str(value), where=where, todo="send a number")
        return Fraction(value)
    text = str(value).strip()
    num, sep, den = text.partition("/")
    try:
        q = Fraction(Decimal(num.strip()))
        if sep:
            q /= Fraction(Decimal(den.strip()))
    except (InvalidOperation, ZeroDivisionError, ValueError):
        raise CriteriaError(expected="a decimal number or a quotient such as 1/2.247", got=text, where=where,
                            todo="fix the factor") from None
    return q


def finite_float(q: Fraction | int | float, *, where: str | None = None) -> float:
    """``float(q)``, or :class:`~immunoguide.errors.InputTooLargeError` when it overflows a double (a 400-digit
    integer is no measurement).

    >>> finite_float(Fraction(1, 4))
    0.25
    """
    try:
        v = float(q)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        from immunoguide.errors import InputTooLargeError

        raise InputTooLargeError(expected="a number a double can hold (no measurement is that large)",
                                 got=f"{str(q)[:20]}… ({len(str(q))} characters)", where=where,
                                 todo="check the value and its unit")
    return v


@cache
def plausible_time_range() -> tuple[datetime, datetime]:
    """``(earliest, latest)`` clinical date-time accepted (``[dates]`` of ``concepts.toml``), both UTC."""
    raw = tomllib.loads(resources.files("immunoguide.criteria").joinpath("concepts.toml").read_text("utf-8"))
    d = raw["dates"]
    lo, hi = datetime.fromisoformat(d["earliest"]), datetime.fromisoformat(d["latest"])
    if lo.tzinfo is None or hi.tzinfo is None or not lo < hi:
        raise CriteriaError(expected="[dates] earliest < latest, both with a UTC offset", got=(d["earliest"], d["latest"]),
                            where="concepts.toml [dates]", todo="fix the plausible date range")
    return lo.astimezone(UTC), hi.astimezone(UTC)


def check_plausible_time(t: datetime, *, field: str, where: str | None = None) -> datetime:
    """Return ``t`` if it lies in the plausible clinical date range, else raise ImplausibleValueError.

    A naive ``t`` is compared as if it were UTC (the callers refuse naive times separately where they must).

    >>> check_plausible_time(datetime(1, 1, 1, tzinfo=UTC), field="ferritin_sample_time")
    Traceback (most recent call last):
    ...
    immunoguide.errors.ImplausibleValueError: [IG-E102] expected ferritin_sample_time between 1900-01-01 and 2300-01-01; got '0001-01-01T00:00:00+00:00'; in field ferritin_sample_time; what to do: check the date (a typing error such as year 0001 is never classified)
    """
    lo, hi = plausible_time_range()
    tt = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    if not lo <= tt < hi:
        exc = ImplausibleValueError(
            expected=f"{field} between {lo.date().isoformat()} and {hi.date().isoformat()}", got=t.isoformat(),
            where=where or f"field {field}", todo="check the date (a typing error such as year 0001 is never classified)",
        )
        exc.field = field
        raise exc
    return t


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
        where = f"concepts.toml [concepts.{name}]"
        exact: dict[str, Fraction] = {}
        for unit, factor in c["units"].items():
            stated = c.get("exact", {}).get(unit)
            q = exact_number(stated if stated is not None else repr(float(factor)), where=where)
            if stated is not None and not math.isclose(float(q), float(factor), rel_tol=1e-12):
                raise CriteriaError(expected=f"the float factor of {unit} equal to its exact factor {stated}",
                                    got=factor, where=where, todo="make units and exact agree")
            exact[normalise_unit(unit)] = q
        unknown = set(c.get("exact", {})) - set(c["units"])
        if unknown:
            raise CriteriaError(expected="exact factors only for listed units", got=sorted(unknown), where=where,
                                todo="list the unit in units too")
        out[name] = Concept(
            name=name,
            unit=c["unit"],
            min=float(c["min"]),
            max=float(c["max"]),
            units=MappingProxyType({normalise_unit(k): float(v) for k, v in c["units"].items()}),
            description=c.get("description", ""),
            integer=bool(c.get("integer", False)),
            exact=MappingProxyType(exact),
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


#: Relative slack of the plausibility check for *converted* values: a conversion of a value at a range limit may
#: land one rounding step outside it (20 kg → 44.09245243697551 lb → 19.999999999999996 kg); plausibility limits
#: exclude non-physiological values and are never clinical thresholds, so this slack changes no decision.
CONVERSION_SLACK = 1e-12


def check_plausible(name: str, value: float, *, where: str | None = None, rel_tol: float = 0.0) -> float:
    """Return ``value`` if it is a finite number inside the concept's plausibility range, else raise.

    >>> check_plausible("gcs", 16)
    Traceback (most recent call last):
    ...
    immunoguide.errors.ImplausibleValueError: [IG-E102] expected gcs (points) between 3 and 15; got 16; what to do: check the value and its unit; implausible values are never scored
    """
    c = concept(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ImplausibleValueError(
            expected=f"a finite number for {name} ({c.unit})",
            got=value,
            where=where,
            todo="send a number; leave the field out when the value is missing",
        )
    slack_lo, slack_hi = rel_tol * abs(c.min), rel_tol * abs(c.max)
    if not (c.min - slack_lo <= value <= c.max + slack_hi):
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


def to_canonical_exact(name: str, value: int | float | str | Decimal | Fraction, unit: str, *,
                       where: str | None = None) -> Fraction:
    """The exact rational ``value`` (in ``unit``) is in the concept's canonical unit (no plausibility check).

    Raises :class:`~immunoguide.errors.UnitError` for a unit the concept does not accept.

    >>> to_canonical_exact("ferritin_ng_per_ml", 9931.75, "pmol/L") > 4420
    True
    """
    c = concept(name)
    u = normalise_unit(unit)
    if u not in c.exact:
        raise UnitError(
            expected=f"{name} in one of {sorted(c.units)}",
            got=unit,
            where=where,
            todo=f"convert to {c.unit} before sending, or send a supported unit",
        )
    return exact_number(value, where=where) * c.exact[u]


def to_canonical(name: str, value: float, unit: str, *, where: str | None = None) -> float:
    """Convert ``value`` in ``unit`` to the concept's canonical unit and check plausibility.

    The product of the stated decimal and the exact factor is rounded once to the nearest double (no other
    rounding), see the module docstring. Raises :class:`~immunoguide.errors.UnitError` for a unit the concept
    does not accept and :class:`~immunoguide.errors.ImplausibleValueError` for a converted value outside the range.
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        return check_plausible(name, value, where=where)  # raises ImplausibleValueError with the usual message
    converted = finite_float(to_canonical_exact(name, value, u, where=where), where=where)
    return check_plausible(name, converted, where=where, rel_tol=0.0 if u == c.unit else CONVERSION_SLACK)


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
    return float(exact_number(value) / c.exact[u])


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
