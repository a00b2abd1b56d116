"""Versioned, cited criteria files and their loader.

A criteria file (TOML) holds threshold *ladders*: for one input concept, a list of bands, each an interval
written the way the source table reads (``"20 <= x < 50"``) and the points it scores. The loader rejects a
ladder whose bands overlap or leave a gap inside its declared domain, so a mistyped threshold cannot ship.

Where the cited table leaves a boundary value open (Singer 2016 Table 1 prints bilirubin "6.0–11.9" → 3 and
">12.0" → 4, so 12.0 itself is in no band), the ladder declares a *contested edge*: the value, the named
policy that decides it, and for each policy option whether the value belongs to the band above or below.

Policies (named interpretations of an ambiguous guideline) are declared in the same file with their options,
a default and citations; the loader checks each policy's options against the options the rule code
implements, so data and code cannot drift apart.

A file may record how its cut-offs were checked against their source: a file-level ``[verification]`` table
(the primary table, whether it was reached, the sources read) and then, for every ladder, a
``[ladders.NAME.verification]`` table with a status from :data:`VERIFICATION_STATUSES` and the sources that
ladder was compared with. The loader refuses a ladder without one, a status it does not know, a source the
file does not list, and a ladder marked ``primary`` in a file whose primary was not reached.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from immunoguide.errors import BandGapError, BandOverlapError, CriteriaError, PolicyError, UnknownCriteriaError

__all__ = [
    "VERIFICATION_STATUSES",
    "Band",
    "ContestedEdge",
    "Criteria",
    "CriteriaVerification",
    "Interval",
    "Ladder",
    "PolicySpec",
    "Sepsis3Criteria",
    "Verification",
    "available_criteria",
    "check_ladder",
    "criteria_for",
    "load_criteria",
    "load_criteria_text",
    "load_sepsis3_criteria",
    "load_sepsis3_criteria_text",
    "parse_interval",
    "parse_toml",
    "resolve_named_options",
]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+|inf)"
_RE_TWO = re.compile(rf"^\s*({_NUM})\s*(<=|<)\s*x\s*(<=|<)\s*({_NUM})\s*$")
_RE_LEFT = re.compile(rf"^\s*x\s*(<=|<|>=|>|==)\s*({_NUM})\s*$")
_RE_RIGHT = re.compile(rf"^\s*({_NUM})\s*(<=|<)\s*x\s*$")


@dataclass(frozen=True)
class Interval:
    """A real interval with explicit inclusive/exclusive ends (``lo``/``hi`` may be ±inf)."""

    lo: float
    lo_inclusive: bool
    hi: float
    hi_inclusive: bool
    text: str = ""

    def contains(self, x: float) -> bool:
        above = x > self.lo or (self.lo_inclusive and x == self.lo)
        below = x < self.hi or (self.hi_inclusive and x == self.hi)
        return above and below

    def __str__(self) -> str:
        return self.text or f"{'[' if self.lo_inclusive else '('}{self.lo:g}, {self.hi:g}{']' if self.hi_inclusive else ')'}"


def parse_interval(text: str, *, where: str = "") -> Interval:
    """Parse ``"20 <= x < 50"``, ``"x < 20"``, ``"150 <= x"``, ``"x > 0.1"`` or ``"x == 0"``.

    >>> parse_interval("20 <= x < 50")
    Interval(lo=20.0, lo_inclusive=True, hi=50.0, hi_inclusive=False, text='20 <= x < 50')
    """
    m = _RE_TWO.match(text)
    if m:
        lo, op1, op2, hi = m.groups()
        return Interval(float(lo), op1 == "<=", float(hi), op2 == "<=", text)
    m = _RE_RIGHT.match(text)
    if m:
        lo, op = m.groups()
        return Interval(float(lo), op == "<=", math.inf, False, text)
    m = _RE_LEFT.match(text)
    if m:
        op, v = m.groups()
        val = float(v)
        if op == "<":
            return Interval(-math.inf, False, val, False, text)
        if op == "<=":
            return Interval(-math.inf, False, val, True, text)
        if op == ">":
            return Interval(val, False, math.inf, False, text)
        if op == ">=":
            return Interval(val, True, math.inf, False, text)
        return Interval(val, True, val, True, text)
    raise CriteriaError(
        expected='an interval such as "x < 20", "20 <= x < 50", "150 <= x", "x > 0.1" or "x == 0"',
        got=text,
        where=where,
        todo="write the band with x and the comparators <, <=, >, >=, ==",
    )


@dataclass(frozen=True)
class Band:
    """One band of a ladder: the interval and the points a value inside it scores."""

    interval: Interval
    points: int


@dataclass(frozen=True)
class ContestedEdge:
    """A boundary value the cited table leaves open, decided by a named policy."""

    value: float
    policy: str
    membership: Mapping[str, Literal["lower", "upper"]]
    note: str = ""


VERIFICATION_STATUSES: Mapping[str, str] = MappingProxyType(
    {
        "primary": "checked against the primary publication's table",
        "secondary": "the secondary transcriptions read agree with every band; the primary was not read",
        "conflict": "the secondary transcriptions read disagree; the primary was not read",
        "unverified": "no source was compared",
    }
)
"""Verification statuses a ladder can state, with what each means. Only ``primary`` counts as verified."""


@dataclass(frozen=True)
class Verification:
    """How one ladder's cut-offs were checked: a status, the sources compared (keys of the file's sources), a note."""

    status: str
    sources: tuple[str, ...] = ()
    note: str = ""

    @property
    def against_primary(self) -> bool:
        """True only when the ladder was checked against the primary publication's table."""
        return self.status == "primary"


