"""Dosing: the protocol's schedule for the patient's kits, administrations recorded, late/missed doses flagged.

The schedule is :func:`immunoguide.rules.regimen.dose_schedule` for the patient's arm, starting at the first
recorded administration (treatment day 1 = the day of the first dose; ImmunoSep: IV q8h × 15 d = 45 doses, SC
q48h × 15 d = 8 doses). Every kit of an arm has the same schedule whatever it holds (double dummy), so the
ward's view — kit, dose number, day, due time, status — does not unblind; the prescribed content of each dose is
shown to unblinded roles only.

Each administration is matched to a scheduled dose (:func:`immunoguide.rules.regimen.reconcile`) and flagged
``on_time``, ``early``, ``late``, ``missed`` or ``pending`` at ``now``. The tolerance for a late dose is not in
the protocol: :data:`DEFAULT_LATE_AFTER_H` is the platform's choice, reported in every view. The first dose is
checked against the protocol's window from Sepsis-3 onset (ImmunoSep I7, < 72 h); a first dose outside the
window is recorded (it was given) and flagged as a protocol deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from immunoguide.errors import DuplicateRecord, InputError
from immunoguide.protocols import compare
from immunoguide.rules.regimen import Administration, Schedule, dose_schedule, reconcile
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor, arm_visible
from immunoguide.trial._common import (
    aware,
    check_choice,
    get_patient,
    not_future,
    protocol_of,
    protocol_of_label,
    require_active,
    require_randomised,
)
from immunoguide.trial.kits import kits_of
from immunoguide.trial.models import AllocationSlot, DoseAdministration, Kit, Patient, Withdrawal
from immunoguide.trial.randomization import randomization_window

__all__ = ["DEFAULT_LATE_AFTER_H", "DoseEntry", "dosing_view", "record_dose", "record_doses"]

#: A dose given more than this many hours after its due time is flagged late (platform choice; not in the protocol).
DEFAULT_LATE_AFTER_H = 1.0


def _schedule(session: Session, p: Patient, slot: AllocationSlot, start: datetime) -> Schedule:
    from immunoguide.trial.randomization import arm_of

    # keyed by wall time, fold and time zone, not by the instant: the due times keep the zone of ``start``
    return _arm_schedule(p.protocol, arm_of(session, slot), start.replace(tzinfo=None), start.fold, start.tzinfo)


@lru_cache(maxsize=1024)
def _arm_schedule(protocol: str, arm: str, wall: datetime, fold: int, tz: Any) -> Schedule:
    """The schedule of ``arm`` from ``start`` (shipped protocols are immutable and a Schedule is frozen: computed
    once per patient, not once per dose recorded or viewed)."""
    return dose_schedule(protocol_of_label(protocol), arm, wall.replace(tzinfo=tz, fold=fold))


_ADMINISTRATIONS = (
    select(DoseAdministration, Kit.route).join(Kit, DoseAdministration.kit_id == Kit.id)
    .where(DoseAdministration.patient_id == bindparam("patient_id"))
    .order_by(DoseAdministration.given_at, DoseAdministration.id)
)
_WITHDRAWAL = select(Withdrawal).where(Withdrawal.patient_id == bindparam("patient_id"))


def _administrations(session: Session, p: Patient) -> list[tuple[DoseAdministration, str]]:
    """The patient's administrations with the route of their kit, by time given (then id)."""
    return [(d, route) for d, route in session.execute(_ADMINISTRATIONS, {"patient_id": p.id}).all()]


def record_dose(
    session: Session, code: str, kit: str, given_at: datetime, *, actor: Actor, now: datetime,
    number: int | None = None, note: str | None = None, late_entry_reason: str | None = None,
) -> dict[str, Any]:
    """Record a dose given from the patient's ``kit`` (``"IV"`` or ``"SC"``) at ``given_at``.

    A dose recorded more than the store's late-entry limit after ``given_at`` needs ``late_entry_reason`` (kept
    in the audit trail; :mod:`immunoguide.trial.clock`).

    ``number`` pins the dose to a scheduled dose of the kit; without it the dose is matched by time. The first
    recorded dose starts the schedule. Raises NotRandomized (dose for a patient not randomised), PatientWithdrawn,
    InputError (unknown kit, time in the future, before randomisation or before the first dose, dose number not
    in the schedule or no scheduled dose left), DuplicateRecord (that dose is already recorded).
    """
    return record_doses(session, code, [DoseEntry(kit, given_at, now, number, note, late_entry_reason)], actor=actor)


@dataclass(frozen=True)
class DoseEntry:
    """One dose of :func:`record_doses`: the arguments :func:`record_dose` takes for it (``now``: when it is
    recorded, the time of its audit entry)."""

    kit: str
    given_at: datetime
    now: datetime
    number: int | None = None
    note: str | None = None
    late_entry_reason: str | None = None


