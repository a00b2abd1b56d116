"""Immune-state monitoring: pending biomarker samples, assay turnaround against the protocol window, and alerts.

* **Pending samples.** A laboratory record that gives ``<analyte>_sample_time`` without a value (the sample is drawn,
  the result not back) is stored as a *pending order* (``lab_orders``), never ignored; the order is resolved when
  the result with the same sample time is entered (a later resulted sample of the analyte supersedes it).
* **Turnaround** (:func:`turnaround_report`): sample → result hours per site, laboratory (the result's ``source``)
  and analyte — n, median, 90th percentile, maximum — and how many classification results arrived after the
  protocol window (ImmunoSep I7: Sepsis-3 → first blinded dose < 72 h; hours read from the protocol) had closed.
* **Alerts** (:func:`patient_alerts`, :func:`alerts_view`; blind-safe, no arm):

  ``pending_assay_after_window`` (critical)
      a pending classification sample whose expected result time — sample time + the ``expected_quantile`` of
      the site/laboratory/analyte turnaround (``trial/monitoring.toml``) — is after the window closes, or the
      window has already closed;
  ``pending_assay_turnaround_unknown`` (warning)
      a pending sample without a turnaround history while the window closes within ``warn_hours_before_close``;
  ``result_pending`` (info)
      any other pending sample (serial samples after randomisation);
  ``stratum_switch`` (warning)
      a serial sample classifies into another stratum than the randomisation stratum (spec §2.2: no rule changes
      treatment on re-measurement; the alert informs, it does not act);
  ``reversal`` (info)
      the first day a reversal rule of the stratum holds (SAP p. 69; mapping *likely*).

They are shown on the dashboard, as a CDS Hooks card, in the DSMB report and by ``immunoguide safety alerts``.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.protocols import Protocol
from immunoguide.trial._authz import Actor, authorize, site_filter
from immunoguide.trial._common import aware, get_patient, protocol_of, slot_of
from immunoguide.trial._labs import _alert, order_rows, pending_orders, resolve_orders, serial_alerts
from immunoguide.trial._sealed import randomization_window
from immunoguide.trial.models import LabOrder, LabResult, Patient

__all__ = [
    "MonitoringSettings",
    "alerts_view",
    "load_monitoring",
    "order_rows",
    "patient_alerts",
    "pending_orders",
    "resolve_orders",
    "serial_alerts",
    "turnaround_report",
]

_NOT_STATED = "(laboratory not stated)"


class _Turnaround(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    expected_quantile: float = Field(gt=0, lt=1)
    min_history: int = Field(ge=1)
    warn_hours_before_close: float = Field(gt=0)
    confidence: Literal["confirmed", "likely", "unknown"]
    note: str = ""


class MonitoringSettings(BaseModel):
    """``trial/monitoring.toml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_: str = Field(alias="schema")
    version: str
    turnaround: _Turnaround


@cache
def load_monitoring() -> MonitoringSettings:
    """The shipped monitoring settings (validated)."""
    text = (resources.files("immunoguide.trial") / "monitoring.toml").read_text(encoding="utf-8")
    return MonitoringSettings.model_validate(tomllib.loads(text))


# ---------------------------------------------------------------------------------------------------------------
# pending orders


# ---------------------------------------------------------------------------------------------------------------
# turnaround


def _quantile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _window_hours(proto: Protocol) -> float | None:
    w = randomization_window(proto)
    return None if w is None else w[2]


def _history(session: Session, site: str | None) -> dict[tuple[str, str, str], list[float]]:
    stmt = select(LabResult, Patient.site).join(Patient, LabResult.patient_id == Patient.id)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    out: dict[tuple[str, str, str], list[float]] = {}
    for r, s in session.execute(stmt).all():
        if r.sample_time is None or r.result_time is None:
            continue
        out.setdefault((s, r.source or _NOT_STATED, r.concept), []).append(
            (r.result_time - r.sample_time).total_seconds() / 3600.0)
    return out


