"""``immunoguide score sofa``: batch SOFA calculator over JSON lines."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from immunoguide.cli._common import EXIT_BAD_DATA_FILE, fail, parse_policy_options, run_jsonl
from immunoguide.errors import CriteriaError, PolicyError

score_app = typer.Typer(help="Clinical scores over JSON lines (stdin → stdout).", no_args_is_help=True)


@score_app.command("sofa")
def sofa(
    criteria: Annotated[str, typer.Option("--criteria", help="sofa1 (Vincent 1996) or sofa2 (Ranzani 2025)")] = "sofa1",
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="Override a named policy: NAME=OPTION (repeatable)."),
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Reference preset for SOFA-1: immunoguide | ricu | mimic-code.")
    ] = None,
) -> None:
    """Score SOFA for each JSON line on stdin; write one JSON line per input line on stdout.

    Input fields carry units (pao2_mmhg, fio2_fraction or fio2_percent, platelets_10e3_per_ul, bilirubin_mg_per_dl
    or bilirubin_umol_per_l, map_mmhg or sbp_mmhg + dbp_mmhg, *_ug_kg_min, gcs, creatinine_mg_per_dl or
    creatinine_umol_per_l, urine_output_ml_per_day, respiratory_support …). Absent fields are missing.
    A bad line gets {"line": N, "error": {...}} and the other lines are still scored; exit code 1 then.
    """
    from immunoguide.criteria import available_criteria, load_criteria
    from immunoguide.rules.sofa import SofaInputs, score_sofa

    try:
        crit = load_criteria(criteria)
        overrides = parse_policy_options(policy or [])
        if preset is not None:
            if crit.rule != "sofa1":
                raise PolicyError(
                    expected="--criteria sofa1 with --preset (presets set the SOFA-1 policies)",
                    got=f"--criteria {criteria} --preset {preset}",
                    where="--preset",
                    todo="drop --preset for SOFA-2, or score SOFA-1",
                )
            from immunoguide.criteria.presets import merge_policies

            overrides = merge_policies(preset, "sofa1", overrides)
        crit.resolve_policies(overrides)
    except PolicyError as exc:
        fail(exc)
        return
    except CriteriaError as exc:
        fail(exc, EXIT_BAD_DATA_FILE if criteria in available_criteria() else 2)
        return

    def handle(record: dict[str, Any], where: str) -> dict[str, Any]:
        inputs = SofaInputs.from_record(record, where=where)
        return score_sofa(inputs, criteria=crit, policies=overrides).to_dict()

    raise typer.Exit(run_jsonl(sys.stdin, sys.stdout, handle))
