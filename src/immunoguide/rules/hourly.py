"""Hourly SOFA-1 over one patient's timeline, with the 24-hour rolling worst per component.

This module defines *the* hourly SOFA of immunoguide. The set-based cohort engine must reproduce it row for row, so
every choice is named (H1 … H13) and stated as an inequality a SQL window can express.

Semantics
---------
H1 Grid.
    Rows are clock hours. A row is identified by ``hour_end`` (on the hour) and covers the half-open interval
    ``(hour_end − 1 h, hour_end]``: a time ``t`` belongs to the row ``ceil_hour(t)`` (``t`` itself when ``t`` is on
    the hour, else the next clock hour). Output rows run from ``ceil_hour(start)`` to ``ceil_hour(end)`` inclusive;
    by default ``start = icu_intime`` and ``end = icu_outtime`` (or, for an open stay, the latest clinical time of
    the timeline, never earlier than ``start``).
H2 Look-back.
    The 23 rows before the first output row are computed too, so that data charted up to 23 h before ``start``
    (ED or ward labs before ICU admission) enter the first row's 24 h window. Nothing older enters any row,
    except through H4 (FiO2 pairing), H9 (pre-sedation GCS) and H10 (the trailing urine sum).
H3 Worst value per hour.
    Per row and concept, over the observations inside the row: ``min`` of ``platelets_10e3_per_ul`` and
    ``map_mmhg``; ``max`` of ``bilirubin_mg_per_dl`` and ``creatinine_mg_per_dl``; ``min`` P/F (H4); ``min`` GCS (H9).
    No value is carried forward from an earlier row (the 24 h window of H11 plays that role). In a row with no
    charted MAP, policy ``map_from_sbp_dbp = derive`` takes the lowest DBP + (SBP − DBP) / 3 over SBP and DBP charted
    at the same time (several at one time: the lowest of each).
H4 P/F pairing (mimic-code ``measurement/bg.sql``).
    Each PaO2 at time ``t`` is paired with the *latest* FiO2 charted in ``[t − 4 h, t]`` (a FiO2 at the same time,
    e.g. from the same specimen, therefore wins); ties at that latest time take the highest FiO2 (the worst ratio).
    A PaO2 with no FiO2 in the 4 h is dropped under policy ``fio2_missing = unscored`` and paired with 0.21 under
    ``room_air``. The row's P/F is the minimum ratio over its PaO2s; that (PaO2, FiO2) pair is passed to
    :func:`~immunoguide.rules.sofa.score_sofa`.
H5 Respiratory support.
    The row's ``ventilation`` is the most supportive kind of any ventilation episode active in the row
    (order: invasive, tracheostomy_ventilated, noninvasive, cpap, hfnc, oxygen, none; ``"none"`` when no episode is
    active). Policies ``respiratory_support`` and ``pf_below_200_without_support`` then apply inside score_sofa.
H6 Active in a row.
    An interval ``[start, stop]`` (infusion segment, ventilation or sedation episode) is active in the row
    ``hour_end`` exactly when ``start < hour_end`` and ``stop > hour_end − 1 h``.
H7 Catecholamines.
    Per row and drug (dopamine, dobutamine, epinephrine, norepinephrine) the rate is the ``max`` rate of the
    drug's segments active in the row (H6), in µg/kg/min. Other drugs are ignored by SOFA-1.
H8 Vasopressor ≥ 1 h (policy ``vasopressor_min_duration``; ricu ``vaso60``).
    Segments of one drug with a rate > 0 are merged into episodes when the next segment starts no more than
    5 min after the episode's latest stop (overlaps merge too). Under ``one_hour`` the positive-rate segments of
    an episode lasting less than 60 min (last stop − first start) are dropped before H7; under ``none`` every
    segment counts. Zero-rate segments are never dropped: policy ``zero_rate_infusion`` decides what they score.
H9 GCS and sedation.
    A GCS charted at the same time as a ``gcs_sedated`` flag, or inside a sedation episode ``[start, end]``, was
    assessed under sedation; a flag with no GCS at its time is a sedated assessment with no value. Per row: if any
    unsedated GCS was charted, the row's GCS is the minimum unsedated GCS (the minimum of all GCS under policy
    ``gcs_when_sedated = as_measured``) and the row is not sedated; otherwise, if a sedated assessment was charted,
    the row is sedated with ``gcs`` = the minimum sedated value (None if none had a value) and ``gcs_presedation`` =
    the last unsedated GCS charted strictly before the row's first sedated assessment (any time earlier in the
    timeline); policy ``gcs_when_sedated`` then decides in score_sofa.
H10 Urine output.
    For each row, ``urine_output_ml`` = the sum of ``urine_output_ml`` observations in ``(hour_end − 24 h,
    hour_end]`` and ``urine_output_observed_h`` = ``min(24, hours from the anchor to hour_end)``, where the anchor is
    the earlier of ``icu_intime`` and the first urine charting. With no charting in that 24 h, or no observed time,
    urine is missing for the row. Policy ``urine_output_window`` then applies (mimic-code: only 22–30 h observed,
    so urine scores from the 22nd hour of the stay; ricu: ≥ 12 h, scaled to 24 h).
H11 Hour score.
    Each row's six component scores come from one :func:`~immunoguide.rules.sofa.score_sofa` call on a
    :class:`~immunoguide.rules.sofa.SofaInputs` of that row's values, with every policy as resolved except
    ``missing_component``, which is forced to ``no_imputation`` (a component with no data is None).
H12 24 h rolling worst.
    Each output row's component = ``max`` of that component over the 24 rows whose ``hour_end`` lies in
    ``(hour_end − 24 h, hour_end]`` (the row and the 23 before it, like mimic-code ``ROWS BETWEEN 23 PRECEDING AND
    CURRENT ROW``), ignoring None; None if all 24 are None.
H13 Missing components, after the window.
    Policy ``missing_component`` applies only now (mimic-code ``COALESCE(MAX(...) OVER w, 0)``):
    ``impute_normal`` sets a None component to 0 and lists it in ``imputed_components``; ``no_imputation`` leaves it
    None and the total is None. Otherwise ``total`` = the sum of the six components.

H14 SOFA-2.
    With ``criteria="sofa2"`` the same grid, windows and policies apply; the SOFA-2 inputs SOFA-1 does not read
    (urine in mL/kg/h over 6, 12 and 24 h; other vasoactive agents) are added per hour (:func:`_sofa2_fields`).
    Inputs the timeline does not hold (SpO2, RRT, ECMO, mechanical support, delirium drugs, motor-only GCS) are
    missing, so SOFA-2 scores "where inputs exist", as SOFA-2's own missing-data rule then decides.

H15 Grid and windows of other references (named policies; defaults are H1–H13 as above).
    ``hourly_grid = icu_admission_hours`` (ricu): rows are whole hours since ICU admission (ricu floors every time
    to minutes since admission, then to hours): row ``k`` covers ``[intime + k h, intime + (k + 1) h)`` and is
    labelled ``hour_end = intime + (k + 1) h``; an interval is
    active in every row from the one holding its start to the one holding its stop (ricu expands administrations
    minute by minute, both ends included). ``rolling_window = 25_rows`` (ricu ``slide(before = hours(24))``, both
    ends of ``[t − 24 h, t]`` included): the row and the 24 before it. ``pf_pairing = ricu_match_2h`` (ricu
    ``pafi``): the lowest PaO2 and the highest FiO2 of each row are matched both ways with the latest value of the
    other in the same row or the 2 rows before; a row whose PaO2 finds no FiO2 pairs it with 0.21 under
    ``fio2_missing = room_air``. ``gcs_assembly = ricu_hourly_components`` (ricu ``gcs``): per row the lowest eye,
    verbal, motor and charted total; each carried forward over the rows of the 6 h before that have an
    assessment; a row with a sedated assessment (``gcs_sedated``) is sedated; missing components count as normal
    (4, 5, 6) and a charted total wins over their sum. ``urine_output_window = ricu`` (ricu ``urine24``): the
    urine of the 25 rows ending at the row, counted from the stay's first urine row, over the number of those
    rows (at least 12) times 24; nothing charted in them is 0 mL; rows are evaluated from the first urine row to
    the row whose index since ICU admission is (last urine index − first urine index) — ricu's ``fill_gaps``
    over ``collapse()`` takes the span for the end (a ricu 0.6.3 quirk, reproduced for agreement).

Differences from mimic-code ``score/sofa.sql`` worth knowing: mimic-code anchors the grid on the first heart-rate
charting and counts an infusion only if it is running at the end of the hour (here: active anywhere in the hour,
H6), has no ≥ 1 h rule (policy ``none`` here), measures urine time from the gaps between chartings (here: H10), and
its GCS is 15 for ETT rows (policy ``assume_normal`` here).

Examples
--------
>>> from datetime import datetime
>>> from immunoguide.rules.timeline import Observation, PatientTimeline
>>> tl = PatientTimeline(stay_id=1, icu_intime=datetime(2024, 1, 1, 8, 0), icu_outtime=datetime(2024, 1, 2, 10, 0),
...     observations=[Observation(time=datetime(2024, 1, 1, 9, 30), concept="platelets_10e3_per_ul", value=90)])
>>> rows = hourly_sofa(tl)
>>> [(r.hour_end.strftime("%d %H:%M"), r.coagulation, r.total) for r in rows[:3]]
[('01 08:00', 0, 0), ('01 09:00', 0, 0), ('01 10:00', 2, 2)]
>>> rows[-1].hour_end.strftime("%d %H:%M"), rows[-1].coagulation, rows[-2].coagulation
('02 10:00', 0, 2)
>>> rows[2].imputed_components
('respiration', 'liver', 'cardiovascular', 'cns', 'renal')
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from immunoguide.criteria import Criteria, criteria_for
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import ConflictingInputError, InputError
from immunoguide.rules.sofa import COMPONENTS, SofaInputs, score_sofa
from immunoguide.rules.timeline import CATECHOLAMINES, Infusion, PatientTimeline

_ByConcept = dict[str, list[tuple[datetime, float]]]
_Fields = list[dict[str, Any]]
_RowOf = Callable[[datetime], int]

__all__ = [
    "FIO2_LOOKBACK",
    "HOUR",
    "VASOPRESSOR_MERGE_GAP",
    "VASOPRESSOR_MIN_EPISODE",
    "VENTILATION_ORDER",
    "WINDOW_ROWS",
    "HourlySofa",
    "ceil_hour",
    "hourly_sofa",
]

HOUR = timedelta(hours=1)
_D = SOFA_DEFINITIONS  # criteria/sofa_definitions.toml: every constant and vocabulary below is read from there
#: Rows in the rolling window (H12): the row and the 23 before it.
WINDOW_ROWS = _D.window_rows
#: How far before a PaO2 a FiO2 may be charted to pair with it (H4; mimic-code bg.sql).
FIO2_LOOKBACK = _D.fio2_lookback
#: Largest gap between two segments of one drug that still joins them into one episode (H8; ricu vaso60).
VASOPRESSOR_MERGE_GAP = _D.vasopressor_merge_gap
#: Shortest episode that counts under vasopressor_min_duration = one_hour (H8; Singer 2016 Table 1 footnote).
VASOPRESSOR_MIN_EPISODE = _D.vasopressor_min_episode
#: Respiratory-support kinds, most supportive first (H5).
VENTILATION_ORDER: tuple[str, ...] = _D.ventilation_kinds
_VENT_RANK = {k: i for i, k in enumerate(VENTILATION_ORDER)}
_MIN_CONCEPTS = ("platelets_10e3_per_ul", "map_mmhg")
_MAX_CONCEPTS = ("bilirubin_mg_per_dl", "creatinine_mg_per_dl")
_ROOM_AIR_FIO2 = _D.room_air_fio2


#: Rows carried forward by gcs_assembly = ricu_hourly_components (ricu gcs valid_win = hours(6L)).
RICU_GCS_VALID_H = _D.ricu_gcs_valid_h
#: ricu pafi match_win = hours(2L): a PaO2 and a FiO2 pair when at most this many rows apart.
RICU_PF_MATCH_ROWS = _D.ricu_pf_match_rows
#: ricu urine24: at least this many rows (min_win = hours(12L)) and a window of 25 rows ([t − 24 h, t]).
RICU_URINE_MIN_ROWS = _D.urine_ricu_min_h
RICU_URINE_WINDOW_ROWS = _D.ricu_window_rows
_NORMAL_GCS_COMPONENTS = _D.normal_gcs_components
_GCS_PARTS = (*_NORMAL_GCS_COMPONENTS, "gcs_total_charted")


def window_rows(resolved: Mapping[str, str]) -> int:
    """Rows of the rolling window (H12/H15): 24 (``24_rows``, the default) or 25 (``25_rows``, ricu)."""
    return _D.ricu_window_rows if resolved.get("rolling_window") == "25_rows" else WINDOW_ROWS


@dataclass(frozen=True)
class Grid:
    """Which row a time belongs to (H1 or H15), for one stay.

    ``kind`` is the ``hourly_grid`` option and ``intime`` the ICU admission; ``icu_admission_hours`` counts whole
    hours since the admission (ricu: minutes since admission floored, then hours floored — the same as flooring the
    hours), so row ``k`` holds the times in ``[intime + k h, intime + (k + 1) h)``.

    >>> g = Grid("icu_admission_hours", datetime(2024, 1, 1, 8, 20, 30))
    >>> g.row_end(datetime(2024, 1, 1, 9, 20)), g.row_end(datetime(2024, 1, 1, 9, 21))
    (datetime.datetime(2024, 1, 1, 9, 20, 30), datetime.datetime(2024, 1, 1, 10, 20, 30))
    >>> g.index(g.row_end(datetime(2024, 1, 1, 7, 0))), g.index(g.row_end(datetime(2024, 1, 1, 9, 21)))
    (-2, 1)
    >>> Grid("clock_hours", datetime(2024, 1, 1, 8, 20)).row_end(datetime(2024, 1, 1, 9, 19))
    datetime.datetime(2024, 1, 1, 10, 0)
    """

    kind: str
    intime: datetime

    @classmethod
    def for_stay(cls, resolved: Mapping[str, str], icu_intime: datetime) -> Grid:
        """The grid of policy ``hourly_grid`` for a stay admitted at ``icu_intime``."""
        return cls(resolved.get("hourly_grid", "clock_hours"), icu_intime)

    @property
    def admission(self) -> bool:
        """True for ``icu_admission_hours`` (ricu), False for clock hours."""
        return self.kind == "icu_admission_hours"

    def row_end(self, t: datetime) -> datetime:
        """``hour_end`` of the row holding ``t``."""
        if not self.admission:
            return ceil_hour(t)
        a = self.intime
        return a + ((t - a) // HOUR + 1) * HOUR

    def first_active_end(self, start: datetime) -> datetime:
        """The first row an interval starting at ``start`` is active in (H6; H15: the row holding ``start``)."""
        return self.row_end(start) if self.admission else _floor_hour(start) + HOUR

    def last_active_end(self, stop: datetime) -> datetime:
        """The last row an interval stopping at ``stop`` is active in (H6; H15: the row holding ``stop``)."""
        return self.row_end(stop)

    def index(self, hour_end: datetime) -> int:
        """Rows since the row holding the ICU admission (0 = that row; negative before it)."""
        return int((hour_end - self.row_end(self.intime)) // HOUR)


def ceil_hour(t: datetime) -> datetime:
    """The ``hour_end`` of the row holding ``t``: ``t`` itself on the hour, else the next clock hour (H1).

    >>> ceil_hour(datetime(2024, 1, 1, 9, 0)), ceil_hour(datetime(2024, 1, 1, 9, 0, 1))
    (datetime.datetime(2024, 1, 1, 9, 0), datetime.datetime(2024, 1, 1, 10, 0))
    """
    f = t.replace(minute=0, second=0, microsecond=0)
    return f if f == t else f + HOUR


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class HourlySofa:
    """One row of hourly SOFA: the 24 h rolling worst of each component at ``hour_end``.

    Attributes
    ----------
    hour_end : datetime
        End of the row's hour; the row covers ``(hour_end − 1 h, hour_end]`` and its window the 24 rows to here.
    respiration, coagulation, liver, cardiovascular, cns, renal : int or None
        Component points (0–4) after the 24 h window and the missing-component policy.
    total : int or None
        Sum of the six components (None under ``no_imputation`` when any is missing).
    imputed_components : tuple of str
        Components with no data in the window that were set to 0 (``impute_normal``).
    missing_components : tuple of str
        Components with no data in the window (imputed or not).
    hour_components : mapping
        The row's own component scores before the 24 h window (None = no data in this hour).
    criteria : str
        SOFA criteria label (``id@version``).
    policies : mapping
        Every SOFA policy used.
    """

    hour_end: datetime
    respiration: int | None
    coagulation: int | None
    liver: int | None
    cardiovascular: int | None
    cns: int | None
    renal: int | None
    total: int | None
    imputed_components: tuple[str, ...]
    missing_components: tuple[str, ...]
    hour_components: Mapping[str, int | None]
    criteria: str
    policies: Mapping[str, str] = field(repr=False)

    @property
    def components(self) -> Mapping[str, int | None]:
        """The six components by name, in :data:`~immunoguide.rules.sofa.COMPONENTS` order."""
        return MappingProxyType({c: getattr(self, c) for c in COMPONENTS})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary of the row."""
        return {
            "hour_end": self.hour_end.isoformat(),
            **{c: getattr(self, c) for c in COMPONENTS},
            "total": self.total,
            "imputed_components": list(self.imputed_components),
            "missing_components": list(self.missing_components),
            "hour_components": dict(self.hour_components),
            "criteria": self.criteria,
            "policies": dict(self.policies),
        }


