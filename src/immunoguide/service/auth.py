"""Users, password hashing and bearer tokens of the REST service.

* **Passwords** are stored only as salted scrypt hashes (:func:`hash_password`, stdlib :func:`hashlib.scrypt`,
  N = 2^14, r = 8, p = 1, 16-byte salt), compared in constant time; a login for an unknown user costs the same
  hash, so timing does not reveal which user names exist.
* **Tokens** are 256-bit random strings (:func:`secrets.token_urlsafe`) given once at login; the store keeps only
  their HMAC-SHA-256 (keyed by the service secret, else by the *tokens* sub-key of the trial key, so a database
  administrator cannot mint one) and their expiry. A token is revoked at logout. Validated tokens are cached in
  memory for :attr:`UserStore.cache_s` seconds (revocation through this process clears the entry at once).
* **Accounts are audited** (:mod:`immunoguide.trial.accounts`): creation, role/site/password/state changes,
  deletions and logins (password, command line, and the SMART launch's sign-in of a linked EHR user,
  :meth:`UserStore.issue_token`) are audit entries, and a login, sign-in or token check is refused when the account
  row differs from its last audited image (an account promoted in SQL cannot log in).
* **Roles** are the trial roles (:data:`immunoguide.trial.access.ROLES`); a user is turned into a trial
  :class:`~immunoguide.trial.access.Actor` (user, role, site) that every trial function receives, so blinding and
  site restriction stay in ``trial/``.
* **Demo accounts** (:func:`ensure_demo_users`) have well-known passwords and are flagged ``demo``;
  ``immunoguide serve`` refuses to start while any exists unless ``--demo`` is given (and then only on loopback).
  There is no default administrator: the first user is created with ``immunoguide users create-user``.

The tables ``service_users`` and ``service_tokens`` belong to the trial store's schema (models
:class:`~immunoguide.trial.models.ServiceUser` / ``ServiceToken``, Alembic revision 0002); they are not trial data
(not exported); the accounts are audited and backed up, the tokens neither. This module reads and writes them only
through :mod:`immunoguide.trial.accounts` (the service never touches the tables).

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

from sqlalchemy.engine import Engine

from immunoguide.errors import InputError, NotAuthenticated
from immunoguide.trial.access import ROLES, SITE_ROLES, Actor

__all__ = [
    "DEMO_SITES",
    "MIN_PASSWORD_LENGTH",
    "Principal",
    "UserStore",
    "demo_accounts",
    "ensure_demo_users",
    "hash_password",
    "token_secret",
    "verify_password",
]

#: Minimum password length for ``create-user`` (demo accounts are exempt and refused outside ``--demo``).
MIN_PASSWORD_LENGTH = 12
#: Sites of the demo accounts.
DEMO_SITES: tuple[str, ...] = ("ATH", "MIL")

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _DKLEN = 2**14, 8, 1, 32

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


def token_secret(key: Any = None) -> bytes | None:
    """The key of the token digests: ``$IMMUNOGUIDE_SECRET`` (the variable named by ``$IMMUNOGUIDE_SECRET_ENV``),
    else the *tokens* sub-key of the trial key, else None."""
    import os

    env = os.environ.get(os.environ.get("IMMUNOGUIDE_SECRET_ENV", "IMMUNOGUIDE_SECRET"))
    if env:
        return env.encode("utf-8")
    return key.subkey("tokens") if key is not None else None


class UserStore:
    """Users and tokens in the trial store's database.

    Parameters
    ----------
    store : TrialStore or Engine
        The trial store (or its engine: a store is opened around it, with the trial key of the environment).
    secret : str or bytes, optional
        Key of the token HMAC. Default :func:`token_secret` (the service secret, else derived from the trial key).
        Tokens stay valid across restarts only with the same secret; without any, the digest is an unkeyed SHA-256
        (tokens are 256-bit random, so this is still not guessable, but a database administrator could mint one).
    token_ttl : timedelta
        Lifetime of a token.
    cache_s : float
        How long a validated token is trusted without a database read.
    """

    def __init__(self, store: Any, *, secret: str | bytes | None = None,
                 token_ttl: timedelta = timedelta(hours=8), cache_s: float = 30.0) -> None:
        from immunoguide.trial.store import TrialStore

        self.store = store if isinstance(store, TrialStore) else TrialStore(engine=store)
        self.engine: Engine = self.store.engine
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._key = key or token_secret(self.store.key) or b""
        self.token_ttl = token_ttl
        self.cache_s = cache_s
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()

    # -- users ------------------------------------------------------------------------------------------------

    def create_user(self, username: str, password: str, role: str, site: str | None = None, *,
                    demo: bool = False, now: datetime | None = None, by: Actor | None = None) -> Actor:
        """Create a user (role from the trial roles; site roles need a site). Returns the user's Actor.

        ``by`` is the administrator who creates it (default: the system, for the first account and demo accounts);
        the creation is an audit entry. Raises InputError (short password, bad name), NotAuthorized (unknown role,
        missing site, ``by`` not an administrator), DuplicateRecord (user name taken).
        """
        from immunoguide.trial import accounts
        from immunoguide.trial.access import authorize

        if not isinstance(username, str) or not 1 <= len(username) <= 64 or username != username.strip():
            raise InputError(expected="a user name of 1-64 characters without surrounding spaces", got=username,
                             where="user name", todo="choose another user name", field="username")
        actor = Actor(username, role, site if role in SITE_ROLES else None)
        if not demo and len(password) < MIN_PASSWORD_LENGTH:
            raise InputError(expected=f"a password of at least {MIN_PASSWORD_LENGTH} characters",
                             got=f"{len(password)} characters", where="password",
                             todo="choose a longer password (a passphrase)", field="password")
        by = by or accounts.SYSTEM_ACTOR
        authorize(by, "manage_accounts")
        with self.store.session() as s:
            now = now or self._now(s)
            accounts.create_account(s, by, now, username=username, password_hash=hash_password(password), role=role,
                                    site=actor.site, demo=demo, reason="demo account" if demo else None)
        return actor

    def change_user(self, username: str, *, by: Actor, now: datetime | None = None, reason: str | None = None,
                    role: str | None = None, site: str | None = None, active: bool | None = None,
                    password: str | None = None) -> dict[str, Any]:
        """Change an account's role (and site), state or password (administrator; audited). Returns its new image."""
        from immunoguide.trial import accounts
        from immunoguide.trial.access import authorize

        authorize(by, "manage_accounts")
        changes: dict[str, Any] = {}
        with self.store.session() as s:
            row = accounts.account_row(s, username)
            if row is None:
                from immunoguide.errors import UnknownRecord

                raise UnknownRecord(expected="an existing account", got=username, where="service_users",
                                    todo="list the accounts with `immunoguide users list`")
            if role is not None:
                new_site = site if role in SITE_ROLES else None
                Actor(username, role, new_site)  # validates role and site
                changes.update(role=role, site=new_site)
            elif site is not None:
                Actor(username, row["role"], site)
                changes["site"] = site if row["role"] in SITE_ROLES else None
            if active is not None:
                changes["active"] = active
            if password is not None:
                if len(password) < MIN_PASSWORD_LENGTH:
                    raise InputError(expected=f"a password of at least {MIN_PASSWORD_LENGTH} characters",
                                     got=f"{len(password)} characters", where="password",
                                     todo="choose a longer password (a passphrase)", field="password")
                changes["password_hash"] = hash_password(password)
            out = accounts.change_account(s, by, now or self._now(s), username, reason=reason, **changes)
            if changes.get("active") is False or "role" in changes or "site" in changes or "password_hash" in changes:
                accounts.revoke_account_tokens(s, username)
        with self._lock:
            self._cache.clear()
        return out

    def list_users(self) -> list[dict[str, Any]]:
        """Every user: name, role, site, demo, active (never the hash)."""
        from immunoguide.trial import accounts

        with self.engine.begin() as conn:
            return accounts.list_accounts(conn)

    def demo_users(self) -> list[str]:
        """Names of the demo accounts present in the store."""
        from immunoguide.trial import accounts

        with self.engine.begin() as conn:
            return accounts.demo_account_names(conn)

    def delete_demo_users(self, *, by: Actor | None = None) -> int:
        """Remove every demo account and its tokens (audited); returns how many accounts were removed."""
        from immunoguide.trial import accounts
        from immunoguide.trial.access import authorize

        by = by or accounts.SYSTEM_ACTOR
        authorize(by, "manage_accounts")
        with self.store.session() as s:
            names = sorted(accounts.demo_account_names(s))
            n = accounts.delete_accounts(s, by, self._now(s), names, reason="demo accounts removed")
        with self._lock:
            self._cache.clear()
        return n

    def count_users(self) -> int:
        """Number of active users."""
        from immunoguide.trial import accounts

        with self.engine.begin() as conn:
            return accounts.active_account_count(conn)

    def _now(self, session: Any) -> datetime:
        from immunoguide.trial import clock

        return clock.system_now(session)

    # -- tokens -----------------------------------------------------------------------------------------------

    def _digest(self, token: str) -> str:
        return hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def _refused(self, username: str) -> NotAuthenticated:
        return NotAuthenticated(expected="a valid user name and password", got=username, where="POST /auth/token",
                                todo="check the user name and password (ask the administrator to reset it)")

    def check_password(self, username: str, password: str) -> Principal:
        """The principal of a user name and password, without issuing a token (command line); NotAuthenticated on
        any failure, including an account that differs from its audit trail."""
        from immunoguide.trial import accounts

        with self.store.session() as s:
            row = accounts.account_row(s, username)
            ok = verify_password(password, row["password_hash"] if row is not None else _DUMMY_HASH)
            if row is None or not ok or not row["active"]:
                raise self._refused(username)
            try:
                accounts.verified_account(s, username)
            except NotAuthenticated:
                raise self._refused(username) from None
        return Principal(Actor(row["username"], row["role"], row["site"]), datetime.max.replace(tzinfo=UTC),
                         bool(row["demo"]))

    def login(self, username: str, password: str, *, now: datetime, channel: str = "service") -> tuple[str, Principal]:
        """Check the password and issue a new token (the login is audited); NotAuthenticated on any failure (same
        message for all)."""
        from immunoguide.trial import accounts

        principal = self.check_password(username, password)
        token = secrets.token_urlsafe(32)
        expires = now + self.token_ttl
        with self.store.session() as s:
            accounts.store_token(s, token_hmac=self._digest(token), username=username, created_at=now,
                                 expires_at=expires)
            accounts.record_login(s, principal.actor, now, expires_at=expires, channel=channel)
        return token, Principal(principal.actor, expires, principal.demo)

    def issue_token(self, username: str, *, now: datetime, channel: str = "smart",
                    detail: dict[str, Any] | None = None) -> tuple[str, Principal]:
        """A new token for an account whose holder the caller has identified without a password (a SMART launch by
        the EHR user linked to this account, :mod:`immunoguide.service.smart`).

        The account goes through the same checks as a password login — it must exist, be active and equal its last
        audited image (an account changed outside immunoguide gets no token) — and the sign-in is an audit entry
        (action ``login``, ``channel``, plus ``detail``: e.g. the EHR's issuer and ``fhirUser``). Raises
        NotAuthenticated otherwise (the same answer in every case).
        """
        from immunoguide.trial import accounts

        refused = NotAuthenticated(expected="an active immunoguide account linked to the EHR user, matching its audit "
                                            "trail", got=username, where="SMART launch",
                                   todo="ask the administrator to create, reactivate or check the linked account "
                                        "(`immunoguide audit verify`)")
        with self.store.session() as s:
            row = accounts.account_row(s, username)
            if row is None or not row["active"]:
                raise refused
            try:
                accounts.verified_account(s, username)
            except NotAuthenticated:
                raise refused from None
            actor = Actor(row["username"], row["role"], row["site"])
            token = secrets.token_urlsafe(32)
            expires = now + self.token_ttl
            accounts.store_token(s, token_hmac=self._digest(token), username=username, created_at=now,
                                 expires_at=expires)
            accounts.record_login(s, actor, now, expires_at=expires, channel=channel, detail=detail)
        return token, Principal(actor, expires, bool(row["demo"]))

    def authenticate(self, token: str | None, *, now: datetime) -> Principal:
        """The principal of a bearer token; NotAuthenticated when missing, unknown, revoked or expired, or when the
        account differs from its audit trail."""
        from immunoguide.trial import accounts

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
        verified = True
        try:
            with self.store.session() as s:
                row = accounts.token_account(s, digest)
                if row is not None:
                    try:
                        accounts.verified_account(s, row["username"])
                    except NotAuthenticated:
                        verified = False
        finally:
            with self._lock:
                self._refreshing.discard(digest)
        if row is None or row["revoked"] or not row["active"] or row["expires_at"] <= now or not verified:
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
        from immunoguide.trial import accounts

        digest = self._digest(token)
        with self.engine.begin() as conn:
            accounts.revoke_token(conn, digest)
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
