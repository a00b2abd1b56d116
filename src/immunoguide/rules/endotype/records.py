"""Flat records at the CLI / service boundary: biomarker results and pending samples read from a record (field
names with units, ISO times) into the classification's types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from immunoguide.errors import ConflictingInputError, InputError, MissingInputError, WrongTypeError
from immunoguide.protocols.model import (
    ClassificationSpec,
)
from immunoguide.rules.endotype.classify import _check_time_kinds
from immunoguide.rules.endotype.results import BiomarkerResult, _iso
from immunoguide.units import check_plausible_time, concept, normalise_unit

# ---------------------------------------------------------------------------------------------------------------
# flat records (CLI / service boundary)


def _parse_time(value: Any, field_name: str, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(
            expected=f"an ISO 8601 date-time text for {field_name}",
            got=value,
            where=f"{where}, field {field_name}",
            todo="send e.g. '2025-03-01T08:30:00+01:00'",
            field=field_name,
        )
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            expected=f"an ISO 8601 date-time for {field_name}",
            got=value,
            where=f"{where}, field {field_name}",
            todo="send e.g. '2025-03-01T08:30:00+01:00'",
            field=field_name,
        ) from None
    return check_plausible_time(t, field=field_name, where=f"{where}, field {field_name}")


@dataclass(frozen=True)
class PendingSample:
    """A sample drawn whose result has not been reported yet (a sample time without a value)."""

    analyte: str
    concept: str
    sample_time: datetime
    source: str | None = None
    method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"analyte": self.analyte, "concept": self.concept, "sample_time": _iso(self.sample_time),
                "source": self.source, "method": self.method}


def _analytes(spec: ClassificationSpec) -> dict[str, str]:
    analytes: dict[str, str] = {}
    crits = [c for r in spec.endotypes for c in r.all_of] + [c for rv in spec.reversals for c in rv.all_of]
    for c in crits:
        analytes.setdefault(c.analyte, c.concept)
    return analytes


def pending_from_record(
    record: Mapping[str, Any], spec: ClassificationSpec, *, where: str = "record"
) -> tuple[PendingSample, ...]:
    """The samples a flat record announces without a result: ``<analyte>_sample_time`` given, value absent.

    A pending sample is never classified; it is reported (warning ``result_pending``) and, in the trial store,
    recorded as an open order so that the assay's turnaround can be watched against the protocol window.

    >>> from immunoguide.protocols import load_protocol
    >>> spec = load_protocol("immunosep-2025").classification
    >>> [p.analyte for p in pending_from_record({"hla_dr_sample_time": "2025-03-01T08:00:00+00:00"}, spec)]
    ['hla_dr']
    """
    out: list[PendingSample] = []
    for a, conc in _analytes(spec).items():
        if record.get(a) is not None or record.get(conc) is not None:
            continue
        t = _parse_time(record.get(f"{a}_sample_time"), f"{a}_sample_time", where)
        if t is None:
            continue
        src, method = record.get(f"{a}_source"), record.get(f"{a}_method")
        if record.get(f"{a}_result_time") is not None:
            raise MissingInputError(
                expected=f"a value for {a} together with {a}_result_time", got=None, where=f"{where}, field {a}",
                todo="a reported result carries its value; leave result_time out while the result is pending",
                field=a,
            )
        out.append(PendingSample(a, conc, t, None if src is None else str(src), method if isinstance(method, str) else None))
    return tuple(out)


def results_from_record(
    record: Mapping[str, Any], spec: ClassificationSpec, *, where: str = "record"
) -> tuple[tuple[BiomarkerResult, ...], datetime | None, datetime | None]:
    """Read biomarker results and times from one flat record (one JSON line of ``immunoguide classify``).

    For each analyte of the protocol (e.g. ``ferritin`` → ``ferritin_ng_per_ml``, ``hla_dr`` →
    ``hla_dr_per_monocyte``) the record may hold the value either as ``<analyte>`` (number or censored text) with
    a required ``<analyte>_unit``, or as ``<concept>`` (the unit is in the name), plus ``<analyte>_method`` and
    ``<analyte>_sample_time`` / ``_receipt_time`` / ``_result_time`` (ISO 8601). Record-level fields:
    ``anchor_time``, ``at`` and ``id`` (echoed by the CLI). ``null`` means missing.

    Returns
    -------
    (results, anchor_time, at)

    Raises
    ------
    InputError
        Unknown field, value without unit, both spellings given, bad time, unparseable value; the error names
        the field.

    Examples
    --------
    >>> from immunoguide.protocols.model import (BiomarkerCriterion, Citation, ClassificationSpec,
    ...     EndotypeRule, SampleTiming)
    >>> cite = Citation("example", "confirmed")
    >>> spec = ClassificationSpec((EndotypeRule("MALS", 1, (BiomarkerCriterion("ferritin",
    ...     "ferritin_ng_per_ml", ">", 4420.0, "ng/mL", cite),), cite),), "unclassified",
    ...     SampleTiming("sepsis3_onset", None, 72.0, None, cite))
    >>> rs, anchor, at = results_from_record({"ferritin": "GREATER THAN 2000", "ferritin_unit": "ng/mL"}, spec)
    >>> rs[0].value.describe(), anchor, at
    ('>2000', None, None)
    """
    if not isinstance(record, Mapping):
        raise InputError(
            expected="a JSON object", got=type(record).__name__, where=where, todo="send one object per line"
        )
    analytes = _analytes(spec)
    known = {"id", "anchor_time", "at"}
    for a, conc in analytes.items():
        known |= {a, f"{a}_unit", conc, f"{a}_method", f"{a}_source"}
        known |= {f"{a}_{t}" for t in ("sample_time", "receipt_time", "result_time")}
    for key in record:
        if key not in known:
            raise InputError(
                expected="a known classification field",
                got=key,
                where=where,
                todo=f"check the spelling; fields are {', '.join(sorted(known))}",
                field=key,
            )
    results: list[BiomarkerResult] = []
    for a, conc in analytes.items():
        raw, by_concept = record.get(a), record.get(conc)
        if raw is not None and by_concept is not None and a != conc:
            raise InputError(
                expected=f"only one of {a} (+ {a}_unit) and {conc}",
                got="both",
                where=f"{where}, field {a}",
                todo="send the value once",
                field=a,
            )
        if raw is None and by_concept is None:
            continue
        if raw is not None:
            unit = record.get(f"{a}_unit")
            if unit is None:
                raise MissingInputError(
                    expected=f"{a}_unit together with {a}",
                    got=None,
                    where=f"{where}, field {a}_unit",
                    todo=f"state the unit ({', '.join(sorted(concept(conc).units))}) or send {conc}",
                    field=f"{a}_unit",
                )
            if not isinstance(unit, str):
                raise InputError(
                    expected=f"a unit text for {a}_unit",
                    got=unit,
                    where=f"{where}, field {a}_unit",
                    todo="send e.g. 'ng/mL'",
                    field=f"{a}_unit",
                )
            value, fname = raw, a
        else:
            unit, value, fname = concept(conc).unit, by_concept, conc
            stated = record.get(f"{a}_unit")
            if stated is not None and (not isinstance(stated, str) or normalise_unit(stated) != concept(conc).unit):
                raise ConflictingInputError(
                    expected=f"{conc} in {concept(conc).unit} (the unit is in the field name)",
                    got=f"{a}_unit = {stated!r}",
                    where=f"{where}, field {a}_unit",
                    todo=f"send the value as {a} with {a}_unit = {stated!r}, or drop {a}_unit",
                    field=f"{a}_unit",
                )
        if isinstance(value, bool):
            raise WrongTypeError(
                expected=f"a number or a censored value text for {fname}", got=value,
                where=f"{where}, field {fname}", todo="send the reported result (true/false is not a result)",
                field=fname,
            )
        method = record.get(f"{a}_method")
        if method is not None and not isinstance(method, str):
            raise InputError(
                expected=f"a method tag text for {a}_method",
                got=method,
                where=f"{where}, field {a}_method",
                todo="send e.g. 'quantibrite_abc'",
                field=f"{a}_method",
            )
        source = record.get(f"{a}_source")
        times = {
            t: _parse_time(record.get(f"{a}_{t}"), f"{a}_{t}", where)
            for t in ("sample_time", "receipt_time", "result_time")
        }
        try:
            results.append(
                BiomarkerResult.measured(
                    conc,
                    value,
                    unit,
                    method=method,
                    sample_time=times["sample_time"],
                    receipt_time=times["receipt_time"],
                    result_time=times["result_time"],
                    source=None if source is None else str(source),
                    where=f"{where}, field {fname}",
                )
            )
        except InputError as exc:
            if exc.field is None:
                exc.field = fname
            if exc.where is None or where not in exc.where:
                exc.where = f"{where}, field {fname}" + (f" ({exc.where})" if exc.where else "")
            raise
    anchor = _parse_time(record.get("anchor_time"), "anchor_time", where)
    at = _parse_time(record.get("at"), "at", where)
    _check_time_kinds(results, anchor, at)
    return tuple(results), anchor, at
