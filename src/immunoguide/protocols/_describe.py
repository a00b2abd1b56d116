"""One-line descriptions of protocol rules, a flat outline of a protocol, and the diff of two protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from immunoguide.protocols._protocol import Protocol
from immunoguide.protocols._schema import (
    EligibilityCriterion,
    EndotypeInCriterion,
    FlagCriterion,
    OverlayCriterion,
    Regimen,
    Sepsis3Criterion,
    ThresholdCriterion,
    UnknownCriterion,
    ValueInCriterion,
    WindowCriterion,
)
from immunoguide.protocols.model import BiomarkerCriterion, EndotypeRule

__all__ = [
    "ProtocolChange",
    "describe_biomarker",
    "describe_criterion",
    "describe_endotype",
    "describe_regimen",
    "diff_protocols",
    "protocol_outline",
]


def _num(x: float) -> str:
    return f"{x:g}"


def describe_biomarker(b: BiomarkerCriterion) -> str:
    """``"hla_dr < 5000 AB/c [quantibrite_abc] on 2 consecutive days"``."""
    out = f"{b.analyte} {b.comparator} {_num(b.threshold)} {b.unit}"
    if b.methods:
        out += f" [{', '.join(b.methods)}]"
    if b.persistence_count > 1:
        out += f" on {b.persistence_count} {'consecutive days' if b.persistence_consecutive_days else 'samples'}"
    return out


def describe_endotype(rule: EndotypeRule) -> str:
    """``"precedence 1: ferritin > 4420 ng/mL"``."""
    return f"precedence {rule.precedence}: " + " AND ".join(describe_biomarker(b) for b in rule.all_of)


def describe_criterion(c: EligibilityCriterion) -> str:
    """The machine rule of one eligibility criterion, e.g. ``"anc_per_mm3 < {registry_1500: 1500, …} /mm3"``."""
    match c:
        case ThresholdCriterion():
            if c.threshold is not None:
                t = _num(c.threshold)
            else:
                t = "{" + ", ".join(f"{o}: {_num(v)}" for o, v in (c.thresholds or {}).items()) + "}"
                t += f" by setting {c.threshold_setting}"
            out = f"{c.concept} {c.comparator} {t} {c.unit}"
        case FlagCriterion():
            out = f"{c.flag} is {c.met_when}"
        case ValueInCriterion():
            out = f"{c.field} in {list(c.values)}"
        case Sepsis3Criterion():
            out = (
                f"ED: total SOFA >= {c.ed_min_total_sofa}; "
                f"already hospitalised: SOFA increase from admission >= {c.hospitalised_min_sofa_increase}"
            )
        case EndotypeInCriterion():
            out = f"endotype in {list(c.values)}"
        case WindowCriterion():
            out = f"{c.event} - {c.anchor} {c.comparator} {_num(c.hours)} h"
        case OverlayCriterion():
            out = f"overlay {c.overlay}"
        case UnknownCriterion():
            out = f"not captured (setting {c.setting})"
    if c.applies_if is not None:
        out += f" (only if {c.applies_if.field} in {list(c.applies_if.values)})"
    return out


def describe_regimen(r: Regimen) -> str:
    """``"anakinra 200 mg IV q8h x 15 d"``."""
    if r.is_placebo:
        what = "placebo" + (f" ({r.product})" if r.product else "") + (f" {_num(r.volume_ml)} mL" if r.volume_ml else "")
    else:
        what = f"{r.drug} {_num(r.dose or 0)} {r.dose_unit}"
    out = f"{what} {r.route} q{_num(r.interval_h)}h x {_num(r.duration_days)} d"
    if r.max_doses is not None:
        out += f" (max {r.max_doses} doses)"
    return out


def _cite(x: Any) -> str:
    return f"{x.confidence}: {x.citation}"


def protocol_outline(p: Protocol) -> dict[str, dict[str, str]]:
    """A flat ``section → key → text`` view of everything a reviewer compares between two protocols."""
    out: dict[str, dict[str, str]] = {}
    m = p.meta
    out["protocol"] = {"id": m.id, "version": m.version, "title": m.title, "population": m.population}
    out["protocol"].update({f"registry.{k}": v for k, v in m.registry.items()})
    out["settings"] = {}
    for name, s in p.settings.items():
        out["settings"][name] = f"default {s.default}; options {sorted(s.options)}; {s.confidence}"
    for sect in ("inclusion", "exclusion"):
        out[sect] = {}
        for c in getattr(p, sect):
            out[sect][c.id] = describe_criterion(c)
            out[sect][f"{c.id}.text"] = c.text
            out[sect][f"{c.id}.citation"] = _cite(c)
    out["thresholds"] = {t.where: f"{t.quantity} {t.comparator} {_num(t.threshold)} {t.unit}" for t in p.thresholds()}
    out["classification"] = {}
    if p.classification is not None and p.classification_section is not None:
        cs = p.classification
        for rule in cs.endotypes:
            out["classification"][rule.name] = describe_endotype(rule)
            out["classification"][f"{rule.name}.citation"] = f"{rule.citation.confidence}: {rule.citation.source}"
        out["classification"]["otherwise"] = cs.otherwise
        t = cs.timing
        out["classification"]["timing"] = (
            f"anchor {t.anchor}; before {t.window_before_anchor_h} h; after {t.window_after_anchor_h} h; "
            f"max result age {t.max_result_age_h} h"
        )
        for rev in cs.reversals:
            parts = []
            if rev.relative_fall_concept:
                parts.append(f"{rev.relative_fall_concept} falls >= {_num((rev.relative_fall_fraction or 0) * 100)} %")
            parts += [describe_biomarker(b) for b in rev.all_of]
            out["classification"][f"reversal.{rev.endotype}"] = " AND ".join(parts)
    out["arms"] = {
        a.code: f"{a.label} | role {a.role} | endotypes {list(a.endotypes)} | kits {dict(a.kits)}" for a in p.arms
    }
    out["overlays"] = {o.id: f"when {o.when.field} in {list(o.when.values)}: only {list(o.allowed_arms)}" for o in p.overlays}
    out["regimens"] = {r.id: describe_regimen(r) for r in p.regimens.values()}
    out["regimens"].update({f"{r.id}.citation": _cite(r) for r in p.regimens.values()})
    out["visits"] = {"days": str(list(p.visits.days))} if p.visits else {}
    out["randomisation"] = {}
    if p.randomisation is not None:
        if p.randomisation.ratio is not None:
            out["randomisation"]["ratio"] = ":".join(f"{k}={v}" for k, v in p.randomisation.ratio.value.items())
        if p.randomisation.sequence is not None:
            out["randomisation"]["sequence"] = str(p.randomisation.sequence.value)
        out["randomisation"]["settings"] = str(list(p.randomisation.depends_on_settings))
    out["endpoints"] = {e.id: f"{e.role} {e.kind}: {e.name}" for e in p.endpoints}
    for e in p.endpoints:
        if e.kind == "sofa_mean_decrease":
            out["endpoints"][f"{e.id}.rule"] = (
                f"SOFA(day {e.baseline_day}) - mean(days {e.first_day}-{e.last_day}) {e.comparator} "
                f"{_num(e.threshold or 0)}; death = {e.death_score}; missing = {e.missing}"
            )
    out["sap"] = {k: f"{v.value} ({v.confidence})" for k, v in p.sap.items()}
    return out


@dataclass(frozen=True)
class ProtocolChange:
    """One difference between two protocols: a key added, removed or changed in a section."""

    section: str
    key: str
    change: Literal["added", "removed", "changed"]
    old: str | None
    new: str | None

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.change]
        if self.change == "changed":
            return f"{sign} {self.section}.{self.key}: {self.old} -> {self.new}"
        return f"{sign} {self.section}.{self.key}: {self.new if self.change == 'added' else self.old}"


def diff_protocols(a: Protocol, b: Protocol) -> tuple[ProtocolChange, ...]:
    """What changed from protocol ``a`` to protocol ``b`` (criteria, thresholds, settings, regimens, …).

    >>> from immunoguide.protocols import load_protocol
    >>> p = load_protocol("immunosep-2025")
    >>> diff_protocols(p, p)
    ()
    """
    oa, ob = protocol_outline(a), protocol_outline(b)
    out: list[ProtocolChange] = []
    for sect in list(dict.fromkeys([*oa, *ob])):
        da, db = oa.get(sect, {}), ob.get(sect, {})
        for key in list(dict.fromkeys([*da, *db])):
            if key not in db:
                out.append(ProtocolChange(sect, key, "removed", da[key], None))
            elif key not in da:
                out.append(ProtocolChange(sect, key, "added", None, db[key]))
            elif da[key] != db[key]:
                out.append(ProtocolChange(sect, key, "changed", da[key], db[key]))
    return tuple(out)
