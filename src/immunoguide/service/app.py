"""The FastAPI application: :func:`create_app` builds it over one trial store (SQLite or PostgreSQL).

The service is thin: ``/rules`` calls the pure rules, ``/trial`` the trial functions (with the logged-in user's
role and site, so that ``trial/`` authorises and blinds), ``/cds-services`` the CDS Hooks service, ``/auth`` the
user store. Errors are mapped to HTTP only in :mod:`immunoguide.service.errors`.

Every request first passes :class:`~immunoguide.service.edge.BodyGuard` (body size limit: 413; strict JSON:
duplicate keys, huge numbers, deep nesting refused with 422). Start-up (the lifespan) opens the trial store (with the
trial key of the environment, or of the ``store`` given), checks (or, with ``auto_upgrade``, creates and
initialises) its schema — the account tables are part of it —, reads the store's clock (the system clock on a real
store; a simulation store's simulated clock, :mod:`immunoguide.trial.clock`) and runs the allocation-list
verification (:func:`immunoguide.trial.randomization.verify_allocation_lists`): every finding is logged and shown at
``GET /trial/allocation-lists/verify``, and the service starts whatever they are (a list that fails its checks
refuses its own randomisations; everything else goes on). Last, the start-up heap is
frozen out of the garbage collector (:func:`_freeze_startup_heap`) so that full collections do not pause requests.

Examples
--------
>>> from fastapi.testclient import TestClient
>>> from immunoguide.trial.keys import TrialKey
>>> app = create_app(store=TrialStore("sqlite://", key=TrialKey.generate()), settings=ServiceSettings(auto_upgrade=True))
>>> with TestClient(app) as client:
...     client.get("/health").json()["status"]
'ok'
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from immunoguide.service._context import ServiceSettings, ServiceState
from immunoguide.service.auth import UserStore
from immunoguide.service.errors import install_error_handlers
from immunoguide.trial.store import TrialStore

__all__ = ["DASHBOARD_MODULE", "ServiceSettings", "app_from_env", "create_app"]

log = logging.getLogger("immunoguide.service")

#: Module whose ``router`` (an APIRouter) is included when it exists.
DASHBOARD_MODULE = "immunoguide.service.dashboard"

API_VERSION = "1.0.0"

_DESCRIPTION = """\
REST service of immunoguide: the clinical rules (SOFA, immune endotype, eligibility), every trial operation over the
trial store (screening, consent, classification, randomisation, kits, doses, follow-up, adverse events, unblinding,
exports) and an HL7 CDS Hooks `patient-view` service.

Log in at `POST /auth/token` and send `Authorization: Bearer <token>`. Roles are the trial roles; blinding and site
restriction are enforced by the trial store's read layer. Every error has the body
`{code, error, message, expected, got, where, field, todo, docs_url}`.
"""


def _dashboard_router() -> Any | None:
    """The dashboard's router when :data:`DASHBOARD_MODULE` exists (import errors inside it are not hidden)."""
    if importlib.util.find_spec(DASHBOARD_MODULE) is None:
        return None
    return importlib.import_module(DASHBOARD_MODULE).router


