"""HL7 CDS Hooks: discovery and an immune-endotype ``patient-view`` service over FHIR R4B prefetch.

``GET /cds-services`` lists one service, ``immunoguide-patient-view`` (hook ``patient-view``), with the prefetch it
needs. ``POST /cds-services/immunoguide-patient-view`` reads the prefetched FHIR R4B resources, classifies the
immune endotype with each configured protocol's classification, evaluates the protocol's eligibility, computes when
the protocol's window from Sepsis-3 onset to the first dose closes, and returns one card per protocol.

Reading the prefetch (``fhir.resources.R4B``, FHIR 4.3.0; the code maps of ``cohort/sources/fhir_codes.toml``)
------------------------------------------------------------------------------------------------------------
``patient`` (required)
    ``Patient``: ``birthDate`` → age in whole years at the call, ``gender`` male/female → sex.
``observations`` (required)
    A searchset ``Bundle`` of ``Observation``. Codes: LOINC as in ``fhir_codes.toml`` (ferritin 2276-4, platelets,
    bilirubin, creatinine, PaO2, FiO2, MAP, GCS, …) and the local concept system of that file (code = a concept
    of ``criteria/concepts.toml``: ``hla_dr_per_monocyte``, ``anc_per_mm3`` …); the assay method from
    ``Observation.method`` (``quantibrite_abc``); censored values as ``valueQuantity.comparator`` or a
    ``valueString`` such as ``>2000``. Yes/no facts of the screening record (``dnr_order``,
    ``stage_iv_malignancy``, ``covid19`` …) as ``valueBoolean`` with code system :data:`FLAG_SYSTEM`.
    Status, unit and plausibility rules are the FHIR adapter's: an observation that cannot be used is listed on
    the card (*not used*), never silently dropped.
``conditions`` (optional)
    A ``Bundle`` of ``Condition``. ICD-10 / ICD-9-CM codes → infection source with the cohort engine's lists
    (``cohort/infection_sources.toml``: pneumonia → CAP within 48 h of the encounter start, else HAP; bacteremia;
    the E3 sources); U07.1 → COVID-19. **Sepsis-3 onset**: the extension :data:`SEPSIS3_ONSET_EXTENSION`
    (``valueDateTime``) on the Patient, a Condition or the Encounter; otherwise the ``onsetDateTime`` of a sepsis
    Condition (SNOMED CT 91302008 / 76571007 / 10001005, ICD-10 A40, A41, R65.2, ICD-9 995.91, 995.92, 785.52),
    labelled as such; otherwise unknown, and the card says the window cannot be computed.
``encounter`` (optional)
    The current ``Encounter`` (or a Bundle of them): ``hospitalization.admitSource`` 'emd' → admitted through the
    emergency department, another admit source → already hospitalised; ``period.start`` → hospital admission.

SOFA is the 24 h worst over the observations before the call (:func:`immunoguide.rules.hourly.hourly_sofa`, SOFA-1
with its default policies; components without data are imputed as normal and listed). Vasopressor infusions are
not part of the prefetch, so the cardiovascular component uses the MAP only (stated on the card).

Eligibility is evaluated at the call time without consent and without a planned first dose: those criteria
(consent; the window to the first dose) are completed at enrolment, so the card says *eligible* when every other
criterion is met, *not eligible* when one blocks, and otherwise names the criteria that still need data.

A malformed prefetch (not FHIR R4B, a resource that fails validation, a resource of another patient) is refused
with 422 and an ``IG-E1xx`` error naming the place (``prefetch.observations.entry[3]…``). An Observation is **not
used** (listed on the card with the reason and error code) when its UCUM code and its unit text name different
units (``IG-E104``), when it has no subject (``IG-E103``: whose value is it?), when it carries both a value and a
``dataAbsentReason`` (``IG-E104``; FHIR invariant obs-6), or when its time is outside the plausible date range
(``IG-E102``, e.g. year 0001).

**Trial alerts.** When the Patient carries an identifier of :data:`STUDY_CODE_SYSTEM` (the trial's study code) and
the calling immunoguide user may see that patient in the trial store, one more card lists the patient's alerts
(stratum switch, reversal, pending assay against the window; :mod:`immunoguide.trial.monitoring`) — never an arm.
An EHR calling with a signed JWT has no trial account (no role, no site), so it gets no trial card.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from immunoguide.cohort.sources.fhir import load_codes
from immunoguide.errors import ConflictingInputError, InputError, MissingInputError
from immunoguide.protocols import Protocol
from immunoguide.rules.eligibility import (
    TIME_POINT_FIELDS,
    EligibilityResult,
    PatientRecord,
    Provenance,
    evaluate_eligibility,
)
from immunoguide.rules.endotype import REASON_CODES, BiomarkerResult, EndotypeResult, classify_endotype
from immunoguide.rules.hourly import hourly_sofa
from immunoguide.rules.timeline import Observation as TimelineObservation
from immunoguide.rules.timeline import PatientTimeline
from immunoguide.service._context import NowDep, StateDep, shipped_protocol
from immunoguide.service.cds_cards import dashboard_link, order_suggestions
from immunoguide.service.cds_security import CdsCallerDep
from immunoguide.service.fhir_client import fetch_missing_prefetch
from immunoguide.service.schemas import CdsRequest, CdsResponse, CdsServices, ErrorBody
from immunoguide.units import check_plausible_time, concepts, normalise_unit, to_canonical

__all__ = [
    "FLAG_SYSTEM",
    "SEPSIS3_ONSET_EXTENSION",
    "SERVICE_ID",
    "STUDY_CODE_SYSTEM",
    "discovery",
    "patient_view_cards",
    "router",
]

SERVICE_ID = "immunoguide-patient-view"
#: Extension (valueDateTime) carrying the Sepsis-3 onset time on Patient, Condition or Encounter.
SEPSIS3_ONSET_EXTENSION = "https://immunoguide.example/fhir/StructureDefinition/sepsis3-onset"
#: Code system of yes/no screening facts sent as Observation.valueBoolean (code = PatientRecord field or protocol flag).
FLAG_SYSTEM = "https://immunoguide.example/fhir/CodeSystem/eligibility-flag"
#: Identifier system of the trial's study code on Patient.identifier (links the EHR patient to the trial store).
STUDY_CODE_SYSTEM = "https://immunoguide.example/fhir/NamingSystem/study-code"

_SEPSIS_SNOMED = ("91302008", "76571007", "10001005")
_SEPSIS_ICD10 = ("A40", "A41", "R652")
_SEPSIS_ICD9 = ("99591", "99592", "78552")
_COVID_ICD10 = ("U071",)
_CENSORED = re.compile(r"^\s*(<=|>=|<|>|≤|≥|greater than|less than)\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.IGNORECASE)
_SOFA_WINDOW = timedelta(hours=24)
_DISPLAY = {"hla_dr": ("mHLA-DR", "monocyte HLA-DR"), "ferritin": ("ferritin", "ferritin"),
            "supar": ("suPAR", "suPAR")}
_METHOD_DISPLAY = {"quantibrite_abc": "QuantiBRITE", "mfi": "MFI"}
_SYMBOL = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}
_NEGATE = {"<=": ">", "<": "≥", ">=": "<", ">": "≤"}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Not authenticated (IG-E418)."},
    422: {"model": ErrorBody, "description": "Malformed hook call or prefetch (IG-E1xx)."},
    502: {"model": ErrorBody, "description": "The EHR's FHIR server or JWK Set failed (IG-E601)."},
}

router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])


# ---------------------------------------------------------------------------------------------------------------
# discovery


@cache
def _infection_sources() -> Mapping[str, Any]:
    text = resources.files("immunoguide.cohort").joinpath("infection_sources.toml").read_text("utf-8")
    return tomllib.loads(text)


def discovery() -> dict[str, Any]:
    """The CDS Hooks discovery document (one ``patient-view`` service and its prefetch templates)."""
    codes = load_codes()
    loinc = ",".join(f"{codes['systems']['loinc']}|{c}" for c, s in codes["loinc"].items() if s.get("kind") != "culture")
    local = ",".join(f"{codes['systems']['concept']}|{c}" for c in ("hla_dr_per_monocyte", "anc_per_mm3", "suPAR_ng_per_ml"))
    return {
        "services": [{
            "hook": "patient-view",
            "id": SERVICE_ID,
            "title": "immunoguide: immune endotype and trial eligibility",
            "description": "Classifies the immune endotype (MALS, immunoparalysis …) from ferritin and monocyte HLA-DR "
                           "with the trial protocol's rules, evaluates the protocol's eligibility and says when the "
                           "screening window closes; when the results cannot decide, says what to measure next.",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "observations": f"Observation?patient={{{{context.patientId}}}}&code={loinc},{local}",
                "flags": f"Observation?patient={{{{context.patientId}}}}&code={FLAG_SYSTEM}|",
                "conditions": "Condition?patient={{context.patientId}}",
                "encounter": "Encounter?patient={{context.patientId}}&status=in-progress",
            },
            "usageRequirements": "EHRs: sign each call with a JWT (CDS Hooks 2.0; iss and JWK Set registered "
                                 "with the service, aud = this service's URL); send the prefetch, or fhirServer and "
                                 "fhirAuthorization and the service queries what is missing. Other clients: a bearer "
                                 "token of an immunoguide user (POST /auth/token) and the prefetch.",
        }]
    }


@router.get("", summary="CDS Hooks discovery", response_model=CdsServices)
async def cds_discovery() -> dict[str, Any]:
    """The CDS services offered (no authentication, as the CDS Hooks specification expects)."""
    return discovery()


# ---------------------------------------------------------------------------------------------------------------
# prefetch parsing


@dataclass
class _Note:
    source: str
    issue: str

    def md(self) -> str:
        return f"{_md(self.source)}: {_md(self.issue)}"


@dataclass
class _Facts:
    """What the prefetch says about the patient, with provenance."""

    patient_id: str | None
    biomarkers: list[BiomarkerResult] = field(default_factory=list)
    sofa_obs: list[TimelineObservation] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    onset: datetime | None = None
    onset_source: str | None = None
    admission_time: datetime | None = None
    notes: list[_Note] = field(default_factory=list)
    missing_prefetch: list[str] = field(default_factory=list)

    def set(self, name: str, value: Any, t: datetime | None, source: str) -> None:
        self.record[name] = value
        self.provenance[name] = Provenance(time=t, source=source)


def _validate(rtype: str, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("resourceType"), str):
        raise InputError(expected=f"a FHIR R4B {rtype} resource (a JSON object with resourceType)", got=_short(raw),
                         where=where, todo="send the prefetch as FHIR R4B JSON", field=where)
    if raw["resourceType"] != rtype:
        raise InputError(expected=f"resourceType {rtype}", got=raw["resourceType"], where=where,
                         todo=f"send {rtype} resources here", field=f"{where}.resourceType")
    try:
        return get_fhir_model_class(rtype).model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
        at = f"{where}.{loc}" if loc else where
        raise InputError(expected=f"a valid FHIR R4B {rtype}: {str(err.get('msg', ''))[:200]}", got=_short(err.get("input")),
                         where=at, todo="fix the resource (FHIR R4B, 4.3.0)", field=at) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(expected=f"a valid FHIR R4B {rtype}", got=str(exc)[:200], where=where,
                         todo="fix the resource (FHIR R4B, 4.3.0)", field=where) from None


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 160 else s[:157] + "..."


def _entries(raw: Any, rtype: str, where: str, *, single_ok: bool = False) -> list[tuple[Any, str]]:
    """The ``rtype`` resources of a searchset Bundle (validated), with their places; other types are skipped."""
    if isinstance(raw, Mapping) and raw.get("resourceType") == rtype and single_ok:
        return [(_validate(rtype, raw, where), where)]
    if not isinstance(raw, Mapping) or raw.get("resourceType") != "Bundle":
        raise InputError(expected=f"a FHIR R4B Bundle of {rtype} (searchset)", got=_short(raw)[:80], where=where,
                         todo=f"send the search result of the prefetch template (a Bundle of {rtype})", field=where)
    shell = {k: v for k, v in raw.items() if k != "entry"}
    _validate("Bundle", shell, where)
    entries = raw.get("entry") or []
    if not isinstance(entries, list):
        raise InputError(expected="Bundle.entry as a list", got=_short(entries)[:80], where=f"{where}.entry",
                         todo="send the entries as a JSON array", field=f"{where}.entry")
    out = []
    for i, e in enumerate(entries):
        w = f"{where}.entry[{i}]"
        res = e.get("resource") if isinstance(e, Mapping) else None
        if not isinstance(res, Mapping):
            raise InputError(expected="a Bundle entry with a resource", got=_short(e)[:80], where=w,
                             todo="every entry carries a resource", field=w)
        if res.get("resourceType") == "OperationOutcome":
            continue  # searchset outcome entries (warnings from the FHIR server)
        out.append((_validate(rtype, res, f"{w}.resource"), f"{w}.resource"))
    return out


def _absent(raw: Any) -> bool:
    return raw is None or (isinstance(raw, Mapping) and raw.get("resourceType") == "OperationOutcome")


def _label(res: Any) -> str:
    return f"{res.get_resource_type()}/{res.id}" if getattr(res, "id", None) else res.get_resource_type()


def _codings(cc: Any) -> list[Any]:
    return list(getattr(cc, "coding", None) or []) if cc is not None else []


def _aware(v: Any) -> tuple[datetime | None, str | None]:
    """(UTC datetime, problem) of a FHIR dateTime/instant value (implausible dates, e.g. year 0001, refused)."""
    if v is None:
        return None, "no time"
    if isinstance(v, datetime):
        if v.tzinfo is None:
            return None, "time without a UTC offset"
        try:
            check_plausible_time(v, field="time")
        except InputError as exc:
            return None, f"implausible time {v.isoformat()} ({exc.code}: {exc.expected})"
        return v.astimezone(UTC), None
    if isinstance(v, date):
        return None, "date without a time of day"
    return None, "imprecise time"


def _subject_ok(res: Any, patient_id: str | None, where: str) -> None:
    ref = getattr(getattr(res, "subject", None), "reference", None)
    if patient_id and ref and not ref.rstrip("/").endswith(f"Patient/{patient_id}"):
        raise ConflictingInputError(expected=f"resources of Patient/{patient_id}", got=ref, where=where,
                                    todo="send only the current patient's resources", field=f"{where}.subject")


def _onset_extension(res: Any) -> datetime | None:
    for ext in getattr(res, "extension", None) or []:
        if ext.url == SEPSIS3_ONSET_EXTENSION:
            t, problem = _aware(ext.valueDateTime)
            if t is None:
                raise InputError(expected=f"{SEPSIS3_ONSET_EXTENSION} with a valueDateTime with offset",
                                 got=str(ext.valueDateTime), where=_label(res), todo="send the onset date-time",
                                 field="extension")
            return t
    return None


class _Reader:
    """Turns validated FHIR resources into :class:`_Facts`."""

    def __init__(self, now: datetime, protocol_flags: Iterable[str], protocols: Sequence[Protocol] = ()) -> None:
        self.now = now
        self.codes = load_codes()
        self.sys = self.codes["systems"]
        self.typed_flags = PatientRecord.flag_fields()
        self.protocol_flags = set(protocol_flags)
        # assay-method vocabulary of the protocols: aliases (case-insensitive) and UCUM codes per concept
        self.method_aliases: dict[str, str] = {}
        self.method_ucum: dict[tuple[str, str], str] = {}
        for proto in protocols:
            for tag, m in proto.vocabularies.methods.items():
                self.method_aliases.update({a.strip().lower(): tag for a in m.aliases})
                self.method_ucum.update({(conc, code): m.unit for conc in m.concepts for code in m.ucum})

    # -- patient ----------------------------------------------------------------------------------------------
    def patient(self, p: Any, facts: _Facts) -> None:
        src = _label(p)
        if p.birthDate is not None:
            b = p.birthDate
            if isinstance(b, date) and not isinstance(b, datetime):
                n = self.now.date()
                age = n.year - b.year - ((n.month, n.day) < (b.month, b.day))
                facts.set("age_years", age, None, f"{src}.birthDate")
            else:  # pragma: no cover - fhir.resources parses birthDate as a date
                facts.notes.append(_Note(f"{src}.birthDate", "not a full date: age not computed"))
        if p.gender in ("male", "female"):
            facts.set("sex", p.gender, None, f"{src}.gender")
        t = _onset_extension(p)
        if t is not None:
            facts.onset, facts.onset_source = t, f"{src} (extension sepsis3-onset)"

    # -- observations -----------------------------------------------------------------------------------------
    def _spec(self, cc: Any) -> tuple[str, dict[str, Any]] | None:
        known = set(concepts())
        for c in _codings(cc):
            if c.system == self.sys["loinc"] and c.code in self.codes["loinc"]:
                spec = dict(self.codes["loinc"][c.code])
                if spec.get("kind") == "culture":
                    return None
                return "concept", spec
            if c.system == self.sys["concept"] and c.code in known:
                canon = concepts()[c.code].unit
                spec = {"concept": c.code, "text_unit": canon}
                if canon in self.codes["local_concepts"]["dimensionless_units"]:
                    spec["dimensionless_unit"] = canon
                return "concept", spec
            if c.system == FLAG_SYSTEM and c.code:
                return "flag", {"flag": c.code}
        return None

    def _time(self, o: Any, spec: Mapping[str, Any]) -> tuple[datetime | None, str | None]:
        if o.effectiveDateTime is not None:
            return _aware(o.effectiveDateTime)
        if o.effectiveInstant is not None:
            return _aware(o.effectiveInstant)
        if o.effectivePeriod is not None:
            s, sp = _aware(o.effectivePeriod.start)
            e, ep = _aware(o.effectivePeriod.end)
            if spec.get("time") == "end" and e is not None:
                return e, None
            return (s, None) if s is not None else (e, ep)
        return None, "no effective time"

    def _method(self, o: Any) -> tuple[str | None, str | None]:
        if o.method is None:
            return None, None
        tags = self.codes["methods"]["tags"]
        for text in [*(c.code for c in _codings(o.method)), *(c.display for c in _codings(o.method)), o.method.text]:
            key = text.strip().lower() if text else ""
            if key in tags:
                return key, None
            if key in self.method_aliases:  # the protocol's other spelling (QuantiBRITE) → its tag
                return self.method_aliases[key], None
        return None, f"unknown assay method {[c.code for c in _codings(o.method)] or o.method.text!r}"

    def _one_unit(self, u: str, c: Any, dimless: str | None, concept_name: str) -> str | None:
        if dimless and u in self.codes["observation"]["dimensionless_codes"]:
            return normalise_unit(dimless)
        if (concept_name, u) in self.method_ucum:  # UCUM code declared by an assay method ({AB}/{cell})
            return normalise_unit(self.method_ucum[(concept_name, u)])
        nu = normalise_unit(self.codes["ucum"].get(u, u))
        return nu if nu in c.units else None

    def _unit(self, q: Any, spec: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(accepted unit, problem): the UCUM code and the unit text must agree when both are given."""
        c = concepts()[spec["concept"]]
        code = q.code if q.system in (None, self.sys["ucum"]) else None
        dimless = spec.get("dimensionless_unit")
        if not code and not q.unit:
            return (normalise_unit(dimless), None) if dimless else (None, "no unit")
        by_code = self._one_unit(code, c, dimless, spec["concept"]) if code else None
        by_text = self._one_unit(q.unit, c, dimless, spec["concept"]) if q.unit else None
        if by_code is not None and by_text is not None and c.exact.get(by_code) != c.exact.get(by_text):
            return None, (f"IG-E104: UCUM code {code!r} and unit text {q.unit!r} name different units "
                          f"({by_code} vs {by_text}); which one is right cannot be told")
        unit = by_code or by_text
        if unit is None:
            return None, f"unit {q.unit or code!r} not accepted for {spec['concept']} ({sorted(c.units)})"
        return unit, None

    def _raw_value(self, o: Any, spec: Mapping[str, Any]) -> tuple[float | str | None, str | None, str | None]:
        """(raw value or censored text, unit, problem)."""
        q = o.valueQuantity
        has_value = any(getattr(o, f"value{k}", None) is not None for k in ("Quantity", "Integer", "String", "Boolean",
                                                                              "CodeableConcept"))
        if has_value and o.dataAbsentReason is not None:
            return None, None, ("IG-E104: both a value and a dataAbsentReason (FHIR obs-6 allows a dataAbsentReason "
                                "only without a value)")
        if q is not None:
            if q.value is None:
                return None, None, "valueQuantity without a value"
            unit, uproblem = self._unit(q, spec)
            if unit is None:
                return None, None, uproblem
            if q.comparator is not None:
                if q.comparator not in self.codes["observation"]["comparators"]:
                    return None, None, f"comparator {q.comparator!r}"
                return f"{q.comparator}{float(q.value):g}", unit, None
            return float(q.value), unit, None
        if o.valueInteger is not None:
            dimless = spec.get("dimensionless_unit")
            if not dimless:
                return None, None, "valueInteger without a unit"
            return float(o.valueInteger), normalise_unit(dimless), None
        if o.valueString is not None:
            if _CENSORED.match(o.valueString) is None or "text_unit" not in spec:
                return None, None, f"text {o.valueString!r} is not a (censored) number"
            return o.valueString.strip(), spec["text_unit"], None
        if o.dataAbsentReason is not None:
            return None, None, "data absent"
        return None, None, "no numeric value"

    def observation(self, o: Any, where: str, facts: _Facts, biomarker_concepts: set[str]) -> None:
        src = _label(o)
        _subject_ok(o, facts.patient_id, where)
        if getattr(getattr(o, "subject", None), "reference", None) is None:
            facts.notes.append(_Note(src, "IG-E103: no subject (whose observation is it?): not used"))
            return
        found = self._spec(o.code)
        if found is None:
            codes = "; ".join(f"{c.system}|{c.code}" for c in _codings(o.code)) or "no code"
            facts.notes.append(_Note(src, f"code not used ({codes})"))
            return
        kind, spec = found
        oc = self.codes["observation"]
        if o.status not in oc["status_used"]:
            facts.notes.append(_Note(src, f"status {o.status}: not used"))
            return
        t, problem = self._time(o, spec)
        if t is None:
            facts.notes.append(_Note(src, f"{problem}: not used"))
            return
        if t > self.now:
            facts.notes.append(_Note(src, f"time {t.isoformat()} after the call time: not used"))
            return
        if kind == "flag":
            name = spec["flag"]
            if o.valueBoolean is None:
                facts.notes.append(_Note(src, f"flag {name} without valueBoolean: not used"))
            elif name in self.typed_flags or name in self.protocol_flags:
                prev = facts.provenance.get(name)
                if prev is None or (prev.time is not None and t >= prev.time):
                    if name in self.typed_flags:
                        facts.set(name, bool(o.valueBoolean), t, src)
                    else:
                        facts.flags[name] = bool(o.valueBoolean)
                        facts.provenance[name] = Provenance(time=t, source=src)
            else:
                facts.notes.append(_Note(src, f"flag {name} is not a screening fact of this protocol: not used"))
            return
        name = spec["concept"]
        raw, unit, problem = self._raw_value(o, spec)
        if problem is not None or raw is None or unit is None:
            facts.notes.append(_Note(src, f"{name}: {problem}: not used"))
            return
        if name in biomarker_concepts:
            method, mproblem = self._method(o)
            if mproblem:
                facts.notes.append(_Note(src, f"{mproblem}: method treated as not stated"))
            result_t, _ = _aware(o.issued) if o.issued is not None else (None, None)
            try:
                facts.biomarkers.append(BiomarkerResult.measured(
                    name, raw, unit, method=method, sample_time=t,
                    result_time=result_t if result_t is not None and result_t >= t else None, source=src,
                    where=src))
            except InputError as exc:
                facts.notes.append(_Note(src, f"{name}: {exc.expected}; got {exc.got!r}: not used"))
            return
        if isinstance(raw, str):
            facts.notes.append(_Note(src, f"{name}: censored value {raw!r} cannot be scored: not used"))
            return
        if name in ("anc_per_mm3", "weight_kg"):
            try:
                v = to_canonical(name, raw, unit, where=src)
            except InputError as exc:
                facts.notes.append(_Note(src, f"{name}: {exc.expected}; got {exc.got!r}: not used"))
                return
            prev = facts.provenance.get(name)
            if prev is None or (prev.time is not None and t >= prev.time):
                facts.set(name, v, t, src)
            return
        if t < self.now - _SOFA_WINDOW:
            return  # older than the SOFA window: not needed
        try:
            facts.sofa_obs.append(TimelineObservation.in_unit(time=t, concept=name, value=raw, unit=unit))
        except InputError as exc:
            facts.notes.append(_Note(src, f"{name}: {exc.expected}; got {exc.got!r}: not used"))

    # -- conditions and encounter -------------------------------------------------------------------------------
    def conditions(self, conds: Sequence[tuple[Any, str]], facts: _Facts) -> None:
        cfg = _infection_sources()
        excluded_status = set(self.codes["condition"]["verification_excluded"])
        pneu: list[tuple[datetime | None, str]] = []
        bact: list[str] = []
        excl: dict[str, str] = {}
        sepsis: list[tuple[datetime, str]] = []
        for c, where in conds:
            _subject_ok(c, facts.patient_id, where)
            src = _label(c)
            vs = [x.code for x in _codings(c.verificationStatus) if x.code]
            if vs and vs[0] in excluded_status:
                facts.notes.append(_Note(src, f"verification status {vs[0]}: not used"))
                continue
            ext = _onset_extension(c)
            if ext is not None and (facts.onset is None or facts.onset_source is None or "extension" not in facts.onset_source):
                facts.onset, facts.onset_source = ext, f"{src} (extension sepsis3-onset)"
            onset, _ = _aware(c.onsetDateTime)
            icd: list[tuple[str, int]] = []
            snomed: list[str] = []
            for x in _codings(c.code):
                if not x.code:
                    continue
                code = x.code.strip().upper().replace(".", "")
                if x.system in self.sys["icd10"]:
                    icd.append((code, 10))
                elif x.system in self.sys["icd9"]:
                    icd.append((code, 9))
                elif x.system == self.sys["snomed"]:
                    snomed.append(x.code.strip())
            if not icd and not snomed:
                facts.notes.append(_Note(src, "no ICD-10, ICD-9-CM or SNOMED CT code: not used"))
                continue
            is_sepsis = any(s in _SEPSIS_SNOMED for s in snomed) or any(
                code.startswith(_SEPSIS_ICD10) if v == 10 else code.startswith(_SEPSIS_ICD9) for code, v in icd)
            if is_sepsis:
                if onset is not None:
                    sepsis.append((onset, src))
                else:
                    facts.notes.append(_Note(src, "sepsis condition without onsetDateTime (with offset): no onset"))
            for code, v in icd:
                if v == 10 and code.startswith(_COVID_ICD10):
                    facts.set("covid19", True, onset, src)
                if code.startswith(tuple(cfg["pneumonia"][f"icd{v}"])):
                    pneu.append((onset, src))
                if code.startswith(tuple(cfg["bacteremia"][f"icd{v}"])):
                    bact.append(src)
                for key, prefixes in cfg["excluded_sources"].items():
                    if key.endswith(f"_icd{v}") and code.startswith(tuple(prefixes)):
                        excl[key.rsplit("_", 1)[0]] = src
        if sepsis and (facts.onset is None):
            t, src = min(sepsis)
            facts.onset, facts.onset_source = t, f"{src} (onset of the sepsis condition, taken as Sepsis-3 onset)"
        self._infection_source(pneu, bact, excl, facts)

    def _infection_source(self, pneu: list[tuple[datetime | None, str]], bact: list[str], excl: dict[str, str],
                          facts: _Facts) -> None:
        names = {"urinary": "acute_pyelonephritis", "abdominal": "intra_abdominal", "meningitis": "meningitis",
                 "skin": "skin"}
        if excl:
            key, src = sorted(excl.items())[0]
            facts.set("infection_source", names.get(key, key), None, src)
            return
        if pneu:
            onset, src = pneu[0]
            hosp = float(_infection_sources()["hospital_acquired_after_h"])
            if onset is None or facts.admission_time is None:
                facts.notes.append(_Note(src, "pneumonia: community- or hospital-acquired cannot be told without the "
                                              "condition's onset and the encounter's start: infection source unknown"))
                return
            kind = "HAP" if onset > facts.admission_time + timedelta(hours=hosp) else "CAP"
            facts.set("infection_source", kind, onset, f"{src} (pneumonia; onset vs encounter start, {hosp:g} h)")
            return
        if bact:
            facts.set("infection_source", "primary_BSI", None, f"{bact[0]} (bacteremia code)")

    def encounter(self, enc: Sequence[tuple[Any, str]], facts: _Facts) -> None:
        ec = self.codes["encounter"]
        for e, where in enc:
            _subject_ok(e, facts.patient_id, where)
            src = _label(e)
            ext = _onset_extension(e)
            if ext is not None and facts.onset is None:
                facts.onset, facts.onset_source = ext, f"{src} (extension sepsis3-onset)"
            if e.period is not None and e.period.start is not None:
                t, _ = _aware(e.period.start)
                if t is not None and (facts.admission_time is None or t < facts.admission_time):
                    facts.admission_time = t
                    facts.set("hospital_admission_time", t, t, f"{src}.period.start")
            adm = getattr(e.hospitalization, "admitSource", None) if e.hospitalization is not None else None
            codes = [c.code for c in _codings(adm) if c.code]
            if codes:
                value = "emergency_department" if codes[0] in ec["emergency_admit_sources"] else "hospitalised"
                facts.set("admission_source", value, None, f"{src}.hospitalization.admitSource ({codes[0]})")


