"""ricu's hourly semantics (rules/hourly.py H15; ricu 0.6.3 R/callback-sofa.R, R/callback-cncpt.R, R/callback-sep3.R)
on tiny timelines, each checked on both paths: the single-patient rules and the set-based engine."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import ibis
import pyarrow as pa
import pyarrow.parquet as pq

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr, sepsis3_expr
from immunoguide.cohort.schema import SCHEMAS
from immunoguide.cohort.timelines import iter_timelines
from immunoguide.criteria import load_criteria
from immunoguide.rules.hourly import Grid, hourly_sofa
from immunoguide.rules.sepsis3 import load_sepsis3_criteria, sepsis3_onset, suspected_infections
from immunoguide.rules.sofa import COMPONENTS

T0 = datetime(2024, 3, 1, 8, 20, 30)  # ICU admission with seconds, as MIMIC's intime
RICU_GRID = {"hourly_grid": "icu_admission_hours"}


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def write(tmp: Path, observations=(), infusions=(), ventilation=(), antibiotics=(), cultures=(), days: float = 3) -> Path:
    """One stay's timeline tables as an adapter writes them."""
    rows = {
        "stays": [{"stay_id": 1, "subject_id": 1, "hadm_id": 1, "intime": T0, "outtime": at(24 * days), "weight_kg": 70.0,
                   "admittime": T0, "admission_source": "emergency_department", "dataset": "test"}],
        "observations": [{"stay_id": 1, "time": t, "concept": c, "value": float(v)} for t, c, v in observations],
        "infusions": [{"stay_id": 1, "drug": d, "start": a, "stop": b, "rate_ug_kg_min": r} for d, a, b, r in infusions],
        "ventilation": [{"stay_id": 1, "start": a, "stop": b, "kind": k} for a, b, k in ventilation],
        "antibiotics": [{"stay_id": 1, "time": t, "name": "abx", "route": "IV", "time_is_date_only": False} for t in antibiotics],
        "cultures": [{"stay_id": 1, "time": t, "specimen": "BLOOD", "positive": False, "time_is_date_only": False} for t in cultures],
    }  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    for table, schema in SCHEMAS.items():
        data = rows.get(table, [])
        pq.write_table(pa.table({f.name: [r.get(f.name) for r in data] for f in schema}, schema=schema), tmp / f"{table}.parquet")
    return tmp


def both_paths(folder: Path, policies: dict) -> dict[int, dict[str, int | None]]:
    """Rows by hour index since admission: the rules' and the engine's, after asserting they are equal."""
    res = load_criteria("sofa1").resolve_policies(policies)
    (tl,) = iter_timelines(folder)
    grid = Grid.for_stay(res, tl.icu_intime)
    rules = {grid.index(r.hour_end): {c: getattr(r, c) for c in (*COMPONENTS, "total")} for r in hourly_sofa(tl, policies=res)}
    df = hourly_sofa_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(folder)), policies=res).execute()
    engine = {
        grid.index(r.hour_end.to_pydatetime()): {c: (None if getattr(r, c) != getattr(r, c) else int(getattr(r, c))) for c in (*COMPONENTS, "total")}
        for r in df.itertuples()
    }
    assert engine == rules
    return rules


def test_hours_since_admission_put_a_value_in_the_row_of_its_whole_hours_since_admission(tmp_path: Path) -> None:
    """ricu counts floored hours since ICU admission: 59 min 59 s after admission is row 0, one hour after is row 1."""
    obs = [(at(59.99 / 60), "platelets_10e3_per_ul", 90), (at(1 + 0.5 / 60), "platelets_10e3_per_ul", 40)]
    rows = both_paths(write(tmp_path, obs), {**RICU_GRID, "rolling_window": "25_rows"})
    assert rows[0]["coagulation"] == 2 and rows[1]["coagulation"] == 3


