"""Helpers shared by the trial workflow modules (not public)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from immunoguide.errors import InputError, NotRandomized, PatientWithdrawn, UnknownPatient
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.trial._authz import SITE_ROLES, Actor, authorize
from immunoguide.trial.models import AllocationSlot, Classification, Consent, Patient

DEFAULT_PROTOCOL = "immunosep-2025"


def aware(t: datetime | None, field: str, *, required: bool = True) -> datetime | None:
    """``t`` if it carries a UTC offset; InputError otherwise (None allowed unless ``required``)."""
    if t is None:
        if required:
            raise InputError(expected=f"a date-time for {field}", got=None, where=f"field {field}",
                             todo="send an ISO 8601 time with an offset", field=field)
        return None
    if not isinstance(t, datetime):
        raise InputError(expected=f"a date-time for {field}", got=t, where=f"field {field}",
                         todo="send an ISO 8601 time with an offset", field=field)
    if t.tzinfo is None or t.utcoffset() is None:
        raise InputError(
            expected=f"a timezone-aware date-time for {field}", got=t.isoformat(), where=f"field {field}",
            todo="add the UTC offset, e.g. 2025-03-01T08:30:00+01:00", field=field,
        )
    return t


def not_future(t: datetime, now: datetime, field: str) -> None:
    """InputError when ``t`` lies after ``now``."""
    if t > now:
        raise InputError(expected=f"{field} not in the future (now {now.isoformat()})", got=t.isoformat(),
                         where=f"field {field}", todo="check the date and time zone", field=field)


@cache
def _protocol(label: str) -> Protocol:
    return load_protocol(label)


def protocol_of(patient: Patient) -> Protocol:
    """The protocol version the patient was screened under (shipped protocols are immutable: cached)."""
    return _protocol(patient.protocol)


def protocol_of_label(label: str) -> Protocol:
    """The protocol of a patient's ``protocol`` column (cached as :func:`protocol_of`)."""
    return _protocol(label)


# The statements run for every dose, visit and view, built once (building one costs as much as running it on SQLite).
_PATIENT_BY_CODE = select(Patient).where(Patient.code == bindparam("code")).execution_options(populate_existing=True)
_PATIENT_BY_CODE_LOCKED = (select(Patient).where(Patient.code == bindparam("code")).with_for_update()
                           .execution_options(populate_existing=True))
_SLOT_OF_PATIENT = select(AllocationSlot).where(AllocationSlot.patient_id == bindparam("patient_id"))


def get_patient(session: Session, code: str, actor: Actor, permission: str, *, lock: bool = True) -> Patient:
    """The patient with study code ``code`` (row-locked for the transaction), after checking ``permission``.

    Raises UnknownPatient (no such code — and, for a site role, a code of another site: the same answer, so a site
    user cannot tell which study codes exist elsewhere) or NotAuthorized (the role lacks the permission).
    """
    stmt = _PATIENT_BY_CODE_LOCKED if lock else _PATIENT_BY_CODE
    p = session.execute(stmt, {"code": code}).scalar_one_or_none()
    if p is None or (actor.role in SITE_ROLES and actor.site != p.site):
        raise UnknownPatient(expected="the study code of a screened patient", got=code, where="patients",
                             todo="check the code, or screen the patient first (`immunoguide trial screen`)")
    authorize(actor, permission, site=p.site)
    return p


def require_active(p: Patient) -> None:
    """PatientWithdrawn when the patient has withdrawn."""
    if p.status == "withdrawn":
        raise PatientWithdrawn(expected="a patient still in the trial", got=f"{p.code} (withdrawn)",
                               where="patients", todo="no further treatment or data entry after a withdrawal")


def slot_of(session: Session, p: Patient) -> AllocationSlot | None:
    """The allocation slot the patient holds (None if not randomised)."""
    return session.execute(_SLOT_OF_PATIENT, {"patient_id": p.id}).scalar_one_or_none()


def require_randomised(session: Session, p: Patient, action: str) -> AllocationSlot:
    """The patient's slot; NotRandomized if none."""
    slot = slot_of(session, p)
    if slot is None:
        raise NotRandomized(expected=f"a randomised patient for {action}", got=f"{p.code} ({p.status})",
                            where=action, todo="randomise the patient first (`immunoguide trial randomize`)")
    return slot


def consent_of(session: Session, p: Patient) -> Consent | None:
    """The patient's consent record (None if none)."""
    return session.execute(select(Consent).where(Consent.patient_id == p.id)).scalar_one_or_none()


def latest_classification(session: Session, p: Patient) -> Classification | None:
    """The patient's latest baseline classification."""
    return session.execute(
        select(Classification).where(Classification.patient_id == p.id)
        .order_by(Classification.classified_at.desc(), Classification.id.desc()).limit(1)
    ).scalar_one_or_none()


def validation_error(exc: ValidationError, where: str) -> InputError:
    """A pydantic error as an InputError naming the field."""
    err = exc.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or "record"
    return InputError(expected=str(err["msg"]).lower(), got=err.get("input"), where=f"{where}, field {field}",
                      todo="fix the field's value or type", field=field)


def iso(t: datetime | None) -> str | None:
    """ISO 8601 text (None stays None)."""
    return t.isoformat() if t is not None else None


def check_choice(value: Any, allowed: Mapping[str, Any] | tuple[str, ...] | list[str], field: str) -> str:
    """``value`` if it is one of ``allowed``; InputError otherwise."""
    if value not in allowed:
        raise InputError(expected=f"{field} one of {sorted(allowed)}", got=value, where=f"field {field}",
                         todo=f"use one of {', '.join(sorted(allowed))}", field=field)
    return str(value)
