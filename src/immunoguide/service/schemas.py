"""Request and response models of the REST service (pydantic 2; they make the OpenAPI document).

Requests are strict about their *shape* (unknown top-level keys refused); the clinical content (SOFA inputs,
classification records, screening facts) stays a JSON object that the rules and ``trial/`` validate themselves,
so their errors name the field in the domain's words (``IG-E1xx``). Times are ISO 8601 with a UTC offset.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AdverseEventRequest",
    "AllocationListUpload",
    "CdsCard",
    "CdsRequest",
    "CdsResponse",
    "CdsService",
    "CdsServices",
    "ClassifyRequest",
    "ConsentRequest",
    "DoseRequest",
    "EligibilityRequest",
    "ErrorBody",
    "FollowUpRequest",
    "LabsRequest",
    "LoginRequest",
    "RandomizeRequest",
    "SaeReportRequest",
    "ScreenRequest",
    "SofaRequest",
    "SofaResponse",
    "TokenResponse",
    "UnblindRequest",
    "UserInfo",
    "WithdrawRequest",
]

_STRICT = ConfigDict(extra="forbid")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The place of the first NaN or infinity in a decoded JSON value (None if there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(body)"
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


class _Body(BaseModel):
    """Base of the request bodies: shape strict, and no NaN or Infinity anywhere (JSON has neither; Python's
    decoder accepts them, so they are refused here before any rule sees them)."""

    model_config = _STRICT

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        where = _non_finite(data)
        if where is not None:
            raise ValueError(f"a finite number at {where} (JSON has no NaN or Infinity)")
        return data
ProtocolId = Annotated[str, Field(max_length=80, pattern=r"^[a-z0-9][a-z0-9-]*(@[0-9A-Za-z.+-]+)?$",
                   description="A shipped protocol id, optionally pinned: immunosep-2025 or immunosep-2025@1.0.0.")]


class ErrorBody(BaseModel):
    """Every error response (see :mod:`immunoguide.service.errors`)."""

    code: str = Field(description="Stable error code, e.g. IG-E406.")
    error: str = Field(description="Error class name.")
    message: str
    expected: str | None = None
    got: Any = None
    where: str | None = None
    field: str | None = None
    todo: str | None = None
    docs_url: str
    errors: list[dict[str, Any]] | None = Field(default=None, description="pydantic errors (request validation).")


# -- auth ---------------------------------------------------------------------------------------------------------


class LoginRequest(_Body):
    """User name and password."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserInfo(BaseModel):
    """Who is logged in."""

    user: str
    role: str
    site: str | None
    blinded: bool = Field(description="False only for the roles that see arms and kit contents.")


class TokenResponse(UserInfo):
    """A bearer token (shown once; send it as ``Authorization: Bearer <token>``)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


# -- rules --------------------------------------------------------------------------------------------------------


class SofaRequest(_Body):
    """Worst values of one window (``SofaInputs`` fields, with unit variants such as fio2_percent)."""

    inputs: dict[str, Any] = Field(
        description="SOFA inputs with units in the names (platelets_10e3_per_ul, bilirubin_umol_per_l, map_mmhg, "
                    "gcs, creatinine_mg_per_dl, pao2_mmhg + fio2_fraction, norepinephrine_ug_kg_min …); "
                    "null or absent = not measured.",
        examples=[{"platelets_10e3_per_ul": 90, "gcs": 15, "map_mmhg": 62}],
    )
    criteria: Literal["sofa1", "sofa2"] = "sofa1"
    policies: dict[str, str] = Field(default_factory=dict, description="Named policy overrides (name → option).")


class SofaResponse(BaseModel):
    """A scored window (``SofaResult.to_dict``)."""

    criteria: str
    total: int | None
    components: dict[str, int | None]
    missing_components: list[str]
    imputed_components: list[str]
    imputation_policy: str
    policies: dict[str, str]
    inputs_used: dict[str, Any]
    notes: list[str]


class ClassifyRequest(_Body):
    """One flat classification record (the fields of ``immunoguide classify``)."""

    protocol: ProtocolId = "immunosep-2025"
    record: dict[str, Any] = Field(
        description="ferritin (number or censored text) + ferritin_unit, or ferritin_ng_per_ml; hla_dr + hla_dr_unit "
                    "or hla_dr_per_monocyte, hla_dr_method (quantibrite_abc); <analyte>_sample_time / _receipt_time "
                    "/ _result_time; anchor_time (Sepsis-3 onset); at (classification time); id (echoed).",
        examples=[{"ferritin": 820, "ferritin_unit": "ng/mL", "hla_dr_per_monocyte": 3100,
                   "hla_dr_method": "quantibrite_abc"}],
    )


class EligibilityRequest(_Body):
    """Screening facts of one patient (``PatientRecord`` fields) against a protocol."""

    protocol: ProtocolId = "immunosep-2025"
    patient: dict[str, Any] = Field(
        description="PatientRecord fields: age_years, sex, consent, infection_source, admission_source, sofa_total, "
                    "sepsis3_onset_time, planned_first_dose_time, endotype, covid19, anc_per_mm3, flags …",
        examples=[{"age_years": 70, "sex": "male", "infection_source": "CAP", "sofa_total": 9}],
    )
    at: datetime | None = Field(default=None, description="Screening time (closes elapsed windows).")
    settings: dict[str, str] = Field(default_factory=dict, description="Protocol setting overrides (name → option).")


# -- trial --------------------------------------------------------------------------------------------------------


class ScreenRequest(_Body):
    """Screen a patient (study code, site, screening facts)."""

    code: str = Field(min_length=1, max_length=64, description="Study code, unique in the store.")
    site: str = Field(min_length=1, max_length=32)
    record: dict[str, Any] = Field(description="PatientRecord screening facts (no consent/endotype/first dose).")
    protocol: ProtocolId = "immunosep-2025"


class ConsentRequest(_Body):
    """Informed consent (or its refusal)."""

    given_by: str = Field(max_length=64, description="patient, first_degree_relative, spouse or refused.")
    signed_at: datetime


class LabsRequest(_Body):
    """Laboratory results (classification record fields; ``<analyte>_sample_time`` required)."""

    record: dict[str, Any]


class RandomizeRequest(_Body):
    """Randomise a patient (optionally stating the expected stratum)."""

    stratum: str | None = Field(default=None, max_length=32)


class UnblindRequest(_Body):
    """Emergency unblinding of one patient."""

    reason: str = Field(max_length=2000)


class DoseRequest(_Body):
    """A dose given from one of the patient's kits."""

    kit: str = Field(max_length=8, description="Kit route: IV or SC.")
    given_at: datetime
    number: int | None = Field(default=None, description="Scheduled dose number (matched by time when absent).")
    note: str | None = Field(default=None, max_length=2000)
    late_entry_reason: str | None = Field(default=None, max_length=500,
                                          description="Why the dose is entered late (required beyond the store's "
                                                      "late-entry limit; kept in the audit trail).")


