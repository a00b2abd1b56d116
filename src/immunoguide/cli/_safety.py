"""``immunoguide safety …``: CTCAE term look-up, safety-lab grading and entry, alerts, turnaround, signals, store clock.

Commands (store commands take ``--db/--user/--reason`` — and, on a simulation store only, ``--role/--site/--now`` —
before the command, with the same environment variables and the same identity and time rules as ``immunoguide
trial`` (:mod:`immunoguide.cli._identity`: on a real store you act as an authenticated account at the system
clock's time; on a simulation store without ``--now`` the time is the store's simulated clock, see ``clock``);
output is one JSON document, errors one JSON line on stderr with the exit codes of ``immunoguide trial``: 2 bad
input, 3 bad data file, 4 refused, 5 integrity):

``terms [QUERY]``
    CTCAE v5.0 terms with their MedDRA LLT codes (flagged when not confirmed), SOC and grades; no store needed.
``grade ANALYTE VALUE --unit U [--lln X] [--uln Y]``
    Grade one safety laboratory value by CTCAE v5.0; no store needed.
``labs CODE [--labs JSON]``
    Record one draw's safety labs (JSON inline, @file or -) and/or list the patient's graded results.
``alerts [--level critical,warning]``
    Alerts of every patient you may see: stratum switch, reversal, pending assay against the window.
``turnaround``
    Assay turnaround per site, laboratory and analyte against the protocol window.
``signals [--rule newcombe_rd_lower_bound|bayes_beta_binomial]``
    The safety signals under the DSMB rule (role dsmb).
``clock [--simulated-now T [--frozen/--running] | --wall]``
    Show the store's clock, or set a simulation store's simulated clock (administrator; audited). A real store's
    clock is the system clock and cannot be set.

Register in ``cli/__init__.py``::

    from immunoguide.cli._safety import safety_app
    app.add_typer(safety_app, name="safety")
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from immunoguide.cli._trial import _Ctx, _emit, _errors, _json_arg, _run, _time

__all__ = ["safety_app"]

safety_app = typer.Typer(help="Safety monitoring: CTCAE terms and lab grades, safety labs, alerts, turnaround, "
                              "signals, the store's clock.", no_args_is_help=True)


@safety_app.callback()
def _common(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option("--db", envvar="IMMUNOGUIDE_DB_URL",
                                           help="Database URL (default sqlite:///immunoguide.db).")] = None,
    user: Annotated[str | None, typer.Option("--user", envvar="IMMUNOGUIDE_USER",
                                             help="Your account (password from IMMUNOGUIDE_PASSWORD or a prompt).")] = None,
    role: Annotated[str | None, typer.Option("--role", envvar="IMMUNOGUIDE_ROLE",
                                             help="Simulation stores only: act in this role without an account.")] = None,
    site: Annotated[str | None, typer.Option("--site", envvar="IMMUNOGUIDE_SITE",
                                             help="Simulation stores only: the site of --role.")] = None,
    now: Annotated[str | None, typer.Option("--now", envvar="IMMUNOGUIDE_NOW",
                                            help="Simulation stores only: act at this time (ISO 8601; default the "
                                                 "store's simulated clock, else the system clock).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (a correction …): kept in the audit trail.")] = None,
) -> None:
    """Safety monitoring over the trial store (term look-up and grading need no store)."""
    ctx.obj = _Ctx(db, user, role, site, now, reason)


@safety_app.command("terms")
def terms_cmd(query: Annotated[str, typer.Argument(help="Part of a term, a synonym, an SOC or a MedDRA code.")] = "",
              limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50) -> None:
    """Look up CTCAE v5.0 terms (what `trial ae record --term` accepts) with their MedDRA LLT codes."""
    from immunoguide.rules.ctcae import load_ctcae, search_terms

    with _errors():
        d = load_ctcae()
        hits = search_terms(query, limit=limit)
    _emit({"dictionary": d.label, "meddra_version": d.meddra_version, "query": query,
           "terms": [t.to_dict() for t in hits]})


@safety_app.command("grade")
def grade_cmd(
    analyte: Annotated[str, typer.Argument(help="hemoglobin, platelets, neutrophils, lymphocytes, bilirubin, "
                                                "creatinine, ast, alt")],
    value: Annotated[str, typer.Argument(help="The value as reported (a number).")],
    unit: Annotated[str, typer.Option("--unit", help="Unit of the value (and of the limits).")],
    lln: Annotated[str | None, typer.Option("--lln", help="The laboratory's lower limit of normal.")] = None,
    uln: Annotated[str | None, typer.Option("--uln", help="The laboratory's upper limit of normal.")] = None,
) -> None:
    """Grade one safety laboratory value by CTCAE v5.0 (exact comparison; LLN/ULN as the laboratory reports them)."""
    from decimal import Decimal, InvalidOperation

    from immunoguide.errors import InputError
    from immunoguide.rules.ctcae import grade_lab

    def num(text: str | None, name: str) -> Decimal | None:
        if text is None:
            return None
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise InputError(expected=f"a number for {name}", got=text, where=name, todo="write e.g. 7.4") from None
        if not d.is_finite():
            raise InputError(expected=f"a finite number for {name}", got=text, where=name, todo="write e.g. 7.4")
        return d

    with _errors():
        g = grade_lab(analyte, num(value, "VALUE"), unit, lln=num(lln, "--lln"), uln=num(uln, "--uln"))
    _emit(g.to_dict())


@safety_app.command("labs")
def labs_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Study code of the patient.")],
    labs: Annotated[str | None, typer.Option("--labs", help="One draw: JSON inline, @file or - (sample_time, "
                                                            "hemoglobin, hemoglobin_unit, hemoglobin_lln, …).")] = None,
    late_reason: Annotated[str | None, typer.Option("--late-reason", help="Why the result is entered late (more "
                                                                          "than the store's limit after it was "
                                                                          "available).")] = None,
) -> None:
    """Record one draw's safety laboratory results (graded by CTCAE v5.0) and/or list the patient's results."""
    from immunoguide.trial import record_safety_labs, safety_labs_view

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        out: dict[str, Any] = {}
        if labs is not None:
            out["recorded"] = record_safety_labs(s, code, _json_arg(labs, "--labs"), actor=actor, now=now,
                                                 late_entry_reason=late_reason)
        out["results"] = safety_labs_view(s, code, actor=actor)
        return out

    _run(ctx, fn)


@safety_app.command("alerts")
def alerts_cmd(
    ctx: typer.Context,
    level: Annotated[str | None, typer.Option("--level", help="Comma-separated levels to list (critical, warning, "
                                                              "info); default all.")] = None,
) -> None:
    """Alerts of every patient you may see: stratum switch, reversal, pending assay whose result would come late."""
    from immunoguide.errors import InputError
    from immunoguide.trial.monitoring import alerts_view

    levels = None if level is None else [x.strip() for x in level.split(",") if x.strip()]

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        bad = [x for x in levels or [] if x not in ("critical", "warning", "info")]
        if bad:
            raise InputError(expected="levels among critical, warning, info", got=bad, where="--level",
                             todo="e.g. --level critical,warning")
        return alerts_view(s, actor=actor, now=now, levels=levels)

    _run(ctx, fn)


@safety_app.command("turnaround")
def turnaround_cmd(ctx: typer.Context) -> None:
    """Assay turnaround (sample → result) per site, laboratory and analyte against the protocol window."""
    from immunoguide.trial.monitoring import turnaround_report

    _run(ctx, lambda s, a, now: turnaround_report(s, actor=a, now=now))


@safety_app.command("signals")
def signals_cmd(
    ctx: typer.Context,
    rule: Annotated[str | None, typer.Option("--rule", help="Override the DSMB rule's method: "
                                                            "newcombe_rd_lower_bound or bayes_beta_binomial.")] = None,
) -> None:
    """Safety signals on coded data per arm vs placebo under the DSMB's statistical rule (role dsmb)."""
    from immunoguide.trial import safety_signals

    _run(ctx, lambda s, a, now: safety_signals(s, actor=a, now=now, rule_method=rule))


