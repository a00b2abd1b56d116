"""``immunoguide docs decisions``: print the generated clinical-decisions page."""

from __future__ import annotations

import typer

docs_app = typer.Typer(help="Generated documentation pages.", no_args_is_help=True)


@docs_app.command("decisions")
def decisions() -> None:
    """Every policy and unknown with its default and citation (Markdown), generated from the data files."""
    from immunoguide.decisions import clinical_decisions_markdown

    typer.echo(clinical_decisions_markdown(), nl=False)
