"""Classification specs built directly from the model dataclasses, for the endotype and classify-CLI tests.

``immunosep_like`` mirrors the ImmunoSep classification of the cited specification (immunosep-spec.md §2.1:
MALS ferritin > 4420 ng/mL, precedence 1; immunoparalysis ferritin <= 4420 ng/mL AND mHLA-DR < 5000 AB/c by
QuantiBRITE, precedence 2; otherwise unclassified; §2.2 / I7: sample within 72 h after Sepsis-3 onset; §5.2
reversal: ferritin fall >= 15 % for MALS, mHLA-DR > 8000 with ferritin < 4420 for immunoparalysis).
``meisel_like`` mirrors Meisel 2009 (§8: mHLA-DR < 8000 on 2 consecutive days). They let the rule engine be tested
independently of the protocol loader; the shipped protocol files are tested against the same behaviour in
``test_endotype.py`` (``TestShippedProtocols``).
"""

from __future__ import annotations

from immunoguide.protocols.model import (
    BiomarkerCriterion,
    Citation,
    ClassificationSpec,
    EndotypeRule,
    ReversalRule,
    SampleTiming,
)

CITE = Citation("test fixture mirroring immunosep-spec.md §2.1, §2.2, §5.2", "confirmed")
MEISEL_CITE = Citation("test fixture mirroring immunosep-spec.md §8 (Meisel 2009)", "confirmed")

FERRITIN_HIGH = BiomarkerCriterion("ferritin", "ferritin_ng_per_ml", ">", 4420.0, "ng/mL", CITE)
FERRITIN_NOT_HIGH = BiomarkerCriterion("ferritin", "ferritin_ng_per_ml", "<=", 4420.0, "ng/mL", CITE)
HLA_DR_LOW = BiomarkerCriterion(
    "hla_dr", "hla_dr_per_monocyte", "<", 5000.0, "AB/c", CITE, methods=("quantibrite_abc",)
)
HLA_DR_RECOVERED = BiomarkerCriterion(
    "hla_dr", "hla_dr_per_monocyte", ">", 8000.0, "AB/c", CITE, methods=("quantibrite_abc",)
)
FERRITIN_BELOW = BiomarkerCriterion("ferritin", "ferritin_ng_per_ml", "<", 4420.0, "ng/mL", CITE)

IMMUNOSEP_REVERSALS = (
    ReversalRule("MALS", CITE, relative_fall_concept="ferritin_ng_per_ml", relative_fall_fraction=0.15),
    ReversalRule("immunoparalysis", CITE, all_of=(HLA_DR_RECOVERED, FERRITIN_BELOW)),
)


def immunosep_like(
    *,
    window_before_anchor_h: float | None = None,
    window_after_anchor_h: float | None = 72.0,
    max_result_age_h: float | None = None,
) -> ClassificationSpec:
    """ImmunoSep-like classification (timing limits adjustable for the window and staleness tests)."""
    return ClassificationSpec(
        endotypes=(
            EndotypeRule("MALS", 1, (FERRITIN_HIGH,), CITE),
            EndotypeRule("immunoparalysis", 2, (FERRITIN_NOT_HIGH, HLA_DR_LOW), CITE),
        ),
        otherwise="unclassified",
        timing=SampleTiming("sepsis3_onset", window_before_anchor_h, window_after_anchor_h, max_result_age_h, CITE),
        reversals=IMMUNOSEP_REVERSALS,
    )


def registry_wording() -> ClassificationSpec:
    """The registry's overlapping wording: immunoparalysis = mHLA-DR < 5000 alone; both states → MALS wins."""
    return ClassificationSpec(
        endotypes=(
            EndotypeRule("immunoparalysis", 2, (HLA_DR_LOW,), CITE),
            EndotypeRule("MALS", 1, (FERRITIN_HIGH,), CITE),
        ),
        otherwise="unclassified",
        timing=SampleTiming("sepsis3_onset", None, 72.0, None, CITE),
    )


def meisel_like() -> ClassificationSpec:
    """Meisel 2009-like: mHLA-DR < 8000 AB/c (QuantiBRITE) on 2 consecutive calendar days."""
    low = BiomarkerCriterion(
        "hla_dr",
        "hla_dr_per_monocyte",
        "<",
        8000.0,
        "AB/c",
        MEISEL_CITE,
        methods=("quantibrite_abc",),
        persistence_count=2,
        persistence_consecutive_days=True,
    )
    return ClassificationSpec(
        endotypes=(EndotypeRule("immunosuppression", 1, (low,), MEISEL_CITE),),
        otherwise="not_immunosuppressed",
        timing=SampleTiming("sepsis_onset", None, None, None, MEISEL_CITE),
    )
