"""CTCAE v5.0 as data: adverse-event term look-up (with MedDRA LLT codes) and laboratory grading.

The terms, their MedDRA codes (each with its source and confidence), the grades each term allows and the
laboratory grade bands live in ``criteria/ctcae_v5.toml``; this module only loads, validates and applies them
(no I/O besides reading the shipped file, no clock).

* :func:`lookup_term` codes what a site typed (a CTCAE term, case-insensitive, or a listed look-up synonym) to the
  CTCAE term; anything else is refused with :class:`~immunoguide.errors.UnknownTermError` naming the closest terms.
  :func:`search_terms` is the look-up behind ``immunoguide safety terms``.
* :func:`grade_lab` grades one laboratory result (haemoglobin, platelets, neutrophils, lymphocytes, bilirubin,
  creatinine, AST, ALT): the value is converted exactly to the concept's canonical unit, compared with the bands
  exactly (rational arithmetic, so 75 x10^3/µL is grade 1 or 0 by the LLN and 74.9999 grade 2), using the lab's
  own lower/upper limit of normal when a band needs it. Missing LLN/ULN → ``grade`` None with the reason, never a
  guessed limit.

Examples
--------
>>> lookup_term("thrombocytopenia").term, lookup_term("thrombocytopenia").meddra_code
('Platelet count decreased', '10035528')
>>> g = grade_lab("platelets", 40, "10^9/L")
>>> g.term, g.grade, g.grade_text
('Platelet count decreased', 3, '<50,000 - 25,000/mm3')
>>> grade_lab("platelets", 120, "10^9/L").grade is None, grade_lab("platelets", 120, "10^9/L", lln=150).grade
(True, 1)
>>> grade_lab("bilirubin", 3.1, "mg/dL", uln=1.2).grade
2
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from immunoguide.criteria import Band, Interval, Ladder, check_ladder, parse_interval
from immunoguide.errors import CriteriaError, InputError, UnknownTermError, WrongTypeError
from immunoguide.units import check_plausible, concept, finite_float, to_canonical_exact

__all__ = [
    "LAB_ANALYTES",
    "CtcaeDictionary",
    "CtcaeTerm",
    "LabGrade",
    "LabGrading",
    "grade_lab",
    "load_ctcae",
    "load_ctcae_text",
    "lookup_term",
    "search_terms",
]

#: The grade marker of a band graded 1 below the LLN and 0 at or above it.
_LLN = -1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CtcaeTerm(_Strict):
    """One CTCAE v5.0 term with its MedDRA LLT code (empty when not confirmed), SOC and allowed grades."""

    term: str
    soc: str
    meddra_code: str = Field(pattern=r"^(\d{8})?$")
    meddra_source: str
    meddra_confidence: Literal["confirmed", "likely", "unknown"]
    grades: tuple[int, ...] = Field(min_length=1)
    grades_checked: bool
    synonyms: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (``meddra_code`` None when not confirmed, with a flag)."""
        return {"term": self.term, "soc": self.soc, "meddra_code": self.meddra_code or None,
                "meddra_confidence": self.meddra_confidence, "meddra_source": self.meddra_source,
                "meddra_flag": None if self.meddra_code else "MedDRA code not confirmed from a citable source",
                "grades": list(self.grades), "grades_checked": self.grades_checked, "synonyms": list(self.synonyms)}


class _BandSpec(_Strict):
    interval: str
    grade: int | Literal["lln"]


class _LabSpec(_Strict):
    term: str
    concept: str
    scale: Literal["absolute", "uln_multiple"]
    bands: tuple[_BandSpec, ...] = Field(min_length=2)
    grade_text: dict[str, str]
    note: str = ""
    not_applied: str = ""


class _File(_Strict):
    schema_: str = Field(alias="schema")
    id: str
    version: str
    title: str
    meddra_version: str
    sources: dict[str, str]
    terms: tuple[CtcaeTerm, ...]
    labs: dict[str, _LabSpec]


