"""Checksums of everything ``immunoguide demo`` writes, to show that a faster demo writes the same files.

Usage::

    .venv/bin/python benchmarks/demo_checksums.py OUT [OTHER_OUT]

With one folder: one line per file, ``sha256  path``. With two: the files whose checksums differ (exit 1 if any).
Two demo runs compare byte for byte only when they wrote to the same ``--out`` path (the reports name the store's
path), so ``bench_user.py`` runs the before and after code into the same folder, one after the other.

Every file is hashed as bytes except three kinds, hashed by content: Parquet tables (rows sorted: DuckDB writes
``sofa_hourly`` in no fixed row order, also before issue 16), and ``cohort/metadata.json`` and
``population/_truth/summary.json`` without their timings (``seconds``, ``compiled_sql``), and the store
``demo.db`` (SQLite), hashed by its rows: the store records the *system* time beside the simulated one (when it was
created, when each audit entry was written), so two runs of the same code differ there and in the audit hashes and
MACs that chain over those times. Its digest is over every table's rows with the wall-clock times of the run (any
timestamp within two days of the file's modification time) and hex digests masked, and over its schema with each
table's constraint lines sorted (SQLAlchemy emits them in no fixed order).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: JSON files with timings in them, and the keys that hold the timings (not results).
TIMED_JSON = {"cohort/metadata.json": ("seconds", "compiled_sql"), "population/_truth/summary.json": ("seconds",)}


def _parquet_digest(path: Path) -> str:
    import pyarrow.parquet as pq

    t = pq.ParquetFile(path).read()
    keys = [(c, "ascending") for c in t.column_names if not str(t.schema.field(c).type).startswith(("list", "struct"))]
    t = t.sort_by(keys) if keys else t
    h = hashlib.sha256(str(t.schema).encode())
    for row in t.to_pylist():
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    return "rows:" + h.hexdigest()


_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2})[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)?")
_HEX = re.compile(r"\b[0-9a-f]{32}(?:[0-9a-f]{32})?\b")


def _store_digest(path: Path) -> str:
    """The SQLite store's rows and schema, wall-clock times and hex digests masked (see the module docstring)."""
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).date()
    wall = {(mtime + timedelta(days=d)).isoformat() for d in range(-2, 3)}

    def mask(text: str) -> str:
        text = _ISO.sub(lambda m: "WALL" if m.group(1) in wall else m.group(0), text)
        return _HEX.sub("HEX", text)

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        for line in con.iterdump():
            if line.startswith("CREATE TABLE"):
                head, *body = line.split("\n")
                line = "\n".join([head, *sorted(x.strip().rstrip(",") for x in body)])
            h.update(mask(line).encode() + b"\0")
    finally:
        con.close()
    return "store:" + h.hexdigest()


def checksums(out: Path) -> dict[str, str]:
    """``relative path → digest`` for every file under ``out``."""
    res: dict[str, str] = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).as_posix()
        if f.suffix == ".parquet":
            res[rel] = _parquet_digest(f)
        elif f.suffix == ".db":
            res[rel] = _store_digest(f)
        elif rel in TIMED_JSON:
            meta = {k: v for k, v in json.loads(f.read_text()).items() if k not in TIMED_JSON[rel]}
            res[rel] = "json:" + hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
        else:
            res[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return res


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Paths present in only one of the two, or with different digests."""
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        for rel, digest in checksums(Path(argv[0])).items():
            print(f"{digest}  {rel}")
        return 0
    diff = differences(checksums(Path(argv[0])), checksums(Path(argv[1])))
    for rel in diff:
        print(f"differs: {rel}")
    print(f"{len(diff)} file(s) differ")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
