"""ImmunoSep SAP endpoints derived from stored daily rows, with every derived value traceable to its row.

Pure functions over typed records (no I/O, no clock, no randomness). The rules come from the versioned SAP file
(:func:`immunoguide.analysis.sap.load_sap`, spec §5):

* **SOFA response** (primary, days 2–9; secondary, days 2–15): Δ = SOFA(day 1) − mean(SOFA days 2–9), the mean being
  the sum of the 8 daily values divided by 8 (14 values for days 2–15). Days **after** death are scored 24; any other
  missing day is filled by **last observation carried forward** (LOCF, from the last measured day, which may be the
  baseline). Responder if Δ **> 1.4**, literally as the SAP writes it (spec §5.1).
* **Missing baseline**: without a measured day-1 SOFA the endpoint is *not evaluable* and the result says why. Nothing
  is imputed for the baseline (LOCF has nothing to carry, and the SAP names no other rule).
* **Day of death**: the SAP scores "days after death" 24 (SAP p. 66, N087). The death day itself is therefore treated
  like any other day (its SOFA if measured, otherwise LOCF): policy ``death_day = "as_other_days"`` (default). The
  alternative ``"score_24"`` also scores the death day 24. The choice is recorded in every result.
* **Mean SOFA days 1–9 among survivors** (sum / 9), 28- and 90-day **mortality**, the day-15 **infection** category
  (recorded, not derived: the category definitions are unknown) and **reversal of immune dysfunction** with the time
  to reversal, from serial biomarker draws.

Each SOFA result lists one :class:`DayValue` per day of the window with a flag ``measured`` / ``locf`` /
``death_24`` and the stored row (day and ``row_id``) the value came from.

Examples
--------
>>> rows = [DailySofaRecord("p1", 1, 10, row_id="r1")] + [DailySofaRecord("p1", d, 8) for d in range(2, 10)]
>>> r = sofa_response(rows)
>>> r.responder, r.mean_sofa, r.delta
(True, 8.0, 2.0)
>>> rows = [DailySofaRecord("p2", 1, 10), DailySofaRecord("p2", 2, 9), DailySofaRecord("p2", 3, 9, died_on_day=3)]
>>> r = sofa_response(rows)
>>> [(d.day, d.sofa, d.flag) for d in r.days][:3], r.mean_sofa, r.responder
([(2, 9, 'measured'), (3, 9, 'measured'), (4, 24, 'death_24')], 20.25, False)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from immunoguide.analysis.sap import Sap, SofaResponseSpec, load_sap
from immunoguide.errors import ConflictingInputError, ImplausibleValueError, InputError, MissingInputError
from immunoguide.protocols.model import ReversalRule
from immunoguide.units import check_plausible

__all__ = [
    "BiomarkerDraw",
    "DailySofaRecord",
    "DayValue",
    "DrawEvaluation",
    "InfectionOutcomeResult",
    "MeanSofaResult",
    "MortalityResult",
    "ReversalResult",
    "SofaFillPlan",
    "SofaResponseArrays",
    "SofaResponseResult",
    "immune_reversal",
    "infection_outcome_day15",
    "mean_sofa_survivors",
    "mortality",
    "sofa_response",
    "sofa_response_arrays",
    "sofa_response_by_patient",
    "sofa_fill_plan",
]

DayFlag = Literal["measured", "locf", "death_24"]


# ------------------------------------------------------------------------------------------------------------------
# Input records
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DailySofaRecord:
    """One stored daily SOFA row.

    Attributes
    ----------
    patient_id : str
        Trial subject id.
    day : int
        Study day, 1 = baseline (day of randomisation/first dose).
    sofa : int or None
        Total SOFA (points, 0–24) for that day; ``None`` when not assessed.
    died_on_day : int or None
        Study day of death if the patient died (rows written before the death may leave it ``None``; all non-None
        values of one patient must agree).
    row_id : str or None
        Identifier of the stored row, carried into every derived value for traceability.
    """

    patient_id: str
    day: int
    sofa: int | None
    died_on_day: int | None = None
    row_id: str | None = None

    def __post_init__(self) -> None:
        where = f"patient {self.patient_id!r} day {self.day!r}" + (f" (row {self.row_id})" if self.row_id else "")
        if isinstance(self.day, bool) or not isinstance(self.day, int) or self.day < 1:
            raise InputError(
                expected="study day as an integer >= 1 (day 1 = baseline)",
                got=self.day,
                where=where,
                field="day",
                todo="number study days from 1",
            )
        if self.sofa is not None and (
            isinstance(self.sofa, bool) or not isinstance(self.sofa, int) or not 0 <= self.sofa <= 24
        ):
            raise ImplausibleValueError(
                expected="total SOFA as an integer 0-24, or None when not assessed",
                got=self.sofa,
                where=where,
                field="sofa",
                todo="store the integer total; leave it None (not 0) when the day was not scored",
            )
        if self.died_on_day is not None and (
            isinstance(self.died_on_day, bool) or not isinstance(self.died_on_day, int) or self.died_on_day < 1
        ):
            raise InputError(
                expected="died_on_day as a study day >= 1 or None",
                got=self.died_on_day,
                where=where,
                field="died_on_day",
                todo="store the study day of death",
            )


@dataclass(frozen=True)
class DayValue:
    """The value used for one day of an endpoint window and where it came from.

    ``flag`` is ``"measured"`` (the row's own SOFA), ``"locf"`` (carried forward from ``source_day``) or
    ``"death_24"`` (a day after death, scored the SAP's death score; ``source_day`` is None).
    """

    day: int
    sofa: int
    flag: DayFlag
    source_day: int | None
    source_row_id: str | None


@dataclass(frozen=True)
class SofaResponseResult:
    """SOFA-response endpoint for one patient (see :func:`sofa_response`).

    ``mean_sofa`` and ``delta`` are in SOFA points; ``responder`` is None when the endpoint is not evaluable, with
    ``reason`` saying why.
    """

    patient_id: str
    endpoint: str
    label: str
    evaluable: bool
    reason: str | None
    responder: bool | None
    baseline_day: int
    baseline_sofa: int | None
    baseline_row_id: str | None
    mean_sofa: float | None
    delta: float | None
    comparator: str
    threshold: float
    n_values: int
    days: tuple[DayValue, ...]
    died_on_day: int | None
    policies: Mapping[str, str]
    sap_id: str
    sap_version: str

    @property
    def n_measured(self) -> int:
        """Days of the window with a measured SOFA."""
        return sum(d.flag == "measured" for d in self.days)

    @property
    def n_locf(self) -> int:
        """Days of the window filled by last observation carried forward."""
        return sum(d.flag == "locf" for d in self.days)

    @property
    def n_death_scored(self) -> int:
        """Days of the window scored the death score (days after death)."""
        return sum(d.flag == "death_24" for d in self.days)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict, including the per-day trace."""
        d = _plain(self)
        d["n_measured"], d["n_locf"], d["n_death_scored"] = self.n_measured, self.n_locf, self.n_death_scored
        return d


@dataclass(frozen=True)
class MeanSofaResult:
    """Mean SOFA over days 1–9 (sum / 9) for one patient, evaluable only for survivors."""

    patient_id: str
    evaluable: bool
    reason: str | None
    survivor: bool
    mean_sofa: float | None
    n_values: int
    days: tuple[DayValue, ...]
    died_on_day: int | None
    policies: Mapping[str, str]
    sap_id: str
    sap_version: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict, including the per-day trace."""
        return _plain(self)


@dataclass(frozen=True)
class MortalityResult:
    """All-cause mortality by ``horizon_days`` for one patient (``dead`` None when follow-up is too short)."""

    patient_id: str
    horizon_days: int
    evaluable: bool
    reason: str | None
    dead: bool | None
    died_on_day: int | None
    last_known_alive_day: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return _plain(self)


@dataclass(frozen=True)
class InfectionOutcomeResult:
    """Day-15 infection category as recorded, with its rank (0 = best, resolution … 3 = worst, superinfection)."""

    patient_id: str
    evaluable: bool
    reason: str | None
    category: str | None
    rank: int | None
    categories: tuple[str, ...]
    sap_id: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return _plain(self)


@dataclass(frozen=True)
class BiomarkerDraw:
    """One serial biomarker draw.

    Attributes
    ----------
    day : int
        Study day of the draw (the classification draw may be day 0 or 1).
    ferritin_ng_per_ml : float or None
        Serum ferritin, ng/mL.
    hla_dr_per_monocyte : float or None
        Monocyte HLA-DR, antibodies bound per CD45/CD14 monocyte (QuantiBRITE AB/c).
    """

    patient_id: str
    day: int
    ferritin_ng_per_ml: float | None = None
    hla_dr_per_monocyte: float | None = None
    row_id: str | None = None

    def __post_init__(self) -> None:
        where = f"patient {self.patient_id!r} draw day {self.day!r}"
        if isinstance(self.day, bool) or not isinstance(self.day, int) or self.day < 0:
            raise InputError(expected="study day as an integer >= 0", got=self.day, where=where, field="day")
        if self.ferritin_ng_per_ml is not None:
            check_plausible("ferritin_ng_per_ml", self.ferritin_ng_per_ml, where=where)
        if self.hla_dr_per_monocyte is not None:
            check_plausible("hla_dr_per_monocyte", self.hla_dr_per_monocyte, where=where)


@dataclass(frozen=True)
class DrawEvaluation:
    """Whether one follow-up draw met the reversal rule (``met`` None when a needed value is missing)."""

    day: int
    row_id: str | None
    met: bool | None
    detail: str


@dataclass(frozen=True)
class ReversalResult:
    """Reversal of immune dysfunction for one patient, and its time-to-event coding.

    ``time_days`` is the time from the baseline draw to the first draw meeting the rule (``event`` True) or to the
    last assessable draw in the window (``event`` False, censored). Patients with fewer than ``min_draws`` draws are
    not evaluable for the binary endpoint and are coded as non-reversal censored at time 0 (eFigure 6 counts them
    as non-reversal); include or exclude them explicitly.
    """

    patient_id: str
    endotype: str
    evaluable: bool
    reason: str | None
    reversed: bool | None
    reversal_day: int | None
    baseline_day: int | None
    baseline_row_id: str | None
    time_days: float
    event: bool
    n_draws: int
    window_last_day: int
    evidence: tuple[DrawEvaluation, ...]
    policies: Mapping[str, str]
    sap_id: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict, including the per-draw evidence."""
        return _plain(self)


# ------------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------------
def _plain(obj: Any) -> Any:
    """dataclasses.asdict that also turns read-only mappings into dicts (asdict cannot copy a mappingproxy)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _one_patient(records: Sequence[DailySofaRecord]) -> tuple[str, dict[int, DailySofaRecord], int | None]:
    if not records:
        raise MissingInputError(
            expected="at least one daily SOFA record",
            got=[],
            where="sofa endpoint",
            todo="pass the patient's stored daily rows",
        )
    pids = {r.patient_id for r in records}
    if len(pids) != 1:
        raise ConflictingInputError(
            expected="records of exactly one patient",
            got=sorted(pids),
            where="sofa endpoint",
            todo="use sofa_response_by_patient() for many patients",
        )
    pid = records[0].patient_id
    by_day: dict[int, DailySofaRecord] = {}
    for r in records:
        if r.day in by_day:
            raise ConflictingInputError(
                expected="one SOFA row per patient and day",
                got=f"two rows for day {r.day} ({by_day[r.day].row_id!r}, {r.row_id!r})",
                where=f"patient {pid!r}",
                todo="resolve the duplicate in the store before deriving endpoints",
            )
        by_day[r.day] = r
    deaths = {r.died_on_day for r in records if r.died_on_day is not None}
    if len(deaths) > 1:
        raise ConflictingInputError(
            expected="one day of death per patient",
            got=sorted(deaths),
            where=f"patient {pid!r}",
            todo="correct the day of death in the store",
        )
    died = deaths.pop() if deaths else None
    if died is not None:
        late = sorted(d for d, r in by_day.items() if d > died and r.sofa is not None)
        if late:
            raise ConflictingInputError(
                expected=f"no SOFA measured after death on day {died}",
                got=f"SOFA on day(s) {late}",
                where=f"patient {pid!r}",
                todo="check the day of death or the SOFA rows",
            )
    return pid, by_day, died


def _fill_days(
    by_day: Mapping[int, DailySofaRecord],
    died: int | None,
    *,
    start_day: int,
    first_day: int,
    last_day: int,
    death_score: int,
    death_day_policy: str,
) -> tuple[DayValue, ...]:
    """Values for ``first_day..last_day``, carrying forward from any measured day >= ``start_day``."""
    last: tuple[int, int, str | None] | None = None  # (day, sofa, row_id) of the last measured value
    out: list[DayValue] = []
    for day in range(start_day, last_day + 1):
        rec = by_day.get(day)
        after_death = died is not None and (day > died or (death_day_policy == "score_24" and day == died))
        if after_death:
            value = DayValue(day, death_score, "death_24", None, None)
        elif rec is not None and rec.sofa is not None:
            last = (day, rec.sofa, rec.row_id)
            value = DayValue(day, rec.sofa, "measured", day, rec.row_id)
        elif last is not None:
            value = DayValue(day, last[1], "locf", last[0], last[2])
        else:  # nothing to carry forward; callers check the baseline first so this is unreachable for day >= 2
            raise MissingInputError(
                expected=f"a measured SOFA on or before day {day}",
                got=None,
                where=f"day {day}",
                todo="a baseline SOFA is required",
            )
        if day >= first_day:
            out.append(value)
    return tuple(out)


def _policies(sap: Sap, policies: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(sap.resolve_policies(policies))


# ------------------------------------------------------------------------------------------------------------------
# SOFA response
# ------------------------------------------------------------------------------------------------------------------
def sofa_response(
    records: Sequence[DailySofaRecord],
    *,
    endpoint: Literal["d2_9", "d2_15"] = "d2_9",
    sap: Sap | None = None,
    policies: Mapping[str, str] | None = None,
) -> SofaResponseResult:
    """Derive the SAP SOFA-response endpoint for one patient.

    Parameters
    ----------
    records : sequence of DailySofaRecord
        The patient's stored daily rows (any order; days outside the window are ignored except as LOCF sources).
    endpoint : {"d2_9", "d2_15"}
        Primary (days 2–9, 8 values) or secondary (days 2–15, 14 values) window.
    sap : Sap, optional
        The SAP rules (default :func:`load_sap`).
    policies : mapping, optional
        Overrides of the SAP's named policies, e.g. ``{"death_day": "score_24"}``.

    Returns
    -------
    SofaResponseResult
        ``responder`` True if SOFA(day 1) − mean(window) > 1.4 (compared exactly, in rationals), with the per-day
        trace. Not evaluable (``responder`` None, ``reason`` set) if day-1 SOFA is missing.

    Raises
    ------
    ConflictingInputError
        Records of several patients, two rows for one day, two different death days, or SOFA after death.
    PolicyError
        Unknown policy or option.

    References
    ----------
    SAP pp. 66–69 (N087–N089, N093–N094) via spec §5.1–5.2.
    """
    sap = sap or load_sap()
    spec: SofaResponseSpec = sap.sofa_response[endpoint]
    pol = _policies(sap, policies)
    pid, by_day, died = _one_patient(records)
    base = by_day.get(spec.baseline_day)
    common = dict(
        patient_id=pid,
        endpoint=endpoint,
        label=spec.label,
        baseline_day=spec.baseline_day,
        comparator=spec.comparator,
        threshold=spec.threshold,
        n_values=spec.n_values,
        died_on_day=died,
        policies=pol,
        sap_id=sap.id,
        sap_version=sap.version,
    )
    if base is None or base.sofa is None:
        reason = f"no SOFA on day {spec.baseline_day} (baseline): not evaluable; the SAP defines no baseline imputation"
        return SofaResponseResult(
            evaluable=False,
            reason=reason,
            responder=None,
            baseline_sofa=None,
            baseline_row_id=None if base is None else base.row_id,
            mean_sofa=None,
            delta=None,
            days=(),
            **common,  # type: ignore[arg-type]
        )
    days = _fill_days(
        by_day,
        died,
        start_day=spec.baseline_day,
        first_day=spec.first_day,
        last_day=spec.last_day,
        death_score=spec.death_score,
        death_day_policy=pol["death_day"],
    )
    assert len(days) == spec.n_values  # the SAP loader guarantees window length == n_values
    mean = Fraction(sum(d.sofa for d in days), spec.n_values)
    delta = base.sofa - mean
    thr = Fraction(str(spec.threshold))
    responder = delta > thr if spec.comparator == ">" else delta >= thr
    return SofaResponseResult(
        evaluable=True,
        reason=None,
        responder=bool(responder),
        baseline_sofa=base.sofa,
        baseline_row_id=base.row_id,
        mean_sofa=float(mean),
        delta=float(delta),
        days=days,
        **common,  # type: ignore[arg-type]
    )


def sofa_response_by_patient(
    records: Iterable[DailySofaRecord],
    *,
    endpoint: Literal["d2_9", "d2_15"] = "d2_9",
    sap: Sap | None = None,
    policies: Mapping[str, str] | None = None,
) -> dict[str, SofaResponseResult]:
    """:func:`sofa_response` for every patient in ``records`` (grouped by ``patient_id``, in first-seen order)."""
    groups: dict[str, list[DailySofaRecord]] = defaultdict(list)
    for r in records:
        groups[r.patient_id].append(r)
    return {pid: sofa_response(rows, endpoint=endpoint, sap=sap, policies=policies) for pid, rows in groups.items()}


# ------------------------------------------------------------------------------------------------------------------
# Mean SOFA among survivors
# ------------------------------------------------------------------------------------------------------------------
def mean_sofa_survivors(
    records: Sequence[DailySofaRecord],
    *,
    sap: Sap | None = None,
    policies: Mapping[str, str] | None = None,
) -> MeanSofaResult:
    """Mean SOFA over days 1–9 (sum of 9 values / 9) for a survivor; gaps after day 1 filled by LOCF.

    Survivor (policy ``survivors``): ``"alive_through_last_day"`` (default; no death on or before day 9) or
    ``"alive_at_day_28"``. Non-survivors and patients without a day-1 SOFA are not evaluable, with a reason.

    Examples
    --------
    >>> rows = [DailySofaRecord("p", d, 9 - (d // 3)) for d in (1, 2, 3, 5, 9)]
    >>> r = mean_sofa_survivors(rows)
    >>> r.mean_sofa, [d.flag for d in r.days].count("locf")
    (8.0, 4)
    """
    sap = sap or load_sap()
    pol = _policies(sap, policies)
    pid, by_day, died = _one_patient(records)
    first, last, n = sap.mean_sofa_first_day, sap.mean_sofa_last_day, sap.mean_sofa_n_values
    horizon = last if pol["survivors"] == "alive_through_last_day" else 28
    survivor = died is None or died > horizon
    common = dict(patient_id=pid, n_values=n, died_on_day=died, policies=pol, sap_id=sap.id, sap_version=sap.version)
    if not survivor:
        return MeanSofaResult(
            evaluable=False,
            reason=f"died on day {died} (not a survivor under policy survivors={pol['survivors']!r})",
            survivor=False,
            mean_sofa=None,
            days=(),
            **common,  # type: ignore[arg-type]
        )
    base = by_day.get(first)
    if base is None or base.sofa is None:
        return MeanSofaResult(
            evaluable=False,
            reason=f"no SOFA on day {first}: nothing to carry forward; not evaluable",
            survivor=True,
            mean_sofa=None,
            days=(),
            **common,  # type: ignore[arg-type]
        )
    days = _fill_days(
        by_day, died, start_day=first, first_day=first, last_day=last, death_score=24, death_day_policy="as_other_days"
    )
    return MeanSofaResult(
        evaluable=True,
        reason=None,
        survivor=True,
        mean_sofa=float(Fraction(sum(d.sofa for d in days), n)),
        days=days,
        **common,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------------------------------------------
# Mortality and infection outcome
# ------------------------------------------------------------------------------------------------------------------
def mortality(
    patient_id: str,
    *,
    died_on_day: int | None,
    last_known_alive_day: int | None,
    horizon_days: int = 28,
) -> MortalityResult:
    """All-cause death on or before study day ``horizon_days`` (28 or 90 in the SAP).

    Dead if ``died_on_day <= horizon_days``; alive if the patient died later or was known alive on day
    ``horizon_days`` or after; otherwise not evaluable (follow-up ended before the horizon, nothing is assumed).

    Examples
    --------
    >>> mortality("p", died_on_day=None, last_known_alive_day=20).reason
    'last known alive on day 20, before day 28: vital status at day 28 unknown'
    >>> mortality("p", died_on_day=28, last_known_alive_day=27).dead
    True
    """
    for name, v in (("died_on_day", died_on_day), ("last_known_alive_day", last_known_alive_day)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InputError(expected=f"{name} as a study day >= 1 or None", got=v, where=patient_id, field=name)
    if died_on_day is not None and last_known_alive_day is not None and last_known_alive_day > died_on_day:
        raise ConflictingInputError(
            expected="last_known_alive_day <= died_on_day",
            got=(last_known_alive_day, died_on_day),
            where=patient_id,
            todo="check the death date and the last contact",
        )
    common = dict(
        patient_id=patient_id,
        horizon_days=horizon_days,
        died_on_day=died_on_day,
        last_known_alive_day=last_known_alive_day,
    )
    if died_on_day is not None:
        return MortalityResult(evaluable=True, reason=None, dead=died_on_day <= horizon_days, **common)  # type: ignore[arg-type]
    if last_known_alive_day is not None and last_known_alive_day >= horizon_days:
        return MortalityResult(evaluable=True, reason=None, dead=False, **common)  # type: ignore[arg-type]
    reason = (
        f"last known alive on day {last_known_alive_day}, before day {horizon_days}: "
        f"vital status at day {horizon_days} unknown"
        if last_known_alive_day is not None
        else "no death and no last-contact day recorded"
    )
    return MortalityResult(evaluable=False, reason=reason, dead=None, **common)  # type: ignore[arg-type]


def infection_outcome_day15(patient_id: str, category: str | None, *, sap: Sap | None = None) -> InfectionOutcomeResult:
    """Validate and rank the recorded day-15 infection category (resolution < intermediate < failure < superinfection).

    Examples
    --------
    >>> infection_outcome_day15("p", "failure").rank
    2
    """
    sap = sap or load_sap()
    cats = sap.infection_categories
    if category is None:
        return InfectionOutcomeResult(
            patient_id, False, "no day-15 infection assessment recorded", None, None, cats, sap.id
        )
    if category not in cats:
        raise InputError(
            expected=f"one of {list(cats)}",
            got=category,
            where=f"patient {patient_id!r} day-15 infection outcome",
            field="category",
            todo="record one of the four SAP categories",
        )
    return InfectionOutcomeResult(patient_id, True, None, category, cats.index(category), cats, sap.id)


# ------------------------------------------------------------------------------------------------------------------
# Reversal of immune dysfunction
# ------------------------------------------------------------------------------------------------------------------
_CMP = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
_DRAW_FIELD = {"ferritin_ng_per_ml": "ferritin_ng_per_ml", "hla_dr_per_monocyte": "hla_dr_per_monocyte"}


def _draw_value(draw: BiomarkerDraw, concept: str) -> float | None:
    try:
        return getattr(draw, _DRAW_FIELD[concept])
    except KeyError:
        raise InputError(
            expected=f"a biomarker the draw records ({sorted(_DRAW_FIELD)})",
            got=concept,
            where="reversal rule",
            todo="extend BiomarkerDraw before using this concept",
        ) from None


def _evaluate_draw(rule: ReversalRule, baseline: BiomarkerDraw, draw: BiomarkerDraw) -> DrawEvaluation:
    parts: list[str] = []
    results: list[bool | None] = []
    if rule.relative_fall_concept is not None and rule.relative_fall_fraction is not None:
        b, v = _draw_value(baseline, rule.relative_fall_concept), _draw_value(draw, rule.relative_fall_concept)
        if b is None or v is None or b == 0:
            results.append(None)
            parts.append(f"{rule.relative_fall_concept}: baseline or follow-up value missing")
        else:
            fall = (Fraction(b) - Fraction(v)) / Fraction(b)
            ok = fall >= Fraction(str(rule.relative_fall_fraction))
            results.append(ok)
            parts.append(
                f"{rule.relative_fall_concept} fall {float(fall):.1%} (>= {rule.relative_fall_fraction:.0%}: {ok})"
            )
    if rule.all_of:
        sub: list[bool | None] = []
        for c in rule.all_of:
            v = _draw_value(draw, c.concept)
            if v is None:
                sub.append(None)
                parts.append(f"{c.analyte} missing")
            else:
                ok = _CMP[c.comparator](v, c.threshold)
                sub.append(ok)
                parts.append(f"{c.analyte} {v:g} {c.comparator} {c.threshold:g}: {ok}")
        results.append(False if False in sub else (None if None in sub else True))
    # any_of over the rule's parts (ReversalRule semantics)
    met: bool | None = True if True in results else (None if None in results else False)
    return DrawEvaluation(draw.day, draw.row_id, met, "; ".join(parts))


def immune_reversal(
    draws: Sequence[BiomarkerDraw],
    *,
    endotype: Literal["MALS", "SII"],
    sap: Sap | None = None,
    policies: Mapping[str, str] | None = None,
    rule: ReversalRule | None = None,
) -> ReversalResult:
    """Reversal of immune dysfunction on serial draws, and the time to reversal.

    The first (earliest) draw is the classification baseline. A later draw within the window (policy
    ``reversal_window``: ``"day_28"`` default, per JAMA Table 2; ``"day_15"`` per SAP p. 69) reverses the endotype if
    it meets the rule: MALS, ferritin fall >= 15 % from baseline; SII, HLA-DR > 8000 AB/c **and** ferritin
    < 4420 ng/mL (thresholds as printed; the per-stratum mapping is *likely*, spec §5.2).

    Examples
    --------
    >>> d = [BiomarkerDraw("p", 1, ferritin_ng_per_ml=6000), BiomarkerDraw("p", 4, ferritin_ng_per_ml=5100)]
    >>> r = immune_reversal(d, endotype="MALS")
    >>> r.reversed, r.reversal_day, r.time_days, r.event
    (True, 4, 3.0, True)
    """
    sap = sap or load_sap()
    pol = _policies(sap, policies)
    if rule is None:
        if endotype not in sap.reversals:
            raise InputError(expected=f"one of {sorted(sap.reversals)}", got=endotype, where="immune_reversal")
        rule = sap.reversals[endotype]
    window_last = 28 if pol["reversal_window"] == "day_28" else 15
    if not draws:
        raise MissingInputError(expected="at least one biomarker draw", got=[], where="immune_reversal")
    pids = {d.patient_id for d in draws}
    if len(pids) != 1:
        raise ConflictingInputError(expected="draws of one patient", got=sorted(pids), where="immune_reversal")
    pid = draws[0].patient_id
    ordered = sorted(draws, key=lambda d: d.day)
    days = [d.day for d in ordered]
    if len(set(days)) != len(days):
        raise ConflictingInputError(
            expected="one draw per day", got=days, where=f"patient {pid!r}", todo="merge same-day draws in the store"
        )
    in_window = [d for d in ordered if d.day <= window_last]
    common = dict(patient_id=pid, endotype=endotype, window_last_day=window_last, policies=pol, sap_id=sap.id)
    if len(in_window) < sap.reversal_min_draws:
        return ReversalResult(
            evaluable=False,
            reason=f"{len(in_window)} draw(s) by day {window_last}; reversal needs >= {sap.reversal_min_draws}",
            reversed=None,
            reversal_day=None,
            baseline_day=in_window[0].day if in_window else None,
            baseline_row_id=in_window[0].row_id if in_window else None,
            time_days=0.0,
            event=False,
            n_draws=len(in_window),
            evidence=(),
            **common,  # type: ignore[arg-type]
        )
    baseline = in_window[0]
    evidence = tuple(_evaluate_draw(rule, baseline, d) for d in in_window[1:])
    hit = next((e for e in evidence if e.met is True), None)
    assessable = [e for e in evidence if e.met is not None]
    if hit is not None:
        time, event, rev = float(hit.day - baseline.day), True, True
    else:
        last_day = assessable[-1].day if assessable else baseline.day
        time, event, rev = float(last_day - baseline.day), False, False
    return ReversalResult(
        evaluable=True,
        reason=None,
        reversed=rev,
        reversal_day=hit.day if hit else None,
        baseline_day=baseline.day,
        baseline_row_id=baseline.row_id,
        time_days=time,
        event=event,
        n_draws=len(in_window),
        evidence=evidence,
        **common,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------------------------------------------
# Vectorised SOFA response (simulation and bulk use; same rules as sofa_response)
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SofaResponseArrays:
    """Per-patient arrays from :func:`sofa_response_arrays` (``n`` patients)."""

    responder: np.ndarray = field(repr=False)
    evaluable: np.ndarray = field(repr=False)
    mean_sofa: np.ndarray = field(repr=False)
    delta: np.ndarray = field(repr=False)
    n_locf: np.ndarray = field(repr=False)
    n_death_scored: np.ndarray = field(repr=False)


def sofa_response_arrays(
    baseline: np.ndarray,
    window: np.ndarray,
    died_on_day: np.ndarray,
    *,
    endpoint: Literal["d2_9", "d2_15"] = "d2_9",
    sap: Sap | None = None,
    policies: Mapping[str, str] | None = None,
) -> SofaResponseArrays:
    """Vectorised :func:`sofa_response` over many patients (numpy; the same SAP rules).

    Parameters
    ----------
    baseline : (n,) float array
        Day-1 SOFA (points); NaN = missing (patient not evaluable).
    window : (n, n_values) float array
        SOFA on ``first_day..last_day`` (points); NaN = not assessed (LOCF applies; after death the death score).
    died_on_day : (n,) float array
        Study day of death; NaN or inf = no death.

    Returns
    -------
    SofaResponseArrays
        ``responder`` is False where not evaluable; use ``evaluable`` to tell them apart.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.full((2, 8), 8.0); w[1, 3:] = np.nan
    >>> r = sofa_response_arrays(np.array([10.0, 10.0]), w, np.array([np.nan, 4.0]))
    >>> r.responder.tolist(), r.mean_sofa.tolist(), r.n_death_scored.tolist()
    ([True, False], [8.0, 18.0], [0, 5])
    """
    sap = sap or load_sap()
    spec = sap.sofa_response[endpoint]
    pol = sap.resolve_policies(policies)
    baseline = np.asarray(baseline, dtype=float)
    window = np.asarray(window, dtype=float)
    died = np.asarray(died_on_day, dtype=float)
    n = baseline.shape[0]
    if window.shape != (n, spec.n_values) or died.shape != (n,):
        raise InputError(
            expected=f"baseline (n,), window (n, {spec.n_values}), died_on_day (n,)",
            got=(baseline.shape, window.shape, died.shape),
            where="sofa_response_arrays",
            todo="pass one column per day of the window",
        )
    plan = sofa_fill_plan(np.isnan(baseline), np.isnan(window), died, spec=spec, death_day=pol["death_day"])
    total = plan.totals(baseline, window)
    evaluable = ~np.isnan(baseline)
    responder = plan.responders(baseline, total) & evaluable
    mean = total / spec.n_values
    return SofaResponseArrays(
        responder=responder,
        evaluable=evaluable,
        mean_sofa=np.where(evaluable, mean, np.nan),
        delta=np.where(evaluable, baseline - mean, np.nan),
        n_locf=(plan.locf & evaluable[:, None]).sum(axis=1),
        n_death_scored=plan.dead.sum(axis=1),
    )


@dataclass(frozen=True)
class SofaFillPlan:
    """Where each window value comes from under the SAP rules, for many patients at once.

    The plan depends only on which values are missing and on the day of death, so a simulation can build it once
    and apply it to many candidate trajectories. ``source`` indexes the matrix ``[baseline | window]``;
    ``dead`` marks days after death (death score); ``locf`` marks days carried forward.
    """

    spec: SofaResponseSpec
    source: np.ndarray = field(repr=False)
    dead: np.ndarray = field(repr=False)
    locf: np.ndarray = field(repr=False)

    def totals(self, baseline: np.ndarray, window: np.ndarray) -> np.ndarray:
        """Sum over the window of the filled daily values (points)."""
        full = np.concatenate([baseline[:, None], window], axis=1)
        vals = np.take_along_axis(full, self.source, axis=1)
        return np.where(self.dead, float(self.spec.death_score), vals).sum(axis=1)

    def responders(self, baseline: np.ndarray, totals: np.ndarray) -> np.ndarray:
        """Responder if baseline − totals / n > threshold (compared as n·baseline − total > n·threshold).

        Exact for integer SOFA: n·1.4 is not an integer for n = 8 or 14, so no tie can be mis-rounded.
        """
        lhs = self.spec.n_values * baseline - totals
        rhs = self.spec.n_values * self.spec.threshold
        return (lhs > rhs) if self.spec.comparator == ">" else (lhs >= rhs)


def sofa_fill_plan(
    baseline_missing: np.ndarray,
    window_missing: np.ndarray,
    died_on_day: np.ndarray,
    *,
    spec: SofaResponseSpec,
    death_day: str = "as_other_days",
) -> SofaFillPlan:
    """The SAP fill rules (death score after death, else LOCF from the last measured day) as index arithmetic."""
    died = np.where(np.isnan(died_on_day), np.inf, died_on_day)
    day = np.arange(spec.first_day, spec.last_day + 1, dtype=float)[None, :]
    dead = day >= died[:, None] if death_day == "score_24" else day > died[:, None]
    present = np.concatenate([~baseline_missing[:, None], ~window_missing & ~dead], axis=1)
    idx = np.where(present, np.arange(present.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return SofaFillPlan(spec=spec, source=idx[:, 1:], dead=dead, locf=window_missing & ~dead)
