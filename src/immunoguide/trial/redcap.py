"""REDCap in and out: a project's data dictionary and records (CSV, "raw" export) ↔ the trial store.

The mapping between REDCap fields and immunoguide is a data file (``trial/redcap_immunosep.toml``, format
``immunoguide.redcap-mapping/1``): each REDCap field with its form, REDCap field type and validation, choices
(code → immunoguide value) and target (``site``, ``screening.<PatientRecord field>``, ``consent.given_by|signed_at``,
``lab.<part>``, ``followup.<part>``). Three instruments: ``screening`` (screening facts and consent, one per
record), ``laboratory`` (repeating: one ferritin or monocyte HLA-DR result per instance, phase *baseline* before
randomisation or *followup*) and ``followup`` (repeating: one study day per instance). REDCap keeps date-times
without an offset; they are read and written in the mapping's ``timezone`` (default UTC).

**Export** (:func:`export_redcap`): the data dictionary (REDCap's 18 columns) and the records, built from the trial
export as the acting role may see it (no arm is ever written; REDCap holds the CRF data, randomisation stays in
immunoguide). A stored value without a REDCap field (a screening fact the mapping lacks) refuses the export rather
than dropping it.

**Import** (:func:`import_redcap`): the records CSV is checked against the project's data dictionary and the
mapping (every mapped field present with the same type; values of the declared type, range and choices; required
fields; no unknown columns), then written through the trial's own workflow functions (:func:`~immunoguide.trial.
screen`, :func:`~immunoguide.trial.record_consent`, :func:`~immunoguide.trial.enter_labs`,
:func:`~immunoguide.trial.record_followup`) in **one transaction**, each record in a savepoint. Every refused row is
reported with its line, record, instrument, instance and reasons, and then **nothing** is imported
(:class:`~immunoguide.errors.RecordsRejected`). ``part`` selects ``baseline`` (screening, consent, baseline labs),
``followup`` (follow-up days and serial labs of patients already randomised in immunoguide) or ``all``. The ODM XML
export format of REDCap is not read.

**Who and when** (the trial store's rules, :mod:`immunoguide.trial.clock`): the import is an entry *in
immunoguide* by the importing account at the time of the import (on a real store an authenticated account at the
system time; its role and site decide what it may write, so a site coordinator imports only their site's records).
REDCap's date-times are the clinical event times (onset, consent signature, samples, follow-up assessments) and
pass the same plausibility checks as typed entries: nothing after the import, consent not before the trial's
start, Sepsis-3 onset not more than 7 days before it, each follow-up inside its study day. The screening is dated
at the import (REDCap has no screening time: it is when immunoguide evaluated eligibility). A follow-up day
assessed more than the store's late-entry limit (24 h) before the import is a late entry: it needs
``late_entry_reason`` (CLI ``--late-reason``), kept in the audit trail on that day's entries, and without it
every such row is refused. Every entry of an import carries the reason ``imported from REDCap: <file> (sha256 …)``.

Examples
--------
>>> m = load_mapping()
>>> m.field("sex").choices["1"], m.field("sepsis3_onset").validation
('male', 'datetime_seconds_ymd')
"""

from __future__ import annotations

import csv
import hashlib
import io
import tomllib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from immunoguide.errors import CriteriaError, ImmunoguideError, InputError, RecordsRejected
from immunoguide.trial import audit
from immunoguide.trial._authz import Actor

__all__ = ["DICTIONARY_COLUMNS", "RedcapField", "RedcapMapping", "export_redcap", "import_redcap", "load_mapping",
           "write_dictionary"]

#: The columns of a REDCap data dictionary CSV, in REDCap's order.
DICTIONARY_COLUMNS = (
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note", "Text Validation Type OR Show Slider Number",
    "Text Validation Min", "Text Validation Max", "Identifier?", "Branching Logic (Show field only if...)",
    "Required Field?", "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name", "Matrix Ranking?",
    "Field Annotation",
)
_REPEAT = ("redcap_repeat_instrument", "redcap_repeat_instance")
_DT_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Shortest late-entry reason the trial accepts (:func:`immunoguide.trial.clock.check_late_entry`).
_MIN_REASON = 5
Part = Literal["baseline", "followup", "all"]


