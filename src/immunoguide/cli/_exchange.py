"""Commands at the standards borders: REDCap import/export (``immunoguide redcap …``; the CDISC exports are
``trial export --format adam|sdtm`` in :mod:`immunoguide.cli._trial`). Heavy imports stay inside the functions (CLI
start-up is lazy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from immunoguide.cli._trial import _common, _emit, _errors, _run

# ---------------------------------------------------------------------------------------------------------------
# REDCap

redcap_app = typer.Typer(help="REDCap: data dictionary, records export and import (CSV, raw).", no_args_is_help=True)
redcap_app.callback()(_common)


@redcap_app.command("dictionary")
def redcap_dictionary_cmd(
    out: Annotated[Path, typer.Option("--out", help="Data dictionary CSV to write.")],
    mapping: Annotated[Path | None, typer.Option("--mapping", help="REDCap mapping TOML (default: ImmunoSep).")] = None,
) -> None:
    """Write the REDCap data dictionary of the project layout (upload it in REDCap to create the project)."""
    from immunoguide.trial.redcap import load_mapping, write_dictionary

    with _errors():
        path = write_dictionary(out, load_mapping(mapping))
    _emit({"file": str(path)})


@redcap_app.command("export")
def redcap_export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    mapping: Annotated[Path | None, typer.Option("--mapping", help="REDCap mapping TOML (default: ImmunoSep).")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Time zone of the REDCap project.")] = None,
    patient_site: Annotated[str | None, typer.Option("--patient-site", help="Only this site's patients.")] = None,
) -> None:
    """Export the trial's records (as your role may see them) and the data dictionary for REDCap."""
    from immunoguide.trial.redcap import export_redcap, load_mapping

    _run(ctx, lambda s, a, now: export_redcap(s, out, actor=a, now=now, site=patient_site,
                                              mapping=load_mapping(mapping, timezone=timezone)))


@redcap_app.command("import")
def redcap_import_cmd(
    ctx: typer.Context,
    records: Annotated[Path, typer.Argument(help="Records CSV exported from REDCap (raw).")],
    dictionary: Annotated[Path, typer.Option("--dictionary", help="The project's data dictionary CSV.")],
    part: Annotated[str, typer.Option("--part", help="all, baseline (screening, consent, baseline labs) or "
                                                     "followup (days and serial labs of randomised patients).")] = "all",
    mapping: Annotated[Path | None, typer.Option("--mapping", help="REDCap mapping TOML (default: ImmunoSep).")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Time zone of the REDCap project.")] = None,
    late_reason: Annotated[str | None, typer.Option(
        "--late-reason", help="Why follow-up days are entered late (e.g. 'transcribed from the site REDCap "
                              "project'): needed for every day assessed more than 24 h before the import; kept in "
                              "the audit trail.")] = None,
) -> None:
    """Import REDCap records in one transaction as your account (at the system time on a real store): every bad or
    refused row is reported and then nothing is imported."""
    from immunoguide.trial.redcap import import_redcap, load_mapping

    _run(ctx, lambda s, a, now: import_redcap(s, records, dictionary, actor=a, now=now, part=part,  # type: ignore[arg-type]
                                              mapping=load_mapping(mapping, timezone=timezone),
                                              late_entry_reason=late_reason))
