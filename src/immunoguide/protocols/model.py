"""Typed model of the *classification* part of a protocol (immune endotypes and their reversal).

The protocol loader (``immunoguide.protocols``) builds these from a protocol TOML file; the endotype rules
(``immunoguide.rules.endotype``) evaluate them. Thresholds are always stored in the concept's canonical unit
(``criteria/concepts.toml``), e.g. ferritin in ng/mL, mHLA-DR in antibodies bound per monocyte (AB/c).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BiomarkerCriterion",
    "Citation",
    "ClassificationSpec",
    "Comparator",
    "Confidence",
    "EndotypeRule",
    "ReversalRule",
    "SampleTiming",
]

Comparator = Literal[">", ">=", "<", "<="]
Confidence = Literal["confirmed", "likely", "unknown"]


@dataclass(frozen=True)
class Citation:
    """Where a rule comes from and how sure the source is (spec tags: confirmed / likely / unknown)."""

    source: str
    confidence: Confidence


@dataclass(frozen=True)
class BiomarkerCriterion:
    """``<concept> <comparator> <threshold>`` measured by an accepted assay method, possibly persistently.

    Attributes
    ----------
    analyte : str
        Short name used in inputs and messages (``"ferritin"``, ``"hla_dr"``, ``"supar"``).
    concept : str
        Canonical concept (``"ferritin_ng_per_ml"``); ``threshold`` is in its canonical unit.
    comparator : {">", ">=", "<", "<="}
        Kept exactly as the source writes it (strict vs non-strict matters at the threshold).
    threshold : float
        Threshold in ``unit`` (the concept's canonical unit).
    unit : str
        Canonical unit as written in the protocol file (checked against the concept on load).
    methods : tuple of str
        Accepted assay-method tags (``("quantibrite_abc",)``); empty means any method is comparable.
    persistence_count : int
        Number of qualifying samples required (1 = a single sample).
    persistence_consecutive_days : bool
        If True, the qualifying samples must fall on consecutive calendar days (Meisel 2009: "2 consecutive days").
    """

    analyte: str
    concept: str
    comparator: Comparator
    threshold: float
    unit: str
    citation: Citation
    methods: tuple[str, ...] = ()
    persistence_count: int = 1
    persistence_consecutive_days: bool = False


@dataclass(frozen=True)
class EndotypeRule:
    """An endotype is present when every criterion in ``all_of`` is met; lower ``precedence`` wins."""

    name: str
    precedence: int
    all_of: tuple[BiomarkerCriterion, ...]
    citation: Citation


@dataclass(frozen=True)
class SampleTiming:
    """When a classification sample counts, relative to the protocol's anchor (e.g. Sepsis-3 onset).

    ``None`` for a limit means the protocol sets none (an *unknown* item stays None and is reported).
    """

    anchor: str
    window_before_anchor_h: float | None
    window_after_anchor_h: float | None
    max_result_age_h: float | None
    citation: Citation


@dataclass(frozen=True)
class ReversalRule:
    """Reversal of an endotype on serial samples.

    Either a relative fall of ``relative_fall_concept`` by at least ``relative_fall_fraction`` from the
    classification (baseline) sample (ImmunoSep MALS: ferritin fall >= 15 %), or every criterion of ``all_of``
    met (ImmunoSep immunoparalysis: HLA-DR > 8000 with ferritin < 4420), or both when both are given (any_of).
    """

    endotype: str
    citation: Citation
    relative_fall_concept: str | None = None
    relative_fall_fraction: float | None = None
    all_of: tuple[BiomarkerCriterion, ...] = ()


@dataclass(frozen=True)
class ClassificationSpec:
    """The classification part of a protocol: endotype rules by precedence, the fallback and timing."""

    endotypes: tuple[EndotypeRule, ...]
    otherwise: str
    timing: SampleTiming
    reversals: tuple[ReversalRule, ...] = ()
    #: Other spellings of assay-method tags, lower-case alias → tag (``"quantibrite"`` → ``"quantibrite_abc"``),
    #: from ``[vocabularies.methods.<tag>] aliases``; results are compared and echoed under the tag.
    method_aliases: tuple[tuple[str, str], ...] = ()

    def canonical_method(self, method: str | None) -> str | None:
        """The method tag for a method as reported: a tag or an alias in any case gives the tag; other names are
        kept as reported (and match no criterion).

        >>> spec = ClassificationSpec((), "none", SampleTiming("a", None, None, None, Citation("x", "likely")),
        ...                           method_aliases=(("quantibrite", "quantibrite_abc"),))
        >>> spec.canonical_method(" QuantiBRITE "), spec.canonical_method("QUANTIBRITE_ABC"), spec.canonical_method("MFI")
        ('quantibrite_abc', 'quantibrite_abc', 'MFI')
        """
        if method is None:
            return None
        m = method.strip().lower()
        aliases = dict(self.method_aliases)
        if m in aliases:
            return aliases[m]
        tags = {t.lower() for r in self.endotypes for c in r.all_of for t in c.methods}
        tags |= {t.lower() for rv in self.reversals for c in rv.all_of for t in c.methods}
        tags |= set(aliases.values())
        return m if m in tags else method
