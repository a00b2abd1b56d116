"""``immunoguide trial …`` and ``immunoguide audit …``: thin commands over :mod:`immunoguide.trial`.

Common options (before the command: ``immunoguide trial --db URL <command>``), each with an environment variable:
``--db`` (``IMMUNOGUIDE_DB_URL``, default ``sqlite:///immunoguide.db``), ``--user`` (``IMMUNOGUIDE_USER``),
``--reason`` (why: kept in the audit trail with every entry of the command). The trial key comes from
``IMMUNOGUIDE_TRIAL_KEY_FILE`` (a file made by ``immunoguide trial keygen``) or ``IMMUNOGUIDE_TRIAL_KEY``.

Who and when (:mod:`immunoguide.cli._identity`): on a real store you authenticate as an account — a token in
``IMMUNOGUIDE_TOKEN`` (``immunoguide users login NAME``) or ``--user`` with ``IMMUNOGUIDE_PASSWORD`` (or a prompt) —
your role and site are the account's and the time is the system clock's. On a simulation store (the demo's,
``trial init --simulation``) ``--role`` (``IMMUNOGUIDE_ROLE``), ``--site`` (``IMMUNOGUIDE_SITE``) and ``--now``
(``IMMUNOGUIDE_NOW``) may stand in for an account and the clock.

Output is one JSON document on stdout. Errors are one JSON line ``{"error": {...}}`` on stderr; exit codes:
0 done, 2 bad input, 3 bad data file, 4 refused by a trial rule (``IG-E4xx``: already randomised, window
missed, not authorised, not authenticated, time refused …), 5 integrity failure (audit chain broken, allocation
lists do not verify).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from immunoguide.cli._identity import identify, parse_time
from immunoguide.errors import (
    AllocationListMismatch,
    AuditChainBroken,
    CriteriaError,
    ImmunoguideError,
    InputError,
    PolicyError,
    TrialError,
)

__all__ = ["audit_app", "trial_app"]

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_DATA_FILE = 3
EXIT_REFUSED = 4
EXIT_INTEGRITY = 5

trial_app = typer.Typer(help="Trial operations over the trial store (SQLite or PostgreSQL).", no_args_is_help=True)
allocation_app = typer.Typer(help="Allocation lists: generate (statistician), import and verify.", no_args_is_help=True)
ae_app = typer.Typer(help="Adverse events: record, report SAEs, list, safety signals (DSMB).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail of the trial store.", no_args_is_help=True)
trial_app.add_typer(allocation_app, name="allocation")
trial_app.add_typer(ae_app, name="ae")


@dataclass
class _Ctx:
    db: str | None
    user: str | None
    role: str | None
    site: str | None
    now_text: str | None
    reason: str | None = None

    def store(self, *, check: bool = True) -> Any:
        from immunoguide.trial.store import TrialStore

        st = TrialStore(self.db)
        if check:
            try:
                st.check_schema()
            except BaseException:
                st.dispose()
                raise
        return st

    def identify(self, store: Any) -> tuple[Any, datetime]:
        return identify(store, user=self.user, role=self.role, site=self.site, now_text=self.now_text)


def _exit_code(exc: ImmunoguideError) -> int:
    if isinstance(exc, (AuditChainBroken, AllocationListMismatch)):
        return EXIT_INTEGRITY
    if isinstance(exc, TrialError):
        return EXIT_REFUSED
    if isinstance(exc, CriteriaError):
        return EXIT_DATA_FILE
    if isinstance(exc, (InputError, PolicyError)):
        return EXIT_INPUT
    return EXIT_REFUSED


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n")


@contextmanager
def _errors() -> Iterator[None]:
    """Map immunoguide errors to an error line on stderr and the exit code (the only place that does)."""
    try:
        yield
    except ImmunoguideError as exc:
        sys.stderr.write(json.dumps({"error": exc.to_dict()}, default=str) + "\n")
        raise typer.Exit(_exit_code(exc)) from None


def _time(text: str | None, name: str) -> datetime:
    return parse_time(text, name)


def _json_arg(value: str | None, name: str) -> Any:
    """A JSON object given inline, as @file, or as '-' (stdin), decoded strictly (duplicate keys, huge numbers and
    deep nesting refused: :func:`immunoguide.jsonsafe.loads_strict`)."""
    from immunoguide.jsonsafe import loads_strict

    if value is None:
        return None
    try:
        if value == "-":
            raw = sys.stdin.read()
        elif value.startswith("@"):
            raw = Path(value[1:]).read_text()
        else:
            raw = value
    except OSError as exc:
        raise InputError(expected=f"a JSON object for {name} (inline, @file or -)", got=value[:80], where=name,
                         todo=f"fix the file ({exc})") from None
    return loads_strict(raw, where=name)


def _run(ctx: typer.Context, fn: Callable[[Any, Any, datetime], Any], *, check: bool = True) -> None:
    from immunoguide.trial import audit

    c: _Ctx = ctx.obj
    with _errors():
        store = c.store(check=check)
        try:
            actor, now = c.identify(store)
            with store.session() as s:
                audit.set_reason(s, c.reason)
                out = fn(s, actor, now)
        finally:
            store.dispose()
    _emit(out)


@trial_app.callback()
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
                                            help="Simulation stores only: act at this time (ISO 8601).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (a correction …): kept in the audit trail.")] = None,
) -> None:
    """Trial operations: every command is stored with who (an account) and when (the system clock), and audited."""
    ctx.obj = _Ctx(db, user, role, site, now, reason)


@trial_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option("--out", help="Key file to write (never overwritten; mode 600).")]) -> None:
    """Make a new trial key (256 bits from the OS) in a file kept outside the database; prints its id only."""
    from immunoguide.trial.keys import write_key_file

    with _errors():
        key = write_key_file(out)
    _emit({"key_file": str(out), "key_id": key.key_id,
           "note": "keep the file outside the database and its backups; give it to the service and the unblinded "
                   "list statistician only (export IMMUNOGUIDE_TRIAL_KEY_FILE=…)"})


@trial_app.command("init")
def init(
    ctx: typer.Context,
    simulation: Annotated[bool, typer.Option("--simulation", help="A simulation store (demo, training): --now and "
                                                                  "--role accepted. Never for real patients.")] = False,
    trial_start: Annotated[str | None, typer.Option("--trial-start", help="Dates before it are refused (ISO 8601; "
                                                                         "default the first list's import).")] = None,
) -> None:
    """Create or upgrade the store's schema, configure it once with the trial key (real by default), seal the
    plaintext lists of an older store; then show the configuration."""
    c: _Ctx = ctx.obj
    with _errors():
        st = c.store(check=False)
        try:
            now = _time(c.now_text, "--now") if (c.now_text and simulation) else None
            if c.now_text and not simulation:
                from immunoguide.errors import ImplausibleTime

                raise ImplausibleTime(expected="no --now on a real store", got=c.now_text, where="--now",
                                      todo="--now works only with --simulation")
            out = st.initialise(simulation=simulation, now=now,
                                trial_start=_time(trial_start, "--trial-start") if trial_start else None)
            _emit(out)
        finally:
            st.dispose()


@trial_app.command("screen")
def screen_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Study code of the patient.")],
    record: Annotated[str, typer.Option("--record", help="Screening facts: JSON inline, @file or - (stdin).")],
    site: Annotated[str | None, typer.Option("--patient-site", help="Site of the patient (default: your site).")] = None,
    protocol: Annotated[str, typer.Option("--protocol")] = "immunosep-2025",
) -> None:
    """Screen a patient: eligibility with its evidence into the screening log."""
    from immunoguide.trial import screen

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        return screen(s, code, site or actor.site or "", _json_arg(record, "--record"), actor=actor, now=now,
                      protocol=protocol)

    _run(ctx, fn)


@trial_app.command("consent")
def consent_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    given_by: Annotated[str, typer.Option("--by", help="patient, first_degree_relative, spouse, or refused.")],
    signed_at: Annotated[str, typer.Option("--signed-at", help="ISO 8601 time the form was signed.")],
) -> None:
    """Record informed consent (once)."""
    from immunoguide.trial import record_consent

    _run(ctx, lambda s, a, now: record_consent(s, code, given_by, _time(signed_at, "--signed-at"), actor=a, now=now))


@trial_app.command("classify-lab")
def classify_lab_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    labs: Annotated[str, typer.Option("--labs", help="Lab results: JSON inline, @file or - (ferritin, ferritin_unit, "
                                                     "ferritin_sample_time, hla_dr, hla_dr_method …).")],
) -> None:
    """Enter ferritin / mHLA-DR results and classify the endotype (the randomisation stratum)."""
    from immunoguide.trial import enter_labs

    _run(ctx, lambda s, a, now: enter_labs(s, code, _json_arg(labs, "--labs"), actor=a, now=now))


@trial_app.command("randomize")
def randomize_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    stratum: Annotated[str | None, typer.Option("--stratum", help="Expected stratum (checked).")] = None,
) -> None:
    """Randomise a patient: lowest free slot of the site's list for the stratum, kits assigned."""
    from immunoguide.trial import randomize

    _run(ctx, lambda s, actor, now: randomize(s, code, actor=actor, now=now, stratum=stratum))


