"""The set-based hourly SOFA-2 (Ibis on DuckDB) gives the single-patient hourly SOFA-2 on every stay.

Differential tests, as the issue asks: every (stay, hour) row of :func:`immunoguide.cohort.engine_sofa2.hourly_sofa2_expr`
equals :func:`immunoguide.rules.hourly.hourly_sofa` with ``criteria="sofa2"`` on the timeline built from the same
tables — six components, total and imputed components — on every MIMIC-III demo stay (ODbL, see conftest.py) and
on a generated MIMIC-IV cohort, under the default policies and under policy sets that take the alternative branches.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from immunoguide.cohort.engine import TimelineTables, hour_inputs_expr, ladder_points
from immunoguide.cohort.engine_sofa2 import TRANSLATED_POLICIES, hourly_sofa2_expr
from immunoguide.cohort.schema import SCHEMAS
from immunoguide.cohort.timelines import iter_timelines
from immunoguide.criteria import load_criteria
from immunoguide.errors import CriteriaError, PolicyError
from immunoguide.rules.hourly import SOFA2_URINE_WINDOWS_H, VENTILATION_ORDER, hourly_sofa
from immunoguide.rules.sofa import COMPONENTS
from immunoguide.rules.sofa2 import ADVANCED_VENTILATION, IMPLEMENTED_POLICIES

POLICY_SETS = [
    {},
    {
        "zero_rate_infusion": "literal",
        "dopamine_not_alone": "max_with_dopamine_ladder",
        "norepinephrine_salt_when_unstated": "bitartrate_monohydrate",
        "vasopressor_min_duration": "none",
        "missing_component": "no_imputation",
        "fio2_missing": "room_air",
        "gcs_when_sedated": "as_measured",
    },
    {
        "dopamine_not_alone": "ignored",
        "map_from_sbp_dbp": "do_not_derive",
        "gcs_when_sedated": "unscored",
        "respiratory_support_ceiling": "always_cap",
        "vasoactive_ceiling": "ignore_flag",
        "rrt_oliguria_window": "longer_than_six_hours",
    },
    {"gcs_when_sedated": "assume_normal", "zero_rate_infusion": "literal", "dopamine_not_alone": "other_agent"},
]
POLICY_IDS = ["defaults", "literal_bitartrate_ladder", "mimic_code_like", "assume_normal_literal"]
_OTHER_AGENT_ITEM = 222315  # MIMIC-IV inputevents itemid of vasopressin (d_items label "Vasopressin")


def _mismatches(timeline_dir: Path, policies: dict) -> tuple[int, list]:
    """Rows of the engine and of the single-patient rules, and every (stay, hour) where they differ."""
    df = hourly_sofa2_expr(
        TimelineTables.from_parquet(ibis.duckdb.connect(), str(timeline_dir)), policies=policies
    ).execute()
    ref = {
        (tl.stay_id, r.hour_end): r
        for tl in iter_timelines(timeline_dir)
        for r in hourly_sofa(tl, criteria="sofa2", policies=policies)
    }
    assert len(df) == len(ref)
    bad = []
    for row in df.itertuples(index=False):
        r = ref[(row.stay_id, row.hour_end.to_pydatetime())]
        got = tuple(None if v != v else int(v) for v in (getattr(row, c) for c in (*COMPONENTS, "total", "n_imputed")))
        got_imputed = tuple(c for c in COMPONENTS if bool(getattr(row, f"{c}_imputed")))
        want = (*(getattr(r, c) for c in (*COMPONENTS, "total")), len(r.imputed_components))
        if (got, got_imputed) != (want, r.imputed_components):
            bad.append((row.stay_id, row.hour_end, got, want))
    return len(df), bad


def _branch_counts(timeline_dir: Path) -> dict[str, int]:
    """Hours (look-back included) whose raw inputs reach each SOFA-2 branch the engine translates."""
    crit = load_criteria("sofa2")
    res = crit.resolve_policies(None)
    h = hour_inputs_expr(
        TimelineTables.from_parquet(ibis.duckdb.connect(), str(timeline_dir)),
        policies=res,
        urine_windows_h=SOFA2_URINE_WINDOWS_H,
    )
    cap = int(crit.constants["advanced_support_cap_points"])
    advanced = [i for i, k in enumerate(VENTILATION_ORDER) if k in ADVANCED_VENTILATION]
    no_catecholamine = h.norepinephrine.isnull() & h.epinephrine.isnull() & h.dobutamine.isnull()
    counts = h.aggregate(
        weight_based_urine=(
            h.weight_kg.notnull() & h.urine_charted_6h & (h.urine_observed_h >= min(SOFA2_URINE_WINDOWS_H))
        ).sum(),
        dopamine_alone=((h.dopamine > 0) & no_catecholamine).sum(),
        dopamine_with_norepinephrine=((h.dopamine > 0) & (h.norepinephrine > 0)).sum(),
        charted_zero_norepinephrine=(h.norepinephrine == 0).sum(),
        other_vasoactive=h.other_vasoactive.notnull().sum(),
        ratio_above_cap_without_support=(
            (ladder_points(crit.ladders["respiration_pf"], h.pf, res) > cap)
            & ~ibis.coalesce(h.vent_rank, 99).isin(advanced)
        ).sum(),
        sedated_assessment=(h.gcs_any.notnull() & h.gcs_unsed.isnull()).sum(),
    ).execute()
    return {k: int(v or 0) for k, v in counts.iloc[0].items()}


@pytest.mark.parametrize("policies", POLICY_SETS, ids=POLICY_IDS)
def test_engine_hourly_sofa2_equals_single_patient_rules_on_every_demo_stay(
    mimic3_timeline: Path, policies: dict
) -> None:
    """Same rows, six components, total and imputed components as hourly_sofa(criteria='sofa2') for all 136 stays."""
    n, bad = _mismatches(mimic3_timeline, policies)
    assert n > 10_000
    assert bad == []


def test_demo_hours_reach_the_sofa2_branches_the_differential_checks(mimic3_timeline: Path) -> None:
    """The demo holds weight-based urine, dopamine alone and with norepinephrine, charted zero rates, capped
    ratios and sedated assessments, so the demo differential cannot pass on empty branches."""
    c = _branch_counts(mimic3_timeline)
    for name in (
        "weight_based_urine",
        "dopamine_alone",
        "dopamine_with_norepinephrine",
        "charted_zero_norepinephrine",
        "ratio_above_cap_without_support",
        "sedated_assessment",
    ):
        assert c[name] > 0, name


# ---------------------------------------------------------------------------------------------------------------
# Generated MIMIC-IV cohort
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic4_timeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 generated MIMIC-IV stays converted to the timeline schema; the adapter keeps the generator's vasopressin
    infusions as ``vasopressin`` segments (rate NULL: presence is what SOFA-2 reads; vasopressin is dosed in units)."""
    from immunoguide.cohort.sources.mimic4 import convert_mimic4
    from immunoguide.synth import generate_mimic4

    raw = tmp_path_factory.mktemp("mimic4_sofa2_raw")
    generate_mimic4(raw, stays=200, seed=7)
    tl = tmp_path_factory.mktemp("mimic4_sofa2_timeline")
    convert_mimic4(raw, tl)
    n = duckdb.sql(
        f"SELECT count(*) FROM '{tl}/infusions.parquet' WHERE drug = 'vasopressin' AND rate_ug_kg_min IS NULL "
        f"AND source = 'inputevents:{_OTHER_AGENT_ITEM}'"
    ).fetchall()[0][0]
    assert n > 0  # the adapter maps the other vasoactive agents
    return tl


