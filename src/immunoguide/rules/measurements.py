"""Laboratory measurements that may be censored: parse, convert to the canonical unit, compare with a threshold.

Laboratories report values outside the assay's range as text ("GREATER THAN 2000", ">5000", "<15"). Such a
value is not a number but an *interval of possible true values*. This module turns a number or such a text into
a :class:`CensoredValue` (lower and upper bound, each inclusive or not), converts it once to the concept's
canonical unit through :func:`immunoguide.units.to_canonical` (which also checks plausibility) and compares it
with a threshold by :func:`decide`, which answers ``True``, ``False`` or ``None`` when the interval straddles
the threshold and the comparison cannot be decided.

Examples
--------
>>> v = parse_censored("GREATER THAN 2000")
>>> v.lower, v.lower_inclusive, v.upper
(2000.0, False, None)
>>> decide(v, ">", 4420) is None          # >2000 may or may not exceed 4420
True
>>> decide(parse_censored(">5000"), ">", 4420)
True
>>> decide(parse_censored("<15"), "<=", 4420)
True
>>> measure("ferritin_ng_per_ml", 9931.74, "pmol/L").value   # 1 ng/mL = 2.247 pmol/L
4420.0
>>> decide(measure("ferritin_ng_per_ml", 9931.75, "pmol/L"), ">", 4420)   # 4420.0045 ng/mL: exact, not rounded
True

Every value keeps, next to its float bounds, the exact rational each bound stands for (the stated decimal times
the unit's exact factor, :func:`immunoguide.units.to_canonical_exact`); :func:`decide` compares those, so a unit
conversion can never move a value across a threshold.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from immunoguide.errors import ImplausibleValueError, InputError
from immunoguide.units import (
    CONVERSION_SLACK,
    check_plausible,
    concept,
    exact_number,
    finite_float,
    normalise_unit,
    to_canonical_exact,
)

__all__ = [
    "CensoredValue",
    "Comparator",
    "decide",
    "measure",
    "check_interval_plausible",
    "parse_censored",
    "to_canonical_interval",
]

Comparator = Literal[">", ">=", "<", "<="]

# A decimal number, optionally with thousands separators written as commas ("2,000", "12,500.5").
_NUMBER = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+"
_RE_NUMBER = re.compile(rf"^(?:{_NUMBER})$")

# Censoring prefixes (upper-cased, single spaces), longest first so that "GREATER THAN OR EQUAL TO" wins over
# "GREATER THAN". Each maps to the side of the interval the number bounds and whether the bound is included.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("GREATER THAN OR EQUAL TO", ">="),
    ("MORE THAN OR EQUAL TO", ">="),
    ("LESS THAN OR EQUAL TO", "<="),
    ("GREATER THAN", ">"),
    ("MORE THAN", ">"),
    ("LESS THAN", "<"),
    ("AT LEAST", ">="),
    ("AT MOST", "<="),
    ("ABOVE", ">"),
    ("BELOW", "<"),
    (">=", ">="),
    ("=>", ">="),
    ("<=", "<="),
    ("=<", "<="),
    ("≥", ">="),
    ("≤", "<="),
    (">", ">"),
    ("<", "<"),
)


@dataclass(frozen=True)
class CensoredValue:
    """The interval of possible true values of one measurement.

    An exact value ``v`` is the closed interval ``[v, v]``; ``">2000"`` is ``(2000, +inf)``; ``"<=15"`` is
    ``(-inf, 15]``. A missing bound is ``None`` (unbounded on that side).

    Attributes
    ----------
    lower, upper : float or None
        Bounds of the interval, in the unit of the measurement (canonical after
        :func:`to_canonical_interval`); ``None`` for an open side.
    lower_inclusive, upper_inclusive : bool
        Whether the bound itself is a possible value (``">=2000"`` includes 2000, ``">2000"`` does not).
    text : str
        The value as the source wrote it (kept for provenance; ``"GREATER THAN 2000"``).
    lower_exact, upper_exact : Fraction or None
        The exact rational each bound stands for, when known (set by :func:`parse_censored` and the unit
        conversion); :func:`decide` compares these instead of the rounded floats. Not part of equality.
    """

    lower: float | None
    upper: float | None
    lower_inclusive: bool
    upper_inclusive: bool
    text: str
    lower_exact: Fraction | None = field(default=None, compare=False, repr=False)
    upper_exact: Fraction | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for b in (self.lower, self.upper):
            if b is not None and (isinstance(b, bool) or math.isnan(b) or math.isinf(b)):
                raise InputError(
                    expected="finite interval bounds (None for an open side)",
                    got=b,
                    where="CensoredValue",
                    todo="use None for an unbounded side",
                )
        if self.lower is None and self.upper is None:
            raise InputError(expected="at least one bound", got=self.text, where="CensoredValue", todo="send a number")
        if self.lower is not None and self.upper is not None:
            empty = self.lower > self.upper or (
                self.lower == self.upper and not (self.lower_inclusive and self.upper_inclusive)
            )
            if empty:
                raise InputError(
                    expected="a non-empty interval",
                    got=self.text or (self.lower, self.upper),
                    where="CensoredValue",
                    todo="check the bounds",
                )

    @classmethod
    def exact(cls, value: float, text: str | None = None) -> CensoredValue:
        """An uncensored value ``value`` (the closed interval ``[value, value]``).

        >>> CensoredValue.exact(820).describe()
        '820'
        """
        v = float(value)
        return cls(v, v, True, True, text if text is not None else f"{v:g}")

    @property
    def is_exact(self) -> bool:
        """True for an uncensored value (both bounds equal)."""
        return self.lower is not None and self.lower == self.upper

    @property
    def value(self) -> float | None:
        """The number for an exact value, ``None`` for a censored one."""
        return self.lower if self.is_exact else None

    def contains(self, x: float) -> bool:
        """Whether ``x`` is a possible true value."""
        above = self.lower is None or x > self.lower or (self.lower_inclusive and x == self.lower)
        below = self.upper is None or x < self.upper or (self.upper_inclusive and x == self.upper)
        return above and below

    def same_interval(self, other: CensoredValue) -> bool:
        """Equal bounds and inclusivity (the source text may differ: ``">2000"`` vs ``"GREATER THAN 2000"``)."""
        return (self.lower, self.upper, self.lower_inclusive, self.upper_inclusive) == (
            other.lower,
            other.upper,
            other.lower_inclusive,
            other.upper_inclusive,
        )

    def describe(self) -> str:
        """Short normalised form: ``"820"``, ``">2000"``, ``"<=15"``, ``"[10, 20)"``.

        >>> parse_censored("GREATER THAN 2,000").describe()
        '>2000'
        """
        if self.is_exact:
            return _num(self.lower)
        if self.upper is None:
            return f"{'>=' if self.lower_inclusive else '>'}{_num(self.lower)}"
        if self.lower is None:
            return f"{'<=' if self.upper_inclusive else '<'}{_num(self.upper)}"
        return (
            f"{'[' if self.lower_inclusive else '('}{_num(self.lower)}, "
            f"{_num(self.upper)}{']' if self.upper_inclusive else ')'}"
        )


def _num(x: float | None) -> str:
    """A bound for display with up to 12 significant digits (4420.00445038, not a rounded 4420)."""
    return f"{x:.12g}"


def parse_censored(raw: float | int | str, *, where: str | None = None) -> CensoredValue:
    """Parse a number or a censored laboratory text into a :class:`CensoredValue`.

    Accepted: numbers; numeric text (``"302"``, ``"2,000"``, ``"1.5"``); a comparison word or sign followed by a
    number (``"GREATER THAN 2000"``, ``">2000"``, ``">= 2000"``, ``"≥2000"``, ``"<15"``, ``"LESS THAN 15"``,
    ``"AT LEAST 5"``). Case and spaces do not matter.

    Parameters
    ----------
    raw : float, int or str
        The value as received (unit separate: send the unit in its own field).
    where : str, optional
        Location for error messages (``"line 3, field ferritin"``).

    Returns
    -------
    CensoredValue
        In the unit of ``raw``.

    Raises
    ------
    InputError
        For anything else: placeholders such as ``"DONE"`` or ``"see comment"``, empty text, a value with its
        unit inside the text, a decimal comma (``"2,5"``), booleans, NaN or infinity.

    Examples
    --------
    >>> parse_censored(">= 2000")
    CensoredValue(lower=2000.0, upper=None, lower_inclusive=True, upper_inclusive=False, text='>= 2000')
    >>> parse_censored("DONE")
    Traceback (most recent call last):
    ...
    immunoguide.errors.InputError: [IG-E100] expected a number or a censored value such as '>2000', '<15' or 'GREATER THAN 2000'; got 'DONE'; what to do: send the numeric result; placeholders ('DONE', 'see comment') are not results
    """
    if isinstance(raw, bool):
        raise InputError(
            expected="a number or a censored value text", got=raw, where=where, todo="send the numeric result"
        )
    if isinstance(raw, (int, float)):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise InputError(
                expected="a finite number",
                got=raw,
                where=where,
                todo="leave the field out (null) when the value is missing",
            )
        q = exact_number(raw, where=where)
        v = finite_float(q, where=where)
        return CensoredValue(v, v, True, True, str(raw)[:64], q, q)
    if not isinstance(raw, str):
        raise InputError(
            expected="a number or a censored value text",
            got=type(raw).__name__,
            where=where,
            todo="send a number or a text such as '>2000'",
        )
    text = " ".join(raw.strip().upper().split())
    comparator: str | None = None
    rest = text
    for prefix, cmp in _PREFIXES:
        if text.startswith(prefix):
            comparator, rest = cmp, text[len(prefix) :].strip()
            break
    if not _RE_NUMBER.match(rest):
        todo = "send the numeric result; placeholders ('DONE', 'see comment') are not results"
        if re.match(r"^[+-]?\d+,\d{1,2}$|^[+-]?\d+,\d{4,}$", rest):
            todo = "write decimals with a point ('2.5'); a comma is read only as a thousands separator ('2,000')"
        elif re.match(rf"^(?:{_NUMBER})\s*\S", rest):
            todo = "send the unit in its own field, not inside the value"
        raise InputError(
            expected="a number or a censored value such as '>2000', '<15' or 'GREATER THAN 2000'",
            got=raw,
            where=where,
            todo=todo,
        )
    if len(rest) > 40:
        raise InputError(expected="a number written with at most 40 characters", got=raw[:40] + "…", where=where,
                         todo="send the result as the laboratory reports it")
    exact = Fraction(Decimal(rest.replace(",", "")))
    number = finite_float(exact, where=where)
    if comparator is None:
        return CensoredValue(number, number, True, True, raw, exact, exact)
    if comparator in (">", ">="):
        return CensoredValue(number, None, comparator == ">=", False, raw, exact, None)
    return CensoredValue(None, number, False, comparator == "<=", raw, None, exact)


def to_canonical_interval(name: str, value: CensoredValue, unit: str, *, where: str | None = None) -> CensoredValue:
    """Convert both bounds of ``value`` from ``unit`` to the canonical unit of concept ``name``.

    Each finite bound goes through :func:`immunoguide.units.to_canonical` (so an unknown unit raises
    :class:`~immunoguide.errors.UnitError` and an implausible bound
    :class:`~immunoguide.errors.ImplausibleValueError`); an interval that holds no plausible value at all
    (``"<0"``) is rejected too. The source text is kept.

    >>> to_canonical_interval("ferritin_ng_per_ml", parse_censored(">4494"), "pmol/L").describe()
    '>2000'
    """
    def convert(bound: float | None, exact: Fraction | None) -> tuple[float | None, Fraction | None]:
        if bound is None:
            return None, None
        q = to_canonical_exact(name, exact if exact is not None else bound, unit, where=where)
        slack = 0.0 if normalise_unit(unit) == concept(name).unit else CONVERSION_SLACK
        return check_plausible(name, finite_float(q, where=where), where=where, rel_tol=slack), q

    lower, lower_q = convert(value.lower, value.lower_exact)
    upper, upper_q = convert(value.upper, value.upper_exact)
    out = CensoredValue(lower, upper, value.lower_inclusive, value.upper_inclusive, value.text, lower_q, upper_q)
    check_interval_plausible(name, out, where=where)
    return out


def check_interval_plausible(name: str, value: CensoredValue, *, where: str | None = None) -> CensoredValue:
    """Return ``value`` (canonical unit of ``name``) if some possible value lies in the concept's plausibility range.

    >>> check_interval_plausible("ferritin_ng_per_ml", parse_censored("<0"))
    Traceback (most recent call last):
    ...
    immunoguide.errors.ImplausibleValueError: [IG-E102] expected ferritin_ng_per_ml (ng/mL) with some possible value between 0 and 500000; got '<0'; what to do: check the value and its unit; implausible values are never used
    """
    c = concept(name)
    # The interval must share at least one value with the plausibility range [min, max].
    if value.lower is None or value.lower < c.min:
        lo, lo_in = c.min, True
    else:
        lo, lo_in = value.lower, value.lower_inclusive
    if value.upper is None or value.upper > c.max:
        hi, hi_in = c.max, True
    else:
        hi, hi_in = value.upper, value.upper_inclusive
    if not (lo < hi or (lo == hi and lo_in and hi_in)):
        raise ImplausibleValueError(
            expected=f"{name} ({c.unit}) with some possible value between {c.min:g} and {c.max:g}",
            got=value.text,
            where=where,
            todo="check the value and its unit; implausible values are never used",
        )
    return value


def measure(name: str, raw: float | int | str, unit: str, *, where: str | None = None) -> CensoredValue:
    """Parse ``raw`` (number or censored text) in ``unit`` and return it in the canonical unit of ``name``.

    Parameters
    ----------
    name : str
        Concept (``"ferritin_ng_per_ml"``, ``"hla_dr_per_monocyte"``).
    raw : float, int or str
        Number or censored text (see :func:`parse_censored`).
    unit : str
        Unit of ``raw``; must be one the concept accepts (ferritin: ng/mL, µg/L, pmol/L).

    Raises
    ------
    InputError, UnitError, ImplausibleValueError

    Examples
    --------
    >>> measure("ferritin_ng_per_ml", "LESS THAN 15", "ug/L").describe()
    '<15'
    >>> measure("ferritin_ng_per_ml", 5, "mg/L")
    Traceback (most recent call last):
    ...
    immunoguide.errors.UnitError: [IG-E101] expected ferritin_ng_per_ml in one of ['ng/mL', 'pmol/L', 'ug/L']; got 'mg/L'; what to do: convert to ng/mL before sending, or send a supported unit
    """
    return to_canonical_interval(name, parse_censored(raw, where=where), unit, where=where)


def decide(value: CensoredValue, comparator: str, threshold: float) -> bool | None:
    """Whether every possible true value satisfies ``x <comparator> threshold``.

    Returns ``True`` when all values in the interval satisfy it, ``False`` when none does, and ``None`` when
    the interval straddles the threshold (the comparison cannot be decided). Strict and non-strict comparators
    are kept exactly: ``4420 > 4420`` is False, ``4420 <= 4420`` is True.

    Parameters
    ----------
    value : CensoredValue
        Interval of possible values (same unit as ``threshold``).
    comparator : {">", ">=", "<", "<="}
    threshold : float

    Examples
    --------
    >>> decide(CensoredValue.exact(4420), ">", 4420), decide(CensoredValue.exact(4420.01), ">", 4420)
    (False, True)
    >>> decide(parse_censored(">4420"), ">", 4420), decide(parse_censored(">=4420"), ">", 4420)
    (True, None)
    """
    lo: float | Fraction | None = value.lower_exact if value.lower_exact is not None else value.lower
    hi: float | Fraction | None = value.upper_exact if value.upper_exact is not None else value.upper
    lo_in, hi_in = value.lower_inclusive, value.upper_inclusive
    t = float(threshold)
    if comparator == ">":
        if lo is not None and (lo > t or (lo == t and not lo_in)):
            return True
        if hi is not None and hi <= t:
            return False
        return None
    if comparator == ">=":
        if lo is not None and lo >= t:
            return True
        if hi is not None and (hi < t or (hi == t and not hi_in)):
            return False
        return None
    if comparator == "<":
        if hi is not None and (hi < t or (hi == t and not hi_in)):
            return True
        if lo is not None and lo >= t:
            return False
        return None
    if comparator == "<=":
        if hi is not None and hi <= t:
            return True
        if lo is not None and (lo > t or (lo == t and not lo_in)):
            return False
        return None
    raise InputError(
        expected="a comparator in ('>', '>=', '<', '<=')", got=comparator, where="decide", todo="fix the rule"
    )
