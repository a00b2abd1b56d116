"""SOFA scoring of one window of worst values (SOFA-1; SOFA-2 lives in :mod:`immunoguide.rules.sofa2`).

The thresholds are data (``criteria/sofa1_vincent_1996.toml``); this module holds only the logic that combines
ladders into the six components, the named policies of reference doc §3.2, and the input model.

References
----------
Vincent JL et al. Intensive Care Med 1996;22:707-710. doi:10.1007/BF01709751.
Singer M et al. JAMA 2016;315:801-810, Table 1. doi:10.1001/jama.2016.0287.

Examples
--------
>>> r = score_sofa(SofaInputs(platelets_10e3_per_ul=90, gcs=15))
>>> r.components["coagulation"], r.total, r.imputed_components
(2, 2, ('respiration', 'liver', 'cardiovascular', 'renal'))
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from immunoguide.criteria import Criteria, load_criteria
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.criteria.implemented import SOFA1_POLICIES
from immunoguide.rules.sofa2 import score_components_sofa2
from immunoguide.rules.sofa_inputs import (
    COMPONENTS,
    NorepinephrineSalt,
    SofaInputs,
    SofaResult,
    Ventilation,
    drug_rate_counts,
    effective_gcs,
    finalise,
    fio2_for_ratio,
    mean_arterial_pressure,
    urine_ml_per_day,
)

__all__ = [
    "COMPONENTS",
    "IMPLEMENTED_POLICIES",
    "NorepinephrineSalt",
    "SofaInputs",
    "SofaResult",
    "Ventilation",
    "drug_rate_counts",
    "effective_gcs",
    "finalise",
    "fio2_for_ratio",
    "mean_arterial_pressure",
    "score_sofa",
    "urine_ml_per_day",
]

IMPLEMENTED_POLICIES: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType({"sofa1": SOFA1_POLICIES})


def score_sofa(
    inputs: SofaInputs,
    *,
    criteria: str | Criteria = "sofa1",
    policies: Mapping[str, str] | None = None,
) -> SofaResult:
    """Score one window of worst values with the chosen criteria (``"sofa1"`` default, or ``"sofa2"``).

    Parameters
    ----------
    inputs : SofaInputs
        Worst values of the window in canonical units.
    criteria : str or Criteria
        Criteria id or a loaded :class:`~immunoguide.criteria.Criteria`.
    policies : mapping, optional
        Overrides of the named policies (defaults from the criteria file).

    Returns
    -------
    SofaResult
        Components (0–4, or None when missing and not imputed), total, missing/imputed components, the
        criteria label and every policy used.
    """
    crit = load_criteria(criteria) if isinstance(criteria, str) else criteria
    resolved = crit.resolve_policies(policies)
    if crit.rule == "sofa2":
        comps, used, notes = score_components_sofa2(inputs, crit, resolved)
    else:
        comps, used, notes = _score_components_sofa1(inputs, crit, resolved)
    return finalise(crit, comps, used, notes, resolved)


# --------------------------------------------------------------------------------------------------------------
# SOFA-1
# --------------------------------------------------------------------------------------------------------------


def _support(inputs: SofaInputs, resolved: Mapping[str, str], notes: list[str]) -> bool:
    if inputs.ventilation is not None:
        return inputs.ventilation in SOFA_DEFINITIONS.support_kinds(resolved["respiratory_support"])
    if inputs.respiratory_support is None:
        notes.append("respiratory_support not given: treated as no respiratory support")
        return False
    return inputs.respiratory_support


def _score_components_sofa1(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str]
) -> tuple[dict[str, int | None], dict[str, Any], list[str]]:
    L = crit.ladders
    used: dict[str, Any] = {}
    notes: list[str] = []
    comps: dict[str, int | None] = {}

    # Respiration
    resp: int | None = None
    if inputs.pao2_mmhg is not None:
        fio2 = fio2_for_ratio(inputs, resolved, notes)
        if fio2 is not None:
            pf = round(inputs.pao2_mmhg / fio2, 6)
            used.update(pao2_mmhg=inputs.pao2_mmhg, fio2_fraction=fio2, pf_ratio_mmhg=pf)
            resp = L["respiration_pf"].points(pf, resolved)
            if resp is not None and resp >= 3:
                supported = _support(inputs, resolved, notes)
                used["respiratory_support"] = supported
                if not supported:
                    two = resolved["pf_below_200_without_support"] == "two_points"
                    resp = SOFA_DEFINITIONS.pf_without_support_cap_points if two else None
                    if resp is None:
                        notes.append("P/F < 200 without respiratory support: respiration unscored")
    comps["respiration"] = resp

    # Coagulation, liver
    comps["coagulation"] = (
        None if inputs.platelets_10e3_per_ul is None else L["coagulation_platelets"].points(inputs.platelets_10e3_per_ul, resolved)
    )
    if inputs.platelets_10e3_per_ul is not None:
        used["platelets_10e3_per_ul"] = inputs.platelets_10e3_per_ul
    comps["liver"] = (
        None if inputs.bilirubin_mg_per_dl is None else L["liver_bilirubin"].points(inputs.bilirubin_mg_per_dl, resolved)
    )
    if inputs.bilirubin_mg_per_dl is not None:
        used["bilirubin_mg_per_dl"] = inputs.bilirubin_mg_per_dl

    # Cardiovascular: max over MAP and each catecholamine ladder.
    cv: list[int] = []
    mapv = mean_arterial_pressure(inputs, resolved, used)
    if mapv is not None:
        cv.append(L["cardiovascular_map"].points(mapv, resolved) or 0)
    for drug in SOFA_DEFINITIONS.catecholamines:
        rate = drug_rate_counts(drug, inputs, resolved, notes)
        if rate is None:
            continue
        used[f"{drug}_ug_kg_min"] = rate
        cv.append(L[f"cardiovascular_{drug}"].points(rate, resolved) or 0)
    comps["cardiovascular"] = max(cv) if cv else None

    # CNS
    g = effective_gcs(inputs, resolved, used, notes)
    comps["cns"] = None if g is None else L["cns_gcs"].points(g, resolved)

    # Renal: the worse of creatinine and urine output.
    renal: list[int] = []
    if inputs.creatinine_mg_per_dl is not None:
        used["creatinine_mg_per_dl"] = inputs.creatinine_mg_per_dl
        renal.append(L["renal_creatinine"].points(inputs.creatinine_mg_per_dl, resolved) or 0)
    uo = urine_ml_per_day(inputs, resolved, used, notes)
    if uo is not None:
        renal.append(L["renal_urine"].points(uo, resolved) or 0)
    comps["renal"] = max(renal) if renal else None
    return comps, used, notes
