"""Accounts (``service_users``) written through the audit trail, and checked against it when someone logs in.

Who did what is only as good as the account behind the user name (21 CFR 11.10(d), (g); ICH E6(R3) 4.2.2(a)(i):
logs of account creation, role and permission changes, and access). Every creation, role/site/password/state
change and deletion of an account is an audit entry (table ``service_users``, row id = user name) whose image
holds the role, site, demo and active flags, the creation time and a SHA-256 of the stored password hash (never
the hash itself). Logins are recorded too (action ``login``).

:func:`verified_account` is what login and token checks use: the account row must equal its last audited image
and, with the trial key, that entry's MAC must verify. An account promoted to ``dsmb`` with a SQL ``UPDATE``
therefore cannot log in (and ``audit verify`` reports the row, IG-AUD-E008).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, Table, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from immunoguide.errors import DuplicateRecord, NotAuthenticated, UnknownRecord
from immunoguide.trial import audit, clock
from immunoguide.trial._account_image import ACCOUNT_TABLE, _iso, account_image, account_images, users_table
from immunoguide.trial._authz import Actor
from immunoguide.trial.models import AuditRecord, ServiceToken

__all__ = [
    "ACCOUNT_TABLE",
    "SYSTEM_ACTOR",
    "account_image",
    "account_images",
    "account_row",
    "active_account_count",
    "adopt_unaudited",
    "change_account",
    "create_account",
    "delete_accounts",
    "demo_account_names",
    "list_accounts",
    "record_login",
    "revoke_account_tokens",
    "revoke_token",
    "store_token",
    "token_account",
    "tokens_table",
    "users_table",
    "verified_account",
]

#: The bearer tokens of the service (digests only; not audited: a login is, :func:`record_login`).
tokens_table: Table = ServiceToken.__table__  # type: ignore[assignment]
#: The actor of changes made by the system itself (store initialisation, bootstrap of the first account).
SYSTEM_ACTOR = Actor("system", "administrator")


def _row(session: Session, username: str) -> Mapping[str, Any] | None:
    row = session.execute(select(users_table).where(users_table.c.username == username)).mappings().first()
    return dict(row) if row is not None else None


# -- reads and tokens for the service's logins (:mod:`immunoguide.service.auth`): the service never reads the tables


def account_row(db: Session | Connection, username: str) -> RowMapping | None:
    """The account row of ``username`` (with the password hash: for the login check only), None when there is none."""
    return db.execute(select(users_table).where(users_table.c.username == username)).mappings().first()


def list_accounts(db: Session | Connection) -> list[dict[str, Any]]:
    """Every account: name, role, site, demo, active (never the hash), by name."""
    rows = db.execute(select(users_table.c.username, users_table.c.role, users_table.c.site, users_table.c.demo,
                             users_table.c.active).order_by(users_table.c.username)).all()
    return [{"username": u, "role": r, "site": s, "demo": d, "active": a} for u, r, s, d, a in rows]


def demo_account_names(db: Session | Connection) -> list[str]:
    """Names of the demo accounts, sorted."""
    return list(db.execute(select(users_table.c.username).where(users_table.c.demo.is_(True))
                           .order_by(users_table.c.username)).scalars())


def active_account_count(db: Session | Connection) -> int:
    """Number of active accounts."""
    return len(db.execute(select(users_table.c.username).where(users_table.c.active.is_(True))).all())


def store_token(db: Session | Connection, *, token_hmac: str, username: str, created_at: datetime,
                expires_at: datetime) -> None:
    """Store a new bearer token (its digest only) of ``username``."""
    db.execute(insert(tokens_table).values(token_hmac=token_hmac, username=username, created_at=created_at,
                                           expires_at=expires_at, revoked=False))


def token_account(db: Session | Connection, token_hmac: str) -> RowMapping | None:
    """The token with this digest and its account: ``expires_at``, ``revoked``, ``username``, ``role``, ``site``,
    ``active``, ``demo`` (None for an unknown digest)."""
    return db.execute(
        select(tokens_table.c.expires_at, tokens_table.c.revoked, users_table.c.username,
               users_table.c.role, users_table.c.site, users_table.c.active, users_table.c.demo)
        .join(users_table, users_table.c.username == tokens_table.c.username)
        .where(tokens_table.c.token_hmac == token_hmac)
    ).mappings().first()


def revoke_token(db: Session | Connection, token_hmac: str) -> None:
    """Revoke the token with this digest (logout)."""
    db.execute(update(tokens_table).where(tokens_table.c.token_hmac == token_hmac).values(revoked=True))


def revoke_account_tokens(db: Session | Connection, username: str) -> None:
    """Revoke every token of ``username`` (after a change of role, site, password or state)."""
    db.execute(update(tokens_table).where(tokens_table.c.username == username).values(revoked=True))


def _record(session: Session, actor: Actor, now: datetime, action: str, username: str,
            before: dict[str, Any] | None, after: dict[str, Any] | None, reason: str | None = None) -> None:
    audit.append(session, actor, now, action=action, table=ACCOUNT_TABLE, row_id=username, patient_id=None,
                 payload={"before": before, "after": after}, reason=reason)


def create_account(session: Session, actor: Actor, now: datetime, *, username: str, password_hash: str, role: str,
                   site: str | None, demo: bool, reason: str | None = None) -> dict[str, Any]:
    """Insert an account and record it. Raises DuplicateRecord when the name is taken."""
    if _row(session, username) is not None:
        raise DuplicateRecord(expected="a new user name", got=username, where=ACCOUNT_TABLE,
                              todo="choose another user name")
    values = {"username": username, "password_hash": password_hash, "role": role, "site": site, "demo": demo,
              "active": True, "created_at": now}
    session.execute(insert(users_table).values(**values))
    after = account_image(values)
    _record(session, actor, now, "insert", username, None, after, reason)
    return after


def change_account(session: Session, actor: Actor, now: datetime, username: str, *, reason: str | None = None,
                   **changes: Any) -> dict[str, Any]:
    """Change an account's role, site, password hash or active flag, and record before and after."""
    row = _row(session, username)
    if row is None:
        raise UnknownRecord(expected="an existing account", got=username, where=ACCOUNT_TABLE,
                            todo="list the accounts with `immunoguide users list`")
    bad = set(changes) - {"role", "site", "password_hash", "active"}
    if bad:
        raise ValueError(f"not an account field: {sorted(bad)}")
    before = account_image(row)
    session.execute(update(users_table).where(users_table.c.username == username).values(**changes))
    after = account_image({**row, **changes})
    if after != before:
        _record(session, actor, now, "update", username, before, after, reason)
    return after