def record_doses(session: Session, code: str, doses: Sequence[DoseEntry], *, actor: Actor) -> dict[str, Any]:
    """Record several doses of one patient, in order: what :func:`record_dose` does for each, in one pass.

    Each dose is checked, written and audited as :func:`record_dose` would (same checks and errors, same rows,
    same audit entries with the dose's own ``now`` and late-entry reason, in the same order). The patient (with
    the permission check), slot, kits and recorded doses are read once, the new rows are written in one flush,
    and the dosing view is built once: the return value is what :func:`record_dose` returns for the last dose.
    A dose that is refused raises its error; the doses before it stay recorded in the transaction, as after the
    same calls of :func:`record_dose` (the caller's transaction commits or rolls back the whole step).
    """
    if not doses:
        raise InputError(expected="at least one dose", got=[], where="record_doses", todo="give the doses to record")
    aware(doses[0].now, "now")
    p = get_patient(session, code, actor, "dose")
    require_active(p)
    slot = require_randomised(session, p, "a dose")
    kits = {k.route: k for k in kits_of(session, p)}
    existing = _administrations(session, p)
    new: list[tuple[DoseAdministration, datetime, str | None]] = []
    try:
        for i, entry in enumerate(doses):
            if i:
                aware(entry.now, "now")
            started = p.first_dose_at is None
            new.append(_record_one(session, p, slot, kits, existing, entry, actor))
            if started and i + 1 < len(doses):
                # record_dose reads the patient again for the next dose: its first dose time as the store returns it
                # (UTC), which the schedule's due times and the messages show
                session.flush()
                p = get_patient(session, code, actor, "dose")
    finally:
        if new:  # the doses recorded so far, in one flush (which assigns their ids), each with its audit entry
            audit.insert_each(session, actor, new)
    last = doses[-1]
    dose = new[-1][0]
    # The view record_dose gives for the last dose, from what this call already loaded: the administrations in the
    # order of the store's query (time given, then id: _record_one keeps ``existing`` so), the earlier ones as the
    # store returns them (in UTC), the last one as given.
    given = [Administration(route, d.given_at if d is dose else d.given_at.astimezone(UTC), d.number)
             for d, route in existing]
    view = _view(session, code, actor=actor, now=last.now, late_after_h=DEFAULT_LATE_AFTER_H, slot=slot, kits=kits,
                 given=given)
    view["recorded"] = {"kit": last.kit, "kit_number": kits[last.kit].kit_number, "number": dose.number,
                        "given_at": last.given_at.isoformat()}
    return view


def _record_one(
    session: Session, p: Patient, slot: AllocationSlot, kits: dict[str, Kit],
    existing: list[tuple[DoseAdministration, str]], entry: DoseEntry, actor: Actor,
) -> tuple[DoseAdministration, datetime, str | None]:
    """Check one dose against the patient's recorded doses (``existing``, which gets the new one) and stage it:
    the new row (added to the session, its audit entry still to append) with its time and late-entry reason."""
    kit, given_at, now, number, note = entry.kit, entry.given_at, entry.now, entry.number, entry.note
    check_choice(kit, tuple(kits), "kit")
    aware(given_at, "given_at")
    not_future(given_at, now, "given_at")
    if slot.allocated_at is not None and given_at < slot.allocated_at:
        raise InputError(expected=f"a dose given after randomisation ({slot.allocated_at.isoformat()})",
                         got=given_at.isoformat(), where="field given_at", todo="check the time", field="given_at")
    if p.first_dose_at is not None and given_at < p.first_dose_at:
        raise InputError(expected=f"a dose at or after the first recorded dose ({p.first_dose_at.isoformat()})",
                         got=given_at.isoformat(), where="field given_at",
                         todo="record the patient's doses from the first one on", field="given_at")
    if note is not None and len(note) > 2000:
        raise InputError(expected="a note of at most 2000 characters", got=len(note), where="field note",
                         todo="shorten the note", field="note")
    start = p.first_dose_at or given_at
    schedule = _schedule(session, p, slot, start)
    planned = {d.number for d in schedule.kit(kit)}
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, int) or number not in planned:
            raise InputError(expected=f"a dose number of kit {kit}: 1..{max(planned)}", got=number,
                             where="field number", todo="check the dose number", field="number")
    if number is not None and any(d.number == number and route == kit for d, route in existing):
        raise DuplicateRecord(expected=f"dose {number} of kit {kit} not yet recorded", got=f"{p.code} {kit} #{number}",
                              where="dose_administrations", todo="each scheduled dose is recorded once")
    given = [Administration(route, d.given_at, d.number) for d, route in existing]
    rec = reconcile(schedule, [*given, Administration(kit, given_at, number)], late_after_h=DEFAULT_LATE_AFTER_H,
                    at=now)
    matched = [s for s in rec.of_kit(kit) if s.given_at == given_at and s.dose.number not in
               {d.number for d, route in existing if route == kit}]
    if not matched:
        raise InputError(expected=f"a dose that matches a scheduled, unrecorded dose of kit {kit}",
                         got=given_at.isoformat(), where="field given_at",
                         todo="every scheduled dose of this kit is already recorded; check the kit and time")
    dose_no = number if number is not None else matched[0].dose.number
    late = clock.check_late_entry(session, given_at, now, "given_at", entry.late_entry_reason)
    if p.first_dose_at is None:
        with audit.reasoned(session, late):
            audit.update(session, actor, now, p, first_dose_at=given_at)
    dose = DoseAdministration(
        patient_id=p.id, kit_id=kits[kit].id, number=dose_no, given_at=given_at, note=note, recorded_at=now,
        recorded_by=actor.user,
    )
    existing.append((dose, kit))
    existing.sort(key=lambda dr: dr[0].given_at)  # stable: by time given, then id (the new row's is the highest)
    return dose, now, late