@dataclass(frozen=True)
class CriteriaVerification:
    """File-level record of the verification: the primary table, whether it was reached, when, what was read."""

    primary: str
    primary_reached: bool
    checked: str
    searched: str
    sources: Mapping[str, str]
    constants: str = ""


@dataclass(frozen=True)
class Ladder:
    """Threshold bands for one input concept, validated to partition ``domain`` exactly."""

    name: str
    concept: str
    component: str
    domain: Interval
    bands: tuple[Band, ...]
    contested_edges: tuple[ContestedEdge, ...] = ()
    note: str = ""
    verification: Verification | None = None

    def band_index(self, x: float, options: Mapping[str, str] | None = None) -> int | None:
        """Index of the band holding ``x`` (contested edges resolved by ``options``), or None outside the domain."""
        if not self.domain.contains(x):
            return None
        i0 = next((i for i, b in enumerate(self.bands) if b.interval.contains(x)), None)
        if i0 is None:  # pragma: no cover - a validated ladder partitions its domain
            return None
        for edge in self.contested_edges:
            if x != edge.value:
                continue
            opt = (options or {}).get(edge.policy)
            if opt is None:
                raise PolicyError(
                    expected=f"an option for policy {edge.policy!r}",
                    got=None,
                    where=f"ladder {self.name}",
                    todo="pass the resolved policies (defaults are filled in by the rule)",
                )
            iv = self.bands[i0].interval
            # x is the upper end of band i0 (or a degenerate [x, x] band): the band above is i0 + 1.
            at_top = iv.hi == x
            lower, upper = (i0, i0 + 1) if at_top else (i0 - 1, i0)
            return lower if edge.membership[opt] == "lower" else upper
        return i0

    def points(self, x: float, options: Mapping[str, str] | None = None) -> int | None:
        """Points scored by ``x``; None if ``x`` lies outside the ladder's domain."""
        i = self.band_index(x, options)
        return None if i is None else self.bands[i].points

    def edges(self) -> list[float]:
        """Every finite band boundary (used to generate boundary tests)."""
        out: set[float] = set()
        for b in self.bands:
            for v in (b.interval.lo, b.interval.hi):
                if math.isfinite(v):
                    out.add(v)
        return sorted(out)


@dataclass(frozen=True)
class PolicySpec:
    """A named interpretation of an ambiguous guideline: options, default and citations."""

    name: str
    default: str
    options: Mapping[str, str]
    question: str
    citation: str = ""


