"""``immunoguide stats …``: the SAP's statistics from the command line.

``immunoguide stats two-proportions A_EVENTS A_N B_EVENTS B_N [--json] [--alpha 0.05]`` prints the risk
difference A − B with its Newcombe hybrid score interval, the odds ratio A vs B with its Woolf interval and the
two-sided Fisher exact P (spec §6.4). Register in ``cli/__init__.py`` with
``app.add_typer(stats_app, name="stats")``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from immunoguide.cli._common import EXIT_USAGE, fail
from immunoguide.errors import ImmunoguideError

__all__ = ["stats_app"]

stats_app = typer.Typer(help="Statistics of the analysis plan (estimators and tests).", no_args_is_help=True)


@stats_app.callback()
def _stats_group() -> None:
    """Statistics of the analysis plan (estimators and tests)."""


@stats_app.command("two-proportions")
def two_proportions_cmd(
    a_events: Annotated[int, typer.Argument(metavar="A_EVENTS", help="Events in group A (e.g. precision).")],
    a_n: Annotated[int, typer.Argument(metavar="A_N", help="Patients in group A.")],
    b_events: Annotated[int, typer.Argument(metavar="B_EVENTS", help="Events in group B (e.g. placebo).")],
    b_n: Annotated[int, typer.Argument(metavar="B_N", help="Patients in group B.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full typed result as JSON.")] = False,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided level of the intervals.")] = 0.05,
    zero_cell_correction: Annotated[
        str,
        typer.Option(
            "--zero-cell-correction",
            help="OR with a zero cell: none (error), haldane_if_zero or haldane_always (add 0.5 to every cell).",
        ),
    ] = "none",
) -> None:
    """Risk difference (Newcombe), odds ratio (Woolf) and two-sided Fisher exact P for A vs B.

    Example: ``immunoguide stats two-proportions 46 131 26 145`` gives 17.2 (6.8 to 27.2), OR 2.48 (1.42 to 4.32),
    P = 0.0015 (JAMA 2025 Table 2, primary endpoint).
    """
    from immunoguide.analysis.estimators import two_proportions

    try:
        result = two_proportions(
            a_events,
            a_n,
            b_events,
            b_n,
            alpha=alpha,
            zero_cell_correction=zero_cell_correction,  # type: ignore[arg-type]
        )
    except ImmunoguideError as exc:
        fail(exc, EXIT_USAGE)
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(result.summary())