def dosing_view(
    session: Session, code: str, *, actor: Actor, now: datetime, late_after_h: float = DEFAULT_LATE_AFTER_H,
) -> dict[str, Any]:
    """Every due dose of the patient's kits with its status at ``now`` (after a withdrawal: at the withdrawal).

    Blinded roles get kit, kit number, dose number, day, due time, status, given time and delay; unblinded roles
    also the prescribed content of each dose.
    """
    return _view(session, code, actor=actor, now=now, late_after_h=late_after_h)


def _view(
    session: Session, code: str, *, actor: Actor, now: datetime, late_after_h: float,
    slot: AllocationSlot | None = None, kits: dict[str, Kit] | None = None,
    given: list[Administration] | None = None,
) -> dict[str, Any]:
    """:func:`dosing_view`; ``slot``, ``kits`` and the administrations (``given``) are taken as given when the
    caller has them loaded already (:func:`record_doses`), else read."""
    aware(now, "now")
    p = get_patient(session, code, actor, "view", lock=False)
    if slot is None:
        slot = require_randomised(session, p, "a dosing view")
    if kits is None:
        kits = {k.route: k for k in kits_of(session, p)}
    proto = protocol_of(p)
    out: dict[str, Any] = {
        "patient": p.code,
        "late_after_h": late_after_h,
        "late_after_h_source": "platform choice (the protocol gives no tolerance)",
        "first_dose_at": p.first_dose_at.isoformat() if p.first_dose_at else None,
        "kits": {route: k.kit_number for route, k in kits.items()},
    }
    window = randomization_window(proto)
    if window is not None and p.first_dose_at is not None and p.sepsis3_onset is not None:
        cid, comparator, hours, _ = window
        h = (p.first_dose_at - p.sepsis3_onset).total_seconds() / 3600.0
        out["first_dose_window"] = {"criterion": cid, "rule": f"first dose {comparator} {hours:g} h after Sepsis-3",
                                    "hours_from_sepsis3": round(h, 3), "met": h >= 0 and compare(h, comparator, hours)}
    if p.first_dose_at is None:
        out.update({"started": False, "doses": [], "counts": {}, "flagged": []})
        return out
    schedule = _schedule(session, p, slot, p.first_dose_at)
    wd = session.execute(_WITHDRAWAL, {"patient_id": p.id}).scalar_one_or_none()
    at = min(now, wd.withdrawn_at) if wd is not None else now
    if given is None:
        given = [Administration(route, d.given_at, d.number) for d, route in _administrations(session, p)]
    rec = reconcile(schedule, given, late_after_h=late_after_h, at=at)
    unblinded = arm_visible(session, actor, p)
    doses = []
    for s in rec.statuses:
        d = s.to_dict()
        d["kit_number"] = kits[s.dose.kit].kit_number
        if unblinded:
            d["prescribed"] = s.dose.prescribed
        doses.append(d)
    out.update({
        "started": True,
        "at": at.isoformat(),
        "counts": dict(rec.counts),
        "doses": doses,
        "flagged": [d for d in doses if d["status"] in ("late", "missed", "early")],
        # schedule notes and the warnings' dependency lists may name a kit's content: unblinded roles only
        "warnings": [w.to_dict() if unblinded else {"setting": w.setting, "text": w.text} for w in schedule.warnings],
        "notes": list(schedule.notes) if unblinded else [],
    })
    return out