@trial_app.command("kits")
def kits_cmd(ctx: typer.Context, code: Annotated[str, typer.Argument()]) -> None:
    """Show the patient's kits (contents for unblinded pharmacists only)."""
    from immunoguide.trial import kits_view

    _run(ctx, lambda s, a, now: kits_view(s, code, actor=a))


@trial_app.command("show")
def show_cmd(ctx: typer.Context, code: Annotated[str, typer.Argument()]) -> None:
    """Show one patient as your role may see them."""
    from immunoguide.trial import patient_view

    _run(ctx, lambda s, a, now: patient_view(s, code, actor=a))


@trial_app.command("dose")
def dose_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    kit: Annotated[str | None, typer.Option("--kit", help="IV or SC (omit to show the schedule only).")] = None,
    given_at: Annotated[str | None, typer.Option("--given-at")] = None,
    number: Annotated[int | None, typer.Option("--number", help="Dose number in the kit's schedule.")] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    late_reason: Annotated[str | None, typer.Option("--late-reason", help="Why the dose is entered late.")] = None,
) -> None:
    """Record a dose (with --kit and --given-at) and show the schedule with late/missed flags."""
    from immunoguide.trial import dosing_view, record_dose

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        if kit is None:
            return dosing_view(s, code, actor=actor, now=now)
        return record_dose(s, code, kit, _time(given_at, "--given-at"), actor=actor, now=now, number=number, note=note,
                           late_entry_reason=late_reason)

    _run(ctx, fn)


