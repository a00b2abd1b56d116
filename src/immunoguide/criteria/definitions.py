"""The definitions shared by the SOFA-1, SOFA-2, hourly and Sepsis-3 rules and the cohort engine, typed.

``criteria/sofa_definitions.toml`` holds each vocabulary (catecholamines, other vasoactive agents, ventilation kinds
and the kinds that count as support) and each clinical constant of the glue between charted data and the ladders
(urine windows, vasopressor durations, FiO2 look-back, room-air FiO2, normal GCS, caps, rolling-window rows), with a
citation. :func:`load_sofa_definitions` reads and checks it once; :data:`SOFA_DEFINITIONS` is what the single-patient
rules (``rules/``), the set-based engine (``cohort/engine*.py``) and the adapters import, so every such value is
written once. A missing or mistyped entry, a citation left out, or a vocabulary that is not a subset of the
ventilation kinds raises :class:`~immunoguide.errors.CriteriaError` at import.

>>> SOFA_DEFINITIONS.room_air_fio2, SOFA_DEFINITIONS.normal_gcs, SOFA_DEFINITIONS.catecholamines[0]
(0.21, 15, 'dopamine')
>>> SOFA_DEFINITIONS.fio2_lookback, SOFA_DEFINITIONS.urine_mimic_code_h
(datetime.timedelta(seconds=14400), (22, 30))
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from immunoguide.errors import CriteriaError

__all__ = ["SOFA_DEFINITIONS", "Definition", "SofaDefinitions", "load_sofa_definitions", "load_sofa_definitions_text"]

_FILE = "sofa_definitions.toml"
_SCHEMA = "immunoguide.sofa-definitions/1"

#: Vocabulary name → must every value be a ventilation kind (checked at load).
_VOCABULARIES: Mapping[str, bool] = MappingProxyType(
    {
        "catecholamines": False,
        "other_vasoactives": False,
        "ventilation_kinds": False,
        "invasive_ventilation": True,
        "respiratory_support": True,
        "advanced_ventilation": True,
    }
)
#: Constant name → (type, lowest, highest) accepted at load.
_CONSTANTS: Mapping[str, tuple[type, float, float]] = MappingProxyType(
    {
        "room_air_fio2": (float, 0.2, 0.22),
        "normal_gcs": (int, 15, 15),
        "normal_gcs_eye": (int, 4, 4),
        "normal_gcs_verbal": (int, 5, 5),
        "normal_gcs_motor": (int, 6, 6),
        "pf_without_support_cap_points": (int, 0, 4),
        "fio2_lookback_h": (int, 1, 24),
        "vasopressor_min_episode_min": (int, 1, 24 * 60),
        "vasopressor_merge_gap_min": (int, 0, 60),
        "urine_window_h": (int, 1, 72),
        "urine_mimic_code_min_h": (int, 1, 72),
        "urine_mimic_code_max_h": (int, 1, 72),
        "urine_ricu_min_h": (int, 1, 72),
        "window_rows": (int, 1, 72),
        "ricu_window_rows": (int, 1, 72),
        "ricu_gcs_valid_h": (int, 0, 72),
        "ricu_pf_match_rows": (int, 0, 72),
        "sofa2_urine_windows_h": (list, 1, 72),
    }
)


@dataclass(frozen=True)
class Definition:
    """One entry of the file: its value, unit (constants) and citation."""

    name: str
    value: Any
    unit: str
    citation: str


@dataclass(frozen=True)
class SofaDefinitions:
    """The loaded definitions: vocabularies as tuples, constants as numbers (and timedeltas where they are times)."""

    version: str
    entries: Mapping[str, Definition]
    catecholamines: tuple[str, ...]
    other_vasoactives: tuple[str, ...]
    ventilation_kinds: tuple[str, ...]
    invasive_ventilation: tuple[str, ...]
    respiratory_support: tuple[str, ...]
    advanced_ventilation: tuple[str, ...]
    room_air_fio2: float
    normal_gcs: int
    normal_gcs_components: Mapping[str, int]
    pf_without_support_cap_points: int
    fio2_lookback_h: int
    vasopressor_min_episode_min: int
    vasopressor_merge_gap_min: int
    urine_window_h: int
    urine_mimic_code_h: tuple[int, int]
    urine_ricu_min_h: int
    window_rows: int
    ricu_window_rows: int
    ricu_gcs_valid_h: int
    ricu_pf_match_rows: int
    sofa2_urine_windows_h: tuple[int, ...]

    @property
    def fio2_lookback(self) -> timedelta:
        """How far before a PaO2 a FiO2 may be charted to pair with it (hourly H4)."""
        return timedelta(hours=self.fio2_lookback_h)

    @property
    def vasopressor_min_episode(self) -> timedelta:
        """Shortest infusion episode that counts under ``vasopressor_min_duration = one_hour`` (hourly H8)."""
        return timedelta(minutes=self.vasopressor_min_episode_min)

    @property
    def vasopressor_merge_gap(self) -> timedelta:
        """Largest gap between two segments of one drug that still joins them into one episode (hourly H8)."""
        return timedelta(minutes=self.vasopressor_merge_gap_min)

    @property
    def vasoactives(self) -> tuple[str, ...]:
        """Catecholamines then the other vasoactive agents (every drug of the timeline model)."""
        return self.catecholamines + self.other_vasoactives

    def support_kinds(self, respiratory_support: str) -> tuple[str, ...]:
        """The ventilation kinds that count as respiratory support under the SOFA-1 policy option given."""
        return self.invasive_ventilation if respiratory_support == "imv_only" else self.respiratory_support


def _fail(expected: str, got: Any, where: str) -> CriteriaError:
    return CriteriaError(
        expected=expected, got=got, where=where, todo=f"fix {_FILE} (each entry: value/values, citation)"
    )


def _entry(table: Any, name: str, where: str, *, vocabulary: bool) -> Definition:
    w = f"{where} [{'vocabularies' if vocabulary else 'constants'}.{name}]"
    if not isinstance(table, dict):
        raise _fail("a table", table, w)
    key = "values" if vocabulary else "value"
    if key not in table:
        raise _fail(f"key {key!r}", sorted(table), w)
    citation = table.get("citation")
    if not isinstance(citation, str) or not citation.strip():
        raise _fail("a non-empty citation", citation, w)
    value = table[key]
    if vocabulary:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise _fail("a non-empty list of names", value, w)
        if len(set(value)) != len(value):
            raise _fail("names without repeats", value, w)
        return Definition(name, tuple(value), "", citation)
    typ, lo, hi = _CONSTANTS[name]
    items = value if typ is list else [value]
    if typ is list and (not isinstance(value, list) or not value):
        raise _fail("a non-empty list of integers", value, w)
    for v in items:
        want_int = typ in (int, list)
        ok_type = isinstance(v, int) if want_int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not lo <= v <= hi:
            kind = "an integer" if want_int else "a number"
            raise _fail(f"{kind} between {lo:g} and {hi:g}", v, w)
    unit = table.get("unit")
    if not isinstance(unit, str) or not unit:
        raise _fail("a unit", unit, w)
    return Definition(name, tuple(value) if typ is list else (float(value) if typ is float else value), unit, citation)


def load_sofa_definitions_text(text: str, *, where: str = "<text>") -> SofaDefinitions:
    """Parse and check the definitions TOML (every vocabulary and constant present, typed, cited, consistent)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail("valid TOML", str(exc), where) from None
    if raw.get("schema") != _SCHEMA:
        raise _fail(f"schema = {_SCHEMA!r}", raw.get("schema"), where)
    entries: dict[str, Definition] = {}
    for section, names, vocabulary in (("vocabularies", _VOCABULARIES, True), ("constants", _CONSTANTS, False)):
        tables = raw.get(section, {})
        if set(tables) != set(names):
            raise _fail(f"exactly the {section} {sorted(names)}", sorted(tables), where)
        for name in names:
            entries[name] = _entry(tables[name], name, where, vocabulary=vocabulary)
    kinds = entries["ventilation_kinds"].value
    if kinds[-1] != "none":
        raise _fail("ventilation_kinds ending with 'none' (least supportive last)", kinds, where)
    for name, of_kinds in _VOCABULARIES.items():
        if of_kinds and not set(entries[name].value) <= set(kinds):
            raise _fail(f"{name}: ventilation kinds {list(kinds)}", entries[name].value, where)
    if not set(entries["invasive_ventilation"].value) <= set(entries["respiratory_support"].value):
        raise _fail("invasive_ventilation inside respiratory_support", entries["invasive_ventilation"].value, where)
    lo, hi = entries["urine_mimic_code_min_h"].value, entries["urine_mimic_code_max_h"].value
    if not lo <= entries["urine_window_h"].value <= hi:
        raise _fail("urine_mimic_code_min_h <= urine_window_h <= urine_mimic_code_max_h", (lo, hi), where)
    v = {n: d.value for n, d in entries.items()}
    return SofaDefinitions(
        version=str(raw.get("version", "")),
        entries=MappingProxyType(entries),
        catecholamines=v["catecholamines"],
        other_vasoactives=v["other_vasoactives"],
        ventilation_kinds=v["ventilation_kinds"],
        invasive_ventilation=v["invasive_ventilation"],
        respiratory_support=v["respiratory_support"],
        advanced_ventilation=v["advanced_ventilation"],
        room_air_fio2=v["room_air_fio2"],
        normal_gcs=v["normal_gcs"],
        normal_gcs_components=MappingProxyType(
            {"gcs_eye": v["normal_gcs_eye"], "gcs_verbal": v["normal_gcs_verbal"], "gcs_motor": v["normal_gcs_motor"]}
        ),
        pf_without_support_cap_points=v["pf_without_support_cap_points"],
        fio2_lookback_h=v["fio2_lookback_h"],
        vasopressor_min_episode_min=v["vasopressor_min_episode_min"],
        vasopressor_merge_gap_min=v["vasopressor_merge_gap_min"],
        urine_window_h=v["urine_window_h"],
        urine_mimic_code_h=(lo, hi),
        urine_ricu_min_h=v["urine_ricu_min_h"],
        window_rows=v["window_rows"],
        ricu_window_rows=v["ricu_window_rows"],
        ricu_gcs_valid_h=v["ricu_gcs_valid_h"],
        ricu_pf_match_rows=v["ricu_pf_match_rows"],
        sofa2_urine_windows_h=v["sofa2_urine_windows_h"],
    )


@cache
def load_sofa_definitions() -> SofaDefinitions:
    """The shipped ``criteria/sofa_definitions.toml``, checked once and cached."""
    text = resources.files("immunoguide.criteria").joinpath(_FILE).read_text("utf-8")
    return load_sofa_definitions_text(text, where=_FILE)


#: The shipped definitions (loaded at import: a broken file fails every rule at once, not one hour of one stay).
SOFA_DEFINITIONS: SofaDefinitions = load_sofa_definitions()