@dataclass(frozen=True)
class RedcapField:
    """One REDCap field of the mapping."""

    name: str
    form: str
    type: str
    label: str
    target: str
    validation: str | None = None
    min: float | None = None
    max: float | None = None
    choices: Mapping[str, str] = field(default_factory=dict)
    choice_labels: Mapping[str, str] = field(default_factory=dict)
    required: bool = False

    @property
    def values_to_codes(self) -> dict[str, str]:
        """immunoguide value → REDCap code."""
        return {v: k for k, v in self.choices.items()}


@dataclass(frozen=True)
class RedcapMapping:
    """The REDCap project layout and its mapping to immunoguide (:func:`load_mapping`)."""

    protocol: str
    record_id: str
    timezone: str
    instruments: Mapping[str, tuple[str, bool]]
    fields: tuple[RedcapField, ...]

    def field(self, name: str) -> RedcapField:
        """The field named ``name``."""
        return next(f for f in self.fields if f.name == name)

    def by_target(self, target: str) -> RedcapField | None:
        """The field whose target is ``target``."""
        return next((f for f in self.fields if f.target == target), None)

    def of_form(self, form: str) -> list[RedcapField]:
        """The fields of one instrument, in order."""
        return [f for f in self.fields if f.form == form]

    @property
    def tz(self) -> ZoneInfo:
        """The project's time zone."""
        return ZoneInfo(self.timezone)


