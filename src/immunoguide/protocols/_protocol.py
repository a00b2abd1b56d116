"""The loaded protocol (:class:`Protocol`), the threshold references and setting warnings it carries, and
:func:`compare`, the one comparison every criterion uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from immunoguide.criteria import resolve_named_options
from immunoguide.errors import CriteriaError, UnknownCriteriaError
from immunoguide.protocols._schema import (
    Arm,
    Blinding,
    ClassificationSection,
    EligibilityCriterion,
    Endpoint,
    Overlay,
    ProtocolMeta,
    Randomisation,
    Regimen,
    SapChoice,
    Sepsis3Criterion,
    Setting,
    ThresholdCriterion,
    Visits,
    Vocabularies,
    WindowCriterion,
)
from immunoguide.protocols.model import (
    ClassificationSpec,
)

NOT_APPLIED = "not_applied"


def compare(value: float, comparator: str, threshold: float) -> bool:
    """``value <comparator> threshold``, keeping strict and non-strict comparators exactly.

    >>> compare(4420, ">", 4420), compare(4420, "<=", 4420)
    (False, True)
    """
    if comparator == ">":
        return value > threshold
    if comparator == ">=":
        return value >= threshold
    if comparator == "<":
        return value < threshold
    if comparator == "<=":
        return value <= threshold
    raise CriteriaError(
        expected="a comparator in {'>', '>=', '<', '<='}",
        got=comparator,
        where="protocols.compare",
        todo="write the comparator exactly as the source does",
    )


@dataclass(frozen=True)
class ThresholdRef:
    """One numeric threshold of a protocol, for listings, diffs and generated boundary tests.

    ``setting`` is ``(name, option)`` when the threshold is the value of one option of a setting
    (ImmunoSep E5: 1500 under ``registry_1500``, 1000 under ``protocol_v1_0_1000``).
    """

    where: str
    quantity: str
    comparator: str
    threshold: float
    unit: str
    criterion_id: str | None = None
    setting: tuple[str, str] | None = None


@dataclass(frozen=True)
class SettingWarning:
    """A result depends on a setting tagged *unknown*: which setting, the option used, what depends on it.

    ``decisive`` is True when another option of the setting would have changed the result for this patient,
    False when it would not, and None when that cannot be known (the item is not captured at all).
    """

    setting: str
    option: str
    text: str
    depends: tuple[str, ...]
    decisive: bool | None = None

    def __str__(self) -> str:
        tail = {True: " [another option would change this result]", False: "", None: ""}[self.decisive]
        return f"{self.setting}={self.option} ({', '.join(self.depends)}): {self.text}{tail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "setting": self.setting,
            "option": self.option,
            "depends": list(self.depends),
            "decisive": self.decisive,
            "text": self.text,
        }


@dataclass(frozen=True)
class Protocol:
    """A loaded, validated protocol (``immunoguide.protocol/1``).

    Sections keep the file's typed models (:mod:`immunoguide.protocols._schema`), except ``classification``,
    which is built into the :class:`~immunoguide.protocols.model.ClassificationSpec` the endotype rules evaluate
    (``classification_section`` keeps the file form, e.g. for the fallback note and the timing settings).
    """

    meta: ProtocolMeta
    settings: Mapping[str, Setting]
    vocabularies: Vocabularies
    inclusion: tuple[EligibilityCriterion, ...]
    exclusion: tuple[EligibilityCriterion, ...]
    classification: ClassificationSpec | None
    classification_section: ClassificationSection | None
    overlays: tuple[Overlay, ...]
    blinding: Blinding | None
    arms: tuple[Arm, ...]
    regimens: Mapping[str, Regimen]
    visits: Visits | None
    randomisation: Randomisation | None
    endpoints: tuple[Endpoint, ...]
    sap: Mapping[str, SapChoice]
    source: str
    sha256: str

    @property
    def id(self) -> str:
        """Protocol id (``"immunosep-2025"``)."""
        return self.meta.id

    @property
    def version(self) -> str:
        """Version of this protocol file."""
        return self.meta.version

    @property
    def title(self) -> str:
        """Human-readable title."""
        return self.meta.title

    @property
    def label(self) -> str:
        """``id@version`` — what every result records."""
        return f"{self.meta.id}@{self.meta.version}"

    @property
    def criteria(self) -> tuple[EligibilityCriterion, ...]:
        """Inclusion then exclusion criteria, in file order."""
        return self.inclusion + self.exclusion

    def criterion(self, criterion_id: str) -> EligibilityCriterion:
        """The inclusion or exclusion criterion with this id."""
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise UnknownCriteriaError(
            expected=f"a criterion id of {self.label}: {[c.id for c in self.criteria]}",
            got=criterion_id,
            where="protocol criterion",
            todo="use an id from `immunoguide protocol show`",
        )

    def section_of(self, criterion_id: str) -> str:
        """``"inclusion"`` or ``"exclusion"``."""
        return "inclusion" if any(c.id == criterion_id for c in self.inclusion) else "exclusion"

    def arm(self, code: str) -> Arm:
        """The arm with this code."""
        for a in self.arms:
            if a.code == code:
                return a
        raise UnknownCriteriaError(
            expected=f"an arm code of {self.label}: {[a.code for a in self.arms]}",
            got=code,
            where="protocol arm",
            todo="use an arm code from `immunoguide protocol show`",
        )

    @property
    def endotype_names(self) -> tuple[str, ...]:
        """Declared endotype names in precedence order (empty without a classification)."""
        if self.classification is None:
            return ()
        return tuple(r.name for r in self.classification.endotypes)

    def resolve_settings(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Defaults overlaid with ``overrides``; an unknown setting or option raises :class:`PolicyError`.

        >>> from immunoguide.protocols import load_protocol
        >>> load_protocol("immunosep-2025").resolve_settings({"neutropenia_anc_threshold": "protocol_v1_0_1000"})[
        ...     "neutropenia_anc_threshold"]
        'protocol_v1_0_1000'
        """
        return resolve_named_options(
            self.label, "setting", {n: (st.default, st.options) for n, st in self.settings.items()}, overrides,
            todo="check the setting name (immunoguide protocol show lists them)",
        )

    def setting_warnings(
        self,
        depends: Mapping[str, list[str] | tuple[str, ...]],
        settings: Mapping[str, str],
        decisive: Mapping[str, bool | None] | None = None,
    ) -> tuple[SettingWarning, ...]:
        """Warnings for the settings in ``depends`` (setting → what depends on it) that are tagged *unknown*."""
        out = []
        for name, deps in depends.items():
            s = self.settings[name]
            if s.confidence != "unknown":
                continue
            out.append(
                SettingWarning(
                    setting=name,
                    option=settings.get(name, s.default),
                    text=s.warning,
                    depends=tuple(dict.fromkeys(deps)),
                    decisive=(decisive or {}).get(name),
                )
            )
        return tuple(out)

    @property
    def unknown_settings(self) -> tuple[str, ...]:
        """Settings tagged ``unknown`` (each is reported as a warning by results that depend on it)."""
        return tuple(n for n, s in self.settings.items() if s.confidence == "unknown")

    @property
    def classification_settings(self) -> tuple[str, ...]:
        """Settings the classification (its timing) depends on."""
        if self.classification_section is None:
            return ()
        return self.classification_section.timing.depends_on_settings

    def thresholds(self) -> tuple[ThresholdRef, ...]:
        """Every numeric threshold: eligibility thresholds, Sepsis-3 SOFA levels, windows, biomarker rules."""
        out: list[ThresholdRef] = []
        for c in self.criteria:
            sect = self.section_of(c.id)
            if isinstance(c, ThresholdCriterion):
                if c.threshold is not None:
                    out.append(ThresholdRef(f"{sect} {c.id}", c.concept, c.comparator, c.threshold, c.unit, c.id))
                elif c.threshold_setting is not None:
                    for opt, value in (c.thresholds or {}).items():
                        out.append(
                            ThresholdRef(
                                f"{sect} {c.id} [{c.threshold_setting}={opt}]",
                                c.concept,
                                c.comparator,
                                value,
                                c.unit,
                                c.id,
                                (c.threshold_setting, opt),
                            )
                        )
            elif isinstance(c, Sepsis3Criterion):
                out.append(ThresholdRef(f"{sect} {c.id} (ED)", "sofa_total", ">=", c.ed_min_total_sofa, "points", c.id))
                out.append(
                    ThresholdRef(
                        f"{sect} {c.id} (hospitalised)",
                        "sofa_increase",
                        ">=",
                        c.hospitalised_min_sofa_increase,
                        "points",
                        c.id,
                    )
                )
            elif isinstance(c, WindowCriterion):
                out.append(ThresholdRef(f"{sect} {c.id}", f"{c.event}-{c.anchor}", c.comparator, c.hours, "h", c.id))
        if self.classification is not None:
            for rule in self.classification.endotypes:
                for b in rule.all_of:
                    out.append(ThresholdRef(f"endotype {rule.name}", b.concept, b.comparator, b.threshold, b.unit))
            for rev in self.classification.reversals:
                for b in rev.all_of:
                    out.append(ThresholdRef(f"reversal {rev.endotype}", b.concept, b.comparator, b.threshold, b.unit))
        return tuple(out)
