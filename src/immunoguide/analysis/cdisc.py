"""CDISC datasets from the trial: ADaM (ADSL, ADEFF, ADAE, ADTTE) and SDTM (DM, AE, LB, EX, DS).

Both are built from the trial's **export** (:func:`immunoguide.trial.export_trial`, run here as the acting role),
so blinding is the trial's: a blinded role's export holds no arm and no kit content, and the datasets then carry
no ``ARM``/``ARMCD``/``TRT01P``/``TRTP``/``TRTGRP`` column and a generic ``EXTRT`` (``IV STUDY DRUG``) — the
define file says so. Only a role that sees arms (the DSMB) gets the arms.

The ADaM efficacy data use the **same derivation as the statistical report** (the analysis dataset of
:mod:`immunoguide.analysis.dataset`, SAP rules of :mod:`immunoguide.analysis.endpoints`): ADEFF holds, per
analysed subject,

* ``PARAMCD = "SOFA"``: the daily total SOFA of study days 1-15 as used by the SOFA-response endpoints, one row per
  day; ``ABLFL = "Y"`` on day 1 (the baseline); ``DTYPE`` empty for a measured day, ``"LOCF"`` for a day carried
  forward (``SRCDY`` says from which day) and ``"DEATH24"`` for a day after death scored 24 (SAP p. 66; a
  sponsor-defined term of the extensible DTYPE codelist); ``SRCROW`` names the stored follow-up row.
* ``SOFAM9`` / ``SOFAM15``: mean SOFA over days 2-9 (8 values) / 2-15 (14 values), ``DTYPE = "AVERAGE"``, with
  ``BASE`` (day-1 SOFA) and ``CHG``; ``RESP9`` / ``RESP15``: responder (``AVAL`` 1/0, ``AVALC`` Y/N) when
  ``BASE - mean > 1.4`` (``CRIT1``). A subject whose endpoint is not evaluable (no day-1 SOFA) has ``EVALFL = "N"``,
  the reason in ``NEREAS`` and counts as a non-responder (report policy *not_evaluable_sofa_response*), so the
  primary endpoint is ``sum(AVAL) / count`` of the ``RESP9`` rows, per ``TRTGRP`` when unblinded.
* ``SOFAS19``: mean SOFA days 1-9 of survivors (secondary).

ADTTE: ``TTDTH90`` (days from randomisation to death, censored at the last day known alive and at day 90; the
report's Kaplan-Meier) and ``TTREV`` (days to reversal of the immune state). ADAE: one row per adverse event with
``TRTEMFL`` and the report's relatedness rule (possible/probable/definite → ``AREL = "RELATED"``).

Files: each dataset as SAS transport **XPT version 5** (written with pyreadstat; names ≤ 8 characters, labels
≤ 40, character values ≤ 200 bytes) and CSV, plus ``define.json`` / ``define.csv`` (a define-style metadata file:
datasets with label, class, structure and keys; variables with label, type, length, origin, derivation and
codelist) and ``manifest.json``. It is not a Define-XML 2.x document.

Examples
--------
>>> meta = VARIABLES["ADEFF"]["DTYPE"]
>>> meta.label, meta.type
('Derivation Type', 'Char')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from immunoguide.analysis.dataset import (
    GROUPS,
    RELATED,
    AnalysisData,
    derive,
    json_col,
    km_times,
    load_export_dir,
    load_session,
    read_table,
    value_or_none,
)
from immunoguide.analysis.dataset import blind as blind_analysis_data
from immunoguide.analysis.sap import Sap, load_sap
from immunoguide.errors import InputError, StoreError
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.trial.access import Actor, authorize, sees_arms

__all__ = ["DATASETS", "VARIABLES", "VarMeta", "write_cdisc"]

Standard = Literal["adam", "sdtm"]


@dataclass(frozen=True)
class VarMeta:
    """Define-style metadata of one variable."""

    label: str
    type: Literal["Char", "Num"]
    origin: str = "Derived"
    derivation: str = ""
    codelist: str = ""


def _v(label: str, typ: Literal["Char", "Num"] = "Char", origin: str = "Derived", derivation: str = "",
       codelist: str = "") -> VarMeta:
    return VarMeta(label, typ, origin, derivation, codelist)


_ARM_NOTE = "unblinded exports only (a blinded role's export holds no arm)"
_COMMON = {
    "STUDYID": _v("Study Identifier", origin="Assigned", derivation="protocol id, upper case"),
    "USUBJID": _v("Unique Subject Identifier", origin="Derived", derivation="STUDYID-SUBJID"),
}
_TRT = {
    "TRTP": _v("Planned Treatment", origin="Assigned", derivation=f"arm label of the allocation slot; {_ARM_NOTE}"),
    "TRTGRP": _v("Treatment Group (Pooled)", derivation="Precision immunotherapy (arm role active) or Placebo; "
                 + _ARM_NOTE, codelist="Precision immunotherapy; Placebo"),
}

#: dataset → (label, class, structure, keys)
DATASETS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "ADSL": ("Subject-Level Analysis Dataset", "SUBJECT LEVEL ANALYSIS DATASET", "One record per subject",
             ("STUDYID", "USUBJID")),
    "ADEFF": ("SOFA Efficacy Analysis Dataset", "BASIC DATA STRUCTURE",
              "One record per subject per parameter per analysis visit", ("STUDYID", "USUBJID", "PARAMCD", "AVISITN")),
    "ADAE": ("Adverse Events Analysis Dataset", "OCCURRENCE DATA STRUCTURE", "One record per adverse event",
             ("STUDYID", "USUBJID", "AESEQ")),
    "ADTTE": ("Time-to-Event Analysis Dataset", "BASIC DATA STRUCTURE", "One record per subject per parameter",
              ("STUDYID", "USUBJID", "PARAMCD")),
    "DM": ("Demographics", "SPECIAL PURPOSE", "One record per subject", ("STUDYID", "USUBJID")),
    "AE": ("Adverse Events", "EVENTS", "One record per adverse event per subject", ("STUDYID", "USUBJID", "AESEQ")),
    "LB": ("Laboratory Test Results", "FINDINGS", "One record per lab test per time point per subject",
           ("STUDYID", "USUBJID", "LBSEQ")),
    "EX": ("Exposure", "INTERVENTIONS", "One record per administration per subject", ("STUDYID", "USUBJID", "EXSEQ")),
    "DS": ("Disposition", "EVENTS", "One record per disposition event per subject", ("STUDYID", "USUBJID", "DSSEQ")),
}

#: dataset → variable → metadata (every written column must have an entry).
VARIABLES: dict[str, dict[str, VarMeta]] = {
    "ADSL": {
        **_COMMON,
        "SUBJID": _v("Subject Identifier for the Study", origin="CRF", derivation="study code"),
        "SITEID": _v("Study Site Identifier", origin="CRF"),
        "AGE": _v("Age", "Num", "CRF", "screening record age_years"),
        "AGEU": _v("Age Units", codelist="YEARS"),
        "SEX": _v("Sex", origin="CRF", codelist="M; F; U"),
        "ARMCD": _v("Planned Arm Code", origin="Assigned", derivation=_ARM_NOTE),
        "ARM": _v("Description of Planned Arm", origin="Assigned", derivation=_ARM_NOTE),
        "TRT01P": _v("Planned Treatment for Period 01", origin="Assigned", derivation=_ARM_NOTE),
        "TRTGRP": _TRT["TRTGRP"],
        "STRAT1R": _v("Stratum as Randomized", origin="Derived", derivation="baseline endotype (randomisation stratum)",
                      codelist="MALS; immunoparalysis"),
        "RANDDTM": _v("Datetime of Randomization", "Num", derivation="allocation_slots.allocated_at (UTC)"),
        "TRTSDTM": _v("Datetime of First Exposure to Treatment", "Num", derivation="patients.first_dose_at (UTC)"),
        "BSOFA": _v("Baseline SOFA Total (Study Day 1)", "Num", derivation="follow-up day 1 SOFA total"),
        "RANDFL": _v("Randomized Population Flag", codelist="Y"),
        "ITTFL": _v("Analysed (ITT) Population Flag", derivation="randomised minus withdrawals with data removal",
                    codelist="Y"),
        "SAFFL": _v("Safety Population Flag", derivation="analysed (report policy safety_population)", codelist="Y"),
        "EFFFL": _v("Primary Endpoint Evaluable Flag", derivation="day-1 SOFA recorded", codelist="Y; N"),
        "DTHFL": _v("Subject Death Flag", derivation="a follow-up row with vital status dead", codelist="Y"),
        "DTHDY": _v("Study Day of Death", "Num", derivation="whole days from randomisation to death (min 1)"),
        "LSTALVDY": _v("Last Study Day Known Alive", "Num", derivation="latest follow-up day not dead"),
        "INFD15": _v("Day-15 Infection Outcome", origin="CRF",
                     codelist="resolution; intermediate; failure; superinfection"),
    },
    "ADEFF": {
        **_COMMON,
        "SITEID": _v("Study Site Identifier", origin="CRF"),
        "STRAT1R": _v("Stratum as Randomized", codelist="MALS; immunoparalysis"),
        **_TRT,
        "PARAMCD": _v("Parameter Code", codelist="SOFA; SOFAM9; RESP9; SOFAM15; RESP15; SOFAS19"),
        "PARAM": _v("Parameter"),
        "AVISITN": _v("Analysis Visit (N)", "Num", derivation="SAP study day (1 = baseline); for a summary parameter "
                      "the last day of its window"),
        "AVISIT": _v("Analysis Visit"),
        "AVAL": _v("Analysis Value", "Num", derivation="SOFA points; a mean for SOFAM*; 1/0 for RESP*"),
        "AVALC": _v("Analysis Value (C)", codelist="Y; N (RESP* only)"),
        "BASE": _v("Baseline Value", "Num", derivation="day-1 SOFA total"),
        "CHG": _v("Change from Baseline", "Num", derivation="AVAL - BASE"),
        "ABLFL": _v("Baseline Record Flag", codelist="Y"),
        "DTYPE": _v("Derivation Type", derivation="empty: measured; LOCF: last observation carried forward (SRCDY); "
                    "DEATH24: a day after death scored 24 (SAP p. 66; sponsor-defined term); AVERAGE: a mean",
                    codelist="LOCF; DEATH24; AVERAGE"),
        "SRCDY": _v("Source Study Day of the Value", "Num", derivation="the measured day a LOCF value comes from"),
        "SRCROW": _v("Source Row (followups/<id>)", origin="Derived", derivation="stored follow-up row of the value"),
        "CRIT1": _v("Analysis Criterion 1"),
        "CRIT1FL": _v("Criterion 1 Evaluation Result Flag", codelist="Y; N"),
        "EVALFL": _v("Endpoint Evaluable Flag", codelist="Y; N"),
        "NEREAS": _v("Reason Not Evaluable"),
        "ANL01FL": _v("Analysis Flag 01 (Primary Analysis)", derivation="the RESP9 record of each analysed subject",
                      codelist="Y"),
    },
    "ADAE": {
        **_COMMON,
        "SITEID": _v("Study Site Identifier", origin="CRF"),
        **_TRT,
        "AESEQ": _v("Sequence Number", "Num"),
        "AETERM": _v("Reported Term for the Adverse Event", origin="CRF"),
        "AEDECOD": _v("Dictionary-Derived Term", derivation="the reported term (no MedDRA coding in the store)"),
        "ASTDTM": _v("Analysis Start Datetime", "Num", derivation="adverse_events.onset_at (UTC)"),
        "ASTDY": _v("Analysis Start Relative Day", "Num", derivation="days from randomisation (day 1 = randomisation day)"),
        "AETOXGR": _v("Standard Toxicity Grade", origin="CRF", codelist="1; 2; 3; 4; 5"),
        "ATOXGRN": _v("Analysis Toxicity Grade (N)", "Num"),
        "AESER": _v("Serious Event", origin="CRF", codelist="Y; N"),
        "AEREL": _v("Causality", origin="CRF", codelist="not_related; unlikely; possible; probable; definite"),
        "AREL": _v("Analysis Causality", derivation="RELATED when possible, probable or definite",
                   codelist="RELATED; NOT RELATED"),
        "AEOUT": _v("Outcome of Adverse Event", origin="CRF"),
        "TRTEMFL": _v("Treatment Emergent Analysis Flag", derivation="onset at or after the first dose", codelist="Y; N"),
    },
    "ADTTE": {
        **_COMMON,
        "SITEID": _v("Study Site Identifier", origin="CRF"),
        "STRAT1R": _v("Stratum as Randomized", codelist="MALS; immunoparalysis"),
        **_TRT,
        "PARAMCD": _v("Parameter Code", codelist="TTDTH90; TTREV"),
        "PARAM": _v("Parameter"),
        "AVAL": _v("Analysis Value (days)", "Num"),
        "CNSR": _v("Censor", "Num", derivation="0 event, 1 censored", codelist="0; 1"),
        "STARTDTM": _v("Time-to-Event Origin Datetime", "Num", derivation="randomisation (TTDTH90) or baseline draw"),
        "EVNTDESC": _v("Event or Censoring Description"),
    },
    "DM": {
        **_COMMON,
        "DOMAIN": _v("Domain Abbreviation", origin="Assigned"),
        "SUBJID": _v("Subject Identifier for the Study", origin="CRF"),
        "RFSTDTC": _v("Subject Reference Start Date/Time", derivation="first dose (ISO 8601)"),
        "RFXSTDTC": _v("Date/Time of First Study Treatment", derivation="first dose (ISO 8601)"),
        "RFICDTC": _v("Date/Time of Informed Consent", origin="CRF"),
        "DTHDTC": _v("Date/Time of Death", origin="CRF"),
        "DTHFL": _v("Subject Death Flag", codelist="Y"),
        "SITEID": _v("Study Site Identifier", origin="CRF"),
        "AGE": _v("Age", "Num", "CRF"),
        "AGEU": _v("Age Units", codelist="YEARS"),
        "SEX": _v("Sex", origin="CRF", codelist="M; F; U"),
        "ARMCD": _v("Planned Arm Code", origin="Assigned", derivation=_ARM_NOTE + "; SCRNFAIL, NOTASSGN"),
        "ARM": _v("Description of Planned Arm", origin="Assigned", derivation=_ARM_NOTE),
        "ACTARMCD": _v("Actual Arm Code", origin="Assigned", derivation=_ARM_NOTE),
        "ACTARM": _v("Description of Actual Arm", origin="Assigned", derivation=_ARM_NOTE),
    },
    "AE": {
        **_COMMON,
        "DOMAIN": _v("Domain Abbreviation", origin="Assigned"),
        "AESEQ": _v("Sequence Number", "Num"),
        "AETERM": _v("Reported Term for the Adverse Event", origin="CRF"),
        "AEDECOD": _v("Dictionary-Derived Term", derivation="the reported term (not MedDRA-coded)"),
        "AESTDTC": _v("Start Date/Time of Adverse Event", origin="CRF"),
        "AESTDY": _v("Study Day of Start of Adverse Event", "Num", derivation="relative to RFSTDTC"),
        "AETOXGR": _v("Standard Toxicity Grade", origin="CRF"),
        "AESER": _v("Serious Event", origin="CRF", codelist="Y; N"),
        "AEREL": _v("Causality", origin="CRF"),
        "AEOUT": _v("Outcome of Adverse Event", origin="CRF"),
    },
    "LB": {
        **_COMMON,
        "DOMAIN": _v("Domain Abbreviation", origin="Assigned"),
        "LBSEQ": _v("Sequence Number", "Num"),
        "LBTESTCD": _v("Lab Test or Examination Short Name", codelist="FERRITIN; HLADR"),
        "LBTEST": _v("Lab Test or Examination Name"),
        "LBORRES": _v("Result or Finding in Original Units", origin="CRF"),
        "LBORRESU": _v("Original Units", origin="CRF"),
        "LBSTRESC": _v("Character Result/Finding in Std Format", derivation="canonical value or censored text"),
        "LBSTRESN": _v("Numeric Result/Finding in Standard Units", "Num", derivation="point value in the canonical unit"),
        "LBSTRESU": _v("Standard Units"),
        "LBMETHOD": _v("Method of Test or Examination", origin="CRF"),
        "LBDTC": _v("Date/Time of Specimen Collection", origin="CRF"),
        "LBDY": _v("Study Day of Specimen Collection", "Num", derivation="relative to RFSTDTC"),
    },
    "EX": {
        **_COMMON,
        "DOMAIN": _v("Domain Abbreviation", origin="Assigned"),
        "EXSEQ": _v("Sequence Number", "Num"),
        "EXTRT": _v("Name of Treatment", derivation="drug of the kit's regimen (unblinded); 'IV STUDY DRUG' / "
                    "'SC STUDY DRUG' (blinded)"),
        "EXROUTE": _v("Route of Administration", codelist="INTRAVENOUS; SUBCUTANEOUS"),
        "EXREFID": _v("Reference ID (Kit Number)", origin="CRF"),
        "EXSTDTC": _v("Start Date/Time of Treatment", origin="CRF"),
        "EXDY": _v("Study Day of Start of Treatment", "Num", derivation="relative to RFSTDTC"),
    },
    "DS": {
        **_COMMON,
        "DOMAIN": _v("Domain Abbreviation", origin="Assigned"),
        "DSSEQ": _v("Sequence Number", "Num"),
        "DSTERM": _v("Reported Term for the Disposition Event"),
        "DSDECOD": _v("Standardized Disposition Term",
                      codelist="INFORMED CONSENT OBTAINED; SCREEN FAILURE; RANDOMIZED; DEATH; WITHDRAWAL BY SUBJECT"),
        "DSCAT": _v("Category for Disposition Event", codelist="PROTOCOL MILESTONE; DISPOSITION EVENT"),
        "DSSTDTC": _v("Start Date/Time of Disposition Event", origin="CRF"),
    },
}

_ADAM = ("ADSL", "ADEFF", "ADAE", "ADTTE")
_SDTM = ("DM", "AE", "LB", "EX", "DS")
_EXTRA_TABLES = ("kits", "dose_administrations", "consents", "eligibility_evaluations")
_LB_TESTS = {"ferritin_ng_per_ml": ("FERRITIN", "Ferritin"), "hla_dr_per_monocyte": ("HLADR", "Monocyte HLA-DR")}
_ROUTES = {"IV": "INTRAVENOUS", "SC": "SUBCUTANEOUS"}


# ---------------------------------------------------------------------------------------------------------------
# reading the trial (through its export, so blinding is the trial's)


def _load(source: Any, actor: Actor, now: datetime) -> tuple[AnalysisData, dict[str, pd.DataFrame]]:
    """The report's view of the export plus the extra tables SDTM needs."""
    from sqlalchemy.orm import Session

    if isinstance(source, Session):
        return load_session(source, actor, now, extra_tables=_EXTRA_TABLES)
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        d = Path(source)
        data = load_export_dir(d)
        return data, {t: read_table(d, t) for t in _EXTRA_TABLES}
    raise InputError(expected="an open trial-store session or a trial export directory", got=str(source)[:120],
                     where="CDISC export", todo="export the trial (`immunoguide trial export`) or give the store")


