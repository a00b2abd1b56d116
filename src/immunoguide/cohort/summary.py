"""``immunoguide cohort summary DIR``: counts, Sepsis-3 incidence, endotype mix, eligible per month, plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from immunoguide.errors import InputError

__all__ = ["CohortSummary", "summarise_cohort"]


@dataclass(frozen=True)
class CohortSummary:
    """The numbers a trial planner reads first, plus the plot files written."""

    stays: int
    sepsis3_onsets: int
    sepsis3_incidence: float
    status_counts: dict[str, int]
    infection_sources: dict[str, int]
    endotypes: dict[str, int] = field(default_factory=dict)
    eligible: dict[str, int] = field(default_factory=dict)
    eligible_per_month: dict[str, int] = field(default_factory=dict)
    sofa_total_distribution: dict[int, int] = field(default_factory=dict)
    data_quality_issues: dict[str, int] = field(default_factory=dict)
    plots: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _counts(con: duckdb.DuckDBPyConnection, sql: str) -> dict[Any, int]:
    return {k if k is not None else "not screened (no Sepsis-3 onset)": int(n) for k, n in con.sql(sql).fetchall()}


def summarise_cohort(out_dir: str | Path, *, plots: bool = True) -> CohortSummary:
    """Summarise the tables of a cohort run (and draw the SOFA distribution and endotype prevalence plots)."""
    d = Path(out_dir)
    if not (d / "sepsis3.parquet").exists():
        raise InputError(
            expected="a cohort run folder with sepsis3.parquet",
            got=str(d),
            where="cohort summary",
            todo="run `immunoguide cohort run … --out DIR` first",
        )
    con = duckdb.connect()
    s3 = f"'{d / 'sepsis3.parquet'}'"
    stays = con.sql(f"select count(*) from {s3}").fetchall()[0][0]
    status = _counts(con, f"select status, count(*) from {s3} group by 1 order by 1")
    onsets = status.get("onset", 0)
    sources = _counts(con, f"select infection_source, count(*) from {s3} where status = 'onset' group by 1 order by 1")
    # SOFA distribution: the maximum hourly total per stay.
    dist = _counts(
        con,
        f"select max_total, count(*) from (select stay_id, max(total) as max_total from '{d / 'sofa_hourly.parquet'}' "
        f"group by 1) group by 1 order by 1",
    )
    endotypes: dict[str, int] = {}
    eligible: dict[str, int] = {}
    per_month: dict[str, int] = {}
    if (d / "screening.parquet").exists():
        sc = f"'{d / 'screening.parquet'}'"
        endotypes = _counts(con, f"select endotype, count(*) from {sc} group by 1 order by 1")
        eligible = _counts(con, f"select coalesce(eligible_status, 'undetermined'), count(*) from {sc} group by 1 order by 1")
        per_month = _counts(
            con,
            f"select strftime(s.onset_time, '%Y-%m'), count(*) from {sc} c join {s3} s using (stay_id) "
            f"where c.eligible_status = 'eligible' group by 1 order by 1",
        )
    dq: dict[str, int] = {}
    if (d / "data_quality.parquet").exists():
        dq = _counts(con, f"select issue, sum(n) from '{d / 'data_quality.parquet'}' group by 1 order by 2 desc")
    files: list[str] = []
    if plots:
        files = _plots(d, dist, endotypes)
    summary = CohortSummary(
        stays=stays,
        sepsis3_onsets=onsets,
        sepsis3_incidence=round(onsets / stays, 4) if stays else 0.0,
        status_counts=status,
        infection_sources=sources,
        endotypes=endotypes,
        eligible=eligible,
        eligible_per_month=per_month,
        sofa_total_distribution={int(k): v for k, v in dist.items() if k != "missing"},
        data_quality_issues=dq,
        plots=tuple(files),
    )
    (d / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    return summary


def _plots(d: Path, dist: dict[Any, int], endotypes: dict[str, int]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = d / "plots"
    out.mkdir(exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    xs = sorted(k for k in dist if k != "missing")
    ax.bar(xs, [dist[k] for k in xs], color="#4c72b0")
    ax.set_xlabel("Worst hourly SOFA-1 total of the stay")
    ax.set_ylabel("ICU stays")
    ax.set_title("SOFA distribution")
    fig.tight_layout()
    fig.savefig(out / "sofa_distribution.png", dpi=120)
    plt.close(fig)
    files.append(str(out / "sofa_distribution.png"))
    if endotypes:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        names = list(endotypes)
        total = sum(endotypes.values())
        ax.barh(names, [100 * endotypes[n] / total for n in names], color="#dd8452")
        ax.set_xlabel("% of screened stays")
        ax.set_title("Immune endotype prevalence")
        fig.tight_layout()
        fig.savefig(out / "endotype_prevalence.png", dpi=120)
        plt.close(fig)
        files.append(str(out / "endotype_prevalence.png"))
    return files
