"""The ricu source profile: MIMIC-III and MIMIC-IV read as ricu 0.6.3 reads them (cohort/sources/ricu_profile.py).
Golden facts cite ricu's own output on the MIMIC-III demo (tests/reference/ricu-0.6.3-mimic-iii-demo)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import ibis
import pandas as pd
import pytest

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr
from immunoguide.cohort.sources.ricu_profile import attach_to_stays
from immunoguide.cohort.timelines import iter_timelines
from immunoguide.criteria import load_criteria
from immunoguide.criteria.presets import load_preset
from immunoguide.rules.hourly import hourly_sofa
from immunoguide.rules.sofa import COMPONENTS


def test_admission_rows_go_to_the_first_stay_ending_after_them_else_to_the_last() -> None:
    """ricu upgrade_id: a lab before or during stay A is A's, one between A and B is B's, one after B is B's."""
    con = duckdb.connect()
    t = datetime(2100, 1, 1)
    con.execute("CREATE TABLE stays (stay_id BIGINT, hadm_id BIGINT, intime TIMESTAMP, outtime TIMESTAMP)")
    con.executemany(
        "INSERT INTO stays VALUES (?, ?, ?, ?)",
        [(1, 9, t, t + timedelta(hours=10, seconds=30)), (2, 9, t + timedelta(hours=20), t + timedelta(hours=30))],
    )
    con.execute("CREATE TABLE labs (hadm_id BIGINT, time TIMESTAMP, v INT)")
    hours = {-5: 1, 10: 1, 11: 2, 25: 2, 40: 2}
    con.executemany("INSERT INTO labs VALUES (9, ?, ?)", [(t + timedelta(hours=h), h) for h in hours] + [])
    con.execute("INSERT INTO labs VALUES (NULL, ?, 99)", [t])
    attach_to_stays(con, "SELECT * FROM labs", "time", "labs_r")
    got = dict(con.execute("SELECT v, ricu_stay_id FROM labs_r").fetchall())
    assert got == hours  # the row without an admission id is dropped, as in ricu


def test_cultures_are_attached_by_chart_date_as_ricu_does(mimic3_ricu_timeline: Path) -> None:
    """Stay 222779's blood cultures charted the day it left the ICU, after discharge, are still its own (ricu assigns
    the stay on the chart date); ricu's susp_inf has them at hours 85 and 89 (ricu_susp_inf_mimic_demo.csv)."""
    cx = pd.read_parquet(mimic3_ricu_timeline / "cultures.parquet")
    st = pd.read_parquet(mimic3_ricu_timeline / "stays.parquet").set_index("stay_id")
    t0 = st.loc[222779, "intime"]
    hours = {int((t - t0) // pd.Timedelta(hours=1)) for t in cx[cx.stay_id == 222779].time}
    assert {85, 89} <= hours


def test_carevue_rates_are_kept_as_charted_within_ricu_bounds(mimic3_demo_dir: Path, mimic3_ricu_timeline: Path) -> None:
    """ricu does not convert CareVue mcg/min rates to mcg/kg/min; only rates inside its bounds (norepinephrine 0–3)
    are kept. Every kept CareVue norepinephrine rate is a charted rate as it stands."""
    inf = pd.read_parquet(mimic3_ricu_timeline / "infusions.parquet")
    cv = inf[inf.source.str.startswith("inputevents_cv:") & (inf.drug == "norepinephrine")]
    raw = duckdb.sql(
        f"SELECT DISTINCT TRY_CAST(rate AS DOUBLE) AS rate FROM read_csv('{mimic3_demo_dir / 'inputevents_cv.csv.gz'}') WHERE itemid IN (30047, 30120)"
    ).df()
    assert len(cv) > 100 and set(cv.rate_ug_kg_min.round(6)) <= set(raw.rate.round(6))
    assert cv.rate_ug_kg_min.between(0, 3).all()


@pytest.fixture(scope="module")
def mimic4_ricu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from immunoguide.cohort.sources.mimic4_ricu import convert_mimic4_ricu
    from immunoguide.synth import generate_mimic4

    raw = tmp_path_factory.mktemp("mimic4_raw")
    generate_mimic4(raw, stays=40, seed=11, layout="physionet-csv")
    out = tmp_path_factory.mktemp("mimic4_ricu")
    convert_mimic4_ricu(raw, out)
    return out


def test_mimic4_is_read_with_ricus_miiv_items(mimic4_ricu: Path) -> None:
    """GCS as components with 'No Response-ETT' flags, ventilation from procedures 225792/225794 as invasive or
    non-invasive, catecholamines from inputevents: what ricu's miiv source reads."""
    obs = pd.read_parquet(mimic4_ricu / "observations.parquet")
    assert {"gcs_eye", "gcs_verbal", "gcs_motor", "gcs_sedated"} <= set(obs.concept)
    vent = pd.read_parquet(mimic4_ricu / "ventilation.parquet")
    assert len(vent) and set(vent.kind) <= {"invasive", "noninvasive"}
    assert (vent.stop >= vent.start).all()


def test_engine_equals_rules_under_the_ricu_preset_on_mimic4(mimic4_ricu: Path) -> None:
    """On a MIMIC-IV timeline read with the ricu profile, the engine and the single-patient rules give the same rows."""
    pol = load_criteria("sofa1").resolve_policies(load_preset("ricu").sofa_policies)
    df = hourly_sofa_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(mimic4_ricu)), policies=pol).execute()
    ref = {(tl.stay_id, r.hour_end): tuple(getattr(r, c) for c in (*COMPONENTS, "total"))
           for tl in iter_timelines(mimic4_ricu) for r in hourly_sofa(tl, policies=pol)}  # fmt: skip
    got = {(r.stay_id, r.hour_end.to_pydatetime()): tuple(int(getattr(r, c)) for c in (*COMPONENTS, "total"))
           for r in df.itertuples()}  # fmt: skip
    assert got == ref and len(got) > 1000
