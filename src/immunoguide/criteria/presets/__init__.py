"""Reference presets: every SOFA, hourly-grid, suspected-infection and Sepsis-3 choice of a reference, as data.

A preset file (``presets/<id>.toml``) sets *every* policy of the SOFA-1 criteria (``sofa1``) and of the Sepsis-3
criteria (``sepsis3``) to one option, each with a citation to the reference's own source, and names how each
source is read (``source_profiles``: e.g. the MIMIC-III adapter's ``ricu`` profile). The loader checks that a
preset is complete (no policy left to a default by accident), that every option exists in the criteria files, and
that every choice is cited. Reference quirks the preset reproduces and differences that remain are listed too.

Shipped presets: ``immunoguide`` (the defaults, named), ``ricu`` (eth-mds/ricu 0.6.3) and ``mimic-code``
(MIT-LCP/mimic-code MIMIC-IV concepts).

Examples
--------
>>> p = load_preset("ricu")
>>> p.label, p.sofa_policies["hourly_grid"], p.sepsis3_policies["baseline"], p.source_profile("mimic3")
('ricu@ricu-0.6.3.v1', 'icu_admission_hours', 'running_minimum', 'ricu')
>>> load_preset("immunoguide").source_profile("mimic4")
'immunoguide'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from immunoguide.errors import CriteriaError, PolicyError, UnknownCriteriaError

__all__ = ["PRESETS", "Preset", "available_presets", "load_preset", "merge_policies"]

#: Shipped preset ids and their files.
PRESETS: Mapping[str, str] = MappingProxyType(
    {"immunoguide": "immunoguide.toml", "ricu": "ricu.toml", "mimic-code": "mimic-code.toml"}
)
#: Source profiles the adapters implement.
SOURCE_PROFILES: Mapping[str, frozenset[str]] = MappingProxyType(
    {"mimic3": frozenset({"immunoguide", "ricu"}), "mimic4": frozenset({"immunoguide", "ricu"}),
     "long": frozenset({"immunoguide"}), "fhir": frozenset({"immunoguide"})}
)  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """A loaded, validated reference preset."""

    id: str
    version: str
    title: str
    reference: str
    doi: str
    description: str
    sofa_policies: Mapping[str, str]
    sepsis3_policies: Mapping[str, str]
    citations: Mapping[str, str]
    source_profiles: Mapping[str, str] = field(default_factory=dict)
    quirks: tuple[Mapping[str, str], ...] = ()
    differences: tuple[Mapping[str, str], ...] = ()
    unlisted_sources: str = "immunoguide"

    @property
    def label(self) -> str:
        """``id@version`` — what a run records."""
        return f"{self.id}@{self.version}"

    def source_profile(self, source: str) -> str:
        """How ``source`` is read under this preset: its named profile, else ``immunoguide`` — unless the preset says
        ``unlisted_sources = "refuse"`` (a reference that defines its own reading of every source it supports)."""
        if source in self.source_profiles:
            return self.source_profiles[source]
        if self.unlisted_sources == "refuse":
            raise PolicyError(
                expected=f"a source the preset {self.label} defines a reading for: {sorted(self.source_profiles)}",
                got=source,
                where="--preset",
                todo="convert a source the preset reads, or use --policy options without the preset",
            )
        return "immunoguide"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what ``metadata.json`` records)."""
        return {
            "id": self.id,
            "version": self.version,
            "reference": self.reference,
            "source_profiles": dict(self.source_profiles),
            "sofa_policies": dict(self.sofa_policies),
            "sepsis3_policies": dict(self.sepsis3_policies),
            "quirks": [q["name"] for q in self.quirks],
        }


def available_presets() -> list[str]:
    """Ids of the shipped presets."""
    return sorted(PRESETS)


