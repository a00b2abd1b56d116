"""The set-based engine for hourly SOFA-2 "where inputs exist", through Ibis (DuckDB or Spark).

:func:`hourly_sofa2_expr` computes, for every stay at once, exactly what
:func:`immunoguide.rules.hourly.hourly_sofa` computes per timeline with ``criteria="sofa2"`` (semantics H1–H14 of
that module; the per-hour inputs come from :func:`immunoguide.cohort.engine.hour_inputs_expr`, the 24 h rolling
worst and the missing-component policy from :func:`immunoguide.cohort.engine.rolled_total_expr`). The hour score
is the logic of :func:`immunoguide.rules.sofa2.score_components_sofa2` written as ``CASE`` expressions; every
threshold is a criteria ladder (:func:`~immunoguide.cohort.engine.ladder_points`) or a criteria constant.

Inputs the timeline schema never holds are NULL in every hour, so only the branches of the SOFA-2 rule reachable
with them NULL are translated:

* SpO2 (footnote f), ECMO (i), mechanical circulatory support (n), RRT (o, q), anuria flags, potassium / pH /
  bicarbonate (p: the RRT criteria are therefore never met), delirium drugs (e), motor-only GCS (d),
  ``respiratory_support_unavailable`` (h) and ``vasoactives_unavailable`` (m) are absent;
* the norepinephrine salt is never stated, so ``norepinephrine_salt_when_unstated`` always applies (k);
* infusion durations are never passed (the H8 episode rule of ``vasopressor_min_duration`` is applied before the
  hour, by :func:`~immunoguide.cohort.engine.hour_inputs_expr`), so every charted rate counts in its hour (j).

Consequently ``respiratory_support_ceiling``, ``vasoactive_ceiling`` and ``rrt_oliguria_window`` give the same
result under each of their options (the flags and laboratory values they act on are absent). A policy or an
option this module does not know raises :class:`~immunoguide.errors.PolicyError` instead of being ignored, and
criteria whose rule is not ``sofa2`` raise :class:`~immunoguide.errors.CriteriaError`.

One difference remains by construction: where the single-patient rules raise on an implausible derived value
(an ``ImplausibleValueError`` for a urine rate above the concept's plausible maximum, e.g. from a wrong body
weight), the set-based engine scores the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import ibis
import ibis.expr.types as ir

from immunoguide.cohort.engine import (
    TimelineTables,
    effective_gcs_expr,
    hour_inputs_expr,
    ladder_points,
    left_join_on_stay,
    rolled_total_expr,
)
from immunoguide.criteria import Criteria, criteria_for
from immunoguide.errors import PolicyError
from immunoguide.rules.hourly import SOFA2_URINE_WINDOWS_H, VENTILATION_ORDER
from immunoguide.rules.sofa2 import ADVANCED_VENTILATION, IMPLEMENTED_POLICIES
from immunoguide.units import NOREPINEPHRINE_SALT_TO_BASE

__all__ = ["TRANSLATED_POLICIES", "hourly_sofa2_expr"]

#: Every SOFA-2 policy option the set-based engine computes: the rules' own table
#: (:data:`immunoguide.rules.sofa2.IMPLEMENTED_POLICIES`), not a copy of it. See the module docstring for the options
#: that coincide because their inputs are absent from the timeline schema; ``tests/test_sofa_random_differential.py``
#: runs every option of every policy on both paths and compares them row by row.
TRANSLATED_POLICIES: Mapping[str, frozenset[str]] = MappingProxyType(dict(IMPLEMENTED_POLICIES["sofa2"]))

_NULL_INT = ibis.null("int64")


def _greatest(*exprs: ir.IntegerValue) -> ir.IntegerValue:
    """Greatest non-null of some 0–4 point expressions (NULL when all are NULL), each argument compiled once."""
    g = ibis.greatest(*(ibis.coalesce(e, -1) for e in exprs))
    return ibis.ifelse(g < 0, _NULL_INT, g)


def _check_policies(res: Mapping[str, str], crit: Criteria) -> None:
    for name, option in res.items():
        if name not in TRANSLATED_POLICIES:
            raise PolicyError(
                expected=f"a SOFA-2 policy the set-based engine translates: {sorted(TRANSLATED_POLICIES)}",
                got=name,
                where=f"hourly_sofa2_expr, criteria {crit.label}",
                todo="translate the policy in cohort/engine_sofa2.py, or use rules.hourly.hourly_sofa per stay",
            )
        if option not in TRANSLATED_POLICIES[name]:
            raise PolicyError(
                expected=f"an option of policy {name!r} the set-based engine translates: {sorted(TRANSLATED_POLICIES[name])}",
                got=option,
                where=f"hourly_sofa2_expr, policy {name}",
                todo="translate the option in cohort/engine_sofa2.py, or use rules.hourly.hourly_sofa per stay",
            )


def hourly_sofa2_expr(
    tables: TimelineTables,
    *,
    criteria: str | Criteria = "sofa2",
    policies: Mapping[str, str] | None = None,
    keep_lookback: bool = False,
    hour_scores: bool = False,
) -> ir.Table:
    """Hourly SOFA-2 rows for every stay, as ``hourly_sofa(tl, criteria="sofa2", policies=...)`` gives them.

    Parameters
    ----------
    tables : TimelineTables
        The timeline tables (:mod:`immunoguide.cohort.schema`), preferably read from Parquet.
    criteria : str or Criteria
        SOFA criteria with rule ``sofa2`` (default the SOFA-2 criteria file).
    policies : mapping, optional
        Overrides of the SOFA-2 policies (defaults from the criteria file); ``missing_component`` applies after
        the 24 h window (H13).
    keep_lookback : bool
        Keep the 23 look-back rows before ICU admission (H2) in the output.
    hour_scores : bool
        Return each row's own component scores before the 24 h window instead (``stay_id, hour_end, <six>``; the
        single-patient ``HourlySofa.hour_components``).

    Returns
    -------
    ibis Table
        ``stay_id, hour_end, respiration, coagulation, liver, cardiovascular, cns, renal, total, n_imputed`` and
        ``<component>_imputed`` flags — the columns of :func:`immunoguide.cohort.engine.hourly_sofa_expr`.
        Components are points 0–4 after the 24 h rolling worst (H12).

    Raises
    ------
    CriteriaError
        Criteria whose rule is not ``sofa2``, or a missing constant.
    PolicyError
        An unknown policy or option, or one this engine does not translate.
    """
    crit = criteria_for(criteria, ("sofa2",), where="hourly_sofa2_expr",
                        todo="use criteria='sofa2', or cohort.engine.hourly_sofa_expr for SOFA-1")
    res = crit.resolve_policies(policies)
    _check_policies(res, crit)
    not_running = {**res, "zero_rate_infusion": "not_running"}
    L = crit.ladders
    h = hour_inputs_expr(tables, policies=res, urine_windows_h=SOFA2_URINE_WINDOWS_H)

    # Cardiovascular inputs (footnote k): norepinephrine as base + epinephrine, computed once per hour.
    factor = NOREPINEPHRINE_SALT_TO_BASE[res["norepinephrine_salt_when_unstated"]]
    ne, epi = h.norepinephrine, h.epinephrine
    ne_b = ibis.ifelse(ne > 0, (ne * factor).round(6), ne)
    ne_epi = ibis.ifelse(
        ne_b.isnull() & epi.isnull(),
        ibis.null("float64"),
        (ibis.coalesce(ne_b, 0.0) + ibis.coalesce(epi, 0.0)).round(6),
    )
    # the contested zero edge applies only to a charted rate of 0 (not to a sum that rounds to 0)
    charted_zero = ibis.coalesce((ne_epi == 0) & ((ne == 0) | (epi == 0)), False)
    h = h.mutate(ne_epi=ne_epi, ne_epi_charted_zero=charted_zero)

    # H14 urine: stays with any urine charting and a body weight get a rate (0 when nothing was charted in W h).
    # The join also keeps the columns above from being inlined into every expression that reads them.
    obs = tables.observations
    urine_stays = obs.filter((obs.concept == "urine_output_ml") & obs.value.notnull()).select("stay_id").distinct()
    st = tables.stays
    kg = st.join(urine_stays, "stay_id").select("stay_id", urine_kg=st.weight_kg)
    kg = kg.filter(kg.urine_kg.notnull() & (kg.urine_kg != 0))
    h = left_join_on_stay(h, kg)

    # Respiration (footnotes g, h): 3-4 points need advanced ventilatory support, otherwise capped.
    cap = int(crit.constant("advanced_support_cap_points"))
    none_rank = VENTILATION_ORDER.index("none")
    advanced = ibis.coalesce(h.vent_rank, none_rank).isin(
        [i for i, k in enumerate(VENTILATION_ORDER) if k in ADVANCED_VENTILATION]
    )
    rp = ladder_points(L["respiration_pf"], h.pf, res)
    respiration = ibis.ifelse((rp > cap) & ~advanced, ibis.literal(cap, "int64"), rp)

    # Cardiovascular (footnotes j, l, m): NE + epinephrine, other agents, dopamine alone or not, MAP.
    ne_epi, charted_zero, dopa, dobu = h.ne_epi, h.ne_epi_charted_zero, h.dopamine, h.dobutamine

    def edge_aware(ladder_name: str, x: ir.NumericValue, use_res: ir.BooleanValue) -> ir.IntegerValue:
        lad = L[ladder_name]
        return ibis.ifelse(use_res, ladder_points(lad, x, res), ladder_points(lad, x, not_running))

    ne_epi_on = ibis.coalesce(edge_aware("cardiovascular_ne_epi", ne_epi, charted_zero) > 0, False)
    others = ibis.coalesce(dobu > 0, False) | ibis.coalesce(h.other_vasoactive == 1, False)
    alone = dopa.notnull() & ~ne_epi_on & ~others  # footnote l
    p_alone = edge_aware("cardiovascular_dopamine_alone", dopa, dopa == 0)
    cands = [ibis.ifelse(alone & (p_alone > 0), p_alone, _NULL_INT)]
    dopa_with = ~alone & ibis.coalesce(dopa > 0, False)
    policy = res["dopamine_not_alone"]
    if policy != "ignored":
        others = others | dopa_with
    if policy == "max_with_dopamine_ladder":
        cands.append(
            ibis.ifelse(dopa_with, ladder_points(L["cardiovascular_dopamine_alone"], dopa, not_running), _NULL_INT)
        )
    x = ibis.coalesce(ne_epi, 0.0)
    use_res = ne_epi.notnull() & charted_zero
    p_ne = ibis.ifelse(
        others,
        edge_aware("cardiovascular_ne_epi_with_other_agent", x, use_res),
        edge_aware("cardiovascular_ne_epi", x, use_res),
    )
    cands.append(ibis.ifelse((ne_epi.notnull() | others) & (p_ne > 0), p_ne, _NULL_INT))
    map_eff = ibis.coalesce(h.map_c, h.map_d) if res["map_from_sbp_dbp"] == "derive" else h.map_c
    cands.append(ladder_points(L["cardiovascular_map"], map_eff, res))

    # Kidney (footnotes o-q: no RRT, no RRT criteria without K/pH/HCO3): creatinine and urine mL/kg/h.
    renal = [ladder_points(L["renal_creatinine"], h.crea, res)]
    for w in SOFA2_URINE_WINDOWS_H:  # urine_ml_<W>h is 0 when nothing was charted in the window
        rate = (ibis.coalesce(h[f"urine_ml_{w}h"], 0.0) / h.urine_kg / w).round(6)
        rate = ibis.ifelse(h.urine_kg.notnull() & (h.urine_observed_h >= w), rate, ibis.null("float64"))
        renal.append(ladder_points(L[f"renal_urine_{w}h"], rate, res))

    hour = h.select(
        "stay_id",
        "first",
        "hour_end",
        respiration=respiration,
        coagulation=ladder_points(L["coagulation_platelets"], h.plt, res),
        liver=ladder_points(L["liver_bilirubin"], h.bili, res),
        cardiovascular=_greatest(*cands),
        cns=ladder_points(L["cns_gcs"], effective_gcs_expr(h, res), res),  # footnote c; d and e need absent inputs
        renal=_greatest(*renal),
    )
    if hour_scores:
        kept = hour if keep_lookback else hour.filter(hour.hour_end >= hour.first)
        return kept.drop("first")
    return rolled_total_expr(hour, res, keep_lookback=keep_lookback)
