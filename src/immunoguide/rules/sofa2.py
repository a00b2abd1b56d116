"""SOFA-2 scoring of one window of worst values (Ranzani et al., JAMA 2025).

The thresholds, footnote constants and policies are data (``criteria/sofa2_ranzani_2025.toml``, a *secondary
transcription* of the SOFA-2 table, see its ``caveat``); this module holds only the logic that combines the
ladders with footnotes a–q into the six components. :func:`immunoguide.rules.sofa.score_sofa` with
``criteria="sofa2"`` calls :func:`score_components_sofa2` and then applies ``missing_component`` (footnote b).

SOFA-2 organ names map onto the shared component keys: brain → ``cns``, respiratory → ``respiration``,
kidney → ``renal``, hemostasis → ``coagulation`` (liver and cardiovascular keep their names).

Inputs (all in :class:`~immunoguide.rules.sofa.SofaInputs`, canonical units):

* respiratory: ``pao2_mmhg``, ``spo2_percent`` (%), ``fio2_fraction``, ``advanced_respiratory_support`` (or
  ``ventilation``), ``ecmo`` ("venovenous"/"venoarterial"), ``respiratory_support_unavailable``;
* cardiovascular: ``map_mmhg`` (or SBP/DBP), ``norepinephrine_ug_kg_min`` (+ ``norepinephrine_salt``),
  ``epinephrine_ug_kg_min``, ``dopamine_ug_kg_min``, ``dobutamine_ug_kg_min`` (µg/kg/min), ``*_duration_min``,
  ``other_vasopressor_or_inotrope`` (true only for a continuous infusion of >= 1 h, footnote j: the rule cannot
  check a flag's duration), ``mechanical_circulatory_support``, ``vasoactives_unavailable``;
* brain: ``gcs``, ``gcs_motor``, ``sedated``, ``gcs_presedation``, ``delirium_drug``;
* kidney: ``creatinine_mg_per_dl``, ``urine_ml_per_kg_per_h_6h/12h/24h`` (mean mL/kg/h over the window),
  ``anuria_12h``, ``rrt`` (renal indication only, footnote o; true on the off days of intermittent RRT,
  footnote q), ``potassium_mmol_per_l``, ``ph``, ``bicarbonate_mmol_per_l``.

References
----------
Ranzani OT et al. JAMA 2025. doi:10.1001/jama.2025.20516.
Moreno R et al. JAMA Netw Open 2025. doi:10.1001/jamanetworkopen.2025.45040.

Examples
--------
>>> from immunoguide.rules.sofa import SofaInputs, score_sofa
>>> r = score_sofa(SofaInputs(pao2_mmhg=70, fio2_fraction=1.0, ventilation="hfnc", platelets_10e3_per_ul=80),
...                criteria="sofa2")
>>> r.criteria, r.components["respiration"], r.components["coagulation"], r.total
('sofa2@ranzani-2025.secondary-transcription.v1', 4, 3, 7)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from immunoguide.criteria import Criteria, Ladder
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.criteria.implemented import SOFA2_POLICIES
from immunoguide.errors import ConflictingInputError, InputError
from immunoguide.rules.sofa_inputs import (
    SofaInputs,
    drug_rate_counts,
    effective_gcs,
    fio2_for_ratio,
    mean_arterial_pressure,
)
from immunoguide.units import norepinephrine_base_ug_kg_min

__all__ = ["IMPLEMENTED_POLICIES", "score_components_sofa2"]

IMPLEMENTED_POLICIES: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType({"sofa2": SOFA2_POLICIES})

#: Footnote g: the ``ventilation`` values that are advanced ventilatory support (oxygen and none are not).
ADVANCED_VENTILATION: frozenset[str] = frozenset(SOFA_DEFINITIONS.advanced_ventilation)

_NOT_RUNNING = "not_running"


def score_components_sofa2(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str]
) -> tuple[dict[str, int | None], dict[str, Any], list[str]]:
    """Score the six SOFA-2 components of one window (before the missing-component policy).

    Parameters
    ----------
    inputs : SofaInputs
        Worst values of the window in canonical units (see the module docstring for the SOFA-2 fields).
    crit : Criteria
        A loaded SOFA-2 criteria file (``rule = "sofa2"``).
    resolved : mapping
        Every policy of ``crit`` resolved to one option (:meth:`Criteria.resolve_policies`).

    Returns
    -------
    components : dict
        Points 0–4 per component key (``respiration``, ``coagulation``, ``liver``, ``cardiovascular``, ``cns``,
        ``renal``), None when the component has no data.
    used : dict
        The inputs that produced points, with derived values (``pf_ratio_mmhg``, ``sf_ratio``,
        ``norepinephrine_base_ug_kg_min``, ``norepinephrine_epinephrine_base_ug_kg_min``, ``rrt_criteria_met`` …).
    notes : list of str
        One human-readable line per assumption or footnote applied.

    Raises
    ------
    ConflictingInputError
        When inputs contradict each other (``advanced_respiratory_support`` vs ``ventilation``, VA-ECMO with
        ``mechanical_circulatory_support = False``).
    """
    used: dict[str, Any] = {}
    notes: list[str] = []
    L = crit.ladders
    comps: dict[str, int | None] = {
        "respiration": _respiration(inputs, crit, resolved, used, notes),
        "coagulation": _single(L["coagulation_platelets"], inputs.platelets_10e3_per_ul, "platelets_10e3_per_ul", used),
        "liver": _single(L["liver_bilirubin"], inputs.bilirubin_mg_per_dl, "bilirubin_mg_per_dl", used),
        "cardiovascular": _cardiovascular(inputs, crit, resolved, used, notes),
        "cns": _brain(inputs, crit, resolved, used, notes),
        "renal": _kidney(inputs, crit, resolved, used, notes),
    }
    for name in ("urine_output_ml_per_day", "urine_output_ml"):
        if getattr(inputs, name) is not None:
            notes.append(f"{name} is a SOFA-1 input and is not used by SOFA-2 (send urine_ml_per_kg_per_h_6h/12h/24h)")
    return comps, used, notes


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _points(ladder: Ladder, x: float, options: Mapping[str, str]) -> int:
    pts = ladder.points(x, options)
    if pts is None:
        raise InputError(
            expected=f"a value inside the domain {ladder.domain} of ladder {ladder.name}",
            got=x,
            where=f"ladder {ladder.name}",
            todo="check the value and its unit",
        )
    return pts


def _single(ladder: Ladder, x: float | None, name: str, used: dict[str, Any]) -> int | None:
    if x is None:
        return None
    used[name] = x
    return _points(ladder, x, {})


def _advanced_support(inputs: SofaInputs) -> tuple[bool, str | None]:
    """Footnote g: advanced ventilatory support, and a note when it was derived or assumed."""
    from_vent = None if inputs.ventilation is None else inputs.ventilation in ADVANCED_VENTILATION
    if inputs.advanced_respiratory_support is not None:
        if from_vent is not None and from_vent != inputs.advanced_respiratory_support:
            raise ConflictingInputError(
                expected=f"advanced_respiratory_support consistent with ventilation={inputs.ventilation!r} "
                f"(advanced support = {sorted(ADVANCED_VENTILATION)})",
                got=inputs.advanced_respiratory_support,
                where="fields advanced_respiratory_support, ventilation",
                todo="send one of the two, or make them agree",
                field="advanced_respiratory_support",
            )
        return inputs.advanced_respiratory_support, None
    if from_vent is not None:
        return from_vent, f"advanced support derived from ventilation={inputs.ventilation!r} (footnote g)"
    if inputs.respiratory_support:
        return True, "advanced support taken from respiratory_support=true (IMV/NIV are advanced support, footnote g)"
    return False, "advanced_respiratory_support not given: treated as no advanced support"


# --------------------------------------------------------------------------------------------------------------
# Respiratory (footnotes f, g, h, i)
# --------------------------------------------------------------------------------------------------------------


def _respiration(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> int | None:
    L = crit.ladders
    advanced, support_note = _advanced_support(inputs)
    if inputs.ecmo in ("venovenous", "venoarterial"):
        ecmo_pts = int(crit.constant("ecmo_respiratory_points"))
        used["ecmo"] = inputs.ecmo
        notes.append(f"{inputs.ecmo} ECMO: respiration scores {ecmo_pts} regardless of the ratio (footnote i)")
        return ecmo_pts

    pts: int | None = None
    if inputs.pao2_mmhg is not None:
        fio2 = fio2_for_ratio(inputs, resolved, notes)
        if fio2 is None:
            notes.append("PaO2 without FiO2: no P/F ratio (fio2_missing=unscored)")
        else:
            pf = round(inputs.pao2_mmhg / fio2, 6)
            used.update(pao2_mmhg=inputs.pao2_mmhg, fio2_fraction=fio2, pf_ratio_mmhg=pf)
            pts = _points(L["respiration_pf"], pf, resolved)
    if pts is None and inputs.spo2_percent is not None:
        limit = float(crit.constant("sf_ratio_max_spo2_percent"))
        if inputs.spo2_percent >= limit:
            notes.append(f"SpO2 {inputs.spo2_percent:g} % >= {limit:g} % and no P/F: S/F not used (footnote f)")
        else:
            fio2 = fio2_for_ratio(inputs, resolved, notes)
            if fio2 is None:
                notes.append("SpO2 without FiO2: no S/F ratio (fio2_missing=unscored)")
            else:
                sf = round(inputs.spo2_percent / fio2, 6)
                used.update(spo2_percent=inputs.spo2_percent, fio2_fraction=fio2, sf_ratio=sf)
                notes.append("no PaO2:FiO2 available: SpO2:FiO2 scored instead (footnote f)")
                pts = _points(L["respiration_sf"], sf, resolved)
    if pts is None:
        return None

    cap = int(crit.constant("advanced_support_cap_points"))
    if pts > cap:
        if support_note:
            notes.append(support_note)
        used["advanced_respiratory_support"] = advanced
        if not advanced:
            if (
                inputs.respiratory_support_unavailable
                and resolved["respiratory_support_ceiling"] == "honour_unavailable_flag"
            ):
                used["respiratory_support_unavailable"] = True
                notes.append(
                    f"no advanced support but support unavailable / ceiling of care: ratio scored alone, {pts} points (footnote h)"
                )
            else:
                why = " (respiratory_support_ceiling=always_cap)" if inputs.respiratory_support_unavailable else ""
                notes.append(
                    f"ratio scores {pts} but no advanced ventilatory support: capped at {cap} (footnote h){why}"
                )
                pts = cap
    return pts


# --------------------------------------------------------------------------------------------------------------
# Cardiovascular (footnotes i, j, k, l, m, n)
# --------------------------------------------------------------------------------------------------------------


def _drug(drug: str, inputs: SofaInputs, resolved: Mapping[str, str], notes: list[str]) -> tuple[float | None, bool]:
    """(rate that counts or None when not charted, whether a charted rate of exactly 0 — not a too-short infusion)."""
    raw = getattr(inputs, f"{drug}_ug_kg_min")
    if raw is None:
        return None, False
    return drug_rate_counts(drug, inputs, resolved, notes), raw == 0


def _cardiovascular(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> int | None:
    L = crit.ladders
    cands: list[int] = []
    not_running = {**resolved, "zero_rate_infusion": _NOT_RUNNING}

    # Mechanical circulatory support, VA-ECMO included (footnotes i, n).
    mech = inputs.mechanical_circulatory_support
    if inputs.ecmo == "venoarterial":
        if mech is False:
            raise ConflictingInputError(
                expected="mechanical_circulatory_support true or absent with ecmo='venoarterial' (VA-ECMO is mechanical support, footnote n)",
                got=False,
                where="fields ecmo, mechanical_circulatory_support",
                todo="fix one of the two fields",
                field="mechanical_circulatory_support",
            )
        if mech is None:
            notes.append("venoarterial ECMO counts as mechanical circulatory support (footnotes i, n)")
        mech = True
        used["ecmo"] = inputs.ecmo
    if mech:
        used["mechanical_circulatory_support"] = True
        cands.append(int(crit.constant("mechanical_support_points")))

    # Norepinephrine (as base, footnote k) + epinephrine.
    ne, ne_zero = _drug("norepinephrine", inputs, resolved, notes)
    epi, epi_zero = _drug("epinephrine", inputs, resolved, notes)
    if ne is not None and ne > 0:
        salt: str
        if inputs.norepinephrine_salt is not None:
            salt = inputs.norepinephrine_salt
        else:
            salt = resolved["norepinephrine_salt_when_unstated"]
            notes.append(
                f"norepinephrine salt not stated: dose read as {salt} (norepinephrine_salt_when_unstated; footnote k)"
            )
        ne_base = round(norepinephrine_base_ug_kg_min(ne, salt), 6)
        used.update(norepinephrine_ug_kg_min=ne, norepinephrine_salt=salt, norepinephrine_base_ug_kg_min=ne_base)
        ne = ne_base
    if epi is not None and epi > 0:
        used["epinephrine_ug_kg_min"] = epi
    parts = [x for x in (ne, epi) if x is not None]
    ne_epi = round(sum(parts), 6) if parts else None
    # A sum of 0 only goes through the contested zero edge when a rate of 0 was charted (not a too-short infusion).
    charted_zero = ne_epi == 0 and (ne_zero or epi_zero)
    ne_epi_opts = resolved if charted_zero else not_running
    ne_epi_on = ne_epi is not None and _points(L["cardiovascular_ne_epi"], ne_epi, ne_epi_opts) > 0
    if ne_epi_on:
        used["norepinephrine_epinephrine_base_ug_kg_min"] = ne_epi
        if ne_epi == 0:
            notes.append("charted norepinephrine/epinephrine rate of 0 read as '<= 0.2' (zero_rate_infusion=literal)")

    dobu, _ = _drug("dobutamine", inputs, resolved, notes)
    dopa, dopa_zero = _drug("dopamine", inputs, resolved, notes)
    others: list[str] = []
    if dobu is not None and dobu > 0:
        used["dobutamine_ug_kg_min"] = dobu
        others.append("dobutamine")
    if inputs.other_vasopressor_or_inotrope:
        used["other_vasopressor_or_inotrope"] = True
        others.append("other vasopressor/inotrope")

    # Dopamine alone (footnote l) or with other agents (policy dopamine_not_alone).
    if dopa is not None and not ne_epi_on and not others:  # footnote l
        dopa_opts = resolved if dopa_zero else not_running
        p = _points(L["cardiovascular_dopamine_alone"], dopa, dopa_opts)
        if p > 0:
            used["dopamine_ug_kg_min"] = dopa
            notes.append(f"dopamine {dopa:g} ug/kg/min as the single vasopressor: footnote l cut-offs, {p} points")
            cands.append(p)
    elif dopa is not None and dopa > 0:
        policy = resolved["dopamine_not_alone"]
        if policy == "ignored":
            notes.append("dopamine given with another agent: not scored (dopamine_not_alone=ignored)")
        else:
            used["dopamine_ug_kg_min"] = dopa
            others.append("dopamine")
            notes.append(
                f"dopamine given with another agent: counts as another vasopressor (dopamine_not_alone={policy})"
            )
            if policy == "max_with_dopamine_ladder":
                cands.append(_points(L["cardiovascular_dopamine_alone"], dopa, not_running))

    if ne_epi is not None or others:
        x = ne_epi if ne_epi is not None else 0.0
        opts = ne_epi_opts if ne_epi is not None else not_running
        ladder = L["cardiovascular_ne_epi_with_other_agent"] if others else L["cardiovascular_ne_epi"]
        p = _points(ladder, x, opts)
        if others:
            notes.append(f"other vasopressor/inotrope in use ({', '.join(others)}): {ladder.name} ladder, {p} points")
        if p > 0:
            cands.append(p)

    # MAP: 0-1 points without vasoactives, or the footnote-m ladder when vasoactives are unavailable/limited.
    mapv = mean_arterial_pressure(inputs, resolved, used)
    if mapv is not None:
        if inputs.vasoactives_unavailable and resolved["vasoactive_ceiling"] == "honour_unavailable_flag":
            used["vasoactives_unavailable"] = True
            p = _points(L["cardiovascular_map_no_vasoactives"], mapv, resolved)
            notes.append(
                f"vasoactives unavailable / ceiling of care: MAP {mapv:g} mmHg scored by footnote m, {p} points"
            )
        else:
            if inputs.vasoactives_unavailable:
                notes.append("vasoactives_unavailable ignored: MAP scored 0/1 (vasoactive_ceiling=ignore_flag)")
            p = _points(L["cardiovascular_map"], mapv, resolved)
        cands.append(p)
    return max(cands) if cands else None


# --------------------------------------------------------------------------------------------------------------
# Brain (footnotes c, d, e)
# --------------------------------------------------------------------------------------------------------------


def _brain(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> int | None:
    L = crit.ladders
    pts: int | None = None
    g = effective_gcs(inputs, resolved, used, notes)
    if g is not None:
        pts = _points(L["cns_gcs"], g, resolved)
    elif inputs.gcs_motor is not None:
        if inputs.sedated and resolved["gcs_when_sedated"] == "unscored":
            notes.append("sedated: motor response not scored either (gcs_when_sedated=unscored)")
        else:
            used["gcs_motor"] = inputs.gcs_motor
            pts = _points(L["cns_gcs_motor"], inputs.gcs_motor, resolved)
            notes.append(f"no full GCS: best motor response {inputs.gcs_motor} scored, {pts} points (footnote d)")
    if inputs.delirium_drug:
        floor = int(crit.constant("delirium_drug_min_points"))
        used["delirium_drug"] = True
        if pts is None:
            notes.append(f"no GCS: brain scored {floor} from delirium drug therapy alone (footnote e; a lower bound)")
            pts = floor
        elif pts < floor:
            notes.append(f"delirium drug therapy: brain raised to {floor} point(s) despite the GCS (footnote e)")
            pts = floor
    return pts


# --------------------------------------------------------------------------------------------------------------
# Kidney (footnotes o, p, q)
# --------------------------------------------------------------------------------------------------------------


def _kidney(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> int | None:
    L = crit.ladders
    cands: list[int] = []
    if inputs.rrt:
        used["rrt"] = True
        cands.append(int(crit.constant("rrt_points")))
        notes.append(
            "receiving RRT: kidney 4 (renal indication assumed, footnote o; intermittent RRT counts on off days, q)"
        )
    if inputs.creatinine_mg_per_dl is not None:
        used["creatinine_mg_per_dl"] = inputs.creatinine_mg_per_dl
        cands.append(_points(L["renal_creatinine"], inputs.creatinine_mg_per_dl, resolved))
    for h in (6, 12, 24):
        v = getattr(inputs, f"urine_ml_per_kg_per_h_{h}h")
        if v is not None:
            used[f"urine_ml_per_kg_per_h_{h}h"] = v
            cands.append(_points(L[f"renal_urine_{h}h"], v, resolved))
    if inputs.anuria_12h:
        used["anuria_12h"] = True
        cands.append(int(crit.constant("anuria_12h_points")))
    if not inputs.rrt and _rrt_criteria_met(inputs, crit, resolved, used, notes):
        cands.append(int(crit.constant("rrt_points")))
    return max(cands) if cands else None


def _rrt_criteria_met(
    inputs: SofaInputs, crit: Criteria, resolved: Mapping[str, str], used: dict[str, Any], notes: list[str]
) -> bool:
    """Footnote p: (creatinine > 1.2 or oliguria) and (K >= 6.0 or (pH <= 7.20 and HCO3 <= 12))."""
    renal: list[str] = []
    cr = inputs.creatinine_mg_per_dl
    if cr is not None and cr > float(crit.constant("rrt_criteria_creatinine_above_mg_per_dl")):
        renal.append(f"creatinine {cr:g} mg/dL")
    oliguria = float(crit.constant("rrt_criteria_oliguria_below_ml_per_kg_per_h"))
    hours = (6, 12, 24) if resolved["rrt_oliguria_window"] == "six_hour_mean" else (12, 24)
    for h in hours:
        v = getattr(inputs, f"urine_ml_per_kg_per_h_{h}h")
        if v is not None and v < oliguria:
            renal.append(f"urine {v:g} mL/kg/h over {h} h")
    if inputs.anuria_12h:
        renal.append("anuria for 12 h")
    if not renal:
        return False
    k, ph, hco3 = inputs.potassium_mmol_per_l, inputs.ph, inputs.bicarbonate_mmol_per_l
    hyperkalaemia = k is not None and k >= float(crit.constant("rrt_criteria_potassium_at_least_mmol_per_l"))
    acidosis = (
        ph is not None
        and hco3 is not None
        and ph <= float(crit.constant("rrt_criteria_ph_at_most"))
        and hco3 <= float(crit.constant("rrt_criteria_bicarbonate_at_most_mmol_per_l"))
    )
    if not (hyperkalaemia or acidosis):
        return False
    severity: list[str] = []
    used["rrt_criteria_met"] = True
    if hyperkalaemia:
        used["potassium_mmol_per_l"] = k
        severity.append(f"potassium {k:g} mmol/L")
    if acidosis:
        used.update(ph=ph, bicarbonate_mmol_per_l=hco3)
        severity.append(f"pH {ph:g} with bicarbonate {hco3:g} mmol/L")
    if cr is not None:
        used["creatinine_mg_per_dl"] = cr
    notes.append(
        f"not on RRT but meets RRT criteria ({' or '.join(renal)}; {' and '.join(severity)}): kidney 4 (footnote p)"
    )
    return True
