"""Who is acting, and when, for a command of ``immunoguide trial``, ``audit`` and ``users`` (not public).

On a **real** store (``immunoguide trial init``) the user authenticates as an account of the store and the role and
site come from that account:

* a token from ``$IMMUNOGUIDE_TOKEN`` (issued by ``immunoguide users login NAME``, stored only as a keyed digest), or
* the account name (``--user`` / ``$IMMUNOGUIDE_USER``) and its password from ``$IMMUNOGUIDE_PASSWORD`` or, at a
  terminal, a prompt.

``--role`` and ``--site`` are refused there (the role is the account's), and so is ``--now``: times come from the
system clock. On a **simulation** store (the demo's, ``trial init --simulation``) an account may be used the same
way, or ``--user/--role/--site`` name the acting role without a password, and ``--now`` gives the time of the
command; without it the time is the store's simulated clock (:func:`immunoguide.trial.clock.read_store_clock`, set
with ``immunoguide safety clock``), else the system clock. The audit trail records the system time beside it
either way.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

from immunoguide.errors import ImplausibleTime, InputError, NotAuthenticated, NotAuthorized

__all__ = ["ENV_PASSWORD", "ENV_TOKEN", "account_actor", "identify", "parse_time", "store_mode", "store_mode_and_now"]

ENV_TOKEN = "IMMUNOGUIDE_TOKEN"
ENV_PASSWORD = "IMMUNOGUIDE_PASSWORD"


def parse_time(text: str | None, name: str) -> datetime:
    """An ISO 8601 time with a UTC offset (InputError otherwise)."""
    if text is None:
        raise InputError(expected=f"a time for {name}", got=None, where=name, todo="give an ISO 8601 time with offset")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(expected=f"an ISO 8601 time for {name}", got=text, where=name,
                         todo="e.g. 2025-03-01T08:30:00+00:00") from None
    if t.tzinfo is None:
        raise InputError(expected=f"a time with a UTC offset for {name}", got=text, where=name,
                         todo="add e.g. +00:00")
    return t


def store_mode(store: Any) -> str:
    """``"real"`` or ``"simulation"`` (the configuration is checked against the trial key when there is one)."""
    return store_mode_and_now(store)[0]


def store_mode_and_now(store: Any) -> tuple[str, datetime]:
    """The store's mode and its time now: the system clock on a real store, the simulated clock (if set) on a
    simulation store."""
    from immunoguide.trial import clock

    with store.session() as s:
        cfg = clock.store_config(s)
        mode = cfg.mode if cfg is not None else "real"
        now = clock.read_store_clock(s).now(datetime.now(UTC)) if mode == "simulation" else datetime.now(UTC)
    return mode, now


def account_actor(store: Any, user: str | None) -> Any:
    """The actor of the authenticated account (token or password), or None when no credential is offered.

    Raises NotAuthenticated (a credential that does not verify).
    """
    from immunoguide.service.auth import UserStore

    token = os.environ.get(ENV_TOKEN)
    password = os.environ.get(ENV_PASSWORD)
    if not token and password is None and user and sys.stdin is not None and sys.stdin.isatty():
        import typer

        password = typer.prompt(f"Password for {user}", hide_input=True, err=True)
    if not token and (password is None or not user):
        return None
    users = UserStore(store)
    if token:
        return users.authenticate(token, now=datetime.now(UTC)).actor
    assert user is not None and password is not None
    return users.check_password(user, password).actor


def identify(store: Any, *, user: str | None, role: str | None, site: str | None,
             now_text: str | None) -> tuple[Any, datetime]:
    """The acting user and the event time of a command (see the module docstring)."""
    from immunoguide.trial.access import Actor

    mode, store_time = store_mode_and_now(store)
    if now_text and mode != "simulation":
        raise ImplausibleTime(expected="no --now on a real store (times come from the system clock)", got=now_text,
                              where="--now / IMMUNOGUIDE_NOW",
                              todo="omit --now; it works only on a store created with `trial init --simulation`")
    now = parse_time(now_text, "--now") if now_text else store_time
    account = None
    if os.environ.get(ENV_TOKEN) or os.environ.get(ENV_PASSWORD) is not None or mode == "real":
        if role or site:
            raise NotAuthorized(expected="no --role/--site when you log in as an account (the role and site are the "
                                         "account's)", got={"role": role, "site": site},
                                where="--role / --site (IMMUNOGUIDE_ROLE / IMMUNOGUIDE_SITE)",
                                todo="remove them; ask the administrator to change your account's role")
        account = account_actor(store, user)
        if account is not None:
            return account, now
        if mode == "real":
            raise NotAuthenticated(
                expected=f"an account of the store: a token in ${ENV_TOKEN} or --user with ${ENV_PASSWORD}",
                got=user, where="command line (real store)",
                todo=f"export {ENV_TOKEN}=$(immunoguide users login NAME), or give --user and the password")
    if not user or not role:
        raise InputError(expected="--user and --role (or IMMUNOGUIDE_USER / IMMUNOGUIDE_ROLE) on a simulation store, "
                                  "or an account's credentials", got={"user": user, "role": role},
                         where="command line", todo="say who you are and in which trial role")
    return Actor(user, role, site), now