@dataclass(frozen=True)
class Criteria:
    """A loaded, validated criteria file."""

    id: str
    version: str
    rule: str
    title: str
    citation: str
    doi: str
    source_table: str
    caveat: str
    components: tuple[str, ...]
    ladders: Mapping[str, Ladder]
    policies: Mapping[str, PolicySpec]
    constants: Mapping[str, Any] = field(default_factory=dict)
    verification: CriteriaVerification | None = None

    @property
    def label(self) -> str:
        """``id@version`` — what every result records."""
        return f"{self.id}@{self.version}"

    def constant(self, name: str) -> Any:
        """The value of ``[constants] name``; :class:`CriteriaError` naming the constants there are when it is absent."""
        try:
            return self.constants[name]
        except KeyError:
            raise CriteriaError(
                expected=f"constant {name!r} in [constants]",
                got=sorted(self.constants),
                where=f"criteria {self.label}",
                todo=f"add the constant to the [constants] table of the {self.id} criteria file",
            ) from None

    def ladders_not_verified_against_primary(self) -> list[str]:
        """Names of the ladders whose cut-offs were not checked against the primary table (all, if none say so)."""
        return [
            n for n, lad in self.ladders.items() if lad.verification is None or not lad.verification.against_primary
        ]

    def resolve_policies(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Defaults overlaid with ``overrides``; unknown names or options raise :class:`PolicyError`."""
        return resolve_named_options(
            self.label, "policy", {n: (p.default, p.options) for n, p in self.policies.items()}, overrides,
            todo="check the policy name (immunoguide docs decisions lists them)",
        )


def resolve_named_options(
    owner: str,
    kind: str,
    named: Mapping[str, tuple[str, Any]],
    overrides: Mapping[str, str] | None,
    *,
    todo: str,
) -> dict[str, str]:
    """Defaults of named choices (policies, protocol settings) overlaid with checked overrides.

    ``named`` maps each name to ``(default, options)``. An unknown name or an option the choice does not offer
    raises :class:`PolicyError` listing what is allowed.

    >>> resolve_named_options("x@1", "policy", {"a": ("p", {"p": "", "q": ""})}, {"a": "q"}, todo="")
    {'a': 'q'}
    """
    out = {name: default for name, (default, _) in named.items()}
    for name, opt in (overrides or {}).items():
        if name not in named:
            raise PolicyError(
                expected=f"a {kind} of {owner}: {sorted(named)}", got=name, where=f"{kind} names", todo=todo
            )
        options = named[name][1]
        if opt not in options:
            raise PolicyError(
                expected=f"an option of {kind} {name!r}: {sorted(options)}",
                got=opt,
                where=f"{kind} {name}",
                todo="pick one of the listed options",
            )
        out[name] = opt
    return out


def check_ladder(name: str, ladder: Ladder, where: str) -> None:
    """Raise :class:`BandOverlapError` / :class:`BandGapError` unless the ladder's bands partition its domain
    exactly (used for every ladder of a criteria file, and by other cited data files such as CTCAE grades)."""
    _validate_ladder(name, ladder, where)


def _validate_ladder(name: str, ladder: Ladder, where: str) -> None:
    bands = sorted(ladder.bands, key=lambda b: (b.interval.lo, not b.interval.lo_inclusive))
    dom = ladder.domain
    first, last = bands[0].interval, bands[-1].interval
    if first.lo > dom.lo or (first.lo == dom.lo and dom.lo_inclusive and not first.lo_inclusive):
        raise BandGapError(
            expected=f"bands covering the domain {dom} from its lower end",
            got=str(first),
            where=where,
            todo="add a band for the lowest values or fix the domain",
        )
    if last.hi < dom.hi or (last.hi == dom.hi and dom.hi_inclusive and not last.hi_inclusive):
        raise BandGapError(
            expected=f"bands covering the domain {dom} up to its upper end",
            got=str(last),
            where=where,
            todo="add a band for the highest values or fix the domain",
        )
    for a, b in zip(bands, bands[1:], strict=False):
        ia, ib = a.interval, b.interval
        if ia.hi > ib.lo or (ia.hi == ib.lo and ia.hi_inclusive and ib.lo_inclusive):
            raise BandOverlapError(
                expected="bands that do not overlap",
                got=f"{ia} and {ib}",
                where=where,
                todo="make one of the shared edges exclusive or move a threshold",
            )
        if ia.hi < ib.lo or (ia.hi == ib.lo and not ia.hi_inclusive and not ib.lo_inclusive):
            raise BandGapError(
                expected="bands that meet with no gap",
                got=f"{ia} then {ib}",
                where=where,
                todo="make exactly one of the shared edges inclusive, or add the missing band",
            )
    edges = set(ladder.edges())
    for e in ladder.contested_edges:
        if e.value not in edges:
            raise CriteriaError(
                expected=f"a contested edge at a band boundary {sorted(edges)}",
                got=e.value,
                where=where,
                todo="put the contested edge on an existing threshold",
            )


def _file_verification(raw: Any, where: str) -> CriteriaVerification | None:
    if raw is None:
        return None
    vw = f"{where} [verification]"
    if not isinstance(raw, dict):
        raise CriteriaError(
            expected="a [verification] table", got=raw, where=vw, todo="write [verification] as a table"
        )
    for key in ("primary", "primary_reached", "checked", "searched", "sources"):
        if key not in raw:
            raise CriteriaError(
                expected=f"key {key!r} in [verification]", got=sorted(raw), where=vw, todo=f"add {key!r}"
            )
    if not isinstance(raw["primary_reached"], bool):
        raise CriteriaError(
            expected="primary_reached = true or false", got=raw["primary_reached"], where=vw, todo="write a boolean"
        )
    sources = raw["sources"]
    if not isinstance(sources, dict) or not sources or not all(isinstance(v, str) for v in sources.values()):
        raise CriteriaError(
            expected="[verification.sources]: one 'key = \"what was read\"' line per source",
            got=sources,
            where=vw,
            todo="list every source read, with its repository, path and commit or its address",
        )
    return CriteriaVerification(
        primary=str(raw["primary"]),
        primary_reached=raw["primary_reached"],
        checked=str(raw["checked"]),
        searched=str(raw["searched"]),
        sources=MappingProxyType(dict(sources)),
        constants=str(raw.get("constants", "")),
    )


def _ladder_verification(raw: Any, file_v: CriteriaVerification | None, where: str) -> Verification | None:
    if raw is None:
        if file_v is not None:
            raise CriteriaError(
                expected="a verification table (status, sources) for this ladder: the file declares [verification]",
                got=None,
                where=where,
                todo="add [ladders.NAME.verification] with status and the sources the bands were compared with",
            )
        return None
    if file_v is None:
        raise CriteriaError(
            expected="a file-level [verification] table listing the sources",
            got="a ladder verification without one",
            where=where,
            todo="add [verification] with primary, primary_reached, checked, searched and [verification.sources]",
        )
    if not isinstance(raw, dict):
        raise CriteriaError(
            expected="a verification table with status, sources and note",
            got=raw,
            where=where,
            todo="write [ladders.NAME.verification] as a table",
        )
    status = raw.get("status")
    if status not in VERIFICATION_STATUSES:
        raise CriteriaError(
            expected=f"verification status in {sorted(VERIFICATION_STATUSES)}",
            got=status,
            where=where,
            todo="state what the bands were checked against",
        )
    if status == "primary" and not file_v.primary_reached:
        raise CriteriaError(
            expected="status 'primary' only when [verification] primary_reached = true",
            got=status,
            where=where,
            todo="say 'secondary', 'conflict' or 'unverified' until the primary table has been read",
        )
    listed = raw.get("sources", [])
    if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
        raise CriteriaError(
            expected="sources = a list of keys of [verification.sources]",
            got=listed,
            where=where,
            todo='write sources = ["key", ...]',
        )
    sources = tuple(listed)
    unknown = [k for k in sources if k not in file_v.sources]
    if unknown:
        raise CriteriaError(
            expected=f"sources listed in [verification.sources]: {sorted(file_v.sources)}",
            got=unknown,
            where=where,
            todo="add the source to [verification.sources] or fix the key",
        )
    if status in ("secondary", "conflict") and not sources:
        raise CriteriaError(
            expected=f"at least one source for status {status!r}",
            got=[],
            where=where,
            todo="name the sources the bands were compared with",
        )
    return Verification(status=str(status), sources=sources, note=str(raw.get("note", "")))


def _build(raw: dict[str, Any], where: str, implemented: Mapping[str, frozenset[str]] | None) -> Criteria:
    for key in ("id", "version", "rule", "title", "citation", "components", "ladders", "policies"):
        if key not in raw:
            raise CriteriaError(expected=f"a top-level {key!r}", got=sorted(raw), where=where, todo=f"add {key!r}")
    policies: dict[str, PolicySpec] = {}
    for pname, p in raw["policies"].items():
        opts = dict(p.get("options", {}))
        if p.get("default") not in opts:
            raise CriteriaError(
                expected=f"policy {pname!r} default among its options {sorted(opts)}",
                got=p.get("default"),
                where=where,
                todo="set default to one of the options",
            )
        if implemented is not None:
            if pname not in implemented:
                raise CriteriaError(
                    expected=f"only policies the {raw['rule']!r} rule implements: {sorted(implemented)}",
                    got=pname,
                    where=where,
                    todo="remove the policy or implement it in the rule",
                )
            if set(opts) != set(implemented[pname]):
                raise CriteriaError(
                    expected=f"policy {pname!r} options {sorted(implemented[pname])} (implemented by the rule)",
                    got=sorted(opts),
                    where=where,
                    todo="keep the data file and the rule code in step",
                )
        policies[pname] = PolicySpec(
            name=pname,
            default=p["default"],
            options=MappingProxyType(opts),
            question=p.get("question", ""),
            citation=p.get("citation", ""),
        )
    if implemented is not None:
        missing = set(implemented) - set(policies)
        if missing:
            raise CriteriaError(
                expected="every policy the rule implements declared in the file",
                got=sorted(missing),
                where=where,
                todo="declare the missing policies with their default and citation",
            )
    ladders: dict[str, Ladder] = {}
    components = tuple(raw["components"])
    file_verification = _file_verification(raw.get("verification"), where)
    for lname, ld in raw["ladders"].items():
        lw = f"{where} [ladders.{lname}]"
        bands = tuple(Band(parse_interval(b["x"], where=lw), int(b["points"])) for b in ld["bands"])
        if not bands:
            raise CriteriaError(expected="at least one band", got=[], where=lw, todo="add bands")
        for b in bands:
            if not 0 <= b.points <= 4:
                raise CriteriaError(expected="points between 0 and 4", got=b.points, where=lw, todo="fix the band")
        if ld.get("component") not in components:
            raise CriteriaError(
                expected=f"component in {components}", got=ld.get("component"), where=lw, todo="fix the component"
            )
        edges = []
        for e in ld.get("contested_edges", []):
            pol = e["policy"]
            if pol not in policies:
                raise CriteriaError(
                    expected="a declared policy for the contested edge", got=pol, where=lw, todo="declare it"
                )
            membership = dict(e["membership"])
            if set(membership) != set(policies[pol].options) or not set(membership.values()) <= {"lower", "upper"}:
                raise CriteriaError(
                    expected=f"membership 'lower'/'upper' for every option of {pol}: {sorted(policies[pol].options)}",
                    got=membership,
                    where=lw,
                    todo="map each option to lower or upper",
                )
            edges.append(ContestedEdge(float(e["value"]), pol, MappingProxyType(membership), e.get("note", "")))
        ladder = Ladder(
            name=lname,
            concept=ld["concept"],
            component=ld["component"],
            domain=parse_interval(ld.get("domain", "-inf < x < inf"), where=lw),
            bands=tuple(sorted(bands, key=lambda b: (b.interval.lo, not b.interval.lo_inclusive))),
            contested_edges=tuple(edges),
            note=ld.get("note", ""),
            verification=_ladder_verification(ld.get("verification"), file_verification, f"{lw} verification"),
        )
        _validate_ladder(lname, ladder, lw)
        ladders[lname] = ladder
    return Criteria(
        id=raw["id"],
        version=raw["version"],
        rule=raw["rule"],
        title=raw["title"],
        citation=raw["citation"],
        doi=raw.get("doi", ""),
        source_table=raw.get("source_table", ""),
        caveat=raw.get("caveat", ""),
        components=components,
        ladders=MappingProxyType(ladders),
        policies=MappingProxyType(policies),
        constants=MappingProxyType(dict(raw.get("constants", {}))),
        verification=file_verification,
    )


_FILES = {"sofa1": "sofa1_vincent_1996.toml", "sofa2": "sofa2_ranzani_2025.toml"}


def available_criteria() -> list[str]:
    """Ids of the criteria files shipped with immunoguide."""
    return sorted(_FILES)


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML ``text`` as a dict, or :class:`CriteriaError` saying where the syntax breaks (criteria, presets and
    protocol files alike)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CriteriaError(expected="valid TOML", got=str(exc), where=where, todo="fix the TOML syntax") from None


def _read_shipped(fname: str) -> str:
    """The text of a criteria file shipped in this package (the one place that reads them)."""
    return resources.files("immunoguide.criteria").joinpath(fname).read_text("utf-8")


def _implemented(rule: str) -> Mapping[str, frozenset[str]] | None:
    """The options the rule code implements for ``rule`` (:mod:`.implemented`; None for an unknown rule)."""
    from immunoguide.criteria.implemented import IMPLEMENTED

    return IMPLEMENTED.get(rule)


def load_criteria_text(text: str, *, where: str = "<text>") -> Criteria:
    """Parse and validate criteria TOML text (used for user-supplied files and in tests)."""
    raw = parse_toml(text, where)
    return _build(raw, where, _implemented(raw.get("rule", "")))


@cache
def load_criteria(criteria_id: str) -> Criteria:
    """Load a shipped criteria file by id (``"sofa1"`` or ``"sofa2"``), validated once and cached."""
    try:
        fname = _FILES[criteria_id]
    except KeyError:
        raise UnknownCriteriaError(
            expected=f"one of {available_criteria()}",
            got=criteria_id,
            where="criteria id",
            todo="pick a shipped criteria id",
        ) from None
    return load_criteria_text(_read_shipped(fname), where=fname)


_SEPSIS3_FILES = {"sepsis3": "sepsis3_singer_2016.toml"}
_WINDOW_KEYS = ("antibiotic_then_culture_h", "culture_then_antibiotic_h", "sofa_before_si_h", "sofa_after_si_h")


# --------------------------------------------------------------------------------------------------------------
# Sepsis-3 criteria file (windows, threshold, policies; read by immunoguide.rules.sepsis3 and the cohort engine)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sepsis3Criteria:
    """A loaded, validated Sepsis-3 criteria file (windows in hours, threshold in points, policies)."""

    id: str
    version: str
    title: str
    citation: str
    doi: str
    windows_h: Mapping[str, float]
    sofa_rise_points: int
    policies: Mapping[str, PolicySpec]

    @property
    def label(self) -> str:
        """``id@version`` — what every result records."""
        return f"{self.id}@{self.version}"

    def window(self, name: str) -> timedelta:
        """One window of the file as a timedelta (``antibiotic_then_culture_h`` …)."""
        return timedelta(hours=self.windows_h[name])

    def resolve_policies(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Defaults overlaid with ``overrides``; unknown names or options raise :class:`PolicyError`."""
        return resolve_named_options(
            self.label, "policy", {n: (p.default, p.options) for n, p in self.policies.items()}, overrides,
            todo="check the policy name",
        )


def load_sepsis3_criteria_text(text: str, *, where: str = "<text>") -> Sepsis3Criteria:
    """Parse and validate Sepsis-3 criteria TOML (windows > 0 h, integer threshold ≥ 1, implemented policies).

    >>> load_sepsis3_criteria_text('id = "x"')
    Traceback (most recent call last):
    ...
    immunoguide.errors.CriteriaError: [IG-E200] expected a top-level 'version'; ...
    """
    raw = parse_toml(text, where)
    for key in ("id", "version", "rule", "title", "citation", "windows", "thresholds", "policies"):
        if key not in raw:
            raise CriteriaError(expected=f"a top-level {key!r}", got=sorted(raw), where=where, todo=f"add {key!r}")
    if raw["rule"] != "sepsis3":
        raise CriteriaError(expected="rule = 'sepsis3'", got=raw["rule"], where=where, todo="fix the rule")
    windows: dict[str, float] = {}
    for key in _WINDOW_KEYS:
        v = raw["windows"].get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise CriteriaError(
                expected=f"windows.{key}: a positive number of hours",
                got=v,
                where=where,
                todo="give the window in hours",
            )
        windows[key] = float(v)
    rise = raw["thresholds"].get("sofa_rise_points")
    if isinstance(rise, bool) or not isinstance(rise, int) or not 1 <= rise <= 24:
        raise CriteriaError(
            expected="thresholds.sofa_rise_points: an integer between 1 and 24",
            got=rise,
            where=where,
            todo="give the SOFA rise in points",
        )
    policies: dict[str, PolicySpec] = {}
    declared = raw["policies"]
    implemented = _implemented("sepsis3") or {}
    if set(declared) != set(implemented):
        raise CriteriaError(
            expected=f"exactly the policies the sepsis3 rule implements: {sorted(implemented)}",
            got=sorted(declared),
            where=where,
            todo="keep the data file and the rule code in step",
        )
    for name, p in declared.items():
        opts = dict(p.get("options", {}))
        if set(opts) != set(implemented[name]):
            raise CriteriaError(
                expected=f"policy {name!r} options {sorted(implemented[name])} (implemented by the rule)",
                got=sorted(opts),
                where=where,
                todo="keep the data file and the rule code in step",
            )
        if p.get("default") not in opts:
            raise CriteriaError(
                expected=f"policy {name!r} default among its options {sorted(opts)}",
                got=p.get("default"),
                where=where,
                todo="set default to one of the options",
            )
        policies[name] = PolicySpec(
            name=name,
            default=p["default"],
            options=MappingProxyType(opts),
            question=p.get("question", ""),
            citation=p.get("citation", ""),
        )
    return Sepsis3Criteria(
        id=raw["id"],
        version=raw["version"],
        title=raw["title"],
        citation=raw["citation"],
        doi=raw.get("doi", ""),
        windows_h=MappingProxyType(windows),
        sofa_rise_points=rise,
        policies=MappingProxyType(policies),
    )


@cache
def load_sepsis3_criteria(criteria_id: str = "sepsis3") -> Sepsis3Criteria:
    """Load a shipped Sepsis-3 criteria file by id (``"sepsis3"``), validated once and cached.

    >>> c = load_sepsis3_criteria()
    >>> c.windows_h["culture_then_antibiotic_h"], c.sofa_rise_points, c.policies["baseline"].default
    (72.0, 2, 'running_minimum')
    """
    try:
        fname = _SEPSIS3_FILES[criteria_id]
    except KeyError:
        raise UnknownCriteriaError(
            expected=f"one of {sorted(_SEPSIS3_FILES)}",
            got=criteria_id,
            where="sepsis3 criteria id",
            todo="pick a shipped criteria id",
        ) from None
    return load_sepsis3_criteria_text(_read_shipped(fname), where=fname)


def criteria_for(criteria: str | Criteria, rules: tuple[str, ...], *, where: str, todo: str) -> Criteria:
    """``criteria`` (a shipped id or loaded criteria) after checking that its rule is one of ``rules``.

    >>> criteria_for("sofa1", ("sofa1",), where="example", todo="-").rule
    'sofa1'
    """
    crit = load_criteria(criteria) if isinstance(criteria, str) else criteria
    if crit.rule not in rules:
        raise CriteriaError(
            expected=f"SOFA criteria with rule {' or '.join(repr(r) for r in rules)}",
            got=crit.label,
            where=where,
            todo=todo,
        )
    return crit
