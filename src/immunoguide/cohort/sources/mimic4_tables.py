"""Reading MIMIC-IV as distributed: find each table of ``--data`` and register it as a DuckDB view ``raw_<table>``.

Layouts (each table is looked up on its own, so a folder may mix CSV and Parquet):

``physionet-csv``
    ``DIR/hosp/<table>.csv.gz`` and ``DIR/icu/<table>.csv.gz`` (or ``.csv``), as PhysioNet distributes MIMIC-IV.
``physionet-parquet``
    ``DIR/hosp/<table>.parquet``, ``DIR/icu/<table>.parquet``: one Parquet file per table.
``parquet-parts``
    ``DIR/hosp/<table>/*.parquet``: a folder of Parquet files per table (``immunoguide synth mimic4`` by default).
``duckdb``
    a DuckDB database file (``--data FILE.duckdb`` or ``.db``, or a folder holding exactly one such file) with the
    schemas ``mimiciv_hosp`` and ``mimiciv_icu``, as MIT-LCP/mimic-code ``mimic-iv/buildmimic/duckdb`` builds it.

The columns of each table in MIMIC-IV v2.0/v2.1, v2.2 and v3.0/v3.1, in file order, with the types mimic-code gives
them, are data (``mimic4_tables.toml``; v2.2 and v3.x have the same columns, v2.0/v2.1 lack the provider columns).
Every view has every column of its source. The columns the caller needs have the same type in every layout; a CSV
file is read with the catalogue's type for each column the catalogue knows (DuckDB converts only the columns a query
uses) and as text for any other; Parquet and DuckDB columns the caller does not need stay as stored.

Single precision: mimic-code's ``create.sql`` declares some columns ``FLOAT``, which is 8 bytes in PostgreSQL but 4 in
DuckDB, so a mimic-code DuckDB database keeps e.g. ``chartevents.valuenum`` in single precision (65.3 is stored as
65.30000305…). A needed 4-byte column is widened to the number PhysioNet's CSV holds: through its shortest decimal
text for values charted as decimals, exactly for MetaVision's single-precision rates (``[single_precision]`` in the
TOML). With that, the four layouts of one data set give the same numbers.

Errors: a table in none of the places looked → :class:`~immunoguide.errors.MissingTableError` (the table, every file
or schema looked for, what to do); a needed column absent → :class:`~immunoguide.errors.MissingColumnError` (table,
column, file, which releases have it); a file DuckDB cannot read → :class:`~immunoguide.errors.UnreadableSourceError`
(file and DuckDB's reason). Never a raw DuckDB exception.

>>> [name for name, _ in mimic4_columns("outputevents", "2.0")]
['subject_id', 'hadm_id', 'stay_id', 'charttime', 'storetime', 'itemid', 'value', 'valueuom']
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     register_mimic4(duckdb.connect(), d, {"icustays": ["stay_id"]})
Traceback (most recent call last):
...
immunoguide.errors.MissingTableError: [IG-E105] expected MIMIC-IV table icu/icustays; got ...icustays.csv.gz...
"""

from __future__ import annotations

import csv
import gzip
import io
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from immunoguide.errors import InputError, MissingColumnError, MissingTableError, UnreadableSourceError

__all__ = [
    "LAYOUTS",
    "MIMIC4_VERSIONS",
    "Mimic4Source",
    "TableSource",
    "mimic4_columns",
    "mimic4_module",
    "read_type",
    "register_mimic4",
    "unreadable_from_duckdb",
]

#: The forms a MIMIC-IV table can have (see the module docstring).
LAYOUTS = ("physionet-csv", "physionet-parquet", "parquet-parts", "duckdb")
#: Column sets of MIMIC-IV releases: "2.0" (v2.0, v2.1), "2.2", "3.1" (v3.0, v3.1; the same columns as v2.2).
MIMIC4_VERSIONS = ("2.0", "2.2", "3.1")
#: Schema of each module in a mimic-code DuckDB database.
DUCKDB_SCHEMAS = {"hosp": "mimiciv_hosp", "icu": "mimiciv_icu"}
_DB_ALIAS = "mimic4_db"
_DB_SUFFIXES = (".duckdb", ".db")


@cache
def _catalogue() -> dict[str, Any]:
    text = resources.files("immunoguide.cohort.sources").joinpath("mimic4_tables.toml").read_text("utf-8")
    return tomllib.loads(text)


