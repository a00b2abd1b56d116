"""MIMIC-IV as distributed: PhysioNet csv.gz (v2.0, v2.2 and v3.1 column sets), Parquet, and a DuckDB database built
as mimic-code builds it, each written by ``immunoguide synth mimic4`` from the same seed, give identical timeline,
hourly SOFA, Sepsis-3 and screening tables through ``cohort run`` and ``screen``; a missing table, a missing column or
an unreadable file gives a clear error (never a DuckDB traceback)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from immunoguide.cli import app
from immunoguide.cli._synth import synth_app
from immunoguide.cohort.sources.mimic4 import convert_mimic4
from immunoguide.errors import MissingColumnError, MissingTableError, UnreadableSourceError
from immunoguide.synth import generate_mimic4

runner = CliRunner()
SEED, STAYS = 13, 40
#: (layout, column set) run end to end through the CLI; the first is the reference.
END_TO_END = (("physionet-csv", "2.2"), ("physionet-csv", "3.1"), ("physionet-parquet", "2.2"), ("duckdb", "2.2"))
#: Further forms compared at the timeline (everything downstream reads only the timeline).
TIMELINE_ONLY = (("parquet-parts", "2.2"), ("physionet-csv", "2.0"), ("duckdb", "2.0"))
RESULT_TABLES = ("sofa_hourly", "sepsis3", "screening", "data_quality")
# Column sets written out independently of the code (mimic-code create.sql; mimic.mit.edu change log v2.2).
CHARTEVENTS_V22 = "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value valuenum valueuom warning"
ADDED_IN_V22 = {
    "admissions": {"admit_provider_id"},
    "labevents": {"order_provider_id"},
    "microbiologyevents": {"order_provider_id"},
    "prescriptions": {"order_provider_id"},
    "chartevents": {"caregiver_id"},
    "inputevents": {"caregiver_id"},
    "outputevents": {"caregiver_id"},
    "procedureevents": {"caregiver_id"},
}


def _raw(base: Path, layout: str, version: str) -> Path:
    d = base / f"{layout}-{version}"
    if not d.exists():
        generate_mimic4(
            d, stays=STAYS, seed=SEED, bad_row_rate=0.01, layout=layout, mimic_version=version  # type: ignore[arg-type]
        )
    return d


@pytest.fixture(scope="module")
def raw_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    base = tmp_path_factory.mktemp("mimic4_layouts")
    return {v: _raw(base, *v) for v in END_TO_END + TIMELINE_ONLY}


@pytest.fixture(scope="module")
def runs(raw_dirs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    """Each end-to-end layout through `immunoguide cohort run` and `immunoguide screen` (CLI)."""
    out = {}
    for v in END_TO_END:
        base = tmp_path_factory.mktemp(f"run-{v[0]}-{v[1]}")
        data = str(raw_dirs[v])
        run = runner.invoke(app, ["cohort", "run", "--source", "mimic4", "--data", data, "--out", str(base / "run")])
        scr = runner.invoke(app, ["screen", data, "--source", "mimic4", "--out", str(base / "screen")])
        out[v] = {"run": base / "run", "screen": base / "screen", "codes": (run.exit_code, scr.exit_code),
                  "output": run.output + scr.output}
    return out


def _same_table(a: Path, b: Path) -> bool:
    """Same schema, rows and row order (the adapter writes every timeline table in a total order)."""
    return pq.read_table(a).equals(pq.read_table(b), check_metadata=False)


def _same_rows(a: Path, b: Path) -> bool:
    """Same schema and the same rows, in any order (the engine does not fix the row order of its tables)."""
    if not pq.read_schema(a).equals(pq.read_schema(b), check_metadata=False):
        return False
    ra, rb = f"read_parquet('{a}')", f"read_parquet('{b}')"
    q = (
        f"select (select count(*) from {ra}) = (select count(*) from {rb}), "
        f"(select count(*) from (from {ra} except all from {rb})), "
        f"(select count(*) from (from {rb} except all from {ra}))"
    )
    same_count, only_a, only_b = duckdb.sql(q).fetchall()[0]
    return bool(same_count) and only_a == 0 and only_b == 0


@pytest.mark.slow
@pytest.mark.parametrize("variant", END_TO_END, ids=lambda v: f"{v[0]}-v{v[1]}")
def test_cohort_run_and_screen_give_identical_tables_from_every_layout(runs: dict, variant: tuple[str, str]) -> None:
    """cohort run and screen exit 0 on each layout and write the same timeline, sofa_hourly, sepsis3, screening and
    data_quality tables as on the PhysioNet csv.gz v2.2 layout."""
    ref, got = runs[END_TO_END[0]], runs[variant]
    assert got["codes"] == (0, 0), got["output"]
    timeline = sorted(p.name for p in (ref["run"] / "timeline").glob("*.parquet"))
    assert len(timeline) == 8
    for name in timeline:
        assert _same_table(ref["run"] / "timeline" / name, got["run"] / "timeline" / name), name
    for kind in ("run", "screen"):
        for table in RESULT_TABLES:
            assert _same_rows(ref[kind] / f"{table}.parquet", got[kind] / f"{table}.parquet"), (kind, table)
    assert pq.read_metadata(got["run"] / "sofa_hourly.parquet").num_rows > STAYS * 24


@pytest.mark.slow
@pytest.mark.parametrize("variant", END_TO_END[1:], ids=lambda v: f"{v[0]}-v{v[1]}")
def test_screen_writes_the_same_report_from_every_layout(runs: dict, variant: tuple[str, str]) -> None:
    """The screening report text is the same whatever the layout (only the output folder differs)."""
    ref, got = runs[END_TO_END[0]], runs[variant]
    a = (ref["screen"] / "screening_report.md").read_text().replace(str(ref["screen"]), "OUT")
    b = (got["screen"] / "screening_report.md").read_text().replace(str(got["screen"]), "OUT")
    assert "Sepsis-3 onset" in a and a == b


@pytest.mark.parametrize("variant", TIMELINE_ONLY, ids=lambda v: f"{v[0]}-v{v[1]}")
def test_default_parquet_and_v2_0_columns_convert_to_the_same_timeline(
    raw_dirs: dict[tuple[str, str], Path], tmp_path: Path, variant: tuple[str, str]
) -> None:
    """The generator's default Parquet parts and the v2.0/v2.1 column set (no provider columns) in csv.gz and in a
    DuckDB database convert to the same timeline tables as PhysioNet csv.gz v2.2."""
    ref = convert_mimic4(raw_dirs[END_TO_END[0]], tmp_path / "ref")
    got = convert_mimic4(raw_dirs[variant], tmp_path / "got")
    assert got.rows == ref.rows and ref.rows["observations"] > 0
    for table in ref.rows:
        assert _same_table(tmp_path / "ref" / f"{table}.parquet", tmp_path / "got" / f"{table}.parquet"), table
    assert got.choices["source_layout"] == variant[0]
    assert got.choices["source_columns_match_mimic_iv"] == (["2.0"] if variant[1] == "2.0" else ["2.2", "3.1"])


def test_csv_files_have_the_column_sets_of_each_release(raw_dirs: dict[tuple[str, str], Path]) -> None:
    """v2.2 and v3.1 files carry MIMIC-IV v2.2's columns; v2.0 files lack exactly the provider columns v2.2 added."""

    def header(version: str, rel: str) -> list[str]:
        with gzip.open(raw_dirs[("physionet-csv", version)] / f"{rel}.csv.gz", "rt") as fh:
            return fh.readline().strip().split(",")

    assert header("2.2", "icu/chartevents") == CHARTEVENTS_V22.split() == header("3.1", "icu/chartevents")
    for table, added in ADDED_IN_V22.items():
        module = "icu" if table.endswith("events") and table not in ("labevents", "microbiologyevents") else "hosp"
        new, old = header("2.2", f"{module}/{table}"), header("2.0", f"{module}/{table}")
        assert set(new) - set(old) == added and [c for c in new if c not in added] == old, table


