"""The long format: rows are validated against a documented contract; bad rows are reported by row and column."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from immunoguide.cohort.sources.long import convert_long
from immunoguide.errors import InputError

GOOD = """stay_id,time,concept,value,unit,end_time,text,method
1,2024-01-01 08:00,icu_intime,,,,,
1,2024-01-03 08:00,icu_outtime,,,,,
1,2024-01-01 08:00,admission_source,,,,emergency_department,
1,2024-01-01 09:00,platelets_10e3_per_ul,85000,/uL,,,
1,2024-01-01 09:00,bilirubin_mg_per_dl,34.208,umol/L,,,
1,2024-01-01 10:00,norepinephrine,0.15,mcg/kg/min,2024-01-01 13:00,,
1,2024-01-01 10:00,ferritin_ng_per_ml,,ng/mL,,>5000,
1,2024-01-01 10:00,hla_dr_per_monocyte,3100,AB/c,,,quantibrite_abc
1,2024-01-01 11:00,antibiotic,,,,Ceftriaxone,
1,2024-01-01 10:30,culture,1,,,BLOOD CULTURE,
1,2024-01-01 09:00,ventilation,,,2024-01-02 09:00,invasive,
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "long.csv"
    p.write_text(text)
    return p


def test_valid_rows_are_converted_to_canonical_units(tmp_path: Path) -> None:
    """Platelets in /µL and bilirubin in µmol/L arrive in 10³/µL and mg/dL; censored ferritin keeps its text."""
    rep = convert_long(write(tmp_path, GOOD), tmp_path / "out")
    assert rep.errors == () and rep.rows_loaded == rep.rows_read == 11
    obs = dict(duckdb.sql(f"select concept, value from '{tmp_path}/out/observations.parquet'").fetchall())
    assert obs["platelets_10e3_per_ul"] == 85.0 and obs["bilirubin_mg_per_dl"] == 2.0
    assert obs["ferritin_ng_per_ml"] is None
    assert rep.rows["infusions"] == rep.rows["antibiotics"] == rep.rows["cultures"] == rep.rows["ventilation"] == 1


@pytest.mark.parametrize(
    ("row", "column", "expected_fragment"),
    [
        ("x,2024-01-01 10:00,gcs,14,points,,,", "stay_id", "integer"),
        ("1,yesterday,gcs,14,points,,,", "time", "date-time"),
        ("1,2024-01-01 11:00,gcs,16,points,,,", "value", "between 3 and 15"),
        ("1,2024-01-01 11:00,lactate_whatever,2,mmol/L,,,", "concept", "documented concept"),
        ("1,2024-01-01 11:00,creatinine_mg_per_dl,2,g/L,,,", "unit", "mg/dL"),
        ("1,2024-01-01 11:00,norepinephrine,0.1,mcg/kg/min,2024-01-01 10:00,,", "end_time", "after"),
        ("1,2024-01-01 11:00,ventilation,,,2024-01-01 12:00,helmet,", "text", "ventilation kind"),
        ("1,2024-01-01 11:00,platelets_10e3_per_ul,,10^3/uL,,,", "value", "a number"),
    ],
)
def test_bad_row_is_reported_with_row_number_column_and_expectation(
    tmp_path: Path, row: str, column: str, expected_fragment: str
) -> None:
    """A bad row is skipped and reported (row 12 = after 11 good rows) with the column and what was expected."""
    rep = convert_long(write(tmp_path, GOOD + row + "\n"), tmp_path / "out")
    assert rep.rows_loaded == 11
    (err,) = rep.errors
    assert err.row == 12 and err.column == column and expected_fragment in err.expected
    dq = duckdb.sql(f"select issue from '{tmp_path}/out/data_quality.parquet'").fetchall()
    assert dq and dq[0][0].startswith("row 12")


def test_file_without_required_columns_is_rejected_whole(tmp_path: Path) -> None:
    """A file missing stay_id/time/concept is not a long-format file: InputError naming the columns."""
    with pytest.raises(InputError, match="stay_id"):
        convert_long(write(tmp_path, "patient,when,what\n1,2024-01-01,gcs\n"), tmp_path / "out")