def _table_spec(table: str) -> dict[str, Any]:
    try:
        spec: dict[str, Any] = _catalogue()["tables"][table]
    except KeyError:
        raise InputError(
            expected=f"a MIMIC-IV table of the catalogue ({', '.join(_catalogue()['tables'])})",
            got=table,
            where="mimic4_tables.toml",
            todo="add the table's columns and types to mimic4_tables.toml",
        ) from None
    return spec


def mimic4_module(table: str) -> str:
    """The MIMIC-IV module (``hosp`` or ``icu``) of a table.

    >>> mimic4_module("chartevents"), mimic4_module("labevents")
    ('icu', 'hosp')
    """
    return str(_table_spec(table)["module"])


def mimic4_columns(table: str, version: str = "2.2") -> tuple[tuple[str, str], ...]:
    """Columns of a MIMIC-IV table in file order, each with its type in a mimic-code DuckDB database.

    Parameters
    ----------
    table : str
        Table name without module (``"chartevents"``).
    version : {"2.0", "2.2", "3.1"}
        Column set of the release (:data:`MIMIC4_VERSIONS`).

    >>> mimic4_columns("patients")[:2]
    (('subject_id', 'INTEGER'), ('gender', 'VARCHAR'))
    >>> dict(mimic4_columns("chartevents"))["valuenum"]
    'FLOAT'
    """
    versions = _catalogue()["versions"]
    if version not in versions:
        raise InputError(
            expected=f"a MIMIC-IV column set in {MIMIC4_VERSIONS}",
            got=version,
            where="mimic4_columns",
            field="version",
            todo="pick 2.0 (v2.0/v2.1), 2.2 or 3.1 (v3.0/v3.1)",
        )
    without = {c.split(".", 1)[1] for c in versions[version]["without"] if c.split(".", 1)[0] == table}
    out = []
    for item in " ".join(_table_spec(table)["columns"].split()).split(","):
        name, typ = item.split()
        if name not in without:
            out.append((name, typ))
    return tuple(out)


def read_type(duckdb_type: str) -> str:
    """The type a column is read as: mimic-code's 4-byte ``FLOAT``/``REAL`` is PostgreSQL's 8-byte ``FLOAT``.

    >>> read_type("FLOAT"), read_type("INTEGER")
    ('DOUBLE', 'INTEGER')
    """
    t = duckdb_type.upper()
    return "DOUBLE" if t in ("FLOAT", "FLOAT4", "REAL") else t


_RELEASE_NAMES = {"2.0": "v2.0/v2.1", "2.2": "v2.2", "3.1": "v3.0/v3.1"}


def _since(table: str, column: str) -> str:
    """Which releases have a catalogued column (for error messages).

    >>> _since("chartevents", "valuenum")
    'every MIMIC-IV release from v2.0 to v3.1 has chartevents.valuenum'
    >>> _since("chartevents", "caregiver_id")
    'only MIMIC-IV v2.2, v3.0/v3.1 have chartevents.caregiver_id'
    """
    have = [v for v in MIMIC4_VERSIONS if column in dict(mimic4_columns(table, v))]
    if not have:
        return f"no MIMIC-IV release from v2.0 to v3.1 has {table}.{column}"
    if len(have) == len(MIMIC4_VERSIONS):
        return f"every MIMIC-IV release from v2.0 to v3.1 has {table}.{column}"
    return f"only MIMIC-IV {', '.join(_RELEASE_NAMES[v] for v in have)} have {table}.{column}"


@dataclass(frozen=True)
class TableSource:
    """Where one table was found: its form (:data:`LAYOUTS`), the file, folder or ``schema.table``, its columns."""

    table: str
    module: str
    layout: str
    location: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Mimic4Source:
    """What :func:`register_mimic4` registered.

    Attributes
    ----------
    data : str
        The ``--data`` path.
    layout : str
        One of :data:`LAYOUTS`, or ``"mixed: …"`` when tables come in several forms.
    tables : Mapping[str, TableSource]
        Each registered table (view ``<prefix><table>``).
    absent : tuple of str
        Optional tables that were not found (no view).
    versions : tuple of str
        Releases (:data:`MIMIC4_VERSIONS`) whose column sets equal those of every registered table; empty when none.
    """

    data: str
    layout: str
    tables: Mapping[str, TableSource]
    absent: tuple[str, ...] = ()
    versions: tuple[str, ...] = field(default=())

    def file_of(self, message: str) -> TableSource | None:
        """The registered table whose file or folder a (DuckDB) message names, if any."""
        for src in self.tables.values():
            if src.location in message:
                return src
        return None


