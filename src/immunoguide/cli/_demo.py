"""``immunoguide demo``: the main job — synthetic ICU population → screening → trial → SAP → report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder (store, cohort tables, reports).")] = Path("immunoguide-demo"),
    stays: Annotated[int, typer.Option("--stays", help="Size of the synthetic ICU population.")] = 1500,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same report.")] = 20251208,
    serve: Annotated[bool, typer.Option("--serve", help="Open the dashboard on the demo store afterwards.")] = False,
) -> None:
    """Run the whole story on a synthetic multi-site ICU population and write the trial report (HTML + PDF)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from immunoguide.demo import run_demo

    console = Console()
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting", total=6)

        def step(msg: str, i: int, n: int) -> None:
            bar.update(task, completed=i - 1, total=n, description=msg)

        res = run_demo(out, stays=stays, seed=seed, progress=step)
        bar.update(task, completed=6, description="done")
    t = Table(title="immunoguide demo — ImmunoSep-like trial on synthetic data (not clinical evidence)")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("ICU stays screened by the engine", f"{res.screened_stays:,}")
    t.add_row("Sepsis-3 onsets", f"{res.sepsis3_stays:,}")
    t.add_row("Sepsis-3 from pneumonia or bacteremia (candidates)", f"{res.candidates:,}")
    for k, v in res.endotype_mix.items():
        t.add_row(f"  endotype at screening: {k}", f"{v:,}")
    for k, v in res.randomised.items():
        t.add_row(f"randomised, {k}", f"{v:,}")
    p = res.primary
    if p.get("estimable"):
        r, n = p["responders"], p["n"]
        lo, hi = p["risk_difference_ci"]
        t.add_row("primary endpoint responders, precision", f"{r['precision']}/{n['precision']}")
        t.add_row("primary endpoint responders, placebo", f"{r['placebo']}/{n['placebo']}")
        t.add_row(
            "difference (Newcombe 95% CI), Fisher P",
            f"{100 * p['risk_difference']:.1f} pp ({100 * lo:.1f} to {100 * hi:.1f}), P = {p['fisher_p']:.3g}",
        )
    t.add_row("audit trail intact", "yes" if res.audit_intact else "NO")
    console.print(t)
    console.print("[dim]The primary endpoint above is unblinded (DSMB view of synthetic data).[/dim]")
    key_file = Path(res.out_dir) / "trial.key"
    console.print(f"report (blinded): {res.report_pdf}\nreport (DSMB, unblinded): {res.dsmb_report_pdf}\nstore: {res.db_url}"
                  f" (a simulation store; its trial key: {key_file})")
    if serve:
        import os

        from immunoguide.cli._serve import serve as serve_command

        os.environ["IMMUNOGUIDE_TRIAL_KEY_FILE"] = str(key_file)

        console.print("opening the dashboard and API on http://127.0.0.1:8000 (demo accounts below; Ctrl-C stops)")
        serve_command(host="127.0.0.1", port=8000, db=res.db_url, demo=True, init=False, workers=1,
                      secret_env="IMMUNOGUIDE_SECRET")