@dataclass(frozen=True)
class LabGrading:
    """The grade ladder of one safety laboratory analyte (validated to partition ``[0, inf)``)."""

    analyte: str
    term: str
    concept: str
    scale: Literal["absolute", "uln_multiple"]
    ladder: Ladder
    grade_text: Mapping[int, str]
    note: str = ""
    not_applied: str = ""

    @property
    def needs(self) -> str | None:
        """``"uln"`` / ``"lln"`` when some band needs the lab's limit of normal (None otherwise)."""
        if self.scale == "uln_multiple":
            return "uln"
        return "lln" if any(b.points == _LLN for b in self.ladder.bands) else None


@dataclass(frozen=True)
class CtcaeDictionary:
    """The loaded ``ctcae_v5.toml``: terms by lower-cased name and synonym, and the laboratory gradings."""

    id: str
    version: str
    meddra_version: str
    terms: tuple[CtcaeTerm, ...]
    labs: Mapping[str, LabGrading]
    sources: Mapping[str, str]
    _index: Mapping[str, CtcaeTerm] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """``ctcae-v5.0@1.0.0`` (recorded with every coded term and graded result)."""
        return f"{self.id}@{self.version}"

    def term(self, name: str) -> CtcaeTerm:
        """The term named ``name`` exactly (case-insensitive), or a listed synonym; KeyError otherwise."""
        return self._index[_key(name)]


def _key(text: str) -> str:
    return " ".join(str(text).strip().lower().split())


def _grade_points(g: int | str) -> int:
    return _LLN if g == "lln" else int(g)


@cache
def load_ctcae() -> CtcaeDictionary:
    """Load and validate the shipped ``criteria/ctcae_v5.toml`` (once); see :func:`load_ctcae_text`."""
    text = resources.files("immunoguide.criteria").joinpath("ctcae_v5.toml").read_text("utf-8")
    return load_ctcae_text(text)


def load_ctcae_text(text: str, *, where: str = "criteria/ctcae_v5.toml") -> CtcaeDictionary:
    """Load and validate a CTCAE data file's text.

    Validation: unknown keys refused; MedDRA codes 8 digits or empty (flagged); every term, synonym and lab term
    unique and known; every lab's concept known with its grade bands partitioning ``[0, inf)`` exactly (no
    overlap, no gap: :class:`~immunoguide.errors.BandOverlapError`, :class:`~immunoguide.errors.BandGapError`);
    the grades of a lab ladder are among its term's grades.
    """
    try:
        raw = _File.model_validate(tomllib.loads(text))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CriteriaError(expected=str(err["msg"]), got=err.get("input"), where=f"{where} {err['loc']}",
                            todo="fix the CTCAE data file") from None
    index: dict[str, CtcaeTerm] = {}
    for t in raw.terms:
        for name in (t.term, *t.synonyms):
            k = _key(name)
            if k in index:
                raise CriteriaError(expected="each term and synonym once", got=name, where=where,
                                    todo="remove the duplicate")
            index[k] = t
        if any(g not in (1, 2, 3, 4, 5) for g in t.grades):
            raise CriteriaError(expected="grades among 1-5", got=list(t.grades), where=f"{where} {t.term}",
                                todo="fix the grades")
    labs: dict[str, LabGrading] = {}
    for analyte, spec in raw.labs.items():
        w = f"{where} [labs.{analyte}]"
        if _key(spec.term) not in index or index[_key(spec.term)].term != spec.term:
            raise CriteriaError(expected="a lab term listed under [[terms]]", got=spec.term, where=w,
                                todo="add the term or fix its spelling")
        concept(spec.concept)  # raises for an unknown concept
        bands = tuple(Band(parse_interval(b.interval, where=w), _grade_points(b.grade)) for b in spec.bands)
        ladder = Ladder(name=analyte, concept=spec.concept, component=spec.term,
                        domain=Interval(0.0, True, math.inf, False, "0 <= x"), bands=bands)
        check_ladder(analyte, ladder, w)
        allowed = set(index[_key(spec.term)].grades) | {0}
        used = {1 if b.points == _LLN else b.points for b in bands}
        if not used <= allowed:
            raise CriteriaError(expected=f"grades of {spec.term}: {sorted(allowed)}", got=sorted(used), where=w,
                                todo="fix the bands or the term's grades")
        if spec.scale == "uln_multiple" and any(b.points == _LLN for b in bands):
            raise CriteriaError(expected="no 'lln' band on a ULN-multiple scale", got=analyte, where=w,
                                todo="use grade numbers")
        labs[analyte] = LabGrading(
            analyte=analyte, term=spec.term, concept=spec.concept, scale=spec.scale, ladder=ladder,
            grade_text=MappingProxyType({int(k): v for k, v in spec.grade_text.items()}), note=spec.note,
            not_applied=spec.not_applied,
        )
    return CtcaeDictionary(raw.id, raw.version, raw.meddra_version, raw.terms, MappingProxyType(labs),
                           MappingProxyType(dict(raw.sources)), MappingProxyType(index))