def _read_prefetch(req: CdsRequest, now: datetime, protocols: Sequence[Protocol]) -> _Facts:
    if req.hook != "patient-view":
        raise InputError(expected="hook patient-view", got=req.hook, where="hook",
                         todo=f"call {SERVICE_ID} from the patient-view hook", field="hook")
    pf = req.prefetch or {}
    for key in ("patient", "observations"):
        if _absent(pf.get(key)):
            raise MissingInputError(expected=f"prefetch.{key} (see GET /cds-services)", got=None,
                                    where=f"prefetch.{key}",
                                    todo="send the prefetch, or (as a registered EHR with a signed JWT) "
                                         "fhirServer and fhirAuthorization so that the service can query it",
                                    field=f"prefetch.{key}")
    context_pid = req.context.get("patientId")
    patient = _validate("Patient", pf["patient"], "prefetch.patient")
    if context_pid is not None and patient.id is not None and str(context_pid) != patient.id:
        raise ConflictingInputError(expected=f"prefetch.patient for context.patientId {context_pid}", got=patient.id,
                                    where="prefetch.patient.id", todo="send the current patient",
                                    field="prefetch.patient.id")
    flags = {f for p in protocols for f in p.vocabularies.flags}
    reader = _Reader(now, flags, protocols)
    facts = _Facts(patient_id=patient.id or (str(context_pid) if context_pid is not None else None))
    reader.patient(patient, facts)
    encounters = [] if _absent(pf.get("encounter")) else _entries(pf["encounter"], "Encounter", "prefetch.encounter",
                                                                   single_ok=True)
    if _absent(pf.get("encounter")):
        facts.missing_prefetch.append("encounter")
    reader.encounter(encounters, facts)
    biomarker_concepts = {c.concept for p in protocols if p.classification for r in p.classification.endotypes
                          for c in r.all_of}
    for key in ("observations", "flags"):
        if key == "flags" and _absent(pf.get(key)):
            continue
        for o, where in _entries(pf[key], "Observation", f"prefetch.{key}"):
            reader.observation(o, where, facts, biomarker_concepts)
    if _absent(pf.get("conditions")):
        facts.missing_prefetch.append("conditions")
    else:
        reader.conditions(_entries(pf["conditions"], "Condition", "prefetch.conditions"), facts)
    if facts.onset is not None:
        facts.set("sepsis3_onset_time", facts.onset, facts.onset, facts.onset_source or "")
    return facts