def _blind(data: AnalysisData, extra: dict[str, pd.DataFrame]) -> None:
    blind_analysis_data(data)  # the analysis dataset's blinding (arm columns, CONSORT by arm, signals)
    kits = extra["kits"]
    extra["kits"] = kits.drop(columns=[c for c in ("regimen",) if c in kits.columns])


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _dtc(v: Any) -> str:
    """ISO 8601 (UTC, seconds) or empty."""
    v = value_or_none(v)
    if v is None:
        return ""
    return pd.Timestamp(v).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S")


def _dtm(v: Any) -> Any:
    """A naive UTC timestamp for a numeric SAS datetime (NaT when missing)."""
    v = value_or_none(v)
    return pd.NaT if v is None else pd.Timestamp(v).tz_convert("UTC").tz_localize(None).floor("s")


def _study_day(t: Any, ref: Any) -> float:
    """SDTM study day: day 1 = the reference date, no day 0 (NaN when either is missing)."""
    t, ref = value_or_none(t), value_or_none(ref)
    if t is None or ref is None:
        return math.nan
    d = (pd.Timestamp(t).tz_convert("UTC").normalize() - pd.Timestamp(ref).tz_convert("UTC").normalize()).days
    return float(d + 1 if d >= 0 else d)


def _sex(v: Any) -> str:
    return {"male": "M", "female": "F"}.get(str(v).lower(), "U") if v is not None else "U"


