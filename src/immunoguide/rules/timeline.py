"""One patient's ICU stay as a typed timeline: observations, infusions, antibiotics, cultures, ventilation, sedation.

The timeline is the value that crosses from a data adapter (MIMIC, FHIR, long format) into the rules
(:func:`immunoguide.rules.hourly.hourly_sofa`, :mod:`immunoguide.rules.sepsis3`) and the cohort engine. It holds
facts only, already in canonical units; every hourly or windowed reading of those facts is done by the rules.

Conventions
-----------
* **Units.** An :class:`Observation` carries a concept of ``criteria/concepts.toml`` and a value in the concept's
  canonical unit, checked for plausibility on construction (:meth:`Observation.in_unit` converts first). Catecholamine
  rates are not observations: they are :class:`Infusion` segments (start, stop, rate in µg/kg/min).
* **Flag concepts** (:data:`FLAG_CONCEPTS`) are observations with the value ``True`` that mark a fact at a time, e.g.
  ``gcs_sedated``: the GCS charted at this same time was assessed under sedation or through an endotracheal tube
  (MIMIC verbal response ``'No Response-ETT'``).
* **Time.** Datetimes are either all timezone-naive (local clock, as in MIMIC) or all timezone-aware; aware values
  are converted to UTC on construction so that hour arithmetic is never wall-clock arithmetic across a DST change.
  Episodes and infusions must have ``stop >= start``; lists are stored sorted by time (input order is free).
* **Completeness.** The lists are the whole record of the stay: an hour with no ventilation episode is an hour
  without respiratory support; an hour with no infusion is an hour without catecholamines.

Examples
--------
>>> from datetime import datetime
>>> t0 = datetime(2024, 1, 1, 8, 0)
>>> tl = PatientTimeline(
...     stay_id="s1", icu_intime=t0, icu_outtime=datetime(2024, 1, 3, 8, 0),
...     observations=[Observation(time=datetime(2024, 1, 1, 9, 30), concept="platelets_10e3_per_ul", value=90)],
...     infusions=[Infusion(drug="norepinephrine", start=datetime(2024, 1, 1, 10), stop=datetime(2024, 1, 1, 12),
...                         rate_ug_kg_min=0.05)],
... )
>>> tl.observations[0].value, tl.infusions[0].duration_min
(90.0, 120.0)
>>> Observation.in_unit(time=t0, concept="bilirubin_mg_per_dl", value=34.208, unit="umol/L").value
2.0
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import ConflictingInputError, ImplausibleValueError, InputError, UnitError
from immunoguide.rules.sofa_inputs import Ventilation
from immunoguide.units import check_plausible, concept, concepts, to_canonical

__all__ = [
    "CATECHOLAMINES",
    "FLAG_CONCEPTS",
    "AdmissionSource",
    "AntibioticAdministration",
    "CultureSample",
    "Drug",
    "Infusion",
    "Observation",
    "PatientTimeline",
    "SedationEpisode",
    "VentilationEpisode",
]

#: Flag concepts: observations whose value is ``True`` and that mark a fact at a time (they have no unit).
FLAG_CONCEPTS: Mapping[str, str] = MappingProxyType(
    {
        "gcs_sedated": (
            "The GCS charted at this same time was assessed under sedation or intubation "
            "(MIMIC verbal response 'No Response-ETT'); gcs_when_sedated decides what it scores."
        ),
    }
)

#: Concepts that must not arrive as point observations, and where they belong instead.
_NOT_OBSERVATIONS: Mapping[str, str] = MappingProxyType(
    {
        "dopamine_ug_kg_min": "send it as an Infusion(drug='dopamine', start, stop, rate_ug_kg_min)",
        "dobutamine_ug_kg_min": "send it as an Infusion(drug='dobutamine', start, stop, rate_ug_kg_min)",
        "epinephrine_ug_kg_min": "send it as an Infusion(drug='epinephrine', start, stop, rate_ug_kg_min)",
        "norepinephrine_ug_kg_min": "send it as an Infusion(drug='norepinephrine', start, stop, rate_ug_kg_min)",
        "pf_ratio_mmhg": "send the PaO2 (pao2_mmhg) and FiO2 (fio2_fraction) observations; P/F is paired by the rule",
    }
)

#: The four catecholamines SOFA-1 scores (their rate is required and checked against the concept's range).
CATECHOLAMINES: tuple[str, ...] = SOFA_DEFINITIONS.catecholamines

Drug = Literal["dopamine", "dobutamine", "epinephrine", "norepinephrine", "vasopressin", "phenylephrine", "milrinone"]
AdmissionSource = Literal["emergency_department", "inpatient"]


def _utc(t: datetime) -> datetime:
    """Aware datetimes → UTC (naive ones are kept as the local clock)."""
    return t if t.tzinfo is None else t.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]


def _interval_order(start: datetime, stop: datetime, what: str, stop_name: str) -> None:
    if (start.tzinfo is None) != (stop.tzinfo is None):
        raise InputError(
            expected="start and stop both timezone-naive or both timezone-aware",
            got=(start.isoformat(), stop.isoformat()),
            where=what,
            todo="send every time of a timeline in the same form",
        )
    if stop < start:
        raise InputError(
            expected=f"{stop_name} >= start",
            got=f"start {start.isoformat()}, {stop_name} {stop.isoformat()}",
            where=what,
            todo=f"check that start and {stop_name} are not swapped",
            field=stop_name,
        )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Observation(_Frozen):
    """One charted value of a concept at a time, in the concept's canonical unit (or a flag).

    Parameters
    ----------
    time : datetime
        Charting (or specimen) time.
    concept : str
        A concept of ``criteria/concepts.toml`` (e.g. ``platelets_10e3_per_ul``) or a flag of :data:`FLAG_CONCEPTS`.
    value : float or bool
        The value in the concept's canonical unit, or ``True`` for a flag.
    """

    time: Timestamp
    concept: str
    value: float | bool

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        name = data.get("concept")
        value = data.get("value")
        where = f"observation {name} at {data.get('time')}"
        if name in FLAG_CONCEPTS:
            if value is not True:
                raise InputError(
                    expected=f"value true for the flag concept {name}",
                    got=value,
                    where=where,
                    todo="send the flag only when it applies",
                    field="value",
                )
            return data
        if name in _NOT_OBSERVATIONS:
            raise InputError(
                expected="a charted concept (not a rate or a derived ratio)",
                got=name,
                where=where,
                todo=_NOT_OBSERVATIONS[str(name)],
                field="concept",
            )
        if not isinstance(name, str) or name not in concepts():
            raise UnitError(
                expected="a concept of criteria/concepts.toml or a flag concept",
                got=name,
                where=where,
                todo=f"use one of: {', '.join(sorted(set(concepts()) | set(FLAG_CONCEPTS)))}",
                field="concept",
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ImplausibleValueError(
                expected=f"a number for {name} ({concept(name).unit})",
                got=value,
                where=where,
                todo="send a number in the canonical unit, or use Observation.in_unit",
                field="value",
            )
        try:
            v = check_plausible(name, value, where=where)
        except InputError as exc:
            exc.field = "value"
            raise
        return {**data, "value": v}

    @classmethod
    def in_unit(cls, *, time: datetime, concept: str, value: float, unit: str) -> Observation:
        """Build an observation from a value in any unit the concept accepts (converted once, then checked)."""
        where = f"observation {concept} at {time}"
        if concept in FLAG_CONCEPTS or concept in _NOT_OBSERVATIONS:
            raise InputError(
                expected="a charted concept with a unit",
                got=concept,
                where=where,
                todo="send it without a unit",
                field="concept",
            )
        return cls(time=time, concept=concept, value=to_canonical(concept, value, unit, where=where))


class Infusion(_Frozen):
    """One segment of a continuous vasoactive infusion at a constant rate.

    Parameters
    ----------
    drug : str
        ``dopamine``, ``dobutamine``, ``epinephrine``, ``norepinephrine`` (scored by SOFA-1), or ``vasopressin``,
        ``phenylephrine``, ``milrinone`` (kept for other scores; not scored by SOFA-1).
    start, stop : datetime
        The segment runs over ``[start, stop]``; ``stop >= start``. A rate change is a new segment.
    rate_ug_kg_min : float or None
        Rate in µg/kg/min (norepinephrine as charted; SOFA-2 converts salts). Required for the four
        catecholamines; ``None`` allowed for the other drugs (vasopressin is dosed in units/min).
    """

    drug: Drug
    start: Timestamp
    stop: Timestamp
    rate_ug_kg_min: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Infusion:
        where = f"infusion {self.drug} starting {self.start.isoformat()}"
        _interval_order(self.start, self.stop, where, "stop")
        if self.drug in CATECHOLAMINES:
            if self.rate_ug_kg_min is None:
                raise InputError(
                    expected=f"rate_ug_kg_min for {self.drug}",
                    got=None,
                    where=where,
                    todo="send the rate in ug/kg/min (0 for a pump charted at zero)",
                    field="rate_ug_kg_min",
                )
            try:
                check_plausible(f"{self.drug}_ug_kg_min", self.rate_ug_kg_min, where=where)
            except InputError as exc:
                exc.field = "rate_ug_kg_min"
                raise
        elif self.rate_ug_kg_min is not None and not 0 <= self.rate_ug_kg_min <= 100:
            raise ImplausibleValueError(
                expected="rate_ug_kg_min between 0 and 100",
                got=self.rate_ug_kg_min,
                where=where,
                todo="check the rate and its unit (vasopressin: leave the rate out)",
                field="rate_ug_kg_min",
            )
        return self

    @property
    def duration_min(self) -> float:
        """Running time of the segment in minutes."""
        return (self.stop - self.start).total_seconds() / 60.0


class AntibioticAdministration(_Frozen):
    """One systemic antibiotic administration (or order start) at a time."""

    time: Timestamp
    name: str
    route: str | None = None


class CultureSample(_Frozen):
    """One body-fluid culture sample taken at a time (any specimen); ``positive`` None = result unknown."""

    time: Timestamp
    specimen: str
    positive: bool | None = None


class VentilationEpisode(_Frozen):
    """An episode of one kind of respiratory support over ``[start, end]`` (kinds as :class:`SofaInputs`)."""

    start: Timestamp
    end: Timestamp
    kind: Ventilation

    @model_validator(mode="after")
    def _check(self) -> VentilationEpisode:
        _interval_order(
            self.start, self.end, f"ventilation episode {self.kind} starting {self.start.isoformat()}", "end"
        )
        return self


class SedationEpisode(_Frozen):
    """Continuous sedation over ``[start, end]``: a GCS charted inside it was assessed under sedation."""

    start: Timestamp
    end: Timestamp
    agent: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SedationEpisode:
        _interval_order(self.start, self.end, f"sedation episode starting {self.start.isoformat()}", "end")
        return self


def _sorted(items: tuple[Any, ...], key: Any) -> tuple[Any, ...]:
    return tuple(sorted(items, key=key))


class PatientTimeline(_Frozen):
    """Everything the rules need about one ICU stay, in canonical units.

    Parameters
    ----------
    stay_id : str or int
        Identifier of the ICU stay.
    icu_intime, icu_outtime : datetime
        ICU admission and discharge (``icu_outtime`` None while the stay is open); ``icu_outtime >= icu_intime``.
    admission_time : datetime, optional
        Hospital admission (used by the ImmunoSep registry baseline: the admission SOFA).
    admission_source : {"emergency_department", "inpatient"}, optional
        How the patient came in (ImmunoSep I5: ED patients need total SOFA ≥ 2, inpatients a rise ≥ 2).
    weight_kg : float, optional
        Body weight in kg (catecholamine rates are already per kg).
    observations, infusions, antibiotics, cultures, ventilation, sedation : sequences
        The record of the stay; stored sorted by time.
    """

    stay_id: str | int
    icu_intime: Timestamp
    icu_outtime: Timestamp | None = None
    admission_time: Timestamp | None = None
    admission_source: AdmissionSource | None = None
    weight_kg: float | None = None
    observations: tuple[Observation, ...] = ()
    infusions: tuple[Infusion, ...] = ()
    antibiotics: tuple[AntibioticAdministration, ...] = ()
    cultures: tuple[CultureSample, ...] = ()
    ventilation: tuple[VentilationEpisode, ...] = ()
    sedation: tuple[SedationEpisode, ...] = ()

    @field_validator("observations", mode="after")
    @classmethod
    def _sort_obs(cls, v: tuple[Observation, ...]) -> tuple[Observation, ...]:
        return _sorted(v, key=lambda o: (o.time, o.concept, o.value))

    @field_validator("infusions", mode="after")
    @classmethod
    def _sort_inf(cls, v: tuple[Infusion, ...]) -> tuple[Infusion, ...]:
        return _sorted(v, key=lambda i: (i.start, i.drug, i.stop))

    @field_validator("antibiotics", mode="after")
    @classmethod
    def _sort_abx(cls, v: tuple[AntibioticAdministration, ...]) -> tuple[AntibioticAdministration, ...]:
        return _sorted(v, key=lambda a: (a.time, a.name))

    @field_validator("cultures", mode="after")
    @classmethod
    def _sort_cx(cls, v: tuple[CultureSample, ...]) -> tuple[CultureSample, ...]:
        return _sorted(v, key=lambda c: (c.time, c.specimen))

    @field_validator("ventilation", mode="after")
    @classmethod
    def _sort_vent(cls, v: tuple[VentilationEpisode, ...]) -> tuple[VentilationEpisode, ...]:
        return _sorted(v, key=lambda e: (e.start, e.end, e.kind))

    @field_validator("sedation", mode="after")
    @classmethod
    def _sort_sed(cls, v: tuple[SedationEpisode, ...]) -> tuple[SedationEpisode, ...]:
        return _sorted(v, key=lambda e: (e.start, e.end))

    @model_validator(mode="after")
    def _check(self) -> PatientTimeline:
        where = f"timeline of stay {self.stay_id}"
        if self.icu_outtime is not None:
            _interval_order(self.icu_intime, self.icu_outtime, where, "icu_outtime")
        if self.weight_kg is not None:
            try:
                check_plausible("weight_kg", self.weight_kg, where=f"{where}, field weight_kg")
            except InputError as exc:
                exc.field = "weight_kg"
                raise
        naive = self.icu_intime.tzinfo is None
        for label, t in self._all_times():
            if (t.tzinfo is None) != naive:
                raise ConflictingInputError(
                    expected="every time of the timeline timezone-naive, or every time timezone-aware",
                    got=f"{label} {t.isoformat()} vs icu_intime {self.icu_intime.isoformat()}",
                    where=where,
                    todo="send all times in the same form (naive local clock, or aware)",
                    field=label.split("[", 1)[0],
                )
        return self

    def _all_times(self) -> list[tuple[str, datetime]]:
        out: list[tuple[str, datetime]] = []
        for name in ("icu_outtime", "admission_time"):
            t = getattr(self, name)
            if t is not None:
                out.append((name, t))
        out += [(f"observations[{i}]", o.time) for i, o in enumerate(self.observations)]
        out += [(f"infusions[{i}]", x.start) for i, x in enumerate(self.infusions)]
        out += [(f"antibiotics[{i}]", a.time) for i, a in enumerate(self.antibiotics)]
        out += [(f"cultures[{i}]", c.time) for i, c in enumerate(self.cultures)]
        out += [(f"ventilation[{i}]", e.start) for i, e in enumerate(self.ventilation)]
        out += [(f"sedation[{i}]", e.start) for i, e in enumerate(self.sedation)]
        return out

    def last_event_time(self) -> datetime | None:
        """The latest clinical time recorded (observation, infusion stop, episode end), or None if there is none."""
        times = [o.time for o in self.observations]
        times += [x.stop for x in self.infusions]
        times += [e.end for e in self.ventilation]
        times += [e.end for e in self.sedation]
        return max(times) if times else None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, where: str = "timeline") -> PatientTimeline:
        """Build a timeline from a JSON-like record; wrong types raise :class:`InputError` naming the item.

        >>> PatientTimeline.from_record({"stay_id": 1, "icu_intime": "2024-01-01T08:00:00",
        ...                              "observations": [{"time": "x", "concept": "gcs", "value": 15}]})
        Traceback (most recent call last):
        ...
        immunoguide.errors.InputError: [IG-E100] expected input should be a valid datetime...; got 'x'; in timeline, field observations.0.time; ...
        """
        if not isinstance(record, Mapping):
            raise InputError(
                expected="a JSON object describing one stay",
                got=type(record).__name__,
                where=where,
                todo="send one object per stay",
            )
        try:
            return cls.model_validate(dict(record))
        except InputError as exc:
            exc.where = f"{where}, {exc.where}" if exc.where else where
            raise exc from None
        except ValidationError as exc:
            err = exc.errors()[0]
            fieldname = ".".join(str(p) for p in err["loc"]) or "record"
            raise InputError(
                expected=err["msg"].lower(),
                got=err.get("input"),
                where=f"{where}, field {fieldname}",
                todo="fix the value's type (ISO 8601 times, numbers as numbers)",
                field=fieldname,
            ) from None
