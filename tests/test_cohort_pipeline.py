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


#: SQL statements a default run executes: timeline check, hourly SOFA, its evidence, Sepsis-3, infection source.
STAGES = 5


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


def _tables(out: Path) -> dict[str, object]:
    """Every Parquet table of a run folder, rows sorted (DuckDB writes sofa_hourly in no fixed order)."""
    res = {}
    for f in sorted(out.glob("*.parquet")):
        t = pq.read_table(f)
        res[f.name] = t.sort_by([(c, "ascending") for c in t.column_names])
    return res


def test_sql_from_the_cache_gives_the_same_tables_as_compiling(
    broken_timeline: tuple[Path, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose SQL comes from the cache (second run) writes the tables a run compiling every stage writes,
    also for a timeline with refused rows (the stages then read the timeline without them)."""
    import immunoguide.cohort.pipeline as pipeline

    folder, _ = broken_timeline
    monkeypatch.setattr(pipeline, "_SQL_MEMORY", {})  # earlier runs of this process left their SQL in memory
    monkeypatch.setenv("IMMUNOGUIDE_SQL_CACHE", "off")
    cold = run_cohort(folder, tmp_path / "cold")
    monkeypatch.setenv("IMMUNOGUIDE_SQL_CACHE", "on")
    monkeypatch.setenv("IMMUNOGUIDE_CACHE_DIR", str(tmp_path / "cache"))
    first = run_cohort(folder, tmp_path / "first")
    warm = run_cohort(folder, tmp_path / "warm")
    assert cold.metadata["compiled_sql"]["from_cache"] == 0 and cold.metadata["compiled_sql"]["compiled"] == STAGES
    assert first.metadata["compiled_sql"]["compiled"] == STAGES
    assert warm.metadata["compiled_sql"] == {**warm.metadata["compiled_sql"], "from_cache": STAGES, "compiled": 0}
    assert warm.metadata["timeline_check"] == cold.metadata["timeline_check"] and warm.metadata["timeline_check"]["rows_refused"]
    expected = _tables(tmp_path / "cold")
    for run in ("first", "warm"):
        got = _tables(tmp_path / run)
        assert got.keys() == expected.keys()
        for name, table in expected.items():
            assert got[name].equals(table), (run, name)


def test_other_policies_are_compiled_not_taken_from_the_cache(
    mimic3_timeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is keyed by the resolved policies: a run with another SOFA policy compiles its SQL again, and a
    cache file that is not valid is ignored (compiled again, never executed)."""
    import immunoguide.cohort.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_SQL_MEMORY", {})
    monkeypatch.setenv("IMMUNOGUIDE_CACHE_DIR", str(tmp_path / "cache"))
    run_cohort(mimic3_timeline, tmp_path / "a", protocol=None)
    other = run_cohort(mimic3_timeline, tmp_path / "b", protocol=None, sofa_policies={"gcs_when_sedated": "assume_normal"})
    assert other.metadata["compiled_sql"]["compiled"] >= 1
    assert other.metadata["sofa_policies"]["gcs_when_sedated"] == "assume_normal"
    monkeypatch.setattr(pipeline, "_SQL_MEMORY", {})
    for f in (tmp_path / "cache" / "sql").glob("*.json"):
        f.write_text('{"digest": "x", "sql": "DROP TABLE everything"}')
    again = run_cohort(mimic3_timeline, tmp_path / "c", protocol=None)
    assert again.metadata["compiled_sql"]["compiled"] == STAGES
    assert _tables(tmp_path / "c") == _tables(tmp_path / "a")


def test_a_run_with_cached_sql_does_not_import_ibis(mimic3_timeline: Path, tmp_path: Path) -> None:
    """With its SQL cached, ``run_cohort`` on DuckDB runs without importing Ibis (its import costs about half a
    second, building and compiling the expressions about two on the MIMIC-III demo)."""
    import os
    import subprocess
    import sys

    import immunoguide

    code = (
        "import sys, json; from immunoguide.cohort.pipeline import run_cohort; "
        "r = run_cohort(sys.argv[1], sys.argv[2]); "
        "print(json.dumps([r.metadata['compiled_sql'], [m for m in ('ibis', 'sqlglot') if m in sys.modules]]))"
    )
    env = {**os.environ, "IMMUNOGUIDE_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(immunoguide.__file__).resolve().parents[1])}
    seen = []
    for run in ("cold", "warm"):
        p = subprocess.run([sys.executable, "-c", code, str(mimic3_timeline), str(tmp_path / run)],
                           capture_output=True, text=True, env=env, check=True, timeout=600)
        seen.append(json.loads(p.stdout.strip().splitlines()[-1]))
    (cold_sql, cold_mods), (warm_sql, warm_mods) = seen
    assert cold_sql["compiled"] == STAGES and "ibis" in cold_mods
    assert warm_sql["from_cache"] == STAGES and warm_mods == []


def test_reading_rows_by_concept_gives_the_rows_a_filtered_parquet_read_gives(
    mimic3_timeline: Path, tmp_path: Path
) -> None:
    """``read_rows`` (row groups chosen by their statistics) returns the rows, in order, that pyarrow's filtered
    read returns: biomarkers, a concept that is absent, and a file of many small row groups."""
    import pyarrow as pa

    from immunoguide.cohort.schema import read_rows

    obs = mimic3_timeline / "observations.parquet"
    small = tmp_path / "small_groups.parquet"
    pq.write_table(pq.read_table(obs), small, row_group_size=1000)
    for path in (obs, small):
        for values in (["ferritin_ng_per_ml", "hla_dr_per_monocyte"], ["gcs"], ["no_such_concept"]):
            got = read_rows(path, column="concept", values=values)
            want = pq.read_table(path, filters=[("concept", "in", values)])
            assert got.equals(want), (path.name, values)
        assert read_rows(path).equals(pq.read_table(path))
    assert isinstance(read_rows(obs, column="concept", values=["gcs"]), pa.Table)