# ---------------------------------------------------------------------------------------------------------------
# evaluation and cards


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(text: str) -> str:
    """``"3100 AB/c"`` → ``"3,100 AB/c"``; censored or other text unchanged."""
    value, _, unit = text.partition(" ")
    try:
        x = float(value)
    except ValueError:
        return text
    shown = f"{x:,.0f}" if x == int(x) and abs(x) >= 1000 else f"{x:g}"
    return f"{shown} {unit}".strip()


def _display(analyte: str, long: bool = False) -> str:
    d = _DISPLAY.get(analyte.lower())
    return (d[1] if long else d[0]) if d else analyte


def _sofa(facts: _Facts, now: datetime) -> dict[str, Any] | None:
    if not facts.sofa_obs:
        return None
    start = min([o.time for o in facts.sofa_obs] + ([facts.admission_time] if facts.admission_time else []))
    tl = PatientTimeline(stay_id=facts.patient_id or "cds", icu_intime=min(start, now), observations=facts.sofa_obs)
    row = hourly_sofa(tl, start=now, end=now)[-1]
    return {"total": row.total, "components": dict(row.components), "imputed": list(row.imputed_components),
            "criteria": row.criteria, "hour_end": row.hour_end}


def _window(protocol: Protocol, record: Mapping[str, Any]) -> dict[str, Any] | None:
    for c in protocol.inclusion:
        if c.kind == "window_from_anchor" and c.event == "first_dose" and c.hours is not None:
            anchor_field = TIME_POINT_FIELDS.get(str(c.anchor))
            return {"criterion": c.id, "comparator": c.comparator, "hours": float(c.hours), "anchor": c.anchor,
                    "anchor_time": record.get(anchor_field) if anchor_field else None}
    return None


