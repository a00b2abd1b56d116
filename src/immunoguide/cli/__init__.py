"""The ``immunoguide`` command: a thin shell over the public API.

Only this package maps :mod:`immunoguide.errors` to exit codes:
0 = every record processed, 1 = some records were rejected (error records written), 2 = usage error,
3 = a data/criteria file is invalid.
"""

from __future__ import annotations

from typing import Annotated

import typer

from immunoguide.cli._classify import classify
from immunoguide.cli._cohort import cohort_app, screen
from immunoguide.cli._demo import demo
from immunoguide.cli._design import design_app
from immunoguide.cli._docs import docs_app
from immunoguide.cli._exchange import redcap_app
from immunoguide.cli._protocol import protocol_app
from immunoguide.cli._report import report, report_dsmb
from immunoguide.cli._safety import safety_app
from immunoguide.cli._score import score_app
from immunoguide.cli._serve import serve, users_app
from immunoguide.cli._stats import stats_app
from immunoguide.cli._synth import synth_app
from immunoguide.cli._trial import audit_app, trial_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="immunoguide",
    help="Biomarker-guided immunotherapy in sepsis: SOFA, Sepsis-3, immune endotypes, trials.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from immunoguide import __version__

        typer.echo(f"immunoguide {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Biomarker-guided immunotherapy in sepsis: SOFA, Sepsis-3, immune endotypes, trials."""


app.add_typer(score_app, name="score")
app.add_typer(protocol_app, name="protocol")
app.add_typer(cohort_app, name="cohort")
app.add_typer(synth_app, name="synth")
app.add_typer(stats_app, name="stats")
app.add_typer(design_app, name="design")
app.add_typer(docs_app, name="docs")
app.command("classify")(classify)
app.command("screen")(screen)
app.command("demo")(demo)
app.command("report")(report)
app.command("report-dsmb")(report_dsmb)
app.command("serve")(serve)
app.add_typer(users_app, name="users")
app.add_typer(trial_app, name="trial")
app.add_typer(audit_app, name="audit")
app.add_typer(redcap_app, name="redcap")
app.add_typer(safety_app, name="safety")


def main() -> None:
    """Console entry point."""
    app()
