"""Laboratory records, their pending orders and the alerts of serial endotypes (not public).

What the enrolment, follow-up and monitoring steps share: storing a laboratory record's results and pending samples
(:func:`store_lab_record`), reading the stored results back (:func:`lab_results_of`), the pending orders
(:func:`pending_orders`, :func:`resolve_orders`) and the alerts drawn from a patient's serial endotypes
(:func:`serial_alerts`). :mod:`immunoguide.trial.enrolment` and :mod:`immunoguide.trial.monitoring` re-export them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.errors import ImmunoguideError, InputError
from immunoguide.protocols import Protocol
from immunoguide.rules.endotype import BiomarkerResult, PendingSample, pending_from_record, results_from_record
from immunoguide.rules.measurements import CensoredValue, measure
from immunoguide.trial import audit
from immunoguide.trial._authz import Actor
from immunoguide.trial._common import aware, not_future
from immunoguide.trial.models import LabOrder, LabResult, Patient
from immunoguide.units import concept

__all__ = [
    "lab_results_of",
    "order_rows",
    "pending_orders",
    "resolve_orders",
    "serial_alerts",
    "store_lab_record",
]


def store_lab_record(session: Session, proto: Protocol, record: Mapping[str, Any], p: Patient, actor: Actor,
                     now: datetime) -> tuple[list[LabResult], list[Any]]:
    """Store a laboratory record's results and its pending samples (``<analyte>_sample_time`` without a value:
    an open order, :mod:`immunoguide.trial.monitoring`), resolving the orders the results answer.

    Returns (results stored, orders opened). Refuses a record with neither a result nor a pending sample.
    """
    spec = proto.classification
    assert spec is not None
    pending = pending_from_record(record, spec, where="lab record") if isinstance(record, Mapping) else ()
    for x in pending:
        aware(x.sample_time, f"{x.analyte}_sample_time")
        not_future(x.sample_time, now, f"{x.analyte}_sample_time")
    rows = _lab_rows(proto, record, p, actor, now, allow_none=bool(pending))
    audit.insert_many(session, actor, now, rows)
    resolve_orders(session, actor, now, p, rows)
    orders = order_rows(p, pending, actor, now)
    audit.insert_many(session, actor, now, orders)
    return rows, orders


def _lab_rows(proto: Protocol, record: Mapping[str, Any], p: Patient, actor: Actor, now: datetime, *,
              allow_none: bool = False) -> list[LabResult]:
    spec = proto.classification
    assert spec is not None
    if not isinstance(record, Mapping):
        raise InputError(expected="a JSON object of laboratory results", got=type(record).__name__,
                         where="lab record", todo="send one JSON object")
    for k in ("anchor_time", "at", "id"):
        if k in record:
            raise InputError(expected="laboratory result fields only", got=k, where=f"lab record, field {k}",
                             todo="the anchor is the patient's Sepsis-3 onset and the time is now", field=k)
    results, _, _ = results_from_record(record, spec, where="lab record")
    if not results and not allow_none:
        raise InputError(expected="at least one laboratory result (or a sample time of a pending result)",
                         got=dict(record), where="lab record",
                         todo="send e.g. ferritin, ferritin_unit, ferritin_sample_time")
    analytes: dict[str, str] = {}
    for rule in list(spec.endotypes) + list(spec.reversals):
        for c in rule.all_of:
            analytes.setdefault(c.concept, c.analyte)
    rows = []
    for r in results:
        a = analytes[r.concept]
        raw = record.get(a) if record.get(a) is not None else record.get(r.concept)
        unit = record.get(f"{a}_unit") if record.get(a) is not None else concept(r.concept).unit
        for f, t in (("sample_time", r.sample_time), ("receipt_time", r.receipt_time), ("result_time", r.result_time)):
            if t is not None:
                aware(t, f"{a}_{f}")
                not_future(t, now, f"{a}_{f}")
        if r.sample_time is None:
            raise InputError(expected=f"{a}_sample_time", got=None, where=f"lab record, field {a}_sample_time",
                             todo="the sample time places the result in the protocol's window", field=f"{a}_sample_time")
        rows.append(LabResult(
            patient_id=p.id, concept=r.concept, raw_value=str(raw), raw_unit=str(unit),
            value_lower=r.value.lower, value_upper=r.value.upper, lower_inclusive=r.value.lower_inclusive,
            upper_inclusive=r.value.upper_inclusive, method=r.method, sample_time=r.sample_time,
            receipt_time=r.receipt_time, result_time=r.result_time, source=r.source, entered_at=now,
            entered_by=actor.user,
        ))
    return rows


def _stored_value(r: LabResult) -> CensoredValue:
    """The stored interval, with the exact rationals of its bounds re-derived from the value and unit as reported
    (so a comparison with a cut-off is exact, :mod:`immunoguide.units`), when they give the same interval."""
    stored = CensoredValue(r.value_lower, r.value_upper, r.lower_inclusive, r.upper_inclusive, r.raw_value)
    try:
        again = measure(r.concept, r.raw_value, r.raw_unit)
    except ImmunoguideError:
        return stored
    return again if again.same_interval(stored) else stored


def lab_results_of(session: Session, p: Patient) -> list[BiomarkerResult]:
    """The patient's stored results as :class:`~immunoguide.rules.endotype.BiomarkerResult` (canonical units)."""
    rows = session.execute(select(LabResult).where(LabResult.patient_id == p.id).order_by(LabResult.id)).scalars()
    return [
        BiomarkerResult(
            r.concept, _stored_value(r), r.method, r.sample_time, r.receipt_time, r.result_time,
            r.source or f"lab_results/{r.id}",
        )
        for r in rows
    ]


