"""Dose schedules from a protocol's arms and regimens, and reconciliation of given doses against them.

:func:`dose_schedule` lists every due dose of an arm — each kit (ImmunoSep: an IV kit and an SC kit, double
dummy), drug or placebo, the dose in absolute units (a per-kg dose multiplied by the weight), the due time and
the treatment day — from the course definitions in the protocol file. Doses fall at ``start + k × interval`` for
every ``k`` whose time lies inside ``duration_days`` from the first dose (day 1 = the day of the first dose):
anakinra 200 mg IV q8h × 15 d gives 45 doses, IFN-γ 100 µg SC q48h × 15 d gives 8 (days 1, 3, …, 15; derived,
tagged *likely* in the protocol file).

Nothing the sources do not give is applied: a renal dose adjustment that is *unknown* (ImmunoSep anakinra) never
changes a dose; a CrCl below the regimen's check level raises a warning instead. Warnings are raised for every
kit of the arm in the same way whatever drug the kit holds, so the warnings of a blinded schedule do not unblind.

:func:`reconcile` matches administrations to scheduled doses and flags each dose ``on_time``, ``early``,
``late``, ``missed`` or ``pending``. The rule is pure: the current time is passed in (``at``).

Examples
--------
>>> from datetime import datetime
>>> from immunoguide.protocols import load_protocol
>>> p = load_protocol("immunosep-2025")
>>> s = dose_schedule(p, "mals_anakinra", datetime(2024, 3, 1, 8, 0))
>>> len(s.kit("IV")), len(s.kit("SC")), s.kit("IV")[0].prescribed, s.kit("SC")[-1].day
(45, 8, 'anakinra 200 mg', 15)
>>> g = dose_schedule(load_protocol("gm-csf-meisel-2009"), "gm_csf", datetime(2024, 3, 1, 8), weight_kg=72.5)
>>> g.doses[0].dose, g.doses[0].dose_unit, len(g.doses)
(290.0, 'ug', 8)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from immunoguide.errors import InputError, MissingInputError
from immunoguide.protocols import Protocol, SettingWarning
from immunoguide.protocols._schema import Regimen
from immunoguide.units import check_plausible

__all__ = [
    "Administration",
    "DoseStatus",
    "Reconciliation",
    "Schedule",
    "ScheduledDose",
    "dose_schedule",
    "reconcile",
]

DoseState = Literal["on_time", "early", "late", "missed", "pending"]


@dataclass(frozen=True)
class ScheduledDose:
    """One due dose of one kit.

    ``dose`` / ``dose_unit`` are absolute (mg or ug; a per-kg dose is already multiplied by the weight) and None
    for a placebo, whose ``volume_ml`` is given when the protocol states it. ``number`` counts doses within the
    kit from 1; ``day`` is the treatment day (1 = the day of the first dose).
    """

    kit: str
    regimen: str
    drug: str
    is_placebo: bool
    dose: float | None
    dose_unit: str | None
    volume_ml: float | None
    prescribed: str
    route: str
    interval_h: float
    due: datetime
    day: int
    number: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "kit": self.kit,
            "number": self.number,
            "day": self.day,
            "due": self.due.isoformat(),
            "regimen": self.regimen,
            "drug": self.drug,
            "is_placebo": self.is_placebo,
            "dose": self.dose,
            "dose_unit": self.dose_unit,
            "volume_ml": self.volume_ml,
            "prescribed": self.prescribed,
            "route": self.route,
        }


@dataclass(frozen=True)
class Schedule:
    """Every due dose of one arm from ``start`` (sorted by due time, then kit), with the warnings that apply.

    This is the unblinded (pharmacy) view: it names the drug in each kit. :meth:`blinded` gives the ward view.
    """

    protocol: str
    arm: str
    start: datetime
    doses: tuple[ScheduledDose, ...]
    weight_kg: float | None
    crcl_ml_per_min: float | None
    settings: Mapping[str, str]
    warnings: tuple[SettingWarning, ...]
    notes: tuple[str, ...] = ()

    def kit(self, name: str) -> tuple[ScheduledDose, ...]:
        """The doses of one kit, in order."""
        return tuple(d for d in self.doses if d.kit == name)

    @property
    def kits(self) -> tuple[str, ...]:
        """Kit names in the order they first appear."""
        return tuple(dict.fromkeys(d.kit for d in self.doses))

    def blinded(self) -> tuple[dict[str, Any], ...]:
        """Kit, number, day and due time only: what the blinded ward team sees."""
        return tuple({"kit": d.kit, "number": d.number, "day": d.day, "due": d.due.isoformat()} for d in self.doses)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "protocol": self.protocol,
            "arm": self.arm,
            "start": self.start.isoformat(),
            "weight_kg": self.weight_kg,
            "crcl_ml_per_min": self.crcl_ml_per_min,
            "settings": dict(self.settings),
            "warnings": [w.to_dict() for w in self.warnings],
            "notes": list(self.notes),
            "doses": [d.to_dict() for d in self.doses],
        }


def _num(x: float) -> str:
    return f"{x:g}"


def _doses_of(kit: str, r: Regimen, start: datetime, weight_kg: float | None) -> list[ScheduledDose]:
    if r.is_placebo:
        dose, unit = None, None
        prescribed = "placebo" + (f" {_num(r.volume_ml)} mL" if r.volume_ml else "")
    else:
        assert r.dose is not None and r.dose_unit is not None
        if r.weight_based:
            assert weight_kg is not None
            dose = round(r.dose * weight_kg, 6)
            unit = r.dose_unit.removesuffix("/kg")
            prescribed = f"{r.drug} {_num(r.dose)} {r.dose_unit} x {_num(weight_kg)} kg = {_num(dose)} {unit}"
        else:
            dose, unit = float(r.dose), r.dose_unit
            prescribed = f"{r.drug} {_num(r.dose)} {r.dose_unit}"
    course_h = r.duration_days * 24.0
    n = math.ceil(course_h / r.interval_h - 1e-9)  # doses at k * interval < course length
    if r.max_doses is not None:
        n = min(n, r.max_doses)
    out = []
    for k in range(n):
        offset_h = k * r.interval_h
        out.append(
            ScheduledDose(
                kit=kit,
                regimen=r.id,
                drug=r.drug,
                is_placebo=r.is_placebo,
                dose=dose,
                dose_unit=unit,
                volume_ml=r.volume_ml if r.is_placebo else None,
                prescribed=prescribed,
                route=r.route,
                interval_h=r.interval_h,
                due=start + timedelta(hours=offset_h),
                day=int(offset_h // 24) + 1,
                number=k + 1,
            )
        )
    return out


def dose_schedule(
    protocol: Protocol,
    arm_code: str,
    start: datetime,
    *,
    weight_kg: float | None = None,
    crcl_ml_per_min: float | None = None,
    settings: Mapping[str, str] | None = None,
) -> Schedule:
    """Every due dose of ``arm_code`` from the first dose at ``start``.

    Parameters
    ----------
    protocol : Protocol
        A loaded protocol.
    arm_code : str
        Arm code (``"mals_anakinra"``, ``"sii_ifng"``, ``"mals_placebo"`` …); unknown codes raise
        :class:`~immunoguide.errors.UnknownCriteriaError`.
    start : datetime
        Due time of the first dose of every kit (day 1).
    weight_kg : float, optional
        Body weight in kg; required when a kit's dose is per kg (GM-CSF 4 µg/kg/day), else recorded only.
    crcl_ml_per_min : float, optional
        Creatinine clearance in mL/min; below a regimen's renal check level a warning is raised and the dose is
        **not** adjusted (the adjustment is an *unknown* setting).
    settings : mapping, optional
        Overrides of the protocol's settings.

    Returns
    -------
    Schedule
        The doses, the settings used, warnings for the *unknown* settings the schedule depends on, and notes
        (schedule derivations tagged *likely*, unknown routes).

    Raises
    ------
    MissingInputError
        ``weight_kg`` absent for a weight-based dose.
    ImplausibleValueError
        ``weight_kg`` or ``crcl_ml_per_min`` outside their plausibility ranges.
    """
    used = protocol.resolve_settings(settings)
    arm = protocol.arm(arm_code)
    if weight_kg is not None:
        weight_kg = check_plausible("weight_kg", weight_kg, where="weight_kg")
    if crcl_ml_per_min is not None:
        crcl_ml_per_min = check_plausible("creatinine_clearance_ml_per_min", crcl_ml_per_min, where="crcl_ml_per_min")
    regs = {kit: protocol.regimens[rid] for kit, rid in arm.kits.items()}
    doses: list[ScheduledDose] = []
    depends: dict[str, list[str]] = {s: [f"arm {arm.code}"] for s in arm.depends_on_settings}
    decisive: dict[str, bool | None] = {}
    notes: list[str] = []
    for kit, r in regs.items():
        if r.weight_based and weight_kg is None:
            raise MissingInputError(
                expected=f"weight_kg for the weight-based dose of {r.drug} ({_num(r.dose or 0)} {r.dose_unit})",
                got=None,
                where=f"{protocol.label} arm {arm.code} kit {kit}",
                todo="send the patient's body weight in kg",
                field="weight_kg",
            )
        doses.extend(_doses_of(kit, r, start, weight_kg))
        for s in r.depends_on_settings:
            depends.setdefault(s, []).append(f"kit {kit}")
        if r.schedule_confidence is not None and r.schedule_confidence != "confirmed":
            notes.append(f"kit {kit}: schedule {r.schedule_confidence}: {r.schedule_note}")
        if r.route == "unknown":
            notes.append(f"kit {kit}: route not captured by the sources")
    # Renal checks of every regimen any arm puts in these kits, so that a blinded kit warns alike in every arm.
    # The check warns when CrCl is below its level (decisive) or not given (undecided); never adjusts a dose.
    for kit in regs:
        checks: set[tuple[str, float]] = set()
        for other in protocol.arms:
            rid = other.kits.get(kit)
            rc = protocol.regimens[rid].renal_check if rid is not None else None
            if rc is not None:
                checks.add((rc.setting, rc.crcl_below_ml_per_min))
        for setting, level in sorted(checks):
            if crcl_ml_per_min is None:
                notes.append(f"kit {kit}: CrCl not given; renal check (CrCl < {_num(level)} mL/min) not done")
                decisive.setdefault(setting, None)
            elif crcl_ml_per_min < level:
                notes.append(
                    f"kit {kit}: CrCl {_num(crcl_ml_per_min)} mL/min < {_num(level)} mL/min; "
                    f"no dose adjustment applied (setting {setting}={used[setting]})"
                )
                decisive[setting] = True
            else:
                continue
            depends.setdefault(setting, []).append(f"kit {kit}")
    warnings = protocol.setting_warnings(depends, used, decisive)
    doses.sort(key=lambda d: (d.due, d.kit))
    return Schedule(
        protocol=protocol.label,
        arm=arm.code,
        start=start,
        doses=tuple(doses),
        weight_kg=weight_kg,
        crcl_ml_per_min=crcl_ml_per_min,
        settings=MappingProxyType(used),
        warnings=warnings,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------------------------
# Reconciliation
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Administration:
    """A dose given from ``kit`` at ``given_at``; ``number`` pins it to a scheduled dose when the chart says which."""

    kit: str
    given_at: datetime
    number: int | None = None
    note: str = ""


@dataclass(frozen=True)
class DoseStatus:
    """One scheduled dose and what happened to it; ``delay_h`` > 0 is late, < 0 early."""

    dose: ScheduledDose
    status: DoseState
    given_at: datetime | None = None
    delay_h: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "kit": self.dose.kit,
            "number": self.dose.number,
            "day": self.dose.day,
            "due": self.dose.due.isoformat(),
            "status": self.status,
            "given_at": self.given_at.isoformat() if self.given_at else None,
            "delay_h": self.delay_h,
        }


@dataclass(frozen=True)
class Reconciliation:
    """Every scheduled dose with its status, and the administrations that matched no scheduled dose."""

    protocol: str
    arm: str
    statuses: tuple[DoseStatus, ...]
    unscheduled: tuple[Administration, ...]
    late_after_h: float
    early_before_h: float | None
    at: datetime | None
    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def of_kit(self, kit: str) -> tuple[DoseStatus, ...]:
        """Statuses of one kit, in dose order."""
        return tuple(s for s in self.statuses if s.dose.kit == kit)

    def flagged(self) -> tuple[DoseStatus, ...]:
        """Doses that are early, late or missed."""
        return tuple(s for s in self.statuses if s.status in ("early", "late", "missed"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "protocol": self.protocol,
            "arm": self.arm,
            "late_after_h": self.late_after_h,
            "early_before_h": self.early_before_h,
            "at": self.at.isoformat() if self.at else None,
            "counts": dict(self.counts),
            "statuses": [s.to_dict() for s in self.statuses],
            "unscheduled": [
                {"kit": a.kit, "given_at": a.given_at.isoformat(), "number": a.number, "note": a.note}
                for a in self.unscheduled
            ],
        }


def _h(later: datetime, earlier: datetime) -> float:
    try:
        return (later - earlier).total_seconds() / 3600.0
    except TypeError:
        raise InputError(
            expected="times that are all timezone-aware or all naive",
            got=f"{later!r} and {earlier!r}",
            where="dose reconciliation",
            todo="send every time with an offset (or none of them)",
        ) from None


def reconcile(
    schedule: Schedule,
    administrations: Iterable[Administration],
    *,
    late_after_h: float,
    early_before_h: float | None = None,
    at: datetime | None = None,
) -> Reconciliation:
    """Match given doses to the schedule and flag each dose on time, early, late, missed or pending.

    Matching, per kit: an administration with ``number`` goes to that dose; otherwise, in time order, to the
    latest unmatched dose due no later than ``given_at + early window`` (a late dose stays with its own slot
    unless the next dose is already due), or, if none, to the next unmatched dose (given early).

    Parameters
    ----------
    schedule : Schedule
        From :func:`dose_schedule`.
    administrations : iterable of Administration
        Doses given (kit, time, optional dose number).
    late_after_h : float
        A dose given more than this many hours after its due time is ``late`` (exactly at the limit is on time).
    early_before_h : float, optional
        A dose given more than this many hours before its due time is ``early``; default
        ``min(late_after_h, interval / 2)`` of the kit.
    at : datetime, optional
        The time of reconciliation. A dose with no administration is ``missed`` once ``at`` is past its due
        time plus ``late_after_h``, else ``pending``. Without ``at``, the latest administration time is used
        (and every dose is ``pending`` when nothing was given).

    Returns
    -------
    Reconciliation
    """
    if not late_after_h >= 0:
        raise InputError(
            expected="late_after_h >= 0",
            got=late_after_h,
            where="reconcile",
            todo="give the tolerance in hours",
        )
    if early_before_h is not None and not early_before_h >= 0:
        raise InputError(expected="early_before_h >= 0", got=early_before_h, where="reconcile", todo="fix")
    given = list(administrations)
    kits = set(schedule.kits)
    for a in given:
        if a.kit not in kits:
            raise InputError(
                expected=f"an administration from a kit of arm {schedule.arm}: {sorted(kits)}",
                got=a.kit,
                where="reconcile",
                todo="record the kit the dose was taken from",
            )
    ref = at
    if ref is None and given:
        ref = given[0].given_at
        for a in given[1:]:
            if _h(a.given_at, ref) > 0:
                ref = a.given_at
    matched: dict[tuple[str, int], Administration] = {}
    unscheduled: list[Administration] = []
    for kit in schedule.kits:
        doses = schedule.kit(kit)
        by_number = {d.number: d for d in doses}
        early_h = early_before_h if early_before_h is not None else min(late_after_h, doses[0].interval_h / 2)
        rest = []
        for a in (a for a in given if a.kit == kit):
            if a.number is None:
                rest.append(a)
            elif a.number in by_number and (kit, a.number) not in matched:
                matched[(kit, a.number)] = a
            else:
                unscheduled.append(a)
        # The doses of a kit are in due order, so "due no later than given_at + early window" holds for a prefix of
        # them: the target is the last unmatched dose of that prefix, else the first unmatched dose (binary search
        # for the prefix, then a walk back to an unmatched dose; the straightforward scan of every dose per
        # administration made recording a course of n doses O(n^3)).
        taken = [(kit, d.number) in matched for d in doses]
        first_free = 0
        in_due_order = not rest or all(_h(b.due, d.due) >= 0 for d, b in zip(doses, doses[1:], strict=False))
        for a in sorted(rest, key=lambda a: _h(a.given_at, schedule.start)):
            if not in_due_order:  # a Schedule built by hand, not by dose_schedule: scan every dose
                free = [d for d in doses if (kit, d.number) not in matched]
                if not free:
                    unscheduled.append(a)
                    continue
                due_by = [d for d in free if _h(a.given_at, d.due) >= -early_h]
                target = due_by[-1] if due_by else free[0]
                matched[(kit, target.number)] = a
                continue
            while first_free < len(doses) and taken[first_free]:
                first_free += 1
            if first_free == len(doses):
                unscheduled.append(a)
                continue
            lo, hi = 0, len(doses)  # first index whose dose is due after the window (the prefix is doses[:lo])
            while lo < hi:
                mid = (lo + hi) // 2
                if _h(a.given_at, doses[mid].due) >= -early_h:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo - 1
            while i >= 0 and taken[i]:
                i -= 1
            t = i if i >= 0 else first_free
            taken[t] = True
            matched[(kit, doses[t].number)] = a
    statuses: list[DoseStatus] = []
    for d in schedule.doses:
        early_h = early_before_h if early_before_h is not None else min(late_after_h, d.interval_h / 2)
        adm = matched.get((d.kit, d.number))
        if adm is not None:
            delay = round(_h(adm.given_at, d.due), 6)
            state: DoseState = "late" if delay > late_after_h else "early" if delay < -early_h else "on_time"
            statuses.append(DoseStatus(d, state, adm.given_at, delay))
        elif ref is not None and _h(ref, d.due) > late_after_h:
            statuses.append(DoseStatus(d, "missed"))
        else:
            statuses.append(DoseStatus(d, "pending"))
    counts = {k: sum(1 for s in statuses if s.status == k) for k in ("on_time", "early", "late", "missed", "pending")}
    return Reconciliation(
        protocol=schedule.protocol,
        arm=schedule.arm,
        statuses=tuple(statuses),
        unscheduled=tuple(unscheduled),
        late_after_h=late_after_h,
        early_before_h=early_before_h,
        at=at,
        counts=MappingProxyType(counts),
    )
