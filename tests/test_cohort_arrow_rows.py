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
import pytest

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


def test_table_from_rows_is_from_pylist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same table as ``pa.Table.from_pylist`` (nulls, missing keys, aware times, non-ASCII text, no rows).

    ``from_pylist`` is compared in its default mode: importing pyspark.pandas or pandera sets
    ``PYARROW_IGNORE_TIMEZONE=1`` for the whole process, and then ``from_pylist`` stores an aware time's wall clock
    instead of its UTC instant (the next test).
    """
    monkeypatch.delenv("PYARROW_IGNORE_TIMEZONE", raising=False)
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


def test_an_aware_time_is_stored_as_its_utc_instant_whatever_pyarrow_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PYARROW_IGNORE_TIMEZONE=1`` (set by importing pyspark.pandas or pandera) changes ``from_pylist``, not the
    rows immunoguide writes: 1900-01-01 00:00 at UTC+2 is stored as 1899-12-31 22:00 either way."""
    rows = [{"sepsis3_onset_time": datetime(1900, 1, 1, tzinfo=timezone(timedelta(hours=2)))}]
    for setting in (None, "1"):
        if setting is None:
            monkeypatch.delenv("PYARROW_IGNORE_TIMEZONE", raising=False)
        else:
            monkeypatch.setenv("PYARROW_IGNORE_TIMEZONE", setting)
        got = table_from_rows(rows, SCREENING_SCHEMA).column("sepsis3_onset_time").to_pylist()
        assert got == [datetime(1899, 12, 31, 22, 0)]
    assert pa.Table.from_pylist(rows, schema=SCREENING_SCHEMA).column("sepsis3_onset_time").to_pylist() == [
        datetime(1900, 1, 1, 0, 0)
    ]  # from_pylist under PYARROW_IGNORE_TIMEZONE=1: the wall clock (what the env var does to pyarrow)


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
