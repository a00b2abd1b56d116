"""Checks of a protocol document against itself, the concepts and the patient record, and the building of
:class:`~immunoguide.protocols._protocol.Protocol` (:class:`_Checker`); intervals for the contradiction checks.

Structure (keys, types, closed vocabularies) is checked by the pydantic models of :mod:`._schema` first; everything
that needs more than one table is checked here, and every failure is a :class:`~immunoguide.errors.CriteriaError`
saying what was expected, what was found, where, and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from immunoguide.errors import CriteriaError, UnitError
from immunoguide.protocols._protocol import Protocol
from immunoguide.protocols._schema import (
    SCHEMA_ID,
    BiomarkerSpec,
    Condition,
    EndotypeInCriterion,
    FlagCriterion,
    OverlayCriterion,
    ProtocolDocument,
    Regimen,
    Sepsis3Criterion,
    ThresholdCriterion,
    UnknownCriterion,
    ValueInCriterion,
    WindowCriterion,
)
from immunoguide.protocols.model import (
    BiomarkerCriterion,
    ClassificationSpec,
    EndotypeRule,
    ReversalRule,
    SampleTiming,
)
from immunoguide.protocols.record import PatientRecord
from immunoguide.units import concept as lookup_concept
from immunoguide.units import normalise_unit

# ---------------------------------------------------------------------------------------------------------------
# Intervals (for contradiction checks)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Iv:
    lo: float = -math.inf
    lo_in: bool = False
    hi: float = math.inf
    hi_in: bool = False

    @staticmethod
    def of(comparator: str, t: float) -> _Iv:
        return {
            ">": _Iv(t, False, math.inf, False),
            ">=": _Iv(t, True, math.inf, False),
            "<": _Iv(-math.inf, False, t, False),
            "<=": _Iv(-math.inf, False, t, True),
        }[comparator]

    def __and__(self, o: _Iv) -> _Iv:
        if self.lo > o.lo or (self.lo == o.lo and not self.lo_in):
            lo, lo_in = self.lo, self.lo_in
        else:
            lo, lo_in = o.lo, o.lo_in
        if self.hi < o.hi or (self.hi == o.hi and not self.hi_in):
            hi, hi_in = self.hi, self.hi_in
        else:
            hi, hi_in = o.hi, o.hi_in
        return _Iv(lo, lo_in, hi, hi_in)

    @property
    def empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_in and self.hi_in))

    def covers(self, o: _Iv) -> bool:
        """True if every point of ``o`` lies in ``self``."""
        if o.empty:
            return True
        lo_ok = self.lo < o.lo or (self.lo == o.lo and (self.lo_in or not o.lo_in))
        hi_ok = self.hi > o.hi or (self.hi == o.hi and (self.hi_in or not o.hi_in))
        return lo_ok and hi_ok

    def __str__(self) -> str:
        lo = "-inf" if self.lo == -math.inf else f"{self.lo:g}"
        hi = "inf" if self.hi == math.inf else f"{self.hi:g}"
        return f"{'[' if self.lo_in else '('}{lo}, {hi}{']' if self.hi_in else ')'}"


def _conjunction(criteria: Any) -> dict[str, _Iv]:
    out: dict[str, _Iv] = {}
    for b in criteria:
        iv = _Iv.of(b.comparator, float(b.threshold))
        out[b.concept] = out[b.concept] & iv if b.concept in out else iv
    return out


# ---------------------------------------------------------------------------------------------------------------
# Building and checking
# ---------------------------------------------------------------------------------------------------------------

_KIT_ROUTES = frozenset({"IV", "SC", "IM", "PO"})
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class _Checker:
    def __init__(self, doc: ProtocolDocument, where: str) -> None:
        self.doc = doc
        self.where = where

    def fail(self, at: str, *, expected: str, got: Any, todo: str) -> None:
        raise CriteriaError(expected=expected, got=got, where=f"{self.where} [{at}]", todo=todo)

    # -- settings and citations -------------------------------------------------------------------------------

    def setting_ref(self, name: str, at: str) -> None:
        if name not in self.doc.settings:
            self.fail(
                at,
                expected=f"a setting declared in [settings]: {sorted(self.doc.settings)}",
                got=name,
                todo=f"declare [settings.{name}] with its options, default, confidence and warning",
            )

    def settings(self) -> None:
        for name, s in self.doc.settings.items():
            if s.default not in s.options:
                self.fail(
                    f"settings.{name}",
                    expected=f"default among the setting's options {sorted(s.options)}",
                    got=s.default,
                    todo="set default to one of the options (an unknown item defaults to 'not_applied')",
                )

    def cited(self) -> Iterator[tuple[str, Any]]:
        d = self.doc
        for name, s in d.settings.items():
            yield f"settings.{name}", s
        for sect in ("inclusion", "exclusion"):
            for c in getattr(d, sect):
                yield f"{sect} {c.id}", c
        if d.classification is not None:
            yield "classification", d.classification
            yield "classification.timing", d.classification.timing
            for e in d.classification.endotypes:
                yield f"classification.endotypes {e.name}", e
                for b in e.all_of:
                    yield f"classification.endotypes {e.name} {b.analyte}", b
            for r in d.classification.reversals:
                yield f"classification.reversals {r.endotype}", r
                for b in r.all_of:
                    yield f"classification.reversals {r.endotype} {b.analyte}", b
        for o in d.overlays:
            yield f"overlays {o.id}", o
        if d.blinding is not None:
            yield "blinding", d.blinding
        for a in d.arms:
            yield f"arms {a.code}", a
        for reg in d.regimens:
            yield f"regimens {reg.id}", reg
            if reg.renal_check is not None:
                yield f"regimens {reg.id} renal_check", reg.renal_check
        if d.visits is not None:
            yield "visits", d.visits
        for ep in d.endpoints:
            yield f"endpoints {ep.id}", ep
        for name, choice in d.sap.items():
            yield f"sap.{name}", choice
        if d.randomisation is not None:
            if d.randomisation.ratio is not None:
                yield "randomisation.ratio", d.randomisation.ratio
            if d.randomisation.sequence is not None:
                yield "randomisation.sequence", d.randomisation.sequence

    def citations(self) -> None:
        keys = set(self.doc.protocol.citations)
        for at, item in self.cited():
            if not keys.intersection(_TOKEN.findall(item.citation)):
                self.fail(
                    at,
                    expected=f"a citation naming at least one key of [protocol.citations]: {sorted(keys)}",
                    got=item.citation,
                    todo="cite the source by its key (and page/table), or declare the source in [protocol.citations]",
                )

    # -- concepts, units, methods -----------------------------------------------------------------------------

    def concept_unit(self, concept: str, unit: str, at: str, *, todo: str | None = None) -> str:
        try:
            c = lookup_concept(concept)
        except UnitError:
            self.fail(
                at,
                expected="a concept of criteria/concepts.toml",
                got=concept,
                todo="use a canonical concept name (e.g. ferritin_ng_per_ml) or add the concept with its unit",
            )
            raise  # pragma: no cover - fail() raises
        if normalise_unit(unit) != c.unit:
            self.fail(
                at,
                expected=f"the canonical unit of {concept}: {c.unit!r}",
                got=unit,
                todo=todo or f"write the threshold in {c.unit} (convert it once, in the file)",
            )
        return c.unit

    def plausible(self, concept: str, value: float, at: str) -> None:
        c = lookup_concept(concept)
        if not (c.min <= value <= c.max):
            self.fail(
                at,
                expected=f"a threshold inside the plausible range of {concept} [{c.min:g}, {c.max:g}] {c.unit}",
                got=value,
                todo="check the threshold and its unit",
            )

    def method_aliases(self) -> tuple[tuple[str, str], ...]:
        """Lower-case alias → method tag; an alias naming two methods, or another method's tag, is refused."""
        methods = self.doc.vocabularies.methods
        out: dict[str, str] = {}
        for tag, m in methods.items():
            for alias in m.aliases:
                key = alias.strip().lower()
                other = out.get(key) or next((t for t in methods if t.lower() == key and t != tag), None)
                if not key or (other is not None and other != tag):
                    self.fail(
                        f"vocabularies.methods.{tag}",
                        expected="aliases that name only this method",
                        got=alias,
                        todo=f"remove the alias (it also names {other!r})" if other else "remove the empty alias",
                    )
                if key != tag:
                    out[key] = tag
        return tuple(sorted(out.items()))

    def vocabularies(self) -> None:
        self.method_aliases()
        for tag, m in self.doc.vocabularies.methods.items():
            for conc in m.concepts:
                self.concept_unit(
                    conc,
                    m.unit,
                    f"vocabularies.methods.{tag}",
                    todo="a method reporting another unit (e.g. MFI) measures a different quantity: declare a "
                    "concept for it; thresholds are not portable across methods",
                )

    def biomarker(self, b: BiomarkerSpec, at: str) -> BiomarkerCriterion:
        unit = self.concept_unit(b.concept, b.unit, at)
        self.plausible(b.concept, b.threshold, at)
        methods = self.doc.vocabularies.methods
        for tag in b.methods:
            if tag not in methods:
                self.fail(
                    at,
                    expected=f"an assay-method tag declared in [vocabularies.methods]: {sorted(methods)}",
                    got=tag,
                    todo="declare the method (its unit and concepts) or fix the tag; thresholds are not portable "
                    "across methods (QuantiBRITE AB/c is not MFI)",
                )
            if b.concept not in methods[tag].concepts:
                self.fail(
                    at,
                    expected=f"a method that measures {b.concept}",
                    got=tag,
                    todo=f"method {tag!r} measures {list(methods[tag].concepts)}; use a method declared for this concept",
                )
        if not b.methods and any(b.concept in m.concepts for m in methods.values()):
            self.fail(
                at,
                expected=f"the assay method(s) of this {b.concept} threshold",
                got=[],
                todo="name the method, e.g. methods = [\"quantibrite_abc\"]: the threshold is only valid for it",
            )
        if b.persistence_count < 1:
            self.fail(at, expected="persistence_count >= 1", got=b.persistence_count, todo="use 1 for one sample")
        if b.persistence_consecutive_days and b.persistence_count < 2:
            self.fail(
                at,
                expected="persistence_count >= 2 when persistence_consecutive_days is true",
                got=b.persistence_count,
                todo="set persistence_count to the number of consecutive days (e.g. 2)",
            )
        return BiomarkerCriterion(
            analyte=b.analyte,
            concept=b.concept,
            comparator=b.comparator,
            threshold=float(b.threshold),
            unit=unit,
            citation=b.cite(),
            methods=tuple(b.methods),
            persistence_count=b.persistence_count,
            persistence_consecutive_days=b.persistence_consecutive_days,
        )

    # -- classification ---------------------------------------------------------------------------------------

    def classification(self) -> ClassificationSpec | None:
        cs = self.doc.classification
        if cs is None:
            return None
        names = [e.name for e in cs.endotypes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            self.fail("classification.endotypes", expected="unique endotype names", got=dup, todo="rename one")
        if cs.otherwise in names:
            self.fail(
                "classification.otherwise",
                expected="a fallback label that is not an endotype name",
                got=cs.otherwise,
                todo="name the 'neither' state differently (e.g. unclassified)",
            )
        rules: list[EndotypeRule] = []
        conj: dict[str, dict[str, _Iv]] = {}
        for e in cs.endotypes:
            at = f"classification.endotypes {e.name}"
            crit = tuple(self.biomarker(b, f"{at} {b.analyte}") for b in e.all_of)
            conj[e.name] = _conjunction(crit)
            for conc, iv in conj[e.name].items():
                if iv.empty:
                    self.fail(
                        at,
                        expected=f"criteria on {conc} that some value can meet together",
                        got=[f"{b.comparator} {b.threshold:g}" for b in crit if b.concept == conc],
                        todo="the rule can never be true; fix the comparators or thresholds",
                    )
            rules.append(EndotypeRule(name=e.name, precedence=e.precedence, all_of=crit, citation=e.cite()))
        for i, a in enumerate(cs.endotypes):
            for b in cs.endotypes[i + 1 :]:
                if a.precedence != b.precedence:
                    continue
                shared = set(conj[a.name]) & set(conj[b.name])
                if all(not (conj[a.name][c] & conj[b.name][c]).empty for c in shared):
                    both = {c: str(conj[a.name][c] & conj[b.name][c]) for c in sorted(shared)}
                    self.fail(
                        f"classification.endotypes {a.name} / {b.name}",
                        expected="endotype rules of equal precedence that cannot both be true",
                        got=f"precedence {a.precedence} for both; both true when {both or 'any values'}",
                        todo="give one rule the lower precedence number (it wins), or make the rules exclusive",
                    )
        t = cs.timing
        for key in ("window_before_anchor_h", "window_after_anchor_h", "max_result_age_h"):
            v = getattr(t, key)
            if v is not None and v < 0:
                self.fail(f"classification.timing.{key}", expected="hours >= 0 or absent", got=v, todo="fix")
        for s in t.depends_on_settings:
            self.setting_ref(s, "classification.timing")
        timing = SampleTiming(
            anchor=t.anchor,
            window_before_anchor_h=t.window_before_anchor_h,
            window_after_anchor_h=t.window_after_anchor_h,
            max_result_age_h=t.max_result_age_h,
            citation=t.cite(),
        )
        reversals: list[ReversalRule] = []
        for r in cs.reversals:
            at = f"classification.reversals {r.endotype}"
            if r.endotype not in names:
                self.fail(at, expected=f"a declared endotype {names}", got=r.endotype, todo="fix the endotype name")
            has_fall = r.relative_fall_concept is not None or r.relative_fall_fraction is not None
            if has_fall and (r.relative_fall_concept is None or r.relative_fall_fraction is None):
                self.fail(
                    at,
                    expected="relative_fall_concept and relative_fall_fraction together",
                    got={"concept": r.relative_fall_concept, "fraction": r.relative_fall_fraction},
                    todo="give both (e.g. ferritin_ng_per_ml and 0.15) or neither",
                )
            if not has_fall and not r.all_of:
                self.fail(
                    at,
                    expected="a relative fall or all_of criteria",
                    got="neither",
                    todo="say what reversal means for this endotype",
                )
            if r.relative_fall_concept is not None:
                try:
                    lookup_concept(r.relative_fall_concept)
                except UnitError:
                    self.fail(at, expected="a known concept", got=r.relative_fall_concept, todo="fix the concept")
            if r.relative_fall_fraction is not None and not 0 < r.relative_fall_fraction < 1:
                self.fail(
                    at,
                    expected="relative_fall_fraction between 0 and 1 (0.15 = a 15 % fall)",
                    got=r.relative_fall_fraction,
                    todo="write the fall as a fraction",
                )
            crit = tuple(self.biomarker(b, f"{at} {b.analyte}") for b in r.all_of)
            for conc, iv in _conjunction(crit).items():
                if iv.empty:
                    self.fail(at, expected=f"satisfiable criteria on {conc}", got=str(iv), todo="fix the thresholds")
            reversals.append(
                ReversalRule(
                    endotype=r.endotype,
                    citation=r.cite(),
                    relative_fall_concept=r.relative_fall_concept,
                    relative_fall_fraction=r.relative_fall_fraction,
                    all_of=crit,
                )
            )
        return ClassificationSpec(
            endotypes=tuple(sorted(rules, key=lambda r: r.precedence)),
            otherwise=cs.otherwise,
            timing=timing,
            reversals=tuple(reversals),
            method_aliases=self.method_aliases(),
        )

    # -- eligibility --------------------------------------------------------------------------------------------

    def condition(self, cond: Condition, at: str) -> None:
        self.categorical_values(cond.field, cond.values, at)

    def categorical_values(self, field: str, values: tuple[Any, ...], at: str) -> None:
        flags = PatientRecord.flag_fields() | set(self.doc.vocabularies.flags)
        cats = PatientRecord.categorical_fields()
        want_bool = field in flags
        if want_bool:
            allowed: set[Any] = {True, False}
        elif field == "infection_source":
            allowed = set(self.doc.vocabularies.infection_sources)
        elif field in cats:
            allowed = set(cats[field])
        else:
            self.fail(
                at,
                expected=f"a categorical or yes/no patient field: {sorted(set(cats) | flags | {'infection_source'})}",
                got=field,
                todo="use a PatientRecord field, or declare a yes/no flag in [vocabularies.flags]",
            )
            return  # pragma: no cover
        bad = [v for v in values if isinstance(v, bool) != want_bool or v not in allowed]
        if bad:
            where_vocab = "[vocabularies.infection_sources]" if field == "infection_source" else f"field {field}"
            self.fail(
                at,
                expected=f"values of {where_vocab}: {sorted(map(str, allowed))}",
                got=bad,
                todo="use a declared value (declare infection types in [vocabularies.infection_sources])",
            )

    def criteria(self, endotypes: tuple[str, ...], otherwise: str | None) -> None:
        d = self.doc
        ids = [c.id for c in d.inclusion + d.exclusion]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            self.fail(
                "inclusion/exclusion",
                expected="unique criterion ids across inclusion and exclusion",
                got=dup,
                todo="renumber the duplicated criterion",
            )
        flags = PatientRecord.flag_fields() | set(d.vocabularies.flags)
        overlays = {o.id for o in d.overlays}
        for sect in ("inclusion", "exclusion"):
            for c in getattr(d, sect):
                at = f"{sect} {c.id}"
                for s in c.depends_on_settings:
                    self.setting_ref(s, at)
                if c.applies_if is not None:
                    self.condition(c.applies_if, f"{at} applies_if")
                getattr(self, f"_kind_{c.kind}")(c, at, flags=flags, overlays=overlays, endotypes=endotypes,
                                                 otherwise=otherwise)
        self.eligibility_contradictions()

    def _kind_threshold(self, c: ThresholdCriterion, at: str, **_: Any) -> None:
        self.concept_unit(c.concept, c.unit, at)
        if (c.threshold is None) == (c.threshold_setting is None):
            self.fail(
                at,
                expected="either threshold, or threshold_setting with thresholds per option",
                got={"threshold": c.threshold, "threshold_setting": c.threshold_setting},
                todo="give a fixed threshold, or let a setting choose it",
            )
        if c.threshold is not None:
            if c.thresholds is not None:
                self.fail(at, expected="no thresholds table with a fixed threshold", got=c.thresholds, todo="remove")
            self.plausible(c.concept, c.threshold, at)
            return
        if c.threshold_setting is None:  # pragma: no cover - excluded by the either/or check above
            return
        self.setting_ref(c.threshold_setting, at)
        opts = set(self.doc.settings[c.threshold_setting].options)
        if c.thresholds is None or set(c.thresholds) != opts:
            self.fail(
                at,
                expected=f"one threshold per option of setting {c.threshold_setting!r}: {sorted(opts)}",
                got=sorted(c.thresholds or {}),
                todo="map every option to its threshold value",
            )
        for v in (c.thresholds or {}).values():
            self.plausible(c.concept, v, at)

    def _kind_flag(self, c: FlagCriterion, at: str, *, flags: set[str], **_: Any) -> None:
        if c.flag not in flags:
            self.fail(
                at,
                expected=f"a yes/no patient field or a flag declared in [vocabularies.flags]: {sorted(flags)}",
                got=c.flag,
                todo="declare the flag in [vocabularies.flags] with a description",
            )

    def _kind_value_in(self, c: ValueInCriterion, at: str, **_: Any) -> None:
        if not c.values:
            self.fail(at, expected="at least one value", got=[], todo="list the values")
        self.categorical_values(c.field, c.values, at)

    def _kind_sepsis3(self, c: Sepsis3Criterion, at: str, **_: Any) -> None:
        for key in ("ed_min_total_sofa", "hospitalised_min_sofa_increase"):
            v = getattr(c, key)
            if not 0 < v <= 24:
                self.fail(f"{at} {key}", expected="SOFA points between 1 and 24", got=v, todo="fix the SOFA level")

    def _kind_endotype_in(
        self, c: EndotypeInCriterion, at: str, *, endotypes: tuple[str, ...], otherwise: str | None, **_: Any
    ) -> None:
        if not endotypes:
            self.fail(at, expected="a [classification] declaring endotypes", got=None, todo="add [classification]")
        allowed = set(endotypes) | ({otherwise} if otherwise else set())
        bad = [v for v in c.values if v not in allowed]
        if bad or not c.values:
            self.fail(
                at,
                expected=f"endotype names declared in [classification]: {sorted(allowed)}",
                got=bad or [],
                todo="fix the endotype name or declare the endotype",
            )

    def _kind_window_from_anchor(self, c: WindowCriterion, at: str, **_: Any) -> None:
        if c.hours <= 0:
            self.fail(at, expected="hours > 0", got=c.hours, todo="fix the window length")
        if c.anchor == c.event:
            self.fail(at, expected="an event different from the anchor", got=c.event, todo="fix anchor/event")

    def _kind_overlay(self, c: OverlayCriterion, at: str, *, overlays: set[str], **_: Any) -> None:
        if c.overlay not in overlays:
            self.fail(at, expected=f"an overlay declared in [[overlays]]: {sorted(overlays)}", got=c.overlay,
                      todo="declare the overlay")

    def _kind_unknown(self, c: UnknownCriterion, at: str, **_: Any) -> None:
        self.setting_ref(c.setting, at)

    def eligibility_contradictions(self) -> None:
        d = self.doc
        incl = [c for c in d.inclusion if c.applies_if is None]
        excl = [c for c in d.exclusion if c.applies_if is None]
        # numeric: the values every inclusion threshold allows, against each exclusion threshold
        inc_iv: dict[str, _Iv] = {}
        for c in incl:
            if isinstance(c, ThresholdCriterion) and c.threshold is not None:
                iv = _Iv.of(c.comparator, c.threshold)
                inc_iv[c.concept] = inc_iv[c.concept] & iv if c.concept in inc_iv else iv
                if inc_iv[c.concept].empty:
                    self.fail(
                        f"inclusion {c.id}",
                        expected=f"inclusion thresholds on {c.concept} that some value can meet together",
                        got=str(inc_iv[c.concept]),
                        todo="no patient could be included; fix the thresholds",
                    )
        for c in excl:
            if not isinstance(c, ThresholdCriterion) or c.concept not in inc_iv:
                continue
            values = [c.threshold] if c.threshold is not None else list((c.thresholds or {}).values())
            for v in values:
                if _Iv.of(c.comparator, v).covers(inc_iv[c.concept]):
                    self.fail(
                        f"exclusion {c.id}",
                        expected=f"an exclusion that leaves some included {c.concept} values eligible",
                        got=f"{c.concept} {c.comparator} {v:g} excludes every value the inclusion allows "
                        f"{inc_iv[c.concept]}",
                        todo="fix the comparator or the threshold (e.g. '>=' written for '<')",
                    )
        # categorical: a value both required and excluding
        for a in incl:
            if not isinstance(a, ValueInCriterion):
                continue
            for b in excl:
                if isinstance(b, ValueInCriterion) and b.field == a.field:
                    both = sorted(set(a.values) & set(b.values))
                    if both:
                        self.fail(
                            f"inclusion {a.id} / exclusion {b.id}",
                            expected=f"{a.field} values that are not both included and excluded",
                            got=both,
                            todo="remove the value from one of the two lists",
                        )
            for b2 in incl:
                if b2 is not a and isinstance(b2, ValueInCriterion) and b2.field == a.field:
                    if not set(a.values) & set(b2.values):
                        self.fail(
                            f"inclusion {a.id} / inclusion {b2.id}",
                            expected=f"inclusion lists of {a.field} that share a value",
                            got=[list(a.values), list(b2.values)],
                            todo="no patient could be included; merge or fix the lists",
                        )
        # flags: the same fact required and excluding
        for f in incl:
            if not isinstance(f, FlagCriterion):
                continue
            for g in excl:
                if isinstance(g, FlagCriterion) and g.flag == f.flag and f.met_when == g.met_when:
                    self.fail(
                        f"inclusion {f.id} / exclusion {g.id}",
                        expected=f"flag {f.flag} not both required and excluding",
                        got=f"{f.flag} is {f.met_when} in both",
                        todo="flip met_when in one of them or remove one",
                    )

    # -- arms, overlays, regimens -------------------------------------------------------------------------------

    def regimens(self) -> dict[str, Regimen]:
        regs: dict[str, Regimen] = {}
        for r in self.doc.regimens:
            at = f"regimens {r.id}"
            if r.id in regs:
                self.fail(at, expected="unique regimen ids", got=r.id, todo="rename one")
            if not r.interval_h > 0:
                self.fail(at, expected="interval_h > 0", got=r.interval_h, todo="give the dosing interval in hours")
            if not r.duration_days > 0:
                self.fail(at, expected="duration_days > 0", got=r.duration_days, todo="give the course in days")
            if r.max_doses is not None and r.max_doses < 1:
                self.fail(at, expected="max_doses >= 1 or absent", got=r.max_doses, todo="fix max_doses")
            if r.is_placebo:
                if r.dose is not None or r.dose_unit is not None:
                    self.fail(at, expected="no active dose on a placebo course", got=r.dose, todo="use volume_ml")
            elif r.dose is None or r.dose_unit is None:
                self.fail(
                    at,
                    expected="dose and dose_unit for an active drug",
                    got={"dose": r.dose, "dose_unit": r.dose_unit},
                    todo="give the dose and its unit (mg, ug, mg/kg or ug/kg)",
                )
            if r.dose is not None and not r.dose > 0:
                self.fail(at, expected="dose > 0", got=r.dose, todo="fix the dose")
            if r.volume_ml is not None and not r.volume_ml > 0:
                self.fail(at, expected="volume_ml > 0", got=r.volume_ml, todo="fix the volume")
            for s in r.depends_on_settings:
                self.setting_ref(s, at)
            if r.renal_check is not None:
                self.setting_ref(r.renal_check.setting, f"{at} renal_check")
                if not r.renal_check.crcl_below_ml_per_min > 0:
                    self.fail(at, expected="crcl_below_ml_per_min > 0", got=r.renal_check.crcl_below_ml_per_min,
                              todo="fix the CrCl level")
            regs[r.id] = r
        for r in regs.values():
            if r.mirrors is None:
                continue
            at = f"regimens {r.id} mirrors"
            m = regs.get(r.mirrors)
            if m is None:
                self.fail(at, expected=f"a declared regimen {sorted(regs)}", got=r.mirrors, todo="fix the id")
                continue  # pragma: no cover
            for key in ("route", "interval_h", "duration_days", "max_doses"):
                if getattr(r, key) != getattr(m, key):
                    self.fail(
                        at,
                        expected=f"the same {key} as the mirrored regimen {m.id} ({getattr(m, key)!r})",
                        got=getattr(r, key),
                        todo="a dummy must look and run exactly like the drug it mirrors",
                    )
        return regs

    def arms(self, regs: Mapping[str, Regimen], endotypes: tuple[str, ...]) -> None:
        d = self.doc
        codes = [a.code for a in d.arms]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            self.fail("arms", expected="unique arm codes", got=dup, todo="arm codes are a fixed code -> label map")
        for a in d.arms:
            at = f"arms {a.code}"
            bad = [e for e in a.endotypes if e not in endotypes]
            if bad:
                self.fail(
                    at,
                    expected=f"endotypes declared in [classification]: {list(endotypes)}",
                    got=bad,
                    todo="fix the endotype name or declare the endotype rule",
                )
            for kit, rid in a.kits.items():
                if rid not in regs:
                    self.fail(f"{at} kits.{kit}", expected=f"a declared regimen {sorted(regs)}", got=rid,
                              todo="declare the regimen in [[regimens]]")
                if kit in _KIT_ROUTES and regs[rid].route != kit:
                    self.fail(
                        f"{at} kits.{kit}",
                        expected=f"a regimen given by the kit's route {kit}",
                        got=f"{rid} ({regs[rid].route})",
                        todo="put the regimen in the kit of its route",
                    )
            for s in a.depends_on_settings:
                self.setting_ref(s, at)
            if not a.kits and not a.depends_on_settings:
                self.fail(
                    at,
                    expected="kits, or the setting that stands for a regimen the sources do not give",
                    got={},
                    todo="add kits = { ... } or depends_on_settings = [\"comparator_regimen\"]",
                )
        ids = [o.id for o in d.overlays]
        if len(set(ids)) != len(ids):
            self.fail("overlays", expected="unique overlay ids", got=ids, todo="rename one")
        for o in d.overlays:
            at = f"overlays {o.id}"
            bad = [c for c in o.allowed_arms if c not in codes]
            if bad:
                self.fail(at, expected=f"declared arm codes {codes}", got=bad, todo="fix the arm codes")
            self.condition(o.when, f"{at} when")
        if d.blinding is not None and d.blinding.double_dummy:
            kitsets = {a.code: set(a.kits) for a in d.arms if a.kits}
            first: set[str] = set().union(*kitsets.values())
            for code, ks in kitsets.items():
                if ks != first:
                    self.fail(
                        f"arms {code}",
                        expected=f"the same kits in every arm of a double-dummy design: {sorted(first)}",
                        got=sorted(ks),
                        todo="give every arm the same kits (a placebo kit where the drug is absent)",
                    )
            for kit in first:
                shapes = {
                    (regs[a.kits[kit]].route, regs[a.kits[kit]].interval_h, regs[a.kits[kit]].duration_days)
                    for a in d.arms
                    if kit in a.kits
                }
                if len(shapes) > 1:
                    self.fail(
                        f"arms kits.{kit}",
                        expected="one route, interval and duration per kit across arms (double dummy)",
                        got=sorted(shapes),
                        todo="make the dummy mirror the drug's schedule",
                    )
        if d.randomisation is not None:
            for s in d.randomisation.depends_on_settings:
                self.setting_ref(s, "randomisation")
            if d.randomisation.ratio is not None:
                roles = {a.role for a in d.arms}
                for role, w in d.randomisation.ratio.value.items():
                    if role not in roles or w < 1:
                        self.fail(
                            "randomisation.ratio",
                            expected=f"positive whole weights for arm roles {sorted(roles)}",
                            got={role: w},
                            todo="write e.g. value = { active = 1, placebo = 1 }",
                        )

    def visits_and_endpoints(self) -> None:
        d = self.doc
        if d.visits is not None:
            days = list(d.visits.days)
            if days != sorted(set(days)) or days[0] < 0:
                self.fail("visits", expected="distinct visit days >= 0 in increasing order", got=days,
                          todo="sort the days")
        ids = [e.id for e in d.endpoints]
        if len(set(ids)) != len(ids):
            self.fail("endpoints", expected="unique endpoint ids", got=ids, todo="rename one")
        for e in d.endpoints:
            if e.kind != "sofa_mean_decrease":
                continue
            at = f"endpoints {e.id}"
            need = ("baseline_day", "first_day", "last_day", "comparator", "threshold", "death_score", "missing")
            missing = [k for k in need if getattr(e, k) is None]
            if missing:
                self.fail(at, expected=f"{list(need)} for a SOFA-decrease endpoint", got=missing,
                          todo="give the operational definition in full")
            assert e.baseline_day is not None and e.first_day is not None and e.last_day is not None
            if not e.baseline_day < e.first_day <= e.last_day:
                self.fail(
                    at,
                    expected="baseline_day < first_day <= last_day",
                    got=(e.baseline_day, e.first_day, e.last_day),
                    todo="fix the day window",
                )

    def build(self, source: str, sha: str) -> Protocol:
        d = self.doc
        if d.schema_ != SCHEMA_ID:
            self.fail("schema", expected=repr(SCHEMA_ID), got=d.schema_, todo="this loader reads format /1 only")
        self.settings()
        self.citations()
        self.vocabularies()
        spec = self.classification()
        endotypes = tuple(e.name for e in spec.endotypes) if spec else ()
        self.criteria(endotypes, spec.otherwise if spec else None)
        regs = self.regimens()
        self.arms(regs, endotypes)
        self.visits_and_endpoints()
        return Protocol(
            meta=d.protocol,
            settings=MappingProxyType(dict(d.settings)),
            vocabularies=d.vocabularies,
            inclusion=d.inclusion,
            exclusion=d.exclusion,
            classification=spec,
            classification_section=d.classification,
            overlays=d.overlays,
            blinding=d.blinding,
            arms=d.arms,
            regimens=MappingProxyType(regs),
            visits=d.visits,
            randomisation=d.randomisation,
            endpoints=d.endpoints,
            sap=MappingProxyType(dict(d.sap)),
            source=source,
            sha256=sha,
        )