@trial_app.command("followup")
def followup_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    day: Annotated[int, typer.Option("--day", help="Study day (0 = the 24 h from randomisation).")],
    sofa_total: Annotated[int | None, typer.Option("--sofa-total")] = None,
    sofa_inputs: Annotated[str | None, typer.Option("--sofa-inputs", help="Worst values (JSON) to compute SOFA from.")] = None,
    labs: Annotated[str | None, typer.Option("--labs", help="Serial lab results (JSON).")] = None,
    infection: Annotated[str | None, typer.Option("--infection", help="Day 15: resolution, intermediate, failure, "
                                                                      "superinfection.")] = None,
    vital_status: Annotated[str | None, typer.Option("--vital-status", help="Days 28, 90: alive or dead.")] = None,
    death_at: Annotated[str | None, typer.Option("--death-at")] = None,
    assessed_at: Annotated[str | None, typer.Option("--assessed-at")] = None,
    late_reason: Annotated[str | None, typer.Option("--late-reason", help="Why the day is entered late.")] = None,
) -> None:
    """Record one follow-up day (SOFA, labs, infection assessment, vital status)."""
    from immunoguide.trial import record_followup

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        return record_followup(
            s, code, day, actor=actor, now=now,
            assessed_at=_time(assessed_at, "--assessed-at") if assessed_at else None, sofa_total=sofa_total,
            sofa_inputs=_json_arg(sofa_inputs, "--sofa-inputs"), labs=_json_arg(labs, "--labs"),
            infection_assessment=infection, vital_status=vital_status,
            death_at=_time(death_at, "--death-at") if death_at else None, late_entry_reason=late_reason,
        )

    _run(ctx, fn)


