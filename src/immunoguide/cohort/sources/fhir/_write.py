"""Writing: the converter's rows in a total order as Arrow tables of the timeline schema, one Parquet file per table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from immunoguide.cohort.schema import SCHEMAS, write_table
from immunoguide.cohort.sources.fhir._report import FhirIssue


def _sort_key(row: Mapping[str, Any], cols: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple((row.get(c) is None, row.get(c) if row.get(c) is not None else 0) for c in cols)


_ORDER: dict[str, tuple[str, ...]] = {
    "stays": ("stay_id",),
    "observations": ("stay_id", "time", "concept", "source"),
    "infusions": ("stay_id", "drug", "start", "source"),
    "antibiotics": ("stay_id", "time", "name"),
    "cultures": ("stay_id", "time", "specimen"),
    "ventilation": ("stay_id", "start", "kind"),
    "diagnoses": ("stay_id", "code"),
}


def timeline_tables(rows: Mapping[str, list[dict[str, Any]]], issues: Sequence[FhirIssue]) -> dict[str, pa.Table]:
    """One Arrow table per :data:`~immunoguide.cohort.schema.SCHEMAS` table: the converter's rows in a total order
    (:data:`_ORDER`, NULLs last) and ``data_quality`` from ``issues`` (already sorted)."""
    tables: dict[str, pa.Table] = {}
    for table, schema in SCHEMAS.items():
        table_rows = rows[table]
        if table in _ORDER:
            table_rows = sorted(table_rows, key=lambda r, c=_ORDER[table]: _sort_key(r, c))  # type: ignore[misc]
        if table == "data_quality":
            table_rows = [
                {
                    "stay_id": i.stay_id,
                    "source": i.source,
                    "item": i.item,
                    "issue": i.issue,
                    "n": i.n,
                    "example": i.example,
                }
                for i in issues
            ]
        tables[table] = pa.Table.from_pylist(table_rows, schema=schema)
    return tables


def write_timeline(tables: Mapping[str, pa.Table], out: Path) -> None:
    """Write ``<table>.parquet`` for every table into ``out`` (created if needed; each file replaced atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    for table, tbl in tables.items():
        write_table(tbl, out / f"{table}.parquet", table)
