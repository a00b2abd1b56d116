"""The one timeline schema every source adapter writes and the engine (and the single-patient path) reads.

Tables (all times are naive timestamps in the source's clock; one row per fact):

``stays``
    stay_id, subject_id, hadm_id, intime, outtime, admittime, deathtime, admission_source
    ('emergency_department' | 'inpatient' | NULL), age_years, sex, weight_kg, dataset.
``observations``
    stay_id, time, concept, value (canonical unit of ``concept`` in criteria/concepts.toml, NULL for text-only
    results), value_text (the source's text, kept for censored results such as "GREATER THAN 2000"), unit (the
    source's unit), method (assay method tag, e.g. HLA-DR ``quantibrite_abc``), source (``table:itemid``).
    Extra concepts beyond concepts.toml: ``gcs_sedated`` (value 1 when GCS was charted on an intubated or
    sedated patient, e.g. verbal 'No Response-ETT'), ``urine_output_ml`` (one charted volume, mL; the GU
    irrigant is negative as in mimic-code).
``infusions``
    stay_id, drug ('dopamine' | 'dobutamine' | 'epinephrine' | 'norepinephrine'), start, stop, rate_ug_kg_min, source.
``antibiotics``
    stay_id, time, name, route, time_is_date_only.
``cultures``
    stay_id, time, specimen, positive, time_is_date_only.
``ventilation``
    stay_id, start, stop, kind (SofaInputs.ventilation literals).
``diagnoses``
    stay_id, code, version (9 | 10).
``data_quality``
    stay_id (NULL when no stay could be attached), source, item, issue, n, example — every row the adapter could
    not use, counted per stay and reason; nothing is dropped silently.

Every adapter writes through :func:`write_table`: rows in :func:`sort_columns` order (a total order, so the same
source gives the same file) in row groups of :data:`ROW_GROUP_ROWS`. Observations are clustered by concept first:
every consumer reads them concept by concept, and the row-group statistics then let DuckDB and Spark skip the row
groups of the other concepts (the cohort engine scans the file once per input it needs).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ROW_GROUP_ROWS",
    "SCHEMAS",
    "SORT_KEYS",
    "TABLES",
    "read_rows",
    "sort_columns",
    "table_from_rows",
    "write_table",
]

TS = pa.timestamp("us")

SCHEMAS: dict[str, pa.Schema] = {
    "stays": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("subject_id", pa.int64()),
            ("hadm_id", pa.int64()),
            ("intime", TS),
            ("outtime", TS),
            ("admittime", TS),
            ("deathtime", TS),
            ("admission_source", pa.string()),
            ("age_years", pa.float64()),
            ("sex", pa.string()),
            ("weight_kg", pa.float64()),
            ("dataset", pa.string()),
        ]
    ),
    "observations": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("time", TS),
            ("concept", pa.string()),
            ("value", pa.float64()),
            ("value_text", pa.string()),
            ("unit", pa.string()),
            ("method", pa.string()),
            ("source", pa.string()),
        ]
    ),
    "infusions": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("drug", pa.string()),
            ("start", TS),
            ("stop", TS),
            ("rate_ug_kg_min", pa.float64()),
            ("source", pa.string()),
        ]
    ),
    "antibiotics": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("time", TS),
            ("name", pa.string()),
            ("route", pa.string()),
            ("time_is_date_only", pa.bool_()),
        ]
    ),
    "cultures": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("time", TS),
            ("specimen", pa.string()),
            ("positive", pa.bool_()),
            ("time_is_date_only", pa.bool_()),
        ]
    ),
    "ventilation": pa.schema([("stay_id", pa.int64()), ("start", TS), ("stop", TS), ("kind", pa.string())]),
    "diagnoses": pa.schema([("stay_id", pa.int64()), ("code", pa.string()), ("version", pa.int64())]),
    "data_quality": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("source", pa.string()),
            ("item", pa.string()),
            ("issue", pa.string()),
            ("n", pa.int64()),
            ("example", pa.string()),
        ]
    ),
}

TABLES: tuple[str, ...] = tuple(SCHEMAS)

#: The leading sort keys of each table (the other columns follow in schema order); default: the schema order.
SORT_KEYS: dict[str, tuple[str, ...]] = {"observations": ("concept", "stay_id", "time")}
#: Rows per Parquet row group: the unit a reader skips by its statistics.
ROW_GROUP_ROWS = 131_072


def sort_columns(table: str) -> list[str]:
    """Every column of ``table`` in the order its rows are written (leading keys of :data:`SORT_KEYS` first)."""
    lead = SORT_KEYS.get(table, ())
    return [*lead, *(f.name for f in SCHEMAS[table] if f.name not in lead)]


def write_table(tbl: pa.Table, path: str | Path, table: str, *, presorted: bool = False) -> None:
    """Write timeline table ``table`` to ``path`` in :func:`sort_columns` order (``presorted``: the caller already
    sorted it so), replacing any older file only once the new one is complete."""
    tbl = tbl.cast(SCHEMAS[table])
    if not presorted:
        tbl = tbl.sort_by([(c, "ascending") for c in sort_columns(table)])
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(tbl, tmp, row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)


def read_rows(path: str | Path, *, column: str | None = None, values: tuple[str, ...] | list[str] = ()) -> pa.Table:
    """One Parquet file as an Arrow table in file order: all rows, or (with ``column``) the rows whose ``column`` is
    one of ``values``, reading only the row groups whose statistics admit one of them.

    The same rows as ``pyarrow.parquet.read_table(path, filters=[(column, "in", values)])`` without going through
    ``pyarrow.dataset``, whose import also imports pandas (about a second, measured in ``benchmarks/bench_user.py``).
    """
    pf = pq.ParquetFile(path)
    if column is None:
        return pf.read()
    import pyarrow.compute as pc

    wanted = sorted(set(values))
    j = pf.schema_arrow.get_field_index(column)
    keep = []
    for i in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(i).column(j).statistics
        try:
            skip = st is not None and st.has_min_max and not any(st.min <= v <= st.max for v in wanted)
        except TypeError:  # statistics of another type than the values: read the row group
            skip = False
        if not skip:
            keep.append(i)
    tbl = pf.read_row_groups(keep) if keep else pf.schema_arrow.empty_table()
    value_set = _column(wanted, pa.string())
    if tbl.schema.field(column).type != pa.string():
        value_set = value_set.cast(tbl.schema.field(column).type)
    return tbl.filter(pc.is_in(tbl[column], value_set=value_set))


#: Arrow timestamps count from the naive epoch (the timeline's times are naive).
_EPOCH = datetime(1970, 1, 1)


def table_from_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """``pa.Table.from_pylist(rows, schema=schema)`` for schemas of int64, float64, bool, string and timestamp("us")
    columns, built column by column from Arrow buffers: pyarrow 26 imports pandas (1-2 s) on every conversion of
    Python objects (``pa.array``, ``from_pylist``), this path converts nothing and imports nothing. A missing key
    or ``None`` is a null, as in ``from_pylist``; another column type goes through ``from_pylist``.
    """
    if not all(f.type in _BUILDERS for f in schema):
        return pa.Table.from_pylist(list(rows), schema=schema)
    return pa.Table.from_arrays([_column([r.get(f.name) for r in rows], f.type) for f in schema], schema=schema)


def _column(values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    """One Arrow array of ``typ`` from Python values (``None`` = null) without ``pa.array``."""
    n = len(values)
    valid = bytearray((n + 7) // 8)
    nulls = 0
    for i, v in enumerate(values):
        if v is None:
            nulls += 1
        else:
            valid[i >> 3] |= 1 << (i & 7)
    validity = pa.py_buffer(bytes(valid)) if nulls else None
    data = _BUILDERS[typ](values)
    return pa.Array.from_buffers(typ, n, [validity, *data], null_count=nulls)


def _ints(values: Iterable[Any]) -> list[pa.Buffer]:
    for v in values:
        if v is not None and (isinstance(v, (bool, float)) or not isinstance(v, int)):
            raise TypeError(f"expected an int for an int64 column, got {v!r}")
    return [pa.py_buffer(array("q", (0 if v is None else v for v in values)).tobytes())]


def _floats(values: Iterable[Any]) -> list[pa.Buffer]:
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise TypeError(f"expected a number for a float64 column, got {v!r}")
    return [pa.py_buffer(array("d", (0.0 if v is None else float(v) for v in values)).tobytes())]


def _bools(values: Sequence[Any]) -> list[pa.Buffer]:
    bits = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, bool):
            raise TypeError(f"expected a bool for a bool column, got {v!r}")
        if v:
            bits[i >> 3] |= 1 << (i & 7)
    return [pa.py_buffer(bytes(bits))]


def _strings(values: Iterable[Any]) -> list[pa.Buffer]:
    offsets, chunks, end = array("i", [0]), [], 0
    for v in values:
        if v is not None:
            if not isinstance(v, str):
                raise TypeError(f"expected a str for a string column, got {v!r}")
            b = v.encode()
            chunks.append(b)
            end += len(b)
        offsets.append(end)
    return [pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(chunks))]


def _micros(v: datetime) -> int:
    if not isinstance(v, datetime):
        raise TypeError(f"expected a datetime for a timestamp column, got {v!r}")
    if v.tzinfo is not None:  # as from_pylist: an aware time is stored as its UTC instant
        v = v.astimezone(UTC).replace(tzinfo=None)
    d = v - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _timestamps(values: Iterable[Any]) -> list[pa.Buffer]:
    return [pa.py_buffer(array("q", (0 if v is None else _micros(v) for v in values)).tobytes())]


_BUILDERS = {pa.int64(): _ints, pa.float64(): _floats, pa.bool_(): _bools, pa.string(): _strings, TS: _timestamps}