def _parse_bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "true", "1"):
        return True
    if v in ("no", "false", "0"):
        return False
    raise InputError(expected=f"yes or no for {name}", got=value, where=name, todo="answer yes or no")


@ae_app.command("record")
def ae_record_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    term: Annotated[str, typer.Option("--term")],
    onset: Annotated[str, typer.Option("--onset")],
    grade: Annotated[int, typer.Option("--grade", help="CTCAE grade 1-5.")],
    serious: Annotated[str, typer.Option("--serious", help="yes or no.")],
    relatedness: Annotated[str, typer.Option("--relatedness")],
    outcome: Annotated[str, typer.Option("--outcome")],
    aware_at: Annotated[str | None, typer.Option("--aware-at")] = None,
    late_reason: Annotated[str | None, typer.Option("--late-reason", help="Why the AE is entered late (more than "
                                                                          "the store's limit after --aware-at).")] = None,
) -> None:
    """Record an adverse event (a serious one starts the 24 h and 15-day reporting clocks)."""
    from immunoguide.trial import record_adverse_event

    def fn(s: Any, actor: Any, now: datetime) -> Any:
        return record_adverse_event(
            s, code, term=term, onset_at=_time(onset, "--onset"), grade=grade, serious=_parse_bool(serious, "--serious"),
            relatedness=relatedness, outcome=outcome, actor=actor, now=now,
            aware_at=_time(aware_at, "--aware-at") if aware_at else None, late_entry_reason=late_reason,
        )

    _run(ctx, fn)


@ae_app.command("report")
def ae_report_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    ae_id: Annotated[int, typer.Option("--ae")],
    kind: Annotated[str, typer.Option("--kind", help="initial or full.")],
    reported_at: Annotated[str, typer.Option("--reported-at")],
    late_reason: Annotated[str | None, typer.Option("--late-reason", help="Why the report is entered late.")] = None,
) -> None:
    """Record the initial or full report of an SAE."""
    from immunoguide.trial import report_sae

    _run(ctx, lambda s, a, now: report_sae(s, code, ae_id, kind, _time(reported_at, "--reported-at"), actor=a, now=now,
                                           late_entry_reason=late_reason))


@ae_app.command("list")
def ae_list_cmd(ctx: typer.Context, code: Annotated[str, typer.Argument()]) -> None:
    """The patient's adverse events with SAE clock status."""
    from immunoguide.trial import adverse_events_view

    _run(ctx, lambda s, a, now: adverse_events_view(s, code, actor=a, now=now))


@ae_app.command("signals")
def ae_signals_cmd(ctx: typer.Context) -> None:
    """Automatic safety signals by arm (unblinded safety reviewer only)."""
    from immunoguide.trial import safety_signals

    _run(ctx, lambda s, a, now: safety_signals(s, actor=a, now=now))


@trial_app.command("unblind")
def unblind_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Clinical reason (required).")],
) -> None:
    """Emergency unblinding of one patient (investigator of the site; audited)."""
    from immunoguide.trial import unblind

    _run(ctx, lambda s, a, now: unblind(s, code, reason, actor=a, now=now))


@trial_app.command("withdraw")
def withdraw_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")],
    remove_data: Annotated[bool, typer.Option("--remove-data/--keep-data",
                                              help="The patient asked for their data to be removed.")] = False,
) -> None:
    """Record a withdrawal (with --remove-data: delete the clinical data, keep a tombstone for CONSORT)."""
    from immunoguide.trial import withdraw

    _run(ctx, lambda s, a, now: withdraw(s, code, reason, actor=a, now=now, remove_data=remove_data))


@trial_app.command("consort")
def consort_cmd(ctx: typer.Context) -> None:
    """CONSORT flow counts (by arm for unblinded roles only)."""
    from immunoguide.trial import consort

    _run(ctx, lambda s, a, now: consort(s, actor=a))