def _section(raw: dict[str, Any], key: str, policies: Mapping[str, Any], where: str) -> tuple[dict[str, str], dict[str, str]]:
    declared = raw.get(key, {})
    missing = sorted(set(policies) - set(declared))
    unknown = sorted(set(declared) - set(policies))
    if missing or unknown:
        raise CriteriaError(
            expected=f"every {key} policy set exactly once: {sorted(policies)}",
            got=f"missing {missing}, unknown {unknown}",
            where=where,
            todo=f"add a [{key}.<policy>] table with option and citation for each missing policy; remove unknown ones",
        )
    chosen, cites = {}, {}
    for name, entry in declared.items():
        opt, cite = entry.get("option"), str(entry.get("citation", "")).strip()
        if opt not in policies[name].options:
            raise CriteriaError(
                expected=f"an option of {key} policy {name!r}: {sorted(policies[name].options)}",
                got=opt,
                where=f"{where} [{key}.{name}]",
                todo="pick one of the options the criteria file declares",
            )
        if not cite:
            raise CriteriaError(
                expected="a citation to the reference's own source", got="", where=f"{where} [{key}.{name}]",
                todo="cite the repository file and function or SQL that makes this choice",
            )  # fmt: skip
        chosen[name], cites[f"{key}.{name}"] = opt, cite
    return chosen, cites


def load_preset_text(text: str, *, where: str = "<text>") -> Preset:
    """Parse and validate preset TOML (complete, options declared by the criteria files, every choice cited)."""
    from immunoguide.criteria import load_criteria, load_sepsis3_criteria, parse_toml

    raw = parse_toml(text, where)
    for key in ("id", "version", "title", "reference", "sofa1", "sepsis3"):
        if key not in raw:
            raise CriteriaError(expected=f"a top-level {key!r}", got=sorted(raw), where=where, todo=f"add {key!r}")
    sofa, c1 = _section(raw, "sofa1", load_criteria("sofa1").policies, where)
    s3, c2 = _section(raw, "sepsis3", load_sepsis3_criteria().policies, where)
    profiles: dict[str, str] = {}
    for source, entry in raw.get("source_profiles", {}).items():
        prof = entry.get("profile") if isinstance(entry, dict) else entry
        if source not in SOURCE_PROFILES or prof not in SOURCE_PROFILES[source]:
            raise CriteriaError(
                expected=f"a source profile the adapters implement: {({k: sorted(v) for k, v in SOURCE_PROFILES.items()})}",
                got=f"{source} = {prof}",
                where=f"{where} [source_profiles]",
                todo="name an implemented profile",
            )
        profiles[source] = str(prof)
    return Preset(
        id=raw["id"],
        version=raw["version"],
        title=raw["title"],
        reference=raw["reference"],
        doi=raw.get("doi", ""),
        description=raw.get("description", ""),
        sofa_policies=MappingProxyType(sofa),
        sepsis3_policies=MappingProxyType(s3),
        citations=MappingProxyType({**c1, **c2}),
        source_profiles=MappingProxyType(profiles),
        quirks=tuple(MappingProxyType(q) for q in raw.get("quirks", [])),
        differences=tuple(MappingProxyType(d) for d in raw.get("differences", [])),
        unlisted_sources=_unlisted(raw.get("unlisted_sources", "immunoguide"), where),
    )


def _unlisted(value: Any, where: str) -> str:
    if value not in ("immunoguide", "refuse"):
        raise CriteriaError(
            expected="unlisted_sources = 'immunoguide' or 'refuse'", got=value, where=where, todo="pick one of the two"
        )
    return str(value)


@cache
def load_preset(preset_id: str) -> Preset:
    """Load a shipped preset by id (``immunoguide``, ``ricu``, ``mimic-code``), validated once and cached."""
    try:
        fname = PRESETS[preset_id]
    except KeyError:
        raise UnknownCriteriaError(
            expected=f"a preset id: {available_presets()}", got=preset_id, where="--preset", todo="pick a shipped preset"
        ) from None
    text = resources.files("immunoguide.criteria.presets").joinpath(fname).read_text("utf-8")
    return load_preset_text(text, where=f"presets/{fname}")


def merge_policies(preset: str | Preset | None, scope: str, overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The policies of ``scope`` (``sofa1`` or ``sepsis3``) from ``preset``, overlaid with explicit ``overrides``.

    >>> merge_policies("ricu", "sofa1", {"rolling_window": "24_rows"})["rolling_window"]
    '24_rows'
    >>> merge_policies(None, "sepsis3", {"baseline": "zero"})
    {'baseline': 'zero'}
    """
    base: dict[str, str] = {}
    if preset is not None:
        p = load_preset(preset) if isinstance(preset, str) else preset
        base = dict(p.sofa_policies if scope == "sofa1" else p.sepsis3_policies)
    return {**base, **(overrides or {})}
