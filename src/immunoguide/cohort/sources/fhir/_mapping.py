"""Resource-to-timeline mapping: encounters → stays, patients → stay facts, observations → observations and
cultures, medication administrations → infusions and antibiotics, procedures → ventilation, conditions → diagnoses,
attached to stays by encounter reference or the subject's time window; every unusable resource is an issue
(the :mod:`immunoguide.cohort.sources.fhir` docstring lists the rules).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from immunoguide.cohort.schema import SCHEMAS
from immunoguide.cohort.sources.fhir._codes import _CENSORED, _REF, DRUGS, USED_TYPES, stable_id
from immunoguide.cohort.sources.fhir._read import _first_error, _Item, _short
from immunoguide.cohort.sources.fhir._report import FhirIssue
from immunoguide.cohort.sources.fhir._values import _codings, _first_code, _num, _raw_code, _texts, _time
from immunoguide.errors import ImplausibleValueError, UnitError
from immunoguide.units import check_plausible, concepts, normalise_unit, to_canonical


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