@trial_app.command("screening-log")
def screening_log_cmd(ctx: typer.Context) -> None:
    """Every screened patient with the latest eligibility and screen-failure reasons."""
    from immunoguide.trial import screening_log

    _run(ctx, lambda s, a, now: screening_log(s, actor=a))


@trial_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or both (the store's tables); adam or sdtm "
                                                      "(CDISC datasets as SAS XPT v5 + CSV + define metadata).")] = "both",
) -> None:
    """Export the whole trial (as your role may see it) with a data dictionary, or as CDISC ADaM / SDTM."""
    if fmt in ("adam", "sdtm"):
        from immunoguide.analysis.cdisc import write_cdisc  # ADaM or SDTM as the actor may see them

        _run(ctx, lambda s, a, now: write_cdisc(s, out, standard=fmt, actor=a, now=now))  # type: ignore[arg-type]
        return
    from immunoguide.trial import export_trial

    formats = ("parquet", "csv") if fmt == "both" else (fmt,)
    _run(ctx, lambda s, a, now: export_trial(s, out, actor=a, now=now, formats=formats))


@trial_app.command("backup")
def backup_cmd(ctx: typer.Context, out: Annotated[Path, typer.Option("--out", help="Backup file (.zip).")]) -> None:
    """Back the whole store up to a portable file (administrator; arms stay sealed in it)."""
    from immunoguide.trial import backup_store

    c: _Ctx = ctx.obj
    with _errors():
        st = c.store()
        try:
            actor, now = c.identify(st)
            res = backup_store(st, out, actor=actor, now=now)
        finally:
            st.dispose()
    _emit(res)


@trial_app.command("restore")
def restore_cmd(ctx: typer.Context, backup: Annotated[Path, typer.Argument(help="Backup file.")]) -> None:
    """Restore a backup into a new, empty database (migrated here; not `trial init`ed): configuration, accounts and
    audit trail come from the backup and are re-verified with the trial key. --user names the operator."""
    from immunoguide.trial import restore_store
    from immunoguide.trial.access import Actor

    c: _Ctx = ctx.obj
    with _errors():
        st = c.store(check=False)
        try:
            st.upgrade()
            if not c.user:
                raise InputError(expected="--user: the name of the operator restoring the store", got=None,
                                 where="trial restore", todo="the empty store has no account yet; say who you are")
            now = _time(c.now_text, "--now") if c.now_text else datetime.now(UTC)
            res = restore_store(st, backup, actor=Actor(c.user, "administrator"), now=now)
        finally:
            st.dispose()
    _emit(res)


@allocation_app.command("generate")
def allocation_generate_cmd(
    site: Annotated[str, typer.Option("--site")],
    stratum: Annotated[str, typer.Option("--stratum")],
    n: Annotated[int, typer.Option("-n", help="Minimum number of slots (whole blocks are generated).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (sealed list; master list in out/master).")],
    seed: Annotated[str | None, typer.Option("--seed", help="Default: 256 bits from the OS (recommended); a seed given "
                                                            "here must be >= 32 hex digits.")] = None,
    block_sizes: Annotated[str | None, typer.Option("--block-sizes", help="e.g. 2,4,6 (default: platform choice).")] = None,
    protocol: Annotated[str, typer.Option("--protocol")] = "immunosep-2025",
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Trial key file (default "
                                                                     "IMMUNOGUIDE_TRIAL_KEY_FILE).")] = None,
) -> None:
    """Generate a sealed allocation list and its master list (list statistician, with the trial key; no database)."""
    from immunoguide.trial import generate_allocation_list
    from immunoguide.trial.keys import ENV_KEY_FILE, load_key

    with _errors():
        sizes = None
        if block_sizes:
            try:
                sizes = tuple(int(x) for x in block_sizes.split(","))
            except ValueError:
                raise InputError(expected="block sizes like 2,4,6", got=block_sizes, where="--block-sizes",
                                 todo="give integers separated by commas") from None
        key = load_key(required=True, environ={ENV_KEY_FILE: str(key_file)} if key_file else None)
        files = generate_allocation_list(site, stratum, n, seed, sizes, out_dir=out, protocol=protocol, key=key)
    _emit(files.to_dict())


