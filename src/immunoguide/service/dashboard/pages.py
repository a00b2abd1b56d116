"""The dashboard's pages: the data of each page (every record from a :mod:`immunoguide.trial` function, as the
logged-in actor may see it) and its rendering — site view, patient page, trial view, DSMB view."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from fastapi.responses import HTMLResponse

from immunoguide import trial
from immunoguide.errors import ImmunoguideError
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.service._context import shipped_protocol
from immunoguide.service.dashboard.forms import _SAFETY_ANALYTES, _SCREEN_FLAGS, _SOFA_BOOL_FIELDS, _SOFA_FIELDS
from immunoguide.service.dashboard.plots import _CONCEPT_NAMES, biomarker_plot, recruitment_plot, sofa_plot
from immunoguide.service.dashboard.session import _Ctx
from immunoguide.service.dashboard.templates import DEFAULT_PROTOCOL, _html
from immunoguide.service.errors import error_body
from immunoguide.trial.access import SITE_ROLES, Actor

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
