"""Sepsis-3 over one patient's timeline: suspected infection, then a SOFA rise ≥ 2 around it.

The windows, the threshold and the named policies are data (``criteria/sepsis3_singer_2016.toml``), read by
:func:`immunoguide.criteria.load_sepsis3_criteria` (the one criteria loader); this module holds only the pairing
and onset logic. Pure functions, no I/O.

Suspected infection (per antibiotic, as mimic-code ``sepsis/suspicion_of_infection.sql``)
    For each antibiotic administration at ``abx``, the *earliest* culture with ``culture < abx <= culture + 72 h``
    (culture first) is taken; only if there is none, the earliest culture with ``culture − 24 h <= abx < culture``
    (antibiotic first). Ties at the same culture time prefer a positive culture, then an unknown result, then the
    specimen name. The suspected-infection (SI) time is the culture time if the culture came first, else the
    antibiotic time. Under policy ``simultaneous_antibiotic_culture = paired`` a culture at exactly ``abx`` is a
    culture-first candidate too (direction ``"simultaneous"``). One SI per paired antibiotic, sorted by
    (SI time, antibiotic time, culture time). Which antibiotics belong to the stay is the adapter's decision
    (mimic-code keeps antibiotics started inside the ICU stay).

Suspected infection, ricu (policy ``suspected_infection_pairing = ricu_hourly_rolling``; ricu ``susp_inf``, ``si_and``)
    Antibiotic and culture times are first floored to whole hours since ICU admission (ricu's time index). An
    antibiotic hour followed by a culture hour within 24 h (the same hour included) is an SI at the antibiotic
    hour; a culture hour followed by an antibiotic hour within 72 h is an SI at the culture hour (each takes the
    *next* partner, ricu's rolling joins); one SI per hour, the antibiotic-first one kept when both give the same
    hour. SI, antibiotic and culture times are reported as the starts of their hours, and the SOFA window compares
    hourly-row *starts* (``hour_end − 1 h``) with ``[SI − 48 h, SI + 24 h]`` (ricu ``sep3``: rows ``k`` with
    ``SI − 48 <= k <= SI + 24``).

First hourly row (policy ``sofa_rows_from``)
    ``icu_admission`` (default): the hourly rows start at ICU admission. ``first_sofa_datum`` (ricu, which computes
    SOFA over every datum of the hospital admission attached to the stay, from the first to the last): the rows start
    at the stay's earliest SOFA datum (platelets, bilirubin, creatinine, MAP, PaO2, GCS, urine, a catecholamine or
    ventilation start), before or after ICU admission; a stay without one starts at ICU admission.

Onset (per SI, policy ``si_window`` chooses the SI: the first, or each in order until one has an onset)
    The hourly SOFA rows with ``SI − 48 h <= hour_end <= SI + 24 h`` and a total are scanned in time order; the
    onset is the first row meeting the baseline policy with a rise of at least 2 points:

    * ``running_minimum`` (ricu ``delta_cummin``, default): total − min(totals of the window's rows up to here);
    * ``zero`` (mimic-code ``sepsis3.sql``): total − 0;
    * ``immunosep_registry`` (ImmunoSep I5, NCT04990232): ED admissions total − 0; inpatients total − the admission
      SOFA, i.e. the total of the first hourly row with ``hour_end >= admission_time``. An unknown admission source
      or admission time makes the result ``indeterminate``, never "no sepsis".

References
----------
Singer M et al. JAMA 2016;315:801-810. doi:10.1001/jama.2016.0287.
Seymour CW et al. JAMA 2016;315:762-774. doi:10.1001/jama.2016.0288.

Examples
--------
>>> from datetime import datetime, timedelta
>>> from immunoguide.rules.timeline import AntibioticAdministration, CultureSample, Observation, PatientTimeline
>>> t0 = datetime(2024, 3, 1, 0, 0)
>>> tl = PatientTimeline(
...     stay_id=7, icu_intime=t0, icu_outtime=t0 + timedelta(days=3),
...     cultures=[CultureSample(time=t0 + timedelta(hours=10), specimen="BLOOD CULTURE")],
...     antibiotics=[AntibioticAdministration(time=t0 + timedelta(hours=12), name="piperacillin-tazobactam")],
...     observations=[Observation(time=t0 + timedelta(hours=2), concept="platelets_10e3_per_ul", value=180),
...                   Observation(time=t0 + timedelta(hours=14, minutes=20), concept="platelets_10e3_per_ul",
...                               value=45)])
>>> si = suspected_infections(tl)
>>> si[0].direction, si[0].time == t0 + timedelta(hours=10)
('culture_first', True)
>>> r = sepsis3_onset(tl)
>>> r.status, r.onset_time - t0, r.baseline_sofa, r.sofa_at_onset, r.delta
('onset', datetime.timedelta(seconds=54000), 0, 3, 3)
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from immunoguide.criteria import Sepsis3Criteria, load_sepsis3_criteria, load_sepsis3_criteria_text
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.criteria.implemented import SEPSIS3_POLICIES
from immunoguide.errors import ConflictingInputError, PolicyError
from immunoguide.rules.hourly import HOUR, HourlySofa, ceil_hour, hourly_sofa
from immunoguide.rules.timeline import CultureSample, PatientTimeline

__all__ = [
    "IMPLEMENTED_POLICIES",
    "Sepsis3Criteria",
    "Sepsis3Result",
    "SOFA_DATA_CONCEPTS",
    "SuspectedInfection",
    "earliest_sofa_datum",
    "load_sepsis3_criteria",
    "load_sepsis3_criteria_text",
    "sepsis3_onset",
    "suspected_infections",
]

#: Policies and options this module implements; the criteria file must declare exactly these.
IMPLEMENTED_POLICIES: Mapping[str, frozenset[str]] = SEPSIS3_POLICIES

Direction = Literal["culture_first", "antibiotic_first", "simultaneous"]
Status = Literal["onset", "no_onset", "no_suspected_infection", "indeterminate"]


def _crit(criteria: str | Sepsis3Criteria) -> Sepsis3Criteria:
    return load_sepsis3_criteria(criteria) if isinstance(criteria, str) else criteria


# --------------------------------------------------------------------------------------------------------------
# Suspected infection
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuspectedInfection:
    """One antibiotic paired with a culture: the suspected-infection time and how it was found."""

    time: datetime
    antibiotic_time: datetime
    culture_time: datetime
    direction: Direction
    antibiotic: str = ""
    specimen: str = ""
    positive_culture: bool | None = None


def _culture_rank(c: CultureSample) -> tuple[Any, ...]:
    return (c.time, {True: 0, None: 1, False: 2}[c.positive], c.specimen)


def suspected_infections(
    timeline: PatientTimeline,
    *,
    criteria: str | Sepsis3Criteria = "sepsis3",
    policies: Mapping[str, str] | None = None,
    antibiotic_then_culture_h: float | None = None,
    culture_then_antibiotic_h: float | None = None,
) -> tuple[SuspectedInfection, ...]:
    """Pair each antibiotic with a culture (mimic-code rule; windows from the criteria file unless given).

    Parameters
    ----------
    timeline : PatientTimeline
        The stay (its ``antibiotics`` and ``cultures``).
    criteria : str or Sepsis3Criteria
        Criteria id or loaded criteria (windows and policies).
    policies : mapping, optional
        Overrides of the Sepsis-3 policies (``simultaneous_antibiotic_culture`` is used here).
    antibiotic_then_culture_h, culture_then_antibiotic_h : float, optional
        Override the windows (hours; default 24 and 72 from the file).

    Returns
    -------
    tuple of SuspectedInfection
        One per paired antibiotic, sorted by (SI time, antibiotic time, culture time).
    """
    crit = _crit(criteria)
    resolved = crit.resolve_policies(policies)
    w_abx_first = (
        timedelta(hours=antibiotic_then_culture_h)
        if antibiotic_then_culture_h is not None
        else crit.window("antibiotic_then_culture_h")
    )
    w_cx_first = (
        timedelta(hours=culture_then_antibiotic_h)
        if culture_then_antibiotic_h is not None
        else crit.window("culture_then_antibiotic_h")
    )
    for name, w in (("antibiotic_then_culture_h", w_abx_first), ("culture_then_antibiotic_h", w_cx_first)):
        if w <= timedelta(0):
            raise PolicyError(expected=f"{name} > 0", got=w.total_seconds() / 3600, where=name, todo="give hours > 0")
    if resolved["suspected_infection_pairing"] == "ricu_hourly_rolling":
        return _ricu_suspected_infections(timeline, w_abx_first, w_cx_first)
    simultaneous = resolved["simultaneous_antibiotic_culture"] == "paired"
    cultures = sorted(timeline.cultures, key=_culture_rank)
    ctimes = [c.time for c in cultures]
    out: list[SuspectedInfection] = []
    for a in timeline.antibiotics:
        ta = a.time
        # Culture first: culture < abx <= culture + W  <=>  abx - W <= culture < abx (<= abx when paired).
        lo = bisect_left(ctimes, ta - w_cx_first)
        hi = bisect_right(ctimes, ta) if simultaneous else bisect_left(ctimes, ta)
        if lo < hi:
            c = cultures[lo]
            direction: Direction = "simultaneous" if c.time == ta else "culture_first"
            out.append(SuspectedInfection(c.time, ta, c.time, direction, a.name, c.specimen, c.positive))
            continue
        # Antibiotic first: culture - W <= abx < culture  <=>  abx < culture <= abx + W.
        lo = bisect_right(ctimes, ta)
        hi = bisect_right(ctimes, ta + w_abx_first)
        if lo < hi:
            c = cultures[lo]
            out.append(SuspectedInfection(ta, ta, c.time, "antibiotic_first", a.name, c.specimen, c.positive))
    out.sort(key=lambda s: (s.time, s.antibiotic_time, s.culture_time))
    return tuple(out)


def _ricu_suspected_infections(
    timeline: PatientTimeline, w_abx_first: timedelta, w_cx_first: timedelta
) -> tuple[SuspectedInfection, ...]:
    """ricu ``si_and`` on whole hours since ICU admission (see the module docstring)."""
    t0 = timeline.icu_intime

    def hour(t: datetime) -> int:
        return int((t - t0) // HOUR)

    abx = sorted({hour(a.time) for a in timeline.antibiotics})
    cx = sorted({hour(c.time) for c in timeline.cultures})
    by_hour: dict[int, SuspectedInfection] = {}

    def at(k: int) -> datetime:
        return t0 + k * HOUR

    for ka in abx:  # antibiotic, then the next culture within 24 h
        i = bisect_left(cx, ka)
        if i < len(cx) and (cx[i] - ka) * HOUR <= w_abx_first:
            by_hour.setdefault(ka, SuspectedInfection(at(ka), at(ka), at(cx[i]), "antibiotic_first"))
    for kc in cx:  # culture, then the next antibiotic within 72 h
        i = bisect_left(abx, kc)
        if i < len(abx) and (abx[i] - kc) * HOUR <= w_cx_first:
            direction: Direction = "simultaneous" if abx[i] == kc else "culture_first"
            by_hour.setdefault(kc, SuspectedInfection(at(kc), at(abx[i]), at(kc), direction))
    return tuple(by_hour[k] for k in sorted(by_hour))


def earliest_sofa_datum(timeline: PatientTimeline) -> datetime | None:
    """The stay's earliest SOFA datum (policy ``sofa_rows_from = first_sofa_datum``; see the module docstring)."""
    times = [o.time for o in timeline.observations if o.concept in SOFA_DATA_CONCEPTS]
    times += [i.start for i in timeline.infusions if i.drug in _CATECHOLAMINE_DRUGS]
    times += [v.start for v in timeline.ventilation]
    return min(times) if times else None


