"""Export of the whole trial for the statisticians (Parquet and/or CSV with a data dictionary); backup and restore.

:func:`export_trial` writes one file per table of the store (as the acting role may see it: blinded roles get
no ``arm`` and no kit ``regimen``; the audit trail is not exported), with ``patient_code`` added wherever a
row belongs to a patient, plus ``consort.json`` and ``data_dictionary.csv``/``.json`` (table, column, type,
unit, description, whether the column is blinded). Every exported column has a dictionary entry
(:data:`DATA_DICTIONARY`); export refuses to write a column without one.

:func:`backup_store` writes a portable file (zip: ``manifest.json`` + one JSON-lines file per table, the audit
trail included) from SQLite or PostgreSQL; :func:`restore_store` loads it into an empty store at the same schema
revision — on either backend — checks every file's SHA-256, re-verifies the audit chain against the data, and
appends a ``restore`` entry to the chain.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, func, insert, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from immunoguide.errors import InputError, StoreError
from immunoguide.trial import audit, clock
from immunoguide.trial._common import aware
from immunoguide.trial.access import BLINDED_COLUMNS, Actor, authorize, consort, sees_arms
from immunoguide.trial.models import ACCOUNT_TABLES, AUDITED_TABLES, AuditHead, AuditRecord, Base, Patient, UTCDateTime
from immunoguide.trial.store import HEAD_REVISION, TrialStore

__all__ = ["BACKUP_FORMAT", "DATA_DICTIONARY", "backup_store", "export_trial", "restore_store"]

BACKUP_FORMAT = "immunoguide.trial-backup/2"

_T = "time (ISO 8601, UTC)"
_WHO = "user name"
#: table → column → (description, unit or None). ``patient_code`` is added to every patient-linked table.
DATA_DICTIONARY: dict[str, dict[str, tuple[str, str | None]]] = {
    "patients": {
        "id": ("internal patient id", None), "code": ("study code of the patient", None),
        "site": ("site code", None), "protocol": ("protocol id@version the patient was screened under", None),
        "status": ("screening, screen_failed, randomised or withdrawn", None),
        "screened_at": ("time of screening", _T), "screened_by": ("who screened", _WHO),
        "sepsis3_onset": ("Sepsis-3 onset (anchor of the < 72 h window)", _T),
        "covid19": ("COVID-19 (true/false; null unknown)", None), "stratum": ("randomisation stratum = baseline endotype", None),
        "screening_record": ("screening facts as entered (JSON, PatientRecord fields with units in names)", None),
        "first_dose_at": ("time of the first study-drug dose (schedule start, treatment day 1)", _T),
        "data_removed": ("true when the patient withdrew with removal of their data (tombstone row)", None),
    },
    "eligibility_evaluations": {
        "id": ("evaluation id", None), "patient_id": ("internal patient id", None),
        "stage": ("what triggered the evaluation: screening, consent, classification, randomisation", None),
        "evaluated_at": ("time of the evaluation", _T), "evaluated_by": ("user", _WHO),
        "protocol": ("protocol id@version", None), "eligible": ("true / false / null (undetermined)", None),
        "blocking": ("criteria ids that make the patient ineligible (screen-failure reason)", None),
        "undetermined": ("applied criteria with missing data", None),
        "result": ("full eligibility result with evidence per criterion (JSON)", None),
    },
    "consents": {
        "id": ("consent id", None), "patient_id": ("internal patient id", None),
        "given_by": ("patient, first_degree_relative, spouse, or refused", None),
        "signed_at": ("time the consent form was signed", _T), "recorded_at": ("time recorded", _T),
        "recorded_by": ("user", _WHO),
    },
    "lab_results": {
        "id": ("result id", None), "patient_id": ("internal patient id", None),
        "concept": ("canonical concept (ferritin_ng_per_ml, hla_dr_per_monocyte)", None),
        "raw_value": ("value as reported (number or censored text)", None), "raw_unit": ("unit as reported", None),
        "value_lower": ("lower bound of the value in the concept's canonical unit (null: open)", "canonical unit of concept"),
        "value_upper": ("upper bound of the value in the concept's canonical unit (null: open)", "canonical unit of concept"),
        "lower_inclusive": ("whether the lower bound is a possible value", None),
        "upper_inclusive": ("whether the upper bound is a possible value", None),
        "method": ("assay method tag (quantibrite_abc for mHLA-DR in AB/c)", None),
        "sample_time": ("time the sample was drawn", _T), "receipt_time": ("time the laboratory received it", _T),
        "result_time": ("time the result was reported", _T), "source": ("provenance (lab system, row id)", None),
        "entered_at": ("time entered", _T), "entered_by": ("user", _WHO),
    },
    "classifications": {
        "id": ("classification id", None), "patient_id": ("internal patient id", None),
        "classified_at": ("time of classification", _T), "classified_by": ("user", _WHO),
        "protocol": ("protocol id@version", None),
        "endotype": ("MALS, immunoparalysis, unclassified or indeterminate", None),
        "result": ("full classification result: reasons, criteria, inputs used with ages (JSON)", None),
    },
    "allocation_lists": {
        "id": ("list id", None), "name": ("list name", None), "site": ("site code", None),
        "stratum": ("stratum (endotype)", None), "protocol": ("protocol id@version", None),
        "n_slots": ("number of slots", None),
        "file_sha256": ("SHA-256 of the imported sealed CSV (commitments only, no arm; null for a list sealed at the "
                        "upgrade from revision 0002)", None),
        "meta": ("generation metadata: ratio, stratification choice, generator, key id, list MAC (JSON; no seed, no "
                 "seed hash, no block sizes)", None),
        "imported_at": ("time of import", _T), "imported_by": ("user", _WHO),
    },
    "allocation_slots": {
        "id": ("slot id", None), "list_id": ("list id", None), "seq": ("slot number within the list", None),
        "patient_id": ("internal id of the patient holding the slot", None),
        "allocated_at": ("time of randomisation", _T), "allocated_by": ("user who randomised", _WHO),
        "arm": ("allocated arm code, opened from the slot's sealed commitment with the trial key (unblinded "
                "exports only; empty for slots not yet given to a patient)", None),
    },
    "kits": {
        "id": ("kit id", None), "kit_number": ("kit number on the label", None), "patient_id": ("internal patient id", None),
        "route": ("IV or SC", None),
        "regimen": ("kit content: regimen id of the protocol, from the sealed arm (unblinded exports only)", None),
        "label": ("label text (identical for every kit of a route)", None), "assigned_at": ("time assigned", _T),
    },
    "dose_administrations": {
        "id": ("administration id", None), "patient_id": ("internal patient id", None), "kit_id": ("kit id", None),
        "number": ("dose number within the kit's schedule", None), "given_at": ("time the dose was given", _T),
        "note": ("free-text note", None), "recorded_at": ("time recorded", _T), "recorded_by": ("user", _WHO),
    },
    "followups": {
        "id": ("follow-up id", None), "patient_id": ("internal patient id", None),
        "day": ("study day (0 = the 24 h from randomisation)", "days"), "assessed_at": ("time of assessment", _T),
        "sofa_total": ("SOFA total", "points (0-24)"), "sofa_source": ("entered or computed", None),
        "sofa_detail": ("SOFA components, missing/imputed parts, criteria and policies when computed (JSON)", None),
        "infection_assessment": ("day-15 infection: resolution < intermediate < failure < superinfection", None),
        "vital_status": ("alive or dead (days 28 and 90)", None), "death_at": ("time of death", _T),
        "recorded_at": ("time recorded", _T), "recorded_by": ("user", _WHO),
    },
    "adverse_events": {
        "id": ("AE id", None), "patient_id": ("internal patient id", None), "term": ("AE term", None),
        "onset_at": ("onset", _T), "grade": ("CTCAE grade 1-5", None), "serious": ("serious (SAE)", None),
        "relatedness": ("not_related, unlikely, possible, probable, definite", None),
        "outcome": ("recovered, recovering, not_recovered, recovered_with_sequelae, fatal, unknown", None),
        "aware_at": ("time the site became aware (start of the SAE clocks)", _T),
        "initial_report_at": ("time of the initial SAE report (due within 24 h)", _T),
        "followup_report_at": ("time of the full SAE report (due within 15 days)", _T),
        "recorded_at": ("time recorded", _T), "recorded_by": ("user", _WHO),
    },
    "unblindings": {
        "id": ("unblinding id", None), "patient_id": ("internal patient id", None),
        "reason": ("clinical reason for the emergency unblinding", None), "unblinded_at": ("time", _T),
        "unblinded_by": ("user", _WHO), "role": ("role of the user", None),
    },
    "adverse_event_codings": {
        "id": ("coding id", None), "ae_id": ("the adverse event coded", None), "patient_id": ("internal patient id", None),
        "ctcae_term": ("CTCAE v5.0 term the AE is coded to", None),
        "meddra_code": ("MedDRA v20.1 LLT code of the term (null: not confirmed from a citable source)", None),
        "soc": ("MedDRA system organ class of the term", None), "criteria": ("coding dictionary id@version", None),
        "coded_at": ("time coded", _T), "coded_by": ("user", _WHO),
    },
    "safety_lab_results": {
        "id": ("result id", None), "patient_id": ("internal patient id", None),
        "analyte": ("hemoglobin, platelets, neutrophils, lymphocytes, bilirubin, creatinine, ast, alt", None),
        "concept": ("canonical concept (unit in the name)", None), "raw_value": ("value as reported", None),
        "raw_unit": ("unit as reported", None), "value": ("value in the concept's canonical unit", "canonical unit of concept"),
        "lln": ("laboratory lower limit of normal (canonical unit; null: not reported)", "canonical unit of concept"),
        "uln": ("laboratory upper limit of normal (canonical unit; null: not reported)", "canonical unit of concept"),
        "sample_time": ("time the sample was drawn", _T), "result_time": ("time the result was reported", _T),
        "study_day": ("study day of the sample (0 = the 24 h from randomisation; negative before)", "days"),
        "source": ("laboratory / provenance", None), "ctcae_term": ("CTCAE v5.0 term graded", None),
        "meddra_code": ("MedDRA LLT code of the term (null: not confirmed)", None),
        "grade": ("CTCAE v5.0 grade 0-4 (null: not gradable, see grade_reason)", None),
        "grade_reason": ("why this grade (band, LLN/ULN) or why none", None),
        "criteria": ("grading criteria id@version", None), "entered_at": ("time entered", _T), "entered_by": ("user", _WHO),
    },
    "lab_orders": {
        "id": ("order id", None), "patient_id": ("internal patient id", None),
        "analyte": ("analyte of the protocol's classification (ferritin, hla_dr)", None),
        "concept": ("canonical concept", None), "sample_time": ("time the sample was drawn", _T),
        "source": ("laboratory", None), "method": ("assay method tag", None),
        "status": ("pending, resulted or cancelled", None), "result_id": ("lab_results row of the result", None),
        "ordered_at": ("time recorded", _T), "ordered_by": ("user", _WHO), "resolved_at": ("time the result arrived", _T),
    },
    "withdrawals": {
        "id": ("withdrawal id", None), "patient_id": ("internal patient id", None),
        "withdrawn_at": ("time of withdrawal", _T), "withdrawn_by": ("user", _WHO), "reason": ("reason", None),
        "data_removal": ("the patient asked for removal of their data", None),
        "removed": ("rows removed per table and audit payloads redacted (JSON)", None),
    },
}
_PATIENT_CODE = ("study code of the patient (joined from patients)", None)
#: Stored columns never exported: the commitments and MACs (useless without the key, and no blinded reader needs
#: them) and the legacy plaintext columns of revision 0002 (NULL once sealed).
NOT_EXPORTED: dict[str, frozenset[str]] = {
    "allocation_lists": frozenset({"content_sha256", "list_mac"}),
    "allocation_slots": frozenset({"arm", "arm_mac", "block", "block_size"}),
    "kits": frozenset({"regimen"}),
}
#: Columns computed with the trial key for unblinded exports (table → column → function of (session, row)).
COMPUTED_UNBLINDED: dict[str, tuple[str, ...]] = {"allocation_slots": ("arm",), "kits": ("regimen",)}


def _computed(session: Session, table: str, column: str, obj: Any, cache: dict[int, str]) -> str | None:
    from immunoguide.trial._common import protocol_of
    from immunoguide.trial.kits import kit_regimen
    from immunoguide.trial.randomization import arm_of

    if table == "allocation_slots":  # only slots given to a patient: the rest of the list stays concealed
        return None if obj.patient_id is None else arm_of(session, obj)
    if table == "kits":
        p = session.get(Patient, obj.patient_id)
        assert p is not None
        return kit_regimen(session, obj, protocol_of(p))
    return None


def _cell(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return v


def export_trial(
    session: Session, out_dir: str | Path, *, actor: Actor, now: datetime, formats: Sequence[str] = ("parquet", "csv"),
) -> dict[str, Any]:
    """Write every table (as ``actor`` may see it), CONSORT counts and the data dictionary to ``out_dir``.

    Parameters
    ----------
    formats : sequence of {"parquet", "csv"}
        File formats to write (both by default).

    Returns
    -------
    dict
        Files written, rows per table, whether the export is blinded.
    """
    import pandas as pd

    authorize(actor, "export")
    aware(now, "now")
    bad = [f for f in formats if f not in ("parquet", "csv")]
    if bad or not formats:
        raise InputError(expected="formats among parquet, csv", got=list(formats), where="export", todo="e.g. --format csv")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    codes = {pid: code for pid, code in session.execute(select(Patient.id, Patient.code)).all()}
    unblinded = sees_arms(actor)
    written: list[str] = []
    rows_per_table: dict[str, int] = {}
    dictionary: list[dict[str, Any]] = []
    cache: dict[int, str] = {}
    for model in AUDITED_TABLES:
        table = model.__tablename__
        hidden = set(NOT_EXPORTED.get(table, ())) | (set() if unblinded else set(BLINDED_COLUMNS.get(table, ())))
        cols = [c for c in model.__table__.columns if c.key not in hidden]
        extra = COMPUTED_UNBLINDED.get(table, ()) if unblinded else ()
        records = []
        for obj in session.execute(select(model).order_by(*model.__mapper__.primary_key)).scalars():
            img = audit.row_image(obj)
            rec = {c.key: _cell(img[c.key]) for c in cols}
            for name in extra:
                rec[name] = _computed(session, table, name, obj, cache)
            if "patient_id" in img:
                rec["patient_code"] = codes.get(img["patient_id"])
            records.append(rec)
        names = [c.key for c in cols] + list(extra) + (["patient_code"] if "patient_id" in model.__table__.columns else [])
        df = pd.DataFrame.from_records(records, columns=names)
        for c in cols:
            if isinstance(c.type, UTCDateTime):
                df[c.key] = pd.to_datetime(df[c.key], utc=True, format="ISO8601")
        for name in names:
            desc, unit = _PATIENT_CODE if name == "patient_code" else DATA_DICTIONARY[table].get(name, (None, None))
            if desc is None:
                raise StoreError(expected=f"a data-dictionary entry for {table}.{name}", got=None, where="export",
                                 todo="add the column to immunoguide.trial.export.DATA_DICTIONARY")
            col = model.__table__.columns.get(name)
            dictionary.append({
                "table": table, "column": name,
                "type": "text" if col is None else ("json" if isinstance(col.type, JSON) else str(col.type).lower()),
                "unit": unit, "description": desc,
                "blinded": name in BLINDED_COLUMNS.get(table, ()),
            })
        rows_per_table[table] = len(df)
        if "parquet" in formats:
            df.to_parquet(out / f"{table}.parquet", index=False)
            written.append(f"{table}.parquet")
        if "csv" in formats:
            df.to_csv(out / f"{table}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
            written.append(f"{table}.csv")
    (out / "consort.json").write_text(json.dumps(consort(session, actor=actor), indent=2, sort_keys=True) + "\n")
    pd.DataFrame.from_records(dictionary).to_csv(out / "data_dictionary.csv", index=False)
    manifest = {"exported_at": now.isoformat(), "exported_by": actor.user, "role": actor.role,
                "blinded": not unblinded, "rows": rows_per_table,
                "files": written + ["consort.json", "data_dictionary.csv", "data_dictionary.json"]}
    (out / "data_dictionary.json").write_text(json.dumps({"columns": dictionary, "manifest": manifest}, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# backup / restore


def _tables() -> list[Any]:
    """Every table of the store except the login tokens (short-lived credentials): trial data, the audit trail, the
    store configuration and the accounts (audited since revision 0003)."""
    return [t for t in Base.metadata.sorted_tables if t.name != "service_tokens"]


def _models_by_table() -> dict[str, type[Base]]:
    return {m.class_.__tablename__: m.class_ for m in Base.registry.mappers}


def backup_store(store: TrialStore, path: str | Path, *, actor: Actor, now: datetime) -> dict[str, Any]:
    """Write the whole store (audit trail included) to a portable zip file (administrator)."""
    authorize(actor, "backup")
    aware(now, "now")
    store.check_schema()
    models = _models_by_table()
    manifest: dict[str, Any] = {"format": BACKUP_FORMAT, "created_at": now.isoformat(), "created_by": actor.user,
                                "schema_revision": HEAD_REVISION, "source_dialect": store.dialect, "tables": {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.session() as s, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for t in _tables():
            model = models[t.name]
            lines = [audit.canonical_json(audit.row_image(o)) + "\n"
                     for o in s.execute(select(model).order_by(*t.primary_key.columns)).scalars()]
            data = "".join(lines).encode()
            zf.writestr(f"tables/{t.name}.jsonl", data)
            manifest["tables"][t.name] = {"rows": len(lines), "sha256": hashlib.sha256(data).hexdigest()}
        head = s.execute(select(AuditHead)).scalar_one()
        manifest["audit_head"] = {"seq": head.seq, "hash": head.hash, "mac": head.mac}
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "tables": {k: v["rows"] for k, v in manifest["tables"].items()}, "audit_head": manifest["audit_head"]}


def _from_json(col: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(col.type, UTCDateTime):
        return datetime.fromisoformat(value)
    return value


def restore_store(store: TrialStore, path: str | Path, *, actor: Actor, now: datetime) -> dict[str, Any]:
    """Load a backup into an empty, migrated but not yet initialised store (``TrialStore.upgrade``), verify it with
    the trial key, and record the restore.

    The backup brings the store's configuration (mode, key id) and its accounts; the process must hold the same
    trial key. Raises StoreError (not a backup, wrong format or revision, a file's checksum differs, the store not
    empty), TrialKeyError (another key) and AuditChainBroken (the restored data do not verify); nothing is written
    then.
    """
    from immunoguide.trial.models import StoreConfig

    authorize(actor, "restore")
    aware(now, "now")
    store.check_revision()
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
        manifest = json.loads(zf.read("manifest.json"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise StoreError(expected="a backup file written by `immunoguide trial backup`", got=str(path),
                         where="restore", todo=f"check the file ({exc})") from None
    if manifest.get("format") != BACKUP_FORMAT or manifest.get("schema_revision") != HEAD_REVISION:
        raise StoreError(expected=f"{BACKUP_FORMAT} at schema revision {HEAD_REVISION}",
                         got=f"{manifest.get('format')} at {manifest.get('schema_revision')}", where=str(path),
                         todo="restore with the immunoguide version that wrote the backup, then upgrade")
    with store.session() as s:
        models: tuple[type[Base], ...] = (*AUDITED_TABLES, AuditRecord, StoreConfig, *ACCOUNT_TABLES)
        counts = {m.__tablename__: s.execute(select(func.count()).select_from(m)).scalar_one() for m in models}
        if any(counts.values()) or s.execute(select(AuditHead.seq)).scalar_one() != 0:
            raise StoreError(expected="an empty, migrated store that is not initialised", got={k: v for k, v in counts.items() if v},
                             where=store.safe_url,
                             todo="restore into a new database (`immunoguide trial restore` migrates it first; do not "
                                  "run `trial init` on it)")
        restored: dict[str, int] = {}
        for t in _tables():
            info = manifest["tables"].get(t.name)
            data = zf.read(f"tables/{t.name}.jsonl")
            if info is None or hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise StoreError(expected=f"tables/{t.name}.jsonl matching the manifest's SHA-256", got="different",
                                 where=str(path), todo="the backup file is damaged or was edited; use another copy")
            rows = [json.loads(line) for line in data.decode().splitlines() if line]
            values = [{c.key: _from_json(c, r.get(c.key)) for c in t.columns} for r in rows]
            if t.name == "audit_head":
                for v in values:
                    s.execute(sql_update(t).where(t.c.id == v["id"]).values(seq=v["seq"], hash=v["hash"],
                                                                             mac=v.get("mac")))
            elif values:
                for i in range(0, len(values), 1000):
                    s.execute(insert(t), values[i : i + 1000])
            restored[t.name] = len(values)
        if store.dialect == "postgresql":
            for t in _tables():
                if t.name in ("audit_log", "audit_head") or "id" not in t.c:
                    continue
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                               f"COALESCE((SELECT MAX(id) FROM {t.name}), 0) + 1, false)"))
        clock.forget_config(s)
        clock.require_key(s, "to verify the restored audit chain")
        report = audit.verify_audit(s)
        audit.require_intact(report)
        audit.append(s, actor, now, action="restore", table="store", row_id=None, patient_id=None,
                     payload={"file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                              "backup_created_at": manifest.get("created_at"), "rows": restored,
                              "source_dialect": manifest.get("source_dialect")})
    return {"restored": restored, "audit_entries": report.entries, "verified": report.ok}
