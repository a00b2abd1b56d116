"""The screening-record vocabulary protocol criteria are written against: :class:`PatientRecord` and its time points.

A protocol's eligibility criteria name patient fields (``flag = "dnr_order"``, ``field = "consent"``, a window from
``sepsis3_onset`` to ``first_dose``); the loader checks those names against this record, and the eligibility rules
(:mod:`immunoguide.rules.eligibility`) evaluate criteria on it. The record belongs to the protocol format, so
``protocols`` never imports ``rules``.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from immunoguide.errors import InputError
from immunoguide.jsonsafe import refuse_json_type_mismatch
from immunoguide.units import check_plausible, check_plausible_time, concepts

__all__ = ["TIME_POINT_FIELDS", "PatientRecord", "Provenance"]

#: Where each protocol time point is found in a :class:`PatientRecord`.
TIME_POINT_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "sepsis3_onset": "sepsis3_onset_time",
        "sepsis_onset": "sepsis_onset_time",
        "hospital_admission": "hospital_admission_time",
        "icu_admission": "icu_admission_time",
        "first_dose": "planned_first_dose_time",
    }
)

#: Numeric fields and the concept (unit, plausibility range) each is checked against.
_NUMERIC_CONCEPT: Mapping[str, str] = MappingProxyType(
    {
        "age_years": "age_years",
        "anc_per_mm3": "anc_per_mm3",
        "weight_kg": "weight_kg",
        "creatinine_clearance_ml_per_min": "creatinine_clearance_ml_per_min",
        "apache_ii_points": "apache_ii_points",
        "charlson_index_points": "charlson_index_points",
    }
)


class Provenance(BaseModel):
    """When a value was observed and where it comes from (lab system, CRF page, note)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: datetime | None = None
    source: str | None = None


class PatientRecord(BaseModel):
    """What screening knows about one patient; every field is optional and ``None`` means unknown.

    Quantities are in the canonical unit named in the field (``anc_per_mm3``) and checked for plausibility;
    other concepts go into ``labs`` (concept name → value in its canonical unit), protocol-specific yes/no facts
    into ``flags`` (declared in the protocol's ``[vocabularies.flags]``). ``endotype`` is the label produced by the
    endotype classifier (:mod:`immunoguide.rules.endotype`). ``provenance`` gives, per field (or lab/flag name),
    the time and source of the value; ``source`` is the default source of every value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: str | None = None
    source: str | None = None
    provenance: dict[str, Provenance] = Field(default_factory=dict)

    age_years: float | None = None
    sex: Literal["female", "male"] | None = None
    pregnant: bool | None = None
    unwilling_to_become_pregnant: bool | None = None
    consent: Literal["patient", "first_degree_relative", "spouse", "refused"] | None = None
    infection_source: str | None = None
    covid19: bool | None = None
    admission_source: Literal["emergency_department", "hospitalised"] | None = None
    sofa_total: int | None = None
    sofa_admission: int | None = None
    sepsis3_onset_time: datetime | None = None
    sepsis_onset_time: datetime | None = None
    hospital_admission_time: datetime | None = None
    icu_admission_time: datetime | None = None
    planned_first_dose_time: datetime | None = None
    endotype: str | None = None
    stage_iv_malignancy: bool | None = None
    dnr_order: bool | None = None
    bsi_skin_commensal_or_catheter_related: bool | None = None
    anc_per_mm3: float | None = None
    weight_kg: float | None = None
    creatinine_clearance_ml_per_min: float | None = None
    #: Severity and comorbidity at screening (Table 1; SAP subgroups APACHE II >= 25, CCI >= 5; spec §5.2, §6.3)
    apache_ii_points: int | None = None
    charlson_index_points: int | None = None
    mechanical_ventilation: bool | None = None
    labs: dict[str, float] = Field(default_factory=dict)
    flags: dict[str, bool] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data: Any) -> Any:
        """A boolean is never a number (``true`` is not an age of 1), a number never a yes/no."""
        refuse_json_type_mismatch(cls, data, where="patient record")
        return data

    @model_validator(mode="after")
    def _check(self) -> PatientRecord:
        typed, times = _field_names(type(self))
        for name in times:
            t = getattr(self, name)
            if t is not None:
                check_plausible_time(t, field=name)
        for name, conc in _NUMERIC_CONCEPT.items():
            v = getattr(self, name)
            if v is not None:
                check_plausible(conc, v, where=f"field {name}")
        for name in ("sofa_total", "sofa_admission"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 24:
                raise InputError(
                    expected=f"{name} between 0 and 24 points",
                    got=v,
                    where=f"field {name}",
                    todo="send the total SOFA score",
                    field=name,
                )
        for name, v in self.labs.items():
            if name not in concepts():
                raise InputError(
                    expected="lab values keyed by a concept of criteria/concepts.toml",
                    got=name,
                    where="field labs",
                    todo="use the canonical concept name (e.g. ferritin_ng_per_ml) and its unit",
                    field=f"labs.{name}",
                )
            check_plausible(name, v, where=f"labs.{name}")
        for name in self.flags:
            if name in typed:
                raise InputError(
                    expected="protocol-specific flags only (typed fields go in their own field)",
                    got=name,
                    where="field flags",
                    todo=f"send {name} as a top-level field",
                    field=f"flags.{name}",
                )
        for name in self.provenance:
            if name not in typed and name not in self.labs and name not in self.flags:
                raise InputError(
                    expected="provenance for a field, lab or flag of this record",
                    got=name,
                    where="field provenance",
                    todo="key provenance by the field name it describes",
                    field=f"provenance.{name}",
                )
        return self

    @classmethod
    def flag_fields(cls) -> set[str]:
        """Typed yes/no fields (usable as ``flag`` in a protocol)."""
        return {n for n, f in cls.model_fields.items() if f.annotation == (bool | None)}

    @classmethod
    def categorical_fields(cls) -> dict[str, tuple[str, ...]]:
        """Typed categorical fields and their values (usable in ``value_in`` and conditions)."""
        out: dict[str, tuple[str, ...]] = {}
        for n, f in cls.model_fields.items():
            for arg in typing.get_args(f.annotation):
                if typing.get_origin(arg) is Literal:
                    out[n] = tuple(typing.get_args(arg))
        return out

    def value_of(self, name: str) -> Any:
        """A typed field, else a lab (by concept), else a protocol flag; None when absent."""
        if name in _field_names(type(self))[0]:
            return getattr(self, name)
        if name in self.labs:
            return self.labs[name]
        return self.flags.get(name)


@functools.cache
def _field_names(model: type[BaseModel]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The typed field names of a record class, and (in declaration order) those that hold a time.

    Fixed when the class is built; read once per class rather than once per record and per value looked up (a
    cohort builds a record per stay and eligibility looks up about twenty values in each).
    """
    times = tuple(n for n, f in model.model_fields.items() if datetime in typing.get_args(f.annotation))
    return frozenset(model.model_fields), times
