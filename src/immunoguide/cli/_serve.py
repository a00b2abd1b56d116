"""``immunoguide serve`` (the REST service under uvicorn) and ``immunoguide users …`` (service accounts).

Register in :mod:`immunoguide.cli` with::

    from immunoguide.cli._serve import serve, users_app
    app.command("serve")(serve)
    app.add_typer(users_app, name="users")

``serve`` binds 127.0.0.1 by default, uses ``--db`` / ``IMMUNOGUIDE_DB_URL`` (default the embedded SQLite file
``immunoguide.db``; PostgreSQL by URL) and refuses to start while demo accounts (well-known passwords) exist in the
store, unless ``--demo`` is given — and ``--demo`` is refused on any address other than loopback. There is no
default administrator: create users with ``immunoguide users create-user``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from immunoguide.errors import ImmunoguideError, InputError, StoreError

__all__ = ["serve", "users_app"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

users_app = typer.Typer(help="Service accounts (password login, trial roles).", no_args_is_help=True)

_DB_OPTION = typer.Option("--db", envvar="IMMUNOGUIDE_DB_URL",
                          help="Trial store URL (default sqlite:///immunoguide.db; postgresql+psycopg://… for PostgreSQL).")


def _fail(exc: ImmunoguideError, code: int = EXIT_REFUSED) -> None:
    sys.stderr.write(exc.message + "\n")
    raise typer.Exit(code)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def _user_store(db: str | None, *, init: bool = False) -> Iterator[tuple[Any, Any]]:
    """The trial store (upgraded first with ``init``, then checked: the account tables are part of its schema,
    created by `immunoguide trial init`) and its user store; the store is disposed on leaving."""
    from immunoguide.service.auth import UserStore
    from immunoguide.trial.store import TrialStore

    st = TrialStore(db)
    try:
        if init:
            st.initialise()
        st.check_schema()
        yield st, UserStore(st)
    finally:
        st.dispose()


_ADMIN_USER = typer.Option("--as", envvar="IMMUNOGUIDE_USER",
                           help="Your administrator account (password from IMMUNOGUIDE_PASSWORD, or IMMUNOGUIDE_TOKEN).")


def _administrator(st: Any, users: Any, admin: str | None) -> Any:
    """The administrator making an account change: the authenticated account (token or password); on a store with
    no active account yet, the operator named by --as (bootstrap of the first account, recorded as such)."""
    from immunoguide.cli._identity import account_actor
    from immunoguide.errors import NotAuthenticated
    from immunoguide.trial.access import Actor, authorize

    if users.count_users() == 0:
        return Actor(admin or "bootstrap", "administrator")
    actor = account_actor(st, admin)
    if actor is None:
        raise NotAuthenticated(expected="an administrator's account: IMMUNOGUIDE_TOKEN, or --as NAME with "
                                        "IMMUNOGUIDE_PASSWORD", got=admin, where="immunoguide users",
                               todo="account changes are audited with who made them: log in as an administrator")
    authorize(actor, "manage_accounts")
    return actor


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    db: Annotated[str | None, _DB_OPTION] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Create and allow the demo accounts (loopback only).")] = False,
    init: Annotated[bool, typer.Option("--init", help="Create or upgrade the trial schema first.")] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64,
                                         help="uvicorn worker processes (failed-login throttling counts per "
                                              "worker).")] = 1,
    secret_env: Annotated[str, typer.Option("--secret-env", help="Environment variable holding the token key.")]
    = "IMMUNOGUIDE_SECRET",
) -> None:
    """Start the REST service (rules, trial operations, CDS Hooks) on HOST:PORT."""
    import uvicorn

    from immunoguide.service.auth import demo_accounts, ensure_demo_users

    if demo and not _loopback(host):
        _fail(InputError(expected="a loopback address with --demo", got=host, where="--host",
                         todo="demo accounts have well-known passwords: serve them on 127.0.0.1 only"), EXIT_USAGE)
    try:
        with _user_store(db, init=init or demo) as (st, users):
            present = users.demo_users()
            if demo:
                created = ensure_demo_users(users)
                sys.stderr.write(f"demo accounts ({len(demo_accounts())}; password = user name): "
                                 f"{', '.join(u for u, _, _ in demo_accounts())}"
                                 + (f" — created {len(created)}" if created else "") + "\n")
            elif present:
                raise StoreError(
                    expected="a store without demo accounts (their passwords are well known)",
                    got=f"{len(present)} demo account(s): {', '.join(present[:4])}{' …' if len(present) > 4 else ''}",
                    where=st.safe_url,
                    todo="start with --demo on loopback, or remove them with `immunoguide users delete-demo`",
                )
            elif users.count_users() == 0:
                sys.stderr.write("no users yet: create one with `immunoguide users create-user NAME --role "
                                 "administrator` (there is no default administrator)\n")
            url = st.url
    except ImmunoguideError as exc:
        _fail(exc)
        return
    os.environ["IMMUNOGUIDE_DB_URL"] = url
    os.environ.setdefault("IMMUNOGUIDE_SECRET_ENV", secret_env)
    sys.stderr.write(f"immunoguide service on http://{host}:{port} (store {st.safe_url}; docs at /docs)\n")
    uvicorn.run("immunoguide.service.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="info", proxy_headers=False)


@users_app.command("create-user")
def create_user(
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", help="Trial role: site_coordinator, investigator, "
                                                     "unblinded_pharmacist, statistician, dsmb, administrator.")],
    site: Annotated[str | None, typer.Option("--site", help="Site code (site roles).")] = None,
    db: Annotated[str | None, _DB_OPTION] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    admin: Annotated[str | None, _ADMIN_USER] = None,
) -> None:
    """Create an account (password asked twice, or one line on stdin; stored as a salted scrypt hash). Needs an
    administrator's login, except for the first account of a store; audited."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with _user_store(db) as (st, users):
            by = _administrator(st, users, admin)
            actor = users.create_user(username, password, role, site, by=by)
    except ImmunoguideError as exc:
        _fail(exc, EXIT_USAGE if isinstance(exc, InputError) else EXIT_REFUSED)
        return
    typer.echo(f"created {actor.describe()}")


