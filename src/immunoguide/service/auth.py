"""Users, password hashing and bearer tokens of the REST service.

* **Passwords** are stored only as salted scrypt hashes (:func:`hash_password`, stdlib :func:`hashlib.scrypt`,
  N = 2^14, r = 8, p = 1, 16-byte salt), compared in constant time; a login for an unknown user costs the same
  hash, so timing does not reveal which user names exist.
* **Tokens** are 256-bit random strings (:func:`secrets.token_urlsafe`) given once at login; the store keeps only
  their HMAC-SHA-256 (keyed by the service secret, when one is configured) and their expiry. A token is revoked at
  logout. Validated tokens are cached in memory for :attr:`UserStore.cache_s` seconds (revocation through this
  process clears the entry at once).
* **Roles** are the trial roles (:data:`immunoguide.trial.access.ROLES`); a user is turned into a trial
  :class:`~immunoguide.trial.access.Actor` (user, role, site) that every trial function receives, so blinding and
  site restriction stay in ``trial/``.
* **Demo accounts** (:func:`ensure_demo_users`) have well-known passwords and are flagged ``demo``;
  ``immunoguide serve`` refuses to start while any exists unless ``--demo`` is given (and then only on loopback).
  There is no default administrator: the first user is created with ``immunoguide users create-user``.

The tables ``service_users`` and ``service_tokens`` belong to the trial store's schema (models
:class:`~immunoguide.trial.models.ServiceUser` / ``ServiceToken``, Alembic revision 0002); they are not trial data,
so they are neither audited, exported nor backed up.

Examples
--------
>>> h = hash_password("correct horse battery staple")
>>> h.startswith("scrypt$16384$8$1$"), verify_password("correct horse battery staple", h)
(True, True)
>>> verify_password("wrong", h)
False
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Engine

from immunoguide.errors import DuplicateRecord, InputError, NotAuthenticated
from immunoguide.trial.access import ROLES, SITE_ROLES, Actor
from immunoguide.trial.models import ServiceToken, ServiceUser

__all__ = [
    "DEMO_SITES",
    "MIN_PASSWORD_LENGTH",
    "Principal",
    "UserStore",
    "demo_accounts",
    "ensure_demo_users",
    "hash_password",
    "verify_password",
]

#: Minimum password length for ``create-user`` (demo accounts are exempt and refused outside ``--demo``).
MIN_PASSWORD_LENGTH = 12
#: Sites of the demo accounts.
DEMO_SITES: tuple[str, ...] = ("ATH", "MIL")

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _DKLEN = 2**14, 8, 1, 32

#: The account tables (owned by the trial store's schema and migrations: :class:`~immunoguide.trial.models.ServiceUser`).
users_table: Table = ServiceUser.__table__  # type: ignore[assignment]
tokens_table: Table = ServiceToken.__table__  # type: ignore[assignment]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64) for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_DKLEN)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_b64, dk_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, want = base64.b64decode(salt_b64), base64.b64decode(dk_b64)
        got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = hash_password("immunoguide-dummy-password", salt=b"\0" * 16)


@dataclass(frozen=True)
class Principal:
    """An authenticated user: the trial :class:`~immunoguide.trial.access.Actor` and the token's expiry."""

    actor: Actor
    expires_at: datetime
    demo: bool = False


def demo_accounts() -> list[tuple[str, str, str | None]]:
    """``(username, role, site)`` of the demo accounts; each account's password is its user name.

    >>> [u for u, _, _ in demo_accounts()][:3]
    ['demo-site_coordinator-ATH', 'demo-site_coordinator-MIL', 'demo-investigator-ATH']
    """
    out: list[tuple[str, str, str | None]] = []
    for role in ROLES:
        if role in SITE_ROLES:
            out.extend((f"demo-{role}-{site}", role, site) for site in DEMO_SITES)
        else:
            out.append((f"demo-{role}", role, None))
    return out