def _mapping_from_doc(doc: Mapping[str, Any], where: str) -> RedcapMapping:
    if doc.get("schema") != "immunoguide.redcap-mapping/1":
        raise CriteriaError(expected="schema = immunoguide.redcap-mapping/1", got=doc.get("schema"), where=where,
                            todo="use a mapping file of this format")
    try:
        ZoneInfo(str(doc.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise CriteriaError(expected="an IANA time zone", got=doc.get("timezone"), where=where,
                            todo="e.g. timezone = \"Europe/Athens\"") from None
    instruments = {k: (str(v["label"]), bool(v.get("repeating", False))) for k, v in doc["instruments"].items()}
    fields = []
    for i, f in enumerate(doc.get("fields", [])):
        if f.get("form") not in instruments:
            raise CriteriaError(expected=f"a form among {sorted(instruments)}", got=f.get("form"),
                                where=f"{where}, fields[{i}]", todo="declare the instrument")
        choices = {str(c[0]): str(c[1]) for c in f.get("choices", [])}
        fields.append(RedcapField(
            name=f["name"], form=f["form"], type=f["type"], label=f["label"], target=f["target"],
            validation=f.get("validation"), min=f.get("min"), max=f.get("max"), choices=choices,
            choice_labels={str(c[0]): str(c[2]) for c in f.get("choices", [])}, required=bool(f.get("required", False))))
    names = [f.name for f in fields]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or doc.get("record_id") not in names:
        raise CriteriaError(expected="unique field names including the record id", got=dup or doc.get("record_id"),
                            where=where, todo="fix the mapping's fields")
    return RedcapMapping(str(doc["protocol"]), str(doc["record_id"]), str(doc.get("timezone", "UTC")), instruments,
                         tuple(fields))


@cache
def _shipped_mapping() -> RedcapMapping:
    text = resources.files("immunoguide.trial").joinpath("redcap_immunosep.toml").read_text("utf-8")
    return _mapping_from_doc(tomllib.loads(text), "trial/redcap_immunosep.toml")


def load_mapping(path: str | Path | None = None, *, timezone: str | None = None) -> RedcapMapping:
    """The shipped ImmunoSep mapping, or a mapping file; ``timezone`` overrides the file's time zone."""
    if path is None:
        m = _shipped_mapping()
    else:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CriteriaError(expected="a readable REDCap mapping (TOML)", got=str(path), where=str(path),
                                todo=f"fix the file ({exc})") from None
        m = _mapping_from_doc(doc, str(path))
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(expected="an IANA time zone", got=timezone, where="--timezone",
                             todo="e.g. Europe/Athens") from None
        m = RedcapMapping(m.protocol, m.record_id, timezone, m.instruments, m.fields)
    return m


# ---------------------------------------------------------------------------------------------------------------
# data dictionary


def dictionary_rows(mapping: RedcapMapping) -> list[dict[str, str]]:
    """The data dictionary of the mapping's project (one row per field, REDCap's columns)."""
    rows = []
    for f in mapping.fields:
        row = dict.fromkeys(DICTIONARY_COLUMNS, "")
        row.update({"Variable / Field Name": f.name, "Form Name": f.form, "Field Type": f.type, "Field Label": f.label,
                    "Required Field?": "y" if f.required else ""})
        if f.choices:
            row["Choices, Calculations, OR Slider Labels"] = " | ".join(f"{k}, {f.choice_labels[k]}" for k in f.choices)
        if f.validation:
            row["Text Validation Type OR Show Slider Number"] = f.validation
        if f.min is not None:
            row["Text Validation Min"] = f"{f.min:g}"
        if f.max is not None:
            row["Text Validation Max"] = f"{f.max:g}"
        if f.name == mapping.record_id:
            row["Identifier?"] = ""
        rows.append(row)
    return rows


def write_dictionary(path: str | Path, mapping: RedcapMapping | None = None) -> Path:
    """Write the REDCap data dictionary CSV (upload it in REDCap: Project Setup → Data Dictionary)."""
    m = mapping or load_mapping()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(DICTIONARY_COLUMNS))
        w.writeheader()
        w.writerows(dictionary_rows(m))
    return p


def _read_dictionary(path: str | Path) -> dict[str, dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in DICTIONARY_COLUMNS[:5] if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(expected="a REDCap data dictionary CSV", got=f"columns {reader.fieldnames}",
                             where=str(path), todo=f"export it from REDCap (missing {missing})")
        return {r["Variable / Field Name"]: r for r in reader}


def _check_dictionary(d: Mapping[str, Mapping[str, str]], m: RedcapMapping, where: str) -> list[str]:
    """Refuse a project whose fields differ from the mapping; returns the project's unmapped fields."""
    problems = []
    for f in m.fields:
        row = d.get(f.name)
        if row is None:
            problems.append(f"{f.name}: not in the project")
            continue
        if row["Field Type"] != f.type or (row.get("Text Validation Type OR Show Slider Number") or None) != f.validation:
            problems.append(f"{f.name}: {row['Field Type']}/{row.get('Text Validation Type OR Show Slider Number')} "
                            f"instead of {f.type}/{f.validation}")
        if f.choices:
            codes = {c.split(",", 1)[0].strip() for c in row.get("Choices, Calculations, OR Slider Labels", "").split("|")}
            if not set(f.choices) <= codes:
                problems.append(f"{f.name}: choices {sorted(codes)} lack {sorted(set(f.choices) - codes)}")
    if problems:
        raise InputError(expected="a REDCap project with the mapping's fields (immunoguide redcap dictionary)",
                         got="; ".join(problems[:10]), where=where,
                         todo="create the project from `immunoguide redcap dictionary`, or adapt the mapping file")
    return sorted(set(d) - {f.name for f in m.fields})


# ---------------------------------------------------------------------------------------------------------------
# values


def _to_redcap(f: RedcapField, value: Any, tz: ZoneInfo) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if f.type == "yesno":
        return "1" if value else "0"
    if f.choices:
        code = f.values_to_codes.get(str(value))
        if code is None:
            raise InputError(expected=f"a value of {f.name} among {sorted(f.values_to_codes)}", got=value,
                             where=f"REDCap field {f.name}", todo="add the choice to the mapping file")
        return code
    if f.validation == "datetime_seconds_ymd":
        t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return t.astimezone(tz).strftime(_DT_FORMAT)
    if f.validation == "integer":
        return str(int(value))
    if f.validation == "number":
        x = float(value)
        return str(int(x)) if x == int(x) else repr(x)
    return str(value)


def _from_redcap(f: RedcapField, text: str, tz: ZoneInfo) -> Any:
    """The immunoguide value of a REDCap cell; raises ValueError with a message naming what is expected."""
    if text == "":
        if f.required:
            raise ValueError("required field is empty")
        return None
    if f.type == "yesno":
        if text not in ("0", "1"):
            raise ValueError(f"expected 1 (yes) or 0 (no), got {text!r}")
        return text == "1"
    if f.choices:
        if text not in f.choices:
            raise ValueError(f"expected a code among {sorted(f.choices)}, got {text!r}")
        return f.choices[text]
    if f.validation == "datetime_seconds_ymd":
        try:
            t = datetime.strptime(text, _DT_FORMAT)
        except ValueError:
            raise ValueError(f"expected a date-time YYYY-MM-DD HH:MM:SS, got {text!r}") from None
        return t.replace(tzinfo=tz)
    if f.validation in ("integer", "number"):
        try:
            x: float = int(text) if f.validation == "integer" else float(text)
        except ValueError:
            raise ValueError(f"expected {'an integer' if f.validation == 'integer' else 'a number'}, got {text!r}") from None
        if (f.min is not None and x < f.min) or (f.max is not None and x > f.max):
            raise ValueError(f"expected {f.min:g} to {f.max:g}, got {text}")
        return x
    return text


# ---------------------------------------------------------------------------------------------------------------
# export


def _none(v: Any) -> Any:
    import pandas as pd

    try:
        return None if v is None or pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def export_redcap(session: Session, out_dir: str | Path, *, actor: Actor, now: datetime,
                  mapping: RedcapMapping | None = None, site: str | None = None) -> dict[str, Any]:
    """Write ``redcap_dictionary.csv`` and ``redcap_records.csv`` (REDCap raw CSV) for the trial's patients (of one
    ``site`` when given: sites usually keep one REDCap project each).

    Returns the files and counts. Raises NotAuthorized (a role that may not export) and InputError (a stored
    value the mapping cannot hold).
    """
    import json
    import tempfile

    import pandas as pd

    from immunoguide.trial.export import export_trial

    m = mapping or load_mapping()
    tz = m.tz
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="immunoguide-redcap-") as tmp:
        export_trial(session, tmp, actor=actor, now=now, formats=("parquet",))
        t = {n: pd.read_parquet(Path(tmp) / f"{n}.parquet") for n in
             ("patients", "consents", "lab_results", "followups", "allocation_slots")}
    columns = [m.record_id] + [c for c in _REPEAT] + [f.name for f in m.fields if f.name != m.record_id]
    forms = list(m.instruments)
    columns += [f"{form}_complete" for form in forms]
    analytes = {"ferritin_ng_per_ml": "ferritin", "hla_dr_per_monocyte": "hla_dr"}
    rows: list[dict[str, str]] = []
    slots = t["allocation_slots"]
    randomised_at = {r["patient_code"]: r["allocated_at"] for _, r in slots.iterrows() if _none(r["patient_code"])}
    counts: dict[str, int] = defaultdict(int)
    # serial labs entered with a follow-up day (same entry time; of several such days, the one assessed nearest to
    # the sample) belong to that day
    fu_day: dict[tuple[str, Any], list[tuple[int, Any]]] = defaultdict(list)
    for _, r in t["followups"].iterrows():
        fu_day[(r["patient_code"], r["recorded_at"])].append((int(r["day"]), r["assessed_at"]))
    for _, p in t["patients"].sort_values("code").iterrows():
        if bool(p["data_removed"]) or (site is not None and p["site"] != site):
            continue
        code = p["code"]
        base = dict.fromkeys(columns, "")
        base[m.record_id] = code
        row = dict(base)
        row[m.by_target("site").name] = p["site"]  # type: ignore[union-attr]
        record = json.loads(p["screening_record"]) if isinstance(p["screening_record"], str) else (p["screening_record"] or {})
        flat: dict[str, Any] = {}
        for key, value in record.items():  # nested facts (flags, labs, provenance) as screening.<key>.<name>
            if isinstance(value, Mapping):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        for key, value in flat.items():
            f = m.by_target(f"screening.{key}")
            if f is None:
                raise InputError(expected=f"a REDCap field for the screening fact {key}", got=key,
                                 where=f"patient {code}", todo="add the field to the REDCap mapping file")
            row[f.name] = _to_redcap(f, value, tz)
        cons = t["consents"][t["consents"]["patient_code"] == code]
        if len(cons):
            c = cons.iloc[0]
            row[m.by_target("consent.given_by").name] = _to_redcap(m.by_target("consent.given_by"), c["given_by"], tz)  # type: ignore[union-attr,arg-type]
            row[m.by_target("consent.signed_at").name] = _to_redcap(m.by_target("consent.signed_at"), c["signed_at"], tz)  # type: ignore[union-attr,arg-type]
        row["screening_complete"] = "2"
        rows.append(row)
        counts["screening"] += 1
        labs = t["lab_results"][t["lab_results"]["patient_code"] == code].sort_values(["sample_time", "id"])
        for i, (_, r) in enumerate(labs.iterrows(), start=1):
            lr = dict(base)
            rand = randomised_at.get(code)
            phase = "followup" if rand is not None and r["sample_time"] >= rand else "baseline"
            cands = fu_day.get((code, r["entered_at"]), [])
            day = min(cands, key=lambda c: abs((c[1] - r["sample_time"]).total_seconds()))[0] if cands else None
            values = {"phase": phase, "day": day, "analyte": analytes[r["concept"]], "value": r["raw_value"], "unit": r["raw_unit"],
                      "method": _none(r["method"]), "sample_time": r["sample_time"],
                      "receipt_time": _none(r["receipt_time"]), "result_time": _none(r["result_time"])}
            for part, v in values.items():
                f = m.by_target(f"lab.{part}")
                assert f is not None
                lr[f.name] = _to_redcap(f, v, tz)
            lr.update({"redcap_repeat_instrument": "laboratory", "redcap_repeat_instance": str(i),
                       "laboratory_complete": "2"})
            rows.append(lr)
            counts["laboratory"] += 1
        fus = t["followups"][t["followups"]["patient_code"] == code].sort_values("day")
        for i, (_, r) in enumerate(fus.iterrows(), start=1):
            fr = dict(base)
            for part in ("day", "assessed_at", "sofa_total", "infection_assessment", "vital_status", "death_at"):
                f = m.by_target(f"followup.{part}")
                assert f is not None
                fr[f.name] = _to_redcap(f, _none(r[part]), tz)
            fr.update({"redcap_repeat_instrument": "followup", "redcap_repeat_instance": str(i),
                       "followup_complete": "2"})
            rows.append(fr)
            counts["followup"] += 1
    write_dictionary(out / "redcap_dictionary.csv", m)
    with (out / "redcap_records.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return {"files": ["redcap_dictionary.csv", "redcap_records.csv"], "site": site, "records": counts["screening"],
            "instances": dict(counts), "timezone": m.timezone, "exported_at": now.isoformat(), "exported_by": actor.user}


# ---------------------------------------------------------------------------------------------------------------
# import


@dataclass
class _Record:
    code: str
    line: int
    site: str | None = None
    screening: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, Any] = field(default_factory=dict)
    labs: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)       # (line, instance, values)
    followups: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)