def test_generated_mimic4_hours_hold_weight_based_urine_and_other_vasoactive_agents(mimic4_timeline: Path) -> None:
    """The generated cohort has hours with a urine rate per kg and hours with vasopressin running."""
    c = _branch_counts(mimic4_timeline)
    assert c["weight_based_urine"] > 1000
    assert c["other_vasoactive"] > 10


@pytest.mark.parametrize("policies", POLICY_SETS[:3], ids=POLICY_IDS[:3])
def test_engine_hourly_sofa2_equals_single_patient_rules_on_generated_mimic4(
    mimic4_timeline: Path, policies: dict
) -> None:
    """Every generated MIMIC-IV stay gets the same hourly SOFA-2 rows from the engine and from the rules."""
    n, bad = _mismatches(mimic4_timeline, policies)
    assert n > 10_000
    assert bad == []


def test_vasopressin_alone_scores_the_other_agent_band_in_the_engine(mimic4_timeline: Path) -> None:
    """An hour with vasopressin and no catecholamine scores at least the 'other agent alone' points of the
    cardiovascular_ne_epi_with_other_agent ladder at a NE+epinephrine dose of 0."""
    crit = load_criteria("sofa2")
    res = crit.resolve_policies(None)
    floor = crit.ladders["cardiovascular_ne_epi_with_other_agent"].points(
        0.0, {**res, "zero_rate_infusion": "not_running"}
    )
    tabs = TimelineTables.from_parquet(ibis.duckdb.connect(), str(mimic4_timeline))
    h = hour_inputs_expr(tabs, policies=res, urine_windows_h=SOFA2_URINE_WINDOWS_H)
    vaso = h.filter(h.other_vasoactive.notnull() & h.norepinephrine.isnull() & h.epinephrine.isnull()).select(
        "stay_id", "hour_end"
    )
    out = hourly_sofa2_expr(tabs)
    j = out.join(vaso, ["stay_id", "hour_end"])
    worst = j.aggregate(n=j.count(), lowest=j.cardiovascular.min()).execute().iloc[0]
    assert worst["n"] > 0
    assert worst["lowest"] >= floor