def _workflow_criteria(protocol: Protocol) -> set[str]:
    """Criteria completed at enrolment, not from the EHR: consent, and the window to the first dose."""
    out = set()
    for c in protocol.criteria:
        if (c.kind == "value_in" and c.field == "consent") or (c.kind == "window_from_anchor" and c.event == "first_dose"):
            out.add(c.id)
    return out


def _markers(res: EndotypeResult, spec_rules: Sequence[Any]) -> list[tuple[str, str]]:
    """(analyte, value text) of the results the classification looked at, the more specific analyte first."""
    seen: dict[str, str] = {}
    for c in res.criteria:
        if c.value is not None and c.analyte not in seen:
            seen[c.analyte] = c.value
    uses = {a: sum(1 for r in spec_rules for c in r.all_of if c.analyte == a) for a in seen}
    return sorted(seen.items(), key=lambda kv: (uses[kv[0]], list(seen).index(kv[0])))


def _decided(res: EndotypeResult) -> list[str]:
    """Decided criteria as text (``ferritin 820 ng/mL ≤ 4420``), one per analyte, met ones of possible rules first."""
    out: dict[str, str] = {}
    possible = set(res.possible_endotypes)
    ordered = sorted(res.criteria, key=lambda c: (c.met is not True, c.rule not in possible))
    for c in ordered:
        if c.met is None or c.value is None or c.analyte in out:
            continue
        comp = _SYMBOL[c.comparator] if c.met else _NEGATE[c.comparator]
        out[c.analyte] = f"{_display(c.analyte)} {_num(c.value)} {comp} {c.threshold:g}"
    return list(out.values())