@users_app.command("set-role")
def set_role(
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", help="The new trial role.")],
    site: Annotated[str | None, typer.Option("--site", help="Site code (site roles).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit trail).")] = None,
    db: Annotated[str | None, _DB_OPTION] = None,
    admin: Annotated[str | None, _ADMIN_USER] = None,
) -> None:
    """Change an account's role (and site): administrator only, audited; the account's tokens are revoked."""
    try:
        with _user_store(db) as (st, users):
            by = _administrator(st, users, admin)
            after = users.change_user(username, by=by, role=role, site=site, reason=reason)
    except ImmunoguideError as exc:
        _fail(exc, EXIT_USAGE if isinstance(exc, InputError) else EXIT_REFUSED)
        return
    typer.echo(f"{username}: role {after['role']}{', site ' + after['site'] if after['site'] else ''}")


@users_app.command("deactivate")
def deactivate(
    username: Annotated[str, typer.Argument(help="User name.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit trail).")] = None,
    db: Annotated[str | None, _DB_OPTION] = None,
    admin: Annotated[str | None, _ADMIN_USER] = None,
) -> None:
    """Deactivate an account (it can no longer log in; kept for the audit trail): administrator only, audited."""
    try:
        with _user_store(db) as (st, users):
            by = _administrator(st, users, admin)
            users.change_user(username, by=by, active=False, reason=reason)
    except ImmunoguideError as exc:
        _fail(exc)
        return
    typer.echo(f"{username}: deactivated")


@users_app.command("login")
def login(
    username: Annotated[str, typer.Argument(help="Your account.")],
    db: Annotated[str | None, _DB_OPTION] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Log in and print a token for IMMUNOGUIDE_TOKEN (8 h; the login is audited): `export IMMUNOGUIDE_TOKEN=$(…)`."""
    from datetime import UTC, datetime

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("IMMUNOGUIDE_PASSWORD") or typer.prompt("Password", hide_input=True, err=True)
    try:
        with _user_store(db) as (_, users):
            token, _p = users.login(username, password, now=datetime.now(UTC), channel="cli")
    except ImmunoguideError as exc:
        _fail(exc)
        return
    typer.echo(token)


@users_app.command("list")
def list_users(db: Annotated[str | None, _DB_OPTION] = None) -> None:
    """List the accounts (name, role, site, demo, active)."""
    try:
        with _user_store(db) as (_, users):
            rows = users.list_users()
    except ImmunoguideError as exc:
        _fail(exc)
        return
    for u in rows:
        typer.echo(f"{u['username']}\t{u['role']}\t{u['site'] or '-'}\t{'demo' if u['demo'] else ''}"
                   f"\t{'active' if u['active'] else 'disabled'}")


@users_app.command("delete-demo")
def delete_demo(
    db: Annotated[str | None, _DB_OPTION] = None,
    admin: Annotated[str | None, _ADMIN_USER] = None,
) -> None:
    """Remove every demo account (and its tokens): administrator only, audited."""
    try:
        with _user_store(db) as (st, users):
            by = _administrator(st, users, admin)
            n = users.delete_demo_users(by=by)
    except ImmunoguideError as exc:
        _fail(exc)
        return
    typer.echo(f"removed {n} demo account(s)")
