"""The protocol file format ``immunoguide.protocol/1`` as pydantic models (structure only).

Every table forbids unknown keys, so a misspelt key is an error rather than a silently ignored rule. Cross-section
checks (references between sections, units against concepts, contradictions) live in :mod:`._checks`.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from immunoguide.protocols.model import Citation, Comparator, Confidence

__all__ = [
    "Arm",
    "BiomarkerSpec",
    "Blinding",
    "ClassificationSection",
    "Condition",
    "COMMON_CRITERION_KEYS",
    "CRITERION_TYPES",
    "DoseUnit",
    "EligibilityCriterion",
    "EndotypeInCriterion",
    "FlagCriterion",
    "Endpoint",
    "EndotypeSpec",
    "MethodSpec",
    "Overlay",
    "OverlayCriterion",
    "ProtocolDocument",
    "ProtocolMeta",
    "Randomisation",
    "Ratio",
    "Regimen",
    "RenalCheck",
    "ReversalSpec",
    "Route",
    "SapChoice",
    "Setting",
    "Sepsis3Criterion",
    "SettingOption",
    "ThresholdCriterion",
    "TimePoint",
    "TimingSpec",
    "UnknownCriterion",
    "ValueInCriterion",
    "Visits",
    "Vocabularies",
    "WindowCriterion",
]

SCHEMA_ID = "immunoguide.protocol/1"

Route = Literal["IV", "SC", "IM", "PO", "unknown"]
DoseUnit = Literal["mg", "ug", "mg/kg", "ug/kg"]
#: Time points a window or a classification timing can refer to (each maps to a patient-record time field).
TimePoint = Literal["sepsis3_onset", "sepsis_onset", "hospital_admission", "icu_admission", "first_dose"]
EndpointRole = Literal["primary", "secondary", "exploratory", "safety", "reported"]
EndpointKind = Literal[
    "sofa_mean_decrease", "mortality", "immune_reversal", "ordinal", "time_to_event", "safety", "descriptive"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Cited(_Strict):
    citation: str = Field(min_length=1)
    confidence: Confidence

    def cite(self) -> Citation:
        """The rule's :class:`~immunoguide.protocols.model.Citation`."""
        return Citation(source=self.citation, confidence=self.confidence)


class ProtocolMeta(_Strict):
    """``[protocol]``: identity, registry ids and the citation keys every rule's ``citation`` refers to."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    version: str = Field(min_length=1)
    title: str
    population: str = ""
    design: str = ""
    phase: str = ""
    based_on: str = ""
    registry: dict[str, str] = {}
    citations: dict[str, str] = Field(min_length=1)
    note: str = ""


class SettingOption(_Strict):
    """One option of a setting."""

    description: str
    confidence: Confidence = "unknown"
    citation: str = ""


class Setting(_Cited):
    """``[settings.<name>]``: an unknown or conflicting item made explicit, with a default and a warning text."""

    question: str
    options: dict[str, SettingOption] = Field(min_length=1)
    default: str
    warning: str = Field(min_length=1)
    rationale: str = ""


class Condition(_Strict):
    """``{ field = "sex", values = ["female"] }``: true when the patient's field takes one of the values."""

    field: str
    values: tuple[bool | str, ...] = Field(min_length=1)