def test_duckdb_layout_is_a_mimic_code_database_with_single_precision_floats(
    raw_dirs: dict[tuple[str, str], Path],
) -> None:
    """mimic4.db has schemas mimiciv_hosp and mimiciv_icu with create.sql's types, so chartevents.valuenum is a 4-byte
    FLOAT whose stored number differs from the csv.gz value; the registered view gives the csv.gz value back."""
    from immunoguide.cohort.sources.mimic4 import ADAPTER_COLUMNS
    from immunoguide.cohort.sources.mimic4_tables import register_mimic4

    db = raw_dirs[("duckdb", "2.2")] / "mimic4.db"
    con = duckdb.connect()
    src = register_mimic4(con, db.parent, {"chartevents": ADAPTER_COLUMNS["chartevents"]})
    assert src.layout == "duckdb"
    q = "select schema_name from information_schema.schemata where catalog_name = 'mimic4_db'"
    schemas = {r[0] for r in con.execute(q).fetchall()}
    assert {"mimiciv_hosp", "mimiciv_icu"} <= schemas
    typ = con.execute("select data_type from information_schema.columns where table_catalog = 'mimic4_db' and "
                      "table_name = 'chartevents' and column_name = 'valuenum'").fetchall()
    assert typ == [("FLOAT",)]
    csv_file = raw_dirs[("physionet-csv", "2.2")] / "icu" / "chartevents.csv.gz"
    con.execute(f"create view csv as select * from read_csv('{csv_file}', header = true)")
    n_stored_differ, n_view_differ = con.execute(
        """select count(*) filter (where cast(d.valuenum as double) <> c.valuenum),
                  count(*) filter (where v.valuenum is distinct from c.valuenum)
           from (select row_number() over () as i, * from csv) c
           join (select row_number() over () as i, * from mimic4_db.mimiciv_icu.chartevents) d using (i)
           join (select row_number() over () as i, * from raw_chartevents) v using (i)"""
    ).fetchone()
    assert n_stored_differ > 0 and n_view_differ == 0


