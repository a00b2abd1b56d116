"""Python rows become Arrow tables without pandas: pyarrow 26 imports pandas (1-2 s) on any conversion of Python
objects, so the screening write and ``read_rows`` build their arrays from buffers (``cohort.schema``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import immunoguide
from immunoguide.cohort.schema import SCHEMAS, read_rows, table_from_rows
from immunoguide.cohort.screening import SCREENING_SCHEMA

_ROWS = [
    {
        "stay_id": 1,
        "sepsis3_onset_time": datetime(2144, 7, 12, 7, 0, 0, 123),
        "infection_source": "CAP",
        "endotype": None,
        "ferritin_available": True,
        "ferritin_censored": False,
        "eligible": False,
        "reasons": "é€x",
    },
    {
        "stay_id": None,
        "sepsis3_onset_time": datetime(1900, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        "infection_source": "",
    },
    {"sepsis3_onset_time": datetime(2000, 1, 1, tzinfo=UTC), "hla_dr_available": True},
    {},
]


def test_table_from_rows_is_from_pylist() -> None:
    """Same table as ``pa.Table.from_pylist`` (nulls, missing keys, aware times, non-ASCII text, no rows)."""
    for rows, schema in (
        (_ROWS, SCREENING_SCHEMA),
        ([], SCREENING_SCHEMA),
        (
            [{"stay_id": 3, "value": 1, "time": datetime(2000, 2, 3, 4, 5, 6, 7)}, {"value": 2.5}],
            SCHEMAS["observations"],
        ),
    ):
        got = table_from_rows(rows, schema)
        got.validate(full=True)
        assert got.equals(pa.Table.from_pylist(rows, schema=schema))


def test_reading_and_writing_rows_imports_no_pandas(tmp_path: Path) -> None:
    """A fresh interpreter filters a Parquet file by a column's values and writes screening rows: no pandas."""
    path = tmp_path / "obs.parquet"
    rows = [{"stay_id": i, "concept": c, "value": float(i)} for i, c in enumerate(["a", "b", "c", "b"])]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS["observations"]), path)
    assert read_rows(path, column="concept", values=("b", "z")).column("stay_id").to_pylist() == [1, 3]
    code = (
        "import sys, json; from immunoguide.cohort.schema import read_rows, table_from_rows; "
        "from immunoguide.cohort.screening import SCREENING_SCHEMA; "
        f"t = read_rows({str(path)!r}, column='concept', values=('b',)); "
        "table_from_rows([{'stay_id': 1, 'endotype': 'x'}], SCREENING_SCHEMA); "
        "print(json.dumps([t.num_rows, 'pandas' in sys.modules]))"
    )
    src = str(Path(immunoguide.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120)
    assert json.loads(p.stdout.splitlines()[-1]) == [2, False]
