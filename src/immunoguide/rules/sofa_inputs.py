"""The inputs of one SOFA scoring window and the input rules shared by SOFA-1 and SOFA-2.

This module sits below :mod:`immunoguide.rules.sofa` (SOFA-1 and :func:`~immunoguide.rules.sofa.score_sofa`) and
:mod:`immunoguide.rules.sofa2`, which both import it, so neither imports the other's internals: the input model
(:class:`SofaInputs`), the result (:class:`SofaResult`, :func:`finalise`) and the shared resolutions of FiO2, MAP,
urine, GCS and catecholamine duration. Constants and vocabularies come from
:data:`immunoguide.criteria.definitions.SOFA_DEFINITIONS` (``criteria/sofa_definitions.toml``).

>>> SofaInputs(gcs=14, sedated=True).gcs
14
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from immunoguide.criteria import Criteria
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import ConflictingInputError, ImplausibleValueError, InputError
from immunoguide.jsonsafe import refuse_json_type_mismatch
from immunoguide.units import CONVERSION_SLACK, check_plausible, to_canonical

__all__ = [
    "COMPONENTS",
    "NorepinephrineSalt",
    "SofaInputs",
    "SofaResult",
    "Ventilation",
    "drug_rate_counts",
    "effective_gcs",
    "finalise",
    "fio2_for_ratio",
    "mean_arterial_pressure",
    "urine_ml_per_day",
]

#: The six SOFA components, in the order every output uses. SOFA-2 organ names map onto them
#: (brain → cns, respiratory → respiration, kidney → renal, hemostasis → coagulation).
COMPONENTS: tuple[str, ...] = ("respiration", "coagulation", "liver", "cardiovascular", "cns", "renal")

Ventilation = Literal["invasive", "tracheostomy_ventilated", "noninvasive", "cpap", "hfnc", "oxygen", "none"]
NorepinephrineSalt = Literal["base", "bitartrate_monohydrate", "bitartrate_anhydrous", "hydrochloride"]

#: Input fields that hold a measured quantity, and the concept (unit, plausibility) each one is checked against.
_FIELD_CONCEPT: Mapping[str, str] = MappingProxyType(
    {
        "pao2_mmhg": "pao2_mmhg",
        "fio2_fraction": "fio2_fraction",
        "spo2_percent": "spo2_percent",
        "platelets_10e3_per_ul": "platelets_10e3_per_ul",
        "bilirubin_mg_per_dl": "bilirubin_mg_per_dl",
        "map_mmhg": "map_mmhg",
        "sbp_mmhg": "sbp_mmhg",
        "dbp_mmhg": "dbp_mmhg",
        "dopamine_ug_kg_min": "dopamine_ug_kg_min",
        "dobutamine_ug_kg_min": "dobutamine_ug_kg_min",
        "epinephrine_ug_kg_min": "epinephrine_ug_kg_min",
        "norepinephrine_ug_kg_min": "norepinephrine_ug_kg_min",
        "gcs": "gcs",
        "gcs_motor": "gcs_motor",
        "gcs_presedation": "gcs",
        "creatinine_mg_per_dl": "creatinine_mg_per_dl",
        "urine_output_ml_per_day": "urine_output_ml_per_day",
        "urine_ml_per_kg_per_h_6h": "urine_output_ml_per_kg_per_h",
        "urine_ml_per_kg_per_h_12h": "urine_output_ml_per_kg_per_h",
        "urine_ml_per_kg_per_h_24h": "urine_output_ml_per_kg_per_h",
        "potassium_mmol_per_l": "potassium_mmol_per_l",
        "ph": "ph",
        "bicarbonate_mmol_per_l": "bicarbonate_mmol_per_l",
    }
)

#: Alternative spellings accepted at the boundary: field → (canonical field, concept, unit of the field).
_ALTERNATIVES: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "fio2_percent": ("fio2_fraction", "fio2_fraction", "%"),
        "pao2_kpa": ("pao2_mmhg", "pao2_mmhg", "kPa"),
        "bilirubin_umol_per_l": ("bilirubin_mg_per_dl", "bilirubin_mg_per_dl", "umol/L"),
        "creatinine_umol_per_l": ("creatinine_mg_per_dl", "creatinine_mg_per_dl", "umol/L"),
        "platelets_per_ul": ("platelets_10e3_per_ul", "platelets_10e3_per_ul", "/uL"),
        "platelets_10e9_per_l": ("platelets_10e3_per_ul", "platelets_10e3_per_ul", "10^9/L"),
    }
)


class SofaInputs(BaseModel):
    """The worst values of one scoring window, in canonical units (``None`` = not measured).

    Build it from an external record with :meth:`from_record`, which accepts the unit variants
    (``fio2_percent``, ``bilirubin_umol_per_l`` …), converts them once and checks plausibility.
    Fields used only by SOFA-2 are ignored by SOFA-1 and vice versa.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # respiration
    pao2_mmhg: float | None = None
    fio2_fraction: float | None = None
    spo2_percent: float | None = None
    respiratory_support: bool | None = None
    ventilation: Ventilation | None = None
    advanced_respiratory_support: bool | None = None
    ecmo: Literal["none", "venovenous", "venoarterial"] | None = None
    respiratory_support_unavailable: bool | None = None
    # coagulation / liver
    platelets_10e3_per_ul: float | None = None
    bilirubin_mg_per_dl: float | None = None
    # cardiovascular
    map_mmhg: float | None = None
    sbp_mmhg: float | None = None
    dbp_mmhg: float | None = None
    dopamine_ug_kg_min: float | None = None
    dobutamine_ug_kg_min: float | None = None
    epinephrine_ug_kg_min: float | None = None
    norepinephrine_ug_kg_min: float | None = None
    dopamine_duration_min: float | None = None
    dobutamine_duration_min: float | None = None
    epinephrine_duration_min: float | None = None
    norepinephrine_duration_min: float | None = None
    norepinephrine_salt: NorepinephrineSalt | None = None
    other_vasopressor_or_inotrope: bool | None = None
    mechanical_circulatory_support: bool | None = None
    vasoactives_unavailable: bool | None = None
    # CNS
    gcs: int | None = None
    gcs_motor: int | None = None
    sedated: bool | None = None
    gcs_presedation: int | None = None
    delirium_drug: bool | None = None
    # renal
    creatinine_mg_per_dl: float | None = None
    urine_output_ml_per_day: float | None = None
    urine_output_ml: float | None = None
    urine_output_observed_h: float | None = None
    urine_ml_per_kg_per_h_6h: float | None = None
    urine_ml_per_kg_per_h_12h: float | None = None
    urine_ml_per_kg_per_h_24h: float | None = None
    anuria_12h: bool | None = None
    rrt: bool | None = None
    potassium_mmol_per_l: float | None = None
    ph: float | None = None
    bicarbonate_mmol_per_l: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data: Any) -> Any:
        """A boolean is never a measurement (``false`` is not a platelet count of 0), a number never a yes/no."""
        refuse_json_type_mismatch(cls, data, where="SOFA inputs")
        return data

    @model_validator(mode="after")
    def _plausible(self, info: ValidationInfo) -> SofaInputs:
        # a value converted from another unit (by from_record) was checked with the conversion's rounding slack:
        # 800 mmHg sent as kPa may come back as 800.0000000000001 (CONVERSION_SLACK; never a clinical threshold)
        converted = (info.context or {}).get("converted", set()) if info is not None else set()
        for name, conc in _FIELD_CONCEPT.items():
            v = getattr(self, name)
            if v is not None:
                check_plausible(conc, v, where=f"field {name}", rel_tol=CONVERSION_SLACK if name in converted else 0.0)
        for d in SOFA_DEFINITIONS.catecholamines:
            dur = getattr(self, f"{d}_duration_min")
            if dur is not None and not 0 <= dur <= 60 * 24 * 365:
                raise ImplausibleValueError(
                    expected=f"{d}_duration_min between 0 and {60 * 24 * 365}",
                    got=dur,
                    where=f"field {d}_duration_min",
                    todo="send the infusion's running time in minutes",
                )
        if self.urine_output_observed_h is not None and not 0 < self.urine_output_observed_h <= 72:
            raise ImplausibleValueError(
                expected="urine_output_observed_h in (0, 72]",
                got=self.urine_output_observed_h,
                where="field urine_output_observed_h",
                todo="send the hours the urine volume was collected over",
            )
        if self.urine_output_ml is not None:
            if self.urine_output_observed_h is None:
                raise InputError(
                    expected="urine_output_observed_h together with urine_output_ml",
                    got=None,
                    where="field urine_output_observed_h",
                    todo="send the collection time, or send urine_output_ml_per_day for a full day",
                )
            if not 0 <= self.urine_output_ml <= 30000:
                raise ImplausibleValueError(
                    expected="urine_output_ml between 0 and 30000",
                    got=self.urine_output_ml,
                    where="field urine_output_ml",
                    todo="check the volume",
                )
            if self.urine_output_ml_per_day is not None:
                raise ConflictingInputError(
                    expected="either urine_output_ml_per_day or urine_output_ml + urine_output_observed_h",
                    got="both",
                    where="field urine_output_ml",
                    todo="send one of the two forms",
                )
        return self

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, where: str = "record") -> SofaInputs:
        """Build inputs from an external record, converting unit variants once.

        ``None`` (JSON ``null``) means not measured. Unknown fields, wrong types, unit variants given twice and
        implausible values raise an :class:`~immunoguide.errors.InputError` naming the field.

        >>> SofaInputs.from_record({"fio2_percent": 50, "bilirubin_umol_per_l": 34.208}).bilirubin_mg_per_dl
        2.0
        """
        if not isinstance(record, Mapping):
            raise InputError(
                expected="a JSON object of SOFA inputs",
                got=type(record).__name__,
                where=where,
                todo="send one object per line",
            )
        data: dict[str, Any] = {}
        converted: set[str] = set()
        for key, value in record.items():
            if value is None:
                continue
            if key in _ALTERNATIVES:
                target, conc, unit = _ALTERNATIVES[key]
                if record.get(target) is not None or target in data:
                    raise ConflictingInputError(
                        expected=f"only one of {key} and {target}",
                        got="both",
                        where=f"{where}, field {key}",
                        todo="send the value once, in one unit",
                        field=key,
                    )
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InputError(
                        expected=f"a number for {key}",
                        got=value,
                        where=f"{where}, field {key}",
                        todo="send a number (leave the field out when not measured)",
                        field=key,
                    )
                try:
                    data[target] = to_canonical(conc, value, unit, where=f"{where}, field {key}")
                except InputError as exc:
                    exc.field = key
                    raise
                converted.add(target)
            elif key in cls.model_fields:
                data[key] = value
            else:
                raise InputError(
                    expected="a known SOFA input field",
                    got=key,
                    where=where,
                    todo=f"check the spelling; fields carry units, e.g. {', '.join(sorted(cls.model_fields)[:6])} …",
                    field=key,
                )
        try:
            return cls.model_validate(data, strict=False, context={"converted": converted})
        except InputError as exc:
            if exc.field is None and exc.where and "field " in exc.where:
                exc.field = exc.where.split("field ", 1)[1]
            exc.where = f"{where}, {exc.where}"
            raise exc from None
        except ValidationError as exc:
            err = exc.errors()[0]
            fieldname = ".".join(str(p) for p in err["loc"]) or "record"
            raise InputError(
                expected=err["msg"].lower(),
                got=err.get("input"),
                where=f"{where}, field {fieldname}",
                todo="fix the value's type (numbers as numbers, flags as true/false)",
                field=fieldname,
            ) from None