# ---------------------------------------------------------------------------------------------- errors


def _copy(raw_dirs: dict[tuple[str, str], Path], variant: tuple[str, str], dest: Path) -> Path:
    shutil.copytree(raw_dirs[variant], dest)
    return dest


def test_missing_csv_table_names_the_table_and_every_file_looked_for(raw_dirs, tmp_path: Path) -> None:
    """Without icu/outputevents.csv.gz the error (IG-E105) names the table and the files it looked for."""
    d = _copy(raw_dirs, ("physionet-csv", "2.2"), tmp_path / "raw")
    (d / "icu" / "outputevents.csv.gz").unlink()
    with pytest.raises(MissingTableError) as exc:
        convert_mimic4(d, tmp_path / "out")
    msg = exc.value.message
    assert exc.value.code == "IG-E105" and "icu/outputevents" in msg
    assert str(d / "icu" / "outputevents.csv.gz") in msg and str(d / "icu" / "outputevents.parquet") in msg
    assert "point --data at" in msg


def test_missing_table_in_a_duckdb_database_names_the_schema_it_looked_in(raw_dirs, tmp_path: Path) -> None:
    """A mimic-code database without mimiciv_icu.procedureevents gives IG-E105 naming schema.table and the file."""
    d = _copy(raw_dirs, ("duckdb", "2.2"), tmp_path / "raw")
    with duckdb.connect(str(d / "mimic4.db")) as con:
        con.execute("drop table mimiciv_icu.procedureevents")
    with pytest.raises(MissingTableError) as exc:
        convert_mimic4(d / "mimic4.db", tmp_path / "out")
    assert exc.value.code == "IG-E105"
    assert "mimiciv_icu.procedureevents" in exc.value.message and str(d / "mimic4.db") in exc.value.message


@pytest.mark.parametrize("variant", [("physionet-csv", "2.2"), ("physionet-parquet", "2.2"), ("duckdb", "2.2")],
                         ids=lambda v: v[0])
def test_missing_column_names_table_column_file_and_releases(raw_dirs, tmp_path: Path, variant) -> None:
    """chartevents without valuenum gives IG-E106 naming the table, the column, the file and the releases having it."""
    d = _copy(raw_dirs, variant, tmp_path / "raw")
    if variant[0] == "duckdb":
        with duckdb.connect(str(d / "mimic4.db")) as con:
            con.execute("alter table mimiciv_icu.chartevents drop column valuenum")
        where = f"{d / 'mimic4.db'}:mimiciv_icu.chartevents"
    else:
        ext = "csv.gz" if variant[0] == "physionet-csv" else "parquet"
        f = d / "icu" / f"chartevents.{ext}"
        opts = "(header, compression gzip)" if ext == "csv.gz" else "(format parquet)"
        duckdb.execute(f"copy (select * exclude (valuenum) from '{f}') to '{tmp_path / ('c.' + ext)}' {opts}")
        shutil.move(tmp_path / f"c.{ext}", f)
        where = str(f)
    with pytest.raises(MissingColumnError) as exc:
        convert_mimic4(d, tmp_path / "out")
    msg = exc.value.message
    assert exc.value.code == "IG-E106" and exc.value.field == "chartevents.valuenum"
    assert "icu/chartevents" in msg and where in msg and "v2.0 to v3.1" in msg


