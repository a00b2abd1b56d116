"""The sink: the output directory's checks, the chunked ``part-NNNNN.parquet`` writer and the rewrite of the parts into
the other layouts (PhysioNet csv.gz or Parquet files, a mimic-code DuckDB database).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from immunoguide.errors import InputError
from immunoguide.synth._tables import _CHUNKED, _MIMIC_TABLES, DUCKDB_FILE, DUCKDB_SCHEMAS, TABLE_DIRS, mimic4_columns


def _output_paths() -> list[str]:
    """Every path (relative to the output directory) the generator may write, in any layout."""
    paths = list(TABLE_DIRS.values())
    for t in _MIMIC_TABLES:
        paths += [f"{TABLE_DIRS[t]}.csv.gz", f"{TABLE_DIRS[t]}.parquet"]
    return [*paths, DUCKDB_FILE, f"{DUCKDB_FILE}.wal", "_layout_tmp"]


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    existing = [rel for rel in _output_paths() if (out / rel).exists()]
    if existing and not overwrite:
        raise InputError(
            expected="an empty or new output directory",
            got=str(out),
            where="generate_mimic4",
            field="out_dir",
            todo=f"choose another directory or pass overwrite=True (CLI: --overwrite); found {existing[0]}",
        )
    if existing and not (out / "_truth" / "summary.json").is_file():
        raise InputError(
            expected="earlier output of this generator (with _truth/summary.json) before overwriting",
            got=str(out),
            where="generate_mimic4",
            field="out_dir",
            todo=f"choose another directory; {existing[0]} here was not written by the generator and is kept",
        )
    for rel in existing:
        if (out / rel).is_dir():
            shutil.rmtree(out / rel)
        else:
            (out / rel).unlink()
    out.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------------------------
# Layouts: the chunked Parquet parts are rewritten as PhysioNet files or a mimic-code DuckDB database
# --------------------------------------------------------------------------------------------------------------


def _duckdb(path: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (file or memory) with bounded memory, keeping row order in COPY."""
    memory = os.environ.get("IMMUNOGUIDE_DUCKDB_MEMORY", "4GB")
    con = duckdb.connect(str(path) if path is not None else ":memory:", config={"memory_limit": memory})
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = true")
    return con


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _write_csv_gz(con: duckdb.DuckDBPyConnection, parts: list[Path], dest: Path) -> None:
    """The rows of ``parts`` in order, as PhysioNet writes MIMIC-IV: header, commas, empty for NULL, gzip."""
    files = "[" + ", ".join(_lit(p) for p in parts) + "]"
    con.execute(
        f"COPY (SELECT * FROM read_parquet({files})) TO {_lit(dest)} "
        "(FORMAT csv, HEADER, DELIMITER ',', QUOTE '\"', ESCAPE '\"', COMPRESSION gzip)"
    )


def _relayout(out: Path, layout: str, version: str, schemas: Mapping[str, pa.Schema]) -> None:
    """Rewrite the MIMIC-IV tables of ``out`` (Parquet parts) in ``layout``; the truth tables stay as they are."""
    if layout == "parquet-parts":
        return
    parts = {t: sorted((out / TABLE_DIRS[t]).glob("*.parquet")) for t in _MIMIC_TABLES}
    if layout == "physionet-parquet":
        for t in _MIMIC_TABLES:
            with pq.ParquetWriter(out / f"{TABLE_DIRS[t]}.parquet", schemas[t], compression="snappy") as w:
                for part in parts[t]:
                    for batch in pq.ParquetFile(part).iter_batches(batch_size=1 << 20):
                        w.write_batch(batch)
    elif layout == "physionet-csv":
        con = _duckdb()
        for t in _MIMIC_TABLES:
            _write_csv_gz(con, parts[t], out / f"{TABLE_DIRS[t]}.csv.gz")
        con.close()
    else:  # duckdb: create the tables with create.sql's types, then COPY each table from its csv.gz
        tmp = out / "_layout_tmp"
        tmp.mkdir()
        con = _duckdb(out / DUCKDB_FILE)
        for schema in DUCKDB_SCHEMAS.values():
            con.execute(f"CREATE SCHEMA {schema}")
        for t in _MIMIC_TABLES:
            target = f"{DUCKDB_SCHEMAS[TABLE_DIRS[t].split('/')[0]]}.{t}"
            cols = ", ".join(f'"{c}" {typ}' for c, typ in mimic4_columns(t, version))
            con.execute(f"CREATE TABLE {target} ({cols})")
            csv_file = tmp / f"{t}.csv.gz"
            _write_csv_gz(con, parts[t], csv_file)
            con.execute(f"COPY {target} FROM {_lit(csv_file)} (HEADER, DELIM ',', QUOTE '\"', ESCAPE '\"')")
        con.execute("CHECKPOINT")
        con.close()
        shutil.rmtree(tmp)
    for t in _MIMIC_TABLES:
        shutil.rmtree(out / TABLE_DIRS[t])
    for module in DUCKDB_SCHEMAS:
        if (out / module).is_dir() and not any((out / module).iterdir()):
            (out / module).rmdir()


# --------------------------------------------------------------------------------------------------------------
# Writing: one file per (table, chunk); blocks are cut at chunk boundaries
# --------------------------------------------------------------------------------------------------------------


class _Sink:
    """Streams block tables into ``part-NNNNN.parquet`` files, one per chunk of stays, buffering small tables."""

    _FLUSH_ROWS = 250_000

    def __init__(self, out: Path, chunk_stays: int, stays: int, schemas: Mapping[str, pa.Schema]) -> None:
        self.out = out
        self.schemas = schemas
        self.chunk_stays = chunk_stays
        self.n_chunks = math.ceil(stays / chunk_stays)
        self.chunk = -1
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.buffers: dict[str, list[pa.Table]] = {}
        self.rows: dict[str, int] = dict.fromkeys(_CHUNKED, 0)

    def write_block(self, tables: dict[str, pa.Table], g0: int, g1: int) -> None:
        pos = g0
        while pos < g1:
            chunk = pos // self.chunk_stays
            end = min(g1, (chunk + 1) * self.chunk_stays)
            if chunk != self.chunk:
                self._finish_chunk()
                self.chunk = chunk
            for name in _CHUNKED:
                t = tables[name]
                gcol = t.column("_g").to_numpy()
                lo, hi = np.searchsorted(gcol, [pos, end])
                part = t.slice(lo, hi - lo).select(self.schemas[name].names)
                if part.num_rows:
                    self.buffers.setdefault(name, []).append(part)
                    if sum(p.num_rows for p in self.buffers[name]) >= self._FLUSH_ROWS:
                        self._flush(name)
            pos = end

    def _flush(self, name: str) -> None:
        parts = self.buffers.pop(name, [])
        if not parts:
            return
        table = pa.concat_tables(parts)
        self._writer(name).write_table(table, row_group_size=1 << 20)
        self.rows[name] += table.num_rows

    def _writer(self, name: str) -> pq.ParquetWriter:
        w = self.writers.get(name)
        if w is None:
            path = self.out / TABLE_DIRS[name] / f"part-{self.chunk:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            w = pq.ParquetWriter(path, self.schemas[name], compression="snappy")
            self.writers[name] = w
        return w

    def _finish_chunk(self) -> None:
        if self.chunk < 0:
            return
        for name in _CHUNKED:
            self._flush(name)
            self._writer(name).close()  # opens (and writes an empty file) when the chunk had no rows
        self.writers.clear()

    def close(self) -> dict[str, int]:
        self._finish_chunk()
        return dict(self.rows)