def order_rows(p: Patient, pending: Sequence[PendingSample], actor: Actor, now: datetime) -> list[LabOrder]:
    """New ``lab_orders`` rows for the pending samples of a laboratory record."""
    return [LabOrder(patient_id=p.id, analyte=x.analyte, concept=x.concept, sample_time=x.sample_time, source=x.source,
                     method=x.method, status="pending", result_id=None, ordered_at=now, ordered_by=actor.user,
                     resolved_at=None) for x in pending]


def pending_orders(session: Session, p: Patient) -> list[LabOrder]:
    """The patient's pending orders, oldest sample first."""
    return list(session.execute(select(LabOrder).where(LabOrder.patient_id == p.id, LabOrder.status == "pending")
                                .order_by(LabOrder.sample_time, LabOrder.id)).scalars())


def resolve_orders(session: Session, actor: Actor, now: datetime, p: Patient, results: Iterable[LabResult]) -> int:
    """Mark pending orders resolved by the entered results (same concept and sample time → ``resulted``; an older
    pending sample of a concept with a newer result → ``superseded``). Returns how many were resolved."""
    n = 0
    res = [r for r in results if r.sample_time is not None]
    for o in pending_orders(session, p):
        same = next((r for r in res if r.concept == o.concept and r.sample_time == o.sample_time), None)
        if same is not None:
            audit.update(session, actor, now, o, status="resulted", result_id=same.id, resolved_at=now)
            n += 1
        elif any(r.concept == o.concept and r.sample_time is not None and r.sample_time > o.sample_time for r in res):
            audit.update(session, actor, now, o, status="superseded", resolved_at=now)
            n += 1
    return n


def _alert(p: Patient, code: str, level: str, text: str, at: datetime | None, **details: Any) -> dict[str, Any]:
    return {"patient": p.code, "site": p.site, "code": code, "level": level, "text": text,
            "at": at.isoformat() if at else None, "details": details}


def serial_alerts(p: Patient, serial: dict[str, Any], strata: Sequence[str]) -> list[dict[str, Any]]:
    """Stratum-switch and reversal alerts from :func:`immunoguide.trial.followup.serial_endotypes`' result.

    A switch is a day classified into *another stratum* of the protocol (``strata``: MALS for an immunoparalysis
    patient); a day that is neither (``unclassified``) is no switch (for immunoparalysis it is on the way to
    reversal, which has its own rule)."""
    out = []
    stratum = p.stratum
    for t in serial.get("transitions", []):
        if t["to"] != stratum and t["to"] in strata:
            day = next((d for d in serial["days"] if d["day"] == t["day"]), None)
            out.append(_alert(p, "stratum_switch", "warning",
                              f"{p.code}: samples of day {t['day']} classify {t['to']}, not the randomisation stratum "
                              f"{stratum} (no protocol rule changes treatment on re-measurement; spec §2.2)",
                              datetime.fromisoformat(day["start"]) if day else None, day=t["day"], stratum=stratum,
                              endotype=t["to"]))
            break
    revs = serial.get("reversals", [])
    if revs:
        r = revs[0]
        out.append(_alert(p, "reversal", "info", f"{p.code}: reversal of {r['endotype']} on day {r['day']}: {r['text']}",
                          None, day=r["day"], kind=r["kind"]))
    return out