def _next_measurements(res: EndotypeResult, protocol: Protocol) -> dict[str, tuple[str, str]]:
    """What to measure next so that the classification can decide: concept → (short, full sentence)."""
    assert protocol.classification is not None
    crits = [c for r in protocol.classification.endotypes for c in r.all_of]
    by_concept = {c.concept: c for c in crits}
    possible = _possible_text(res.possible_endotypes)
    because = "; ".join(_decided(res))
    why = f"{because} cannot separate {possible}" if because else f"the data leave {possible} possible"
    actions: dict[str, tuple[str, str]] = {}
    for r in res.reasons:
        if r.concept is None or r.concept in actions or r.concept not in by_concept:
            continue
        crit = by_concept[r.concept]
        name, short = _display(crit.analyte, long=True), _display(crit.analyte)
        how = ", ".join([*(_METHOD_DISPLAY.get(m, m) for m in crit.methods), crit.unit])
        if r.code == "missing":
            actions[r.concept] = (f"measure {short} ({how})", f"Measure {name} ({how}): {why}")
        elif r.code == "censored_undecidable":
            shown = next((_num(c.value) for c in res.criteria if c.analyte == crit.analyte and c.value), "the result")
            cuts = " / ".join(sorted({f"{c.threshold:g}" for c in crits if c.concept == r.concept}))
            actions[r.concept] = (f"measure exact {short} (cut-off {cuts} {crit.unit})",
                                  f"Measure {name} as an exact value ({crit.unit}): the reported {shown} cannot decide "
                                  f"the cut-off {cuts} {crit.unit}; {why}")
        elif r.code in ("assay_method_mismatch", "assay_method_missing"):
            actions[r.concept] = (f"measure {short} by {how}",
                                  f"Measure {name} by {how}: the result's assay method is not comparable; {why}")
        elif r.code == "persistence_not_established":
            actions[r.concept] = (f"repeat {short} tomorrow",
                                  f"Repeat {name} ({how}) on the next day: persistence is required; {why}")
        elif r.code == "conflicting_results":
            actions[r.concept] = (f"repeat {short}",
                                  f"Repeat {name} ({how}): samples taken at the same time disagree; {why}")
        elif r.code in REASON_CODES:
            actions[r.concept] = (f"new {short} sample",
                                  f"Take a new {name} sample ({how}): {REASON_CODES[r.code]}; {why}")
    return actions