def hourly_sofa(
    timeline: PatientTimeline,
    *,
    criteria: str | Criteria = "sofa1",
    policies: Mapping[str, str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> tuple[HourlySofa, ...]:
    """Hourly SOFA-1 rows with the 24 h rolling worst per component (semantics H1–H13 in the module docstring).

    Parameters
    ----------
    timeline : PatientTimeline
        The stay, in canonical units.
    criteria : str or Criteria
        SOFA criteria id or loaded criteria; only rule ``sofa1`` is implemented here.
    policies : mapping, optional
        Overrides of the SOFA policies (defaults from the criteria file); ``missing_component`` applies after the
        24 h window (H13).
    start, end : datetime, optional
        First and last output rows (each mapped to its row by :func:`ceil_hour`); default ICU admission and
        discharge.

    Returns
    -------
    tuple of HourlySofa
        One row per clock hour from ``ceil_hour(start)`` to ``ceil_hour(end)``.

    Raises
    ------
    CriteriaError
        Criteria whose rule is not ``sofa1``.
    PolicyError
        Unknown policy or option.
    InputError
        ``end`` before ``start``, or an hour whose values cannot be scored (message names the hour).
    """
    crit = criteria_for(criteria, ("sofa1", "sofa2"), where="hourly_sofa criteria", todo="use criteria='sofa1' or 'sofa2'")
    resolved = crit.resolve_policies(policies)
    hour_policies = {**resolved, "missing_component": "no_imputation"}
    grid = Grid.for_stay(resolved, timeline.icu_intime)
    first = grid.row_end(start if start is not None else timeline.icu_intime)
    if end is not None:
        last = grid.row_end(end)
    elif timeline.icu_outtime is not None:
        last = grid.row_end(timeline.icu_outtime)
    else:
        latest = timeline.last_event_time()
        last = max(first, grid.row_end(latest)) if latest is not None else first
    if last < first:
        raise InputError(
            expected="end at or after start",
            got=f"start {first.isoformat()}, end {last.isoformat()}",
            where="hourly_sofa",
            todo="check the requested range",
        )
    w_rows = window_rows(resolved)
    grid0 = first - (w_rows - 1) * HOUR
    n = int((last - grid0) / HOUR) + 1
    fields = _hour_fields(timeline, grid0, n, resolved, crit.rule, grid)

    hour_scores: list[tuple[int | None, ...]] = []
    empty: tuple[int | None, ...] = (None,) * len(COMPONENTS)
    for i in range(n):
        f = fields[i]
        if not f:
            hour_scores.append(empty)
            continue
        h = grid0 + i * HOUR
        try:
            res = score_sofa(SofaInputs(**f), criteria=crit, policies=hour_policies)
        except InputError as exc:
            exc.where = f"hour ending {h.isoformat()}, {exc.where}" if exc.where else f"hour ending {h.isoformat()}"
            raise
        hour_scores.append(tuple(res.components[c] for c in COMPONENTS))

    impute = resolved["missing_component"] == "impute_normal"
    frozen_policies = MappingProxyType(dict(resolved))
    rows: list[HourlySofa] = []
    for i in range(w_rows - 1, n):
        window = hour_scores[i - w_rows + 1 : i + 1]
        comps: dict[str, int | None] = {}
        for k, c in enumerate(COMPONENTS):
            vals = [v for w in window if (v := w[k]) is not None]
            comps[c] = max(vals) if vals else None
        missing = tuple(c for c in COMPONENTS if comps[c] is None)
        if impute:
            for c in missing:
                comps[c] = 0
            total: int | None = sum(v for v in comps.values() if v is not None)
            imputed = missing
        else:
            total = None if missing else sum(v for v in comps.values() if v is not None)
            imputed = ()
        rows.append(
            HourlySofa(
                hour_end=grid0 + i * HOUR,
                total=total,
                imputed_components=imputed,
                missing_components=missing,
                hour_components=MappingProxyType(dict(zip(COMPONENTS, hour_scores[i], strict=True))),
                criteria=crit.label,
                policies=frozen_policies,
                **comps,  # type: ignore[arg-type]
            )
        )
    return tuple(rows)


# --------------------------------------------------------------------------------------------------------------
# Per-hour SofaInputs fields (H3–H10)
# --------------------------------------------------------------------------------------------------------------


def _active_rows(start: datetime, stop: datetime, grid0: datetime, n: int, grid: Grid | None = None) -> range:
    """Row indices where ``[start, stop]`` is active: H6 (``start < hour_end`` and ``stop > hour_end − 1 h``) on
    clock hours, H15 (from the row holding ``start`` to the row holding ``stop``) on hours since admission."""
    if grid is None or not grid.admission:
        lo = int((_floor_hour(start) + HOUR - grid0) / HOUR)  # smallest hour_end > start
        hi = int((ceil_hour(stop) - grid0) / HOUR)  # largest hour_end < stop + 1 h
    else:
        lo = int((grid.first_active_end(start) - grid0) / HOUR)
        hi = int((grid.last_active_end(stop) - grid0) / HOUR)
    return range(max(lo, 0), min(hi, n - 1) + 1)


def _hour_fields(
    tl: PatientTimeline,
    grid0: datetime,
    n: int,
    resolved: Mapping[str, str],
    rule: str = "sofa1",
    grid: Grid | None = None,
) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = [{} for _ in range(n)]
    grid = grid or Grid.for_stay(resolved, tl.icu_intime)

    def row(t: datetime) -> int:
        return int((grid.row_end(t) - grid0) / HOUR)

    by_concept: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    sedated_flags: set[datetime] = set()
    for o in tl.observations:  # sorted by time
        if o.concept == "gcs_sedated":
            sedated_flags.add(o.time)
        else:
            by_concept[o.concept].append((o.time, float(o.value)))

    # H3: simple worst values.
    for name, pick in [(c, min) for c in _MIN_CONCEPTS] + [(c, max) for c in _MAX_CONCEPTS]:
        for t, v in by_concept.get(name, ()):
            i = row(t)
            if 0 <= i < n:
                f = fields[i]
                f[name] = v if name not in f else pick(f[name], v)

    _map_from_pairs(by_concept, fields, row, n, resolved)
    if resolved.get("pf_pairing") == "ricu_match_2h":
        _pf_ricu(by_concept, fields, row, n, resolved, tl, grid0, grid)
    else:
        _pf(by_concept, fields, row, n, resolved, tl, grid0, grid)
    _vasopressors(tl, fields, grid0, n, resolved, grid)
    if resolved.get("gcs_assembly") == "ricu_hourly_components":
        _gcs_ricu(by_concept, sedated_flags, fields, row, n)
    else:
        _gcs(by_concept, sedated_flags, tl, fields, row, n, resolved)
    if rule == "sofa2":
        _sofa2_fields(by_concept, tl, fields, grid0, n)
    elif resolved.get("urine_output_window") == "ricu":
        _urine_ricu(by_concept, fields, grid0, n, grid)
    else:
        _urine(by_concept, tl, fields, grid0, n)
    return fields


def _map_from_pairs(by_concept: _ByConcept, fields: _Fields, row: _RowOf, n: int, resolved: Mapping[str, str]) -> None:
    """Hours with no charted MAP get the (SBP, DBP) pair charted together with the lowest derived MAP.

    With several SBPs or DBPs charted at one time (arterial line and cuff) each SBP is paired with the lowest DBP of
    that time, so the pair kept is the lowest of each — the worst MAP, as H3 keeps the worst value.
    """
    if resolved.get("map_from_sbp_dbp") != "derive":
        return
    dbp: dict[datetime, float] = {}
    for t, d in by_concept.get("dbp_mmhg", ()):  # several DBPs at one time (arterial line and cuff): the lowest
        dbp[t] = min(d, dbp.get(t, d))
    best: dict[int, tuple[float, float, float]] = {}
    for t, s in by_concept.get("sbp_mmhg", ()):
        if t not in dbp:
            continue
        i = row(t)
        if not 0 <= i < n or "map_mmhg" in fields[i]:
            continue
        d = dbp[t]
        if d > s:
            raise ConflictingInputError(
                expected="dbp_mmhg <= sbp_mmhg",
                got=(s, d),
                where=f"blood pressure charted at {t.isoformat()}",
                todo="check that systolic and diastolic pressures are not swapped",
            )
        m = d + (s - d) / 3.0
        if i not in best or m < best[i][0]:
            best[i] = (m, s, d)
    for i, (_, s, d) in best.items():
        fields[i]["sbp_mmhg"] = s
        fields[i]["dbp_mmhg"] = d


def _pf(
    by_concept: _ByConcept,
    fields: _Fields,
    row: _RowOf,
    n: int,
    resolved: Mapping[str, str],
    tl: PatientTimeline,
    grid0: datetime,
    grid: Grid | None = None,
) -> None:
    """H4 pairing and H5 ventilation for rows with a scored gas."""
    pao2 = by_concept.get("pao2_mmhg", ())
    if not pao2:
        return
    fio2_at: dict[datetime, float] = {}
    for t, v in by_concept.get("fio2_fraction", ()):
        fio2_at[t] = max(v, fio2_at.get(t, 0.0))
    ftimes = sorted(fio2_at)
    room_air = resolved.get("fio2_missing") == "room_air"
    best: dict[int, tuple[float, float, float]] = {}
    for t, p in pao2:
        i = row(t)
        if not 0 <= i < n:
            continue
        k = bisect_right(ftimes, t) - 1
        if k >= 0 and ftimes[k] >= t - FIO2_LOOKBACK:
            fio2 = fio2_at[ftimes[k]]
        elif room_air:
            fio2 = _ROOM_AIR_FIO2
        else:
            continue
        ratio = p / fio2
        if i not in best or ratio < best[i][0]:
            best[i] = (ratio, p, fio2)
    _put_pf(best, fields, n, tl, grid0, grid)


def _put_pf(
    best: Mapping[int, tuple[float, float, float]],
    fields: _Fields,
    n: int,
    tl: PatientTimeline,
    grid0: datetime,
    grid: Grid | None,
) -> None:
    """The rows' (PaO2, FiO2) pairs and their H5 ventilation kind into ``fields``."""
    if not best:
        return
    vent_rank: dict[int, int] = {}
    for e in tl.ventilation:
        r = _VENT_RANK[e.kind]
        for i in _active_rows(e.start, e.end, grid0, n, grid):
            if i in best and r < vent_rank.get(i, len(VENTILATION_ORDER)):
                vent_rank[i] = r
    for i, (_, p, fio2) in best.items():
        fields[i]["pao2_mmhg"] = p
        fields[i]["fio2_fraction"] = fio2
        fields[i]["ventilation"] = VENTILATION_ORDER[vent_rank.get(i, _VENT_RANK["none"])]


def _pf_ricu(
    by_concept: _ByConcept,
    fields: _Fields,
    row: _RowOf,
    n: int,
    resolved: Mapping[str, str],
    tl: PatientTimeline,
    grid0: datetime,
    grid: Grid | None,
) -> None:
    """H15 ``pf_pairing = ricu_match_2h``: hourly PaO2 (lowest) and FiO2 (highest) matched both ways.

    ricu ``pafi`` (``match_vals``) joins each FiO2 row with the latest PaO2 row at most
    :data:`RICU_PF_MATCH_ROWS` rows before it and each PaO2 row with the latest FiO2 row likewise; both give a
    ratio at their own row (when a row has both, the two are the same). A PaO2 row with no FiO2 pairs with 0.21
    under ``fio2_missing = room_air`` (ricu ``fix_na_fio2``).
    """
    po2: dict[int, float] = {}
    for t, v in by_concept.get("pao2_mmhg", ()):
        i = row(t)
        po2[i] = min(v, po2.get(i, v))
    fio2: dict[int, float] = {}
    for t, v in by_concept.get("fio2_fraction", ()):
        i = row(t)
        fio2[i] = max(v, fio2.get(i, v))
    if not po2:
        return
    room_air = resolved.get("fio2_missing") == "room_air"

    def latest(series: Mapping[int, float], i: int) -> float | None:
        for k in range(i, i - RICU_PF_MATCH_ROWS - 1, -1):
            if k in series:
                return series[k]
        return None

    best: dict[int, tuple[float, float, float]] = {}
    for i, p in po2.items():
        f = latest(fio2, i)
        if f is None:
            if not room_air:
                continue
            f = _ROOM_AIR_FIO2
        best[i] = (round(p / f, 6), p, f)
    for i, f in fio2.items():
        if i in best:
            continue
        found = latest(po2, i)
        if found is not None:
            best[i] = (round(found / f, 6), found, f)
    _put_pf({i: v for i, v in best.items() if 0 <= i < n}, fields, n, tl, grid0, grid)


def _vasopressors(
    tl: PatientTimeline, fields: _Fields, grid0: datetime, n: int, resolved: Mapping[str, str], grid: Grid | None = None
) -> None:
    """H7 max rate per drug per row, after the H8 duration rule."""
    one_hour = resolved.get("vasopressor_min_duration") == "one_hour"
    for drug in CATECHOLAMINES:
        segs = [s for s in tl.infusions if s.drug == drug]
        if not segs:
            continue
        kept = [s for s in segs if not s.rate_ug_kg_min]  # zero-rate segments are never dropped
        positive = [s for s in segs if s.rate_ug_kg_min]
        kept += _long_episodes(positive) if one_hour else positive
        name = f"{drug}_ug_kg_min"
        for s in kept:
            for i in _active_rows(s.start, s.stop, grid0, n, grid):
                f = fields[i]
                rate = float(s.rate_ug_kg_min or 0.0)
                f[name] = rate if name not in f else max(f[name], rate)


def _long_episodes(segments: list[Infusion]) -> list[Infusion]:
    """H8: the segments of episodes (gaps <= 5 min merged) lasting at least 60 min; input sorted by start."""
    kept: list[Infusion] = []
    episode: list[Infusion] = []
    ep_start = ep_stop = datetime.min
    for s in segments:
        if episode and s.start - ep_stop <= VASOPRESSOR_MERGE_GAP:
            episode.append(s)
            ep_stop = max(ep_stop, s.stop)
            continue
        if episode and ep_stop - ep_start >= VASOPRESSOR_MIN_EPISODE:
            kept += episode
        episode, ep_start, ep_stop = [s], s.start, s.stop
    if episode and ep_stop - ep_start >= VASOPRESSOR_MIN_EPISODE:
        kept += episode
    return kept


def _gcs(
    by_concept: _ByConcept,
    sedated_flags: set[datetime],
    tl: PatientTimeline,
    fields: _Fields,
    row: _RowOf,
    n: int,
    resolved: Mapping[str, str],
) -> None:
    """H9: per-row GCS with the sedation flag and the pre-sedation GCS."""
    gcs = by_concept.get("gcs", ())
    if not gcs and not sedated_flags:
        return
    sed_eps = [(e.start, e.end) for e in tl.sedation]

    def under_sedation(t: datetime) -> bool:
        return t in sedated_flags or any(a <= t <= b for a, b in sed_eps)

    unsed_t: list[datetime] = []
    unsed_v: list[float] = []
    per_row: dict[int, dict[str, Any]] = defaultdict(dict)
    gcs_times = set()
    for t, v in gcs:
        gcs_times.add(t)
        s = under_sedation(t)
        if not s:
            unsed_t.append(t)
            unsed_v.append(v)
        i = row(t)
        if not 0 <= i < n:
            continue
        r = per_row[i]
        key = "sed" if s else "unsed"
        r[key] = v if key not in r else min(r[key], v)
        if s:
            r["first_sed"] = min(r.get("first_sed", t), t)
    for t in sedated_flags - gcs_times:  # sedated assessment charted without a GCS value
        i = row(t)
        if 0 <= i < n:
            r = per_row[i]
            r.setdefault("sed", None)
            r["first_sed"] = min(r.get("first_sed", t), t)
    as_measured = resolved.get("gcs_when_sedated") == "as_measured"
    for i, r in per_row.items():
        f = fields[i]
        if "unsed" in r:
            vals = [r["unsed"]] + ([r["sed"]] if as_measured and r.get("sed") is not None else [])
            f["gcs"] = int(min(vals))
            continue
        f["sedated"] = True
        if r.get("sed") is not None:
            f["gcs"] = int(r["sed"])
        k = bisect_left(unsed_t, r["first_sed"]) - 1
        if k >= 0:
            f["gcs_presedation"] = int(unsed_v[k])


def _gcs_ricu(by_concept: _ByConcept, sedated_flags: set[datetime], fields: _Fields, row: _RowOf, n: int) -> None:
    """H15 ``gcs_assembly = ricu_hourly_components`` (ricu ``gcs`` with ``sed_impute = "max"``, ``set_na_max``).

    Per row with an assessment: the lowest of each component (eye, verbal, motor, charted total) in the row, each
    carried forward from the latest of the rows in the :data:`RICU_GCS_VALID_H` rows before that has it; a row with
    a sedated assessment is ``sedated`` (``gcs_when_sedated`` then decides, ricu: 15); missing components count as
    normal and a charted total wins over the sum. ``gcs`` is the assembled total, never carried to a row without
    an assessment.
    """
    per_row: dict[int, dict[str, float]] = defaultdict(dict)
    for c in _GCS_PARTS:
        for t, v in by_concept.get(c, ()):
            r = per_row[row(t)]
            r[c] = min(v, r.get(c, v))
    if not per_row:
        return
    sed_rows = {row(t) for t in sedated_flags}
    rows = sorted(per_row)
    last_seen: dict[str, tuple[int, float]] = {}
    for i in rows:
        for c, v in per_row[i].items():
            last_seen[c] = (i, v)
        carried = {c: v for c, (k, v) in last_seen.items() if k >= i - RICU_GCS_VALID_H}
        if not 0 <= i < n:
            continue
        total = carried.get("gcs_total_charted")
        if total is None:
            total = sum(carried.get(c, normal) for c, normal in _NORMAL_GCS_COMPONENTS.items())
        f = fields[i]
        f["gcs"] = int(total)
        if i in sed_rows:
            f["sedated"] = True


def _urine_ricu(by_concept: _ByConcept, fields: _Fields, grid0: datetime, n: int, grid: Grid) -> None:
    """H15 ``urine_output_window = ricu`` (ricu ``urine24``, ``min_win = hours(12L)``, 25-row slide).

    Rows are indexed in hours since ICU admission (:meth:`Grid.index`); ``first`` and ``last`` are the rows of the
    first and last urine charting. A row ``k`` with ``first <= k <= last − first`` (ricu quirk: the span, not the
    last row, ends the evaluation) gets ``urine_output_ml`` = the urine of rows ``max(k − 24, first) … k`` and
    ``urine_output_observed_h`` = the number of those rows, when it is at least :data:`RICU_URINE_MIN_ROWS`
    (score_sofa then scales to 24 h). No charting in those rows is 0 mL, as in ricu.
    """
    uo = by_concept.get("urine_output_ml", ())
    if not uo:
        return
    per_k: dict[int, float] = defaultdict(float)
    for t, v in uo:
        per_k[grid.index(grid.row_end(t))] += v
    first, last = min(per_k), max(per_k)
    end = last - first
    k0 = grid.index(grid0)
    for i in range(n):
        k = k0 + i
        if k < first or k > end:
            continue
        lo = max(k - (RICU_URINE_WINDOW_ROWS - 1), first)
        rows = k - lo + 1
        if rows < RICU_URINE_MIN_ROWS:
            continue
        fields[i]["urine_output_ml"] = round(sum(per_k.get(j, 0.0) for j in range(lo, k + 1)), 6)
        fields[i]["urine_output_observed_h"] = float(rows)


#: SOFA-2 urine windows (hours) of the kidney component (Ranzani 2025 as transcribed; rules/sofa2.py).
SOFA2_URINE_WINDOWS_H: tuple[int, ...] = _D.sofa2_urine_windows_h
_OTHER_VASOACTIVES = _D.other_vasoactives


def _sofa2_fields(by_concept: _ByConcept, tl: PatientTimeline, fields: _Fields, grid0: datetime, n: int) -> None:
    """H14 (SOFA-2 only, in place of H10): per-hour inputs SOFA-2 reads that SOFA-1 does not, from the same timeline.

    * Urine: ``urine_ml_per_kg_per_h_<W>h`` = the urine charted in ``(hour_end − W h, hour_end]`` / weight / W, for
      W = 6, 12 and 24 h, only when the body weight is known and the stay has been observed for at least W hours
      (hours since the earlier of ICU admission and the first urine charting); SOFA-1's daily volume is not passed.
    * Other vasopressors or inotropes: ``other_vasopressor_or_inotrope`` is True in an hour where a vasopressin,
      phenylephrine or milrinone infusion is active (H6); dobutamine and dopamine are passed as rates and SOFA-2's
      rule decides how they count.
    * Respiratory support: the hour's ``ventilation`` kind (H5) is passed; SOFA-2 derives advanced support from it.
    """
    series = _urine_series(by_concept, tl)
    if series is not None and tl.weight_kg:
        times, prefix, anchor = series
        for i in range(n):
            h = grid0 + i * HOUR
            observed = (h - anchor) / HOUR
            for w in SOFA2_URINE_WINDOWS_H:
                if observed < w:
                    continue
                lo, hi = bisect_right(times, h - timedelta(hours=w)), bisect_right(times, h)
                rate = (prefix[hi] - prefix[lo]) / tl.weight_kg / w
                fields[i][f"urine_ml_per_kg_per_h_{w}h"] = round(rate, 6)
    for inf in tl.infusions:
        if inf.drug in _OTHER_VASOACTIVES:
            for i in _active_rows(inf.start, inf.stop, grid0, n):
                fields[i]["other_vasopressor_or_inotrope"] = True


def _urine_series(by_concept: _ByConcept, tl: PatientTimeline) -> tuple[list[datetime], list[float], datetime] | None:
    """Urine charting times, prefix sums of the volumes, and the observation anchor (H10); None without urine."""
    uo = by_concept.get("urine_output_ml", ())
    if not uo:
        return None
    times = [t for t, _ in uo]
    prefix = [0.0]
    for _, v in uo:
        prefix.append(prefix[-1] + v)
    return times, prefix, min(tl.icu_intime, times[0])


def _urine(by_concept: _ByConcept, tl: PatientTimeline, fields: _Fields, grid0: datetime, n: int) -> None:
    """H10: trailing 24 h urine volume and the hours observed."""
    series = _urine_series(by_concept, tl)
    if series is None:
        return
    times, prefix, anchor = series
    day = timedelta(hours=_D.urine_window_h)
    for i in range(n):
        h = grid0 + i * HOUR
        hi = bisect_right(times, h)
        lo = bisect_right(times, h - day)
        if hi == lo:
            continue
        observed = min(float(_D.urine_window_h), (h - anchor) / HOUR)
        if observed <= 0:
            continue
        fields[i]["urine_output_ml"] = round(prefix[hi] - prefix[lo], 6)
        fields[i]["urine_output_observed_h"] = observed