def _lit(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(reason: BaseException | str) -> str:
    text = str(reason).strip()
    return text.splitlines()[0] if text else type(reason).__name__


def unreadable_from_duckdb(exc: duckdb.Error, source: Mimic4Source | None, where: str) -> UnreadableSourceError:
    """An :class:`~immunoguide.errors.UnreadableSourceError` for a DuckDB error met while reading ``source``.

    Names the table and file when DuckDB's message names a registered file (CSV conversion errors do).
    """
    src = source.file_of(str(exc)) if source is not None else None
    reason = _first_line(exc)
    detail = [ln.strip() for ln in str(exc).splitlines()[1:3] if ln.strip()]
    got = reason + (" (" + "; ".join(detail) + ")" if detail else "")
    if src is not None:
        return UnreadableSourceError(
            expected=f"MIMIC-IV table {src.module}/{src.table} readable as {src.layout}",
            got=got,
            where=src.location,
            field=f"{src.module}/{src.table}",
            todo="check the file against PhysioNet's SHA256SUMS.txt and download it again if it differs; a value of "
            "the wrong type (text in a number or time column) means the file is not the MIMIC-IV table",
        )
    return UnreadableSourceError(
        expected="MIMIC-IV tables DuckDB can read",
        got=got,
        where=where,
        todo="check the files (PhysioNet's SHA256SUMS.txt) or the database; see DuckDB's reason above",
    )


# ----------------------------------------------------------------------------------------------------------------
# Finding the tables
# ----------------------------------------------------------------------------------------------------------------


def _candidates(root: Path, module: str, table: str) -> list[tuple[Path, str]]:
    base = root / module
    return [
        (base / f"{table}.csv.gz", "physionet-csv"),
        (base / f"{table}.csv", "physionet-csv"),
        (base / f"{table}.parquet", "physionet-parquet"),
        (base / table, "parquet-parts"),
    ]


def _csv_header(path: Path) -> list[str]:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as raw:
            line = raw.readline()
        header = next(csv.reader(io.StringIO(line.decode("utf-8-sig"))), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableSourceError(
            expected=f"a CSV{' (gzip)' if path.name.endswith('.gz') else ''} file with a header line",
            got=_first_line(exc),
            where=str(path),
            todo="check the file against PhysioNet's SHA256SUMS.txt and download it again if it differs",
        ) from None
    if not header or not all(h.strip() for h in header):
        raise UnreadableSourceError(
            expected="a CSV file whose first line names its columns",
            got=line[:120].decode("utf-8", "replace") if line else "an empty file",
            where=str(path),
            todo="check the file against PhysioNet's SHA256SUMS.txt and download it again if it differs",
        )
    return [h.strip() for h in header]


def _described(con: duckdb.DuckDBPyConnection, sql: str, where: str, expected: str) -> list[tuple[str, str]]:
    try:
        return [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {sql}").fetchall()]
    except duckdb.Error as exc:
        raise UnreadableSourceError(
            expected=expected,
            got=_first_line(exc),
            where=where,
            todo="check the file (write it again, or compare it with its source); see DuckDB's reason",
        ) from None


def _check_columns(table: str, module: str, have: Sequence[str], needed: Iterable[str], where: str) -> None:
    lower = {h.lower() for h in have}
    missing = [c for c in needed if c.lower() not in lower]
    if not missing:
        return
    c = missing[0]
    todo = f"{_since(table, c)}; check that {where} is MIMIC-IV's {table} table as distributed (not an extract without"
    todo += " the column), or point --data at such a copy"
    if "icustay_id" in lower or "row_id" in lower:
        todo += "; these columns look like MIMIC-III: use --source mimic3"
    raise MissingColumnError(
        expected=f"column {c} in MIMIC-IV table {module}/{table}"
        + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""),
        got=f"columns {', '.join(have)}",
        where=where,
        field=f"{table}.{c}",
        todo=todo,
    )


def _casts(table: str, have: Mapping[str, str], needed: Iterable[str]) -> list[str]:
    """``REPLACE`` items giving each needed column its read type (and widening single precision)."""
    spec = dict(mimic4_columns(table, "2.2"))
    modes = _catalogue()["single_precision"]
    by_lower = {k.lower(): k for k in have}
    out = []
    for c in needed:
        name = by_lower[c.lower()]
        target = read_type(spec[c])
        got = have[name].upper()
        if got == target:
            continue
        col = _ident(name)
        if got in ("FLOAT", "FLOAT4", "REAL") and target == "DOUBLE" and modes.get(f"{table}.{c}") == "decimal":
            expr = f"CAST(CAST({col} AS VARCHAR) AS DOUBLE)"
        else:
            expr = f"CAST({col} AS {target})"
        out.append(f"{expr} AS {col}")
    return out


def _view(con: duckdb.DuckDBPyConnection, name: str, source_sql: str, casts: list[str]) -> None:
    replace = f" REPLACE ({', '.join(casts)})" if casts else ""
    con.execute(f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT *{replace} FROM {source_sql}")


def _register_file_table(
    con: duckdb.DuckDBPyConnection, root: Path, table: str, needed: Sequence[str], view: str
) -> TableSource | None:
    module = mimic4_module(table)
    for path, layout in _candidates(root, module, table):
        if layout == "parquet-parts":
            if not path.is_dir() or not any(path.glob("*.parquet")):
                continue
        elif not path.is_file():
            continue
        if layout == "physionet-csv":
            header = _csv_header(path)
            _check_columns(table, module, header, needed, str(path))
            known = {k.lower(): read_type(t) for k, t in mimic4_columns(table, "2.2")}
            cols = "{" + ", ".join(f"{_lit(h)}: {_lit(known.get(h.lower(), 'VARCHAR'))}" for h in header) + "}"
            sql = (
                f"read_csv({_lit(path)}, header = true, delim = ',', quote = '\"', escape = '\"', "
                f"auto_detect = false, columns = {cols})"
            )
            _view(con, view, sql, [])
            return TableSource(table, module, layout, str(path), tuple(header))
        glob = path if layout == "physionet-parquet" else path / "*.parquet"
        sql = f"read_parquet({_lit(glob)})"
        described = _described(con, sql, str(path), f"Parquet file(s) of MIMIC-IV table {module}/{table}")
        have = dict(described)
        _check_columns(table, module, list(have), needed, str(path))
        _view(con, view, sql, _casts(table, have, needed))
        return TableSource(table, module, layout, str(path), tuple(have))
    return None


def _missing_in_folder(root: Path, table: str) -> MissingTableError:
    module = mimic4_module(table)
    looked = [str(p) + ("/*.parquet" if lay == "parquet-parts" else "") for p, lay in _candidates(root, module, table)]
    todo = (
        "point --data at the MIMIC-IV folder that holds hosp/ and icu/ (e.g. physionet.org/files/mimiciv/3.1), "
        "or at a DuckDB database built by mimic-code (schemas mimiciv_hosp, mimiciv_icu)"
    )
    if root.is_dir() and not _has_modules(root):
        inner = sorted(p for p in root.glob("*/") if _has_modules(p))
        if inner:
            modules = [f"{m}/" for m in DUCKDB_SCHEMAS if (inner[0] / m).is_dir()]
            todo = f"point --data at {inner[0]}, which holds {' and '.join(modules)}"
    return MissingTableError(
        expected=f"MIMIC-IV table {module}/{table}",
        got="none of " + ", ".join(looked),
        where=f"--data {root}",
        field=f"{module}/{table}",
        todo=todo,
    )


def _has_modules(root: Path) -> bool:
    return any((root / m).is_dir() and any((root / m).iterdir()) for m in DUCKDB_SCHEMAS)


def _database_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir() and not _has_modules(path):
        dbs = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _DB_SUFFIXES)
        if len(dbs) == 1:
            return dbs[0]
    return None


def _register_database(
    con: duckdb.DuckDBPyConnection, db: Path, needs: Mapping[str, Sequence[str]], optional: set[str], prefix: str
) -> tuple[dict[str, TableSource], list[str]]:
    if db.name.endswith((".csv", ".csv.gz", ".parquet", ".gz")):
        raise InputError(
            expected="a MIMIC-IV folder (hosp/, icu/) or a DuckDB database file",
            got=str(db),
            where="--data",
            todo="point --data at the folder that holds hosp/ and icu/, not at one table's file",
        )
    try:
        con.execute(f"ATTACH {_lit(db)} AS {_DB_ALIAS} (READ_ONLY)")
    except duckdb.Error as exc:
        raise UnreadableSourceError(
            expected="a DuckDB database file (as mimic-code's buildmimic/duckdb writes it)",
            got=_first_line(exc),
            where=str(db),
            todo="point --data at a DuckDB database of this DuckDB version, or at the MIMIC-IV folder (hosp/, icu/); "
            "close any program that has the database open for writing",
        ) from None
    rows = con.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_catalog = {_lit(_DB_ALIAS)} ORDER BY table_schema, table_name, ordinal_position"
    ).fetchall()
    found: dict[tuple[str, str], dict[str, str]] = {}
    for schema, tname, col, typ in rows:
        found.setdefault((str(schema), str(tname)), {})[str(col)] = str(typ)
    tables: dict[str, TableSource] = {}
    absent: list[str] = []
    for table, needed in needs.items():
        module = mimic4_module(table)
        schema = DUCKDB_SCHEMAS[module]
        have = found.get((schema, table))
        if have is None:
            if table in optional:
                absent.append(table)
                continue
            schemas = sorted({s for s, _ in found})
            raise MissingTableError(
                expected=f"MIMIC-IV table {module}/{table}",
                got=f"no table {schema}.{table} (schemas in the database: {', '.join(schemas) or 'none'})",
                where=f"--data {db}",
                field=f"{module}/{table}",
                todo="build the database with mimic-code mimic-iv/buildmimic/duckdb/import_duckdb.sh from a folder "
                f"that has {module}/{table}.csv.gz, or point --data at the MIMIC-IV folder (hosp/, icu/)",
            )
        location = f"{db}:{schema}.{table}"
        _check_columns(table, module, list(have), needed, location)
        _view(con, prefix + table, f"{_DB_ALIAS}.{_ident(schema)}.{_ident(table)}", _casts(table, have, needed))
        tables[table] = TableSource(table, module, "duckdb", location, tuple(have))
    return tables, absent


def _matching_versions(tables: Mapping[str, TableSource]) -> tuple[str, ...]:
    out = []
    for v in MIMIC4_VERSIONS:
        if all({c.lower() for c in t.columns} == {c for c, _ in mimic4_columns(t.table, v)} for t in tables.values()):
            out.append(v)
    return tuple(out)


def register_mimic4(
    con: duckdb.DuckDBPyConnection,
    data: str | Path,
    needs: Mapping[str, Sequence[str]],
    *,
    optional: Iterable[str] = (),
    prefix: str = "raw_",
) -> Mimic4Source:
    """Find the MIMIC-IV tables ``needs`` names under ``data`` and register each as the view ``<prefix><table>``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection the views are created in (a DuckDB database is attached to it read-only).
    data : str or Path
        A MIMIC-IV folder (``hosp/``, ``icu/``) in any layout of :data:`LAYOUTS`, or a DuckDB database file.
    needs : mapping of table → column names
        The tables to register (looked up in this order) and the columns the caller reads from each; those columns
        must exist and get their read type (:func:`read_type` of the catalogue's) in every layout.
    optional : iterable of str
        Tables of ``needs`` that may be absent (listed in :attr:`Mimic4Source.absent`, no view).
    prefix : str
        View name prefix.

    Returns
    -------
    Mimic4Source
        The layout, the location and columns of each table, absent optional tables, matching releases.

    Raises
    ------
    MissingTableError
        A needed table is in none of the places looked (the message lists them).
    MissingColumnError
        A table lacks a needed column.
    UnreadableSourceError
        A file or the database cannot be read.
    """
    root = Path(data)
    if not root.exists():
        raise InputError(
            expected="a MIMIC-IV folder (hosp/, icu/) or a DuckDB database file",
            got=str(root),
            where="--data",
            todo="check the path",
        )
    for table, cols in needs.items():
        unknown = [c for c in cols if c not in dict(mimic4_columns(table, "2.2"))]
        if unknown:
            raise InputError(
                expected=f"columns of MIMIC-IV {table} in the catalogue",
                got=", ".join(unknown),
                where="mimic4_tables.toml",
                todo="add the column with its mimic-code type to mimic4_tables.toml",
            )
    opt = set(optional)
    db = _database_file(root)
    if db is not None:
        tables, absent = _register_database(con, db, needs, opt, prefix)
    else:
        tables, absent = {}, []
        for table, needed in needs.items():
            src = _register_file_table(con, root, table, needed, prefix + table)
            if src is None:
                if table in opt:
                    absent.append(table)
                    continue
                raise _missing_in_folder(root, table)
            tables[table] = src
    forms = sorted({t.layout for t in tables.values()})
    layout = forms[0] if len(forms) == 1 else "mixed: " + ", ".join(forms)
    return Mimic4Source(str(root), layout, tables, tuple(absent), _matching_versions(tables))
