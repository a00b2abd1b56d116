"""The root ``immunoguide`` group (typer): the commands by name, each imported and built on first use.

The root group is *lazy*: each command is registered by name and imported, and its click command built, only when
it is used (``immunoguide classify`` imports ``cli/_classify.py`` and nothing of the other ~100 commands). The root
``--help`` lists the commands from :data:`COMMANDS` without importing any of them (``tests/test_cli_startup.py``
checks that the table says what the commands say).
"""

from __future__ import annotations

from importlib import import_module
from typing import Annotated, Any

import typer
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

__all__ = ["COMMANDS", "LazyGroup", "app", "load_command"]

#: ``name → (module, attribute, first paragraph of its help)``, in the order ``--help`` lists them (commands, then
#: groups). The attribute is a command function or a ``typer.Typer`` group.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "classify": (
        "_classify",
        "classify",
        "Classify the immune endotype for each JSON line on stdin; write one JSON line per input line on stdout.",
    ),
    "screen": (
        "_cohort",
        "screen",
        "Real-data screening report: Sepsis-3 stays, infection sources, ferritin availability (and censored "
        "values),\nendotype where decidable, and what is missing for a full classification.",
    ),
    "demo": (
        "_demo",
        "demo",
        "Run the whole story on a synthetic multi-site ICU population and write the trial report (HTML + PDF).",
    ),
    "report": (
        "_report",
        "report",
        "Blinded statistical report (arms pooled): CONSORT, Table 1, endpoints, survival, SOFA, safety, settings.",
    ),
    "report-dsmb": (
        "_report",
        "report_dsmb",
        "Unblinded DSMB report (role dsmb only): groups, forest plot, survival by arm, safety by arm and signals.",
    ),
    "serve": ("_serve", "serve", "Start the REST service (rules, trial operations, CDS Hooks) on HOST:PORT."),
    "score": ("_score", "score_app", "Clinical scores over JSON lines (stdin → stdout)."),
    "protocol": ("_protocol", "protocol_app", "Protocol files (versioned, cited trial rules): show, validate, diff."),
    "cohort": ("_cohort", "cohort_app", "Hourly SOFA, Sepsis-3 and endotype screening over whole ICU databases."),
    "synth": ("_synth", "synth_app", "Generate synthetic ICU data for tests and benchmarks (never real patients)."),
    "stats": ("_stats", "stats_app", "Statistics of the analysis plan (estimators and tests)."),
    "design": ("_design", "design_app", "Next-trial design: sample size and simulated power."),
    "docs": ("_docs", "docs_app", "Generated documentation pages."),
    "users": ("_serve", "users_app", "Service accounts (password login, trial roles)."),
    "trial": ("_trial", "trial_app", "Trial operations over the trial store (SQLite or PostgreSQL)."),
    "audit": ("_trial", "audit_app", "The audit trail of the trial store."),
    "redcap": ("_exchange", "redcap_app", "REDCap: data dictionary, records export and import (CSV, raw)."),
    "safety": (
        "_safety",
        "safety_app",
        "Safety monitoring: CTCAE terms and lab grades, safety labs, alerts, turnaround, signals, the store's clock.",
    ),
}


def load_command(name: str) -> Any:
    """The command function or ``typer.Typer`` group registered as ``name`` (imports its module)."""
    module, attr, _ = COMMANDS[name]
    return getattr(import_module(f"immunoguide.cli.{module}"), attr)


class LazyGroup(TyperGroup):
    """The root group: commands are built on first use; the help lists them from :data:`COMMANDS`."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in self.commands if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        if self._listing:  # the root help: name and first paragraph only, nothing imported
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][2], rich_markup_mode=self.rich_markup_mode)
        obj = load_command(cmd_name)
        if isinstance(obj, typer.Typer):
            from typer.models import TyperInfo

            cmd: Any = typer.main.get_group_from_info(
                TyperInfo(obj, name=cmd_name),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
        else:
            from typer.models import CommandInfo

            cmd = typer.main.get_command_from_info(
                CommandInfo(name=cmd_name, callback=obj),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
        self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """As :class:`TyperGroup`, with "Did you mean …?" drawn from every command, loaded or not."""
        self._listing = False
        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            if self.suggest_commands and args:
                from difflib import get_close_matches

                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise


app = typer.Typer(
    name="immunoguide",
    help="Biomarker-guided immunotherapy in sepsis: SOFA, Sepsis-3, immune endotypes, trials.",
    no_args_is_help=True,
    add_completion=False,
    cls=LazyGroup,
)


def _print_version(value: bool) -> None:
    if value:
        from immunoguide import __version__

        typer.echo(f"immunoguide {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Biomarker-guided immunotherapy in sepsis: SOFA, Sepsis-3, immune endotypes, trials."""