def turnaround_report(session: Session, *, actor: Actor, now: datetime) -> dict[str, Any]:
    """Assay turnaround (sample → result, hours) per site, laboratory and analyte against the protocol window.

    Each row: n, median, p90, max; ``classification_results`` (samples before randomisation) and how many of them
    were reported after the window from Sepsis-3 onset closed; pending orders and the oldest one's age at ``now``.
    Site roles see their own site.
    """
    authorize(actor, "view")
    aware(now, "now")
    settings = load_monitoring().turnaround
    site = site_filter(actor)
    stmt = select(LabResult, Patient).join(Patient, LabResult.patient_id == Patient.id)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    randomised_at: dict[int, datetime | None] = {}
    for r, p in session.execute(stmt).all():
        key = (p.site, r.source or _NOT_STATED, r.concept)
        g = groups.setdefault(key, {"hours": [], "classification": 0, "after_window": 0, "pending": 0,
                                    "oldest_pending_h": None, "window_h": None})
        if r.sample_time is None or r.result_time is None:
            continue
        g["hours"].append((r.result_time - r.sample_time).total_seconds() / 3600.0)
        if p.id not in randomised_at:
            slot = slot_of(session, p)
            randomised_at[p.id] = slot.allocated_at if slot is not None else None
        t_rand = randomised_at[p.id]
        if p.sepsis3_onset is not None and (t_rand is None or r.sample_time <= t_rand):
            wh = _window_hours(protocol_of(p))
            g["window_h"] = wh
            g["classification"] += 1
            if wh is not None and r.result_time > p.sepsis3_onset + timedelta(hours=wh):
                g["after_window"] += 1
    ostmt = select(LabOrder, Patient).join(Patient, LabOrder.patient_id == Patient.id).where(LabOrder.status == "pending")
    if site is not None:
        ostmt = ostmt.where(Patient.site == site)
    for o, p in session.execute(ostmt).all():
        g = groups.setdefault((p.site, o.source or _NOT_STATED, o.concept), {
            "hours": [], "classification": 0, "after_window": 0, "pending": 0, "oldest_pending_h": None,
            "window_h": None})
        g["pending"] += 1
        age = (now - o.sample_time).total_seconds() / 3600.0
        g["oldest_pending_h"] = age if g["oldest_pending_h"] is None else max(g["oldest_pending_h"], age)
    rows = []
    for (s, lab, conc), g in sorted(groups.items()):
        hrs = g["hours"]
        rows.append({
            "site": s, "laboratory": lab, "concept": conc, "n": len(hrs),
            "median_h": round(statistics.median(hrs), 2) if hrs else None,
            "p90_h": round(_quantile(hrs, 0.9), 2) if hrs else None, "max_h": round(max(hrs), 2) if hrs else None,
            "expected_h": (round(_quantile(hrs, settings.expected_quantile), 2)
                           if len(hrs) >= settings.min_history else None),
            "classification_results": g["classification"], "reported_after_window": g["after_window"],
            "window_h": g["window_h"], "pending": g["pending"],
            "oldest_pending_h": None if g["oldest_pending_h"] is None else round(g["oldest_pending_h"], 1),
        })
    return {"at": now.isoformat(), "site": site, "rows": rows,
            "settings": {"expected_quantile": settings.expected_quantile, "min_history": settings.min_history,
                         "confidence": settings.confidence, "note": settings.note}}


# ---------------------------------------------------------------------------------------------------------------
# alerts