class UserStore:
    """Users and tokens in the trial store's database.

    Parameters
    ----------
    engine : Engine
        The trial store's engine (:attr:`immunoguide.trial.store.TrialStore.engine`).
    secret : str or bytes, optional
        Key of the token HMAC. Tokens stay valid across restarts only with the same secret; without one the
        token digest is an unkeyed SHA-256 (tokens are 256-bit random, so this is still not guessable).
    token_ttl : timedelta
        Lifetime of a token.
    cache_s : float
        How long a validated token is trusted without a database read.
    """

    def __init__(self, engine: Engine, *, secret: str | bytes | None = None,
                 token_ttl: timedelta = timedelta(hours=8), cache_s: float = 30.0) -> None:
        self.engine = engine
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._key = key or b""
        self.token_ttl = token_ttl
        self.cache_s = cache_s
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()

    # -- users ------------------------------------------------------------------------------------------------

    def create_user(self, username: str, password: str, role: str, site: str | None = None, *,
                    demo: bool = False, now: datetime | None = None) -> Actor:
        """Create a user (role from the trial roles; site roles need a site). Returns the user's Actor.

        Raises InputError (short password, bad name), NotAuthorized (unknown role, missing site),
        DuplicateRecord (user name taken).
        """
        if not isinstance(username, str) or not 1 <= len(username) <= 64 or username != username.strip():
            raise InputError(expected="a user name of 1-64 characters without surrounding spaces", got=username,
                             where="user name", todo="choose another user name", field="username")
        actor = Actor(username, role, site if role in SITE_ROLES else None)
        if not demo and len(password) < MIN_PASSWORD_LENGTH:
            raise InputError(expected=f"a password of at least {MIN_PASSWORD_LENGTH} characters",
                             got=f"{len(password)} characters", where="password",
                             todo="choose a longer password (a passphrase)", field="password")
        now = now or datetime.now(UTC)
        with self.engine.begin() as conn:
            if conn.execute(select(users_table.c.username).where(users_table.c.username == username)).first():
                raise DuplicateRecord(expected="a new user name", got=username, where="service_users",
                                      todo="choose another user name")
            conn.execute(insert(users_table).values(
                username=username, password_hash=hash_password(password), role=role, site=actor.site, demo=demo,
                active=True, created_at=now))
        return actor

    def list_users(self) -> list[dict[str, Any]]:
        """Every user: name, role, site, demo, active (never the hash)."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(users_table.c.username, users_table.c.role, users_table.c.site,
                                       users_table.c.demo, users_table.c.active)
                                .order_by(users_table.c.username)).all()
        return [{"username": u, "role": r, "site": s, "demo": d, "active": a} for u, r, s, d, a in rows]

    def demo_users(self) -> list[str]:
        """Names of the demo accounts present in the store."""
        with self.engine.begin() as conn:
            return list(conn.execute(select(users_table.c.username).where(users_table.c.demo.is_(True))
                                     .order_by(users_table.c.username)).scalars())

    def delete_demo_users(self) -> int:
        """Remove every demo account and its tokens; returns how many accounts were removed."""
        with self.engine.begin() as conn:
            names = list(conn.execute(select(users_table.c.username).where(users_table.c.demo.is_(True))).scalars())
            if names:
                conn.execute(delete(tokens_table).where(tokens_table.c.username.in_(names)))
                conn.execute(delete(users_table).where(users_table.c.username.in_(names)))
        with self._lock:
            self._cache.clear()
        return len(names)

    def count_users(self) -> int:
        """Number of active users."""
        with self.engine.begin() as conn:
            return len(conn.execute(select(users_table.c.username).where(users_table.c.active.is_(True))).all())

    # -- tokens -----------------------------------------------------------------------------------------------

    def _digest(self, token: str) -> str:
        return hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def login(self, username: str, password: str, *, now: datetime) -> tuple[str, Principal]:
        """Check the password and issue a new token; NotAuthenticated on any failure (same message for all)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(users_table).where(users_table.c.username == username)).mappings().first()
        ok = verify_password(password, row["password_hash"] if row is not None else _DUMMY_HASH)
        if row is None or not ok or not row["active"]:
            raise NotAuthenticated(expected="a valid user name and password", got=username, where="POST /auth/token",
                                   todo="check the user name and password (ask the administrator to reset it)")
        token = secrets.token_urlsafe(32)
        expires = now + self.token_ttl
        with self.engine.begin() as conn:
            conn.execute(insert(tokens_table).values(token_hmac=self._digest(token), username=username,
                                                     created_at=now, expires_at=expires, revoked=False))
        actor = Actor(row["username"], row["role"], row["site"])
        return token, Principal(actor, expires, bool(row["demo"]))

    def issue_token(self, username: str, *, now: datetime) -> tuple[str, Principal]:
        """A new token for an active user whose identity the caller has already established without a password
        (a SMART launch by an EHR user linked to this account, :mod:`immunoguide.service.smart`); NotAuthenticated
        for an unknown or inactive user."""
        with self.engine.begin() as conn:
            row = conn.execute(select(users_table).where(users_table.c.username == username)).mappings().first()
            if row is None or not row["active"]:
                raise NotAuthenticated(expected="an active immunoguide user linked to the EHR user", got=username,
                                       where="SMART launch", todo="ask the administrator to create or link the account")
            token = secrets.token_urlsafe(32)
            expires = now + self.token_ttl
            conn.execute(insert(tokens_table).values(token_hmac=self._digest(token), username=username,
                                                     created_at=now, expires_at=expires, revoked=False))
        return token, Principal(Actor(row["username"], row["role"], row["site"]), expires, bool(row["demo"]))

    def authenticate(self, token: str | None, *, now: datetime) -> Principal:
        """The principal of a bearer token; NotAuthenticated when missing, unknown, revoked or expired."""
        if not token:
            raise NotAuthenticated(expected="an 'Authorization: Bearer <token>' header", got=None, where="request",
                                   todo="log in at POST /auth/token and send the token")
        hit = self.cached(token, now=now)
        if hit is not None:
            return hit
        digest = self._digest(token)
        mono = time.monotonic()
        # Single flight: while one request re-validates an expired cache entry, concurrent requests with the same
        # token keep the entry they had (a few ms longer than cache_s) instead of queueing on the store's write
        # lock (SQLite transactions are serialised) — that queue caused 200–300 ms stalls under load.
        with self._lock:
            stale = self._cache.get(digest)
            if stale is not None and digest in self._refreshing and stale[0].expires_at > now:
                return stale[0]
            self._refreshing.add(digest)
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(tokens_table.c.expires_at, tokens_table.c.revoked, users_table.c.username,
                           users_table.c.role, users_table.c.site, users_table.c.active, users_table.c.demo)
                    .join(users_table, users_table.c.username == tokens_table.c.username)
                    .where(tokens_table.c.token_hmac == digest)
                ).mappings().first()
        finally:
            with self._lock:
                self._refreshing.discard(digest)
        if row is None or row["revoked"] or not row["active"] or row["expires_at"] <= now:
            with self._lock:
                self._cache.pop(digest, None)
            raise NotAuthenticated(expected="a valid, unexpired bearer token",
                                   got="expired token" if row is not None and row["expires_at"] <= now else "unknown token",
                                   where="request", todo="log in again at POST /auth/token")
        p = Principal(Actor(row["username"], row["role"], row["site"]), row["expires_at"], bool(row["demo"]))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (p, mono)
        return p

    def cached(self, token: str | None, *, now: datetime) -> Principal | None:
        """The principal of a token validated less than :attr:`cache_s` seconds ago (None: ask the database)."""
        if not token:
            return None
        digest = self._digest(token)
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and time.monotonic() - hit[1] < self.cache_s and hit[0].expires_at > now:
            return hit[0]
        return None

    def revoke(self, token: str) -> None:
        """Revoke a token (logout)."""
        digest = self._digest(token)
        with self.engine.begin() as conn:
            conn.execute(update(tokens_table).where(tokens_table.c.token_hmac == digest).values(revoked=True))
        with self._lock:
            self._cache.pop(digest, None)


def ensure_demo_users(users: UserStore, accounts: Iterable[tuple[str, str, str | None]] | None = None) -> list[str]:
    """Create the demo accounts that do not exist yet (password = user name, flagged ``demo``)."""
    existing = {u["username"] for u in users.list_users()}
    created = []
    for name, role, site in accounts if accounts is not None else demo_accounts():
        if name not in existing:
            users.create_user(name, name, role, site, demo=True)
            created.append(name)
    return created