def _yn(v: bool | None) -> str:
    return "" if v is None else ("Y" if v else "N")


def _frame(name: str, rows: list[dict[str, Any]], unblinded: bool) -> pd.DataFrame:
    cols = [c for c in VARIABLES[name] if unblinded or c not in _ARM_COLUMNS]
    df = pd.DataFrame.from_records(rows, columns=cols) if rows else pd.DataFrame(columns=cols)
    extra = [c for r in rows for c in r if c not in VARIABLES[name]]
    if extra:
        raise StoreError(expected=f"define metadata for every {name} variable", got=sorted(set(extra)),
                         where="CDISC export", todo="add the variable to immunoguide.analysis.cdisc.VARIABLES")
    for c, meta in VARIABLES[name].items():
        if c not in df.columns:
            continue
        if meta.type == "Num" and not pd.api.types.is_datetime64_any_dtype(df[c]):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        elif meta.type == "Char":
            df[c] = df[c].map(lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x))
    return df


_ARM_COLUMNS = frozenset({"ARMCD", "ARM", "TRT01P", "TRTP", "TRTGRP", "ACTARMCD", "ACTARM"})


# ---------------------------------------------------------------------------------------------------------------
# ADaM


def _adam(data: AnalysisData, protocol: Protocol, sap: Sap, studyid: str, unblinded: bool) -> dict[str, pd.DataFrame]:
    patients, _ = derive(data, protocol, sap, unblinded=unblinded)
    pts = data.tables["patients"].set_index("code")
    adsl: list[dict[str, Any]] = []
    adeff: list[dict[str, Any]] = []
    adae: list[dict[str, Any]] = []
    adtte: list[dict[str, Any]] = []
    for p in patients:
        row = pts.loc[p.code]
        usubjid = f"{studyid}-{p.code}"
        arm = protocol.arm(p.arm) if unblinded and p.arm else None
        trt = {"TRTP": arm.label, "TRTGRP": GROUPS[arm.role][1]} if arm is not None else {}
        common = {"STUDYID": studyid, "USUBJID": usubjid, "SITEID": p.site}
        first_dose = value_or_none(row.get("first_dose_at"))
        r9 = p.primary
        adsl.append({
            **common, "SUBJID": p.code, "AGE": p.record.get("age_years"), "AGEU": "YEARS",
            "SEX": _sex(p.record.get("sex")),
            **({"ARMCD": arm.code, "ARM": arm.label, "TRT01P": arm.label, "TRTGRP": trt["TRTGRP"]} if arm else {}),
            "STRAT1R": p.stratum, "RANDDTM": _dtm(p.randomised_at), "TRTSDTM": _dtm(first_dose),
            "BSOFA": p.baseline_sofa, "RANDFL": "Y", "ITTFL": "Y", "SAFFL": "Y",
            "EFFFL": _yn(r9 is not None and r9.evaluable), "DTHFL": "Y" if p.died_on_day is not None else "",
            "DTHDY": p.died_on_day, "LSTALVDY": p.last_alive_day, "INFD15": p.infection or "",
        })
        base_common = {**common, "STRAT1R": p.stratum, **trt}
        # daily SOFA rows (days 1-15 as used by the endpoints)
        daily = p.d2_15 if p.d2_15 is not None and p.d2_15.evaluable else None
        if daily is not None:
            adeff.append({**base_common, "PARAMCD": "SOFA", "PARAM": "SOFA Total Score (points)", "AVISITN": 1,
                          "AVISIT": "DAY 1", "AVAL": daily.baseline_sofa, "BASE": daily.baseline_sofa, "CHG": 0,
                          "ABLFL": "Y", "DTYPE": "", "SRCDY": 1, "SRCROW": daily.baseline_row_id or ""})
            for d in daily.days:
                adeff.append({**base_common, "PARAMCD": "SOFA", "PARAM": "SOFA Total Score (points)",
                              "AVISITN": d.day, "AVISIT": f"DAY {d.day}", "AVAL": d.sofa, "BASE": daily.baseline_sofa,
                              "CHG": d.sofa - (daily.baseline_sofa or 0),
                              "DTYPE": {"measured": "", "locf": "LOCF", "death_24": "DEATH24"}[d.flag],
                              "SRCDY": d.source_day, "SRCROW": d.source_row_id or ""})
        else:  # not evaluable: the measured days only, nothing imputed
            for r in p.rows:
                if value_or_none(r.get("sofa_total")) is not None and 1 <= int(r["day"]) <= 15:
                    adeff.append({**base_common, "PARAMCD": "SOFA", "PARAM": "SOFA Total Score (points)",
                                  "AVISITN": int(r["day"]), "AVISIT": f"DAY {int(r['day'])}",
                                  "AVAL": int(r["sofa_total"]), "DTYPE": "", "SRCDY": int(r["day"]),
                                  "SRCROW": f"followups/{int(r['id'])}"})
        for key, res, reason, last in (("9", p.primary, p.primary_reason, 9), ("15", p.d2_15, p.d2_15_reason, 15)):
            spec = sap.sofa_response[f"d2_{key}"]
            crit = f"BASE - mean(SOFA days {spec.first_day}-{spec.last_day}) {spec.comparator} {spec.threshold:g}"
            ok = res is not None and res.evaluable
            if ok:
                assert res is not None
                adeff.append({**base_common, "PARAMCD": f"SOFAM{key}",
                              "PARAM": f"Mean SOFA Days {spec.first_day}-{spec.last_day} (LOCF; death = 24)",
                              "AVISITN": last, "AVISIT": f"DAYS {spec.first_day}-{spec.last_day}",
                              "AVAL": res.mean_sofa, "BASE": res.baseline_sofa,
                              "CHG": (res.mean_sofa or 0) - (res.baseline_sofa or 0), "DTYPE": "AVERAGE",
                              "EVALFL": "Y"})
            responder = bool(ok and res is not None and res.responder)
            adeff.append({**base_common, "PARAMCD": f"RESP{key}", "PARAM": spec.label[:200], "AVISITN": last,
                          "AVISIT": f"DAYS {spec.first_day}-{spec.last_day}", "AVAL": int(responder),
                          "AVALC": _yn(responder), "BASE": res.baseline_sofa if ok and res is not None else None,
                          "CRIT1": crit, "CRIT1FL": _yn(responder) if ok else "", "EVALFL": _yn(ok),
                          "NEREAS": "" if ok else (reason or "not evaluable")[:200],
                          "ANL01FL": "Y" if key == "9" else ""})
        ms = p.mean_sofa
        if ms is not None and ms.evaluable:
            adeff.append({**base_common, "PARAMCD": "SOFAS19", "PARAM": "Mean SOFA Days 1-9 Among Survivors",
                          "AVISITN": 9, "AVISIT": "DAYS 1-9", "AVAL": ms.mean_sofa, "DTYPE": "AVERAGE",
                          "EVALFL": "Y"})
        # time to event
        t, e = km_times([p])
        adtte.append({**base_common, "PARAMCD": "TTDTH90", "PARAM": "Time to Death up to Day 90 (days)",
                      "AVAL": t[0], "CNSR": 1 - e[0], "STARTDTM": _dtm(p.randomised_at),
                      "EVNTDESC": "DEATH" if e[0] else "ALIVE: CENSORED AT LAST DAY KNOWN ALIVE (MAX 90)"})
        rev = p.reversal
        if rev is not None and rev.evaluable:
            adtte.append({**base_common, "PARAMCD": "TTREV", "PARAM": "Time to Reversal of Immune Dysfunction (days)",
                          "AVAL": rev.time_days, "CNSR": 0 if rev.event else 1, "STARTDTM": pd.NaT,
                          "EVNTDESC": "REVERSAL" if rev.event else "NO REVERSAL: CENSORED AT LAST DRAW"})
        for i, a in enumerate(sorted(p.aes, key=lambda a: (str(a.get("onset_at")), int(a["id"]))), start=1):
            rel = str(a.get("relatedness") or "")
            onset = a.get("onset_at")
            adae.append({**common, **trt, "AESEQ": i, "AETERM": a.get("term"), "AEDECOD": a.get("term"),
                         "ASTDTM": _dtm(onset), "ASTDY": _study_day(onset, p.randomised_at),
                         "AETOXGR": str(int(a["grade"])) if value_or_none(a.get("grade")) is not None else "",
                         "ATOXGRN": a.get("grade"), "AESER": _yn(bool(a.get("serious"))), "AEREL": rel,
                         "AREL": "RELATED" if rel in RELATED else "NOT RELATED", "AEOUT": a.get("outcome"),
                         "TRTEMFL": _yn(first_dose is not None and value_or_none(onset) is not None
                                        and pd.Timestamp(onset) >= pd.Timestamp(first_dose))})
    return {"ADSL": _frame("ADSL", adsl, unblinded), "ADEFF": _frame("ADEFF", adeff, unblinded),
            "ADAE": _frame("ADAE", adae, unblinded), "ADTTE": _frame("ADTTE", adtte, unblinded)}


