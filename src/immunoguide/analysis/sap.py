"""Loader for the versioned, cited statistical-analysis-plan file (``immunosep_sap_v1.toml``).

The SAP file holds the endpoint derivation rules (baseline day, window, death score, threshold and comparator),
the reversal thresholds, the exploratory subgroups and the named policies for the choices the sources leave open.
The loader validates the file (window length equals the number of values averaged, comparators are known, policy
defaults are among their options) so a mistyped rule fails on load, not in a result.

Examples
--------
>>> sap = load_sap()
>>> primary = sap.sofa_response["d2_9"]
>>> (primary.first_day, primary.last_day, primary.n_values, primary.comparator, primary.threshold)
(2, 9, 8, '>', 1.4)
>>> sap.policy_default("death_day")
'as_other_days'
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from immunoguide.errors import CriteriaError, PolicyError, UnknownCriteriaError
from immunoguide.protocols.model import BiomarkerCriterion, Citation, ReversalRule

__all__ = [
    "AVAILABLE_SAPS",
    "PolicyDef",
    "Sap",
    "SofaResponseSpec",
    "SubgroupSpec",
    "load_sap",
]

AVAILABLE_SAPS: tuple[str, ...] = ("immunosep_sap_v1",)
_CONFIDENCE = frozenset({"confirmed", "likely", "unknown"})
_COMPARATORS = frozenset({">", ">=", "<", "<=", "=="})


@dataclass(frozen=True)
class SofaResponseSpec:
    """One SOFA-response endpoint: responder if SOFA(baseline_day) − mean(first_day..last_day) ``comparator`` threshold.

    Attributes
    ----------
    key : str
        ``"d2_9"`` (primary) or ``"d2_15"``.
    baseline_day, first_day, last_day : int
        Study days (day 1 = baseline).
    n_values : int
        Number of daily values averaged (the divisor); equals ``last_day - first_day + 1``.
    death_score : int
        SOFA points given to days after death (24, the maximum).
    comparator : str
        ``">"`` as the SAP writes it.
    threshold : float
        SOFA points (1.4).
    """

    key: str
    label: str
    baseline_day: int
    first_day: int
    last_day: int
    n_values: int
    death_score: int
    comparator: str
    threshold: float
    citation: Citation


@dataclass(frozen=True)
class SubgroupSpec:
    """A subgroup defined by ``column comparator value`` (e.g. ``apache_ii >= 25``)."""

    name: str
    column: str
    comparator: str
    value: float | str
    citation: Citation

    @property
    def definition(self) -> str:
        """Human-readable definition, e.g. ``"apache_ii >= 25"``."""
        return f"{self.column} {self.comparator} {self.value}"


@dataclass(frozen=True)
class PolicyDef:
    """A named interpretation the sources leave open: its options, its default and why."""

    name: str
    options: tuple[str, ...]
    default: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Sap:
    """A validated SAP file (see the module docstring)."""

    id: str
    version: str
    doi: str
    sofa_min: int
    sofa_max: int
    sofa_response: Mapping[str, SofaResponseSpec]
    mean_sofa_first_day: int
    mean_sofa_last_day: int
    mean_sofa_n_values: int
    mean_sofa_citation: Citation
    mortality_horizons_days: tuple[int, ...]
    infection_categories: tuple[str, ...]
    reversal_min_draws: int
    reversals: Mapping[str, ReversalRule]
    subgroups: tuple[SubgroupSpec, ...]
    policies: Mapping[str, PolicyDef]

    def policy_default(self, name: str) -> str:
        """The default option of policy ``name``."""
        return self._policy(name).default

    def resolve_policies(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Defaults merged with ``overrides``; unknown names or options raise :class:`PolicyError`."""
        out = {name: p.default for name, p in self.policies.items()}
        for name, option in (overrides or {}).items():
            p = self._policy(name)
            if option not in p.options:
                raise PolicyError(
                    expected=f"one of {list(p.options)} for policy {name!r}",
                    got=option,
                    where=f"SAP {self.id}",
                    todo=f"choose one of {list(p.options)} ({p.note or p.source})",
                )
            out[name] = option
        return out

    def _policy(self, name: str) -> PolicyDef:
        try:
            return self.policies[name]
        except KeyError:
            raise PolicyError(
                expected=f"one of the SAP policies {sorted(self.policies)}",
                got=name,
                where=f"SAP {self.id}",
                todo="use a policy name declared in the SAP file",
            ) from None


