"""``immunoguide report`` (blinded) and ``immunoguide report-dsmb`` (unblinded): the trial's statistical report.

Both read the trial store (``--db URL`` or ``IMMUNOGUIDE_DB_URL``; or a folder written by ``immunoguide trial
export`` with ``--export DIR``) through the trial's read layer as the user who runs them — on a real store an
authenticated account (``IMMUNOGUIDE_TOKEN``, or ``--user`` with ``IMMUNOGUIDE_PASSWORD``) whose role decides what
is shown; on a simulation store or an export folder ``--user``/``--role`` as for ``immunoguide trial`` — and write
HTML, PDF, figures, a
traceability CSV and a summary JSON to ``--out DIR``. ``report`` pools the arms (roles statistician, dsmb,
administrator); ``report-dsmb`` is the unblinded DSMB report (role dsmb only).

Report policies (the report's own choices, section 8.6: ``study_day_numbering``, ``screen_failure_reason`` …) are
chosen with ``--policy NAME=OPTION`` (repeatable); the DSMB report's signal rule with ``--signal-rule``.

Output: one JSON document on stdout (files, pages, summary numbers). Errors: one JSON line ``{"error": {...}}`` on
stderr; exit codes as for ``immunoguide trial``: 2 bad input, 3 bad data file, 4 refused (``IG-E4xx``, e.g. not
authorised), 5 integrity failure.

Register in ``cli/__init__.py``::

    from immunoguide.cli._report import report, report_dsmb
    app.command("report")(report)
    app.command("report-dsmb")(report_dsmb)
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from immunoguide.cli._trial import _Ctx, _exit_code
from immunoguide.errors import ImmunoguideError, InputError

__all__ = ["report", "report_dsmb"]

_Db = Annotated[str | None, typer.Option("--db", envvar="IMMUNOGUIDE_DB_URL",
                                         help="Trial store URL (default sqlite:///immunoguide.db).")]
_Export = Annotated[Path | None, typer.Option("--export", help="Read a folder written by `immunoguide trial export` "
                                                                "instead of the store.")]
_Out = Annotated[Path, typer.Option("--out", help="Output folder (HTML, PDF, figures, CSV, JSON).")]
_User = Annotated[str | None, typer.Option("--user", envvar="IMMUNOGUIDE_USER", help="Your user name.")]
_Role = Annotated[str | None, typer.Option("--role", envvar="IMMUNOGUIDE_ROLE", help="Your trial role.")]
_Site = Annotated[str | None, typer.Option("--site", envvar="IMMUNOGUIDE_SITE", help="Your site (site roles).")]
_Protocol = Annotated[str, typer.Option("--protocol", help="Protocol id (optionally @version).")]
_Now = Annotated[str | None, typer.Option("--now", envvar="IMMUNOGUIDE_NOW",
                                          help="Simulation stores and export folders only: report time (ISO 8601 "
                                               "with offset; default: the store's clock — the system clock, or a "
                                               "simulation store's simulated clock).")]
_TraceRows = Annotated[int, typer.Option("--trace-rows", min=0,
                                         help="Patients of the traceability appendix printed in the PDF.")]
_Policy = Annotated[list[str] | None, typer.Option(
    "--policy", help="Choose a report policy: NAME=OPTION (repeatable), e.g. "
                     "study_day_numbering=followup_day_is_sap_day; the options are listed in section 8.6 of the report.")]
_SignalRule = Annotated[str | None, typer.Option(
    "--signal-rule", help="DSMB report: override the signal rule's method (newcombe_rd_lower_bound or "
                          "bayes_beta_binomial).")]


def _run(*, blinded: bool, db: str | None, export: Path | None, out: Path, user: str | None, role: str | None,
         site: str | None, protocol: str, now: str | None, trace_rows: int, policy: list[str] | None = None,
         signal_rule: str | None = None) -> None:
    try:
        from immunoguide.analysis.report import build_report
        from immunoguide.cli._common import parse_policy_options

        policies = parse_policy_options(policy or [])
        if export is not None and db is not None:
            raise InputError(expected="either --db or --export", got="both", where="command line",
                             todo="read the store, or an export folder, not both")
        source: Any
        ctx = _Ctx(db=db, user=user, role=role, site=site, now_text=now)
        if export is not None:
            # An export folder holds only what its exporter could see; the flags say who reads it.
            from immunoguide.cli._identity import parse_time
            from immunoguide.trial.access import Actor

            if not user or not role:
                raise InputError(expected="--user and --role with --export", got={"user": user, "role": role},
                                 where="command line", todo="say who reads the export folder")
            source, actor = export, Actor(user, role, site)
            when = parse_time(now, "--now") if now else datetime.now(UTC)
        else:
            # On a real store the reader authenticates (the role is the account's) and the time is the system
            # clock's; on a simulation store without --now it is the store's simulated clock (trial.clock).
            store = ctx.store()
            try:
                actor, when = ctx.identify(store)
            finally:
                store.dispose()
            source = store.url
        res = build_report(source, out, blinded=blinded, actor=actor, protocol=protocol, now=when,
                           trace_rows_in_pdf=trace_rows, policies=policies, signal_rule=signal_rule)
    except ImmunoguideError as exc:
        sys.stderr.write(json.dumps({"error": exc.to_dict()}, default=str) + "\n")
        raise typer.Exit(_exit_code(exc)) from None
    doc = {"html": str(res.html_path), "pdf": str(res.pdf_path), "pdf_pages": res.pdf_pages,
           "traceability_csv": str(res.traceability_csv), "blinded": res.blinded,
           "figures": {k: str(v) for k, v in res.figures.items()}, "summary": res.summary}
    sys.stdout.write(json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n")


def report(
    out: _Out,
    db: _Db = None,
    export: _Export = None,
    user: _User = None,
    role: _Role = None,
    site: _Site = None,
    protocol: _Protocol = "immunosep-2025",
    now: _Now = None,
    trace_rows: _TraceRows = 40,
    policy: _Policy = None,
) -> None:
    """Blinded statistical report (arms pooled): CONSORT, Table 1, endpoints, survival, SOFA, safety, settings."""
    _run(blinded=True, db=db, export=export, out=out, user=user, role=role, site=site, protocol=protocol, now=now,
         trace_rows=trace_rows, policy=policy)


def report_dsmb(
    out: _Out,
    db: _Db = None,
    export: _Export = None,
    user: _User = None,
    role: _Role = None,
    site: _Site = None,
    protocol: _Protocol = "immunosep-2025",
    now: _Now = None,
    trace_rows: _TraceRows = 40,
    policy: _Policy = None,
    signal_rule: _SignalRule = None,
) -> None:
    """Unblinded DSMB report (role dsmb only): groups, forest plot, survival by arm, safety by arm and signals."""
    _run(blinded=False, db=db, export=export, out=out, user=user, role=role, site=site, protocol=protocol, now=now,
         trace_rows=trace_rows, policy=policy, signal_rule=signal_rule)