# ---------------------------------------------------------------------------------------------------------------
# SDTM


def _sdtm(data: AnalysisData, extra: Mapping[str, pd.DataFrame], protocol: Protocol, studyid: str,
          unblinded: bool) -> dict[str, pd.DataFrame]:
    t = data.tables
    pts = t["patients"]
    pts = pts[~pts["data_removed"].astype(bool)]
    slots = t["allocation_slots"]
    slots = slots[slots["patient_code"].notna()].set_index("patient_code")
    consents = extra["consents"]
    fu = t["followups"]
    dm: list[dict[str, Any]] = []
    ae: list[dict[str, Any]] = []
    lb: list[dict[str, Any]] = []
    ex: list[dict[str, Any]] = []
    ds: list[dict[str, Any]] = []
    for _, p in pts.sort_values("code").iterrows():
        code = p["code"]
        usubjid = f"{studyid}-{code}"
        common = {"STUDYID": studyid, "USUBJID": usubjid}
        rec = json_col(p["screening_record"]) or {}
        first_dose = value_or_none(p.get("first_dose_at"))
        cons = consents[consents["patient_code"] == code]
        consent = cons.iloc[0] if len(cons) else None
        deaths = fu[(fu["patient_code"] == code) & (fu["vital_status"] == "dead")]
        death_at = deaths.iloc[0]["death_at"] if len(deaths) else None
        randomised = code in slots.index
        arm_cols: dict[str, Any] = {}
        if unblinded:
            if randomised and value_or_none(slots.loc[code].get("arm")) is not None:
                a = protocol.arm(slots.loc[code]["arm"])
                arm_cols = {"ARMCD": a.code, "ARM": a.label, "ACTARMCD": a.code if first_dose else "NOTTRT",
                            "ACTARM": a.label if first_dose else "Not Treated"}
            elif p["status"] == "screen_failed":
                arm_cols = {"ARMCD": "SCRNFAIL", "ARM": "Screen Failure", "ACTARMCD": "SCRNFAIL",
                            "ACTARM": "Screen Failure"}
            else:
                arm_cols = {"ARMCD": "NOTASSGN", "ARM": "Not Assigned", "ACTARMCD": "NOTASSGN", "ACTARM": "Not Assigned"}
        dm.append({**common, "DOMAIN": "DM", "SUBJID": code, "RFSTDTC": _dtc(first_dose), "RFXSTDTC": _dtc(first_dose),
                   "RFICDTC": _dtc(consent["signed_at"]) if consent is not None and consent["given_by"] != "refused" else "",
                   "DTHDTC": _dtc(death_at), "DTHFL": "Y" if value_or_none(death_at) is not None else "", "SITEID": p["site"],
                   "AGE": rec.get("age_years"), "AGEU": "YEARS", "SEX": _sex(rec.get("sex")), **arm_cols})
        # disposition
        events: list[tuple[Any, str, str, str]] = []
        if consent is not None and consent["given_by"] != "refused":
            events.append((consent["signed_at"], "INFORMED CONSENT OBTAINED", "INFORMED CONSENT OBTAINED",
                           "PROTOCOL MILESTONE"))
        if p["status"] == "screen_failed":
            events.append((p["screened_at"], "SCREEN FAILURE", "SCREEN FAILURE", "DISPOSITION EVENT"))
        if randomised:
            events.append((slots.loc[code]["allocated_at"], "RANDOMIZED", "RANDOMIZED", "PROTOCOL MILESTONE"))
        if value_or_none(death_at) is not None:
            events.append((death_at, "DEATH", "DEATH", "DISPOSITION EVENT"))
        wd = t["withdrawals"]
        for _, w in wd[wd["patient_code"] == code].iterrows():
            events.append((w["withdrawn_at"], str(w.get("reason") or "withdrawal")[:200], "WITHDRAWAL BY SUBJECT",
                           "DISPOSITION EVENT"))
        for i, (when, term, decod, cat) in enumerate(sorted(events, key=lambda e: pd.Timestamp(e[0])), start=1):
            ds.append({**common, "DOMAIN": "DS", "DSSEQ": i, "DSTERM": term, "DSDECOD": decod, "DSCAT": cat,
                       "DSSTDTC": _dtc(when)})
        # adverse events
        aes = t["adverse_events"]
        for i, (_, a) in enumerate(aes[aes["patient_code"] == code].sort_values(["onset_at", "id"]).iterrows(), start=1):
            ae.append({**common, "DOMAIN": "AE", "AESEQ": i, "AETERM": a["term"], "AEDECOD": a["term"],
                       "AESTDTC": _dtc(a["onset_at"]), "AESTDY": _study_day(a["onset_at"], first_dose),
                       "AETOXGR": str(int(a["grade"])), "AESER": _yn(bool(a["serious"])), "AEREL": a["relatedness"],
                       "AEOUT": a["outcome"]})
        # laboratory
        labs = t["lab_results"]
        for i, (_, r) in enumerate(labs[labs["patient_code"] == code].sort_values(["sample_time", "id"]).iterrows(),
                                   start=1):
            testcd, test = _LB_TESTS.get(r["concept"], (str(r["concept"])[:8].upper(), str(r["concept"])))
            lo, hi = value_or_none(r["value_lower"]), value_or_none(r["value_upper"])
            point = float(lo) if lo is not None and hi is not None and lo == hi else None
            unit = {"ferritin_ng_per_ml": "ng/mL", "hla_dr_per_monocyte": "AB/c"}.get(r["concept"], "")
            lb.append({**common, "DOMAIN": "LB", "LBSEQ": i, "LBTESTCD": testcd, "LBTEST": test,
                       "LBORRES": str(r["raw_value"]), "LBORRESU": value_or_none(r["raw_unit"]) or "",
                       "LBSTRESC": f"{point:g}" if point is not None else str(r["raw_value"]),
                       "LBSTRESN": point, "LBSTRESU": unit, "LBMETHOD": value_or_none(r.get("method")) or "",
                       "LBDTC": _dtc(r["sample_time"]), "LBDY": _study_day(r["sample_time"], first_dose)})
        # exposure
        doses = extra["dose_administrations"]
        kits = extra["kits"].set_index("id")
        for i, (_, d) in enumerate(doses[doses["patient_code"] == code].sort_values(["given_at", "id"]).iterrows(),
                                   start=1):
            kit = kits.loc[d["kit_id"]]
            if unblinded and "regimen" in kits.columns:
                drug = protocol.regimens[kit["regimen"]].drug.upper()
            else:
                drug = f"{kit['route']} STUDY DRUG"
            ex.append({**common, "DOMAIN": "EX", "EXSEQ": i, "EXTRT": drug, "EXROUTE": _ROUTES.get(kit["route"], ""),
                       "EXREFID": kit["kit_number"], "EXSTDTC": _dtc(d["given_at"]),
                       "EXDY": _study_day(d["given_at"], first_dose)})
    return {"DM": _frame("DM", dm, unblinded), "AE": _frame("AE", ae, unblinded), "LB": _frame("LB", lb, unblinded),
            "EX": _frame("EX", ex, unblinded), "DS": _frame("DS", ds, unblinded)}