def delete_accounts(session: Session, actor: Actor, now: datetime, usernames: list[str], *,
                    reason: str | None = None) -> int:
    """Delete accounts (and their tokens) and record each deletion."""
    tokens = tokens_table
    n = 0
    for name in usernames:
        row = _row(session, name)
        if row is None:
            continue
        session.execute(delete(tokens).where(tokens.c.username == name))
        session.execute(delete(users_table).where(users_table.c.username == name))
        _record(session, actor, now, "delete", name, account_image(row), None, reason)
        n += 1
    return n


def record_login(session: Session, actor: Actor, now: datetime, *, expires_at: datetime, channel: str,
                 detail: Mapping[str, Any] | None = None) -> None:
    """Record a successful login (ICH E6(R3) 4.2.2(a)(i): user access).

    ``channel`` says how the user was identified (``service``/``cli``: password; ``smart``: an EHR's SMART launch);
    ``detail`` adds what identified them there (e.g. the EHR's issuer and its ``fhirUser``).
    """
    payload: dict[str, Any] = {"channel": channel, "token_expires_at": _iso(expires_at)}
    if detail:
        payload.update({k: v for k, v in detail.items() if k not in payload})
    audit.append(session, actor, now, action="login", table=ACCOUNT_TABLE, row_id=actor.user, patient_id=None,
                 payload=payload)


def verified_account(session: Session, username: str) -> Mapping[str, Any]:
    """The account row, if it equals its last audited image (and that entry's MAC verifies, with the key).

    Raises NotAuthenticated otherwise (the same answer as for a wrong password: nothing is revealed).
    """
    row = _row(session, username)
    last = session.execute(
        select(AuditRecord).where(AuditRecord.table_name == ACCOUNT_TABLE, AuditRecord.row_id == username,
                                  AuditRecord.action.in_(("insert", "update", "delete")))
        .order_by(AuditRecord.seq.desc()).limit(1)
    ).scalar_one_or_none()
    key = clock.session_key(session)
    ok = (row is not None and last is not None and last.payload is not None
          and last.payload.get("after") == account_image(row))
    if ok and key is not None and last is not None:
        ok = last.mac is not None and audit.hmac_equal(audit.entry_mac(key, last.hash), last.mac) and (
            audit.entry_hash(last.prev_hash, audit._header(last)) == last.hash)
    if not ok or row is None:
        raise NotAuthenticated(expected="an account whose record matches the audit trail", got=username,
                               where="login", todo="ask the administrator: the account was changed outside "
                                                   "immunoguide (see `immunoguide audit verify`)")
    return row


def adopt_unaudited(session: Session, now: datetime) -> list[str]:
    """Record an ``insert`` for every account that has no audit entry yet (accounts of a revision-0002 store)."""
    audited = set(session.execute(select(AuditRecord.row_id).where(AuditRecord.table_name == ACCOUNT_TABLE)
                                  .distinct()).scalars())
    out = []
    for row in session.execute(select(users_table).order_by(users_table.c.username)).mappings().all():
        if row["username"] not in audited:
            _record(session, SYSTEM_ACTOR, now, "insert", row["username"], None, account_image(dict(row)),
                    "account created before revision 0003 (not audited then); adopted at trial init")
            out.append(row["username"])
    return out
