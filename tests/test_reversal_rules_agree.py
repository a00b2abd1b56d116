"""The protocol's reversal rule and the SAP's reversal rule are one rule (issue 17).

``protocols/immunosep-2025.toml [[classification.reversals]]`` (read by the endotype rules) and
``analysis/immunosep_sap_v1.toml [reversal.*]`` (read by the SAP endpoint ``immune_reversal``) both transcribe
SAP p. 69 (N056, N095). They are two files owned by two layers, so this test ties them: the same strata, and per
stratum the same relative fall and the same criteria (analyte, concept, comparator, threshold, unit, persistence).

Known difference, kept visible here: the protocol accepts an HLA-DR only from the QuantiBRITE assay
(``methods = ["quantibrite_abc"]``) while the SAP rule names no assay (any method); the last test pins it so a
change on either side is seen.
"""

from __future__ import annotations

from immunoguide.analysis.sap import load_sap
from immunoguide.protocols import load_protocol

#: SAP stratum → protocol endotype (protocol [classification.endotypes] label "Sepsis-induced immunoparalysis (SII)";
#: design "MALS -> anakinra, SII -> rhIFN-gamma").
SAP_STRATUM_TO_ENDOTYPE = {"MALS": "MALS", "SII": "immunoparalysis"}


def _criteria(rule):  # noqa: ANN001, ANN202
    return sorted(
        (c.analyte, c.concept, c.comparator, c.threshold, c.unit, c.persistence_count, c.persistence_consecutive_days)
        for c in rule.all_of
    )


def test_every_reversal_of_the_protocol_is_the_sap_reversal_of_its_stratum() -> None:
    protocol = {r.endotype: r for r in load_protocol("immunosep-2025").classification.reversals}
    sap = load_sap().reversals
    assert {SAP_STRATUM_TO_ENDOTYPE[s] for s in sap} == set(protocol)
    for stratum, endotype in SAP_STRATUM_TO_ENDOTYPE.items():
        p, s = protocol[endotype], sap[stratum]
        assert (p.relative_fall_concept, p.relative_fall_fraction) == (
            s.relative_fall_concept,
            s.relative_fall_fraction,
        )
        assert _criteria(p) == _criteria(s), stratum
        assert _criteria(p) or p.relative_fall_fraction is not None  # each rule says something


def test_the_protocol_alone_restricts_the_hla_dr_assay() -> None:
    protocol = {r.endotype: r for r in load_protocol("immunosep-2025").classification.reversals}
    methods = {(c.analyte, c.methods) for c in protocol["immunoparalysis"].all_of}
    assert methods == {("hla_dr", ("quantibrite_abc",)), ("ferritin", ())}
    assert {c.methods for c in load_sap().reversals["SII"].all_of} == {()}
