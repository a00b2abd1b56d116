"""``immunoguide docs decisions|validation``: print the generated clinical-decisions and validation pages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

docs_app = typer.Typer(help="Generated documentation pages.", no_args_is_help=True)


@docs_app.command("decisions")
def decisions() -> None:
    """Every policy and unknown with its default and citation (Markdown), generated from the data files."""
    from immunoguide.decisions import clinical_decisions_markdown

    typer.echo(clinical_decisions_markdown(), nl=False)


@docs_app.command("validation")
def validation(
    mimic3: Annotated[Path, typer.Option("--mimic3", help="MIMIC-III CSV folder (e.g. ../shared/data/mimic-iii-demo).")],
    reference: Annotated[
        Path, typer.Option("--reference", help="ricu's output on that data (tests/reference/ricu-0.6.3-mimic-iii-demo).")
    ],
) -> None:
    """Agreement of each reference preset with ricu, hour by hour, every difference explained (docs/validation.md)."""
    from immunoguide.cli._common import fail
    from immunoguide.cohort.validation import validate_against_ricu, validation_markdown
    from immunoguide.errors import ImmunoguideError

    try:
        results = validate_against_ricu(mimic3, reference)
    except ImmunoguideError as exc:
        fail(exc)
        return
    typer.echo(validation_markdown(results, data=str(mimic3), reference=str(reference)), nl=False)
