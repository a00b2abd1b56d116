"""The analysis dataset: the trial read through its export, blinded, and derived per patient by the SAP's rules.

One derivation for everything that analyses the trial — the statistical report (:mod:`immunoguide.analysis.report`)
and the CDISC datasets (:mod:`immunoguide.analysis.cdisc`) — so their numbers agree:

* **load** — :func:`open_source` reads a trial store through :func:`immunoguide.trial.export_trial` (plus the DSMB's
  safety signals, the alerts and the assay turnaround, each through its ``trial/`` read function) as the acting role,
  or an export directory written by it (:func:`load_export_dir`); blinding is the trial's, so a blinded role's
  export holds no arm.
* **blind** — :func:`blind` drops every arm-bearing column, CONSORT count by arm and safety signal (a blinded
  analysis uses none, whoever runs it).
* **derive** — :func:`derive` gives one :class:`Patient` per analysed patient (randomised, data not removed): death
  and last contact on SAP days (report policy ``study_day_numbering``), the SOFA-response endpoints, mean SOFA,
  mortality, day-15 infection, reversal of the immune state, adverse events with their CTCAE coding and safety
  labs — every value with the stored rows it came from (:mod:`immunoguide.analysis.endpoints`).

Examples
--------
>>> value_or_none(float("nan")) is None, value_or_none(3)
(True, 3)
>>> json_col('{"age_years": 61}')
{'age_years': 61}
>>> p = Patient("ATH-001", "ATH", "MALS", None, None, None, {}, [], death_days=3.5)
>>> km_times([p])
([3.5], [1])
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from immunoguide.analysis.endpoints import (
    BiomarkerDraw,
    DailySofaRecord,
    SofaResponseResult,
    immune_reversal,
    infection_outcome_day15,
    mean_sofa_survivors,
    mortality,
    sofa_response,
)
from immunoguide.analysis.report_policies import ReportPolicy, resolve_report_policies
from immunoguide.analysis.sap import Sap
from immunoguide.errors import ImmunoguideError, InputError
from immunoguide.protocols import Protocol
from immunoguide.trial.access import Actor

__all__ = ["GROUPS", "GROUP_LABEL", "RELATED", "SAP_ENDOTYPE", "STRATUM_LABEL", "AnalysisData", "Patient",
           "baseline_value", "blind", "derive", "json_col", "km_times", "load_export_dir", "load_session", "load_store",
           "open_source", "read_table", "value_or_none"]

#: Treatment groups of the unblinded report: protocol arm role → group key and label.
GROUPS: Mapping[str, tuple[str, str]] = {"active": ("precision", "Precision immunotherapy"),
                                         "placebo": ("placebo", "Placebo")}
GROUP_LABEL = {k: lab for k, lab in GROUPS.values()}
STRATUM_LABEL = {"MALS": "MALS", "immunoparalysis": "SII (immunoparalysis)"}
SAP_ENDOTYPE = {"MALS": "MALS", "immunoparalysis": "SII"}
RELATED = ("possible", "probable", "definite")


# ------------------------------------------------------------------------------------------------------------------
# reading the trial through its export
# ------------------------------------------------------------------------------------------------------------------
_TABLES = ("patients", "allocation_lists", "allocation_slots", "followups", "adverse_events", "withdrawals",
           "lab_results")
#: Tables read when present (exports written before they existed lack them; the report says so).
_OPTIONAL_TABLES = ("eligibility_evaluations", "dose_administrations", "adverse_event_codings", "safety_lab_results")
_TIME_COLS = {"screened_at", "sepsis3_onset", "first_dose_at", "allocated_at", "assessed_at", "death_at",
              "recorded_at", "onset_at", "aware_at", "initial_report_at", "followup_report_at", "withdrawn_at",
              "sample_time", "receipt_time", "result_time", "entered_at", "imported_at", "given_at", "evaluated_at",
              "coded_at"}


@dataclass
class AnalysisData:
    tables: dict[str, pd.DataFrame]
    consort: dict[str, Any]
    manifest: dict[str, Any]
    source: str
    signals: dict[str, Any] | None = None
    missing_tables: list[str] = field(default_factory=list)
    alerts: dict[str, Any] | None = None
    turnaround: dict[str, Any] | None = None


def read_table(d: Path, name: str) -> pd.DataFrame:
    pq, cs = d / f"{name}.parquet", d / f"{name}.csv"
    if pq.exists():
        df = pd.read_parquet(pq)
    elif cs.exists():
        df = pd.read_csv(cs)
    else:
        raise InputError(expected=f"{name}.parquet or {name}.csv in the export", got=sorted(p.name for p in d.iterdir()),
                         where=str(d), todo="export the trial with `immunoguide trial export --out DIR`")
    for c in df.columns:
        if c in _TIME_COLS and not pd.api.types.is_datetime64_any_dtype(df[c]):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    return df


def load_export_dir(d: Path) -> AnalysisData:
    dd = d / "data_dictionary.json"
    if not dd.is_file() or not (d / "consort.json").is_file():
        raise InputError(expected="a trial export directory (data_dictionary.json, consort.json, one file per table)",
                         got=str(d), where="report input", todo="export the trial with `immunoguide trial export`")
    manifest = json.loads(dd.read_text())["manifest"]
    tables = {t: read_table(d, t) for t in _TABLES}
    missing = []
    for t in _OPTIONAL_TABLES:
        if (d / f"{t}.parquet").exists() or (d / f"{t}.csv").exists():
            tables[t] = read_table(d, t)
        else:
            tables[t] = pd.DataFrame()
            missing.append(t)
    data = AnalysisData(tables, json.loads((d / "consort.json").read_text()), manifest, f"export {d}")
    data.missing_tables = missing
    return data


def load_session(session: Any, actor: Actor, now: datetime, *,
                 extra_tables: Sequence[str] = ()) -> tuple[AnalysisData, dict[str, pd.DataFrame]]:
    """The trial as ``actor`` may see it at ``now``: :func:`immunoguide.trial.export_trial` run in the open store
    ``session`` (Parquet, in a temporary directory) and read back; ``extra_tables`` are read as well and returned
    beside the analysis data (e.g. the kits and consents of the SDTM datasets)."""
    from immunoguide.trial import export_trial

    with tempfile.TemporaryDirectory(prefix="immunoguide-analysis-") as tmp:
        export_trial(session, tmp, actor=actor, now=now, formats=("parquet",))
        data = load_export_dir(Path(tmp))
        extra = {t: read_table(Path(tmp), t) for t in extra_tables}
    data.source = "trial store"
    return data, extra


def load_store(store: Any, actor: Actor, now: datetime, *, unblinded: bool, signal_rule: str | None = None) -> AnalysisData:
    """:func:`load_session` in a session of ``store``, with the DSMB's safety signals (``unblinded`` only), the
    alerts and the assay turnaround, each read through its ``trial/`` function as ``actor``."""
    from immunoguide.trial import safety_signals
    from immunoguide.trial.monitoring import alerts_view, turnaround_report

    with store.session() as s:
        data, _ = load_session(s, actor, now)
        data.signals = safety_signals(s, actor=actor, now=now, rule_method=signal_rule) if unblinded else None
        data.alerts = alerts_view(s, actor=actor, now=now)
        data.turnaround = turnaround_report(s, actor=actor, now=now)
    data.source = f"trial store {store.safe_url}"
    return data


def blind(data: AnalysisData) -> None:
    """Drop every arm-bearing column (the blinded report uses none, whoever runs it)."""
    slots = data.tables["allocation_slots"]
    data.tables["allocation_slots"] = slots.drop(columns=[c for c in ("arm",) if c in slots.columns])
    data.consort = {k: v for k, v in data.consort.items() if "_by_arm" not in k}
    data.signals = None


def json_col(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return None
    return v


def value_or_none(v: Any) -> Any:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def open_source(src: Any, actor: Actor, now: datetime, *, unblinded: bool, signal_rule: str | None = None) -> AnalysisData:
    from immunoguide.trial.store import TrialStore

    if isinstance(src, TrialStore):
        src.check_schema()
        return load_store(src, actor, now, unblinded=unblinded, signal_rule=signal_rule)
    if isinstance(src, str) and "://" in src:
        st = TrialStore(src)
        try:
            st.check_schema()
            return load_store(st, actor, now, unblinded=unblinded, signal_rule=signal_rule)
        finally:
            st.dispose()
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        return load_export_dir(Path(src))
    raise InputError(expected="a TrialStore, a database URL or a trial export directory", got=str(src)[:120],
                     where="report input", todo="give --db URL (or an export folder)")


# ------------------------------------------------------------------------------------------------------------------
# per-patient derivation
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Patient:
    code: str
    site: str
    stratum: str
    randomised_at: datetime
    arm: str | None
    group: str | None
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    died_on_day: int | None = None
    death_days: float | None = None
    last_alive_day: int | None = None
    #: SAP day = follow-up day + sap_offset (report policy study_day_numbering)
    sap_offset: int = 0
    last_alive_followup_day: int | None = None
    baseline_sofa: int | None = None
    primary: SofaResponseResult | None = None
    primary_reason: str | None = None
    d2_15: SofaResponseResult | None = None
    d2_15_reason: str | None = None
    mort: dict[int, Any] = field(default_factory=dict)
    infection: str | None = None
    reversal: Any = None
    mean_sofa: Any = None
    aes: list[dict[str, Any]] = field(default_factory=list)
    safety_labs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def _days_between(t: datetime, t0: datetime) -> float:
    return (pd.Timestamp(t) - pd.Timestamp(t0)).total_seconds() / 86400.0


def derive(data: AnalysisData, protocol: Protocol, sap: Sap, *, unblinded: bool,
            policies: Mapping[str, ReportPolicy] | None = None) -> tuple[list[Patient], list[str]]:
    t = data.tables
    pts = t["patients"]
    slots = t["allocation_slots"]
    slots = slots[slots["patient_code"].notna()]
    removed = set(pts.loc[pts["data_removed"].astype(bool), "code"])
    warnings: list[str] = []
    labels = set(pts["protocol"].dropna())
    if labels and labels != {protocol.label}:
        warnings.append(f"patients were screened under {sorted(labels)}; the report uses {protocol.label}")
    fu = t["followups"]
    aes = t["adverse_events"]
    labs = t["lab_results"]
    pol = policies or resolve_report_policies()
    offset = 1 if pol["study_day_numbering"].option == "randomisation_day_is_sap_day_1" else 0
    codings = t.get("adverse_event_codings", pd.DataFrame())
    coded = {int(r["ae_id"]): r for r in codings.to_dict("records")} if not codings.empty else {}
    slr = t.get("safety_lab_results", pd.DataFrame())
    if data.missing_tables:
        warnings.append(f"the export has no {', '.join(data.missing_tables)} (written before they existed): the "
                        "related tables and CONSORT boxes say 'not in this export'")
    out: list[Patient] = []
    by_code = pts.set_index("code")
    for _, s in slots.sort_values("patient_code").iterrows():
        code = s["patient_code"]
        if code in removed:
            continue
        p = by_code.loc[code]
        arm = s.get("arm") if unblinded else None
        group = GROUPS[protocol.arm(arm).role][0] if arm else None
        rec = json_col(p["screening_record"]) or {}
        pt = Patient(code, p["site"], p["stratum"], s["allocated_at"], arm, group, rec,
                      fu[fu["patient_code"] == code].sort_values("day").to_dict("records"), sap_offset=offset)
        # death and last contact (SAP days: report policy study_day_numbering)
        deaths = [r for r in pt.rows if r.get("vital_status") == "dead" and value_or_none(r.get("death_at")) is not None]
        if deaths:
            pt.death_days = _days_between(deaths[0]["death_at"], pt.randomised_at)
            whole = int(math.floor(pt.death_days))
            pt.died_on_day = whole + 1 if offset else max(1, whole)
            pt.sources["death"] = f"followups/{int(deaths[0]['id'])}"
        alive = [r for r in pt.rows if r.get("vital_status") != "dead"]
        if alive:
            last = max(alive, key=lambda r: int(r["day"]))
            pt.last_alive_followup_day = int(last["day"])
            pt.last_alive_day = int(last["day"]) + offset
            pt.sources["last_alive"] = f"followups/{int(last['id'])}"
        # SOFA endpoints (SAP day = follow-up day + offset; day 1 is the SAP baseline)
        sofa_rows = [r for r in pt.rows if value_or_none(r.get("sofa_total")) is not None and int(r["day"]) + offset >= 1]
        recs = [DailySofaRecord(code, int(r["day"]) + offset, int(r["sofa_total"]), pt.died_on_day,
                                row_id=f"followups/{int(r['id'])}")
                for r in sofa_rows]
        base = [r for r in sofa_rows if int(r["day"]) + offset == 1]
        pt.baseline_sofa = int(base[0]["sofa_total"]) if base else None
        for key in ("d2_9", "d2_15"):
            res, reason = None, None
            if not recs:
                reason = "no SOFA recorded on any study day >= 1"
            else:
                try:
                    res = sofa_response(recs, endpoint=key, sap=sap)  # type: ignore[arg-type]
                    reason = res.reason
                except ImmunoguideError as exc:
                    reason = f"data conflict: {exc.message}"
            if key == "d2_9":
                pt.primary, pt.primary_reason = res, reason
            else:
                pt.d2_15, pt.d2_15_reason = res, reason
        if recs:
            try:
                pt.mean_sofa = mean_sofa_survivors(recs, sap=sap)
            except ImmunoguideError as exc:
                pt.notes.append(f"mean SOFA d1-9: {exc.message}")
        # mortality
        for h in sap.mortality_horizons_days:
            lka = pt.last_alive_day if pt.last_alive_day and pt.last_alive_day >= 1 else None
            if lka is not None and pt.died_on_day is not None and lka > pt.died_on_day:
                lka = pt.died_on_day
            try:
                pt.mort[h] = mortality(code, died_on_day=pt.died_on_day, last_known_alive_day=lka, horizon_days=h)
            except ImmunoguideError as exc:
                pt.notes.append(f"mortality d{h}: {exc.message}")
        # day-15 infection
        d15 = [r for r in pt.rows if value_or_none(r.get("infection_assessment")) is not None]
        if d15:
            pt.infection = infection_outcome_day15(code, d15[0]["infection_assessment"], sap=sap).category
            pt.sources["infection"] = f"followups/{int(d15[0]['id'])}"
        # reversal
        pt.reversal = _reversal(pt, labs[labs["patient_code"] == code], sap)
        pt.aes = aes[aes["patient_code"] == code].to_dict("records")
        for a in pt.aes:
            c = coded.get(int(a["id"]))
            a["ctcae_term"] = c["ctcae_term"] if c else None
            a["meddra_code"] = value_or_none(c["meddra_code"]) if c else None
            a["display_term"] = c["ctcae_term"] if c else f"{a['term']} (uncoded)"
        pt.safety_labs = slr[slr["patient_code"] == code].to_dict("records") if not slr.empty else []
        out.append(pt)
    return out, warnings


def _reversal(pt: Patient, labs: pd.DataFrame, sap: Sap) -> Any:
    endotype = SAP_ENDOTYPE.get(pt.stratum)
    if endotype is None or labs.empty:
        return None
    per_day: dict[int, dict[str, tuple[datetime, float, str]]] = {}
    for _, r in labs.iterrows():
        lo, hi = value_or_none(r["value_lower"]), value_or_none(r["value_upper"])
        if lo is None or hi is None or lo != hi or value_or_none(r["sample_time"]) is None:
            continue
        day = max(0, int(math.floor(_days_between(r["sample_time"], pt.randomised_at))))
        cur = per_day.setdefault(day, {}).get(r["concept"])
        if cur is None or r["sample_time"] >= cur[0]:
            per_day[day][r["concept"]] = (r["sample_time"], float(lo), f"lab_results/{int(r['id'])}")
    draws = [BiomarkerDraw(pt.code, day,
                           ferritin_ng_per_ml=v.get("ferritin_ng_per_ml", (None, None, None))[1],
                           hla_dr_per_monocyte=v.get("hla_dr_per_monocyte", (None, None, None))[1],
                           row_id=",".join(sorted(x[2] for x in v.values())))
             for day, v in sorted(per_day.items())]
    if not draws:
        return None
    try:
        return immune_reversal(draws, endotype=endotype, sap=sap)  # type: ignore[arg-type]
    except ImmunoguideError as exc:
        pt.notes.append(f"reversal: {exc.message}")
        return None


#: SAP subgroup column → the screening-record field that holds it (PatientRecord, units in the names).
_RECORD_FIELD = {"apache_ii": "apache_ii_points", "charlson_index": "charlson_index_points"}


def baseline_value(record: Mapping[str, Any], key: str) -> Any:
    """A baseline fact from the screening record: top-level field (or its unit-named field), protocol flag or lab
    value (None if absent)."""
    keys = (key, _RECORD_FIELD[key]) if key in _RECORD_FIELD else (key,)
    for where in (record, record.get("flags") or {}, record.get("labs") or {}):
        for k in keys:
            if k in where and where[k] is not None:
                return where[k]
    return None


def km_times(patients: list[Patient]) -> tuple[list[float], list[int]]:
    t, e = [], []
    for p in patients:
        if p.death_days is not None and p.death_days <= 90:
            t.append(max(p.death_days, 0.0))
            e.append(1)
        else:
            last = p.last_alive_followup_day if p.last_alive_followup_day is not None else 0
            t.append(float(min(max(last, 0), 90)))
            e.append(0)
    return t, e
