"""The dashboard's routes (``/dashboard/…``): login and logout, static files, the pages, and one POST per form,
each calling one :mod:`immunoguide.trial` function inside :func:`~.session._action`."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from immunoguide import trial
from immunoguide.errors import ImmunoguideError, InputError, NotAuthorized
from immunoguide.service._context import service_state, shipped_protocol
from immunoguide.service.dashboard.forms import (
    _SCREEN_FLAGS,
    _SOFA_BOOL_FIELDS,
    _SOFA_FIELDS,
    _Form,
    _lab_record,
    _read_form,
    _safety_lab_record,
)
from immunoguide.service.dashboard.pages import _dsmb_page, _patient_page, _site_page, _summary, _trial_page
from immunoguide.service.dashboard.session import (
    COOKIE,
    _action,
    _context,
    _Ctx,
    _error_page,
    _ok_message,
    _page,
    _to_login,
)
from immunoguide.service.dashboard.templates import DEFAULT_PROTOCOL, PREFIX, _html
from immunoguide.service.errors import error_body, status_for
from immunoguide.trial.access import SITE_ROLES

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    """The role's start page (site staff: site view; DSMB: DSMB view; others: trial view)."""
    ctx = await _context(request)
    if ctx is None:
        return _to_login(request)
    role = ctx.actor.role
    target = "site" if role in SITE_ROLES else "dsmb" if ctx.can("safety_signals") else "trial"
    return RedirectResponse(f"{PREFIX}/{target}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    """The login form."""
    return _html("login.html", user=None, csrf="", is_dsmb=False, error=None, ok=_ok_message(request), page="login",
                 username="")


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the password; set the session cookie (the service's bearer token) and go to the start page."""
    st = service_state(request)
    now = st.now()
    username = ""
    try:
        form = await _read_form(request)
        username = (form.get("username") or "")[:64]
        password = form.get("password") or ""
        from immunoguide.service.routes_auth import throttled_login

        token, p = await throttled_login(st, username, password, now, request.client.host if request.client else None)
    except ImmunoguideError as exc:
        return _html("login.html", status=status_for(exc), user=None, csrf="", is_dsmb=False, page="login",
                     error=error_body(exc), ok=None, username=username)
    resp = RedirectResponse(f"{PREFIX}/", status_code=303)
    resp.set_cookie(COOKIE, token, max_age=max(1, int((p.expires_at - now).total_seconds())), path=PREFIX,
                    httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Revoke the token and clear the cookie."""
    ctx = await _context(request)
    resp = RedirectResponse(f"{PREFIX}/login?ok=loggedout", status_code=303)
    resp.delete_cookie(COOKIE, path=PREFIX)
    if ctx is None:
        return resp
    try:
        form = await _read_form(request)
    except ImmunoguideError as exc:
        return _error_page(ctx, exc)
    if not hmac.compare_digest(form.get("csrf") or "", ctx.csrf):
        return _error_page(ctx, NotAuthorized(expected="the form's security token", got="a missing or stale token",
                                              where="form field csrf", todo="reload the page and log out again"))
    await run_in_threadpool(ctx.state.users.revoke, ctx.token)
    return resp


_STATIC_NAME = re.compile(r"^[a-z0-9_-]{1,64}\.(css|svg)$")
_STATIC_TYPES = {"css": "text/css; charset=utf-8", "svg": "image/svg+xml"}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The dashboard's own CSS (no external resources)."""
    m = _STATIC_NAME.match(name)
    f = resources.files("immunoguide.service") / "static" / name
    if m is None or not f.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(f.read_bytes(), media_type=_STATIC_TYPES[m.group(1)],
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/site", response_class=HTMLResponse)
async def site_view(request: Request) -> Response:
    """The site's patients (site roles: own site; other roles: every site they may see)."""
    ok = _ok_message(request)
    return await _page(request, lambda ctx: _site_page(ctx, ok=ok))


@router.get("/trial", response_class=HTMLResponse)
async def trial_view(request: Request) -> Response:
    """Recruitment, screening log, CONSORT counts as the role may see them."""
    return await _page(request, _trial_page)


@router.get("/dsmb", response_class=HTMLResponse)
async def dsmb_view(request: Request) -> Response:
    """Unblinded view (DSMB only; others get 403 from ``trial.safety_signals``)."""
    return await _page(request, _dsmb_page)


@router.get("/patients/{code}", response_class=HTMLResponse)
async def patient_page(code: str, request: Request) -> Response:
    """One patient: plots, calendar, forms."""
    ok = _ok_message(request)
    return await _page(request, lambda ctx: _patient_page(ctx, code, ok=ok))


def _patient_url(code: str, ok: str) -> str:
    return f"{PREFIX}/patients/{quote(code, safe='')}?ok={ok}"


def _on_patient_error(code: str) -> Callable[[_Ctx, ImmunoguideError], Response]:
    return lambda ctx, exc: _patient_page(ctx, code, error=exc, status=status_for(exc))


@router.post("/patients", response_class=HTMLResponse)
async def screen(request: Request) -> Response:
    """Screen a patient (site staff, own site)."""
    saved: dict[str, str] = {}

    def do(ctx: _Ctx, form: _Form) -> str:
        saved.update({k: v for k, v in form._f.items() if k != "csrf"})
        code = form.text("code")
        site = ctx.actor.site or form.text("site")
        record: dict[str, Any] = {}
        for name in ("sex", "infection_source", "admission_source"):
            if form.get(name):
                record[name] = form.get(name)
        for name in ("age_years", "anc_per_mm3"):
            v = form.number(name)
            if v is not None:
                record[name] = v
        for name in ("sofa_total", "sofa_admission", "apache_ii_points", "charlson_index_points"):
            v = form.integer(name)
            if v is not None:
                record[name] = v
        onset = form.time("sepsis3_onset_time")
        if onset is not None:
            record["sepsis3_onset_time"] = onset
        for name, _ in _SCREEN_FLAGS:
            v = form.yes_no(name)
            if v is not None:
                record[name] = v
        label = shipped_protocol(form.get("protocol") or DEFAULT_PROTOCOL).label
        ctx.tx(lambda s: trial.screen(s, code, site, record, actor=ctx.actor, now=ctx.now, protocol=label))
        return _patient_url(code, "screened")

    return await _action(request, do, lambda ctx, exc: _site_page(ctx, error=exc, status=status_for(exc),
                                                                   form=saved))


@router.post("/patients/{code}/consent", response_class=HTMLResponse)
async def consent(code: str, request: Request) -> Response:
    """Record consent (or its refusal)."""
    def do(ctx: _Ctx, form: _Form) -> str:
        given_by, signed = form.text("given_by"), form.required_time("signed_at")
        ctx.tx(lambda s: trial.record_consent(s, code, given_by, signed, actor=ctx.actor, now=ctx.now))
        return _patient_url(code, "consent")

    return await _action(request, do, _on_patient_error(code))


@router.post("/patients/{code}/labs", response_class=HTMLResponse)
async def labs(code: str, request: Request) -> Response:
    """Enter ferritin / mHLA-DR; before randomisation this classifies the endotype."""
    def do(ctx: _Ctx, form: _Form) -> str:
        rec = _lab_record(form)
        ctx.tx(lambda s: trial.enter_labs(s, code, rec, actor=ctx.actor, now=ctx.now))
        return _patient_url(code, "labs")

    return await _action(request, do, _on_patient_error(code))


@router.get("/patients/{code}/randomize", response_class=HTMLResponse)
async def randomize_confirm(code: str, request: Request) -> Response:
    """Confirmation before randomising: patient, stratum, eligibility, time left in the window."""
    def build(ctx: _Ctx) -> HTMLResponse:
        summary = ctx.tx(lambda s: _summary(s, code, ctx))
        pv = summary["pv"]
        return _html("randomize_confirm.html", **ctx.base(page="site", code=code, pv=pv, summary=summary))

    return await _page(request, build)


@router.post("/patients/{code}/randomize", response_class=HTMLResponse)
async def randomize(code: str, request: Request) -> Response:
    """Randomise (the stratum confirmed on the confirmation page must be the patient's)."""
    def do(ctx: _Ctx, form: _Form) -> str:
        stratum = form.text("stratum")
        ctx.tx(lambda s: trial.randomize(s, code, actor=ctx.actor, now=ctx.now, stratum=stratum))
        return f"{PREFIX}/patients/{quote(code, safe='')}/randomised"

    return await _action(request, do, _on_patient_error(code))


@router.get("/patients/{code}/randomised", response_class=HTMLResponse)
async def randomised(code: str, request: Request) -> Response:
    """The randomisation result: randomisation number, stratum and the kit numbers to dispense."""
    def build(ctx: _Ctx) -> HTMLResponse:
        def read(s: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            return trial.patient_view(s, code, actor=ctx.actor), trial.kits_view(s, code, actor=ctx.actor)

        pv, kits = ctx.tx(read)
        return _html("randomised.html", **ctx.base(page="site", code=code, pv=pv, rnd=pv["randomisation"],
                                                     kits=kits["kits"]))

    return await _page(request, build)


@router.post("/patients/{code}/doses", response_class=HTMLResponse)
async def dose(code: str, request: Request) -> Response:
    """Record a dose given from the IV or SC kit."""
    def do(ctx: _Ctx, form: _Form) -> str:
        kit, given_at, number = form.text("kit"), form.required_time("given_at"), form.integer("number")
        note = form.get("note")
        late = form.get("late_entry_reason")
        ctx.tx(lambda s: trial.record_dose(s, code, kit, given_at, actor=ctx.actor, now=ctx.now, number=number,
                                           note=note, late_entry_reason=late))
        return _patient_url(code, "dose")

    return await _action(request, do, _on_patient_error(code))


@router.post("/patients/{code}/followup", response_class=HTMLResponse)
async def followup(code: str, request: Request) -> Response:
    """Record one follow-up day: SOFA (total or inputs), labs, infection assessment, vital status."""
    def do(ctx: _Ctx, form: _Form) -> str:
        day = form.integer("day")
        if day is None:
            raise InputError(expected="a study day", got=None, where="form field day", todo="choose the day",
                             field="day")
        inputs: dict[str, Any] = {}
        for name, _, _ in _SOFA_FIELDS:
            v = form.integer(name) if name == "gcs" else form.number(name)
            if v is not None:
                inputs[name] = v
        for name, _ in _SOFA_BOOL_FIELDS:
            b = form.yes_no(name)
            if b is not None:
                inputs[name] = b
        labs_rec = _lab_record(form)
        kwargs: dict[str, Any] = {
            "assessed_at": form.time("assessed_at"), "sofa_total": form.integer("sofa_total"),
            "sofa_inputs": inputs or None, "labs": labs_rec or None,
            "infection_assessment": form.get("infection_assessment"), "vital_status": form.get("vital_status"),
            "death_at": form.time("death_at"), "late_entry_reason": form.get("late_entry_reason"),
        }
        ctx.tx(lambda s: trial.record_followup(s, code, day, actor=ctx.actor, now=ctx.now, **kwargs))
        return _patient_url(code, "followup")

    return await _action(request, do, _on_patient_error(code))


@router.post("/patients/{code}/safety-labs", response_class=HTMLResponse)
async def safety_labs(code: str, request: Request) -> Response:
    """Record one draw's safety laboratory results (graded by CTCAE v5.0)."""
    def do(ctx: _Ctx, form: _Form) -> str:
        rec, late = _safety_lab_record(form), form.get("late_entry_reason")
        ctx.tx(lambda s: trial.record_safety_labs(s, code, rec, actor=ctx.actor, now=ctx.now, late_entry_reason=late))
        return _patient_url(code, "safetylabs") + "#safety-labs"

    return await _action(request, do, _on_patient_error(code))


@router.post("/patients/{code}/adverse-events/{ae_id}/reports", response_class=HTMLResponse)
async def sae_report(code: str, ae_id: int, request: Request) -> Response:
    """Record the initial (24 h) or full (15 days) report of a serious adverse event."""
    def do(ctx: _Ctx, form: _Form) -> str:
        kind, reported_at, late = form.text("kind"), form.required_time("reported_at"), form.get("late_entry_reason")
        ctx.tx(lambda s: trial.report_sae(s, code, ae_id, kind, reported_at, actor=ctx.actor, now=ctx.now,
                                          late_entry_reason=late))
        return _patient_url(code, "sae") + "#adverse-events"

    return await _action(request, do, _on_patient_error(code))


@router.post("/patients/{code}/adverse-events", response_class=HTMLResponse)
async def adverse_event(code: str, request: Request) -> Response:
    """Record an adverse event (serious ones start the SAE reporting clocks)."""
    def do(ctx: _Ctx, form: _Form) -> str:
        serious = form.yes_no("serious")
        if serious is None:
            raise InputError(expected="serious yes or no", got=None, where="form field serious",
                             todo="say whether the event is serious", field="serious")
        kwargs: dict[str, Any] = {
            "term": form.text("term"), "onset_at": form.required_time("onset_at"),
            "grade": form.required_integer("grade"), "serious": serious, "relatedness": form.text("relatedness"),
            "outcome": form.text("outcome"), "aware_at": form.time("aware_at"),
            "late_entry_reason": form.get("late_entry_reason"),
        }
        ctx.tx(lambda s: trial.record_adverse_event(s, code, actor=ctx.actor, now=ctx.now, **kwargs))
        return _patient_url(code, "ae") + "#adverse-events"

    return await _action(request, do, _on_patient_error(code))
