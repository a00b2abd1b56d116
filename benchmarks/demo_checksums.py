"""Checksums of everything ``immunoguide demo`` writes, to show that a faster demo writes the same files.

Usage::

    .venv/bin/python benchmarks/demo_checksums.py OUT [OTHER_OUT]

With one folder: one line per file, ``sha256  path``. With two: the files whose checksums differ (exit 1 if any).
Two demo runs compare byte for byte only when they wrote to the same ``--out`` path (the reports name the store's
path), so ``bench_user.py`` runs the before and after code into the same folder, one after the other.

Every file is hashed as bytes except three kinds, hashed by content: Parquet tables (rows sorted: DuckDB writes
``sofa_hourly`` in no fixed row order, also before issue 16), and ``cohort/metadata.json`` and
``population/_truth/summary.json`` without their timings (``seconds``, ``compiled_sql``).
"""

from __future__ import annotations

import hashlib
import json
import sys
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


def checksums(out: Path) -> dict[str, str]:
    """``relative path → digest`` for every file under ``out``."""
    res: dict[str, str] = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).as_posix()
        if f.suffix == ".parquet":
            res[rel] = _parquet_digest(f)
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