def _possible_text(possible: Sequence[str]) -> str:
    return " from ".join(possible) if len(possible) == 2 else f"{', '.join(possible[:-1])} and {possible[-1]}"


def _hours_text(h: float) -> str:
    if h >= 1:
        return f"{int(h)} h"
    return f"{max(int(h * 60), 0)} min"


def _fmt_time(t: datetime | None) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else "—"


@dataclass
class _Verdict:
    text: str
    status: str  # eligible / not_eligible / open
    open_ids: list[str]


def _verdict(el: EligibilityResult, protocol: Protocol) -> _Verdict:
    workflow = _workflow_criteria(protocol)
    if el.eligible is False:
        return _Verdict(f"not eligible for {protocol.label} ({', '.join(el.blocking)})", "not_eligible", [])
    open_ids = [i for i in el.undetermined if i not in workflow]
    if not open_ids:
        return _Verdict(f"eligible for {protocol.label}", "eligible", [])
    return _Verdict(f"{protocol.label} eligibility open: {', '.join(open_ids)} need data", "open", open_ids)


def _card_for(protocol: Protocol, facts: _Facts, now: datetime, hook_instance: str,
              links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = protocol.classification
    assert spec is not None
    res = classify_endotype(spec, facts.biomarkers, anchor_time=facts.onset, at=now, protocol_label=protocol.label)
    sofa = _sofa(facts, now)
    record = dict(facts.record)
    provenance = {k: v for k, v in facts.provenance.items()}
    if sofa is not None and sofa["total"] is not None:
        record["sofa_total"] = sofa["total"]
        provenance["sofa_total"] = Provenance(time=sofa["hour_end"], source="24 h worst SOFA of the observations")
    names = set(protocol.endotype_names) | {spec.otherwise}
    if res.endotype in names:
        record["endotype"] = res.endotype
        provenance["endotype"] = Provenance(time=now, source=f"classification {protocol.label}")
    if facts.flags:
        record["flags"] = dict(facts.flags)
    record["patient_id"] = facts.patient_id
    record["provenance"] = {k: v for k, v in provenance.items() if k in record or k in facts.flags}
    patient = PatientRecord.model_validate(record)
    el = evaluate_eligibility(protocol, patient, at=now)
    verdict = _verdict(el, protocol)
    window = _window(protocol, record)
    markers = _markers(res, spec.endotypes)
    marker_text = ", ".join(f"{_display(a)} {_num(v)}" for a, v in markers)

    hours_left: float | None = None
    closes_at: datetime | None = None
    if window is not None and window["anchor_time"] is not None:
        closes_at = window["anchor_time"] + timedelta(hours=window["hours"])
        hours_left = (closes_at - now).total_seconds() / 3600.0
        window_text = (f"screening window closes in {_hours_text(hours_left)}" if hours_left > 0
                       else f"screening window closed {_hours_text(-hours_left)} ago")
    elif window is not None:
        window_text = "Sepsis-3 onset unknown"
    else:
        window_text = ""

    indeterminate = res.is_indeterminate
    to_measure = _next_measurements(res, protocol) if indeterminate else {}
    actions = list(to_measure.values())
    if indeterminate:
        head = f"Immune state indeterminate ({marker_text})" if marker_text else "Immune state indeterminate"
        summary = f"{head}: " + ("; ".join(a[0] for a in actions) if actions else "see details")
        indicator = "info"
    else:
        name = res.endotype[0].upper() + res.endotype[1:]
        summary = f"{name} ({marker_text}): {verdict.text}" if marker_text else f"{name}: {verdict.text}"
        if window_text and verdict.status != "not_eligible":
            summary += f"; {window_text}"
        indicator = "warning" if res.endotype in protocol.endotype_names and verdict.status != "not_eligible" else "info"
    if len(summary) > 140:
        summary = summary[:139] + "…"

    lines: list[str] = []
    if indeterminate:
        lines.append(f"**Immune state: indeterminate** — the data leave {_possible_text(res.possible_endotypes)} "
                     f"possible ({protocol.label} classification).")
        lines.append("")
        lines.append("**What to measure next:**")
        lines.extend(f"- {_md(a[1])}" for a in actions)
    else:
        lines.append(f"**Immune state: {res.endotype}** ({protocol.label} classification).")
    lines.append("")
    lines.append("| Result | Value | Method | Sampled | Age (h) | Source |")
    lines.append("|---|---|---|---|---|---|")
    shown_inputs = list(res.inputs_used)
    for i in shown_inputs:
        lines.append(f"| {_md(_display(i.analyte))} | {_md(_num(f'{i.value} {i.unit}'))} | {_md(i.method or '—')} | "
                     f"{_fmt_time(i.sample_time)} | {'—' if i.age_h is None else f'{i.age_h:.1f}'} | "
                     f"{_md(i.source or '—')} |")
    if not shown_inputs:
        lines.append("| — | no usable result | | | | |")
    for x in res.excluded:
        lines.append(f"| {_md(x.concept)} | {_md(x.value)} | {_md(x.method or '—')} | {_fmt_time(x.sample_time)} | | "
                     f"not usable: {_md(x.reason.text)} |")
    lines.append("")
    lines.append("Reasons: " + "; ".join(_md(f"{r.code}: {r.text}") for r in res.reasons))
    lines.append("")
    lines.append(f"**Eligibility ({protocol.label}): {verdict.status.replace('_', ' ')}** — consent and the first "
                 "dose are completed at enrolment.")
    lines.append("")
    lines.append("| Criterion | Status | Reason |")
    lines.append("|---|---|---|")
    for c in el.criteria:
        status = c.status if c.applied else f"{c.status} (not applied)"
        lines.append(f"| {c.id} {_md(c.text)} | {status} | {_md(c.reason)} |")
    lines.append("")
    if window is not None:
        if closes_at is not None:
            lines.append(f"**Screening window** ({window['criterion']}): first dose {window['comparator']} "
                         f"{window['hours']:g} h after Sepsis-3 onset {_fmt_time(window['anchor_time'])} "
                         f"({_md(facts.onset_source or '')}): closes {_fmt_time(closes_at)}.")
        else:
            lines.append(f"**Screening window** ({window['criterion']}): Sepsis-3 onset unknown — send the extension "
                         f"{SEPSIS3_ONSET_EXTENSION} or a sepsis Condition with onsetDateTime; the window is not "
                         "computed.")
    if sofa is not None:
        comps = ", ".join(f"{k} {'—' if v is None else v}" for k, v in sofa["components"].items())
        imputed = f"; imputed as normal (no data): {', '.join(sofa['imputed'])}" if sofa["imputed"] else ""
        lines.append(f"**SOFA** (24 h worst to {_fmt_time(sofa['hour_end'])}, {sofa['criteria']}): total "
                     f"{sofa['total']} ({comps}{imputed}); vasopressors are not in the prefetch (cardiovascular "
                     "from MAP only).")
    else:
        lines.append("**SOFA**: no SOFA observation in the last 24 h.")
    if el.warnings:
        lines.append("")
        lines.append("**Protocol settings not known from the sources:** " +
                     " ".join(_md(w.to_dict().get("warning") or w.to_dict().get("text") or w.setting) for w in el.warnings))
    if facts.missing_prefetch:
        lines.append("")
        lines.append(f"Prefetch not sent: {', '.join(facts.missing_prefetch)}.")
    if facts.notes:
        lines.append("")
        lines.append("**Not used from the prefetch:**")
        lines.extend(f"- {n.md()}" for n in facts.notes)
    suggestions = order_suggestions(to_measure, patient_id=facts.patient_id, hook_instance=hook_instance,
                                    reasons={c: full for c, (_, full) in to_measure.items()})
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"immunoguide:{hook_instance}:{protocol.label}")),
        "summary": summary,
        "detail": "\n".join(lines),
        "indicator": indicator,
        "source": {"label": f"immunoguide {protocol.label}"},
        "links": links or None,
        "suggestions": suggestions or None,
        "selectionBehavior": "any" if suggestions else None,
        "extension": {
            "protocol": protocol.label,
            "endotype": res.endotype,
            "possible_endotypes": list(res.possible_endotypes),
            "eligibility": verdict.status,
            "blocking": list(el.blocking),
            "open_criteria": verdict.open_ids,
            "sepsis3_onset": _fmt_time(facts.onset) if facts.onset else None,
            "window_closes_at": _fmt_time(closes_at) if closes_at else None,
            "hours_left": None if hours_left is None else round(hours_left, 2),
            "measure_next": [a[1] for a in actions],
            "sofa_total": None if sofa is None else sofa["total"],
        },
    }
    return card


