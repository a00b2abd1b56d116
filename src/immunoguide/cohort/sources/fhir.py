"""FHIR R4B Bundles (EHR extracts) → the timeline schema (:mod:`immunoguide.cohort.schema`).

Input: a JSON file holding one Bundle (or one resource), a directory of ``*.json`` / ``*.ndjson`` files, an NDJSON
file (one resource or Bundle per line), or in-memory Bundles (dicts or ``fhir.resources.R4B`` models). Nested Bundles
are opened. Every resource is validated on its own with ``fhir.resources.R4B`` (FHIR 4.3.0; the library's default is
R5), so one bad resource never hides the others. The library does not check code value sets; every code the adapter
acts on is listed in ``fhir_codes.toml`` (with its source) and checked here.

Mapping (codes in ``fhir_codes.toml``):

* ``Encounter`` of class IMP / ACUTE / ICU → ``stays`` (period → intime/outtime). An accepted encounter that other
  accepted encounters are ``partOf`` is the hospital admission (``hadm_id``, ``admittime``), not a stay.
  ``hospitalization.admitSource`` 'emd' → ``emergency_department``, another admit source → ``inpatient``, none →
  NULL (unknown, never guessed). ``Patient``: ``birthDate`` + stay start → ``age_years``; ``gender`` → ``sex``
  (FHIR administrative gender; 'unknown' → NULL); ``deceasedDateTime`` inside the admission (or discharge
  disposition 'exp') → ``deathtime``; the first body weight of the stay → ``weight_kg``.
* ``Observation`` by LOINC (ferritin 2276-4, platelets, bilirubin, creatinine, PaO2, FiO2, MAP, GCS, urine output,
  potassium, pH, bicarbonate, body weight) or by the local concept system (``hla_dr_per_monocyte`` and every concept
  of ``criteria/concepts.toml``; assay method from ``Observation.method``) → ``observations``, converted once to the
  concept's canonical unit with :func:`immunoguide.units.to_canonical`. A Quantity with a comparator (``>2000``) or
  a censored ``valueString`` keeps its text in ``value_text`` with ``value`` NULL. Blood culture 600-7 →
  ``cultures`` (positive from the coded result or the interpretation; NULL while pending).
* ``MedicationAdministration``: RxNorm / name vasopressors (effectivePeriod + ``dosage.rateQuantity`` or
  ``rateRatio``) → ``infusions`` in µg/kg/min (per-minute rates without kg divided by the stay weight);
  antibiotics (RxNorm / name list) → ``antibiotics`` (name = the coding display or text, as charted) with
  ``dosage.route``; topical / ophthalmic / otic routes are reported, not loaded.
* ``Procedure`` (SNOMED CT) → ``ventilation`` (performedPeriod); ``Condition`` ICD-10 / ICD-9-CM → ``diagnoses``.

Named choices (also in :attr:`FhirReport.choices`):

* a resource attaches to the stay its encounter reference names; without one (or when it names an encounter that
  is not a stay), to every stay of its subject whose window ``[intime − 24 h, outtime]`` contains its time — the
  MIMIC-III adapter's rule;
* FHIR date-times carry an offset: they are converted to UTC and stored naive; date-only values are placed at 12:00
  (``time_is_date_only`` for antibiotics and cultures, a ``date_only_time`` data-quality row otherwise);
* stay ids: a numeric ``Encounter.id`` is used as is, any other id becomes a deterministic 63-bit hash of
  ``"Encounter/<id>"`` (:func:`stable_id`), recorded in :attr:`FhirReport.id_map` (same for patients, admissions);
* preliminary results are used; ICD codes are written without the dot (J18.9 → ``J189``).

Nothing is dropped silently: every resource (or component) the adapter cannot use is a ``data_quality`` row (source
``fhir:<ResourceType>/<id>``, item = the code or field, issue such as ``unknown_code``, ``unit_mismatch``,
``text_in_numeric_field``, ``implausible_value``, ``times_out_of_order``, ``no_encounter``, ``invalid_resource``)
and an entry of :attr:`FhirReport.issues`; stays without observations are reported too. Only input that is not
JSON or not FHIR at all raises :class:`~immunoguide.errors.InputError`; nothing is written then.

>>> import tempfile
>>> bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
...     {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-05-01"}},
...     {"resource": {"resourceType": "Encounter", "id": "17", "status": "finished", "class": {"code": "ICU"},
...                   "subject": {"reference": "Patient/p1"},
...                   "period": {"start": "2024-01-01T08:00:00Z", "end": "2024-01-03T08:00:00Z"}}},
...     {"resource": {"resourceType": "Observation", "id": "f1", "status": "final",
...                   "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
...                   "encounter": {"reference": "Encounter/17"}, "effectiveDateTime": "2024-01-01T10:00:00Z",
...                   "valueQuantity": {"value": 4494, "unit": "pmol/L"}}}]}
>>> with tempfile.TemporaryDirectory() as d:
...     report = convert_fhir(bundle, d)
>>> report.rows["stays"], report.rows["observations"], report.issues
(1, 1, ())
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from immunoguide.cohort.schema import SCHEMAS, write_table
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import CriteriaError, ImplausibleValueError, InputError, UnitError
from immunoguide.units import check_plausible, concepts, normalise_unit, to_canonical

__all__ = ["FhirIssue", "FhirReport", "convert_fhir", "load_codes", "stable_id"]

DRUGS = SOFA_DEFINITIONS.catecholamines
VENT_KINDS = SOFA_DEFINITIONS.ventilation_kinds
#: Resource types the adapter reads; any other type is counted once per type (``resource_type_not_used``).
USED_TYPES = (
    "Patient",
    "Encounter",
    "Observation",
    "MedicationAdministration",
    "Procedure",
    "Condition",
    "Medication",
    "Specimen",
)
_MAX_INT64 = 2**63 - 1
_CENSORED = re.compile(r"^\s*(<=|>=|<|>|≤|≥|greater than|less than)\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.IGNORECASE)
_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


# ---------------------------------------------------------------------------------------------------------------------
# public types


@dataclass(frozen=True)
class FhirIssue:
    """One resource (or component) the adapter could not use, or used with a caveat.

    ``source`` is ``fhir:<ResourceType>/<id>``; ``item`` the code or field; ``issue`` the reason; ``example`` what
    came; ``stay_id`` the stay it belongs to when known.
    """

    source: str
    item: str
    issue: str
    example: str
    stay_id: int | None = None
    n: int = 1


@dataclass(frozen=True)
class FhirReport:
    """What the FHIR adapter read and wrote.

    Attributes
    ----------
    dataset : str
        ``"fhir"``.
    codes_version : str
        Version of ``fhir_codes.toml``.
    out_dir : str
        Where the Parquet files are.
    resources_read : int
        Resources found (Bundles excluded, contained resources not counted).
    rows : dict
        Rows written per schema table.
    issues : tuple of FhirIssue
        Everything written to ``data_quality``, in the same order (by stay, source, item, issue).
    id_map : dict
        ``"Encounter/<id>"`` / ``"Patient/<id>"`` → the 63-bit integer id used, for every non-numeric FHIR id.
    choices : dict
        The named choices the conversion applied.
    """

    dataset: str
    codes_version: str
    out_dir: str
    resources_read: int
    rows: dict[str, int]
    issues: tuple[FhirIssue, ...]
    id_map: dict[str, int] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)


@cache
def load_codes(name: str = "fhir_codes.toml") -> Mapping[str, Any]:
    """The FHIR code map shipped next to the adapter, checked against ``concepts.toml`` and the schema literals."""
    raw = tomllib.loads(resources.files("immunoguide.cohort.sources").joinpath(name).read_text("utf-8"))
    known = set(concepts()) | set(raw["local_concepts"]["extra"])
    where = f"cohort/sources/{name}"
    for code, spec in raw["loinc"].items():
        if spec.get("kind") == "culture":
            continue
        if spec.get("concept") not in known:
            raise CriteriaError(
                expected="a concept of criteria/concepts.toml",
                got=spec.get("concept"),
                where=f"{where} [loinc.{code}]",
                todo="fix the concept name",
            )
        for key in ("text_unit", "dimensionless_unit"):
            if key in spec and normalise_unit(spec[key]) not in concepts()[spec["concept"]].units:
                raise CriteriaError(
                    expected=f"{key} accepted by {spec['concept']}",
                    got=spec[key],
                    where=f"{where} [loinc.{code}]",
                    todo="use a unit listed in concepts.toml",
                )
    bad_kinds = {k: v for k, v in raw["procedure"]["ventilation"].items() if v not in VENT_KINDS}
    bad_drugs = [d for d in raw["medication"]["vasopressors"] if d not in DRUGS and d != "excluded_words"]
    if bad_kinds or bad_drugs:
        raise CriteriaError(
            expected=f"ventilation kinds in {VENT_KINDS} and drugs in {DRUGS}",
            got={"kinds": bad_kinds, "drugs": bad_drugs},
            where=where,
            todo="fix the mapping",
        )
    return raw


def stable_id(resource_type: str, fhir_id: str) -> int:
    """The integer id of a FHIR resource: a numeric id as is, otherwise a deterministic 63-bit hash.

    The hash is the first 8 bytes of SHA-256 of ``"<ResourceType>/<id>"``, shifted right by one bit (so it fits a
    signed 64-bit integer); it does not depend on the run, the machine or the Python hash seed.

    >>> stable_id("Encounter", "30001")
    30001
    >>> h = stable_id("Encounter", "icu-stay-7")
    >>> h == stable_id("Encounter", "icu-stay-7") and 0 <= h < 2**63 and h != stable_id("Patient", "icu-stay-7")
    True
    >>> stable_id("Encounter", "007") == 7  # leading zeros are not a plain number: hashed, so '7' and '007' differ
    False
    """
    if re.fullmatch(r"0|[1-9][0-9]{0,18}", fhir_id) and int(fhir_id) <= _MAX_INT64:
        return int(fhir_id)
    digest = hashlib.sha256(f"{resource_type}/{fhir_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------------------------------------------------------------
# reading


@dataclass
class _Item:
    rtype: str
    raw: dict[str, Any]
    key: str | None  # "Type/id" (or the fullUrl when the resource has no id)
    label: str  # fhir:Type/id
    model: Any = None


def _is_fhir_object(x: Any) -> bool:
    if not isinstance(x, dict) or not isinstance(x.get("resourceType"), str):
        return False
    try:
        get_fhir_model_class(x["resourceType"])
    except (ValueError, KeyError, TypeError):
        return False
    return True


def _not_fhir(where: str, got: str) -> InputError:
    return InputError(
        expected="a FHIR R4B resource or Bundle (a JSON object with a known resourceType), or NDJSON of them",
        got=got,
        where=where,
        todo="export the EHR data as FHIR R4B JSON (Bundle, resource or NDJSON)",
    )


def _to_plain(x: Any) -> Any:
    if hasattr(x, "model_dump_json") and hasattr(x, "get_resource_type"):
        return json.loads(x.model_dump_json())
    return x


def _load(path_or_bundles: Any) -> tuple[list[tuple[Any, str]], list[FhirIssue]]:
    """Top-level JSON values with where they came from; InputError when the input is not JSON/FHIR at all."""
    issues: list[FhirIssue] = []
    if isinstance(path_or_bundles, (str, os.PathLike)):
        p = Path(path_or_bundles)
        if p.is_dir():
            files = sorted([*p.glob("*.json"), *p.glob("*.ndjson"), *p.glob("*.jsonl")])
            if not files:
                raise _not_fhir(str(p), "a directory without *.json or *.ndjson files")
            out: list[tuple[Any, str]] = []
            for f in files:
                o, i = _load_file(f)
                out += o
                issues += i
            return out, issues
        if not p.is_file():
            raise InputError(
                expected="an existing file or directory", got=str(p), where="convert_fhir", todo="check the path"
            )
        return _load_file(p)
    if isinstance(path_or_bundles, Mapping) or hasattr(path_or_bundles, "model_dump_json"):
        values = [path_or_bundles]
    elif isinstance(path_or_bundles, Iterable) and not isinstance(path_or_bundles, (bytes, bytearray)):
        values = list(path_or_bundles)
    else:
        raise _not_fhir("convert_fhir", type(path_or_bundles).__name__)
    plain = [_to_plain(v) for v in values]
    if not plain or not all(_is_fhir_object(v) for v in plain):
        raise _not_fhir("in-memory input", "no FHIR object" if not plain else "a value that is not a FHIR object")
    return [(v, f"input[{i}]") for i, v in enumerate(plain)], issues


def _load_file(p: Path) -> tuple[list[tuple[Any, str]], list[FhirIssue]]:
    try:
        text = p.read_text("utf-8")
    except UnicodeDecodeError:
        raise _not_fhir(str(p), "a file that is not UTF-8 text") from None
    if p.suffix in (".ndjson", ".jsonl"):
        out, issues = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                v = json.loads(line)
            except json.JSONDecodeError as exc:
                issues.append(FhirIssue(f"fhir:{p.name}:{n}", "line", "invalid_json", str(exc)[:200]))
                continue
            if not _is_fhir_object(v):
                issues.append(
                    FhirIssue(
                        f"fhir:{p.name}:{n}", "resourceType", "invalid_resource", "not a FHIR resource: " + _short(v)
                    )
                )
                continue
            out.append((v, f"{p.name}:{n}"))
        if not out:
            raise _not_fhir(str(p), "no line holds a FHIR resource")
        return out, issues
    try:
        v = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _not_fhir(str(p), f"invalid JSON ({exc})") from None
    if not _is_fhir_object(v):
        raise _not_fhir(str(p), _short(v))
    return [(v, p.name)], []


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 120 else s[:117] + "..."


def _flatten(
    value: dict[str, Any], where: str, items: list[_Item], full_urls: dict[str, str], issues: list[FhirIssue]
) -> None:
    """Open Bundles (recursively) into resource items; broken entries become issues."""
    rtype = value.get("resourceType")
    if rtype != "Bundle":
        rid = value.get("id") if isinstance(value.get("id"), str) else None
        key = f"{rtype}/{rid}" if rid else None
        items.append(_Item(str(rtype), value, key, f"fhir:{rtype}/{rid}" if rid else f"fhir:{rtype}@{where}"))
        return
    bid = value.get("id") if isinstance(value.get("id"), str) else where
    shell = {k: v for k, v in value.items() if k != "entry"}
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        loc, msg, _ = _first_error(exc)
        issues.append(FhirIssue(f"fhir:Bundle/{bid}", loc, "invalid_resource", msg))
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        issues.append(
            FhirIssue(f"fhir:Bundle/{bid}", "entry", "invalid_resource", "entry is not a list: " + _short(entries))
        )
        return
    for i, e in enumerate(entries):
        res = e.get("resource") if isinstance(e, dict) else None
        if not _is_fhir_object(res):
            issues.append(
                FhirIssue(
                    f"fhir:Bundle/{bid}",
                    f"entry[{i}]",
                    "invalid_resource",
                    "entry without a FHIR resource: " + _short(e),
                )
            )
            continue
        assert isinstance(res, dict)
        before = len(items)
        _flatten(res, f"{where}#entry[{i}]", items, full_urls, issues)
        url = e.get("fullUrl")
        if isinstance(url, str) and len(items) > before and res.get("resourceType") != "Bundle":
            it = items[-1]
            if it.key is None:
                it.key = url
                it.label = f"fhir:{it.rtype}/{url}"
            full_urls[url] = it.key


def _first_error(exc: ValidationError) -> tuple[str, str, Any]:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "(resource)"
    return loc, f"{loc}: {err.get('msg', '')}"[:300], err.get("input")


# ---------------------------------------------------------------------------------------------------------------------
# small helpers over validated models


def _time(v: Any, noon: int) -> tuple[datetime | None, bool, str | None]:
    """(naive UTC datetime, date_only, problem) from a FHIR date/dateTime/instant value."""
    if v is None:
        return None, False, "missing_time"
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v, False, None
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, noon), True, None
    return None, False, "imprecise_time"


def _codings(cc: Any) -> list[Any]:
    return list(getattr(cc, "coding", None) or []) if cc is not None else []


def _texts(cc: Any) -> list[str]:
    out = [c.display for c in _codings(cc) if getattr(c, "display", None)]
    if cc is not None and getattr(cc, "text", None):
        out.append(cc.text)
    return out


def _first_code(cc: Any) -> str:
    for c in _codings(cc):
        if c.code:
            return str(c.code)
    return str(getattr(cc, "text", None) or "(no code)") if cc is not None else "(no code)"


def _raw_code(raw: Mapping[str, Any]) -> str:
    for key in ("code", "medicationCodeableConcept"):
        cc = raw.get(key)
        if isinstance(cc, dict):
            cod = cc.get("coding")
            if isinstance(cod, list):
                for c in cod:
                    if isinstance(c, dict) and isinstance(c.get("code"), str):
                        return c["code"]
            if isinstance(cc.get("text"), str):
                return cc["text"]
    return "(no code)"


def _num(d: Decimal | float | int) -> str:
    s = format(Decimal(str(d)).normalize(), "f") if not isinstance(d, float) else repr(d)
    return s


# ---------------------------------------------------------------------------------------------------------------------
# the conversion


@dataclass
class _Stay:
    stay_id: int
    key: str
    subject_key: str | None
    intime: datetime
    outtime: datetime | None
    row: dict[str, Any]


class _Converter:
    def __init__(self, codes: Mapping[str, Any]) -> None:
        self.c = codes
        self.sys = codes["systems"]
        self.pre = timedelta(hours=int(codes["attachment"]["pre_stay_h"]))
        self.noon = int(codes["attachment"]["date_only_hour"])
        self.issues: list[FhirIssue] = []
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in SCHEMAS}
        self.id_map: dict[str, int] = {}
        self.full_urls: dict[str, str] = {}
        self.by_key: dict[str, _Item] = {}
        self.stays: dict[str, _Stay] = {}  # encounter key -> stay
        self.stays_by_subject: dict[str, list[_Stay]] = defaultdict(list)
        self.weights: dict[int, tuple[datetime, float]] = {}

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    def issue(
        self, it: _Item | str, item: str, issue: str, example: Any, stays: Iterable[int | None] = (None,)
    ) -> None:
        label = it.label if isinstance(it, _Item) else it
        for sid in list(stays) or [None]:
            self.issues.append(FhirIssue(label, str(item), issue, str(example)[:300], sid))

    def int_id(self, key: str) -> int:
        rtype, _, rid = key.partition("/")
        if key.startswith(("urn:", "http:", "https:")):
            rtype, rid = "urn", key
        i = stable_id(rtype, rid)
        if str(i) != rid:
            self.id_map[key] = i
        return i

    def ref(self, r: Any) -> str | None:
        s = getattr(r, "reference", None) if r is not None else None
        if not s:
            return None
        if s in self.full_urls:
            return self.full_urls[s]
        m = _REF.search(s)
        return f"{m.group(1)}/{m.group(2)}" if m else s

    def attach(self, enc_key: str | None, subject_key: str | None, t: datetime | None) -> tuple[list[int], str]:
        """Stay ids for a resource; an empty list comes with the reason."""
        if enc_key and enc_key in self.stays:
            return [self.stays[enc_key].stay_id], ""
        if subject_key and t is not None:
            hits = [
                s.stay_id
                for s in self.stays_by_subject.get(subject_key, [])
                if s.intime - self.pre <= t and (s.outtime is None or t <= s.outtime)
            ]
            if hits:
                return hits, ""
        if enc_key:
            why = f"encounter {enc_key} is not a stay" + (
                f" and {subject_key} has no stay window containing {t}" if subject_key else " and there is no subject"
            )
        elif subject_key:
            why = (
                f"no encounter; {subject_key} has no stay window containing {t}"
                if t
                else f"no encounter and no time to place {subject_key}"
            )
        else:
            why = "no encounter and no subject"
        return [], why

    def status_ok(
        self, it: _Item, status: Any, used: list[str], excluded: list[str], item: str, stays: list[int] | list[None]
    ) -> bool:
        if status in used:
            return True
        kind = "status_not_usable" if status in excluded else "invalid_code"
        self.issue(it, item, kind, f"status {status!r}", stays)
        return False

    # -- resources ------------------------------------------------------------------------------------------------
    def run(self, items: list[_Item]) -> None:
        by_type: dict[str, list[_Item]] = defaultdict(list)
        unused: Counter[str] = Counter()
        seen: dict[str, _Item] = {}
        invalid: list[tuple[_Item, str, str, Any]] = []
        for it in items:
            if it.key is not None and it.key in seen:
                same = seen[it.key].raw == it.raw
                self.issue(
                    it,
                    it.rtype,
                    "duplicate_resource" if same else "conflicting_duplicate",
                    "identical copy ignored" if same else "differs from the first copy; the first is used",
                )
                continue
            if it.key is not None:
                seen[it.key] = it
            if it.rtype not in USED_TYPES:
                unused[it.rtype] += 1
                continue
            try:
                it.model = get_fhir_model_class(it.rtype).model_validate(it.raw)
            except ValidationError as exc:
                loc, msg, got = _first_error(exc)
                invalid.append((it, loc, msg, got))
                continue
            by_type[it.rtype].append(it)
            if it.key is not None:
                self.by_key[it.key] = it
        for t, n in sorted(unused.items()):
            self.issues.append(FhirIssue(f"fhir:{t}", t, "resource_type_not_used", f"{n} resource(s)", None, n))

        self.encounters(by_type["Encounter"])
        for it, loc, msg, got in invalid:
            raw_enc = it.raw.get("encounter", it.raw.get("context"))
            enc = raw_enc.get("reference") if isinstance(raw_enc, dict) else None
            enc_key = self.full_urls.get(enc, None) if isinstance(enc, str) else None
            if isinstance(enc, str) and enc_key is None:
                m = _REF.search(enc)
                enc_key = f"{m.group(1)}/{m.group(2)}" if m else None
            stays = [self.stays[enc_key].stay_id] if enc_key in self.stays else [None]
            numeric = (
                isinstance(got, str)
                and loc.split(".")[-1] in ("value", "valueInteger")
                and any(p in loc for p in ("valueQuantity", "rateQuantity", "valueInteger", "numerator", "denominator"))
            )
            self.issue(
                it,
                _raw_code(it.raw) if numeric else loc,
                "text_in_numeric_field" if numeric else "invalid_resource",
                f"{loc} = {got!r}" if numeric else msg,
                stays,
            )
        for it in by_type["Observation"]:
            self.observation(it)
        for it in by_type["MedicationAdministration"]:
            self.medication(it)
        for it in by_type["Procedure"]:
            self.procedure(it)
        for it in by_type["Condition"]:
            self.condition(it)
        self.finish_stays()

    def encounters(self, encs: list[_Item]) -> None:
        ec = self.c["encounter"]
        accepted: list[_Item] = []
        for it in encs:
            e = it.model
            cls = e.class_fhir
            if not self.status_ok(it, e.status, ec["status_used"], ec["status_excluded"], "Encounter.status", [None]):
                continue
            if cls is None or cls.code not in ec["classes"] or (cls.system and cls.system not in ec["class_systems"]):
                self.issue(
                    it,
                    getattr(cls, "code", None) or "Encounter.class",
                    "encounter_class_not_inpatient",
                    f"class {getattr(cls, 'system', None)}|{getattr(cls, 'code', None)}",
                )
                continue
            accepted.append(it)
        acc_keys = {it.key for it in accepted}
        parents = {self.ref(it.model.partOf) for it in accepted} & acc_keys
        patients = {it.key: it.model for it in self.by_key.values() if it.rtype == "Patient"}
        used_ids: dict[int, str] = {}
        for it in accepted:
            if it.key in parents:
                continue  # the hospital admission of its child stays
            e = it.model
            period = e.period
            start, start_d, p1 = _time(getattr(period, "start", None), self.noon)
            end, end_d, p2 = _time(getattr(period, "end", None), self.noon)
            if start is None:
                self.issue(it, "Encounter.period.start", p1 or "missing_time", f"period {period}")
                continue
            if end is not None and end < start:
                self.issue(it, "Encounter.period", "times_out_of_order", f"end {end} before start {start}")
                continue
            if it.key is None:
                self.issue(
                    it, "Encounter.id", "invalid_resource", "an encounter needs an id (or a fullUrl) to be a stay"
                )
                continue
            sid = self.int_id(it.key)
            if sid in used_ids:
                self.issue(it, "Encounter.id", "stay_id_collision", f"{it.key} and {used_ids[sid]} both map to {sid}")
                continue
            used_ids[sid] = it.key
            subject_key = self.ref(e.subject)
            parent_key = self.ref(e.partOf)
            parent = self.by_key.get(parent_key).model if parent_key in self.by_key else None  # type: ignore[union-attr]
            adm_enc = parent if parent is not None else e
            hadm = self.int_id(parent_key) if parent_key else sid
            if parent is not None:
                admittime, _, _ = _time(getattr(parent.period, "start", None), self.noon)
                hosp_end, _, _ = _time(getattr(parent.period, "end", None), self.noon)
            elif parent_key:
                admittime, hosp_end = None, None
            else:
                admittime, hosp_end = start, end
            for d, flag in ((start, start_d), (end, end_d)):
                if flag:
                    self.issue(it, "Encounter.period", "date_only_time", f"placed at {d}", [sid])
            row: dict[str, Any] = {f.name: None for f in SCHEMAS["stays"]}
            row.update(stay_id=sid, hadm_id=hadm, intime=start, outtime=end, admittime=admittime, dataset="fhir")
            row["subject_id"] = self.int_id(subject_key) if subject_key else None
            row["admission_source"] = self.admission_source(it, adm_enc, e, sid)
            pat = patients.get(subject_key) if subject_key else None
            if subject_key is None:
                self.issue(it, "Encounter.subject", "no_subject", "stay without a patient reference", [sid])
            elif pat is None:
                self.issue(it, "Encounter.subject", "patient_not_found", f"{subject_key} is not in the input", [sid])
            else:
                self.patient_facts(it, pat, row, start, admittime or start, hosp_end, adm_enc, sid)
            if end is None:
                self.issue(it, "Encounter.period.end", "stay_without_outtime", "open stay (no period.end)", [sid])
            stay = _Stay(sid, it.key, subject_key, start, end, row)
            self.stays[it.key] = stay
            if subject_key:
                self.stays_by_subject[subject_key].append(stay)

    def admission_source(self, it: _Item, adm_enc: Any, e: Any, sid: int) -> str | None:
        ec = self.c["encounter"]
        for enc in (e, adm_enc):
            src = getattr(getattr(enc, "hospitalization", None), "admitSource", None)
            codes = [c.code for c in _codings(src) if c.code]
            if not codes:
                continue
            if any(c in ec["emergency_admit_sources"] for c in codes):
                return "emergency_department"
            if any(c in ec["admit_sources"] for c in codes):
                return "inpatient"
            self.issue(it, "hospitalization.admitSource", "invalid_code", f"admit source {codes}", [sid])
            return None
        return None

    def patient_facts(
        self,
        it: _Item,
        pat: Any,
        row: dict[str, Any],
        start: datetime,
        admit: datetime,
        hosp_end: datetime | None,
        adm_enc: Any,
        sid: int,
    ) -> None:
        if pat.gender in self.c["patient"]["genders"]:
            row["sex"] = None if pat.gender == "unknown" else pat.gender
        elif pat.gender is not None:
            self.issue(it, "Patient.gender", "invalid_code", pat.gender, [sid])
        bd = pat.birthDate
        if bd is not None:
            if isinstance(bd, str):  # partial date: YYYY or YYYY-MM -> mid-period, flagged
                parts = bd.split("-")
                bd = date(int(parts[0]), 7, 1) if len(parts) == 1 else date(int(parts[0]), int(parts[1]), 15)
                self.issue(it, "Patient.birthDate", "birth_date_imprecise", f"{pat.birthDate}: age from {bd}", [sid])
            age = round((start.date() - bd).days / 365.25, 1)
            try:
                row["age_years"] = check_plausible("age_years", age)
            except ImplausibleValueError as exc:
                self.issue(it, "Patient.birthDate", "implausible_value", exc.message, [sid])
        death, _, _ = _time(pat.deceasedDateTime, self.noon)
        if death is not None and death >= admit and (hosp_end is None or death <= hosp_end):
            row["deathtime"] = death
        elif death is None:
            disp = getattr(getattr(adm_enc, "hospitalization", None), "dischargeDisposition", None)
            if hosp_end is not None and any(
                c.code in self.c["encounter"]["death_dispositions"] for c in _codings(disp)
            ):
                row["deathtime"] = hosp_end

    # -- observations ---------------------------------------------------------------------------------------------
    def observation(self, it: _Item) -> None:
        o, oc = it.model, self.c["observation"]
        spec_top = self.obs_spec(o.code)
        parts: list[tuple[Any, dict[str, Any] | None, str]] = [(o, spec_top, _first_code(o.code))]
        if spec_top is None and o.component:
            comp = [(c, self.obs_spec(c.code), _first_code(c.code)) for c in o.component]
            if any(s is not None for _, s, _ in comp):
                parts = comp
        is_culture = any(s is not None and s.get("kind") == "culture" for _, s, _ in parts)
        t, date_only, tprob = self.obs_time(o, spec_top or {})
        stays, why = self.attach(self.ref(o.encounter), self.ref(o.subject), t)
        sids: list[Any] = stays or [None]
        used = oc["culture_status_used"] if is_culture else oc["status_used"]
        if not self.status_ok(it, o.status, used, oc["status_excluded"], _first_code(o.code), sids):
            return
        if all(s is None for _, s, _ in parts):
            self.issue(
                it,
                parts[0][2],
                "unknown_code",
                "; ".join(f"{c.system}|{c.code}" for c in _codings(o.code))
                or _short(o.code.model_dump(exclude_none=True) if o.code else None),
                sids,
            )
            return
        if t is None:
            self.issue(it, parts[0][2], tprob or "missing_time", "no usable effective[x]", sids)
            return
        if not stays:
            self.issue(it, parts[0][2], "no_encounter", why)
            return
        if date_only:
            self.issue(it, parts[0][2], "date_only_time", f"placed at {t}", stays)
        if is_culture:
            self.culture(it, o, parts[0][1] or {}, t, date_only, stays)
            return
        method = self.method(it, o, stays)
        for holder, spec, code in parts:
            if spec is None:
                self.issue(it, code, "unknown_code", "component code not mapped", stays)
                continue
            res = self.measure(holder, spec)
            if isinstance(res, FhirIssue):
                self.issue(it, code, res.issue, res.example, stays)
                continue
            value, text, unit = res
            for sid in stays:
                self.rows["observations"].append(
                    {
                        "stay_id": sid,
                        "time": t,
                        "concept": spec["concept"],
                        "value": value,
                        "value_text": text,
                        "unit": unit,
                        "method": method,
                        "source": it.label,
                    }
                )
                if (
                    spec["concept"] == "weight_kg"
                    and value is not None
                    and (sid not in self.weights or t < self.weights[sid][0])
                ):
                    self.weights[sid] = (t, value)

    def obs_spec(self, cc: Any) -> dict[str, Any] | None:
        known = set(concepts()) | set(self.c["local_concepts"]["extra"])
        for c in _codings(cc):
            if c.system == self.sys["loinc"] and c.code in self.c["loinc"]:
                return dict(self.c["loinc"][c.code])
            if c.system == self.sys["concept"] and c.code in known:
                # the local code system defines its values in the concept's canonical unit: a censored text is read
                # in it; a Quantity without a unit is accepted only for dimensionless concepts (pH, points, fraction)
                canon = concepts()[c.code].unit
                spec = {"concept": c.code, "text_unit": canon}
                if canon in self.c["local_concepts"]["dimensionless_units"]:
                    spec["dimensionless_unit"] = canon
                return spec
        return None

    def obs_time(self, o: Any, spec: Mapping[str, Any]) -> tuple[datetime | None, bool, str | None]:
        if o.effectiveDateTime is not None:
            return _time(o.effectiveDateTime, self.noon)
        if o.effectiveInstant is not None:
            return _time(o.effectiveInstant, self.noon)
        p = o.effectivePeriod
        if p is not None:
            s, sd, sp = _time(p.start, self.noon)
            e, ed, ep = _time(p.end, self.noon)
            if s is not None and e is not None and e < s:
                return None, False, "times_out_of_order"
            if spec.get("time") == "end" and e is not None:
                return e, ed, None
            return (s, sd, None) if s is not None else (e, ed, ep if e is None else None)
        return None, False, "missing_time"

    def method(self, it: _Item, o: Any, stays: list[int]) -> str | None:
        if o.method is None:
            return None
        tags = self.c["methods"]["tags"]
        for c in _codings(o.method):
            if c.code and c.code.strip().lower() in tags:
                return str(c.code.strip().lower())
        if o.method.text and o.method.text.strip().lower() in tags:
            return str(o.method.text.strip().lower())
        self.issue(it, "Observation.method", "unknown_method", _first_code(o.method), stays)
        return None

    def unit_for(self, q: Any, spec: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
        """(accepted unit in concepts.toml spelling, source unit, problem)."""
        c = concepts()[spec["concept"]]
        cands = [u for u in ((q.code if q.system in (None, self.sys["ucum"]) else None), q.unit) if u]
        source = q.unit or q.code
        dimless = spec.get("dimensionless_unit")
        if not cands:
            return (normalise_unit(dimless), None, None) if dimless else (None, None, "unit_missing")
        for u in cands:
            if dimless and u in self.c["observation"]["dimensionless_codes"]:
                return normalise_unit(dimless), source, None
            nu = normalise_unit(self.c["ucum"].get(u, u))
            if nu in c.units:
                return nu, source, None
        return None, source, "unit_mismatch"

    def measure(self, h: Any, spec: Mapping[str, Any]) -> tuple[float | None, str | None, str | None] | FhirIssue:
        """(canonical value, value_text, source unit) or the issue."""
        name = spec["concept"]

        def bad(kind: str, ex: str) -> FhirIssue:
            return FhirIssue("", name, kind, ex)

        q = h.valueQuantity
        if q is not None:
            if q.value is None:
                return bad("missing_value", "valueQuantity without a value")
            unit, source, prob = self.unit_for(q, spec)
            if unit is None:
                return bad(
                    prob or "unit_mismatch",
                    f"{_num(q.value)} {source or ''}: {name} accepts {sorted(concepts()[name].units)}",
                )
            if q.comparator is not None and q.comparator not in self.c["observation"]["comparators"]:
                return bad("invalid_code", f"comparator {q.comparator!r}")
            try:
                value = to_canonical(name, float(q.value), unit)
            except UnitError as exc:
                return bad("unit_mismatch", exc.message)
            except ImplausibleValueError as exc:
                return bad("implausible_value", exc.message)
            if q.comparator is not None:
                return None, f"{q.comparator}{_num(q.value)}", source
            return value, None, source
        if getattr(h, "valueInteger", None) is not None:
            dimless = spec.get("dimensionless_unit")
            if not dimless:
                return bad("unit_missing", f"valueInteger {h.valueInteger} has no unit")
            try:
                return to_canonical(name, float(h.valueInteger), dimless), None, None
            except ImplausibleValueError as exc:
                return bad("implausible_value", exc.message)
        if h.valueString is not None:
            m = _CENSORED.match(h.valueString)
            if m is None or "text_unit" not in spec:
                return bad("text_in_numeric_field", f"valueString {h.valueString!r}")
            try:
                to_canonical(name, float(m.group(2)), spec["text_unit"])
            except ImplausibleValueError as exc:
                return bad("implausible_value", exc.message)
            return None, h.valueString.strip(), spec["text_unit"]
        if h.dataAbsentReason is not None:
            return bad("missing_value", f"dataAbsentReason {_first_code(h.dataAbsentReason)}")
        present = [
            k
            for k in (
                "valueCodeableConcept",
                "valueBoolean",
                "valueRange",
                "valueRatio",
                "valuePeriod",
                "valueDateTime",
                "valueTime",
                "valueSampledData",
            )
            if getattr(h, k, None) is not None
        ]
        if present:
            return bad("unsupported_value_type", f"{present[0]} for a numeric concept")
        return bad("missing_value", "no value[x]")

    def culture(
        self, it: _Item, o: Any, spec: Mapping[str, Any], t: datetime, date_only: bool, stays: list[int]
    ) -> None:
        cc = self.c["culture"]
        positive: bool | None = None
        interp = [c.code for i in (o.interpretation or []) for c in _codings(i) if c.code]
        if any(c in cc["positive_interpretations"] for c in interp):
            positive = True
        elif any(c in cc["negative_interpretations"] for c in interp):
            positive = False
        texts: list[str] = []
        if o.valueCodeableConcept is not None:
            codes = [c.code for c in _codings(o.valueCodeableConcept) if c.code]
            texts = [s.lower() for s in _texts(o.valueCodeableConcept)]
            if any(c in cc["negative_codes"] for c in codes):
                positive = False if positive is None else positive
            elif any(c in cc["positive_codes"] for c in codes):
                positive = True if positive is None else positive
            elif positive is None and texts and any(w in s for s in texts for w in cc["negative_words"]):
                positive = False
            elif positive is None and (codes or texts):
                positive = True  # a coded or named organism
        elif o.valueString is not None and positive is None:
            s = o.valueString.lower()
            if any(w in s for w in cc["pending_words"]):
                positive = None
            elif any(w in s for w in cc["negative_words"]):
                positive = False
            else:
                positive = True
        specimen = self.specimen(o) or spec.get("specimen")
        for sid in stays:
            self.rows["cultures"].append(
                {"stay_id": sid, "time": t, "specimen": specimen, "positive": positive, "time_is_date_only": date_only}
            )

    def specimen(self, o: Any) -> str | None:
        ref = o.specimen
        if ref is None:
            return None
        if ref.display:
            return str(ref.display)
        key = self.ref(ref)
        target = self.by_key.get(key) if key else None
        if target is not None and target.rtype == "Specimen" and target.model.type is not None:
            t = _texts(target.model.type)
            return t[-1] if t else _first_code(target.model.type)
        return None

    # -- medications ----------------------------------------------------------------------------------------------
    def med_concept(self, m: Any) -> Any:
        if m.medicationCodeableConcept is not None:
            return m.medicationCodeableConcept
        ref = m.medicationReference
        s = getattr(ref, "reference", None) or ""
        if s.startswith("#"):
            for c in m.contained or []:
                if getattr(c, "id", None) == s[1:] and c.get_resource_type() == "Medication":
                    return c.code
        key = self.ref(ref)
        target = self.by_key.get(key) if key else None
        if target is not None and target.rtype == "Medication":
            return target.model.code
        return None

    def classify_drug(self, cc: Any) -> tuple[str, str] | None:
        mc = self.c["medication"]
        rx = [c.code for c in _codings(cc) if c.system == self.sys["rxnorm"] and c.code]
        text = " ".join(_texts(cc)).lower()
        vp = mc["vasopressors"]
        if not any(w in text for w in vp["excluded_words"]):
            for drug in DRUGS:
                spec = vp[drug]
                if any(c in spec["rxnorm"] for c in rx):
                    return "vasopressor", drug
            for drug in sorted(DRUGS, key=len, reverse=True):
                if any(re.search(rf"\b{re.escape(n)}\b", text) for n in vp[drug]["names"]):
                    return "vasopressor", drug
        ab = mc["antibiotics"]
        shown = _texts(cc)
        for c in rx:
            if c in ab["rxnorm"]:
                return "antibiotic", shown[0] if shown else str(ab["rxnorm"][c])
        if not any(w in text for w in ab["excluded_drug_words"]):
            for n in ab["names"]:
                if n in text:
                    return "antibiotic", shown[0] if shown else n
        return None

    def medication(self, it: _Item) -> None:
        m, mc = it.model, self.c["medication"]
        cc = self.med_concept(m)
        code = _first_code(cc) if cc is not None else "(no medication)"
        p = m.effectivePeriod
        if m.effectiveDateTime is not None:
            start, sd, sprob = _time(m.effectiveDateTime, self.noon)
            end, ed, eprob = _time(None, self.noon)  # no end: (None, False, "missing_time")
        else:
            start, sd, sprob = _time(getattr(p, "start", None), self.noon)
            end, ed, eprob = _time(getattr(p, "end", None), self.noon)
        stays, why = self.attach(self.ref(m.context), self.ref(m.subject), start)
        sids: list[Any] = stays or [None]
        if not self.status_ok(it, m.status, mc["status_used"], mc["status_excluded"], code, sids):
            return
        kind = self.classify_drug(cc) if cc is not None else None
        if kind is None:
            self.issue(
                it,
                code,
                "unknown_code",
                "; ".join(f"{c.system}|{c.code}" for c in _codings(cc))
                or "; ".join(_texts(cc))
                or "no medication code",
                sids,
            )
            return
        if start is None:
            self.issue(it, code, sprob or "missing_time", "no usable effective[x] start", sids)
            return
        if end is not None and end < start:
            self.issue(it, code, "times_out_of_order", f"end {end} before start {start}", sids)
            return
        if not stays:
            self.issue(it, code, "no_encounter", why)
            return
        what, name = kind
        dosage = m.dosage
        if what == "antibiotic":
            route = None
            if dosage is not None and dosage.route is not None:
                rc = [c.code for c in _codings(dosage.route) if c.code]
                rt = _texts(dosage.route)
                route = rt[0] if rt else (rc[0] if rc else None)
                if any(c in mc["antibiotics"]["excluded_route_codes"] for c in rc) or any(
                    w in s.lower().split() for s in rt for w in mc["antibiotics"]["excluded_route_words"]
                ):
                    self.issue(it, code, "route_not_systemic", f"route {route}", stays)
                    return
            for sid in stays:
                self.rows["antibiotics"].append(
                    {"stay_id": sid, "time": start, "name": name, "route": route, "time_is_date_only": sd}
                )
            return
        if end is None:
            self.issue(
                it,
                code,
                "missing_end_time" if eprob != "imprecise_time" else "imprecise_time",
                "an infusion needs effectivePeriod.start and .end",
                stays,
            )
            return
        if end == start:
            self.issue(it, code, "times_out_of_order", f"end {end} equals start", stays)
            return
        if sd or ed:
            self.issue(it, code, "date_only_time", "infusion period given as dates", stays)
        rate = self.rate(dosage)
        if isinstance(rate, str):
            self.issue(it, code, "missing_rate", rate, stays)
            return
        value, unit = rate
        for sid in stays:
            res = self.rate_ug_kg_min(name, value, unit, sid)
            if isinstance(res, FhirIssue):
                self.issue(it, code, res.issue, res.example, [sid])
                continue
            self.rows["infusions"].append(
                {"stay_id": sid, "drug": name, "start": start, "stop": end, "rate_ug_kg_min": res, "source": it.label}
            )

    def rate(self, dosage: Any) -> tuple[float, str] | str:
        if dosage is None:
            return "no dosage"
        q = dosage.rateQuantity
        if q is not None:
            if q.value is None:
                return "rateQuantity without a value"
            unit = (q.code if q.system in (None, self.sys["ucum"]) and q.code else None) or q.unit
            return float(q.value), unit or ""
        r = dosage.rateRatio
        if r is not None and r.numerator is not None and r.numerator.value is not None:
            den = r.denominator
            dv = float(den.value) if den is not None and den.value is not None else 1.0
            du = (den.code or den.unit) if den is not None else None
            nu = r.numerator.code or r.numerator.unit
            if not dv or not du or not nu:
                return "rateRatio without units or with a zero denominator"
            return float(r.numerator.value) / dv, f"{nu}/{du}"
        return "no rateQuantity or rateRatio"

    def rate_ug_kg_min(self, drug: str, value: float, unit: str, sid: int) -> float | FhirIssue:
        cname = f"{drug}_ug_kg_min"
        u = normalise_unit(self.c["ucum"].get(unit, unit)).replace("/hr", "/h")
        per_min = self.c["medication"]["rate_without_weight"]
        try:
            if u in concepts()[cname].units:
                return to_canonical(cname, value, u)
            if u in per_min:
                if sid not in self.weights:
                    return FhirIssue(
                        "", drug, "rate_per_min_without_weight", f"{_num(value)} {unit}; stay has no body weight"
                    )
                return to_canonical(cname, value * float(per_min[u]) / self.weights[sid][1], "ug/kg/min")
        except ImplausibleValueError as exc:
            return FhirIssue("", drug, "implausible_value", exc.message)
        except UnitError as exc:  # pragma: no cover - guarded above
            return FhirIssue("", drug, "unit_mismatch", exc.message)
        return FhirIssue(
            "",
            drug,
            "unit_mismatch",
            f"{_num(value)} {unit}: expected one of {sorted(concepts()[cname].units)} or {sorted(per_min)}",
        )

    # -- procedures and conditions --------------------------------------------------------------------------------
    def procedure(self, it: _Item) -> None:
        p, pc = it.model, self.c["procedure"]
        code = _first_code(p.code)
        if p.performedPeriod is not None:
            start, sd, sprob = _time(p.performedPeriod.start, self.noon)
            end, ed, eprob = _time(p.performedPeriod.end, self.noon)
        else:
            start, sd, sprob = _time(p.performedDateTime, self.noon)
            end, ed, eprob = _time(None, self.noon)  # no end: (None, False, "missing_time")
        stays, why = self.attach(self.ref(p.encounter), self.ref(p.subject), start)
        sids: list[Any] = stays or [None]
        if not self.status_ok(it, p.status, pc["status_used"], pc["status_excluded"], code, sids):
            return
        kind = next(
            (
                pc["ventilation"][c.code]
                for c in _codings(p.code)
                if c.system == self.sys["snomed"] and c.code in pc["ventilation"]
            ),
            None,
        )
        if kind is None:
            self.issue(
                it, code, "unknown_code", "; ".join(f"{c.system}|{c.code}" for c in _codings(p.code)) or "no code", sids
            )
            return
        if start is None:
            self.issue(it, code, sprob or "missing_time", "no usable performedPeriod.start", sids)
            return
        if end is not None and end < start:
            self.issue(it, code, "times_out_of_order", f"end {end} before start {start}", sids)
            return
        if not stays:
            self.issue(it, code, "no_encounter", why)
            return
        if end is None:
            self.issue(
                it,
                code,
                "missing_end_time" if eprob != "imprecise_time" else "imprecise_time",
                "ventilation needs performedPeriod.start and .end",
                stays,
            )
            return
        if sd or ed:
            self.issue(it, code, "date_only_time", "ventilation period given as dates", stays)
        for sid in stays:
            self.rows["ventilation"].append({"stay_id": sid, "start": start, "stop": end, "kind": kind})

    def condition(self, it: _Item) -> None:
        c, cc = it.model, self.c["condition"]
        t = None
        for v in (c.onsetDateTime, c.recordedDate):
            t, _, _ = _time(v, self.noon)
            if t is not None:
                break
        stays, why = self.attach(self.ref(c.encounter), self.ref(c.subject), t)
        sids: list[Any] = stays or [None]
        code = _first_code(c.code)
        vs = [x.code for x in _codings(c.verificationStatus) if x.code]
        if vs and not self.status_ok(it, vs[0], cc["verification_used"], cc["verification_excluded"], code, sids):
            return
        found: list[tuple[str, int]] = []
        invalid: list[str] = []
        for x in _codings(c.code):
            version = 10 if x.system in self.sys["icd10"] else 9 if x.system in self.sys["icd9"] else None
            if version is None or not x.code:
                continue
            norm = x.code.strip().upper().replace(".", "")
            if re.fullmatch(cc[f"icd{version}_pattern"], norm):
                if (norm, version) not in found:
                    found.append((norm, version))
            else:
                invalid.append(f"{x.system}|{x.code}")
        if not found:
            kind = "invalid_code" if invalid else "unknown_code"
            self.issue(
                it,
                code,
                kind,
                "; ".join(invalid)
                or "; ".join(f"{x.system}|{x.code}" for x in _codings(c.code))
                or "no ICD-10 / ICD-9-CM coding",
                sids,
            )
            return
        if not stays:
            self.issue(it, code, "no_encounter", why)
            return
        for sid in stays:
            for norm, version in found:
                self.rows["diagnoses"].append({"stay_id": sid, "code": norm, "version": version})

    # -- stays ----------------------------------------------------------------------------------------------------
    def finish_stays(self) -> None:
        with_obs = {r["stay_id"] for r in self.rows["observations"]}
        for key, s in self.stays.items():
            if s.stay_id in self.weights:
                s.row["weight_kg"] = self.weights[s.stay_id][1]
            self.rows["stays"].append(s.row)
            if s.stay_id not in with_obs:
                self.issues.append(
                    FhirIssue(
                        f"fhir:{key}", "stay", "stay_without_observations", "no usable observation attached", s.stay_id
                    )
                )


def _sort_key(row: Mapping[str, Any], cols: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple((row.get(c) is None, row.get(c) if row.get(c) is not None else 0) for c in cols)


_ORDER: dict[str, tuple[str, ...]] = {
    "stays": ("stay_id",),
    "observations": ("stay_id", "time", "concept", "source"),
    "infusions": ("stay_id", "drug", "start", "source"),
    "antibiotics": ("stay_id", "time", "name"),
    "cultures": ("stay_id", "time", "specimen"),
    "ventilation": ("stay_id", "start", "kind"),
    "diagnoses": ("stay_id", "code"),
}


def convert_fhir(
    path_or_bundles: str | os.PathLike[str] | Mapping[str, Any] | Iterable[Any], out_dir: str | os.PathLike[str]
) -> FhirReport:
    """Convert FHIR R4B Bundles into the timeline schema (one Parquet file per table in ``out_dir``).

    Parameters
    ----------
    path_or_bundles : path, dict, fhir.resources model, or iterable of dicts / models
        A ``.json`` file (one Bundle or resource), a ``.ndjson`` file (one resource or Bundle per line), a directory
        of such files, or Bundles already in memory.
    out_dir : path
        Output folder; ``<table>.parquet`` for every table of :data:`~immunoguide.cohort.schema.SCHEMAS`, written
        only after the whole input was converted (each file replaced atomically).

    Returns
    -------
    FhirReport
        Rows per table, every data-quality issue, the id map of hashed ids and the named choices.

    Raises
    ------
    InputError
        Only when the input is not JSON or not FHIR at all (no resource could be read); bad resources never raise.
    """
    codes = load_codes()
    values, load_issues = _load(path_or_bundles)
    conv = _Converter(codes)
    conv.issues.extend(load_issues)
    items: list[_Item] = []
    for v, where in values:
        _flatten(v, where, items, conv.full_urls, conv.issues)
    conv.run(items)
    issues = sorted(
        conv.issues, key=lambda i: (i.stay_id is None, i.stay_id or 0, i.source, i.item, i.issue, i.example)
    )

    out = Path(out_dir)
    tables: dict[str, pa.Table] = {}
    for table, schema in SCHEMAS.items():
        rows = conv.rows[table]
        if table in _ORDER:
            rows = sorted(rows, key=lambda r, c=_ORDER[table]: _sort_key(r, c))  # type: ignore[misc]
        if table == "data_quality":
            rows = [
                {
                    "stay_id": i.stay_id,
                    "source": i.source,
                    "item": i.item,
                    "issue": i.issue,
                    "n": i.n,
                    "example": i.example,
                }
                for i in issues
            ]
        tables[table] = pa.Table.from_pylist(rows, schema=schema)
    out.mkdir(parents=True, exist_ok=True)
    for table, tbl in tables.items():
        write_table(tbl, out / f"{table}.parquet", table)
    return FhirReport(
        dataset="fhir",
        codes_version=str(codes["version"]),
        out_dir=str(out),
        resources_read=len(items),
        rows={t: tbl.num_rows for t, tbl in tables.items()},
        issues=tuple(issues),
        id_map=dict(sorted(conv.id_map.items())),
        choices={
            "fhir_version": codes["fhir_version"],
            "attach_window_pre_stay_h": int(codes["attachment"]["pre_stay_h"]),
            "attach_rule": "encounter reference, else every stay of the subject with time in [intime - 24 h, outtime]",
            "date_only_hour": int(codes["attachment"]["date_only_hour"]),
            "timezone": "date-times converted to UTC and stored naive",
            "stay_id": "numeric Encounter.id as is, else 63-bit SHA-256 hash of 'Encounter/<id>' (see id_map)",
            "admission_source_missing": "NULL (unknown), not inpatient",
            "parent_encounter": "an accepted encounter that other accepted encounters are partOf is the admission",
            "preliminary_results": "used",
            "icd_code_format": "without the dot",
            "rate_without_kg": "divided by the stay's first charted body weight",
            "weight_kg": "first body weight (LOINC 29463-7) of the stay",
            "culture_coded_result": "any coded organism is positive; SNOMED no growth / negative / not detected is not",
        },
    )
