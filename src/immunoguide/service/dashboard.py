"""The web dashboard: server-rendered pages over the same trial functions as the REST routes.

Pages (``/dashboard/…``, Jinja2 templates in ``service/templates``, CSS in ``service/static``; no JavaScript, no
network resources):

``/dashboard/site``
    The site's patients: day of study, endotype and its history, alerts, eligibility, doses due today, missed
    doses, visit tasks, adverse events; screening form (with APACHE II, Charlson and mechanical ventilation);
    randomise action with a confirmation page whose result shows the randomisation number and the **kit numbers
    only**.
``/dashboard/patients/{code}``
    One patient: alerts (stratum switch, reversal, pending assay against the window), SOFA trajectory by
    component (inline SVG), biomarker timeline with the protocol's cut-offs drawn (ferritin, mHLA-DR; thresholds
    read from the protocol's classification and reversal rules), serial endotypes from the randomisation stratum
    with every sample (visit day or not) and pending samples, safety laboratory results with their CTCAE v5.0
    grades, the 15-day regimen calendar (given / late / missed / pending), forms for consent, labs, safety labs,
    doses, follow-up and adverse events (CTCAE terms offered as a list; free text is refused); each entry form has
    a field for the reason of a late entry (required more than 24 h after the event: :mod:`immunoguide.trial.clock`).
``/dashboard/trial``
    Recruitment by site and month (table and bar chart), screening log, CONSORT counts, assay turnaround per site
    and laboratory against the window, alerts — as the role may see them.
``/dashboard/dsmb``
    The unblinded DSMB view (role ``dsmb`` only): CONSORT by arm, arms of the randomised patients, safety signals
    on coded data with the DSMB's statistical rule (risk difference with its interval, posterior probability),
    alerts, worst safety-lab grades by arm.

``now`` is the service clock, which is the **store's clock** when the service runs on the default clock: the system
clock on a real store; a simulation store's simulated clock (the demo's, so study days and windows are those of its
data).

Authentication: ``POST /dashboard/login`` checks the password with the service's
:class:`~immunoguide.service.auth.UserStore` and puts the **same bearer token** the REST API issues into the cookie
``ig_dashboard`` (HttpOnly, SameSite=Strict, Path=/dashboard, Secure over HTTPS, expiring with the token); logout
revokes the token. Every form carries a CSRF field derived from the token (checked in constant time) on top of
SameSite=Strict.

Every page and action calls :mod:`immunoguide.trial` functions with the logged-in user's
:class:`~immunoguide.trial.access.Actor` and the service clock's ``now`` inside one store transaction, so
authorisation, site restriction and blinding happen in ``trial/`` (its role-aware read layer): the pages render
only what those functions return and never show a kit's label (its text names every content a route can hold).
A trial error becomes an HTML page (or the page re-rendered with an error banner) with the HTTP status of
:func:`immunoguide.service.errors.status_for`; a missing or expired login redirects to the login page.

Examples
--------
>>> _parse_time("2025-03-03T10:00+01:00", "given_at").isoformat()
'2025-03-03T10:00:00+01:00'
>>> _number_or_text("<2000"), _number_or_text("820"), _number_or_text("6.5")
('<2000', 820, 6.5)
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from immunoguide import trial
from immunoguide.errors import ImmunoguideError, InputError, NotAuthenticated, NotAuthorized
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.service._context import ServiceState, service_state, shipped_protocol
from immunoguide.service.auth import Principal
from immunoguide.service.errors import error_body, status_for
from immunoguide.trial.access import PERMISSIONS, SITE_ROLES, Actor, sees_arms

__all__ = ["COOKIE", "router"]

#: Name of the session cookie (it carries the service's bearer token).
COOKIE = "ig_dashboard"
PREFIX = "/dashboard"
DEFAULT_PROTOCOL = "immunosep-2025"
_MAX_FORM_BYTES = 64 * 1024

router = APIRouter(prefix=PREFIX, include_in_schema=False)

#: Display names of the biomarker concepts (presentation only; thresholds come from the protocol).
_CONCEPT_NAMES = {"ferritin_ng_per_ml": "Ferritin", "hla_dr_per_monocyte": "mHLA-DR"}
#: SOFA components in the order they are stacked.
_SOFA_COMPONENTS = ("respiration", "coagulation", "liver", "cardiovascular", "cns", "renal")
_SOFA_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2")
#: SOFA input fields offered on the follow-up form (SofaInputs fields, canonical units in the names).
_SOFA_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("pao2_mmhg", "PaO2", "mmHg"),
    ("fio2_fraction", "FiO2", "fraction 0.21-1"),
    ("platelets_10e3_per_ul", "Platelets", "10^3/uL"),
    ("bilirubin_mg_per_dl", "Bilirubin", "mg/dL"),
    ("map_mmhg", "MAP", "mmHg"),
    ("norepinephrine_ug_kg_min", "Norepinephrine", "ug/kg/min"),
    ("dopamine_ug_kg_min", "Dopamine", "ug/kg/min"),
    ("dobutamine_ug_kg_min", "Dobutamine", "ug/kg/min"),
    ("epinephrine_ug_kg_min", "Epinephrine", "ug/kg/min"),
    ("gcs", "GCS", "3-15"),
    ("creatinine_mg_per_dl", "Creatinine", "mg/dL"),
    ("urine_output_ml_per_day", "Urine output", "mL/day"),
)
_SOFA_BOOL_FIELDS = (("respiratory_support", "Respiratory support (IMV/NIV)"),)
#: Safety laboratory analytes of the form: (field prefix, label, units offered).
_SAFETY_ANALYTES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hemoglobin", "Haemoglobin", ("g/dL", "g/L")),
    ("platelets", "Platelets", ("10^9/L", "10^3/uL", "/uL")),
    ("neutrophils", "Neutrophils", ("10^9/L", "/mm3")),
    ("lymphocytes", "Lymphocytes", ("10^9/L", "/mm3")),
    ("bilirubin", "Bilirubin", ("umol/L", "mg/dL")),
    ("creatinine", "Creatinine", ("umol/L", "mg/dL")),
    ("ast", "AST", ("U/L", "ukat/L")),
    ("alt", "ALT", ("U/L", "ukat/L")),
)
_SCREEN_FLAGS = (
    ("covid19", "COVID-19"),
    ("mechanical_ventilation", "Mechanical ventilation"),
    ("stage_iv_malignancy", "Stage IV malignancy"),
    ("dnr_order", "Do-not-resuscitate order"),
    ("bsi_skin_commensal_or_catheter_related", "Bacteremia: skin commensal or catheter-related"),
    ("unwilling_to_become_pregnant", "Women: unwilling to become pregnant"),
)
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
_DOSE_STATUS_TEXT = {"on_time": "given", "early": "given early", "late": "given late", "missed": "missed",
                     "pending": "pending"}

_PLOT_LOCK = threading.Lock()
_CMP = {"<=": "≤", ">=": "≥"}


# ---------------------------------------------------------------------------------------------------------------
# templates


def _fmt_time(value: Any) -> str:
    """ISO time (or datetime) → ``2025-03-03 10:00 UTC``; None → an em dash."""
    if value is None or value == "":
        return "—"
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        return t.strftime("%Y-%m-%d %H:%M")
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_hm(value: Any) -> str:
    """ISO time → ``14:30`` (UTC)."""
    return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%H:%M")


def _fmt_eligible(value: Any) -> str:
    return {True: "eligible", False: "not eligible"}.get(value, "undetermined")


def _fmt_num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("immunoguide.service", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = _fmt_time
    env.filters["hm"] = _fmt_hm
    env.filters["eligible"] = _fmt_eligible
    env.filters["num"] = _fmt_num
    env.filters["seg"] = lambda s: quote(str(s), safe="")
    env.globals["prefix"] = PREFIX
    env.globals["dose_status_text"] = _DOSE_STATUS_TEXT
    return env


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _env().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)


# ---------------------------------------------------------------------------------------------------------------
# login state


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


class _Form:
    """An ``application/x-www-form-urlencoded`` body (last value of each field), with typed getters that raise
    :class:`~immunoguide.errors.InputError` naming the field."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self._f = {k: v[-1].strip() for k, v in fields.items() if v}

    def get(self, name: str) -> str | None:
        v = self._f.get(name)
        return v if v else None

    def text(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise InputError(expected=f"a value for {name}", got=None, where=f"form field {name}",
                             todo="fill in the field", field=name)
        return v

    def number(self, name: str) -> float | None:
        v = self.get(name)
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            raise InputError(expected=f"a number for {name}", got=v, where=f"form field {name}",
                             todo="enter a number (decimal point '.')", field=name) from None

    def integer(self, name: str) -> int | None:
        v = self.get(name)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise InputError(expected=f"a whole number for {name}", got=v, where=f"form field {name}",
                             todo="enter a whole number", field=name) from None

    def yes_no(self, name: str) -> bool | None:
        v = self.get(name)
        if v is None or v == "unknown":
            return None
        if v in ("yes", "no"):
            return v == "yes"
        raise InputError(expected=f"yes, no or unknown for {name}", got=v, where=f"form field {name}",
                         todo="choose yes, no or unknown", field=name)

    def time(self, name: str) -> datetime | None:
        v = self.get(name)
        return None if v is None else _parse_time(v, name)

    def required_time(self, name: str) -> datetime:
        return _parse_time(self.text(name), name)

    def required_integer(self, name: str) -> int:
        v = self.integer(name)
        if v is None:
            raise InputError(expected=f"a whole number for {name}", got=None, where=f"form field {name}",
                             todo="fill in the field", field=name)
        return v


def _parse_time(text: str, field: str) -> datetime:
    """An ISO 8601 date-time from a form (the trial functions refuse one without a UTC offset)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InputError(expected=f"an ISO 8601 date-time with UTC offset for {field}", got=text,
                         where=f"form field {field}", todo="write e.g. 2025-03-03T08:30+01:00", field=field) from None


def _number_or_text(v: str) -> int | float | str:
    """A lab value: a number (an integer stays one), or the text as reported (censored values such as ``<2000``)."""
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


async def _read_form(request: Request) -> _Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InputError(expected="an HTML form (application/x-www-form-urlencoded)", got=ctype or None,
                         where="request body", todo="submit the page's form")
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise InputError(expected=f"a form of at most {_MAX_FORM_BYTES} bytes", got=f"{len(body)} bytes",
                         where="request body", todo="shorten the entries")
    try:
        return _Form(parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(expected="a UTF-8 form body", got=str(exc)[:100], where="request body",
                         todo="submit the page's form") from None


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


# ---------------------------------------------------------------------------------------------------------------
# data for the pages (every record comes from a trial function)


@cache
def _protocol(label: str) -> Protocol:
    return load_protocol(label)


def _iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _lab_results(session: Any, code: str, actor: Actor) -> list[dict[str, Any]]:
    """The patient's biomarker results (canonical units), after the trial's ``view`` check for the actor."""
    from immunoguide.trial.access import lab_results_view

    return [{"concept": r.concept, "text": r.value.text, "lower": r.value.lower, "upper": r.value.upper,
             "method": r.method, "sample_time": r.sample_time} for r in lab_results_view(session, code, actor=actor)]


def _study_day(randomised_at: datetime, now: datetime) -> int:
    """Study day (day 0 = the first 24 h after randomisation, as in ``trial.followup``)."""
    return int((now - randomised_at) // timedelta(days=1))


def _window(proto: Protocol, onset: datetime | None, now: datetime) -> dict[str, Any] | None:
    from immunoguide.trial.randomization import randomization_window

    w = randomization_window(proto)
    if w is None or onset is None:
        return None
    cid, comparator, hours, _ = w
    elapsed = (now - onset).total_seconds() / 3600.0
    return {"criterion": cid, "rule": f"first dose {comparator} {hours:g} h after Sepsis-3",
            "elapsed_h": elapsed, "left_h": hours - elapsed, "open": 0 <= elapsed < hours}


def _endotype_history(pv: Mapping[str, Any], fv: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Baseline classification (the randomisation stratum), then the serial endotype of every day with samples
    (visit day or not) after the baseline."""
    out: list[dict[str, Any]] = []
    cl = pv.get("classification")
    if cl is not None:
        out.append({"when": "baseline", "at": cl["classified_at"], "endotype": cl["endotype"], "visit_day": None})
    if fv is not None:
        base = fv["serial"].get("baseline_day")
        for d in fv["serial"]["days"]:
            if d["endotype"] is not None and (base is None or d["day"] > base):
                out.append({"when": f"day {d['day']}", "at": d["start"], "endotype": d["endotype"],
                            "visit_day": d.get("visit_day")})
    return out


def _summary(session: Any, code: str, ctx: _Ctx) -> dict[str, Any]:
    """One row of the site view."""
    actor, now = ctx.actor, ctx.now
    pv = trial.patient_view(session, code, actor=actor)
    proto = _protocol(pv["protocol"])
    rnd = pv["randomisation"]
    row: dict[str, Any] = {"pv": pv, "code": code, "tasks": [], "due_today": [], "missed": [], "late": 0,
                           "study_day": None, "followup_complete": False, "window": None, "history": [], "aes": 0,
                           "open_sae": 0,
                           "last_eval": pv["screening_log"][-1] if pv["screening_log"] else None,
                           "can_randomise": False}
    active = pv["status"] not in ("withdrawn",) and not pv["data_removed"]
    fv = None
    if rnd is not None:
        row["study_day"] = _study_day(datetime.fromisoformat(rnd["randomised_at"]), now)
        dv = trial.dosing_view(session, code, actor=actor, now=now)
        fv = trial.followup_view(session, code, actor=actor, now=now)
        aes = trial.adverse_events_view(session, code, actor=actor, now=now)
        row["aes"] = len(aes)
        row["open_sae"] = sum(1 for a in aes if a.get("sae_clocks") and any(
            c["status"] in ("pending", "overdue") for k, c in a["sae_clocks"].items() if k != "source"))
        end_of_day = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
        for d in dv["doses"]:
            if d["status"] == "pending" and datetime.fromisoformat(d["due"]) < end_of_day:
                row["due_today"].append(d)
            elif d["status"] == "missed":
                row["missed"].append(d)
            elif d["status"] == "late":
                row["late"] += 1
        if not dv["started"]:
            row["tasks"].append("give and record the first dose (starts the schedule)")
        if active:
            days = trial.followup_days(proto)
            recorded = {d["day"] for d in fv["days"]}
            today = row["study_day"]
            row["followup_complete"] = bool(days) and today > max(days)
            if today in days and today not in recorded:
                row["tasks"].append(f"day {today}: {', '.join(i for i in days[today] if i != 'visit')}")
            for d in fv["overdue_days"]:
                row["tasks"].append(f"overdue: day {d} ({', '.join(i for i in days[d] if i != 'visit')})")
    elif active and pv["status"] == "screening":
        row["window"] = _window(proto, _iso(pv["sepsis3_onset"]), now)
        if pv["consent"] is None:
            row["tasks"].append("record consent")
        if pv["classification"] is None or pv["stratum"] is None:
            row["tasks"].append("enter ferritin / mHLA-DR (classification)")
        if pv["consent"] is not None and pv["stratum"] is not None:
            row["can_randomise"] = ctx.can("randomize")
            row["tasks"].append("randomise")
    row["history"] = _endotype_history(pv, fv)
    from immunoguide.trial.monitoring import patient_alerts

    row["alerts"] = [] if pv["data_removed"] else patient_alerts(session, code, actor=actor, now=now)
    return row


def _site_page(ctx: _Ctx, *, error: ImmunoguideError | None = None, ok: str | None = None,
               status: int = 200, form: Mapping[str, str] | None = None) -> HTMLResponse:
    def build(s: Any) -> list[dict[str, Any]]:
        return [_summary(s, e["patient"], ctx) for e in trial.screening_log(s, actor=ctx.actor)]

    rows = ctx.tx(build)
    proto = shipped_protocol(DEFAULT_PROTOCOL)
    return _html("site.html", status=status, **ctx.base(
        page="site", rows=rows, ok=ok, error=error_body(error) if error else None,
        can_screen=ctx.can("screen") and ctx.actor.role in SITE_ROLES, site=ctx.actor.site,
        infection_sources=proto.vocabularies.infection_sources, flags=_SCREEN_FLAGS,
        default_time=_default_time(ctx.now), form=dict(form or {}),
    ))


def _default_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M+00:00")


# -- plots ------------------------------------------------------------------------------------------------------


def _svg(fig: Any, salt: str) -> Markup:
    """A matplotlib figure as an inline ``<svg>`` element (text kept as text, ids unique per ``salt``)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "immunoguide"})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib numbers its element ids per figure (figure_1, axes_1 …): prefix them so that several inline SVGs
    # on one page keep unique ids and their references (clip paths, markers) resolve inside their own SVG
    text = re.sub(r'(\sid=")', rf"\g<1>{salt}-", text)
    text = text.replace("url(#", f"url(#{salt}-").replace('href="#', f'href="#{salt}-')
    return Markup(text.replace("<svg ", '<svg role="img" focusable="false" ', 1))


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _style_axes(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.tick_params(labelsize=8)


def sofa_plot(days: list[Mapping[str, Any]], *, salt: str = "sofa") -> Markup | None:
    """SOFA trajectory over study days: components stacked (days entered as inputs) and the total of every
    recorded day (entered totals included). None when no SOFA is recorded.

    Parameters
    ----------
    days : list of dict
        ``followup_view(...)["days"]`` (``day``, ``sofa_total``, ``sofa_components``).
    """
    scored = [d for d in days if d.get("sofa_total") is not None]
    if not scored:
        return None
    with _PLOT_LOCK:
        fig = _figure(10.0, 3.4)
        ax = fig.add_subplot()
        comp_days = [d for d in scored if d.get("sofa_components")]
        if comp_days:
            xs = [d["day"] for d in comp_days]
            ys = [[(d["sofa_components"] or {}).get(c) or 0 for d in comp_days] for c in _SOFA_COMPONENTS]
            ax.stackplot(xs, ys, labels=[c.capitalize() if c != "cns" else "CNS" for c in _SOFA_COMPONENTS],
                         colors=_SOFA_COLOURS, alpha=0.85, step=None)
        ax.plot([d["day"] for d in scored], [d["sofa_total"] for d in scored], color="#222222", marker="o",
                markersize=4, linewidth=1.4, label="Total SOFA")
        for d in scored:
            ax.annotate(str(d["sofa_total"]), (d["day"], d["sofa_total"]), textcoords="offset points",
                        xytext=(0, 5), ha="center", fontsize=7)
        top = max(d["sofa_total"] for d in scored)
        ax.set_ylim(0, min(24, max(6, top + 3)))
        lo, hi = min(d["day"] for d in scored), max(d["day"] for d in scored)
        ax.set_xlim(lo - 0.5, max(hi + 0.5, lo + 2))
        ax.set_xlabel("Study day (day 0 = first 24 h after randomisation)", fontsize=8)
        ax.set_ylabel("SOFA points", fontsize=8)
        ax.set_title("SOFA trajectory by component", fontsize=9, loc="left")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style_axes(ax)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _svg(fig, salt)


def _cutoffs(proto: Protocol) -> dict[str, list[tuple[float, str, str]]]:
    """Concept → [(threshold, unit, label)] from the protocol's classification and reversal rules."""
    spec = proto.classification
    found: dict[str, dict[float, tuple[str, list[str]]]] = defaultdict(dict)
    if spec is None:
        return {}
    for rule in spec.endotypes:
        for c in rule.all_of:
            found[c.concept].setdefault(c.threshold, (c.unit, []))[1].append(
                f"{rule.name} if {_CMP.get(c.comparator, c.comparator)}")
    for rev in spec.reversals:
        for c in rev.all_of:
            found[c.concept].setdefault(c.threshold, (c.unit, []))[1].append(
                f"{rev.endotype} reversal if {_CMP.get(c.comparator, c.comparator)}")
    return {concept: [(t, unit, f"{t:g} {unit}: " + "; ".join(names)) for t, (unit, names) in sorted(ts.items())]
            for concept, ts in found.items()}


def biomarker_plot(labs: list[Mapping[str, Any]], proto: Protocol, anchor: datetime, anchor_name: str, *,
                   salt: str = "bio") -> Markup | None:
    """Ferritin and mHLA-DR over time (days from ``anchor``) with the protocol's cut-offs as labelled lines.

    A censored result (``<2000``, ``>15000``) is drawn at its bound with a triangle pointing to the open side.
    None when there is no result.
    """
    cut = _cutoffs(proto)
    concepts = [c for c in _CONCEPT_NAMES if c in cut or any(r["concept"] == c for r in labs)]
    if not labs or not concepts:
        return None
    with _PLOT_LOCK:
        fig = _figure(10.0, 1.0 + 2.0 * len(concepts))
        axes = fig.subplots(len(concepts), 1, sharex=True, squeeze=False)[:, 0]
        xs_all: list[float] = []
        for ax, concept in zip(axes, concepts, strict=True):
            rows = sorted((r for r in labs if r["concept"] == concept and r["sample_time"] is not None),
                          key=lambda r: r["sample_time"])
            pts = []
            for r in rows:
                x = (r["sample_time"] - anchor) / timedelta(days=1)
                if r["lower"] is not None and r["upper"] is not None:
                    pts.append((x, (r["lower"] + r["upper"]) / 2, "o"))
                elif r["upper"] is not None:
                    pts.append((x, r["upper"], "v"))
                else:
                    pts.append((x, r["lower"], "^"))
            xs_all.extend(p[0] for p in pts)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#1f4e79", linewidth=1.2)
                for marker in ("o", "v", "^"):
                    sel = [p for p in pts if p[2] == marker]
                    if sel:
                        ax.plot([p[0] for p in sel], [p[1] for p in sel], linestyle="none", marker=marker,
                                color="#1f4e79", markersize=5)
            unit = "ng/mL" if concept == "ferritin_ng_per_ml" else "AB/c"
            values = [p[1] for p in pts]
            for i, (t, u, label) in enumerate(cut.get(concept, [])):
                unit = u
                values.append(t)
                colour = ("#c0392b", "#8e44ad", "#d35400")[i % 3]
                ax.axhline(t, color=colour, linestyle="--", linewidth=1.1, label=label.replace(": ", "\n", 1)
                           .replace("; ", "\n"))
            if values:
                ax.set_ylim(0, max(values) * 1.25)
            ax.set_ylabel(f"{_CONCEPT_NAMES[concept]} ({unit})", fontsize=8)
            if not pts:
                ax.text(0.5, 0.5, "no result yet", transform=ax.transAxes, ha="center", fontsize=8, color="#777777")
            _style_axes(ax)
            if cut.get(concept):
                ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=2.2,
                          title="cut-offs", title_fontsize=7.5, alignment="left")
        if xs_all:
            lo, hi = min(xs_all), max(xs_all)
            pad = max(0.3, (hi - lo) * 0.08)
            axes[-1].set_xlim(min(lo - pad, -0.2), max(hi + pad, 1.0))
        axes[-1].set_xlabel(f"Days from {anchor_name}", fontsize=8)
        axes[0].set_title("Biomarker timeline with the protocol's cut-offs", fontsize=9, loc="left")
        return _svg(fig, salt)