def test_the_25_row_window_keeps_a_value_one_hour_longer_than_24_rows(tmp_path: Path) -> None:
    """ricu's slide over [t − 24 h, t] includes both ends: a platelet count of row 2 still counts in row 26."""
    folder = write(tmp_path, [(at(2.5), "platelets_10e3_per_ul", 40)])
    r24 = both_paths(folder, {**RICU_GRID, "rolling_window": "24_rows"})
    r25 = both_paths(folder, {**RICU_GRID, "rolling_window": "25_rows"})
    assert (r24[25]["coagulation"], r24[26]["coagulation"]) == (3, 0)
    assert (r25[26]["coagulation"], r25[27]["coagulation"]) == (3, 0)


def test_ricu_pairs_a_fio2_with_the_pao2_of_up_to_two_rows_before(tmp_path: Path) -> None:
    """A FiO2 charted 2 rows after a PaO2 gives a P/F in its own row (ricu match_vals); 3 rows after, it does not."""
    obs = [(at(0.5), "pao2_mmhg", 60), (at(0.6), "fio2_fraction", 0.3), (at(2.5), "fio2_fraction", 0.8), (at(6.5), "pao2_mmhg", 300),
           (at(9.5), "fio2_fraction", 1.0)]  # fmt: skip
    pol = {**RICU_GRID, "pf_pairing": "ricu_match_2h", "fio2_missing": "unscored", "rolling_window": "25_rows"}
    rows = both_paths(write(tmp_path, obs), pol)
    # row 0: 60 / 0.3 = 200 -> 2 (no support); row 2: 60 / 0.8 = 75 -> capped at 2; row 6: no FiO2 within 2 rows
    # (unscored) and row 9's FiO2 is 3 rows after the PaO2 of row 6: no P/F
    assert rows[0]["respiration"] == 2 and rows[2]["respiration"] == 2
    res = load_criteria("sofa1").resolve_policies(pol)
    (tl,) = iter_timelines(tmp_path)
    hour = {Grid.for_stay(res, tl.icu_intime).index(r.hour_end): r.hour_components["respiration"] for r in hourly_sofa(tl, policies=res)}
    assert hour[0] == 2 and hour[2] == 2 and hour[6] is None and hour[9] is None


def test_room_air_is_assumed_for_a_pao2_without_fio2_under_ricu_matching(tmp_path: Path) -> None:
    """ricu fix_na_fio2: PaO2 70 with no FiO2 near it is paired with 21 % (P/F 333 -> 1 point)."""
    pol = {**RICU_GRID, "pf_pairing": "ricu_match_2h", "fio2_missing": "room_air"}
    rows = both_paths(write(tmp_path, [(at(3.5), "pao2_mmhg", 70)]), pol)
    assert rows[3]["respiration"] == 1


def test_ricu_gcs_carries_each_component_for_six_rows_and_scores_a_sedated_row_normal(tmp_path: Path) -> None:
    """Eye 2 charted in row 1 is carried to row 7 (not 8) with verbal and motor assumed normal; a row with an
    intubated assessment is 15; a charted total wins over the sum of components."""
    obs = [(at(1.2), "gcs_eye", 2), (at(7.5), "gcs_motor", 5), (at(8.5), "gcs_motor", 5), (at(12.5), "gcs_verbal", 1),
           (at(12.5), "gcs_sedated", 1), (at(20.5), "gcs_total_charted", 9), (at(20.5), "gcs_eye", 4)]  # fmt: skip
    pol = {**RICU_GRID, "gcs_assembly": "ricu_hourly_components", "gcs_when_sedated": "assume_normal", "rolling_window": "25_rows"}
    res = load_criteria("sofa1").resolve_policies(pol)
    folder = write(tmp_path, obs)
    both_paths(folder, pol)
    (tl,) = iter_timelines(folder)
    cns = {Grid.for_stay(res, tl.icu_intime).index(r.hour_end): r.hour_components["cns"] for r in hourly_sofa(tl, policies=res)}
    # row 1: 2 + 5 + 6 = 13 -> 1; row 7: eye 2 carried, motor 5 -> 12 -> 2; row 8: eye no longer carried -> 4 + 5 + 5 = 14 -> 1
    assert (cns[1], cns[7], cns[8]) == (1, 2, 1)
    assert cns[12] == 0  # sedated: 15
    assert cns[20] == 3  # charted total 9 -> 3 points
    assert cns[2] is None  # no assessment in row 2: nothing carried into it


