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
