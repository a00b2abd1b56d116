"""Hourly SOFA pivoted from its evidence is hourly SOFA evaluated directly.

A `cohort run` that writes `sofa_hourly_evidence.parquet` (the default) builds `sofa_hourly.parquet` by pivoting
the evidence (`cohort.engine.hourly_from_evidence_expr`) instead of evaluating the hour parts, the 24 h window and
the packed scores a second time; `evidence=False` evaluates them (`hourly_sofa_expr`). Both must give the same rows,
the same Parquet schema and the same Sepsis-3 onsets, under the policies that shape the grid, the window and the
totals, on real data (the MIMIC-III demo) and on a timeline holding every kind of row the rules refuse.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from immunoguide.cohort.pipeline import run_cohort

#: (preset, SOFA policies): the default; no imputation of missing components (a total is missing when any component
#: is: the pivot must keep hours with no scored component); the ricu-style grid and 25-row window.
CASES = {
    "defaults": (None, None),
    "no imputation of missing components": (None, {"missing_component": "no_imputation"}),
    "hours since ICU admission, 25-row window": (None, {"hourly_grid": "icu_admission_hours", "rolling_window": "25_rows"}),
    "mimic-code preset": ("mimic-code", None),
}


def _rows(path: Path) -> list[tuple]:
    t = pq.read_table(path)
    return sorted(tuple(r.values()) for r in t.to_pylist())


def _both(timeline: Path, out: Path, preset: str | None, policies: dict[str, str] | None) -> tuple[Path, Path]:
    pivoted, evaluated = out / "pivoted", out / "evaluated"
    run_cohort(timeline, pivoted, preset=preset, sofa_policies=policies)
    run_cohort(timeline, evaluated, preset=preset, sofa_policies=policies, evidence=False)
    assert (pivoted / "sofa_hourly_evidence.parquet").exists() and not (evaluated / "sofa_hourly_evidence.parquet").exists()
    return pivoted, evaluated


@pytest.mark.parametrize("case", list(CASES))
def test_hourly_sofa_from_the_evidence_equals_hourly_sofa_evaluated_on_the_mimic3_demo(
    case: str, mimic3_timeline: Path, tmp_path: Path
) -> None:
    """Every (stay, hour) row, component, total and imputation mask equal; same schema; same Sepsis-3 rows."""
    preset, policies = CASES[case]
    pivoted, evaluated = _both(mimic3_timeline, tmp_path, preset, policies)
    assert pq.read_schema(pivoted / "sofa_hourly.parquet") == pq.read_schema(evaluated / "sofa_hourly.parquet")
    rows = _rows(pivoted / "sofa_hourly.parquet")
    assert len(rows) > 10_000  # the demo's in-stay hours: not an empty comparison
    assert rows == _rows(evaluated / "sofa_hourly.parquet")
    assert _rows(pivoted / "sepsis3.parquet") == _rows(evaluated / "sepsis3.parquet")


def test_hourly_sofa_from_the_evidence_equals_hourly_sofa_evaluated_on_refused_rows(
    broken_timeline: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """The timeline with implausible values, rows out of order, unknown drugs and kinds and an orphan stay."""
    timeline, _ = broken_timeline
    pivoted, evaluated = _both(timeline, tmp_path, None, {"missing_component": "no_imputation"})
    assert _rows(pivoted / "sofa_hourly.parquet") == _rows(evaluated / "sofa_hourly.parquet")
    assert _rows(pivoted / "sepsis3.parquet") == _rows(evaluated / "sepsis3.parquet")