class _CriterionBase(_Cited):
    """The keys every ``[[inclusion]]`` / ``[[exclusion]]`` criterion has, whatever its ``kind``."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    text: str = Field(min_length=1)
    applies_if: Condition | None = None
    depends_on_settings: tuple[str, ...] = ()
    note: str = ""


class ThresholdCriterion(_CriterionBase):
    """``kind = "threshold"``: a quantity (concept, canonical unit) compared with a threshold.

    The threshold is fixed (``threshold``) or chosen by a setting (``threshold_setting`` with ``thresholds``, one
    value per option of the setting; ImmunoSep E5: ANC < 1500 or < 1000 /mm3).
    """

    kind: Literal["threshold"]
    concept: str
    comparator: Comparator
    unit: str
    threshold: float | None = None
    threshold_setting: str | None = None
    thresholds: dict[str, float] | None = None


class FlagCriterion(_CriterionBase):
    """``kind = "flag"``: a yes/no fact (a record field or a declared flag) equals ``met_when``."""

    kind: Literal["flag"]
    flag: str
    met_when: bool = True


class ValueInCriterion(_CriterionBase):
    """``kind = "value_in"``: a categorical field of the record takes one of ``values``."""

    kind: Literal["value_in"]
    field: str
    values: tuple[str, ...]


class Sepsis3Criterion(_CriterionBase):
    """``kind = "sepsis3"``: Sepsis-3 operationalised by admission route (ImmunoSep I5 wording)."""

    kind: Literal["sepsis3"]
    ed_min_total_sofa: int
    hospitalised_min_sofa_increase: int


class EndotypeInCriterion(_CriterionBase):
    """``kind = "endotype_in"``: the immune endotype (from the classification) is one of ``values``."""

    kind: Literal["endotype_in"]
    values: tuple[str, ...]


class WindowCriterion(_CriterionBase):
    """``kind = "window_from_anchor"``: hours from ``anchor`` to ``event`` compared with ``hours``."""

    kind: Literal["window_from_anchor"]
    anchor: TimePoint
    event: TimePoint
    comparator: Comparator
    hours: float


class OverlayCriterion(_CriterionBase):
    """``kind = "overlay"``: an arm overlay (e.g. COVID-19 -> MALS arms only) leaves at least one arm open."""

    kind: Literal["overlay"]
    overlay: str


class UnknownCriterion(_CriterionBase):
    """``kind = "unknown"``: not captured by the sources; always "unknown", governed by ``setting``."""

    kind: Literal["unknown"]
    setting: str


#: ``[[inclusion]]`` / ``[[exclusion]]``: one criterion, its model (and so its keys) chosen by ``kind``.
EligibilityCriterion = Annotated[
    ThresholdCriterion
    | FlagCriterion
    | ValueInCriterion
    | Sepsis3Criterion
    | EndotypeInCriterion
    | WindowCriterion
    | OverlayCriterion
    | UnknownCriterion,
    Field(discriminator="kind"),
]

#: ``kind`` → criterion model: the closed set of machine-evaluable eligibility kinds, in the order of the union.
CRITERION_TYPES: Mapping[str, type[_CriterionBase]] = MappingProxyType(
    {
        typing.get_args(m.model_fields["kind"].annotation)[0]: m
        for m in typing.get_args(typing.get_args(EligibilityCriterion)[0])
    }
)
#: The keys every criterion may have, whatever its kind.
COMMON_CRITERION_KEYS: frozenset[str] = frozenset(_CriterionBase.model_fields) | {"kind"}


class MethodSpec(_Strict):
    """``[vocabularies.methods.<tag>]``: an assay method, the unit it reports and the concepts it measures.

    ``aliases`` are other spellings of the tag (``"QuantiBRITE"``), matched case-insensitively and replaced by the
    tag; ``ucum`` are the UCUM codes (FHIR ``Quantity.code``) of ``unit`` for this method (``"{AB}/{cell}"``).
    """

    description: str
    unit: str
    concepts: tuple[str, ...] = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    ucum: tuple[str, ...] = ()


class Vocabularies(_Strict):
    """``[vocabularies]``: assay-method tags, infection types and protocol-specific yes/no flags."""

    methods: dict[str, MethodSpec] = {}
    infection_sources: dict[str, str] = {}
    flags: dict[str, str] = {}


class BiomarkerSpec(_Cited):
    """One biomarker criterion of an endotype or reversal rule (file form of ``BiomarkerCriterion``)."""

    analyte: str = Field(min_length=1)
    concept: str
    comparator: Comparator
    threshold: float
    unit: str
    methods: tuple[str, ...] = ()
    persistence_count: int = 1
    persistence_consecutive_days: bool = False
    note: str = ""


class EndotypeSpec(_Cited):
    """``[[classification.endotypes]]``: an endotype is present when every ``all_of`` criterion is met."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    label: str = ""
    precedence: int
    all_of: tuple[BiomarkerSpec, ...] = Field(min_length=1)
    note: str = ""


class TimingSpec(_Cited):
    """``[classification.timing]``: when a classification sample counts (None = not set by the protocol)."""

    anchor: TimePoint
    window_before_anchor_h: float | None = None
    window_after_anchor_h: float | None = None
    max_result_age_h: float | None = None
    depends_on_settings: tuple[str, ...] = ()
    note: str = ""


class ReversalSpec(_Cited):
    """``[[classification.reversals]]``: reversal of an endotype on serial samples."""

    endotype: str
    relative_fall_concept: str | None = None
    relative_fall_fraction: float | None = None
    all_of: tuple[BiomarkerSpec, ...] = ()
    note: str = ""