def _pending_alerts(session: Session, p: Patient, now: datetime,
                    history: dict[tuple[str, str, str], list[float]]) -> list[dict[str, Any]]:
    settings = load_monitoring().turnaround
    out = []
    randomised = slot_of(session, p) is not None
    proto = protocol_of(p)
    wh = _window_hours(proto)
    close = p.sepsis3_onset + timedelta(hours=wh) if (p.sepsis3_onset is not None and wh is not None) else None
    for o in pending_orders(session, p):
        hist = history.get((p.site, o.source or _NOT_STATED, o.concept), [])
        expected_h = _quantile(hist, settings.expected_quantile) if len(hist) >= settings.min_history else None
        expected = o.sample_time + timedelta(hours=expected_h) if expected_h is not None else None
        lab = o.source or _NOT_STATED
        base = dict(analyte=o.analyte, concept=o.concept, laboratory=lab, sample_time=o.sample_time.isoformat(),
                    expected_result_at=expected.isoformat() if expected else None,
                    expected_turnaround_h=None if expected_h is None else round(expected_h, 1),
                    window_closes_at=close.isoformat() if close else None,
                    quantile=settings.expected_quantile, settings_confidence=settings.confidence)
        if randomised or close is None or p.status != "screening":
            out.append(_alert(p, "result_pending", "info", f"{p.code}: {o.analyte} sampled "
                              f"{o.sample_time.isoformat()} at {lab}: result pending", o.sample_time, **base))
        elif now >= close or (expected is not None and expected >= close):
            why = ("the window has closed" if now >= close else
                   f"expected result {expected.isoformat() if expected else '?'} (p{100 * settings.expected_quantile:g} "
                   f"turnaround {expected_h:.1f} h at {lab}) is after the window closes")
            out.append(_alert(p, "pending_assay_after_window", "critical",
                              f"{p.code}: {o.analyte} result pending; {why} ({close.isoformat()}, "
                              f"{wh:g} h after Sepsis-3)", o.sample_time, **base))
        elif expected is None and (close - now) <= timedelta(hours=settings.warn_hours_before_close):
            out.append(_alert(p, "pending_assay_turnaround_unknown", "warning",
                              f"{p.code}: {o.analyte} result pending at {lab} with no turnaround history; the "
                              f"window closes in {(close - now).total_seconds() / 3600:.1f} h ({close.isoformat()})",
                              o.sample_time, **base))
        else:
            out.append(_alert(p, "result_pending", "info", f"{p.code}: {o.analyte} result pending; expected "
                              f"{expected.isoformat() if expected else 'unknown'}, window closes {close.isoformat()}",
                              o.sample_time, **base))
    return out


_LEVEL = {"critical": 0, "warning": 1, "info": 2}


def patient_alerts(session: Session, code: str, *, actor: Actor, now: datetime,
                   _history_cache: dict[tuple[str, str, str], list[float]] | None = None) -> list[dict[str, Any]]:
    """Every alert of one patient (see the module docstring), most severe first."""
    aware(now, "now")
    p = get_patient(session, code, actor, "view", lock=False)
    if p.data_removed:
        return []
    history = _history_cache if _history_cache is not None else _history(session, p.site)
    out = _pending_alerts(session, p, now, history)
    if slot_of(session, p) is not None and p.stratum:
        from immunoguide.trial.followup import serial_endotypes

        out += serial_endotypes(session, code, actor=actor, now=now, _patient=p)["alerts"]
    return sorted(out, key=lambda a: (_LEVEL[a["level"]], a["at"] or ""))


def alerts_view(session: Session, *, actor: Actor, now: datetime, levels: Sequence[str] | None = None) -> dict[str, Any]:
    """Alerts of every patient the actor may see (site roles: their site), most severe first."""
    authorize(actor, "view")
    aware(now, "now")
    site = site_filter(actor)
    stmt = select(Patient).order_by(Patient.id)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    history = _history(session, site)
    out: list[dict[str, Any]] = []
    for p in session.execute(stmt).scalars():
        if p.data_removed or p.status in ("screen_failed", "withdrawn"):
            continue
        out += patient_alerts(session, p.code, actor=actor, now=now, _history_cache=history)
    if levels:
        out = [a for a in out if a["level"] in levels]
    out.sort(key=lambda a: (_LEVEL[a["level"]], a["patient"]))
    counts = {lv: sum(1 for a in out if a["level"] == lv) for lv in _LEVEL}
    return {"at": now.isoformat(), "site": site, "counts": counts, "alerts": out}