class FollowUpRequest(_Body):
    """One study day's follow-up."""

    day: int
    assessed_at: datetime | None = None
    sofa_total: int | None = None
    sofa_inputs: dict[str, Any] | None = None
    sofa_criteria: Literal["sofa1", "sofa2"] = "sofa1"
    labs: dict[str, Any] | None = None
    infection_assessment: str | None = Field(default=None, max_length=32)
    vital_status: str | None = Field(default=None, max_length=16)
    death_at: datetime | None = None
    late_entry_reason: str | None = Field(default=None, max_length=500,
                                          description="Why the day is entered late (required beyond the store's "
                                                      "late-entry limit; kept in the audit trail).")


class AdverseEventRequest(_Body):
    """An adverse event (CTCAE grade 1-5)."""

    term: str = Field(max_length=128)
    onset_at: datetime
    grade: int
    serious: bool
    relatedness: str = Field(max_length=32)
    outcome: str = Field(max_length=32)
    aware_at: datetime | None = None
    late_entry_reason: str | None = Field(default=None, max_length=500,
                                          description="Why the AE is entered late (required beyond the store's "
                                                      "late-entry limit after aware_at; kept in the audit trail).")


class SaeReportRequest(_Body):
    """The initial (24 h) or full (15 days) report of a serious AE."""

    kind: Literal["initial", "full"]
    reported_at: datetime
    late_entry_reason: str | None = Field(default=None, max_length=500,
                                          description="Why the report is entered late (required beyond the store's "
                                                      "late-entry limit after reported_at; kept in the audit trail).")


class WithdrawRequest(_Body):
    """Withdrawal, with or without removal of the patient's data."""

    reason: str = Field(max_length=2000)
    remove_data: bool = False


class AllocationListUpload(_Body):
    """The three files written by ``immunoguide trial allocation generate``, as text."""

    name: str = Field(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="File stem, e.g. allocation_ATH_MALS.")
    csv: str = Field(max_length=5_000_000)
    meta_json: str = Field(max_length=1_000_000)
    sha256: str = Field(max_length=10_000)


# -- CDS Hooks ----------------------------------------------------------------------------------------------------


class CdsService(BaseModel):
    """One entry of the CDS Hooks discovery document."""

    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]
    usageRequirements: str | None = None


class CdsServices(BaseModel):
    """CDS Hooks discovery response."""

    services: list[CdsService]


class CdsRequest(_Body):
    """A CDS Hooks call (patient-view) with FHIR R4B prefetch."""

    model_config = ConfigDict(extra="allow")
    hook: str = Field(max_length=64)
    hookInstance: str = Field(max_length=128)
    fhirServer: str | None = None
    fhirAuthorization: dict[str, Any] | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


class CdsSource(BaseModel):
    """Who made the card."""

    label: str
    url: str | None = None


class CdsLink(BaseModel):
    """A link on a card (``smart``: a SMART app launch URL; ``appContext`` is passed to the launched app)."""

    label: str
    url: str
    type: Literal["absolute", "smart"] = "absolute"
    appContext: str | None = None


class CdsAction(BaseModel):
    """An action of a suggestion (``create`` a FHIR resource, e.g. a ServiceRequest)."""

    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None


class CdsSuggestion(BaseModel):
    """A suggested action the clinician can accept (e.g. order ferritin or monocyte HLA-DR)."""

    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[CdsAction] | None = None


class CdsCard(BaseModel):
    """A CDS Hooks card."""

    uuid: str
    summary: str = Field(max_length=140)
    detail: str
    indicator: Literal["info", "warning", "critical"]
    source: CdsSource
    links: list[CdsLink] | None = None
    suggestions: list[CdsSuggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    extension: dict[str, Any] | None = Field(default=None, description="Machine-readable result (endotype, …).")


class CdsResponse(BaseModel):
    """CDS Hooks response."""

    cards: list[CdsCard]
