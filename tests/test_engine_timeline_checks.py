"""The engine refuses, counts and never scores the rows the single-patient rules refuse (issue "Cohort engine", Bad input).

A timeline folder written by hand or by another tool (not an adapter) may hold rows the rules would refuse; the
engine must neither drop them silently nor score them. ``broken_timeline`` (conftest) is the MIMIC-III demo timeline
with one row of every such kind added (ODbL notice in conftest).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import ibis
import pandas as pd
import pytest
from tests.conftest import BROKEN_ROWS, ORPHAN_STAY

from immunoguide.cohort.checks import ISSUES_SOURCE, timeline_issues_expr
from immunoguide.cohort.engine import TimelineTables
from immunoguide.cohort.pipeline import run_cohort
from immunoguide.cohort.timelines import load_timeline
from immunoguide.errors import InputError


def _issues(folder: Path) -> pd.DataFrame:
    con = ibis.duckdb.connect()
    return con.execute(timeline_issues_expr(TimelineTables.from_parquet(con, str(folder))))


def test_an_adapter_timeline_holds_nothing_the_rules_would_refuse(mimic3_timeline: Path) -> None:
    assert _issues(mimic3_timeline).empty


def test_every_refused_row_is_reported_per_stay_with_its_issue_including_nan_hidden_from_parquet_statistics(
    broken_timeline: tuple[Path, list[int]],
) -> None:
    """The NaN MAP is written by pyarrow, whose row-group statistics leave NaN out; DuckDB would otherwise fold the
    NaN test to false from those statistics."""
    folder, ids = broken_timeline
    got = _issues(folder)
    expected = {(ids[i], item, issue) for i, _table, item, issue in BROKEN_ROWS}
    expected.add((ORPHAN_STAY, "observations.stay_id", "no_stay"))
    assert set(zip(got.stay_id, got.item, got.issue, strict=True)) == expected
    assert (got.n == 1).all() and (got.source == ISSUES_SOURCE).all()
    assert got.loc[got.item == "observations.map_mmhg", "example"].str.lower().tolist() == ["nan"]


def test_the_single_patient_rules_refuse_exactly_the_stays_the_check_reports(broken_timeline: tuple[Path, list[int]]) -> None:
    folder, ids = broken_timeline
    reported = set(_issues(folder).stay_id) - {ORPHAN_STAY}
    stays = pd.read_parquet(folder / "stays.parquet").stay_id.sort_values().tolist()[:12]
    refused = set()
    for sid in stays:
        try:
            load_timeline(folder, sid)
        except (InputError, ValueError):  # pydantic's ValidationError is a ValueError
            refused.add(sid)
    assert refused == reported == set(ids)


@pytest.fixture(scope="module")
def two_runs(broken_timeline: tuple[Path, list[int]], mimic3_timeline: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder, ids = broken_timeline
    broken, clean = tmp_path_factory.mktemp("broken_run"), tmp_path_factory.mktemp("clean_run")
    run = run_cohort(folder, broken)
    run_cohort(mimic3_timeline, clean)
    return run, broken, clean, ids


def _table(d: Path, name: str, keys: list[str]) -> pd.DataFrame:
    return pd.read_parquet(d / f"{name}.parquet").sort_values(keys).reset_index(drop=True)


def test_a_cohort_run_scores_the_other_rows_as_if_the_refused_rows_were_never_there(two_runs) -> None:  # noqa: ANN001
    _run, broken, clean, ids = two_runs
    gone = {ids[3], ids[4]}  # their stay row is broken: the whole stay is refused
    for name, keys in (("sofa_hourly", ["stay_id", "hour_end"]), ("sepsis3", ["stay_id"])):
        b, c = _table(broken, name, keys), _table(clean, name, keys)
        assert not gone & set(b.stay_id)
        c = c[~c.stay_id.isin(gone)].reset_index(drop=True)
        pd.testing.assert_frame_equal(b, c)


def test_refused_stays_are_screened_undetermined_with_the_reason_and_counted(two_runs) -> None:  # noqa: ANN001
    run, broken, _clean, ids = two_runs
    assert run.metadata["timeline_check"] == {"rows_refused": len(BROKEN_ROWS) + 1, "stays_refused": sorted([ids[3], ids[4]])}
    sc = _table(broken, "screening", ["stay_id"]).set_index("stay_id")
    for sid, why in ((ids[3], "stays.outtime times_out_of_order"), (ids[4], "stays.weight_kg implausible_value")):
        assert sc.loc[sid, "eligible_status"] == "undetermined" and pd.isna(sc.loc[sid, "endotype"])
        assert why in json.loads(sc.loc[sid, "reasons"])["undetermined"][0]
    dq = duckdb.sql(f"select issue, sum(n) from '{broken}/data_quality.parquet' where source = '{ISSUES_SOURCE}' group by 1").fetchall()
    assert sum(n for _i, n in dq) == len(BROKEN_ROWS) + 1
    kept = duckdb.sql(f"select count(*) from '{broken}/data_quality.parquet' where source <> '{ISSUES_SOURCE}'").fetchall()[0][0]
    assert kept == len(pd.read_parquet(run.metadata["timeline_dir"] + "/data_quality.parquet")) > 0  # the adapter's rows stay