def test_unreadable_files_are_named_not_raised_as_duckdb_errors(raw_dirs, tmp_path: Path) -> None:
    """A truncated csv.gz, a file that is not gzip and text in an integer column each give IG-E107 naming the file."""
    d = _copy(raw_dirs, ("physionet-csv", "2.2"), tmp_path / "raw")
    lab = d / "hosp" / "labevents.csv.gz"
    data = lab.read_bytes()
    for broken in (data[: len(data) // 2], b"not gzip"):
        lab.write_bytes(broken)
        with pytest.raises(UnreadableSourceError) as exc:
            convert_mimic4(d, tmp_path / "out")
        assert exc.value.code == "IG-E107" and str(lab) in exc.value.message
    lab.write_bytes(data)
    out_csv = d / "icu" / "outputevents.csv.gz"
    with gzip.open(out_csv, "rt") as fh:
        lines = fh.read().splitlines()
    cells = lines[3].split(",")
    cells[lines[0].split(",").index("itemid")] = "abc"
    lines[3] = ",".join(cells)
    with gzip.open(out_csv, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.raises(UnreadableSourceError) as exc:
        convert_mimic4(d, tmp_path / "out")
    assert "icu/outputevents" in exc.value.message and str(out_csv) in exc.value.message and "abc" in exc.value.message


def test_cli_cohort_run_and_screen_print_the_error_and_exit_3(raw_dirs, tmp_path: Path) -> None:
    """cohort run and screen on a folder without hosp/prescriptions.csv.gz print the IG-E105 message and exit 3
    (a data file problem), with no traceback."""
    d = _copy(raw_dirs, ("physionet-csv", "3.1"), tmp_path / "raw")
    (d / "hosp" / "prescriptions.csv.gz").unlink()
    for args in (["cohort", "run", "--source", "mimic4", "--data", str(d), "--out", str(tmp_path / "o1")],
                 ["screen", str(d), "--source", "mimic4", "--out", str(tmp_path / "o2")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 3, res.output
        assert "IG-E105" in res.stderr and "hosp/prescriptions" in res.stderr and "Traceback" not in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)


def test_a_folder_above_the_release_folder_is_pointed_to_the_right_one(raw_dirs, tmp_path: Path) -> None:
    """--data physionet.org/files/mimiciv (holding 3.1/hosp, 3.1/icu) says to point at the 3.1 folder."""
    _copy(raw_dirs, ("physionet-csv", "3.1"), tmp_path / "mimiciv" / "3.1")
    with pytest.raises(MissingTableError) as exc:
        convert_mimic4(tmp_path / "mimiciv", tmp_path / "out")
    assert f"point --data at {tmp_path / 'mimiciv' / '3.1'}" in exc.value.message


# ---------------------------------------------------------------------------------------------- synth CLI


def test_synth_cli_writes_each_layout_and_overwrite_replaces_the_previous_one(tmp_path: Path) -> None:
    """`synth mimic4 --layout duckdb --mimic-version 2.0` writes mimic4.db; --overwrite with another layout removes it;
    an unknown layout is a usage error (exit 2) naming the layouts."""
    args = ["mimic4", "--stays", "5", "--seed", "1", "--out", str(tmp_path), "--quiet"]
    res = runner.invoke(synth_app, [*args, "--layout", "duckdb", "--mimic-version", "2.0"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mimic4.db").is_file() and not (tmp_path / "hosp").exists()
    res = runner.invoke(synth_app, [*args, "--layout", "physionet-csv", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "mimic4.db").exists() and (tmp_path / "icu" / "chartevents.csv.gz").is_file()
    assert not (tmp_path / "icu" / "chartevents").exists()
    res = runner.invoke(synth_app, [*args, "--layout", "sqlite", "--overwrite"])
    assert res.exit_code == 2 and "physionet-csv" in res.output
