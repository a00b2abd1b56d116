"""Small helpers over validated models: FHIR date-times to naive UTC (date-only values at the given hour), codings,
texts and codes of a CodeableConcept, numbers as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def _time(v: Any, noon: int) -> tuple[datetime | None, bool, str | None]:
    """(naive UTC datetime, date_only, problem) from a FHIR date/dateTime/instant value."""
    if v is None:
        return None, False, "missing_time"
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v, False, None
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, noon), True, None
    return None, False, "imprecise_time"


def _codings(cc: Any) -> list[Any]:
    return list(getattr(cc, "coding", None) or []) if cc is not None else []


def _texts(cc: Any) -> list[str]:
    out = [c.display for c in _codings(cc) if getattr(c, "display", None)]
    if cc is not None and getattr(cc, "text", None):
        out.append(cc.text)
    return out


def _first_code(cc: Any) -> str:
    for c in _codings(cc):
        if c.code:
            return str(c.code)
    return str(getattr(cc, "text", None) or "(no code)") if cc is not None else "(no code)"


def _raw_code(raw: Mapping[str, Any]) -> str:
    for key in ("code", "medicationCodeableConcept"):
        cc = raw.get(key)
        if isinstance(cc, dict):
            cod = cc.get("coding")
            if isinstance(cod, list):
                for c in cod:
                    if isinstance(c, dict) and isinstance(c.get("code"), str):
                        return c["code"]
            if isinstance(cc.get("text"), str):
                return cc["text"]
    return "(no code)"


def _num(d: Decimal | float | int) -> str:
    s = format(Decimal(str(d)).normalize(), "f") if not isinstance(d, float) else repr(d)
    return s
