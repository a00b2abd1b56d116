"""``immunoguide cohort run|summary`` and ``immunoguide screen``: the set-based engine from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from immunoguide.cli._common import EXIT_BAD_DATA_FILE, fail, parse_policy_options
from immunoguide.errors import ImmunoguideError, InputError

cohort_app = typer.Typer(help="Hourly SOFA, Sepsis-3 and endotype screening over whole ICU databases.", no_args_is_help=True)

SOURCES = ("mimic3", "mimic4", "long", "fhir")
PRESET_HELP = "Reference preset: immunoguide | ricu | mimic-code (every SOFA and Sepsis-3 choice; --policy overrides one)."


def _profile(preset: str | None, source: str) -> str:
    """The source profile the preset reads ``source`` with (``immunoguide`` without a preset)."""
    if preset is None:
        return "immunoguide"
    from immunoguide.criteria.presets import load_preset

    return load_preset(preset).source_profile(source)


def convert_source(source: str, data: Path, timeline_dir: Path, profile: str = "immunoguide") -> dict:
    """Run the adapter of ``source`` (mimic3 | mimic4 | long | fhir) into a timeline folder; returns row counts.

    ``profile`` is the source profile (how the source is read): ``immunoguide``, or ``ricu`` for MIMIC-III
    (:mod:`immunoguide.cohort.sources.mimic3_ricu`), as a preset names it.
    """
    if source == "mimic3" and profile == "ricu":
        from immunoguide.cohort.sources.mimic3_ricu import convert_mimic3_ricu

        return convert_mimic3_ricu(data, timeline_dir).rows
    if source == "mimic3":
        from immunoguide.cohort.sources.mimic3 import convert_mimic3

        return convert_mimic3(data, timeline_dir).rows
    if source == "mimic4" and profile == "ricu":
        from immunoguide.cohort.sources.mimic4_ricu import convert_mimic4_ricu

        return convert_mimic4_ricu(data, timeline_dir).rows
    if source == "mimic4":
        from immunoguide.cohort.sources.mimic4 import convert_mimic4

        return convert_mimic4(data, timeline_dir).rows
    if source == "long":
        from immunoguide.cohort.sources.long import convert_long

        return convert_long(data, timeline_dir).rows
    if source == "fhir":
        from immunoguide.cohort.sources.fhir import convert_fhir

        return dict(convert_fhir(data, timeline_dir).rows)
    raise InputError(expected=f"--source in {SOURCES}", got=source, where="--source", todo=f"pick one of {SOURCES}")


@cohort_app.command("run")
def run(
    source: Annotated[str, typer.Option("--source", help="mimic3 | mimic4 | long | fhir")],
    data: Annotated[Path, typer.Option("--data", help="Source data (folder or file).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the Parquet tables.")],
    engine: Annotated[str, typer.Option("--engine", help="duckdb (embedded) or spark")] = "duckdb",
    protocol: Annotated[str, typer.Option("--protocol", help="Protocol id for screening, or 'none'.")] = "immunosep-2025",
    policy: Annotated[list[str] | None, typer.Option("--policy", help="SOFA policy NAME=OPTION (repeatable).")] = None,
    sepsis3_policy: Annotated[
        list[str] | None, typer.Option("--sepsis3-policy", help="Sepsis-3 policy NAME=OPTION (repeatable).")
    ] = None,
    sofa2: Annotated[bool, typer.Option("--sofa2", help="Also write sofa2_hourly.parquet (SOFA-2 where inputs exist).")] = False,
    preset: Annotated[str | None, typer.Option("--preset", help=PRESET_HELP)] = None,
    evidence: Annotated[
        bool, typer.Option("--evidence/--no-evidence", help="Write sofa_hourly_evidence.parquet (what `cohort explain` reads).")
    ] = True,
) -> None:
    """Convert a source, then compute sofa_hourly, sepsis3 and screening tables (Parquet) in OUT."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from immunoguide.cohort.pipeline import run_cohort

    console = Console(stderr=True)
    try:
        profile = _profile(preset, source)
        sofa_pol = parse_policy_options(policy or [])
        s3_pol = parse_policy_options(sepsis3_policy or [])
        stages = ["convert", "hourly SOFA", "Sepsis-3", "endotype screening and eligibility", "write"]
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("convert source", total=len(stages))
            t0 = time.perf_counter()
            timeline_dir = out / "timeline"
            rows = convert_source(source, data, timeline_dir, profile)
            bar.update(task, advance=1, description=f"converted {rows.get('stays', 0)} stays in {time.perf_counter() - t0:.1f} s")

            def step(msg: str) -> None:
                bar.update(task, advance=1, description=msg)

            result = run_cohort(
                timeline_dir, out, engine=engine, protocol=None if protocol == "none" else protocol,
                sofa_policies=sofa_pol, sepsis3_policies=s3_pol, progress=step, sofa2=sofa2, preset=preset,
                evidence=evidence,
            )
            bar.update(task, completed=len(stages), description="done")
    except ImmunoguideError as exc:
        fail(exc, EXIT_BAD_DATA_FILE if isinstance(exc, InputError) else 2)
        return
    table = Table(title=f"cohort run → {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for k, v in result.rows.items():
        table.add_row(k, f"{v:,}")
    Console().print(table)


@cohort_app.command("explain")
def explain(
    out: Annotated[Path, typer.Option("--out", help="A cohort run folder.")],
    stay: Annotated[int, typer.Option("--stay", help="Stay id.")],
    hour: Annotated[str, typer.Option("--hour", help="Hours since ICU admission (0 = the admission hour) or a time.")],
) -> None:
    """Why a stay's hourly SOFA is what it is: each component's value, time, source item and window hour."""
    from immunoguide.cohort.explain import explain_hour

    try:
        typer.echo(explain_hour(out, stay, hour).text)
    except ImmunoguideError as exc:
        fail(exc, EXIT_BAD_DATA_FILE if isinstance(exc, InputError) else 2)


@cohort_app.command("summary")
def summary(
    out: Annotated[Path, typer.Argument(help="A cohort run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Counts, Sepsis-3 incidence, endotype mix, eligible per month, and plots (SOFA distribution, endotypes)."""
    from rich.console import Console
    from rich.table import Table

    from immunoguide.cohort.summary import summarise_cohort

    try:
        s = summarise_cohort(out)
    except ImmunoguideError as exc:
        fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2, default=str))
        return
    c = Console()
    c.print(f"[bold]{s.stays}[/] stays; Sepsis-3 onset in [bold]{s.sepsis3_onsets}[/] ({100 * s.sepsis3_incidence:.1f} %)")
    for title, d in (
        ("Sepsis-3 status", s.status_counts),
        ("infection source (onsets)", s.infection_sources),
        ("endotype", s.endotypes),
        ("eligibility", s.eligible),
        ("eligible per month", s.eligible_per_month),
        ("data-quality issues", s.data_quality_issues),
    ):
        if not d:
            continue
        t = Table(title=title)
        t.add_column("value")
        t.add_column("n", justify="right")
        for k, v in d.items():
            t.add_row(str(k), f"{v:,}")
        c.print(t)
    for p in s.plots:
        c.print(f"plot: {p}")


def screen(
    data: Annotated[Path, typer.Argument(help="Source data (folder or file).")],
    source: Annotated[str, typer.Option("--source", help="mimic3 | mimic4 | long | fhir")] = "mimic3",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("immunoguide-screening"),
    protocol: Annotated[str, typer.Option("--protocol", help="Protocol id.")] = "immunosep-2025",
    preset: Annotated[str | None, typer.Option("--preset", help=PRESET_HELP)] = None,
) -> None:
    """Real-data screening report: Sepsis-3 stays, infection sources, ferritin availability (and censored values),
    endotype where decidable, and what is missing for a full classification."""
    from rich.console import Console

    from immunoguide.cohort.pipeline import run_cohort
    from immunoguide.cohort.report import screening_report

    console = Console()
    try:
        profile = _profile(preset, source)
        with console.status("converting source …"):
            convert_source(source, data, out / "timeline", profile)
        with console.status("hourly SOFA, Sepsis-3, screening …"):
            run_cohort(out / "timeline", out, protocol=protocol, preset=preset)
        report = screening_report(out)
    except ImmunoguideError as exc:
        fail(exc, EXIT_BAD_DATA_FILE if isinstance(exc, InputError) else 2)
        return
    console.print(report.text)
    console.print(f"\nreport: {report.path}")
