"""``immunoguide demo``: the main job (for now: score the bundled example patients)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from immunoguide.rules.sofa import COMPONENTS, SofaInputs, score_sofa


def demo(
    criteria: Annotated[str, typer.Option("--criteria", help="sofa1 or sofa2")] = "sofa1",
) -> None:
    """Score the bundled example patients and print a SOFA table."""
    console = Console()
    text = resources.files("immunoguide.examples").joinpath("patients.jsonl").read_text("utf-8")
    table = Table(title=f"SOFA of the bundled example patients ({criteria})")
    table.add_column("patient")
    for c in COMPONENTS:
        table.add_column(c[:5], justify="right")
    table.add_column("total", justify="right", style="bold")
    table.add_column("imputed (missing → 0)")
    for line in text.splitlines():
        rec = json.loads(line)
        res = score_sofa(SofaInputs.from_record(rec["sofa"], where=rec["patient"]), criteria=criteria)
        table.add_row(
            rec["patient"],
            *[str(res.components[c]) for c in COMPONENTS],
            str(res.total),
            ", ".join(res.imputed_components) or "-",
        )
    console.print(table)
    console.print(f"criteria: {res.criteria}; missing components imputed as normal (policy missing_component)")