# ---------------------------------------------------------------------------------------------------------------
# writing


def _check_xpt_limits(name: str, df: pd.DataFrame) -> None:
    for c in df.columns:
        if len(c) > 8 or not c.isupper():
            raise StoreError(expected="XPT v5 variable names of at most 8 upper-case characters", got=c, where=name,
                             todo="rename the variable in VARIABLES")
        if len(VARIABLES[name][c].label) > 40:
            raise StoreError(expected="XPT v5 labels of at most 40 characters", got=VARIABLES[name][c].label,
                             where=f"{name}.{c}", todo="shorten the label")
        if df[c].dtype == object:
            too_long = df[c].map(lambda x: len(str(x).encode("utf-8")) > 200)
            if too_long.any():
                df.loc[too_long, c] = df.loc[too_long, c].map(lambda x: str(x).encode("utf-8")[:200].decode("utf-8", "ignore"))


def _write(name: str, df: pd.DataFrame, out: Path, formats: Sequence[str]) -> list[str]:
    import pyreadstat

    written = []
    _check_xpt_limits(name, df)
    if "xpt" in formats:
        path = out / f"{name.lower()}.xpt"
        pyreadstat.write_xport(df, str(path), file_format_version=5, table_name=name,
                               file_label=DATASETS[name][0][:40],
                               column_labels=[VARIABLES[name][c].label for c in df.columns])
        written.append(path.name)
    if "csv" in formats:
        csv = df.copy()
        for c in csv.columns:
            if pd.api.types.is_datetime64_any_dtype(csv[c]):
                csv[c] = csv[c].dt.strftime("%Y-%m-%dT%H:%M:%S")
        csv.to_csv(out / f"{name.lower()}.csv", index=False)
        written.append(f"{name.lower()}.csv")
    return written