#: Safety laboratory analytes the follow-up collects (record field prefix → concept), from the data file.
LAB_ANALYTES: Mapping[str, str] = MappingProxyType({k: v.concept for k, v in load_ctcae().labs.items()})


def search_terms(query: str = "", *, limit: int = 20) -> list[CtcaeTerm]:
    """Terms whose name, synonym, SOC or MedDRA code contains ``query`` (all when empty), closest first.

    >>> [t.term for t in search_terms("hemorrhage")][:2]
    ['Gastric hemorrhage', 'Intracranial hemorrhage']
    """
    d = load_ctcae()
    q = _key(query)
    if not q:
        return sorted(d.terms, key=lambda t: t.term)[:limit]
    hits = [t for t in d.terms if q in _key(t.term) or any(q in _key(s) for s in t.synonyms) or q in _key(t.soc)
            or (t.meddra_code and q == t.meddra_code)]
    if not hits:
        names = {_key(n): t for t in d.terms for n in (t.term, *t.synonyms)}
        close = difflib.get_close_matches(q, list(names), n=limit, cutoff=0.6)
        hits = list(dict.fromkeys(names[c] for c in close))
    return sorted(hits, key=lambda t: (not _key(t.term).startswith(q), t.term))[:limit]


def lookup_term(text: Any, *, field_name: str = "term") -> CtcaeTerm:
    """Code an adverse-event term as typed to its CTCAE v5.0 term (exact name or listed synonym, any case).

    Raises
    ------
    UnknownTermError
        Free text that is no CTCAE term or synonym (``IG-E113``); the message names the closest terms.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > 128:
        raise InputError(expected="an AE term (1-128 characters)", got=text, where=f"field {field_name}",
                         todo="enter the CTCAE v5.0 term (`immunoguide safety terms QUERY`)", field=field_name)
    d = load_ctcae()
    try:
        return d.term(text)
    except KeyError:
        near = [t.term for t in search_terms(text, limit=5)]
        words = [w for w in _key(text).split() if len(w) > 3]
        if not near and words:
            near = list(dict.fromkeys(t.term for w in words for t in search_terms(w, limit=5)))[:5]
        raise UnknownTermError(
            expected="a CTCAE v5.0 term (or a listed synonym)", got=text, where=f"field {field_name}",
            todo=(f"did you mean: {', '.join(near)}? " if near else "")
            + "look the term up with `immunoguide safety terms QUERY`",
            field=field_name,
        ) from None


@dataclass(frozen=True)
class LabGrade:
    """One graded safety laboratory result."""

    analyte: str
    term: str
    meddra_code: str | None
    concept: str
    value: float
    unit: str
    lln: float | None
    uln: float | None
    grade: int | None
    grade_text: str | None
    reason: str
    criteria: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"analyte": self.analyte, "term": self.term, "meddra_code": self.meddra_code, "concept": self.concept,
                "value": self.value, "unit": self.unit, "lln": self.lln, "uln": self.uln, "grade": self.grade,
                "grade_text": self.grade_text, "reason": self.reason, "criteria": self.criteria,
                "notes": list(self.notes)}


def _limit(name: str, value: Any, conc: str, unit: str) -> Fraction | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InputError(expected=f"a number for {name}", got=value, where=f"field {name}",
                         todo="send the laboratory's reference limit as a number, in the result's unit", field=name)
    q = to_canonical_exact(conc, value, unit, where=f"field {name}")
    check_plausible(conc, finite_float(q, where=f"field {name}"), where=f"field {name}")
    if q <= 0:
        raise InputError(expected=f"{name} above 0", got=value, where=f"field {name}", todo="check the limit",
                         field=name)
    return q


def grade_lab(analyte: str, value: Any, unit: str, *, lln: Any = None, uln: Any = None) -> LabGrade:
    """Grade one safety laboratory result by CTCAE v5.0 (see the module docstring).

    Parameters
    ----------
    analyte : str
        ``hemoglobin``, ``platelets``, ``neutrophils``, ``lymphocytes``, ``bilirubin``, ``creatinine``, ``ast``, ``alt``.
    value : number
        The result as reported, in ``unit``.
    unit : str
        One of the units the analyte's concept accepts (``criteria/concepts.toml``).
    lln, uln : number, optional
        The laboratory's lower / upper limit of normal, in ``unit`` (needed by some bands).

    Returns
    -------
    LabGrade
        ``grade`` 0-4, or None with the reason when a needed limit was not reported.

    Raises
    ------
    InputError, UnitError, ImplausibleValueError, WrongTypeError
        Unknown analyte, a boolean or non-number, an unknown unit, an implausible value or limit.
    """
    d = load_ctcae()
    lab = d.labs.get(analyte)
    if lab is None:
        raise InputError(expected=f"a safety laboratory analyte of {sorted(d.labs)}", got=analyte,
                         where="safety labs", todo="check the field name", field=analyte)
    if isinstance(value, bool):
        raise WrongTypeError(expected=f"a number for {analyte}", got=value, where=f"field {analyte}",
                             todo="send the measured number", field=analyte)
    if not isinstance(value, (int, float, Decimal)):
        raise InputError(expected=f"a number for {analyte}", got=value, where=f"field {analyte}",
                         todo="send the measured number (censored values are not graded)", field=analyte)
    q = to_canonical_exact(lab.concept, value, unit, where=f"field {analyte}")
    v = check_plausible(lab.concept, finite_float(q, where=f"field {analyte}"), where=f"field {analyte}")
    lo, hi = _limit(f"{analyte}_lln", lln, lab.concept, unit), _limit(f"{analyte}_uln", uln, lab.concept, unit)
    if lo is not None and hi is not None and not lo < hi:
        raise InputError(expected=f"{analyte}_lln below {analyte}_uln", got=(lln, uln), where=f"field {analyte}_lln",
                         todo="check the reference range", field=f"{analyte}_lln")
    notes = [n for n in (lab.note, f"not applied: {lab.not_applied}" if lab.not_applied else "") if n]
    term = d.term(lab.term)

    def out(grade: int | None, reason: str) -> LabGrade:
        return LabGrade(analyte, lab.term, term.meddra_code or None, lab.concept, v, concept(lab.concept).unit,
                        None if lo is None else float(lo), None if hi is None else float(hi), grade,
                        lab.grade_text.get(grade) if grade else None, reason, d.label, tuple(notes))

    if lab.scale == "uln_multiple":
        if hi is None:
            return out(None, f"not graded: the laboratory's upper limit of normal ({analyte}_uln) was not reported")
        x: Fraction = q / hi
        band = next(b for b in lab.ladder.bands if b.interval.contains(x))  # type: ignore[arg-type]
        return out(band.points, f"{float(x):.3g} x ULN in {band.interval}")
    band = next(b for b in lab.ladder.bands if b.interval.contains(q))  # type: ignore[arg-type]
    if band.points != _LLN:
        return out(band.points, f"{v:g} {concept(lab.concept).unit} in {band.interval}")
    if lo is None:
        return out(None, f"not graded: {v:g} {concept(lab.concept).unit} is grade 0 or 1 by the LLN, which was "
                         f"not reported ({analyte}_lln)")
    if q < lo:
        return out(1, f"{v:g} {concept(lab.concept).unit} below the LLN {float(lo):g} (and in {band.interval})")
    return out(0, f"{v:g} {concept(lab.concept).unit} at or above the LLN {float(lo):g}")