class ClassificationSection(_Cited):
    """``[classification]``: endotype rules by precedence, the fallback label, timing and reversals."""

    otherwise: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    otherwise_note: str = ""
    endotypes: tuple[EndotypeSpec, ...] = Field(min_length=1)
    timing: TimingSpec
    reversals: tuple[ReversalSpec, ...] = ()


class Overlay(_Cited):
    """``[[overlays]]``: when ``when`` holds, only ``allowed_arms`` are open (ImmunoSep I8: COVID-19 → MALS)."""

    id: str
    text: str
    when: Condition
    allowed_arms: tuple[str, ...] = Field(min_length=1)


class Blinding(_Cited):
    """``[blinding]``: masking and whether every arm receives the same kits on the same schedule."""

    masking: Literal["open_label", "single_blind", "double_blind", "unknown"]
    double_dummy: bool = False
    note: str = ""


class Arm(_Cited):
    """``[[arms]]``: a fixed code → label, the endotypes it serves and its kits (kit name → regimen id)."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    role: Literal["active", "placebo", "control"]
    endotypes: tuple[str, ...] = ()
    kits: dict[str, str]
    depends_on_settings: tuple[str, ...] = ()
    note: str = ""


class RenalCheck(_Cited):
    """A creatinine-clearance level below which a result warns; the adjustment itself is a setting."""

    crcl_below_ml_per_min: float
    setting: str
    note: str = ""


class Regimen(_Cited):
    """``[[regimens]]``: one drug (or placebo) course: dose, unit, route, interval and duration."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    drug: str
    product: str = ""
    dose: float | None = None
    dose_unit: DoseUnit | None = None
    volume_ml: float | None = None
    route: Route
    interval_h: float
    duration_days: float
    max_doses: int | None = None
    mirrors: str | None = None
    schedule_confidence: Confidence | None = None
    schedule_note: str = ""
    renal_check: RenalCheck | None = None
    depends_on_settings: tuple[str, ...] = ()
    note: str = ""

    @property
    def is_placebo(self) -> bool:
        """True for a placebo (dummy) course."""
        return self.drug == "placebo"

    @property
    def weight_based(self) -> bool:
        """True when the dose is per kilogram of body weight."""
        return self.dose_unit is not None and self.dose_unit.endswith("/kg")


class Visits(_Cited):
    """``[visits]``: protocol visit days."""

    days: tuple[int, ...] = Field(min_length=1)
    note: str = ""


class Endpoint(_Cited):
    """``[[endpoints]]``: an endpoint with its operational definition (structured for SOFA-decrease endpoints)."""

    id: str
    role: EndpointRole
    kind: EndpointKind
    name: str
    definition: str
    baseline_day: int | None = None
    first_day: int | None = None
    last_day: int | None = None
    comparator: Comparator | None = None
    threshold: float | None = None
    death_score: float | None = None
    missing: Literal["locf", "none"] | None = None
    horizon_days: int | None = None
    note: str = ""


class SapChoice(_Cited):
    """``[sap.<name>]``: one statistical-analysis choice with its source."""

    value: bool | int | float | str
    note: str = ""


class Ratio(_Cited):
    """``[randomisation.ratio]``: allocation weights by arm role."""

    value: dict[str, int]


class Randomisation(_Strict):
    """``[randomisation]``: ratio and sequence (when captured) and the settings for what is not."""

    ratio: Ratio | None = None
    sequence: SapChoice | None = None
    depends_on_settings: tuple[str, ...] = ()
    note: str = ""


class ProtocolDocument(_Strict):
    """A whole protocol file (structure only; see :func:`immunoguide.protocols.load_protocol_text`)."""

    schema_: str = Field(alias="schema")
    protocol: ProtocolMeta
    settings: dict[str, Setting] = {}
    vocabularies: Vocabularies = Vocabularies()
    inclusion: tuple[EligibilityCriterion, ...] = Field(min_length=1)
    exclusion: tuple[EligibilityCriterion, ...] = ()
    classification: ClassificationSection | None = None
    overlays: tuple[Overlay, ...] = ()
    blinding: Blinding | None = None
    arms: tuple[Arm, ...] = Field(min_length=1)
    regimens: tuple[Regimen, ...] = ()
    visits: Visits | None = None
    randomisation: Randomisation | None = None
    endpoints: tuple[Endpoint, ...] = ()
    sap: dict[str, SapChoice] = {}
