"""Shared fixtures.

Tests that read ``../shared/data/mimic-iii-demo`` use the MIMIC-III Clinical Database Demo v1.4.
*Contains information from the MIMIC-III Clinical Database Demo (https://physionet.org/content/mimiciii-demo/1.4/),
which is made available under the Open Database License (ODbL) v1.0 (https://opendatacommons.org/licenses/odbl/1-0/).*
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The trial key of the test session (tests/…: a fixed key; real trials make one with `immunoguide trial keygen`).
#: Set for the test process and its subprocesses; the guides' commands run without it (tests/test_docs_guides.py)
#: and make their own.
TEST_TRIAL_KEY = "7e57" * 16
os.environ.setdefault("IMMUNOGUIDE_TRIAL_KEY", TEST_TRIAL_KEY)
MIMIC3_DEMO = Path(os.environ.get("IMMUNOGUIDE_MIMIC3_DEMO", REPO.parent / "shared" / "data" / "mimic-iii-demo"))


@pytest.fixture(scope="session")
def mimic3_demo_dir() -> Path:
    """The open MIMIC-III demo folder (ODbL); the suite requires it, so its absence is an error, not a skip."""
    if not (MIMIC3_DEMO / "icustays.csv.gz").exists():
        pytest.fail(f"MIMIC-III demo not found at {MIMIC3_DEMO}; set IMMUNOGUIDE_MIMIC3_DEMO")
    return MIMIC3_DEMO


@pytest.fixture(scope="session")
def mimic3_timeline(mimic3_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MIMIC-III demo converted once into the timeline schema (Parquet)."""
    from immunoguide.cohort.sources.mimic3 import convert_mimic3

    out = tmp_path_factory.mktemp("mimic3_timeline")
    convert_mimic3(mimic3_demo_dir, out)
    return out


@pytest.fixture(scope="session")
def mimic3_ricu_timeline(mimic3_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MIMIC-III demo read with the ricu source profile (the ricu preset's), once."""
    from immunoguide.cohort.sources.mimic3_ricu import convert_mimic3_ricu

    out = tmp_path_factory.mktemp("mimic3_ricu_timeline")
    convert_mimic3_ricu(mimic3_demo_dir, out)
    return out


#: What :func:`broken_timeline` injects: (stay index, table, item, issue) — every kind of row the rules refuse.
BROKEN_ROWS = (
    (0, "observations", "observations.platelets_10e3_per_ul", "implausible_value"),
    (0, "observations", "observations.gcs", "implausible_value"),
    (0, "observations", "observations.map_mmhg", "implausible_value"),  # NaN
    (0, "antibiotics", "antibiotics.time", "missing_time"),
    (1, "infusions", "infusions.norepinephrine", "times_out_of_order"),
    (1, "infusions", "infusions.dopamine", "missing_rate"),
    (1, "infusions", "infusions.insulin", "unknown_drug"),
    (2, "ventilation", "ventilation.kind", "times_out_of_order"),
    (2, "ventilation", "ventilation.kind", "unknown_kind"),
    (3, "stays", "stays.outtime", "times_out_of_order"),
    (4, "stays", "stays.weight_kg", "implausible_value"),
)
#: A stay id that is not in ``stays`` (its rows are reported as ``no_stay``).
ORPHAN_STAY = 999_999_999


@pytest.fixture(scope="session")
def broken_timeline(mimic3_timeline: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """The MIMIC-III demo timeline written by hand with :data:`BROKEN_ROWS` added (as a tool other than an adapter
    might write it: pyarrow, NaN kept as NaN). Returns the folder and the stay ids the indexes of BROKEN_ROWS mean."""
    import math
    import shutil
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("broken_timeline")
    for f in mimic3_timeline.glob("*.parquet"):
        shutil.copyfile(f, out / f.name)
    stays = pq.read_table(out / "stays.parquet").to_pylist()
    stays.sort(key=lambda r: r["stay_id"])
    ids = [r["stay_id"] for r in stays[:5]]
    t0 = {r["stay_id"]: r["intime"] for r in stays}

    def add(table: str, rows: list[dict]) -> None:
        old = pq.read_table(out / f"{table}.parquet")
        new = pa.Table.from_pylist([{**dict.fromkeys(old.column_names), **r} for r in rows], schema=old.schema)
        pq.write_table(pa.concat_tables([old, new]), out / f"{table}.parquet")

    h = timedelta(hours=1)
    add("observations", [
        {"stay_id": ids[0], "time": t0[ids[0]] + 2 * h, "concept": "platelets_10e3_per_ul", "value": -5.0, "source": "hand"},
        {"stay_id": ids[0], "time": t0[ids[0]] + 3 * h, "concept": "gcs", "value": 14.5, "source": "hand"},
        {"stay_id": ids[0], "time": t0[ids[0]] + 4 * h, "concept": "map_mmhg", "value": math.nan, "source": "hand"},
        {"stay_id": ORPHAN_STAY, "time": t0[ids[0]], "concept": "map_mmhg", "value": 65.0, "source": "hand"},
    ])  # fmt: skip
    add("antibiotics", [{"stay_id": ids[0], "time": None, "name": "vancomycin", "route": "IV"}])
    add("infusions", [
        {"stay_id": ids[1], "drug": "norepinephrine", "start": t0[ids[1]] + 2 * h, "stop": t0[ids[1]] + h, "rate_ug_kg_min": 0.3, "source": "hand"},
        {"stay_id": ids[1], "drug": "dopamine", "start": t0[ids[1]] + h, "stop": t0[ids[1]] + 3 * h, "rate_ug_kg_min": None, "source": "hand"},
        {"stay_id": ids[1], "drug": "insulin", "start": t0[ids[1]] + h, "stop": t0[ids[1]] + 3 * h, "rate_ug_kg_min": 1.0, "source": "hand"},
    ])  # fmt: skip
    add("ventilation", [
        {"stay_id": ids[2], "start": t0[ids[2]] + 5 * h, "stop": t0[ids[2]] + 4 * h, "kind": "invasive"},
        {"stay_id": ids[2], "start": t0[ids[2]] + h, "stop": t0[ids[2]] + 4 * h, "kind": "iron_lung"},
    ])  # fmt: skip
    for r in stays:
        if r["stay_id"] == ids[3]:
            r["outtime"] = r["intime"] - h
        if r["stay_id"] == ids[4]:
            r["weight_kg"] = 2000.0
    pq.write_table(pa.Table.from_pylist(stays, schema=pq.read_schema(out / "stays.parquet")), out / "stays.parquet")
    return out, ids
