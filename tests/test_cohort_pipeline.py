"""`immunoguide cohort run|summary` and `immunoguide screen` on the MIMIC-III demo and on the long format."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.cohort.pipeline import run_cohort

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort_out(mimic3_timeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    run_cohort(mimic3_timeline, out)
    return out


def test_run_writes_the_three_named_tables_with_their_columns(cohort_out: Path) -> None:
    """sofa_hourly, sepsis3 and screening exist with the columns the issue names."""
    assert {"stay_id", "hour_end", "respiration", "coagulation", "liver", "cardiovascular", "cns", "renal", "total"} <= set(
        pq.read_schema(cohort_out / "sofa_hourly.parquet").names
    )
    assert {"stay_id", "suspected_infection_time", "onset_time", "infection_source"} <= set(
        pq.read_schema(cohort_out / "sepsis3.parquet").names
    )
    assert {"stay_id", "endotype", "eligible", "reasons"} <= set(pq.read_schema(cohort_out / "screening.parquet").names)


def test_one_hourly_row_per_stay_and_hour(cohort_out: Path) -> None:
    """No (stay, hour) appears twice (mimic-code's test_sofa_one_row_per_hour)."""
    dup = duckdb.sql(
        f"select count(*) from (select stay_id, hour_end from '{cohort_out}/sofa_hourly.parquet' group by 1, 2 having count(*) > 1)"
    ).fetchall()[0][0]
    assert dup == 0


def test_censored_ferritin_stays_are_indeterminate_never_classified(cohort_out: Path) -> None:
    """A Sepsis-3 stay whose ferritin is 'GREATER THAN 2000' is indeterminate with a reason naming the censoring."""
    rows = duckdb.sql(
        f"select endotype, endotype_reasons from '{cohort_out}/screening.parquet' where ferritin_censored and sepsis3_onset_time is not null"
    ).fetchall()
    assert rows
    for endotype, reasons in rows:
        assert endotype == "indeterminate"
        assert "GREATER THAN 2000" in " ".join(json.loads(reasons))


def test_demo_has_no_mhla_dr_so_no_stay_is_classified_immunoparalysed(cohort_out: Path) -> None:
    """The demo has no quantitative mHLA-DR (SOURCE.md): no stay may come out immunoparalysed."""
    n = duckdb.sql(f"select count(*) from '{cohort_out}/screening.parquet' where endotype = 'immunoparalysis'").fetchall()[0][0]
    assert n == 0


def test_metadata_names_every_choice_that_differs_from_mimic_code_or_ricu(cohort_out: Path) -> None:
    """The run metadata lists, e.g., the ≥ 1 h vasopressor rule (mimic-code has none) and the Sepsis-3 baseline."""
    meta = json.loads((cohort_out / "metadata.json").read_text())
    diffs = {(d["choice"], d["anchor"]) for d in meta["differences_from_reference_implementations"]}
    assert ("sofa.vasopressor_min_duration", "mimic_code") in diffs
    assert ("sepsis3.baseline", "mimic_code") in diffs
    assert ("sofa.vasopressor_min_duration", "ricu") not in diffs
    assert meta["sofa_criteria"].startswith("sofa1@") and meta["protocol"] == "immunosep-2025"


def test_cli_run_summary_and_screen_on_the_demo(mimic3_demo_dir: Path, tmp_path: Path) -> None:
    """The CLI converts the demo, runs the engine, summarises with plots and writes the screening report."""
    out = tmp_path / "run"
    res = runner.invoke(app, ["cohort", "run", "--source", "mimic3", "--data", str(mimic3_demo_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["cohort", "summary", str(out), "--json"])
    assert res.exit_code == 0
    summary = json.loads(res.stdout)
    assert summary["stays"] == 136 and 0 < summary["sepsis3_onsets"] < 136
    assert all(Path(p).exists() for p in summary["plots"])
    res = runner.invoke(app, ["screen", str(mimic3_demo_dir), "--source", "mimic3", "--out", str(tmp_path / "scr")])
    assert res.exit_code == 0
    text = (tmp_path / "scr" / "screening_report.md").read_text()
    assert "GREATER THAN 2000" in text and "mHLA-DR" in text


def test_cli_run_rejects_an_unknown_source(tmp_path: Path) -> None:
    """--source eicu is not an adapter: clear error, exit code 3, nothing written."""
    res = runner.invoke(app, ["cohort", "run", "--source", "eicu", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 3 and "mimic3" in res.stderr
    assert not (tmp_path / "o" / "sofa_hourly.parquet").exists()


def test_long_format_file_runs_end_to_end(tmp_path: Path) -> None:
    """A small long-format file with a septic course gets an onset and its screening row."""
    rows = ["stay_id,time,concept,value,unit,end_time,text,method",
            "7,2024-01-01 08:00,icu_intime,,,,,", "7,2024-01-04 08:00,icu_outtime,,,,,",
            "7,2024-01-01 08:00,admission_source,,,,emergency_department,", "7,2024-01-01 08:00,admit_time,,,,,",
            "7,2024-01-01 09:00,platelets_10e3_per_ul,180,10^3/uL,,,",
            "7,2024-01-01 20:00,culture,1,,,BLOOD CULTURE,", "7,2024-01-01 21:00,antibiotic,,,,meropenem,",
            "7,2024-01-01 22:00,platelets_10e3_per_ul,40,10^3/uL,,,",
            "7,2024-01-01 22:30,norepinephrine,0.2,mcg/kg/min,2024-01-02 03:00,,",
            "7,2024-01-01 23:00,ferritin_ng_per_ml,820,ng/mL,,,",
            "7,2024-01-01 23:00,hla_dr_per_monocyte,3100,AB/c,,,quantibrite_abc"]
    f = tmp_path / "long.csv"
    f.write_text("\n".join(rows) + "\n")
    res = runner.invoke(app, ["cohort", "run", "--source", "long", "--data", str(f), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    s3 = duckdb.sql(f"select status, infection_source from '{tmp_path}/o/sepsis3.parquet'").fetchall()
    assert s3 == [("onset", "bacteremia")]
    sc = duckdb.sql(f"select endotype from '{tmp_path}/o/screening.parquet'").fetchall()
    assert sc == [("immunoparalysis",)]


def test_sofa2_flag_writes_hourly_sofa2_with_the_same_grid(mimic3_timeline: Path, tmp_path: Path) -> None:
    """--sofa2 adds sofa2_hourly.parquet on exactly the rows of sofa_hourly, labelled in the metadata."""
    run_cohort(mimic3_timeline, tmp_path, protocol=None, sofa2=True)
    a = duckdb.sql(f"select count(*), count(distinct stay_id) from '{tmp_path}/sofa_hourly.parquet'").fetchall()
    b = duckdb.sql(f"select count(*), count(distinct stay_id) from '{tmp_path}/sofa2_hourly.parquet'").fetchall()
    assert a == b
    assert json.loads((tmp_path / "metadata.json").read_text())["sofa2_criteria"].startswith("sofa2@")
