"""Service state and FastAPI dependencies shared by the routers (not public)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from immunoguide.errors import UnknownCriteriaError
from immunoguide.protocols import Protocol, available_protocols, load_protocol
from immunoguide.service.auth import Principal, UserStore
from immunoguide.trial.access import Actor
from immunoguide.trial.store import TrialStore

if TYPE_CHECKING:
    from immunoguide.service.ehr_settings import EhrSettings

__all__ = [
    "ActorDep",
    "NowDep",
    "PrincipalDep",
    "ServiceSettings",
    "ServiceState",
    "bearer_scheme",
    "service_state",
    "shipped_protocol",
]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of one service instance.

    Attributes
    ----------
    token_ttl : timedelta
        Lifetime of a bearer token.
    token_cache_s : float
        Seconds a validated token is trusted without a database read.
    cds_protocols : tuple of str
        Protocols the CDS Hooks service evaluates (one card each).
    clock : callable
        Returns the current time (timezone-aware); tests pass a fixed clock. When left at the default (wall time),
        the store's own clock is used (:func:`immunoguide.trial.clock.read_store_clock`: the system clock on a real
        store, the simulated clock of a simulation store such as the demo's).
    verify_allocation_lists : bool
        Run the allocation-list verification at start-up and report its findings (log, ``allocation_checks``,
        ``GET /trial/allocation-lists/verify``); the service starts whatever they are.
    auto_upgrade : bool
        Create or upgrade the trial schema at start-up, initialising a new store with the store's trial key (else the
        store must already be initialised at the head revision).
    simulation_store : bool
        With ``auto_upgrade``, a new store is a simulation store (tests, demos, examples on a fixed ``clock``); by
        default it is a real store, where every event time must agree with the system clock.
    ehr : EhrSettings or None
        The EHRs trusted to call the CDS service with signed JWTs, query their FHIR servers and launch the
        dashboard as a SMART app (:mod:`immunoguide.service.cds_security`, :mod:`immunoguide.service.ehr_settings`); None: immunoguide
        tokens only.
    max_body_bytes : int
        Largest request body accepted (413 ``IG-E112`` above it; checked before the body is read in full).
    large_body_bytes : int, large_body_paths : tuple of str
        A larger limit for the routes that upload files (allocation lists).
    login_max_failures, login_window_s, login_lockout_s
        Failed-login throttling (:mod:`immunoguide.service.throttle`).
    """

    token_ttl: timedelta = timedelta(hours=8)
    token_cache_s: float = 30.0
    cds_protocols: tuple[str, ...] = ("immunosep-2025",)
    clock: Callable[[], datetime] = _utc_now
    verify_allocation_lists: bool = True
    auto_upgrade: bool = False
    simulation_store: bool = False
    ehr: EhrSettings | None = None
    max_body_bytes: int = 1024 * 1024
    large_body_bytes: int = 8 * 1024 * 1024
    large_body_paths: tuple[str, ...] = ("/trial/allocation-lists", "/cds-services")
    login_max_failures: int = 5
    login_window_s: float = 900.0
    login_lockout_s: float = 900.0


@dataclass
class ServiceState:
    """What the routes need: the trial store, the user store, the settings and the start-up checks."""

    store: TrialStore
    users: UserStore
    settings: ServiceSettings
    allocation_checks: list[dict[str, Any]] = field(default_factory=list)
    #: The store's clock, read at start-up (None: wall time)
    store_clock: Any = None
    #: Failed-login throttle (:mod:`immunoguide.service.throttle`)
    throttle: Any = None

    def now(self) -> datetime:
        """The current time: the configured clock, or — when that is the default wall clock — the store's clock."""
        if self.settings.clock is _utc_now and self.store_clock is not None:
            return self.store_clock.now(_utc_now())
        return self.settings.clock()

    def session(self) -> Iterator[Session]:
        """One trial-store transaction (commit on success, roll back on error)."""
        with self.store.session() as s:
            yield s


def service_state(request: Request) -> ServiceState:
    """The app's :class:`ServiceState` (set by the lifespan)."""
    st = getattr(request.app.state, "service", None)
    if st is None:  # pragma: no cover - only when used outside the lifespan
        raise RuntimeError("the service state is not initialised (run the app with its lifespan)")
    return st


bearer_scheme = HTTPBearer(auto_error=False, description="Token from POST /auth/token.")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The authenticated user (401 NotAuthenticated when the token is missing, unknown or expired)."""
    st = service_state(request)
    token = credentials.credentials if credentials is not None else None
    now = st.now()
    users = st.users
    hit = users.cached(token, now=now)
    if hit is not None:  # no database read, no worker thread
        return hit
    return await anyio.to_thread.run_sync(lambda: users.authenticate(token, now=now))


async def current_actor(principal: Annotated[Principal, Depends(current_principal)]) -> Actor:
    """The trial actor (user, role, site) of the authenticated user."""
    return principal.actor


def current_time(request: Request) -> datetime:
    """The service clock's current time."""
    return service_state(request).now()


PrincipalDep = Annotated[Principal, Depends(current_principal)]
ActorDep = Annotated[Actor, Depends(current_actor)]
NowDep = Annotated[datetime, Depends(current_time)]
StateDep = Annotated[ServiceState, Depends(service_state)]


@cache
def _shipped_ids() -> frozenset[str]:
    return frozenset(available_protocols())


def shipped_protocol(protocol_id: str) -> Protocol:
    """A protocol shipped with immunoguide (never a file path from a request).

    Raises UnknownCriteriaError for anything else.
    """
    pid = protocol_id.partition("@")[0]
    if pid not in _shipped_ids():
        raise UnknownCriteriaError(expected=f"a shipped protocol id {available_protocols()}", got=protocol_id,
                                   where="field protocol", todo="pick a shipped protocol id (GET /rules/protocols)",
                                   field="protocol")
    return load_protocol(protocol_id)