def test_ricu_urine_scales_the_25_rows_from_the_first_urine_row_and_stops_at_the_span(tmp_path: Path) -> None:
    """15 mL/h from row 1 to row 40: renal is scored from row 12 (12 rows), a gap with no charting counts 0 mL,
    and rows after (last − first) = 39 are not evaluated (ricu 0.6.3 fill_gaps quirk)."""
    obs = [(at(k + 0.5), "urine_output_ml", 15) for k in range(1, 41) if not 20 <= k < 36]
    pol = {**RICU_GRID, "urine_output_window": "ricu", "rolling_window": "25_rows"}
    res = load_criteria("sofa1").resolve_policies(pol)
    folder = write(tmp_path, obs)
    both_paths(folder, pol)
    (tl,) = iter_timelines(folder)
    renal = {Grid.for_stay(res, tl.icu_intime).index(r.hour_end): r.hour_components["renal"] for r in hourly_sofa(tl, policies=res)}
    assert renal[11] is None and renal[12] == 3  # 12 x 15 = 180 mL over 12 rows = 360 mL/day
    assert renal[38] == 4  # rows 14..38 hold 20..35 empty: 6 x 15 + 3 x 15 = 135 mL x 24/25 = 129.6 mL/day
    assert renal[39] is not None and renal[40] is None


def test_ricu_pairs_antibiotic_and_culture_on_hours_since_admission(tmp_path: Path) -> None:
    """An antibiotic at 10.1 h and a culture at 34.9 h are 24.8 h apart (no pair with exact times) but in rows 10 and
    34, 24 rows apart: ricu pairs them, at the antibiotic's hour, whose start is the reported SI time (both paths)."""
    from immunoguide.cohort.engine import suspected_infection_expr

    folder = write(tmp_path, antibiotics=[at(10.1)], cultures=[at(34.9)])
    (tl,) = iter_timelines(folder)
    ricu = {"suspected_infection_pairing": "ricu_hourly_rolling"}
    (si,) = suspected_infections(tl, policies=ricu)
    assert (si.time, si.antibiotic_time, si.culture_time, si.direction) == (at(10), at(10), at(34), "antibiotic_first")
    assert suspected_infections(tl) == ()
    res = load_sepsis3_criteria().resolve_policies(ricu)
    df = suspected_infection_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(folder)), policies=res).execute()
    assert [(r.si_time.to_pydatetime(), r.culture_time.to_pydatetime(), r.direction) for r in df.itertuples()] == [
        (at(10), at(34), "antibiotic_first")
    ]


def test_rows_from_the_first_sofa_datum_set_the_running_minimum_baseline(tmp_path: Path) -> None:
    """With rows from ICU admission, the empty first hour (SOFA 0) is the baseline; with ricu's rows from the first
    datum (platelets 90 at 1.5 h), the baseline is that row's 2 and a rise to 3 is no onset (both paths)."""
    obs = [(at(1.5), "platelets_10e3_per_ul", 90), (at(5.5), "platelets_10e3_per_ul", 45)]
    folder = write(tmp_path, obs, antibiotics=[at(2.2)], cultures=[at(2.4)])
    (tl,) = iter_timelines(folder)
    sofa = load_criteria("sofa1").resolve_policies({**RICU_GRID, "rolling_window": "25_rows"})
    con = ibis.duckdb.connect()
    tabs = TimelineTables.from_parquet(con, str(folder))
    for rows_from, status in (("icu_admission", "onset"), ("first_sofa_datum", "no_onset")):
        pol = load_sepsis3_criteria().resolve_policies({"sofa_rows_from": rows_from, "suspected_infection_pairing": "ricu_hourly_rolling"})
        ref = sepsis3_onset(tl, policies=pol, sofa_policies=sofa)
        df = sepsis3_expr(tabs, hourly_sofa_expr(tabs, policies=sofa, rows_from=rows_from), policies=pol).execute()
        assert (ref.status, df.status.iloc[0]) == (status, status)