def patient_view_cards(req: CdsRequest, *, now: datetime, protocols: Sequence[str],
                       service_url: str | None = None) -> dict[str, Any]:
    """The CDS Hooks response for one ``patient-view`` call (one card per protocol).

    With ``service_url`` (the service's public URL, known from an EHR configuration) each card links to the
    dashboard as a SMART app (:func:`immunoguide.service.cds_cards.dashboard_link`).

    Raises InputError (malformed call or prefetch), MissingInputError (prefetch not sent) or
    ConflictingInputError (resources of another patient).
    """
    loaded = [shipped_protocol(p) for p in protocols]
    usable = [p for p in loaded if p.classification is not None]
    facts = _read_prefetch(req, now, usable)
    links = ([dashboard_link(service_url, (req.prefetch or {}).get("patient"), facts.patient_id)]
             if service_url else None)
    try:
        return {"cards": [_card_for(p, facts, now, req.hookInstance, links) for p in usable]}
    except ValidationError as exc:  # pragma: no cover - PatientRecord built from checked values
        err = exc.errors()[0]
        raise InputError(expected=str(err["msg"]), got=err.get("input"), where="prefetch (screening record)",
                         todo="check the prefetched values") from None


def study_code_of(req: CdsRequest) -> str | None:
    """The trial study code on ``prefetch.patient`` (identifier of :data:`STUDY_CODE_SYSTEM`), if any."""
    patient = (req.prefetch or {}).get("patient")
    if not isinstance(patient, Mapping):
        return None
    for ident in patient.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == STUDY_CODE_SYSTEM and isinstance(ident.get("value"), str):
            return ident["value"][:64]
    return None