@dataclass(frozen=True)
class SofaResult:
    """A scored window: six components, total, what was missing/imputed, and how it was scored."""

    criteria: str
    components: Mapping[str, int | None]
    total: int | None
    missing_components: tuple[str, ...]
    imputed_components: tuple[str, ...]
    imputation_policy: str
    policies: Mapping[str, str]
    inputs_used: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (the CLI's output record)."""
        return {
            "criteria": self.criteria,
            "total": self.total,
            "components": dict(self.components),
            "missing_components": list(self.missing_components),
            "imputed_components": list(self.imputed_components),
            "imputation_policy": self.imputation_policy,
            "policies": dict(self.policies),
            "inputs_used": dict(self.inputs_used),
            "notes": list(self.notes),
        }


def finalise(
    crit: Criteria,
    comps: Mapping[str, int | None],
    used: Mapping[str, Any],
    notes: list[str],
    resolved: Mapping[str, str],
) -> SofaResult:
    """Apply the missing-component policy and build the result (shared by SOFA-1 and SOFA-2)."""
    missing = tuple(c for c in COMPONENTS if comps.get(c) is None)
    policy = resolved["missing_component"]
    final: dict[str, int | None] = {c: comps.get(c) for c in COMPONENTS}
    imputed: tuple[str, ...] = ()
    if policy == "impute_normal":
        imputed = missing
        for c in missing:
            final[c] = 0
        total: int | None = sum(v for v in final.values() if v is not None)
    else:
        total = None if missing else sum(v for v in final.values() if v is not None)
    return SofaResult(
        criteria=crit.label,
        components=MappingProxyType(final),
        total=total,
        missing_components=missing,
        imputed_components=imputed,
        imputation_policy=policy,
        policies=MappingProxyType(dict(resolved)),
        inputs_used=MappingProxyType(dict(used)),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------------------------
# Shared input resolution (also used by SOFA-2)
# --------------------------------------------------------------------------------------------------------------


def fio2_for_ratio(inputs: SofaInputs, resolved: Mapping[str, str], notes: list[str]) -> float | None:
    """FiO2 to divide by, honouring policy ``fio2_missing``."""
    if inputs.fio2_fraction is not None:
        return inputs.fio2_fraction
    if resolved.get("fio2_missing") == "room_air":
        notes.append(f"fio2_missing=room_air: FiO2 assumed {SOFA_DEFINITIONS.room_air_fio2:g}")
        return SOFA_DEFINITIONS.room_air_fio2
    return None


def mean_arterial_pressure(inputs: SofaInputs, resolved: Mapping[str, str], used: dict[str, Any]) -> float | None:
    """Charted MAP, else DBP + (SBP − DBP)/3 under policy ``map_from_sbp_dbp = derive``."""
    if inputs.map_mmhg is not None:
        used["map_mmhg"] = inputs.map_mmhg
        return inputs.map_mmhg
    if resolved.get("map_from_sbp_dbp") == "derive" and inputs.sbp_mmhg is not None and inputs.dbp_mmhg is not None:
        if inputs.dbp_mmhg > inputs.sbp_mmhg:
            raise ConflictingInputError(
                expected="dbp_mmhg <= sbp_mmhg",
                got=(inputs.sbp_mmhg, inputs.dbp_mmhg),
                where="fields sbp_mmhg, dbp_mmhg",
                todo="check that systolic and diastolic pressures are not swapped",
            )
        m = round(inputs.dbp_mmhg + (inputs.sbp_mmhg - inputs.dbp_mmhg) / 3.0, 6)
        used["map_mmhg_derived"] = m
        return m
    return None


def urine_ml_per_day(
    inputs: SofaInputs, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> float | None:
    """Daily urine output, from a daily figure or from a timed collection under ``urine_output_window``."""
    if inputs.urine_output_ml_per_day is not None:
        used["urine_output_ml_per_day"] = inputs.urine_output_ml_per_day
        return inputs.urine_output_ml_per_day
    if inputs.urine_output_ml is None or inputs.urine_output_observed_h is None:
        return None
    h = inputs.urine_output_observed_h
    policy = resolved.get("urine_output_window", "mimic_code")
    lo, hi = SOFA_DEFINITIONS.urine_mimic_code_h
    if policy == "mimic_code" and not lo <= h <= hi:
        notes.append(f"urine_output_window=mimic_code: {h:g} h observed is outside {lo}-{hi} h; urine not scored")
        return None
    if policy == "ricu" and h < SOFA_DEFINITIONS.urine_ricu_min_h:
        notes.append(
            f"urine_output_window=ricu: {h:g} h observed is under {SOFA_DEFINITIONS.urine_ricu_min_h} h; urine not scored"
        )
        return None
    day_h = float(SOFA_DEFINITIONS.urine_window_h)
    daily = inputs.urine_output_ml if policy == "as_recorded" else inputs.urine_output_ml * day_h / h
    daily = round(daily, 6)
    used["urine_output_ml_per_day_derived"] = daily
    return daily


def effective_gcs(
    inputs: SofaInputs, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> int | None:
    """The GCS to score, honouring ``gcs_when_sedated``."""
    if inputs.sedated:
        normal = SOFA_DEFINITIONS.normal_gcs
        policy = resolved["gcs_when_sedated"]
        if policy == "presedation_else_normal":
            if inputs.gcs_presedation is not None:
                used["gcs_presedation"] = inputs.gcs_presedation
                return inputs.gcs_presedation
            notes.append(f"sedated without a pre-sedation GCS: GCS assumed {normal} (gcs_when_sedated)")
            return normal
        if policy == "assume_normal":
            notes.append(f"sedated: GCS assumed {normal} (gcs_when_sedated=assume_normal)")
            return normal
        if policy == "unscored":
            return None
    if inputs.gcs is not None:
        used["gcs"] = inputs.gcs
    return inputs.gcs


def drug_rate_counts(drug: str, inputs: SofaInputs, resolved: Mapping[str, str], notes: list[str]) -> float | None:
    """The drug's rate if it counts under ``vasopressor_min_duration``; None when absent or too short."""
    rate = getattr(inputs, f"{drug}_ug_kg_min")
    if rate is None:
        return None
    dur = getattr(inputs, f"{drug}_duration_min")
    shortest = SOFA_DEFINITIONS.vasopressor_min_episode_min
    if rate > 0 and resolved.get("vasopressor_min_duration") == "one_hour" and dur is not None and dur < shortest:
        notes.append(f"{drug} ran {dur:g} min (< {shortest}): not scored (vasopressor_min_duration=one_hour)")
        return None
    return rate