def _define(frames: Mapping[str, pd.DataFrame], standard: Standard, manifest: Mapping[str, Any]) -> tuple[dict, list]:
    datasets, variables = [], []
    for name, df in frames.items():
        label, cls, structure, keys = DATASETS[name]
        datasets.append({"dataset": name, "label": label, "class": cls, "structure": structure,
                         "keys": list(keys), "records": len(df), "file": f"{name.lower()}.xpt"})
        for c in df.columns:
            m = VARIABLES[name][c]
            length = 8 if m.type == "Num" else max([1, *[len(str(x).encode("utf-8")) for x in df[c]]])
            variables.append({"dataset": name, "variable": c, "label": m.label, "type": m.type, "length": length,
                              "origin": m.origin, "derivation": m.derivation, "codelist": m.codelist,
                              "format": "DATETIME20." if pd.api.types.is_datetime64_any_dtype(df[c]) else ""})
    return {"standard": "ADaM" if standard == "adam" else "SDTM",
            "model_version": "ADaMIG 1.3 (structure)" if standard == "adam" else "SDTMIG 3.4 (structure)",
            "note": "define-style metadata (not Define-XML); blinded exports carry no arm variables",
            "manifest": dict(manifest), "datasets": datasets, "variables": variables}, variables


def write_cdisc(
    source: Any,
    out_dir: str | Path,
    *,
    standard: Standard,
    actor: Actor,
    now: datetime,
    protocol: str | Protocol = "immunosep-2025",
    sap: Sap | None = None,
    formats: Sequence[str] = ("xpt", "csv"),
) -> dict[str, Any]:
    """Write the ADaM or SDTM datasets (XPT v5 and/or CSV) and the define-style metadata to ``out_dir``.

    Parameters
    ----------
    source : Session or path
        An open trial-store session (exported here as ``actor``) or a directory written by ``trial export``.
    standard : {"adam", "sdtm"}
    actor : Actor
        Who exports (roles statistician, dsmb, administrator); blinded unless the role sees arms.
    formats : sequence of {"xpt", "csv"}

    Returns
    -------
    dict
        The manifest: standard, files, records per dataset, whether blinded.

    Raises
    ------
    NotAuthorized
        The role may not export.
    InputError
        Unknown standard or format; an unblinded request from a blinded export directory.
    """
    authorize(actor, "export")
    if standard not in ("adam", "sdtm"):
        raise InputError(expected="standard adam or sdtm", got=standard, where="CDISC export", todo="--format adam|sdtm")
    bad = [f for f in formats if f not in ("xpt", "csv")]
    if bad or not formats:
        raise InputError(expected="formats among xpt, csv", got=list(formats), where="CDISC export", todo="xpt and csv")
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    sap = sap or load_sap()
    data, extra = _load(source, actor, now)
    unblinded = sees_arms(actor) and not data.manifest.get("blinded", True)
    if not unblinded:
        _blind(data, extra)
    studyid = proto.id.upper()
    frames = _adam(data, proto, sap, studyid, unblinded) if standard == "adam" else _sdtm(
        data, extra, proto, studyid, unblinded)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for name, df in frames.items():
        files += _write(name, df, out, formats)
    manifest = {"standard": standard, "study": studyid, "protocol": proto.label, "sap": f"{sap.id}@{sap.version}",
                "exported_at": now.isoformat(), "exported_by": actor.user, "role": actor.role, "blinded": not unblinded,
                "records": {k: len(v) for k, v in frames.items()}, "source": data.source,
                "files": files + ["define.json", "define.csv", "manifest.json"]}
    define, variables = _define(frames, standard, manifest)
    (out / "define.json").write_text(json.dumps(define, indent=2, default=str) + "\n", encoding="utf-8")
    pd.DataFrame.from_records(variables).to_csv(out / "define.csv", index=False)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return manifest
