"""The real-data screening report of ``immunoguide screen`` (Markdown, written next to the cohort tables)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from immunoguide.cohort.summary import summarise_cohort

__all__ = ["ScreeningReport", "screening_report"]


@dataclass(frozen=True)
class ScreeningReport:
    path: str
    text: str


def _table(rows: list[tuple], header: tuple[str, ...]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def screening_report(out_dir: str | Path) -> ScreeningReport:
    """Write ``screening_report.md`` for a cohort run folder and return its text."""
    d = Path(out_dir)
    s = summarise_cohort(d)
    meta = json.loads((d / "metadata.json").read_text())
    con = duckdb.connect()
    sc, s3 = f"'{d / 'screening.parquet'}'", f"'{d / 'sepsis3.parquet'}'"
    onset = con.sql(f"select count(*) from {s3} where status = 'onset'").fetchall()[0][0]
    ferr = con.sql(
        f"""select count(*) filter (where ferritin_available), count(*) filter (where ferritin_censored),
                   count(*) filter (where hla_dr_available) from {sc} where sepsis3_onset_time is not null"""
    ).fetchall()[0]
    # each table by count, ties by name: a hash aggregate returns equal counts in no fixed order, and the report
    # must read the same from every run and every source layout
    missing = con.sql(
        f"""select coalesce(missing_for_classification, 'nothing'), count(*) from {sc}
            where sepsis3_onset_time is not null group by 1 order by 2 desc, 1"""
    ).fetchall()
    endo = con.sql(
        f"select coalesce(endotype, 'not screened'), count(*) from {sc} where sepsis3_onset_time is not null group by 1 order by 2 desc, 1"
    ).fetchall()
    src = con.sql(
        f"select infection_source, count(*) from {s3} where status = 'onset' group by 1 order by 2 desc, 1"
    ).fetchall()
    lines = [
        f"# Screening report — {meta.get('protocol')}",
        "",
        f"Source: `{meta.get('timeline_dir')}`; SOFA {meta['sofa_criteria']}; Sepsis-3 {meta['sepsis3_criteria']} "
        f"(baseline `{meta['sepsis3_policies']['baseline']}`).",
        "",
        f"* ICU stays: **{s.stays}**; Sepsis-3 onset: **{onset}** ({100 * s.sepsis3_incidence:.1f} %).",
        f"* Among Sepsis-3 stays: ferritin measured in {ferr[0]}, censored ferritin (e.g. 'GREATER THAN 2000') in "
        f"{ferr[1]}, monocyte HLA-DR measured in {ferr[2]}.",
        "",
        "## Infection source of the Sepsis-3 stays",
        _table(src, ("source", "stays")),
        "",
        "## Endotype where decidable",
        _table(endo, ("endotype", "stays")),
        "",
        "## What is missing for a full classification",
        _table(missing, ("missing", "stays")),
        "",
        "## Data-quality issues (rows not used)",
        _table(list(s.data_quality_issues.items()), ("issue", "rows")),
        "",
        "## Choices that differ from mimic-code or ricu",
        _table(
            [(x["choice"], x["ours"], x["anchor"], x["theirs"]) for x in meta["differences_from_reference_implementations"]],
            ("choice", "ours", "anchor", "theirs"),
        ),
    ]
    text = "\n".join(lines) + "\n"
    path = d / "screening_report.md"
    path.write_text(text)
    return ScreeningReport(path=str(path), text=text)