def trial_alert_card(code: str, alerts: Sequence[Mapping[str, Any]], hook_instance: str) -> dict[str, Any]:
    """A card with the trial's alerts for the patient (most severe first; no arm)."""
    levels = [a["level"] for a in alerts]
    indicator = "critical" if "critical" in levels else "warning" if "warning" in levels else "info"
    head = {a["code"] for a in alerts if a["level"] != "info"}
    summary = (f"Trial {code}: " + ", ".join(sorted(x.replace("_", " ") for x in head)) if head
               else f"Trial {code}: {len(alerts)} informational alert(s)")
    lines = [f"**Trial alerts for {code}** (immunoguide trial store):", ""]
    lines += [f"- **{a['level']}** — {_md(a['text'])}" for a in alerts]
    return {"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"immunoguide:{hook_instance}:trial:{code}")),
            "summary": summary[:139] + ("…" if len(summary) > 139 else ""), "detail": "\n".join(lines),
            "indicator": indicator, "source": {"label": "immunoguide trial monitoring"},
            "extension": {"study_code": code, "alerts": [dict(a) for a in alerts]}}


@router.post(f"/{SERVICE_ID}", summary="patient-view: immune endotype and eligibility cards",
             response_model=CdsResponse, response_model_exclude_none=True, responses=_ERRORS)
async def cds_patient_view(body: CdsRequest, st: StateDep, caller: CdsCallerDep, now: NowDep) -> dict[str, Any]:
    """Cards for the patient in view: endotype with its evidence and eligibility with the screening window, or an
    indeterminate card that says what to measure next (with order suggestions); plus the trial's alerts for a patient
    in the trial store (Patient.identifier of the study-code system) whom the calling user may see.

    Callers: an EHR with a signed JWT (CDS Hooks 2.0) or an immunoguide user's bearer token. Prefetch keys the call
    lacks are queried from ``fhirServer`` when the calling EHR is configured for it. Trial alerts go only to an
    immunoguide user (their trial role and site decide what they may see); an EHR caller has no trial account and
    gets none."""
    ehr = st.settings.ehr
    got = await fetch_missing_prefetch(body.prefetch, discovery()["services"][0]["prefetch"], context=body.context,
                                       fhir_server=body.fhirServer, fhir_authorization=body.fhirAuthorization,
                                       caller=caller)
    if got.fetched:
        body = body.model_copy(update={"prefetch": got.prefetch})
    out = patient_view_cards(body, now=now, protocols=st.settings.cds_protocols,
                             service_url=ehr.service_url if ehr is not None else None)
    if got.fetched:
        for card in out["cards"]:
            card["detail"] += f"\n\nQueried from the EHR's FHIR server: {', '.join(got.fetched)}."
            card["extension"]["fetched_from_fhir_server"] = got.fetched
    code = study_code_of(body)
    if code is not None and caller.user is not None:
        from immunoguide.errors import TrialError
        from immunoguide.trial.monitoring import patient_alerts

        actor = caller.user.actor
        try:
            with st.store.session() as s:
                alerts = patient_alerts(s, code, actor=actor, now=now)
        except TrialError:  # unknown patient or not the user's: no card, nothing revealed
            alerts = []
        if alerts:
            out["cards"].append(trial_alert_card(code, alerts, body.hookInstance))
    return out

