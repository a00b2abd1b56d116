"""The dashboard's forms: an ``application/x-www-form-urlencoded`` body with typed getters (errors name the field),
the fields the forms offer, and the records built from them for the trial functions.

Examples
--------
>>> _parse_time("2025-03-03T10:00+01:00", "given_at").isoformat()
'2025-03-03T10:00:00+01:00'
>>> _number_or_text("<2000"), _number_or_text("820"), _number_or_text("6.5")
('<2000', 820, 6.5)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request

from immunoguide.errors import InputError

_MAX_FORM_BYTES = 64 * 1024
#: SOFA input fields offered on the follow-up form (SofaInputs fields, canonical units in the names).
_SOFA_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("pao2_mmhg", "PaO2", "mmHg"),
    ("fio2_fraction", "FiO2", "fraction 0.21-1"),
    ("platelets_10e3_per_ul", "Platelets", "10^3/uL"),
    ("bilirubin_mg_per_dl", "Bilirubin", "mg/dL"),
    ("map_mmhg", "MAP", "mmHg"),
    ("norepinephrine_ug_kg_min", "Norepinephrine", "ug/kg/min"),
    ("dopamine_ug_kg_min", "Dopamine", "ug/kg/min"),
    ("dobutamine_ug_kg_min", "Dobutamine", "ug/kg/min"),
    ("epinephrine_ug_kg_min", "Epinephrine", "ug/kg/min"),
    ("gcs", "GCS", "3-15"),
    ("creatinine_mg_per_dl", "Creatinine", "mg/dL"),
    ("urine_output_ml_per_day", "Urine output", "mL/day"),
)
_SOFA_BOOL_FIELDS = (("respiratory_support", "Respiratory support (IMV/NIV)"),)
#: Safety laboratory analytes of the form: (field prefix, label, units offered).
_SAFETY_ANALYTES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hemoglobin", "Haemoglobin", ("g/dL", "g/L")),
    ("platelets", "Platelets", ("10^9/L", "10^3/uL", "/uL")),
    ("neutrophils", "Neutrophils", ("10^9/L", "/mm3")),
    ("lymphocytes", "Lymphocytes", ("10^9/L", "/mm3")),
    ("bilirubin", "Bilirubin", ("umol/L", "mg/dL")),
    ("creatinine", "Creatinine", ("umol/L", "mg/dL")),
    ("ast", "AST", ("U/L", "ukat/L")),
    ("alt", "ALT", ("U/L", "ukat/L")),
)
_SCREEN_FLAGS = (
    ("covid19", "COVID-19"),
    ("mechanical_ventilation", "Mechanical ventilation"),
    ("stage_iv_malignancy", "Stage IV malignancy"),
    ("dnr_order", "Do-not-resuscitate order"),
    ("bsi_skin_commensal_or_catheter_related", "Bacteremia: skin commensal or catheter-related"),
    ("unwilling_to_become_pregnant", "Women: unwilling to become pregnant"),
)


class _Form:
    """An ``application/x-www-form-urlencoded`` body (last value of each field), with typed getters that raise
    :class:`~immunoguide.errors.InputError` naming the field."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self._f = {k: v[-1].strip() for k, v in fields.items() if v}

    def get(self, name: str) -> str | None:
        v = self._f.get(name)
        return v if v else None

    def text(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise InputError(expected=f"a value for {name}", got=None, where=f"form field {name}",
                             todo="fill in the field", field=name)
        return v

    def number(self, name: str) -> float | None:
        v = self.get(name)
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            raise InputError(expected=f"a number for {name}", got=v, where=f"form field {name}",
                             todo="enter a number (decimal point '.')", field=name) from None

    def integer(self, name: str) -> int | None:
        v = self.get(name)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise InputError(expected=f"a whole number for {name}", got=v, where=f"form field {name}",
                             todo="enter a whole number", field=name) from None

    def yes_no(self, name: str) -> bool | None:
        v = self.get(name)
        if v is None or v == "unknown":
            return None
        if v in ("yes", "no"):
            return v == "yes"
        raise InputError(expected=f"yes, no or unknown for {name}", got=v, where=f"form field {name}",
                         todo="choose yes, no or unknown", field=name)

    def time(self, name: str) -> datetime | None:
        v = self.get(name)
        return None if v is None else _parse_time(v, name)

    def required_time(self, name: str) -> datetime:
        return _parse_time(self.text(name), name)

    def required_integer(self, name: str) -> int:
        v = self.integer(name)
        if v is None:
            raise InputError(expected=f"a whole number for {name}", got=None, where=f"form field {name}",
                             todo="fill in the field", field=name)
        return v


def _parse_time(text: str, field: str) -> datetime:
    """An ISO 8601 date-time from a form (the trial functions refuse one without a UTC offset)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InputError(expected=f"an ISO 8601 date-time with UTC offset for {field}", got=text,
                         where=f"form field {field}", todo="write e.g. 2025-03-03T08:30+01:00", field=field) from None


def _number_or_text(v: str) -> int | float | str:
    """A lab value: a number (an integer stays one), or the text as reported (censored values such as ``<2000``)."""
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


async def _read_form(request: Request) -> _Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InputError(expected="an HTML form (application/x-www-form-urlencoded)", got=ctype or None,
                         where="request body", todo="submit the page's form")
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise InputError(expected=f"a form of at most {_MAX_FORM_BYTES} bytes", got=f"{len(body)} bytes",
                         where="request body", todo="shorten the entries")
    try:
        return _Form(parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(expected="a UTF-8 form body", got=str(exc)[:100], where="request body",
                         todo="submit the page's form") from None


def _lab_record(form: _Form) -> dict[str, Any]:
    """The lab fields of a form as the record ``enter_labs`` / ``record_followup`` expect."""
    rec: dict[str, Any] = {}
    for analyte in ("ferritin", "hla_dr"):
        v = form.get(analyte)
        if v is None:
            continue
        rec[analyte] = _number_or_text(v)
        for suffix in ("unit", "method", "sample_time", "receipt_time", "result_time"):
            x = form.get(f"{analyte}_{suffix}")
            if x is not None:
                rec[f"{analyte}_{suffix}"] = x
    return rec


def _safety_lab_record(form: _Form) -> dict[str, Any]:
    """The safety-lab fields of a form as the record ``record_safety_labs`` expects."""
    rec: dict[str, Any] = {}
    for name in ("sample_time", "result_time", "source"):
        text = form.get(f"safety_{name}")
        if text is not None:
            rec[name] = text
    for analyte, _, _ in _SAFETY_ANALYTES:
        v = form.number(analyte)
        if v is None:
            continue
        rec[analyte] = v
        rec[f"{analyte}_unit"] = form.get(f"{analyte}_unit")
        for lim in ("lln", "uln"):
            x = form.number(f"{analyte}_{lim}")
            if x is not None:
                rec[f"{analyte}_{lim}"] = x
    return rec
