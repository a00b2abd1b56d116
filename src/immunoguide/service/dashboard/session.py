"""Login state of the dashboard: the session cookie (the service's bearer token), the CSRF field derived from it,
the request context of a logged-in user, and the wrappers of every GET page and form POST (log-in check, CSRF
check, trial errors rendered as pages)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from immunoguide.errors import ImmunoguideError, NotAuthenticated, NotAuthorized
from immunoguide.service._context import ServiceState, service_state
from immunoguide.service.auth import Principal
from immunoguide.service.dashboard.forms import _Form, _read_form
from immunoguide.service.dashboard.templates import PREFIX, _html
from immunoguide.service.errors import error_body, status_for
from immunoguide.trial.access import PERMISSIONS, Actor, sees_arms

#: Name of the session cookie (it carries the service's bearer token).
COOKIE = "ig_dashboard"
_OK_MESSAGES = {
    "screened": "Patient screened; the eligibility result is in the screening log.",
    "consent": "Consent recorded; eligibility re-evaluated.",
    "labs": "Laboratory results stored.",
    "dose": "Dose recorded.",
    "followup": "Follow-up day recorded.",
    "ae": "Adverse event recorded.",
    "sae": "SAE report recorded.",
    "safetylabs": "Safety laboratory results recorded and graded (CTCAE v5.0).",
    "loggedout": "You are logged out.",
}


@dataclass(frozen=True)
class _Ctx:
    """One request of a logged-in user."""

    state: ServiceState
    principal: Principal
    token: str
    now: datetime

    @property
    def actor(self) -> Actor:
        return self.principal.actor

    @property
    def csrf(self) -> str:
        return _csrf_for(self.token)

    def can(self, permission: str) -> bool:
        """Whether the user's role holds ``permission`` (to show a form; ``trial/`` still decides)."""
        return self.actor.role in PERMISSIONS[permission]

    def base(self, **extra: Any) -> dict[str, Any]:
        """Template context every logged-in page receives."""
        a = self.actor
        out = {"user": {"name": a.user, "role": a.role, "site": a.site, "blinded": not sees_arms(a),
                        "demo": self.principal.demo},
               "csrf": self.csrf, "now": self.now, "is_dsmb": self.can("safety_signals"), "error": None,
               "ok": None, "page": ""}
        out.update(extra)
        return out

    def tx(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(session)`` in one store transaction."""
        with self.state.store.session() as s:
            return fn(s)


def _csrf_for(token: str) -> str:
    return hashlib.sha256(b"immunoguide-dashboard-csrf:" + token.encode("utf-8")).hexdigest()[:40]


async def _context(request: Request) -> _Ctx | None:
    st = service_state(request)
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 256:
        return None
    now = st.now()
    try:
        p = st.users.cached(token, now=now)
        if p is None:
            p = await run_in_threadpool(st.users.authenticate, token, now=now)
    except NotAuthenticated:
        return None
    return _Ctx(st, p, token, now)


def _to_login(request: Request) -> RedirectResponse:
    resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
    if request.cookies.get(COOKIE):
        resp.delete_cookie(COOKIE, path=PREFIX)
    return resp


def _error_page(ctx: _Ctx | None, exc: ImmunoguideError) -> HTMLResponse:
    status = status_for(exc)
    base: dict[str, Any] = (ctx.base() if ctx is not None
                            else {"user": None, "csrf": "", "is_dsmb": False, "ok": None, "page": ""})
    base["error"] = error_body(exc)
    return _html("error.html", status=status, **base)


async def _page(request: Request, build: Callable[[_Ctx], Response]) -> Response:
    """A GET page: log-in check, then ``build(ctx)`` in a worker thread; trial errors become an error page."""
    ctx = await _context(request)
    if ctx is None:
        return _to_login(request)
    try:
        return await run_in_threadpool(build, ctx)
    except NotAuthenticated:
        return _to_login(request)
    except ImmunoguideError as exc:
        return _error_page(ctx, exc)


async def _action(
    request: Request,
    do: Callable[[_Ctx, _Form], str],
    on_error: Callable[[_Ctx, ImmunoguideError], Response],
) -> Response:
    """A form POST: log-in and CSRF check, ``do(ctx, form)`` → redirect (303) to the URL it returns; a trial error
    re-renders the page with ``on_error`` (status from :func:`status_for`)."""
    ctx = await _context(request)
    if ctx is None:
        return _to_login(request)
    try:
        form = await _read_form(request)
        if not hmac.compare_digest(form.get("csrf") or "", ctx.csrf):
            raise NotAuthorized(expected="the form's security token", got="a missing or stale token",
                                where="form field csrf", todo="reload the page and submit the form again")
        location = await run_in_threadpool(do, ctx, form)
        return RedirectResponse(location, status_code=303)
    except NotAuthenticated:
        return _to_login(request)
    except ImmunoguideError as exc:
        try:
            return await run_in_threadpool(on_error, ctx, exc)
        except ImmunoguideError:
            return _error_page(ctx, exc)


def _ok_message(request: Request) -> str | None:
    return _OK_MESSAGES.get(request.query_params.get("ok", ""))
