"""``immunoguide synth``: synthetic data generators (``synth mimic4`` writes MIMIC-IV tables: Parquet, PhysioNet's
csv.gz files or a mimic-code DuckDB database)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from immunoguide.cli._common import EXIT_USAGE, fail
from immunoguide.errors import ImmunoguideError, InputError

__all__ = ["synth_app"]

#: The names of :data:`immunoguide.synth.ENDOTYPE_PRIORS`, for the help text (the generator, numpy and
#: pyarrow are imported when the command runs; a test keeps the two equal).
ENDOTYPE_PRIOR_NAMES = ("immunosep", "provide")
#: The generator's layouts and MIMIC-IV column sets (:mod:`immunoguide.cohort.sources.mimic4_tables`), likewise.
LAYOUT_NAMES = ("physionet-csv", "physionet-parquet", "parquet-parts", "duckdb")
MIMIC4_VERSION_NAMES = ("2.0", "2.2", "3.1")

synth_app = typer.Typer(
    name="synth",
    help="Generate synthetic ICU data for tests and benchmarks (never real patients).",
    no_args_is_help=True,
    add_completion=False,
)


@synth_app.callback()
def _synth() -> None:
    """Generate synthetic ICU data for tests and benchmarks (never real patients)."""


@synth_app.command("mimic4")
def mimic4(
    stays: Annotated[int, typer.Option("--stays", help="Number of ICU stays (about 1,000 events each).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (hosp/, icu/, _truth/ are written inside).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed gives the same data.")] = 0,
    chunk_stays: Annotated[int, typer.Option("--chunk-stays", help="Stays per Parquet file.")] = 5000,
    bad_row_rate: Annotated[
        float, typer.Option("--bad-row-rate", help="Probability that an eligible event row is made bad.")
    ] = 0.002,
    censored_ferritin_rate: Annotated[
        float,
        typer.Option("--censored-ferritin-rate", help="Probability that a ferritin above the assay limit is censored."),
    ] = 0.2,
    endotype_prior: Annotated[
        str, typer.Option("--endotype-prior", help=f"Endotype mix among screened stays: {', '.join(ENDOTYPE_PRIOR_NAMES)}.")
    ] = "immunosep",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace earlier generator output in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or summary table.")] = False,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help=f"One of {', '.join(LAYOUT_NAMES)}: a folder of Parquet files per table (default), hosp/*.csv.gz and "
            "icu/*.csv.gz as PhysioNet ships them, hosp/*.parquet …, or OUT/mimic4.db as mimic-code builds it.",
        ),
    ] = "parquet-parts",
    mimic_version: Annotated[
        str,
        typer.Option(
            "--mimic-version",
            help=f"Column set of a MIMIC-IV release: {', '.join(MIMIC4_VERSION_NAMES)} (2.0 = v2.0/v2.1 without the "
            "provider columns; 3.1 = v3.0/v3.1, the same columns as 2.2).",
        ),
    ] = "2.2",
) -> None:
    """Write STAYS synthetic MIMIC-IV ICU stays under OUT in one of the layouts MIMIC-IV is read in (truth in
    OUT/_truth, never for pipelines)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from immunoguide.synth import ENDOTYPE_PRIORS, generate_mimic4

    console = Console(stderr=True, quiet=quiet)
    if endotype_prior not in ENDOTYPE_PRIORS:
        fail(
            InputError(
                expected=f"one of {sorted(ENDOTYPE_PRIORS)}",
                got=endotype_prior,
                where="--endotype-prior",
                todo="choose a listed prior",
            ),
            EXIT_USAGE,
        )
    try:
        with Progress(
            TextColumn("[bold]synth mimic4"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("stays"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=quiet,
        ) as progress:
            task = progress.add_task("stays", total=stays)
            summary = generate_mimic4(
                out,
                stays=stays,
                seed=seed,
                chunk_stays=chunk_stays,
                bad_row_rate=bad_row_rate,
                censored_ferritin_rate=censored_ferritin_rate,
                endotype_prior=endotype_prior,  # type: ignore[arg-type]
                overwrite=overwrite,
                progress=lambda done, total: progress.update(task, completed=done),
                layout=layout,  # type: ignore[arg-type]
                mimic_version=mimic_version,  # type: ignore[arg-type]
            )
    except ImmunoguideError as exc:
        fail(exc, EXIT_USAGE)
        return
    where = f"{summary.chunks} chunk(s)" if layout == "parquet-parts" else layout
    table = Table(title=f"{summary.stays:,} stays, seed {summary.seed}, {where} → {summary.out_dir}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    rate = summary.events / summary.seconds if summary.seconds > 0 else float("nan")
    console.print(
        f"{summary.events:,} events in {summary.seconds:.1f} s ({rate:,.0f} events/s); "
        f"bad rows: {sum(summary.bad_rows.values()):,}; truth in {summary.out_dir / '_truth'}"
    )