def _problem(line: int, code: str, instrument: str, instance: int | None, errors: list[str]) -> dict[str, Any]:
    return {"row": line, "record": code, "instrument": instrument, "instance": instance, "errors": errors}


def _parse(path: str | Path, m: RedcapMapping, dictionary: Mapping[str, Any]) -> tuple[dict[str, _Record],
                                                                                       list[dict[str, Any]]]:
    tz = m.tz
    records: dict[str, _Record] = {}
    problems: list[dict[str, Any]] = []
    text = Path(path).read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    known = {m.record_id, *_REPEAT, "redcap_event_name", *dictionary, *(f"{k}_complete" for k in m.instruments)}
    unknown = [c for c in header if c not in known]
    if m.record_id not in header or unknown:
        raise InputError(expected=f"a REDCap records CSV of this project ({m.record_id} first, fields of its "
                                  "data dictionary)", got=unknown or header[:5], where=str(path),
                         todo="export the records as CSV (raw) from the same project")
    for line, row in enumerate(reader, start=2):
        code = (row.get(m.record_id) or "").strip()
        instrument = (row.get("redcap_repeat_instrument") or "").strip() or "screening"
        inst_text = (row.get("redcap_repeat_instance") or "").strip()
        errors: list[str] = []
        instance: int | None = None
        if not code:
            errors.append(f"{m.record_id}: empty")
        if instrument not in m.instruments:
            errors.append(f"redcap_repeat_instrument: unknown instrument {instrument!r}")
        elif m.instruments[instrument][1]:
            if not inst_text.isdigit():
                errors.append(f"redcap_repeat_instance: expected a positive integer, got {inst_text!r}")
            else:
                instance = int(inst_text)
        values: dict[str, Any] = {}
        for f in m.fields:
            cell = (row.get(f.name) or "").strip()
            if f.form != instrument or f.name == m.record_id:
                if cell and f.form != instrument and f.name != m.record_id:
                    errors.append(f"{f.name}: belongs to instrument {f.form}, not {instrument}")
                continue
            try:
                values[f.target] = _from_redcap(f, cell, tz)
            except ValueError as exc:
                errors.append(f"{f.name}: {exc}")
        if errors:
            problems.append(_problem(line, code, instrument, instance, errors))
            continue
        rec = records.setdefault(code, _Record(code, line))
        if instrument == "screening":
            if rec.site is not None:
                problems.append(_problem(line, code, instrument, None, ["record appears twice"]))
                continue
            rec.line, rec.site = line, values.pop("site")
            for k, v in values.items():
                if k.startswith("screening.") and v is not None:
                    *parents, leaf = k.split(".")[1:]
                    target = rec.screening
                    for parent in parents:
                        target = target.setdefault(parent, {})
                    target[leaf] = v
            rec.consent = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("consent.") and v is not None}
            if bool(rec.consent.get("given_by")) != bool(rec.consent.get("signed_at")):
                problems.append(_problem(line, code, instrument, None, ["consent_by and consent_signed go together"]))
        elif instrument == "laboratory":
            rec.labs.append((line, instance or 0, {k.split(".", 1)[1]: v for k, v in values.items()}))
        else:
            rec.followups.append((line, instance or 0, {k.split(".", 1)[1]: v for k, v in values.items()}))
    return records, problems


