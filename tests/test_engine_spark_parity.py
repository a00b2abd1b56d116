"""Parity: the same Ibis pipeline on Spark (local mode) and on DuckDB gives identical hourly SOFA, SOFA-2 and Sepsis-3.

Runs on the MIMIC-III demo timeline. Needs pyspark (requirements-spark.txt) and Java 17; CI installs both and sets
IMMUNOGUIDE_REQUIRE_SPARK=1 so that a missing Spark is a failure there, not a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import ibis
import pandas as pd
import pytest

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr, sepsis3_expr
from immunoguide.cohort.engine_sofa2 import hourly_sofa2_expr
from immunoguide.rules.sofa import COMPONENTS

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark_con():  # noqa: ANN201
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if os.environ.get("IMMUNOGUIDE_REQUIRE_SPARK") == "1":
            pytest.fail("pyspark is required (IMMUNOGUIDE_REQUIRE_SPARK=1): pip install -r requirements-spark.txt")
        pytest.skip("pyspark not installed (optional cluster engine)")
    if shutil.which("java") is None:
        pytest.fail("Java 17 is needed for the Spark engine") if os.environ.get("IMMUNOGUIDE_REQUIRE_SPARK") == "1" else pytest.skip("no java")
    from immunoguide.cohort.spark import local_spark_session

    session = local_spark_session()
    yield ibis.pyspark.connect(session)
    session.stop()


def _norm(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.sort_values(keys).reset_index(drop=True)
    for c in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[c]):
            df[c] = df[c].astype("datetime64[us]")
    return df


def test_hourly_sofa_and_sepsis3_are_identical_on_spark_and_duckdb(spark_con, mimic3_timeline: Path) -> None:  # noqa: ANN001
    """Every hourly row, component and total, and every Sepsis-3 status and onset, agree on both engines."""
    results = {}
    for name, con in (("duckdb", ibis.duckdb.connect()), ("spark", spark_con)):
        tabs = TimelineTables.from_parquet(con, str(mimic3_timeline))
        hourly = hourly_sofa_expr(tabs)
        h = hourly.select("stay_id", "hour_end", *COMPONENTS, "total", "n_imputed").to_pandas()
        s = sepsis3_expr(tabs, hourly).to_pandas()
        results[name] = (_norm(h, ["stay_id", "hour_end"]), _norm(s, ["stay_id"]))
    (hd, sd), (hs, ss) = results["duckdb"], results["spark"]
    assert len(hd) == len(hs) > 10_000
    pd.testing.assert_frame_equal(hd, hs, check_dtype=False)
    pd.testing.assert_frame_equal(sd, ss, check_dtype=False)


def test_hourly_sofa2_is_identical_on_spark_and_duckdb(spark_con, mimic3_timeline: Path) -> None:  # noqa: ANN001
    """Every hourly SOFA-2 row, component, total and imputed flag agrees on both engines (defaults, and the
    policies that take the zero-rate, salt and dopamine-ladder branches)."""
    policies = {"zero_rate_infusion": "literal", "norepinephrine_salt_when_unstated": "bitartrate_monohydrate",
                "dopamine_not_alone": "max_with_dopamine_ladder"}  # fmt: skip
    for pol in ({}, policies):
        results = {}
        for name, con in (("duckdb", ibis.duckdb.connect()), ("spark", spark_con)):
            tabs = TimelineTables.from_parquet(con, str(mimic3_timeline))
            results[name] = _norm(hourly_sofa2_expr(tabs, policies=pol).to_pandas(), ["stay_id", "hour_end"])
        assert len(results["duckdb"]) > 10_000
        pd.testing.assert_frame_equal(results["duckdb"], results["spark"], check_dtype=False)


def test_the_timeline_check_refuses_the_same_rows_on_spark_and_duckdb(spark_con, broken_timeline) -> None:  # noqa: ANN001
    """NaN vs NULL and Parquet statistics differ between the engines; the refused rows must not."""
    from immunoguide.cohort.checks import timeline_issues_expr, without_issues

    folder, _ids = broken_timeline
    got = {}
    for name, con in (("duckdb", ibis.duckdb.connect()), ("spark", spark_con)):
        tabs = TimelineTables.from_parquet(con, str(folder))
        issues = timeline_issues_expr(tabs).to_pandas().drop(columns="example")
        kept = without_issues(tabs)
        got[name] = (_norm(issues, ["stay_id", "item", "issue"]), kept.observations.count().to_pandas(), kept.stays.count().to_pandas())
    assert len(got["duckdb"][0]) >= 10
    pd.testing.assert_frame_equal(got["duckdb"][0], got["spark"][0], check_dtype=False)
    assert got["duckdb"][1:] == got["spark"][1:]


def test_the_ricu_preset_and_the_evidence_are_identical_on_spark_and_duckdb(spark_con, mimic3_ricu_timeline: Path) -> None:  # noqa: ANN001
    """ricu's semantics (hours since admission, 25-row window, P/F matching, GCS components, urine24, hourly SI
    pairing, rows from the first SOFA datum) and the evidence table give the same rows on both engines."""
    from immunoguide.cohort.engine import hourly_evidence_expr
    from immunoguide.criteria import load_criteria
    from immunoguide.criteria.presets import load_preset
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    preset = load_preset("ricu")
    sofa = load_criteria("sofa1").resolve_policies(preset.sofa_policies)
    s3 = load_sepsis3_criteria().resolve_policies(preset.sepsis3_policies)
    results = {}
    for name, con in (("duckdb", ibis.duckdb.connect()), ("spark", spark_con)):
        tabs = TimelineTables.from_parquet(con, str(mimic3_ricu_timeline))
        h = hourly_sofa_expr(tabs, policies=sofa).select("stay_id", "hour_end", *COMPONENTS, "total", "n_imputed").to_pandas()
        rows = hourly_sofa_expr(tabs, policies=sofa, rows_from="first_sofa_datum")
        s = sepsis3_expr(tabs, rows, policies=s3).to_pandas()
        ev = hourly_evidence_expr(tabs, policies=sofa).drop("value_time").to_pandas()
        results[name] = (_norm(h, ["stay_id", "hour_end"]), _norm(s, ["stay_id"]), _norm(ev, ["stay_id", "hour_end", "component"]))
    for d, sp in zip(results["duckdb"], results["spark"], strict=True):
        assert len(d) > 0
        pd.testing.assert_frame_equal(d, sp, check_dtype=False)