def _need(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise CriteriaError(expected=f"key {key!r}", got=sorted(table), where=where, todo="fix the SAP file")
    return table[key]


def _citation(table: Mapping[str, Any], where: str) -> Citation:
    conf = _need(table, "confidence", where)
    if conf not in _CONFIDENCE:
        raise CriteriaError(expected=f"confidence in {sorted(_CONFIDENCE)}", got=conf, where=where, todo="fix the tag")
    return Citation(source=str(_need(table, "source", where)), confidence=conf)


def _int(table: Mapping[str, Any], key: str, where: str) -> int:
    v = _need(table, key, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise CriteriaError(expected=f"an integer for {key}", got=v, where=where, todo="fix the SAP file")
    return v


def _parse(doc: Mapping[str, Any], sap_id: str) -> Sap:
    meta = _need(doc, "meta", sap_id)
    scale = _need(doc, "sofa_scale", sap_id)
    sofa_min, sofa_max = _int(scale, "min", "sofa_scale"), _int(scale, "max", "sofa_scale")

    responses: dict[str, SofaResponseSpec] = {}
    for key, t in _need(doc, "sofa_response", sap_id).items():
        where = f"{sap_id} [sofa_response.{key}]"
        spec = SofaResponseSpec(
            key=key,
            label=str(_need(t, "label", where)),
            baseline_day=_int(t, "baseline_day", where),
            first_day=_int(t, "first_day", where),
            last_day=_int(t, "last_day", where),
            n_values=_int(t, "n_values", where),
            death_score=_int(t, "death_score", where),
            comparator=str(_need(t, "comparator", where)),
            threshold=float(_need(t, "threshold", where)),
            citation=_citation(t, where),
        )
        if spec.n_values != spec.last_day - spec.first_day + 1:
            raise CriteriaError(
                expected=f"n_values == last_day - first_day + 1 = {spec.last_day - spec.first_day + 1}",
                got=spec.n_values,
                where=where,
                todo="the mean is the sum of the daily values divided by n_values; make the window and n agree",
            )
        if not (spec.baseline_day < spec.first_day <= spec.last_day):
            raise CriteriaError(
                expected="baseline_day < first_day <= last_day", got=spec, where=where, todo="fix the window"
            )
        if spec.comparator not in (">", ">="):
            raise CriteriaError(expected="comparator '>' or '>='", got=spec.comparator, where=where, todo="fix it")
        if t.get("other_missing") != "locf":
            raise CriteriaError(
                expected="other_missing = 'locf' (the only rule implemented)",
                got=t.get("other_missing"),
                where=where,
                todo="implement the new imputation rule before declaring it",
            )
        if not (sofa_min <= spec.death_score <= sofa_max):
            raise CriteriaError(expected=f"death_score in {sofa_min}..{sofa_max}", got=spec.death_score, where=where)
        responses[key] = spec

    ms = _need(doc, "mean_sofa_survivors", sap_id)
    where = f"{sap_id} [mean_sofa_survivors]"
    ms_first, ms_last, ms_n = _int(ms, "first_day", where), _int(ms, "last_day", where), _int(ms, "n_values", where)
    if ms_n != ms_last - ms_first + 1:
        raise CriteriaError(expected=f"n_values == {ms_last - ms_first + 1}", got=ms_n, where=where, todo="fix it")

    rev = _need(doc, "reversal", sap_id)
    reversals: dict[str, ReversalRule] = {}
    for endotype, t in rev.items():
        if not isinstance(t, dict):
            continue
        where = f"{sap_id} [reversal.{endotype}]"
        cit = _citation(t, where)
        crits = []
        for c in t.get("all_of", []):
            comp = _need(c, "comparator", where)
            if comp not in (">", ">=", "<", "<="):
                raise CriteriaError(expected="comparator > >= < <=", got=comp, where=where, todo="fix it")
            crits.append(
                BiomarkerCriterion(
                    analyte=str(_need(c, "analyte", where)),
                    concept=str(_need(c, "concept", where)),
                    comparator=comp,
                    threshold=float(_need(c, "threshold", where)),
                    unit=str(_need(c, "unit", where)),
                    citation=cit,
                )
            )
        frac = t.get("relative_fall_fraction")
        if frac is not None and not (0 < float(frac) < 1):
            raise CriteriaError(expected="0 < relative_fall_fraction < 1", got=frac, where=where, todo="fix it")
        if frac is None and not crits:
            raise CriteriaError(expected="relative_fall_* or all_of", got=t, where=where, todo="declare a criterion")
        reversals[endotype] = ReversalRule(
            endotype=endotype,
            citation=cit,
            relative_fall_concept=t.get("relative_fall_concept"),
            relative_fall_fraction=None if frac is None else float(frac),
            all_of=tuple(crits),
        )

    subgroups = []
    for i, t in enumerate(doc.get("subgroups", [])):
        where = f"{sap_id} [[subgroups]] #{i + 1}"
        comp = str(_need(t, "comparator", where))
        if comp not in _COMPARATORS:
            raise CriteriaError(expected=f"comparator in {sorted(_COMPARATORS)}", got=comp, where=where, todo="fix it")
        subgroups.append(
            SubgroupSpec(
                name=str(_need(t, "name", where)),
                column=str(_need(t, "column", where)),
                comparator=comp,
                value=_need(t, "value", where),
                citation=_citation(t, where),
            )
        )

    policies: dict[str, PolicyDef] = {}
    for name, t in _need(doc, "policies", sap_id).items():
        where = f"{sap_id} [policies.{name}]"
        p = PolicyDef(
            name=name,
            options=tuple(_need(t, "options", where)),
            default=str(_need(t, "default", where)),
            source=str(_need(t, "source", where)),
            note=str(t.get("note", "")),
        )
        if p.default not in p.options:
            raise CriteriaError(expected=f"default in {list(p.options)}", got=p.default, where=where, todo="fix it")
        policies[name] = p

    inf = _need(doc, "infection_day15", sap_id)
    return Sap(
        id=str(_need(meta, "id", sap_id)),
        version=str(_need(meta, "version", sap_id)),
        doi=str(_need(meta, "doi", sap_id)),
        sofa_min=sofa_min,
        sofa_max=sofa_max,
        sofa_response=MappingProxyType(responses),
        mean_sofa_first_day=ms_first,
        mean_sofa_last_day=ms_last,
        mean_sofa_n_values=ms_n,
        mean_sofa_citation=_citation(ms, where),
        mortality_horizons_days=tuple(int(h) for h in _need(doc, "mortality", sap_id)["horizons_days"]),
        infection_categories=tuple(str(c) for c in _need(inf, "categories", "infection_day15")),
        reversal_min_draws=_int(rev, "min_draws", f"{sap_id} [reversal]"),
        reversals=MappingProxyType(reversals),
        subgroups=tuple(subgroups),
        policies=MappingProxyType(policies),
    )


def load_sap_text(text: str, *, sap_id: str = "<text>") -> Sap:
    """Parse and validate SAP TOML text (used by tests to check that bad files are rejected)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CriteriaError(expected="valid TOML", got=str(exc), where=sap_id, todo="fix the syntax") from None
    return _parse(doc, sap_id)


@cache
def load_sap(sap_id: Literal["immunosep_sap_v1"] = "immunosep_sap_v1") -> Sap:
    """Load a shipped SAP file by id (pinned; there is no 'latest').

    Raises
    ------
    UnknownCriteriaError
        If ``sap_id`` is not shipped.
    CriteriaError
        If the file is invalid.
    """
    if sap_id not in AVAILABLE_SAPS:
        raise UnknownCriteriaError(
            expected=f"one of {list(AVAILABLE_SAPS)}", got=sap_id, where="load_sap", todo="use a shipped SAP id"
        )
    text = resources.files("immunoguide.analysis").joinpath(f"{sap_id}.toml").read_text(encoding="utf-8")
    return load_sap_text(text, sap_id=sap_id)