#: Observation concepts whose earliest time starts the rows under ``sofa_rows_from = first_sofa_datum``.
SOFA_DATA_CONCEPTS = frozenset(
    {"platelets_10e3_per_ul", "bilirubin_mg_per_dl", "creatinine_mg_per_dl", "map_mmhg", "pao2_mmhg", "gcs",
     "gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total_charted", "urine_output_ml"}
)  # fmt: skip
_CATECHOLAMINE_DRUGS = frozenset(SOFA_DEFINITIONS.catecholamines)


# --------------------------------------------------------------------------------------------------------------
# Onset
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sepsis3Result:
    """Sepsis-3 for one stay: the suspected infection used, the onset hour and how it was decided.

    ``status`` is ``"onset"``, ``"no_onset"`` (an SI but no qualifying rise), ``"no_suspected_infection"`` or
    ``"indeterminate"`` (the baseline policy needs a fact the timeline lacks; see ``notes``). Times are hourly-row
    ends (``onset_time``) or as charted (SI, antibiotic, culture).
    """

    stay_id: str | int
    status: Status
    suspected_infection_time: datetime | None
    antibiotic_time: datetime | None
    culture_time: datetime | None
    onset_time: datetime | None
    baseline_sofa: int | None
    sofa_at_onset: int | None
    delta: int | None
    baseline_policy: str
    criteria: str
    sofa_criteria: str | None
    policies: Mapping[str, str]
    sofa_policies: Mapping[str, str]
    windows_h: Mapping[str, float]
    notes: tuple[str, ...] = ()
    suspected_infection: SuspectedInfection | None = field(default=None, repr=False)

    @property
    def sepsis(self) -> bool | None:
        """True with an onset, False without, None when indeterminate."""
        return None if self.status == "indeterminate" else self.status == "onset"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary of the result."""

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "stay_id": self.stay_id,
            "status": self.status,
            "suspected_infection_time": iso(self.suspected_infection_time),
            "antibiotic_time": iso(self.antibiotic_time),
            "culture_time": iso(self.culture_time),
            "onset_time": iso(self.onset_time),
            "baseline_sofa": self.baseline_sofa,
            "sofa_at_onset": self.sofa_at_onset,
            "delta": self.delta,
            "baseline_policy": self.baseline_policy,
            "criteria": self.criteria,
            "sofa_criteria": self.sofa_criteria,
            "policies": dict(self.policies),
            "sofa_policies": dict(self.sofa_policies),
            "windows_h": dict(self.windows_h),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Found:
    onset: HourlySofa | None
    baseline: int | None
    indeterminate: bool = False


def _admission_sofa(timeline: PatientTimeline, rows: Sequence[HourlySofa], notes: list[str]) -> int | None:
    if timeline.admission_time is None:
        notes.append("immunosep_registry: inpatient without admission_time; admission SOFA unknown")
        return None
    adm = timeline.admission_time
    for r in rows:
        if r.hour_end >= adm and r.total is not None:
            gap = (r.hour_end - ceil_hour(adm)) / timedelta(hours=1)
            if gap > 0:
                notes.append(
                    f"immunosep_registry: admission SOFA {r.total} taken from the row ending {r.hour_end.isoformat()},"
                    f" {gap:g} h after the hospital admission hour (no earlier hourly row)"
                )
            return r.total
    notes.append("immunosep_registry: no hourly SOFA row at or after hospital admission; admission SOFA unknown")
    return None


def _find_onset(
    timeline: PatientTimeline,
    rows: Sequence[HourlySofa],
    si: SuspectedInfection,
    crit: Sepsis3Criteria,
    baseline_policy: str,
    notes: list[str],
    row_starts: bool = False,
) -> _Found:
    lo = si.time - crit.window("sofa_before_si_h")
    hi = si.time + crit.window("sofa_after_si_h")
    # ricu pairing: SI is an hour start, and rows are compared by their starts (ricu sep3 on hour indices)
    shift = HOUR if row_starts else timedelta(0)
    in_window = [r for r in rows if lo <= r.hour_end - shift <= hi]
    scored = [r for r in in_window if r.total is not None]
    if len(scored) < len(in_window):
        notes.append(
            f"SI {si.time.isoformat()}: {len(in_window) - len(scored)} window rows have no total "
            "(missing_component = no_imputation) and were skipped"
        )
    if not scored:
        notes.append(f"SI {si.time.isoformat()}: no hourly SOFA row in [{lo.isoformat()}, {hi.isoformat()}]")
    elif scored[0].hour_end - shift > (lo if row_starts else ceil_hour(lo)):
        notes.append(
            f"SI {si.time.isoformat()}: window opens at {lo.isoformat()} but the first hourly row ends "
            f"{scored[0].hour_end.isoformat()}"
        )
    thr = crit.sofa_rise_points
    fixed: int | None
    if baseline_policy == "zero":
        fixed = 0
    elif baseline_policy == "immunosep_registry":
        source = timeline.admission_source
        if source is None:
            notes.append("immunosep_registry: admission_source unknown (ED or inpatient); I5 cannot be applied")
            return _Found(None, None, indeterminate=True)
        if source == "emergency_department":
            fixed = 0
        else:
            fixed = _admission_sofa(timeline, rows, notes)
            if fixed is None:
                return _Found(None, None, indeterminate=True)
    else:
        fixed = None
    running = math.inf
    for r in scored:
        total = r.total
        assert total is not None
        if fixed is None:
            running = min(running, total)
            base = int(running)
        else:
            base = fixed
        if total - base >= thr:
            return _Found(r, base)
    return _Found(None, None)


def sepsis3_onset(
    timeline: PatientTimeline,
    *,
    hourly: Sequence[HourlySofa] | None = None,
    suspected: Sequence[SuspectedInfection] | None = None,
    criteria: str | Sepsis3Criteria = "sepsis3",
    policies: Mapping[str, str] | None = None,
    sofa_criteria: str = "sofa1",
    sofa_policies: Mapping[str, str] | None = None,
) -> Sepsis3Result:
    """Sepsis-3 onset: the first hourly row around a suspected infection with a SOFA rise ≥ 2.

    Parameters
    ----------
    timeline : PatientTimeline
        The stay (admission source and time are read for ``immunosep_registry``).
    hourly : sequence of HourlySofa, optional
        Precomputed hourly SOFA rows in time order; default :func:`~immunoguide.rules.hourly.hourly_sofa` over the
        ICU stay with ``sofa_criteria`` and ``sofa_policies``.
    suspected : sequence of SuspectedInfection, optional
        Precomputed suspected infections; default :func:`suspected_infections` with the same criteria and policies.
    criteria : str or Sepsis3Criteria
        Sepsis-3 criteria id or loaded criteria (windows, threshold, policies).
    policies : mapping, optional
        Overrides of the Sepsis-3 policies ``baseline``, ``si_window``, ``simultaneous_antibiotic_culture``.
    sofa_criteria, sofa_policies : optional
        Passed to hourly_sofa when ``hourly`` is not given (``sofa_policies`` with ``hourly`` is an error).

    Returns
    -------
    Sepsis3Result
        Status, SI/antibiotic/culture times, onset hour, baseline, SOFA at onset, delta, criteria labels,
        every policy and notes.
    """
    crit = _crit(criteria)
    resolved = crit.resolve_policies(policies)
    if hourly is None:
        start = earliest_sofa_datum(timeline) if resolved["sofa_rows_from"] == "first_sofa_datum" else None
        rows = hourly_sofa(timeline, criteria=sofa_criteria, policies=sofa_policies, start=start)
    else:
        if sofa_policies is not None:
            raise ConflictingInputError(
                expected="either precomputed hourly rows or sofa_policies",
                got="both",
                where="sepsis3_onset",
                todo="compute the rows with the policies you want and pass only the rows",
            )
        rows = tuple(sorted(hourly, key=lambda r: r.hour_end))
    sis = (
        tuple(suspected) if suspected is not None else suspected_infections(timeline, criteria=crit, policies=resolved)
    )
    notes: list[str] = []
    baseline_policy = resolved["baseline"]

    def result(status: Status, si: SuspectedInfection | None, found: _Found | None = None) -> Sepsis3Result:
        onset = found.onset if found else None
        return Sepsis3Result(
            stay_id=timeline.stay_id,
            status=status,
            suspected_infection_time=si.time if si else None,
            antibiotic_time=si.antibiotic_time if si else None,
            culture_time=si.culture_time if si else None,
            onset_time=onset.hour_end if onset else None,
            baseline_sofa=found.baseline if found and onset else None,
            sofa_at_onset=onset.total if onset else None,
            delta=(onset.total - found.baseline)
            if found and onset and onset.total is not None and found.baseline is not None
            else None,
            baseline_policy=baseline_policy,
            criteria=crit.label,
            sofa_criteria=rows[0].criteria if rows else None,
            policies=MappingProxyType(dict(resolved)),
            sofa_policies=MappingProxyType(dict(rows[0].policies)) if rows else MappingProxyType({}),
            windows_h=crit.windows_h,
            notes=tuple(notes),
            suspected_infection=si,
        )

    if not sis:
        return result("no_suspected_infection", None)
    candidates = sis[:1] if resolved["si_window"] == "first" else sis
    row_starts = resolved["suspected_infection_pairing"] == "ricu_hourly_rolling"
    for si in candidates:
        found = _find_onset(timeline, rows, si, crit, baseline_policy, notes, row_starts)
        if found.indeterminate:
            return result("indeterminate", si)
        if found.onset is not None:
            return result("onset", si, found)
    return result("no_onset", sis[0])