def create_app(
    db_url: str | None = None,
    *,
    secret: str | bytes | None = None,
    settings: ServiceSettings | None = None,
    store: TrialStore | None = None,
) -> FastAPI:
    """Build the service app.

    Parameters
    ----------
    db_url : str, optional
        Trial store URL (SQLite file, ``sqlite://`` in memory, or ``postgresql+psycopg://…``); default
        ``$IMMUNOGUIDE_DB_URL`` or ``sqlite:///immunoguide.db``.
    secret : str or bytes, optional
        Key of the bearer-token digests (keep it stable across restarts and workers so tokens stay valid).
    settings : ServiceSettings, optional
        Token lifetime, CDS protocols, clock, start-up checks.
    store : TrialStore, optional
        An already open store (tests); then ``db_url`` is ignored and the store is not disposed at shutdown.

    Returns
    -------
    FastAPI
    """
    cfg = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = store or TrialStore(db_url)
        try:
            if cfg.auto_upgrade:
                st.initialise(simulation=cfg.simulation_store)
            st.check_schema()
            users = UserStore(st, secret=secret, token_ttl=cfg.token_ttl, cache_s=cfg.token_cache_s)
            state = ServiceState(store=st, users=users, settings=cfg)
            from immunoguide.service.throttle import LoginThrottle
            from immunoguide.trial.clock import read_store_clock

            with st.session() as s:
                clock = read_store_clock(s)
            state.store_clock = clock if clock.mode != "wall" else None
            state.throttle = LoginThrottle(cfg.login_max_failures, cfg.login_window_s, cfg.login_lockout_s)
            if state.store_clock is not None:
                log.warning("store clock: %s (simulated time %s)", clock.to_dict(), state.now().isoformat())
            if cfg.verify_allocation_lists:
                # Reported, never blocking: a list that fails its checks refuses its own randomisations
                # (trial.randomize checks the list it draws from); every other list and function goes on.
                from immunoguide.trial.randomization import verify_allocation_lists

                with st.session() as s:
                    checks = verify_allocation_lists(s)
                state.allocation_checks = [c.to_dict() for c in checks]
                for c in checks:
                    (log.error if c.level == "error" else log.warning)("allocation lists: %s %s", c.id, c.message)
            app.state.service = state
            _freeze_startup_heap()
            yield
        finally:
            gc.unfreeze()  # the start-up heap goes back to the collector (tests start many apps in one process)
            app.state.service = None
            if store is None:
                st.dispose()

    app = FastAPI(
        title="immunoguide",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    from immunoguide.service.edge import BodyGuard

    app.add_middleware(BodyGuard, max_bytes=cfg.max_body_bytes, large_bytes=cfg.large_body_bytes,
                       large_paths=cfg.large_body_paths)

    from immunoguide.service import cds_hooks, routes_auth, routes_rules, routes_trial, smart

    @app.get("/health", tags=["meta"], summary="Liveness")
    async def health() -> dict[str, str]:
        """``{"status": "ok"}`` while the service runs (no authentication)."""
        return {"status": "ok"}

    app.include_router(routes_auth.router)
    app.include_router(routes_rules.router)
    app.include_router(routes_trial.router)
    app.include_router(cds_hooks.router)
    app.include_router(smart.router)  # the dashboard's SMART launch (EHR launch with PKCE)
    dashboard = _dashboard_router()
    if dashboard is not None:
        app.include_router(dashboard)
    return app


def _freeze_startup_heap() -> None:
    """Move every object alive after start-up out of the garbage collector's view (:func:`gc.freeze`).

    The imported modules, pydantic and FHIR model classes, SQLAlchemy metadata and criteria make a heap of a few
    hundred thousand long-lived objects; a full (generation-2) collection walks all of them and paused a worker for
    120–170 ms (measured), which was the ~1 % of requests stalling under load (benchmarks/RESULTS.md). Frozen objects are
    never collected (they live as long as the process anyway); collections then walk only request garbage.
    """
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` (``immunoguide serve``): store from ``$IMMUNOGUIDE_DB_URL``, token key from
    the variable named by ``$IMMUNOGUIDE_SECRET_ENV`` (default ``IMMUNOGUIDE_SECRET``), trusted EHRs from the TOML
    file ``$IMMUNOGUIDE_EHR_CONFIG`` (:func:`immunoguide.service.cds_security.load_ehr_settings`)."""
    import os

    secret = os.environ.get(os.environ.get("IMMUNOGUIDE_SECRET_ENV", "IMMUNOGUIDE_SECRET"))
    settings = None
    if os.environ.get("IMMUNOGUIDE_EHR_CONFIG"):  # trusted EHRs (CDS Hooks JWTs, fhirServer, SMART launch)
        from immunoguide.service.cds_security import load_ehr_settings

        settings = ServiceSettings(ehr=load_ehr_settings(os.environ["IMMUNOGUIDE_EHR_CONFIG"]))
    return create_app(os.environ.get("IMMUNOGUIDE_DB_URL"), secret=secret or None, settings=settings)