@allocation_app.command("import")
def allocation_import_cmd(ctx: typer.Context, csv_file: Annotated[Path, typer.Argument(help="The list's .csv.")]) -> None:
    """Import a list (administrator): checksums and content verified, every slot audited."""
    from immunoguide.trial import import_allocation_list

    _run(ctx, lambda s, a, now: import_allocation_list(s, csv_file, actor=a, now=now))


@allocation_app.command("verify")
def allocation_verify_cmd(
    ctx: typer.Context,
    lists: Annotated[Path | None, typer.Option("--lists", help="Directory with the list files to compare (sealed "
                                                               "files; master files with the key).")] = None,
) -> None:
    """Verify the imported lists against their MACs, files and use (stable check ids); exit 5 on errors."""
    from immunoguide.trial import verify_allocation_lists
    from immunoguide.trial.access import authorize

    c: _Ctx = ctx.obj
    with _errors():
        st = c.store()
        try:
            actor, _ = c.identify(st)
            authorize(actor, "verify")
            with st.session() as s:
                checks = verify_allocation_lists(s, list_dir=lists)
        finally:
            st.dispose()
    errors = [x for x in checks if x.level == "error"]
    _emit({"ok": not errors, "checks": [x.to_dict() for x in checks]})
    if errors:
        raise typer.Exit(EXIT_INTEGRITY)


@audit_app.callback()
def _audit() -> None:
    """The audit trail of the trial store (append-only, hash-chained, MAC'd with the trial key)."""


@audit_app.command("verify")
def audit_verify_cmd(
    db: Annotated[str | None, typer.Option("--db", envvar="IMMUNOGUIDE_DB_URL")] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option("--checkpoint", help="A checkpoint file (repeatable): "
                                                                             "prove nothing before it changed.")] = None,
) -> None:
    """Walk the audit chain (MACs with the trial key), compare it with every table and the accounts, and check
    checkpoints; exit 5 on any edit, deletion, forgery or missing checkpoint."""
    from immunoguide.trial import TrialStore, verify_audit

    with _errors():
        cps = []
        for f in checkpoint or []:
            try:
                cps.append(json.loads(Path(f).read_text()))
            except (OSError, ValueError) as exc:
                raise InputError(expected="a checkpoint file written by `immunoguide audit checkpoint`", got=str(f),
                                 where="--checkpoint", todo=f"check the file ({exc})") from None
        st = TrialStore(db)
        try:
            st.check_schema()
            with st.session() as s:
                report = verify_audit(s, checkpoints=cps)
        finally:
            st.dispose()
    _emit(report.to_dict())
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


@audit_app.command("checkpoint")
def audit_checkpoint_cmd(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (keep it outside the database: trial "
                                                    "master file).")],
    db: Annotated[str | None, typer.Option("--db", envvar="IMMUNOGUIDE_DB_URL")] = None,
    user: Annotated[str | None, typer.Option("--user", envvar="IMMUNOGUIDE_USER")] = None,
    role: Annotated[str | None, typer.Option("--role", envvar="IMMUNOGUIDE_ROLE")] = None,
    now_text: Annotated[str | None, typer.Option("--now", envvar="IMMUNOGUIDE_NOW")] = None,
) -> None:
    """Verify the chain and write a MAC'd checkpoint of its head (administrator); print it."""
    from immunoguide.trial import TrialStore
    from immunoguide.trial.audit import checkpoint

    with _errors():
        st = TrialStore(db)
        try:
            st.check_schema()
            actor, now = identify(st, user=user, role=role, site=None, now_text=now_text)
            with st.session() as s:
                body = checkpoint(s, actor=actor, now=now)
        finally:
            st.dispose()
        if out.exists():
            raise InputError(expected="a new checkpoint file", got=str(out), where="--out",
                             todo="checkpoints are never overwritten: choose another name")
        out.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    _emit(body)
