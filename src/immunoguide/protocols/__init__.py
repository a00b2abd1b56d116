"""Trial protocols as versioned, cited, validated data (format ``immunoguide.protocol/1``).

A protocol file (TOML, one per protocol version, shipped ones in this package) holds:

``[protocol]``
    ``id``, ``version``, ``title``, registry ids, and ``[protocol.citations]``: short keys → full references.
    Every rule below carries ``citation`` (naming at least one of these keys) and ``confidence``
    (``confirmed`` / ``likely`` / ``unknown``, the tags of the cited specification).
``[settings.<name>]``
    Every item the sources leave unknown or contradictory: ``question``, ``options`` (each with a description
    and its own confidence), ``default`` (``"not_applied"`` for an unknown item), ``confidence``, ``warning``,
    ``rationale``. Results list a warning for each *unknown* setting they depend on; callers may override.
``[vocabularies]``
    Assay ``methods`` (tag → unit and concepts; thresholds are not portable across methods), ``infection_sources``
    and protocol-specific yes/no ``flags``.
``[[inclusion]]`` / ``[[exclusion]]``
    ``id``, ``text``, ``kind`` from a closed set (``threshold``, ``flag``, ``value_in``, ``sepsis3``,
    ``endotype_in``, ``window_from_anchor``, ``overlay``, ``unknown``) and the keys that kind needs; optional
    ``applies_if`` and ``depends_on_settings``.
``[classification]``
    Endotype rules (``all_of`` biomarker criteria: analyte, concept, strict or non-strict comparator, threshold in
    the concept's canonical unit, assay methods, persistence), precedence (lower wins), the fallback label,
    sample timing from an anchor and reversal rules; built into
    :class:`~immunoguide.protocols.model.ClassificationSpec`.
``[[overlays]]``, ``[blinding]``, ``[[arms]]``, ``[[regimens]]``
    Arm overlays (COVID-19 → MALS arms only), double-dummy kits per arm, and courses (dose and unit — mg, µg or
    per kg —, route, interval, duration, placebo volume, renal check).
``[visits]``, ``[randomisation]``, ``[[endpoints]]``, ``[sap.<name>]``
    Visit days, allocation ratio and sequence, endpoint definitions and statistical-analysis choices.

The loader rejects, with a :class:`~immunoguide.errors.CriteriaError` naming what, where and what to do: unknown
keys, duplicate ids, comparators or confidence tags outside their sets, units other than the concept's canonical
unit, undeclared method tags, references to undeclared settings, endotypes, arms, overlays or regimens,
contradictory rules (equal-precedence endotype rules that can both be true, inclusions that no value can meet,
exclusions that exclude every included value, values both required and excluding), a setting default that is not
one of its options, non-positive doses, intervals or durations, and double-dummy kits that do not match.

Examples
--------
>>> p = load_protocol("immunosep-2025")
>>> p.label, p.criterion("E5").threshold_setting, p.settings["neutropenia_anc_threshold"].default
('immunosep-2025@1.0.0', 'neutropenia_anc_threshold', 'registry_1500')
>>> [r.name for r in p.classification.endotypes], p.classification.otherwise
(['MALS', 'immunoparalysis'], 'unclassified')
>>> describe_regimen(p.regimens["anakinra_iv"])
'anakinra 200 mg IV q8h x 15 d'
"""

from __future__ import annotations

from immunoguide.protocols._describe import (
    ProtocolChange,
    describe_biomarker,
    describe_criterion,
    describe_endotype,
    describe_regimen,
    diff_protocols,
    protocol_outline,
)
from immunoguide.protocols._loader import (
    NOT_APPLIED,
    Protocol,
    SettingWarning,
    ThresholdRef,
    available_protocols,
    compare,
    load_protocol,
    load_protocol_text,
    validate_protocol,
)
from immunoguide.protocols._schema import (
    CRITERION_TYPES,
    Arm,
    EligibilityCriterion,
    EndotypeInCriterion,
    Endpoint,
    FlagCriterion,
    Overlay,
    OverlayCriterion,
    Regimen,
    Sepsis3Criterion,
    Setting,
    ThresholdCriterion,
    UnknownCriterion,
    ValueInCriterion,
    WindowCriterion,
)
from immunoguide.protocols.model import (
    BiomarkerCriterion,
    Citation,
    ClassificationSpec,
    EndotypeRule,
    ReversalRule,
    SampleTiming,
)
from immunoguide.protocols.record import TIME_POINT_FIELDS, PatientRecord, Provenance

__all__ = [
    "CRITERION_TYPES",
    "NOT_APPLIED",
    "TIME_POINT_FIELDS",
    "Arm",
    "BiomarkerCriterion",
    "Citation",
    "ClassificationSpec",
    "EligibilityCriterion",
    "EndotypeInCriterion",
    "Endpoint",
    "EndotypeRule",
    "FlagCriterion",
    "Overlay",
    "OverlayCriterion",
    "PatientRecord",
    "Protocol",
    "ProtocolChange",
    "Provenance",
    "Regimen",
    "ReversalRule",
    "SampleTiming",
    "Sepsis3Criterion",
    "Setting",
    "SettingWarning",
    "ThresholdCriterion",
    "ThresholdRef",
    "UnknownCriterion",
    "ValueInCriterion",
    "WindowCriterion",
    "available_protocols",
    "compare",
    "describe_biomarker",
    "describe_criterion",
    "describe_endotype",
    "describe_regimen",
    "diff_protocols",
    "load_protocol",
    "load_protocol_text",
    "protocol_outline",
    "validate_protocol",
]