def recruitment_plot(table: list[dict[str, Any]], sites: list[str], *, salt: str = "recruit") -> Markup | None:
    """Randomised patients per month, stacked by site (screened patients as an outline bar)."""
    if not table:
        return None
    with _PLOT_LOCK:
        fig = _figure(6.4, 3.0)
        ax = fig.add_subplot()
        months = [r["month"] for r in table]
        x = list(range(len(months)))
        ax.bar(x, [r["screened"] for r in table], width=0.7, fill=False, edgecolor="#888888", label="Screened")
        bottom = [0] * len(months)
        for i, site in enumerate(sites):
            vals = [r["randomised_by_site"].get(site, 0) for r in table]
            ax.bar(x, vals, width=0.5, bottom=bottom, color=_SOFA_COLOURS[i % len(_SOFA_COLOURS)],
                   label=f"Randomised {site}")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        step = max(1, -(-len(months) // 8))  # at most ~8 month labels, so they never overlap
        ax.set_xticks(x[::step], months[::step])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(-0.75, max(len(months), 4) - 0.25)  # keep bars narrow while there are few months
        ax.set_ylim(0, max(r["screened"] for r in table) * 1.15 + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("Patients", fontsize=8)
        ax.set_title("Recruitment by month and site", fontsize=9, loc="left")
        _style_axes(ax)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _svg(fig, salt)


def regimen_calendar(dv: Mapping[str, Any], proto: Protocol, now: datetime) -> dict[str, Any]:
    """The dosing grid: one row per kit, one column per treatment day, each cell the doses of that day with status."""
    n_days = int(math.ceil(max([r.duration_days for r in proto.regimens.values() if r.duration_days] or [15])))
    n_days = max([n_days, *(int(d["day"]) for d in dv.get("doses", []))])
    rows = []
    for route, number in sorted(dv["kits"].items()):
        cells: dict[int, list[dict[str, Any]]] = {day: [] for day in range(1, n_days + 1)}
        for d in dv.get("doses", []):
            if d["kit"] == route:
                cells[d["day"]].append(d)
        rows.append({"route": route, "kit_number": number, "cells": [cells[day] for day in range(1, n_days + 1)]})
    today = None
    if dv.get("first_dose_at"):
        today = int((now - datetime.fromisoformat(dv["first_dose_at"])) // timedelta(days=1)) + 1
    return {"days": list(range(1, n_days + 1)), "rows": rows, "today": today, "started": dv.get("started", False)}


# -- patient page -----------------------------------------------------------------------------------------------


def _patient_page(ctx: _Ctx, code: str, *, error: ImmunoguideError | None = None, ok: str | None = None,
                  status: int = 200) -> HTMLResponse:
    actor, now = ctx.actor, ctx.now

    def build(s: Any) -> dict[str, Any]:
        pv = trial.patient_view(s, code, actor=actor)
        out: dict[str, Any] = {"pv": pv, "labs": _lab_results(s, code, actor), "kits": None, "dv": None,
                               "fv": None, "aes": trial.adverse_events_view(s, code, actor=actor, now=now),
                               "safety_labs": trial.safety_labs_view(s, code, actor=actor)}
        if pv["randomisation"] is not None:
            out["kits"] = trial.kits_view(s, code, actor=actor)
            out["dv"] = trial.dosing_view(s, code, actor=actor, now=now)
            out["fv"] = trial.followup_view(s, code, actor=actor, now=now)
        out["summary"] = _summary(s, code, ctx)
        return out

    data = ctx.tx(build)
    pv = data["pv"]
    proto = _protocol(pv["protocol"])
    rnd = pv["randomisation"]
    if rnd is not None:
        anchor, anchor_name = datetime.fromisoformat(rnd["randomised_at"]), "randomisation"
    elif pv["sepsis3_onset"]:
        anchor, anchor_name = datetime.fromisoformat(pv["sepsis3_onset"]), "Sepsis-3 onset"
    else:
        anchor, anchor_name = datetime.fromisoformat(pv["screened_at"]), "screening"
    salt = hashlib.sha256(code.encode("utf-8")).hexdigest()[:8]
    fv = data["fv"]
    from immunoguide.trial.enrolment import consent_values
    from immunoguide.trial.followup import INFECTION_CATEGORIES, VITAL_STATUS
    from immunoguide.units import concept as unit_concept

    followup_days = trial.followup_days(proto)
    recorded = {d["day"] for d in fv["days"]} if fv else set()
    from immunoguide.rules.ctcae import load_ctcae
    from immunoguide.trial.adverse_events import CTCAE_GRADES, OUTCOMES, RELATEDNESS
    from immunoguide.trial.safety_labs import worst_grades

    return _html("patient.html", status=status, **ctx.base(
        page="patient", code=code, pv=pv, rnd=rnd, summary=data["summary"], kits=data["kits"], dv=data["dv"],
        fv=fv, aes=data["aes"], labs=data["labs"], ok=ok, error=error_body(error) if error else None,
        sofa_svg=sofa_plot(fv["days"], salt=f"sofa-{salt}") if fv else None,
        bio_svg=biomarker_plot(data["labs"], proto, anchor, anchor_name, salt=f"bio-{salt}"),
        calendar=regimen_calendar(data["dv"], proto, now) if data["dv"] else None,
        concept_names=_CONCEPT_NAMES,
        consent_values=consent_values(proto), default_time=_default_time(now),
        ferritin_units=list(unit_concept("ferritin_ng_per_ml").units),
        hla_units=list(unit_concept("hla_dr_per_monocyte").units), methods=proto.vocabularies.methods,
        followup_days=[d for d in followup_days if d not in recorded], followup_items=followup_days,
        infection_categories=INFECTION_CATEGORIES, vital_status=VITAL_STATUS, sofa_fields=_SOFA_FIELDS,
        sofa_bool_fields=_SOFA_BOOL_FIELDS, grades=CTCAE_GRADES, relatedness=RELATEDNESS, outcomes=OUTCOMES,
        safety_labs=data["safety_labs"], worst=worst_grades(data["safety_labs"]),
        ctcae_terms=sorted(t.term for t in load_ctcae().terms), safety_analytes=_SAFETY_ANALYTES,
        can={p: ctx.can(p) for p in ("consent", "enter_labs", "randomize", "dose", "followup", "adverse_event")},
        active=pv["status"] != "withdrawn",
    ))


# -- trial and DSMB pages ---------------------------------------------------------------------------------------


def _recruitment(log: list[dict[str, Any]], randomised_at: Mapping[str, str]) -> tuple[list[dict[str, Any]],
                                                                                         list[str]]:
    """Rows per month: screened and randomised per site (months of the screening / randomisation time)."""
    sites = sorted({e["site"] for e in log})
    screened: Counter[tuple[str, str]] = Counter()
    randomised: Counter[tuple[str, str]] = Counter()
    for e in log:
        screened[(e["screened_at"][:7], e["site"])] += 1
        if e["patient"] in randomised_at:
            randomised[(randomised_at[e["patient"]][:7], e["site"])] += 1
    months = sorted({m for m, _ in screened} | {m for m, _ in randomised})
    table = []
    for m in months:
        table.append({
            "month": m,
            "screened_by_site": {s: screened[(m, s)] for s in sites},
            "randomised_by_site": {s: randomised[(m, s)] for s in sites},
            "screened": sum(screened[(m, s)] for s in sites),
            "randomised": sum(randomised[(m, s)] for s in sites),
        })
    return table, sites


def _trial_page(ctx: _Ctx) -> HTMLResponse:
    actor, now = ctx.actor, ctx.now

    def build(s: Any) -> dict[str, Any]:
        log = trial.screening_log(s, actor=actor)
        randomised_at = {}
        for e in log:
            if e["status"] in ("randomised", "withdrawn"):
                r = trial.patient_view(s, e["patient"], actor=actor)["randomisation"]
                if r is not None and r["randomised_at"]:
                    randomised_at[e["patient"]] = r["randomised_at"]
        from immunoguide.trial.monitoring import alerts_view, turnaround_report

        return {"log": log, "randomised_at": randomised_at, "consort": trial.consort(s, actor=actor),
                "overdue": trial.overdue_sae_reports(s, actor=actor, now=now),
                "turnaround": turnaround_report(s, actor=actor, now=now), "alerts": alerts_view(s, actor=actor, now=now)}

    data = ctx.tx(build)
    table, sites = _recruitment(data["log"], data["randomised_at"])
    proto = shipped_protocol(DEFAULT_PROTOCOL)
    criteria = {c.id: c.text for c in (*proto.inclusion, *proto.exclusion)}
    return _html("trial.html", **ctx.base(
        page="trial", log=data["log"], consort=data["consort"], overdue=data["overdue"], recruitment=table,
        turnaround=data["turnaround"], alerts=data["alerts"],
        sites=sites, recruitment_svg=recruitment_plot(table, sites), criteria=criteria,
        randomised_at=data["randomised_at"],
    ))


def _dsmb_page(ctx: _Ctx) -> HTMLResponse:
    actor, now = ctx.actor, ctx.now

    def build(s: Any) -> dict[str, Any]:
        signals = trial.safety_signals(s, actor=actor, now=now)  # authorises: dsmb only
        consort = trial.consort(s, actor=actor)
        patients: list[dict[str, Any]] = []
        for e in trial.screening_log(s, actor=actor):
            pv = trial.patient_view(s, e["patient"], actor=actor)
            if pv["randomisation"] is None:
                continue
            aes = trial.adverse_events_view(s, e["patient"], actor=actor, now=now)
            patients.append({"pv": pv, "aes": aes, "serious": sum(1 for a in aes if a["serious"])})
        from immunoguide.trial.monitoring import alerts_view
        from immunoguide.trial.safety_labs import worst_grades

        worst: dict[str, dict[str, int]] = {}
        for p in patients:
            pview: dict[str, Any] = p["pv"]
            arm = pview["randomisation"]["arm"]
            for term, w in worst_grades(trial.safety_labs_view(s, pview["patient"], actor=actor)).items():
                cell = worst.setdefault(term, {}).setdefault(arm, 0)
                if w["grade"] >= 3:
                    worst[term][arm] = cell + 1
        return {"signals": signals, "consort": consort, "patients": patients,
                "overdue": trial.overdue_sae_reports(s, actor=actor, now=now),
                "alerts": alerts_view(s, actor=actor, now=now), "lab_grade3": worst}

    data = ctx.tx(build)
    return _html("dsmb.html", **ctx.base(page="dsmb", **data))


# ---------------------------------------------------------------------------------------------------------------
# routes


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


def _lab_record(form: _Form) -> dict[str, Any]:
    """The lab fields of a form as the record ``enter_labs`` / ``record_followup`` expect."""
    rec: dict[str, Any] = {}
    for analyte in ("ferritin", "hla_dr"):
        v = form.get(analyte)
        if v is None:
            continue
        rec[analyte] = _number_or_text(v)
        for suffix in ("unit", "method", "sample_time", "receipt_time", "result_time"):
            x = form.get(f"{analyte}_{suffix}")
            if x is not None:
                rec[f"{analyte}_{suffix}"] = x
    return rec


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


def _safety_lab_record(form: _Form) -> dict[str, Any]:
    """The safety-lab fields of a form as the record ``record_safety_labs`` expects."""
    rec: dict[str, Any] = {}
    for name in ("sample_time", "result_time", "source"):
        text = form.get(f"safety_{name}")
        if text is not None:
            rec[name] = text
    for analyte, _, _ in _SAFETY_ANALYTES:
        v = form.number(analyte)
        if v is None:
            continue
        rec[analyte] = v
        rec[f"{analyte}_unit"] = form.get(f"{analyte}_unit")
        for lim in ("lln", "uln"):
            x = form.number(f"{analyte}_{lim}")
            if x is not None:
                rec[f"{analyte}_{lim}"] = x
    return rec


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