@safety_app.command("clock")
def clock_cmd(
    ctx: typer.Context,
    simulated_now: Annotated[str | None, typer.Option("--simulated-now", help="Run the store on a simulated time "
                                                                             "standing at this time now (ISO 8601).")] = None,
    frozen: Annotated[bool, typer.Option("--frozen/--running", help="Keep the simulated time standing still.")] = True,
    wall: Annotated[bool, typer.Option("--wall", help="Back to wall time.")] = False,
    note: Annotated[str, typer.Option("--note", help="Why (stored with the clock).")] = "",
) -> None:
    """Show the store's clock, or set a simulation store's simulated clock (administrator; audited): a demo or
    replay store runs on its data's time line. A real store's clock is the system clock."""
    from immunoguide.errors import InputError
    from immunoguide.trial.clock import read_store_clock
    from immunoguide.trial.store import set_store_clock

    if simulated_now is None and not wall:
        c: _Ctx = ctx.obj
        with _errors():
            st = c.store()
            try:
                with st.session() as s:
                    setting = read_store_clock(s)
                    out = {**setting.to_dict(), "store_now": setting.now(datetime.now(UTC)).isoformat()}
            finally:
                st.dispose()
        _emit(out)
        return

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        if wall and simulated_now is not None:
            raise InputError(expected="either --simulated-now or --wall", got="both", where="command line",
                             todo="choose one")
        sim = None if wall else _time(simulated_now, "--simulated-now")
        return set_store_clock(s, simulated_now=sim, frozen=frozen, actor=actor, wall_now=datetime.now(UTC), note=note)

    _run(ctx, fn)