def _lab_record(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in group:
        a = v["analyte"]
        out[a] = v["value"]
        out[f"{a}_unit"] = v["unit"]
        if v.get("method"):
            out[f"{a}_method"] = v["method"]
        for part in ("sample_time", "receipt_time", "result_time"):
            if v.get(part) is not None:
                out[f"{a}_{part}"] = v[part].isoformat()
    return out


class _RowsRefused(Exception):
    """Rows of one record the trial refused (the record's savepoint is rolled back)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(problems)
        self.problems = problems


def _write_record(session: Session, rec: _Record, part: Part, actor: Actor, now: datetime,
                  protocol: str, late_entry_reason: str | None = None) -> dict[str, int]:
    """Write one record through the trial's workflow. Each laboratory group and follow-up day is written in its own
    savepoint, so that every row the trial refuses is reported (with its line and instance), not only the first;
    raises _RowsRefused with them (the caller rolls the whole record back)."""
    from sqlalchemy import select

    from immunoguide.trial import enter_labs, record_consent, record_followup, screen
    from immunoguide.trial.models import Patient

    done: dict[str, int] = defaultdict(int)
    problems: list[dict[str, Any]] = []

    def attempt(line: int, instrument: str, instance: int | None, fn: Any) -> bool:
        try:
            with audit.savepoint(session):
                fn()
        except ImmunoguideError as exc:
            problems.append(_problem(line, rec.code, instrument, instance, [exc.message]))
            return False
        return True

    exists = session.execute(select(Patient.id).where(Patient.code == rec.code)).first() is not None
    if part in ("baseline", "all"):
        if rec.site is None:
            raise _RowsRefused([_problem(rec.line, rec.code, "screening", None, [
                "no screening row for this record: export the screening instrument too"])])
        record = dict(rec.screening)
        for k in ("sepsis3_onset_time", "hospital_admission_time"):
            if isinstance(record.get(k), datetime):
                record[k] = record[k].isoformat()
        for k in ("sofa_total", "sofa_admission"):
            if record.get(k) is not None:
                record[k] = int(record[k])
        site = rec.site

        def baseline() -> None:
            screen(session, rec.code, site, record, actor=actor, now=now, protocol=protocol)
            if rec.consent:
                record_consent(session, rec.code, rec.consent["given_by"], rec.consent["signed_at"], actor=actor,
                               now=now)

        if not attempt(rec.line, "screening", None, baseline):
            raise _RowsRefused(problems)  # nothing else of the record can be written without its screening
        done["screening"] += 1
        if rec.consent:
            done["consent"] += 1
    elif not exists:
        raise _RowsRefused([_problem(rec.line, rec.code, "record", None, [
            f"patient {rec.code} is not screened in immunoguide: import the baseline part first"])])
    phases = ("baseline", "followup") if part == "all" else (part,)
    for phase in phases:
        groups: dict[Any, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        by_day: dict[int, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        for lab in sorted(rec.labs, key=lambda x: x[1]):
            v = lab[2]
            if v["phase"] != phase:
                continue
            if phase == "followup" and v.get("day") is not None:
                by_day[int(v["day"])].append(lab)  # entered with that follow-up day
            else:
                groups[v["sample_time"]].append(lab)
        for _, group in sorted(groups.items()):
            values = [v for _, _, v in group]
            if attempt(group[0][0], "laboratory", group[0][1],
                       lambda values=values: enter_labs(session, rec.code, _lab_record(values), actor=actor, now=now)):
                done[f"labs_{phase}"] += len(group)
        if phase == "followup":
            for line, instance, v in sorted(rec.followups, key=lambda x: x[2]["day"]):
                day = int(v["day"])
                labs = [lv for _, _, lv in by_day.pop(day, [])]

                def followup(day: int = day, v: dict[str, Any] = v, labs: list[dict[str, Any]] = labs) -> None:
                    record_followup(session, rec.code, day, actor=actor, now=now, assessed_at=v.get("assessed_at"),
                                    sofa_total=None if v.get("sofa_total") is None else int(v["sofa_total"]),
                                    labs=_lab_record(labs) if labs else None,
                                    infection_assessment=v.get("infection_assessment"),
                                    vital_status=v.get("vital_status"), death_at=v.get("death_at"),
                                    late_entry_reason=late_entry_reason)

                if attempt(line, "followup", instance, followup):
                    done["followup"] += 1
                    done["labs_followup"] += len(labs)
            for day, labs_of_day in sorted(by_day.items()):
                for line, instance, _ in labs_of_day:
                    problems.append(_problem(line, rec.code, "laboratory", instance, [
                        f"lab_day {day}: no follow-up instance for that day (add it, or clear lab_day)"]))
    if problems:
        raise _RowsRefused(problems)
    return done


def import_redcap(session: Session, records_csv: str | Path, dictionary_csv: str | Path, *, actor: Actor,
                  now: datetime, part: Part = "all", mapping: RedcapMapping | None = None,
                  late_entry_reason: str | None = None) -> dict[str, Any]:
    """Import a REDCap records CSV (raw export) into the trial store, all or nothing (see the module docstring).

    Parameters
    ----------
    session : Session
        An open trial-store session; the caller's transaction commits everything or (on error) nothing.
    records_csv, dictionary_csv : path
        The project's records (CSV, raw) and data dictionary exports.
    actor, now : Actor, datetime
        Who imports, and when: every entry is recorded as entered by ``actor`` at ``now`` (on a real store, an
        authenticated account at the system time). REDCap's date-times are the clinical event times.
    part : {"all", "baseline", "followup"}
        What to import: screening, consent and baseline labs; follow-up days and serial labs; or both.
    late_entry_reason : str, optional
        Why follow-up days are entered late (e.g. "transcribed from the site's REDCap project"): a day assessed more
        than the store's late-entry limit (24 h) before ``now`` is refused without it, like any late entry; with it,
        the reason is kept in the audit trail on that day's entries.

    Returns
    -------
    dict
        Counts per kind and the project's unmapped fields (ignored).

    Raises
    ------
    InputError
        Not a records/dictionary export of a project with the mapping's fields.
    RecordsRejected
        Some rows were refused (``rows``: line, record, instrument, instance, reasons); nothing was imported.
    """
    if part not in ("all", "baseline", "followup"):
        raise InputError(expected="part all, baseline or followup", got=part, where="--part", todo="choose one")
    m = mapping or load_mapping()
    dictionary = _read_dictionary(dictionary_csv)
    ignored = _check_dictionary(dictionary, m, str(dictionary_csv))
    records, problems = _parse(records_csv, m, dictionary)
    counts: dict[str, int] = defaultdict(int)
    digest = hashlib.sha256(Path(records_csv).read_bytes()).hexdigest()
    source = f"imported from REDCap: {Path(records_csv).name} (sha256 {digest[:16]})"
    # Every entry of the import names its source; a reason given by the caller (--reason) is kept before it.
    given = audit._current_reason(session)
    late = late_entry_reason.strip() if isinstance(late_entry_reason, str) else None
    if late is not None and len(late) >= _MIN_REASON:  # shorter reasons go through unchanged and are refused
        late = f"{late} ({source})"
    if not problems:
        with audit.reasoned(session, f"{given}; {source}" if given else source):
            for rec in records.values():
                try:
                    with audit.savepoint(session):
                        for k, v in _write_record(session, rec, part, actor, now, m.protocol, late).items():
                            counts[k] += v
                except _RowsRefused as refused:
                    problems.extend(refused.problems)
    if problems:
        problems.sort(key=lambda p: p["row"])
        raise RecordsRejected(rows=problems, expected="every REDCap row valid and accepted by the trial",
                              got=f"{len(problems)} refused row(s); first: row {problems[0]['row']} "
                                  f"({problems[0]['record']}): {problems[0]['errors'][0]}",
                              where=str(records_csv), todo="fix the rows in REDCap (see rows[]) and import again; "
                                                           "nothing was imported")
    return {"records": len(records), "imported": dict(counts), "part": part, "ignored_fields": ignored,
            "imported_at": now.isoformat(), "imported_by": actor.user, "role": actor.role,
            "source": {"file": Path(records_csv).name, "sha256": digest}}