# ---------------------------------------------------------------------------------------------------------------
# Criteria and policies the engine does not translate
# ---------------------------------------------------------------------------------------------------------------


def test_engine_translates_every_policy_option_of_the_sofa2_rule() -> None:
    """Every policy and option the SOFA-2 rule implements has a set-based translation."""
    implemented = IMPLEMENTED_POLICIES["sofa2"]
    assert set(implemented) == set(TRANSLATED_POLICIES)
    assert all(implemented[p] <= TRANSLATED_POLICIES[p] for p in implemented)


def test_sofa1_criteria_are_refused_by_the_sofa2_engine(mimic3_timeline: Path) -> None:
    """Criteria with rule sofa1 raise CriteriaError instead of being scored with SOFA-2 logic."""
    tabs = TimelineTables.from_parquet(ibis.duckdb.connect(), str(mimic3_timeline))
    with pytest.raises(CriteriaError, match="sofa2"):
        hourly_sofa2_expr(tabs, criteria="sofa1")


def test_policy_option_without_a_translation_raises_policy_error(mimic3_timeline: Path) -> None:
    """A criteria file offering an option the engine does not translate fails loudly instead of computing a default."""
    crit = load_criteria("sofa2")
    spec = crit.policies["dopamine_not_alone"]
    new = dataclasses.replace(spec, options={**spec.options, "new_reading": "an option added to the data file only"})
    crit2 = dataclasses.replace(crit, policies={**crit.policies, "dopamine_not_alone": new})
    tabs = TimelineTables.from_parquet(ibis.duckdb.connect(), str(mimic3_timeline))
    with pytest.raises(PolicyError, match="new_reading"):
        hourly_sofa2_expr(tabs, criteria=crit2, policies={"dopamine_not_alone": "new_reading"})


# ---------------------------------------------------------------------------------------------------------------
# Urine charted before the grid (H2/H10 "carry" rows)
# ---------------------------------------------------------------------------------------------------------------


def _write_timeline(d: Path, stays: list[dict], observations: list[dict]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rows = {"stays": stays, "observations": observations}
    for table, schema in SCHEMAS.items():
        data = rows.get(table, [])
        pq.write_table(
            pa.table({f.name: [r.get(f.name) for r in data] for f in schema}, schema=schema), d / f"{table}.parquet"
        )


def test_urine_charted_more_than_23_hours_before_admission_enters_the_look_back_windows(tmp_path: Path) -> None:
    """2 L charted 30 h before ICU admission keeps the 12 h and 24 h rates of the first look-back rows normal, as
    the single-patient rules compute them (H10: nothing but the trailing urine sum reaches further back)."""
    t0 = datetime(2024, 1, 2, 12)
    urine = [(t0 - timedelta(hours=60), 3000.0), (t0 - timedelta(hours=30), 2000.0)]
    urine += [(t0 - timedelta(hours=k), 200.0) for k in range(16, 0, -1)]
    _write_timeline(
        tmp_path,
        [{"stay_id": 1, "intime": t0, "outtime": t0 + timedelta(hours=6), "weight_kg": 70.0}],
        [{"stay_id": 1, "time": t, "concept": "urine_output_ml", "value": v} for t, v in urine],
    )
    (tl,) = iter_timelines(tmp_path)
    want = [(r.hour_end, r.renal) for r in hourly_sofa(tl, criteria="sofa2")]
    df = hourly_sofa2_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(tmp_path))).execute()
    got = [(r.hour_end.to_pydatetime(), int(r.renal)) for r in df.sort_values("hour_end").itertuples()]
    assert got == want
