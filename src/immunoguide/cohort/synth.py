"""Synthetic MIMIC-IV-shaped ICU data at any size, clinically coherent, for tests and benchmarks.

:func:`generate_mimic4` writes the tables of MIMIC-IV (``hosp/`` and ``icu/`` modules, real column names and item ids)
plus a sidecar ``_truth/`` directory that records what was drawn (infection, source, immune endotype, injected bad
rows). **The pipeline must never read** ``_truth/``: it exists only so tests can check that the pipeline finds what
the generator put there.

Layouts (``layout=``; the same rows and values in each)::

    parquet-parts (default): one directory per table, one file per chunk of stays
        OUT/hosp/{patients,admissions,diagnoses_icd,labevents,microbiologyevents,prescriptions}/part-00000.parquet …
        OUT/icu/{icustays,chartevents,inputevents,outputevents,procedureevents}/part-00000.parquet …
        OUT/hosp/d_labitems/part-00000.parquet, OUT/icu/d_items/part-00000.parquet   (minimal dictionaries)
    physionet-csv: OUT/hosp/<table>.csv.gz, OUT/icu/<table>.csv.gz, as PhysioNet distributes MIMIC-IV
    physionet-parquet: OUT/hosp/<table>.parquet, OUT/icu/<table>.parquet
    duckdb: OUT/mimic4.db with schemas mimiciv_hosp and mimiciv_icu, built as MIT-LCP/mimic-code
        mimic-iv/buildmimic/duckdb/import_duckdb.sh builds it (tables with create.sql's types, then COPY from the
        csv.gz files): its FLOAT columns are single precision, as in a real mimic-code database
    always: OUT/_truth/stays/part-*.parquet, OUT/_truth/bad_rows/part-*.parquet, OUT/_truth/summary.json

Column sets (``mimic_version=``): ``"2.2"`` (default) and ``"3.1"`` write the columns of MIMIC-IV v2.2, which v3.0 and
v3.1 share in these tables; ``"2.0"`` leaves out the provider columns v2.2 added (``caregiver_id``,
``order_provider_id``, ``admit_provider_id``). The columns are those of
:func:`immunoguide.cohort.sources.mimic4_tables.mimic4_columns`; every other column's values do not depend on it.

Model (per stay, vectorised with numpy over blocks of stays):

* a latent **severity** in [0, 1] and **infection** status (default 55 % infected; sources pneumonia, bacteremia,
  urinary, abdominal, coded in ``diagnoses_icd`` with ICD-10 or ICD-9 codes and reflected in culture specimens);
* six organ-dysfunction levels (respiration, coagulation, liver, cardiovascular, CNS, renal) that rise around the
  infection onset (or the admitting insult), plateau, and recover, or keep worsening until death; every charted
  value, lab, urine output, vasopressor rate, ventilation episode and GCS is a noisy function of those levels, so
  SOFA worsens around infection onset for septic stays;
* irregular charting (hourly-ish vitals with jitter and gaps; heart rate 220045 spans the stay), labs every 8–24 h
  with panels missing at realistic rates, blood gases with specimen type (52033), infusions with rate changes as
  successive rows sharing a ``linkorderid`` (some shorter than 1 h), cultures (positive and negative, some with only
  ``chartdate``) and antibiotics paired in time as in clinical practice, deaths (``admissions.deathtime``,
  ``patients.dod``).

Item ids are those of the project's reference document (``sofa-sepsis3-reference.md`` §1.1, §1.4, §2.3): MAP
220052/220181/225312, heart rate 220045, GCS 220739/223901/223900 (``'No Response-ETT'`` while intubated), FiO2
223835 (percent; about 2 % charted as a fraction, a known MIMIC quirk), pO2 50821, lab FiO2 50816, specimen 52033,
platelets 51265, bilirubin 50885, creatinine 50912, urine 226559 … and irrigant 227488, vasopressors 221906 / 221289 /
221662 / 221653 (rates in mcg/kg/min), ventilation 225792 / 225794. Ferritin is labevents 50924 (LOINC 2276-4, ng/mL).

**Synthetic extension — monocyte HLA-DR.** MIMIC has no monocyte HLA-DR. It is written to ``labevents`` with
itemid :data:`HLA_DR_ITEMID` (990001, outside MIMIC's range), label ``"Monocyte HLA-DR (QuantiBRITE)"``, unit
``AB/c`` (antibodies bound per CD45+/CD14+ monocyte) and a ``comments`` value naming the method and saying the item
is synthetic. Screened infected stays get one ferritin and one HLA-DR result (the HLA-DR result is missing for a
calibrated fraction: "sample not processed"); draws are calibrated so that the *observable* classification among
screened stays matches the ImmunoSep screening prior (immunosep-spec §7.3: MALS 7.1 %, immunoparalysis 33.9 %,
unclassified about 53 %; the rest indeterminate) or, with ``endotype_prior="provide"``, PROVIDE (§7.2: 20.0 % /
42.9 % / 37.1 %). Ferritin results above the assay's reporting limit are reported censored (``"GREATER THAN 2000"``,
``valuenum`` NULL) with probability ``censored_ferritin_rate``.

**Bad rows** (for data-quality tests): each eligible event row is turned bad with probability ``bad_row_rate``;
kinds are ``unknown_itemid`` (an itemid absent from the dictionaries), ``text_in_numeric`` (``value='ERROR'``,
``valuenum`` NULL), ``implausible`` (99999, e.g. platelets 99999), ``unit_mismatch`` (bilirubin or creatinine in
``umol/L``; norepinephrine in ``mg/kg/min``), ``before_intime`` (an output charted before ``icustays.intime``).
Ferritin and HLA-DR rows, and the first and last heart rate of each stay (they define the stay's charted span),
are never made bad, so the endotype truth and the hourly grid stay exact.

Determinism: the same ``seed`` gives byte-identical files for the same ``chunk_stays`` (Parquet and csv.gz; a DuckDB
database file holds the same rows but is not byte-identical); the concatenated content of every table (rows, order
and values) does not depend on ``chunk_stays`` (stays are generated in fixed internal blocks of :data:`BLOCK_STAYS`
stays, each with its own random streams; chunks only decide where files are cut).

Realism traps on purpose: bedside copies of platelets, creatinine and bilirubin in ``chartevents`` (227457, 220615,
225690), FiO2 occasionally charted as a fraction, ICD-9 and ICD-10 codes side by side, cultures with only a date,
topical and ophthalmic antibiotics and ``BASE`` diluent rows in ``prescriptions``, suspected-infection work-ups
(cultures + short antibiotic courses) in non-infected stays, and norepinephrine rates stored in single precision.

The ImmunoSep "indeterminate" remainder (about 6 % of screened: 41 of 672 screened were neither MALS, immunoparalysis
nor unclassified, spec §2.1) is represented by a missing HLA-DR result or a censored ferritin; ``_truth/stays``
records both the latent (``endotype_true``) and the data-supported (``endotype_observable``) class.

Simplifications (synthetic, not MIMIC facts): one ICU stay per hospital admission (about 7 % of admissions are a
later admission of the same subject); item labels of ``d_items`` / ``d_labitems`` and the microbiology specimen,
organism and antibiotic ids were checked against the MIMIC-III Clinical Database Demo v1.4 (MetaVision item ids are
shared with MIMIC-IV); ``test_itemid`` values other than 90201 (``Blood Culture, Routine``) and 90039
(``URINE CULTURE``), drug formulary codes and provider ids are placeholders.

Contains information from the MIMIC-III Clinical Database Demo (https://physionet.org/content/mimiciii-demo/1.4/),
which is made available under the Open Database License (ODbL) v1.0 (https://opendatacommons.org/licenses/odbl/1-0/).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     s = generate_mimic4(d, stays=20, seed=1)
>>> s.rows["icustays"], s.rows["chartevents"] > 20 * 100
(20, True)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import ndtr, ndtri

from immunoguide.cohort.sources.mimic4_tables import DUCKDB_SCHEMAS, LAYOUTS, MIMIC4_VERSIONS, mimic4_columns
from immunoguide.errors import InputError

__all__ = [
    "BAD_ROW_KINDS",
    "BLOCK_STAYS",
    "ENDOTYPE_PRIORS",
    "FERRITIN_ITEMID",
    "DUCKDB_FILE",
    "HLA_DR_ITEMID",
    "LAYOUTS",
    "MALS_FERRITIN_NG_PER_ML",
    "MIMIC4_VERSIONS",
    "SCHEMAS",
    "SII_HLA_DR_AB_PER_CELL",
    "TABLE_DIRS",
    "SynthSummary",
    "generate_mimic4",
]

GENERATOR_VERSION = "1.0.0"

#: Stays per internal generation block (fixed, so output does not depend on ``chunk_stays``).
BLOCK_STAYS = 250

#: labevents itemid of ferritin (MIMIC-IV d_labitems; LOINC 2276-4; ng/mL).
FERRITIN_ITEMID = 50924
#: labevents itemid of the **synthetic** monocyte HLA-DR extension (not a MIMIC item; AB/c, QuantiBRITE).
HLA_DR_ITEMID = 990001
HLA_DR_LABEL = "Monocyte HLA-DR (QuantiBRITE)"
HLA_DR_COMMENT = (
    "SYNTHETIC ITEM (not in MIMIC-IV): monocyte HLA-DR by flow cytometry, QuantiBRITE PE-bead calibration, "
    "antibodies bound per CD45+/CD14+ monocyte (AB/c)"
)

#: ImmunoSep thresholds used to *construct* the data (immunosep-spec §2.1, confirmed; the same numbers are in
#: ``protocols/immunosep-2025.toml``, checked by a test): MALS if ferritin > 4420 ng/mL; immunoparalysis if
#: ferritin <= 4420 ng/mL and HLA-DR < 5000 AB/c.
MALS_FERRITIN_NG_PER_ML = 4420.0
SII_HLA_DR_AB_PER_CELL = 5000.0

#: Observable endotype mix among screened stays: (MALS, immunoparalysis, unclassified); the remainder is
#: indeterminate. ImmunoSep: 48/672, 228/672, 355/672 (spec §7.3 and §2.1); PROVIDE: 48/240, 103/240, 89/240 (§7.2).
ENDOTYPE_PRIORS: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "immunosep": (48 / 672, 228 / 672, 355 / 672),
        "provide": (48 / 240, 103 / 240, 89 / 240),
    }
)

BAD_ROW_KINDS = ("unknown_itemid", "text_in_numeric", "implausible", "unit_mismatch", "before_intime")
_K_UNKNOWN, _K_TEXT, _K_IMPLAUSIBLE, _K_UNIT, _K_BEFORE = range(5)

ENDOTYPES = ("MALS", "immunoparalysis", "unclassified", "indeterminate")
SOURCES = ("pneumonia", "bacteremia", "urinary", "abdominal")

_NAT = np.iinfo(np.int64).min  # internal "no time" sentinel, turned into NULL on output
_H = 3600
_DAY = 86400
_ORG_RESP, _ORG_COAG, _ORG_LIVER, _ORG_CARDIO, _ORG_CNS, _ORG_RENAL = range(6)

# --------------------------------------------------------------------------------------------------------------
# Schemas (MIMIC-IV v2.2 column names; types follow the MIMIC-IV PostgreSQL build)
# --------------------------------------------------------------------------------------------------------------

_i16, _i32, _i64, _f64, _str = pa.int16(), pa.int32(), pa.int64(), pa.float64(), pa.string()
_ts = pa.timestamp("us")


def _schema(*cols: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in cols])


SCHEMAS: Mapping[str, pa.Schema] = MappingProxyType(
    {
        "patients": _schema(
            ("subject_id", _i32),
            ("gender", _str),
            ("anchor_age", _i16),
            ("anchor_year", _i16),
            ("anchor_year_group", _str),
            ("dod", pa.date32()),
        ),
        "admissions": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("admittime", _ts),
            ("dischtime", _ts),
            ("deathtime", _ts),
            ("admission_type", _str),
            ("admit_provider_id", _str),
            ("admission_location", _str),
            ("discharge_location", _str),
            ("insurance", _str),
            ("language", _str),
            ("marital_status", _str),
            ("race", _str),
            ("edregtime", _ts),
            ("edouttime", _ts),
            ("hospital_expire_flag", _i16),
        ),
        "diagnoses_icd": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("seq_num", _i32),
            ("icd_code", _str),
            ("icd_version", _i32),
        ),
        "labevents": _schema(
            ("labevent_id", _i64),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("specimen_id", _i64),
            ("itemid", _i32),
            ("order_provider_id", _str),
            ("charttime", _ts),
            ("storetime", _ts),
            ("value", _str),
            ("valuenum", _f64),
            ("valueuom", _str),
            ("ref_range_lower", _f64),
            ("ref_range_upper", _f64),
            ("flag", _str),
            ("priority", _str),
            ("comments", _str),
        ),
        "microbiologyevents": _schema(
            ("microevent_id", _i64),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("micro_specimen_id", _i64),
            ("order_provider_id", _str),
            ("chartdate", _ts),
            ("charttime", _ts),
            ("spec_itemid", _i32),
            ("spec_type_desc", _str),
            ("test_seq", _i32),
            ("storedate", _ts),
            ("storetime", _ts),
            ("test_itemid", _i32),
            ("test_name", _str),
            ("org_itemid", _i32),
            ("org_name", _str),
            ("isolate_num", _i16),
            ("quantity", _str),
            ("ab_itemid", _i32),
            ("ab_name", _str),
            ("dilution_text", _str),
            ("dilution_comparison", _str),
            ("dilution_value", _f64),
            ("interpretation", _str),
            ("comments", _str),
        ),
        "prescriptions": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("pharmacy_id", _i64),
            ("poe_id", _str),
            ("poe_seq", _i32),
            ("order_provider_id", _str),
            ("starttime", _ts),
            ("stoptime", _ts),
            ("drug_type", _str),
            ("drug", _str),
            ("formulary_drug_cd", _str),
            ("gsn", _str),
            ("ndc", _str),
            ("prod_strength", _str),
            ("form_rx", _str),
            ("dose_val_rx", _str),
            ("dose_unit_rx", _str),
            ("form_val_disp", _str),
            ("form_unit_disp", _str),
            ("doses_per_24_hrs", _f64),
            ("route", _str),
        ),
        "icustays": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("first_careunit", _str),
            ("last_careunit", _str),
            ("intime", _ts),
            ("outtime", _ts),
            ("los", _f64),
        ),
        "chartevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("charttime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("value", _str),
            ("valuenum", _f64),
            ("valueuom", _str),
            ("warning", _i16),
        ),
        "inputevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("starttime", _ts),
            ("endtime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("amount", _f64),
            ("amountuom", _str),
            ("rate", _f64),
            ("rateuom", _str),
            ("orderid", _i64),
            ("linkorderid", _i64),
            ("ordercategoryname", _str),
            ("secondaryordercategoryname", _str),
            ("ordercomponenttypedescription", _str),
            ("ordercategorydescription", _str),
            ("patientweight", _f64),
            ("totalamount", _f64),
            ("totalamountuom", _str),
            ("isopenbag", _i16),
            ("continueinnextdept", _i16),
            ("statusdescription", _str),
            ("originalamount", _f64),
            ("originalrate", _f64),
        ),
        "outputevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("charttime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("value", _f64),
            ("valueuom", _str),
        ),
        "procedureevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("starttime", _ts),
            ("endtime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("value", _f64),
            ("valueuom", _str),
            ("location", _str),
            ("locationcategory", _str),
            ("orderid", _i64),
            ("linkorderid", _i64),
            ("ordercategoryname", _str),
            ("ordercategorydescription", _str),
            ("patientweight", _f64),
            ("isopenbag", _i16),
            ("continueinnextdept", _i16),
            ("statusdescription", _str),
            ("originalamount", _f64),
            ("originalrate", _f64),
        ),
        "d_items": _schema(
            ("itemid", _i32),
            ("label", _str),
            ("abbreviation", _str),
            ("linksto", _str),
            ("category", _str),
            ("unitname", _str),
            ("param_type", _str),
            ("lownormalvalue", _f64),
            ("highnormalvalue", _f64),
        ),
        "d_labitems": _schema(("itemid", _i32), ("label", _str), ("fluid", _str), ("category", _str)),
        "_truth/stays": _schema(
            ("stay_id", _i32),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("seed", _i64),
            ("infected", pa.bool_()),
            ("source", _str),
            ("onset_kind", _str),
            ("infection_onset", _ts),
            ("severity", _f64),
            ("ventilated", pa.bool_()),
            ("vasopressors", pa.bool_()),
            ("died", pa.bool_()),
            ("screened", pa.bool_()),
            ("screen_time", _ts),
            ("ferritin_true_ng_per_ml", _f64),
            ("ferritin_censored", pa.bool_()),
            ("hla_dr_true_ab_per_cell", _f64),
            ("hla_dr_reported", pa.bool_()),
            ("endotype_true", _str),
            ("endotype_observable", _str),
            ("bad_rows_total", _i32),
            *[(f"bad_{k}", _i32) for k in BAD_ROW_KINDS],
        ),
        "_truth/bad_rows": _schema(
            ("table", _str),
            ("kind", _str),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("itemid", _i32),
            ("time", _ts),
            ("row_id", _i64),
        ),
    }
)

#: Directory of each table relative to the output directory.
TABLE_DIRS: Mapping[str, str] = MappingProxyType(
    {
        "patients": "hosp/patients",
        "admissions": "hosp/admissions",
        "diagnoses_icd": "hosp/diagnoses_icd",
        "labevents": "hosp/labevents",
        "microbiologyevents": "hosp/microbiologyevents",
        "prescriptions": "hosp/prescriptions",
        "d_labitems": "hosp/d_labitems",
        "icustays": "icu/icustays",
        "chartevents": "icu/chartevents",
        "inputevents": "icu/inputevents",
        "outputevents": "icu/outputevents",
        "procedureevents": "icu/procedureevents",
        "d_items": "icu/d_items",
        "_truth/stays": "_truth/stays",
        "_truth/bad_rows": "_truth/bad_rows",
    }
)

EVENT_TABLES = (
    "chartevents",
    "labevents",
    "inputevents",
    "outputevents",
    "procedureevents",
    "microbiologyevents",
    "prescriptions",
)
_CHUNKED = tuple(t for t in TABLE_DIRS if t not in ("d_items", "d_labitems"))
#: The MIMIC-IV tables (every table but the truth).
_MIMIC_TABLES = tuple(t for t in TABLE_DIRS if not t.startswith("_"))
#: File name of the ``duckdb`` layout (mimic-code's default output name).
DUCKDB_FILE = "mimic4.db"


def _schemas_for(version: str) -> dict[str, pa.Schema]:
    """:data:`SCHEMAS` with each MIMIC-IV table cut to the columns of ``version`` (the truth tables unchanged)."""
    out = dict(SCHEMAS)
    for t in _MIMIC_TABLES:
        keep = [c for c, _ in mimic4_columns(t, version)]
        out[t] = pa.schema([SCHEMAS[t].field(c) for c in keep])
    return out

# --------------------------------------------------------------------------------------------------------------
# Dictionaries (item ids checked against the MIMIC-III demo's MetaVision items; see module docstring)
# --------------------------------------------------------------------------------------------------------------

# chartevents: itemid -> (label, abbreviation, category, unit, param_type)
_CHART_ITEMS: dict[int, tuple[str, str, str, str | None, str]] = {
    220045: ("Heart Rate", "HR", "Routine Vital Signs", "bpm", "Numeric"),
    220050: ("Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg", "Numeric"),
    220051: ("Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg", "Numeric"),
    220052: ("Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", "Numeric"),
    220179: ("Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg", "Numeric"),
    220180: ("Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs", "mmHg", "Numeric"),
    220181: ("Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg", "Numeric"),
    225312: ("ART BP mean", "ART BP mean", "Routine Vital Signs", "mmHg", "Numeric"),
    220210: ("Respiratory Rate", "RR", "Respiratory", "insp/min", "Numeric"),
    220277: ("O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", "Numeric"),
    223761: ("Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", "Numeric"),
    223762: ("Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", "Numeric"),
    220739: ("GCS - Eye Opening", "Eye Opening", "Neurological", None, "Text"),
    223900: ("GCS - Verbal Response", "Verbal Response", "Neurological", None, "Text"),
    223901: ("GCS - Motor Response", "Motor Response", "Neurological", None, "Text"),
    223835: ("Inspired O2 Fraction", "FiO2", "Respiratory", None, "Numeric"),
    223849: ("Ventilator Mode", "Ventilator Mode", "Respiratory", None, "Text"),
    226732: ("O2 Delivery Device(s)", "O2 Delivery Device(s)", "Respiratory", None, "Text"),
    220339: ("PEEP set", "PEEP set", "Respiratory", "cmH2O", "Numeric"),
    226512: ("Admission Weight (Kg)", "Admission Weight (Kg)", "General", "kg", "Numeric"),
    220048: ("Heart Rhythm", "Heart Rhythm", "Routine Vital Signs", None, "Text"),
    220046: ("Heart rate Alarm - High", "HR Alarm - High", "Alarms", "bpm", "Numeric"),
    220047: ("Heart Rate Alarm - Low", "HR Alarm - Low", "Alarms", "bpm", "Numeric"),
    223769: ("O2 Saturation Pulseoxymetry Alarm - High", "SpO2 Alarm - High", "Alarms", "%", "Numeric"),
    223770: ("O2 Saturation Pulseoxymetry Alarm - Low", "SpO2 Alarm - Low", "Alarms", "%", "Numeric"),
    224690: ("Respiratory Rate (Total)", "Respiratory Rate (Total)", "Respiratory", "insp/min", "Numeric"),
    224685: ("Tidal Volume (observed)", "Tidal Volume (observed)", "Respiratory", "mL", "Numeric"),
    220615: ("Creatinine", "Creatinine", "Labs", "mg/dL", "Numeric"),
    227457: ("Platelet Count", "Platelet Count", "Labs", "K/uL", "Numeric with tag"),
    225690: ("Total Bilirubin", "Total Bilirubin", "Labs", "mg/dL", "Numeric"),
}
# inputevents: itemid -> (label, category, unitname)
_INPUT_ITEMS: dict[int, tuple[str, str, str]] = {
    221906: ("Norepinephrine", "Medications", "mg"),
    221289: ("Epinephrine", "Medications", "mg"),
    221662: ("Dopamine", "Medications", "mg"),
    221653: ("Dobutamine", "Medications", "mg"),
    222315: ("Vasopressin", "Medications", "units"),
    222168: ("Propofol", "Medications", "mg"),
    225158: ("NaCl 0.9%", "Fluids/Intake", "mL"),
    225798: ("Vancomycin", "Antibiotics", "dose"),
    225893: ("Piperacillin/Tazobactam (Zosyn)", "Antibiotics", "dose"),
    225855: ("Ceftriaxone", "Antibiotics", "dose"),
    225883: ("Meropenem", "Antibiotics", "dose"),
    225851: ("Cefepime", "Antibiotics", "dose"),
    225850: ("Cefazolin", "Antibiotics", "dose"),
}
_OUTPUT_ITEMS: dict[int, str] = {
    226559: "Foley",
    226560: "Void",
    226561: "Condom Cath",
    226567: "Straight Cath",
    227488: "GU Irrigant Volume In",
    227489: "GU Irrigant/Urine Volume Out",
}
_PROC_ITEMS: dict[int, str] = {225792: "Invasive Ventilation", 225794: "Non-invasive Ventilation"}

# labevents: itemid -> (label, fluid, category, unit, ref_low, ref_high, decimals)
_LAB_ITEMS: dict[int, tuple[str, str, str, str | None, float | None, float | None, int]] = {
    52033: ("Specimen Type", "Blood", "Blood Gas", None, None, None, 0),
    50821: ("pO2", "Blood", "Blood Gas", "mm Hg", 85.0, 105.0, 0),
    50818: ("pCO2", "Blood", "Blood Gas", "mm Hg", 35.0, 45.0, 0),
    50820: ("pH", "Blood", "Blood Gas", "units", 7.35, 7.45, 2),
    50816: ("Oxygen", "Blood", "Blood Gas", "%", None, None, 0),
    50813: ("Lactate", "Blood", "Blood Gas", "mmol/L", 0.5, 2.0, 1),
    51265: ("Platelet Count", "Blood", "Hematology", "K/uL", 150.0, 440.0, 0),
    51301: ("White Blood Cells", "Blood", "Hematology", "K/uL", 4.0, 11.0, 1),
    51222: ("Hemoglobin", "Blood", "Hematology", "g/dL", 13.7, 17.5, 1),
    50885: ("Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 0.0, 1.5, 1),
    50912: ("Creatinine", "Blood", "Chemistry", "mg/dL", 0.5, 1.2, 1),
    51006: ("Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 6.0, 20.0, 0),
    50983: ("Sodium", "Blood", "Chemistry", "mEq/L", 133.0, 145.0, 0),
    50971: ("Potassium", "Blood", "Chemistry", "mEq/L", 3.3, 5.1, 1),
    50889: ("C-Reactive Protein", "Blood", "Chemistry", "mg/L", 0.0, 5.0, 1),
    FERRITIN_ITEMID: ("Ferritin", "Blood", "Chemistry", "ng/mL", 30.0, 400.0, 0),
    HLA_DR_ITEMID: (HLA_DR_LABEL, "Blood", "Immunology (synthetic)", "AB/c", 15000.0, None, 0),
}
_UNKNOWN_CHART_ITEMIDS = np.array([999901, 999902], dtype=np.int32)
_UNKNOWN_LAB_ITEMIDS = np.array([999911, 999912], dtype=np.int32)

# Chart text values (GCS labels as charted in MetaVision; valuenum carries the score).
_GCS_EYE = ("None", "To Pain", "To Speech", "Spontaneously")  # 1..4
_GCS_VERBAL = ("No Response", "Incomprehensible sounds", "Inappropriate Words", "Confused", "Oriented")  # 1..5
_GCS_MOTOR = (
    "No response",
    "Abnormal extension",
    "Abnormal Flexion",
    "Flex-withdraws",
    "Localizes Pain",
    "Obeys Commands",
)  # 1..6
_VENT_MODES = ("CMV/ASSIST/AutoFlow", "CMV/ASSIST", "CPAP/PSV", "SIMV/PRES")
_O2_DEVICES = ("Endotracheal tube", "Bipap mask", "High flow nasal cannula", "Nasal cannula", "None")
_RHYTHMS = ("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "SB (Sinus Bradycardia)", "AF (Atrial Fibrillation)")
_CHART_TEXTS = pa.array(
    [*_GCS_EYE, *_GCS_VERBAL, "No Response-ETT", *_GCS_MOTOR, *_VENT_MODES, *_O2_DEVICES, "ERROR", *_RHYTHMS]
)
_TX_EYE, _TX_VERBAL = 0, 4
_TX_ETT = 9
_TX_MOTOR = 10
_TX_VENT = 16
_TX_O2 = 20
_TX_ERROR = 25
_TX_RHYTHM = 26

# ICD codes: (ICD-10, ICD-9)
_ICD_SEPSIS = ("A419", "0389")
_ICD_SEVERE_SEPSIS = ("R6520", "99592")
_ICD_SEPTIC_SHOCK = ("R6521", "78552")
_ICD_SOURCE = {0: ("J189", "486"), 1: ("R7881", "7907"), 2: ("N390", "5990"), 3: ("K659", "5679")}
_ICD_NONINF = (
    ("I214", "41071"),
    ("I619", "431"),
    ("K922", "5789"),
    ("J9601", "51881"),
    ("I469", "4275"),
    ("E1010", "25013"),
)
_ICD_COMORB = (
    ("I10", "4019"),
    ("E119", "25000"),
    ("N179", "5849"),
    ("I509", "4280"),
    ("J449", "496"),
    ("N189", "5859"),
    ("I4891", "42731"),
    ("E785", "2724"),
    ("F17210", "3051"),
    ("K746", "5715"),
)

# Microbiology
_SPEC = {  # key -> (spec_itemid, spec_type_desc, test_itemid, test_name)
    "blood": (70012, "BLOOD CULTURE", 90201, "Blood Culture, Routine"),
    "sputum": (70062, "SPUTUM", 90043, "RESPIRATORY CULTURE"),
    "urine": (70079, "URINE", 90039, "URINE CULTURE"),
    "peritoneal": (70053, "PERITONEAL FLUID", 90055, "FLUID CULTURE"),
    "mrsa": (70091, "MRSA SCREEN", 90094, "MRSA SCREEN"),
}
_SPEC_KEYS = tuple(_SPEC)
_ORGS = (  # (org_itemid, org_name, susceptibility panel as ab indices into _ABS)
    (80002, "ESCHERICHIA COLI", (0, 1, 2, 3, 4, 5, 6, 7)),
    (80023, "STAPH AUREUS COAG +", (8, 9, 10, 11, 5, 12)),
    (80004, "KLEBSIELLA PNEUMONIAE", (1, 2, 3, 4, 5, 6, 7)),
    (80026, "PSEUDOMONAS AERUGINOSA", (2, 4, 5, 13, 14)),
    (80076, "STREPTOCOCCUS PNEUMONIAE", (10, 15, 16, 8)),
    (80172, "ENTEROCOCCUS FAECALIS", (0, 8, 17)),
    (80017, "PROTEUS MIRABILIS", (0, 1, 2, 5, 6)),
    (80155, "STAPHYLOCOCCUS, COAGULASE NEGATIVE", (8, 9, 11, 12)),
    (80168, "ENTEROCOCCUS FAECIUM", (0, 8, 17)),
    (80075, "YEAST", ()),
    (80293, "POSITIVE FOR METHICILLIN RESISTANT STAPH AUREUS", ()),
)
_ABS = (  # (ab_itemid, ab_name)
    (90004, "AMPICILLIN"),
    (90018, "CEFTRIAXONE"),
    (90028, "CEFEPIME"),
    (90026, "PIPERACILLIN/TAZO"),
    (90029, "MEROPENEM"),
    (90019, "CIPROFLOXACIN"),
    (90008, "TRIMETHOPRIM/SULFA"),
    (90012, "GENTAMICIN"),
    (90015, "VANCOMYCIN"),
    (90016, "OXACILLIN"),
    (90006, "ERYTHROMYCIN"),
    (90011, "TETRACYCLINE"),
    (90025, "LEVOFLOXACIN"),
    (90017, "CEFTAZIDIME"),
    (90013, "TOBRAMYCIN"),
    (90002, "PENICILLIN"),
    (90007, "CLINDAMYCIN"),
    (90010, "NITROFURANTOIN"),
)
# organism choice per source (indices into _ORGS, probabilities)
_ORG_BY_SOURCE = {
    0: ((1, 4, 3, 2, 0), (0.3, 0.25, 0.2, 0.15, 0.1)),
    1: ((0, 1, 2, 5, 7), (0.35, 0.3, 0.15, 0.12, 0.08)),
    2: ((0, 2, 6, 5), (0.55, 0.2, 0.15, 0.1)),
    3: ((0, 2, 8, 9), (0.45, 0.25, 0.15, 0.15)),
}

# Prescriptions catalogue: (drug, drug_type, formulary_drug_cd, prod_strength, dose_val_rx, dose_unit_rx,
#                          form_val_disp, form_unit_disp, doses_per_24_hrs, route, inputevents itemid or 0)
_DRUGS = (
    ("Vancomycin", "MAIN", "SYN-VANC1", "1g Frozen Bag", "1000", "mg", "1", "BAG", 2.0, "IV", 225798),
    ("Piperacillin-Tazobactam", "MAIN", "SYN-PIPT4", "4.5 g Vial", "4.5", "g", "1", "VIAL", 3.0, "IV", 225893),
    ("Ceftriaxone", "MAIN", "SYN-CEFX1", "1g Vial", "1", "g", "1", "VIAL", 1.0, "IV", 225855),
    ("Meropenem", "MAIN", "SYN-MERO1", "1g Vial", "1", "g", "1", "VIAL", 3.0, "IV", 225883),
    ("CefePIME", "MAIN", "SYN-CEFE2", "2g Vial", "2", "g", "1", "VIAL", 2.0, "IV", 225851),
    ("MetroNIDAZOLE", "MAIN", "SYN-METR5", "500 mg Tab", "500", "mg", "1", "TAB", 3.0, "PO", 0),
    ("Azithromycin", "MAIN", "SYN-AZIT5", "500 mg Vial", "500", "mg", "1", "VIAL", 1.0, "IV", 0),
    ("CeFAZolin", "MAIN", "SYN-CEFA2", "2 g Vial", "2", "g", "1", "VIAL", 3.0, "IV", 225850),
    ("Levofloxacin", "MAIN", "SYN-LEVO7", "750 mg Tab", "750", "mg", "1", "TAB", 1.0, "PO", 0),
    ("Bacitracin Ointment", "MAIN", "SYN-BACI1", "1 g Packet", "1", "Appl", "1", "PKT", 2.0, "TP", 0),
    ("Erythromycin 0.5% Ophth Oint", "MAIN", "SYN-ERYO1", "3.5g Tube", "0.5", "in", "0.1", "TUBE", 4.0, "BOTH EYES", 0),
    ("Iso-Osmotic Dextrose", "BASE", "SYN-ISOD2", "200 mL Bag", "200", "mL", "1", "BAG", 2.0, "IV", 0),
    ("Heparin", "MAIN", "SYN-HEPA5", "5000 Units / mL- 1mL Vial", "5000", "UNIT", "1", "mL", 3.0, "SC", 0),
    ("Pantoprazole", "MAIN", "SYN-PANT4", "40 mg Vial", "40", "mg", "1", "VIAL", 1.0, "IV", 0),
    ("Acetaminophen", "MAIN", "SYN-ACET3", "325 mg Tab", "650", "mg", "2", "TAB", 4.0, "PO", 0),
    ("Insulin", "MAIN", "SYN-INSU1", "100 Units / mL - 10 mL Vial", "0", "UNIT", "0", "VIAL", 4.0, "SC", 0),
    ("Docusate Sodium", "MAIN", "SYN-DOCU1", "100 mg Cap", "100", "mg", "1", "CAP", 2.0, "PO", 0),
    ("Senna", "MAIN", "SYN-SENN8", "8.6 mg Tab", "8.6", "mg", "1", "TAB", 2.0, "PO/NG", 0),
    ("Potassium Chloride", "MAIN", "SYN-KCL20", "20 mEq Tab", "40", "mEq", "2", "TAB", 1.0, "PO", 0),
    ("Furosemide", "MAIN", "SYN-FURO2", "20 mg/2 mL Vial", "20", "mg", "1", "VIAL", 2.0, "IV", 0),
    ("Metoprolol Tartrate", "MAIN", "SYN-METO2", "25 mg Tab", "12.5", "mg", "0.5", "TAB", 2.0, "PO", 0),
    ("Ondansetron", "MAIN", "SYN-ONDA4", "2 mg/mL-2mL", "4", "mg", "2", "mL", 4.0, "IV", 0),
    ("Sodium Chloride 0.9%  Flush", "MAIN", "SYN-NACF1", "10 mL Syringe", "3", "mL", "0.3", "SYR", 3.0, "IV", 0),
    ("0.9% Sodium Chloride", "BASE", "SYN-NS100", "100 mL Bag", "100", "mL", "1", "BAG", 3.0, "IV", 0),
)
_D_VANC, _D_PIPT, _D_CEFX, _D_MERO, _D_CEFE, _D_METR, _D_AZIT, _D_CEFA, _D_LEVO, _D_BACI, _D_ERYO, _D_ISOD = range(12)
_ROUTINE_DRUGS = np.arange(12, len(_DRUGS))
# empiric regimens per source (rows of up to two drugs; -1 = none) and their probabilities
_REGIMENS = {
    0: (((_D_VANC, _D_PIPT), (_D_CEFX, _D_AZIT), (_D_VANC, _D_MERO), (_D_LEVO, -1)), (0.45, 0.3, 0.15, 0.1)),
    1: (((_D_VANC, _D_CEFE), (_D_VANC, _D_PIPT), (_D_VANC, _D_MERO)), (0.45, 0.4, 0.15)),
    2: (((_D_CEFX, -1), (_D_PIPT, -1), (_D_MERO, -1), (_D_CEFE, -1)), (0.5, 0.25, 0.1, 0.15)),
    3: (((_D_PIPT, -1), (_D_CEFX, _D_METR), (_D_MERO, -1), (_D_VANC, _D_PIPT)), (0.45, 0.3, 0.1, 0.15)),
}

_CAREUNITS = (
    "Medical Intensive Care Unit (MICU)",
    "Surgical Intensive Care Unit (SICU)",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)",
    "Coronary Care Unit (CCU)",
    "Trauma SICU (TSICU)",
    "Neuro Surgical Intensive Care Unit (Neuro SICU)",
)
_ANCHOR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")


# --------------------------------------------------------------------------------------------------------------
# Public result
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_mimic4` wrote.

    Attributes
    ----------
    out_dir : Path
        Output directory.
    stays, seed, chunk_stays, chunks : int
        Number of ICU stays, random seed, stays per file and number of files per chunked table.
    rows : Mapping[str, int]
        Rows written per table (``"chartevents"``, ``"labevents"`` …, ``"_truth/stays"``, ``"_truth/bad_rows"``).
    bad_rows : Mapping[str, int]
        Injected bad rows per kind (:data:`BAD_ROW_KINDS`).
    endotypes_observable : Mapping[str, int]
        Screened stays per observable endotype (MALS, immunoparalysis, unclassified, indeterminate).
    seconds : float
        Wall-clock time of the run, s.
    settings : Mapping[str, Any]
        The generator settings (rates, prior, limits) as used.
    """

    out_dir: Path
    stays: int
    seed: int
    chunk_stays: int
    chunks: int
    rows: Mapping[str, int]
    bad_rows: Mapping[str, int]
    endotypes_observable: Mapping[str, int]
    seconds: float
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def events(self) -> int:
        """Rows in the event tables (chart, lab, input, output, procedure, microbiology, prescriptions)."""
        return sum(self.rows.get(t, 0) for t in EVENT_TABLES)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record (written to ``_truth/summary.json``)."""
        return {
            "generator": f"immunoguide.cohort.synth/{GENERATOR_VERSION}",
            "out_dir": str(self.out_dir),
            "stays": self.stays,
            "seed": self.seed,
            "chunk_stays": self.chunk_stays,
            "chunks": self.chunks,
            "rows": dict(self.rows),
            "events": self.events,
            "bad_rows": dict(self.bad_rows),
            "endotypes_observable": dict(self.endotypes_observable),
            "seconds": round(self.seconds, 3),
            "settings": dict(self.settings),
        }


@dataclass(frozen=True)
class _Cfg:
    seed: int
    bad_row_rate: float
    censored_ferritin_rate: float
    ferritin_report_limit: float
    infected_fraction: float
    screen_probability: float
    q_class: tuple[float, float, float]  # latent MALS / SII / unclassified
    hla_missing: float


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------


def generate_mimic4(
    out_dir: str | Path,
    *,
    stays: int,
    seed: int,
    chunk_stays: int = 5000,
    bad_row_rate: float = 0.002,
    censored_ferritin_rate: float = 0.2,
    ferritin_report_limit_ng_per_ml: float = 2000.0,
    infected_fraction: float = 0.55,
    endotype_prior: Literal["immunosep", "provide"] = "immunosep",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    layout: Literal["parquet-parts", "physionet-csv", "physionet-parquet", "duckdb"] = "parquet-parts",
    mimic_version: Literal["2.0", "2.2", "3.1"] = "2.2",
) -> SynthSummary:
    """Write ``stays`` synthetic ICU stays as MIMIC-IV tables under ``out_dir``, in one of :data:`LAYOUTS`.

    Parameters
    ----------
    out_dir : str or Path
        Output directory; created if needed. It must not already contain generator output unless ``overwrite``.
    stays : int
        Number of ICU stays (1 … 9,999,999). About 1,000 event rows per stay on average.
    seed : int
        Random seed (>= 0). Same seed → same content; see the module docstring for chunk-size independence.
    chunk_stays : int
        Stays per Parquet file (one file per chunk per table: ``part-00000.parquet`` …).
    bad_row_rate : float
        Probability in [0, 0.5] that an eligible event row (chart, lab, input, output) is made bad.
    censored_ferritin_rate : float
        Probability in [0, 1] that a ferritin result above ``ferritin_report_limit_ng_per_ml`` is reported censored
        (``"GREATER THAN <limit>"``, ``valuenum`` NULL) instead of as a number.
    ferritin_report_limit_ng_per_ml : float
        Upper reporting limit of the (synthetic) ferritin assay, ng/mL.
    infected_fraction : float
        Fraction of stays with an infection, in (0, 1).
    endotype_prior : {"immunosep", "provide"}
        Observable endotype mix among screened stays (:data:`ENDOTYPE_PRIORS`).
    overwrite : bool
        Remove earlier generator output (only the table directories this function writes) before writing; refused
        when the directory holds those table directories but no ``_truth/summary.json`` (not generator output).
    progress : callable, optional
        Called as ``progress(stays_done, stays_total)`` after each block.
    layout : {"parquet-parts", "physionet-csv", "physionet-parquet", "duckdb"}
        How the tables are written (module docstring); the rows and values are the same in each.
    mimic_version : {"2.2", "3.1", "2.0"}
        Column set of the MIMIC-IV release (module docstring).

    Returns
    -------
    SynthSummary
        Row counts per table, bad-row counts, observable endotype counts, timing.

    Raises
    ------
    InputError
        On a bad argument or when ``out_dir`` already holds generator output and ``overwrite`` is False.
    """
    t_start = time.perf_counter()
    cfg = _make_cfg(
        stays=stays,
        seed=seed,
        chunk_stays=chunk_stays,
        bad_row_rate=bad_row_rate,
        censored_ferritin_rate=censored_ferritin_rate,
        limit=ferritin_report_limit_ng_per_ml,
        infected_fraction=infected_fraction,
        endotype_prior=endotype_prior,
        layout=layout,
        mimic_version=mimic_version,
    )
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    limit_text = f"GREATER THAN {ferritin_report_limit_ng_per_ml:g}"
    lab_texts = pa.array(["ART.", "VEN.", "MIX.", "ERROR", limit_text])

    schemas = _schemas_for(mimic_version)
    sink = _Sink(out, chunk_stays, stays, schemas)
    counters: dict[str, int] = {}
    bad_totals = dict.fromkeys(BAD_ROW_KINDS, 0)
    endo_counts = dict.fromkeys(ENDOTYPES, 0)
    n_blocks = math.ceil(stays / BLOCK_STAYS)
    for block in range(n_blocks):
        g0 = block * BLOCK_STAYS
        n = min(BLOCK_STAYS, stays - g0)
        tables = _generate_block(cfg, block, g0, n, counters, lab_texts)
        truth = tables["_truth/stays"]
        for k in BAD_ROW_KINDS:
            bad_totals[k] += int(pc.sum(truth[f"bad_{k}"]).as_py() or 0)
        scr = truth.filter(truth["screened"])["endotype_observable"].to_pylist()
        for e in scr:
            endo_counts[e] += 1
        sink.write_block(tables, g0, g0 + n)
        if progress is not None:
            progress(g0 + n, stays)
    rows = sink.close()
    for name, schema, data in (
        ("d_items", schemas["d_items"], _d_items()),
        ("d_labitems", schemas["d_labitems"], _d_labitems()),
    ):
        path = out / TABLE_DIRS[name] / "part-00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict(data, schema=schema), path)
        rows[name] = len(data["itemid"])
    _relayout(out, layout, mimic_version, schemas)
    summary = SynthSummary(
        out_dir=out,
        stays=stays,
        seed=seed,
        chunk_stays=chunk_stays,
        chunks=sink.n_chunks,
        rows=rows,
        bad_rows=bad_totals,
        endotypes_observable=endo_counts,
        seconds=time.perf_counter() - t_start,
        settings={
            "bad_row_rate": bad_row_rate,
            "censored_ferritin_rate": censored_ferritin_rate,
            "ferritin_report_limit_ng_per_ml": ferritin_report_limit_ng_per_ml,
            "infected_fraction": infected_fraction,
            "endotype_prior": endotype_prior,
            "latent_endotype_mix": list(cfg.q_class),
            "hla_dr_missing_probability": cfg.hla_missing,
            "screen_probability": cfg.screen_probability,
            "block_stays": BLOCK_STAYS,
            "layout": layout,
            "mimic_version": mimic_version,
        },
    )
    (out / "_truth" / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n", "utf-8")
    return summary


# --------------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------------


def _make_cfg(
    *,
    stays: int,
    seed: int,
    chunk_stays: int,
    bad_row_rate: float,
    censored_ferritin_rate: float,
    limit: float,
    infected_fraction: float,
    endotype_prior: str,
    layout: str = "parquet-parts",
    mimic_version: str = "2.2",
) -> _Cfg:
    where = "generate_mimic4"

    def check(ok: bool, name: str, expected: str, got: Any) -> None:
        if not ok:
            raise InputError(expected=expected, got=got, where=where, field=name, todo=f"pass a valid {name}")

    check(isinstance(stays, int) and 1 <= stays <= 9_999_999, "stays", "an integer in 1..9,999,999", stays)
    check(isinstance(seed, int) and seed >= 0, "seed", "an integer >= 0", seed)
    check(isinstance(chunk_stays, int) and chunk_stays >= 1, "chunk_stays", "an integer >= 1", chunk_stays)
    check(0.0 <= bad_row_rate <= 0.5, "bad_row_rate", "a probability in [0, 0.5]", bad_row_rate)
    check(
        0.0 <= censored_ferritin_rate <= 1.0,
        "censored_ferritin_rate",
        "a probability in [0, 1]",
        censored_ferritin_rate,
    )
    check(0.0 < limit, "ferritin_report_limit_ng_per_ml", "a positive ferritin limit in ng/mL", limit)
    check(0.0 < infected_fraction < 1.0, "infected_fraction", "a fraction in (0, 1)", infected_fraction)
    check(endotype_prior in ENDOTYPE_PRIORS, "endotype_prior", f"one of {sorted(ENDOTYPE_PRIORS)}", endotype_prior)
    check(layout in LAYOUTS, "layout", f"one of {', '.join(LAYOUTS)}", layout)
    check(mimic_version in MIMIC4_VERSIONS, "mimic_version", f"one of {', '.join(MIMIC4_VERSIONS)}", mimic_version)
    q, m = _calibrate_endotypes(ENDOTYPE_PRIORS[endotype_prior], censored_ferritin_rate, limit)
    return _Cfg(
        seed=seed,
        bad_row_rate=bad_row_rate,
        censored_ferritin_rate=censored_ferritin_rate,
        ferritin_report_limit=limit,
        infected_fraction=infected_fraction,
        screen_probability=0.9,
        q_class=q,
        hla_missing=m,
    )


# Ferritin and HLA-DR distributions (synthetic choices; only the thresholds are protocol facts).
_FERR_LOW_MU, _FERR_LOW_SD = math.log(450.0), 1.0  # non-MALS: log-normal, truncated to <= 4420 ng/mL
_FERR_MALS_SD = 0.7  # MALS: 4420 * exp(|N(0, 0.7)|) ng/mL
_HLA_SII_MU, _HLA_SII_SD = math.log(2600.0), 0.45  # truncated to < 5000 AB/c
_HLA_UNC_MU, _HLA_UNC_SD = math.log(11000.0), 0.5  # truncated to >= 5000 AB/c
_HLA_MALS_MU, _HLA_MALS_SD = math.log(6000.0), 0.7


def _calibrate_endotypes(
    target: tuple[float, float, float], r: float, limit: float
) -> tuple[tuple[float, float, float], float]:
    """Latent class mix and HLA-DR-missing probability so that the *observable* mix matches ``target``.

    A MALS ferritin is censored (hence indeterminate) with probability ``r`` when ``limit`` < 4420 ng/mL; a
    non-MALS ferritin with probability ``r * P(limit < F <= 4420)``; a missing HLA-DR makes a non-MALS stay
    indeterminate. When the target cannot be met (too much censoring), no HLA-DR is missing and the non-MALS
    classes keep their target ratio.

    >>> q, m = _calibrate_endotypes((0.2, 0.4, 0.4), 0.0, 2000.0)
    >>> [round(x, 3) for x in q], round(m, 3)
    ([0.2, 0.4, 0.4], 0.0)
    """
    t_m, t_s, t_u = target
    l_m = r if limit < MALS_FERRITIN_NG_PER_ML else 0.0
    if limit < MALS_FERRITIN_NG_PER_ML:
        b = (math.log(MALS_FERRITIN_NG_PER_ML) - _FERR_LOW_MU) / _FERR_LOW_SD
        a = (math.log(limit) - _FERR_LOW_MU) / _FERR_LOW_SD
        p_hi = float((ndtr(b) - ndtr(a)) / ndtr(b))
    else:
        p_hi = 0.0
    l_n = r * p_hi
    q_m = min(t_m / (1.0 - l_m), 0.999) if l_m < 1 else 0.999
    keep = (t_s + t_u) / ((1.0 - l_n) * (1.0 - q_m)) if l_n < 1 else 2.0
    if keep > 1.0:
        m = 0.0
        q_s = (1.0 - q_m) * t_s / (t_s + t_u)
        q_u = (1.0 - q_m) * t_u / (t_s + t_u)
    else:
        m = 1.0 - keep
        q_s = t_s / ((1.0 - l_n) * (1.0 - m))
        q_u = 1.0 - q_m - q_s
    return (q_m, q_s, q_u), m


def _output_paths() -> list[str]:
    """Every path (relative to the output directory) the generator may write, in any layout."""
    paths = list(TABLE_DIRS.values())
    for t in _MIMIC_TABLES:
        paths += [f"{TABLE_DIRS[t]}.csv.gz", f"{TABLE_DIRS[t]}.parquet"]
    return [*paths, DUCKDB_FILE, f"{DUCKDB_FILE}.wal", "_layout_tmp"]


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    existing = [rel for rel in _output_paths() if (out / rel).exists()]
    if existing and not overwrite:
        raise InputError(
            expected="an empty or new output directory",
            got=str(out),
            where="generate_mimic4",
            field="out_dir",
            todo=f"choose another directory or pass overwrite=True (CLI: --overwrite); found {existing[0]}",
        )
    if existing and not (out / "_truth" / "summary.json").is_file():
        raise InputError(
            expected="earlier output of this generator (with _truth/summary.json) before overwriting",
            got=str(out),
            where="generate_mimic4",
            field="out_dir",
            todo=f"choose another directory; {existing[0]} here was not written by the generator and is kept",
        )
    for rel in existing:
        if (out / rel).is_dir():
            shutil.rmtree(out / rel)
        else:
            (out / rel).unlink()
    out.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------------------------
# Layouts: the chunked Parquet parts are rewritten as PhysioNet files or a mimic-code DuckDB database
# --------------------------------------------------------------------------------------------------------------


def _duckdb(path: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (file or memory) with bounded memory, keeping row order in COPY."""
    memory = os.environ.get("IMMUNOGUIDE_DUCKDB_MEMORY", "4GB")
    con = duckdb.connect(str(path) if path is not None else ":memory:", config={"memory_limit": memory})
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = true")
    return con


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _write_csv_gz(con: duckdb.DuckDBPyConnection, parts: list[Path], dest: Path) -> None:
    """The rows of ``parts`` in order, as PhysioNet writes MIMIC-IV: header, commas, empty for NULL, gzip."""
    files = "[" + ", ".join(_lit(p) for p in parts) + "]"
    con.execute(
        f"COPY (SELECT * FROM read_parquet({files})) TO {_lit(dest)} "
        "(FORMAT csv, HEADER, DELIMITER ',', QUOTE '\"', ESCAPE '\"', COMPRESSION gzip)"
    )


def _relayout(out: Path, layout: str, version: str, schemas: Mapping[str, pa.Schema]) -> None:
    """Rewrite the MIMIC-IV tables of ``out`` (Parquet parts) in ``layout``; the truth tables stay as they are."""
    if layout == "parquet-parts":
        return
    parts = {t: sorted((out / TABLE_DIRS[t]).glob("*.parquet")) for t in _MIMIC_TABLES}
    if layout == "physionet-parquet":
        for t in _MIMIC_TABLES:
            with pq.ParquetWriter(out / f"{TABLE_DIRS[t]}.parquet", schemas[t], compression="snappy") as w:
                for part in parts[t]:
                    for batch in pq.ParquetFile(part).iter_batches(batch_size=1 << 20):
                        w.write_batch(batch)
    elif layout == "physionet-csv":
        con = _duckdb()
        for t in _MIMIC_TABLES:
            _write_csv_gz(con, parts[t], out / f"{TABLE_DIRS[t]}.csv.gz")
        con.close()
    else:  # duckdb: create the tables with create.sql's types, then COPY each table from its csv.gz
        tmp = out / "_layout_tmp"
        tmp.mkdir()
        con = _duckdb(out / DUCKDB_FILE)
        for schema in DUCKDB_SCHEMAS.values():
            con.execute(f"CREATE SCHEMA {schema}")
        for t in _MIMIC_TABLES:
            target = f"{DUCKDB_SCHEMAS[TABLE_DIRS[t].split('/')[0]]}.{t}"
            cols = ", ".join(f'"{c}" {typ}' for c, typ in mimic4_columns(t, version))
            con.execute(f"CREATE TABLE {target} ({cols})")
            csv_file = tmp / f"{t}.csv.gz"
            _write_csv_gz(con, parts[t], csv_file)
            con.execute(f"COPY {target} FROM {_lit(csv_file)} (HEADER, DELIM ',', QUOTE '\"', ESCAPE '\"')")
        con.execute("CHECKPOINT")
        con.close()
        shutil.rmtree(tmp)
    for t in _MIMIC_TABLES:
        shutil.rmtree(out / TABLE_DIRS[t])
    for module in DUCKDB_SCHEMAS:
        if (out / module).is_dir() and not any((out / module).iterdir()):
            (out / module).rmdir()


# --------------------------------------------------------------------------------------------------------------
# Writing: one file per (table, chunk); blocks are cut at chunk boundaries
# --------------------------------------------------------------------------------------------------------------


class _Sink:
    """Streams block tables into ``part-NNNNN.parquet`` files, one per chunk of stays, buffering small tables."""

    _FLUSH_ROWS = 250_000

    def __init__(self, out: Path, chunk_stays: int, stays: int, schemas: Mapping[str, pa.Schema]) -> None:
        self.out = out
        self.schemas = schemas
        self.chunk_stays = chunk_stays
        self.n_chunks = math.ceil(stays / chunk_stays)
        self.chunk = -1
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.buffers: dict[str, list[pa.Table]] = {}
        self.rows: dict[str, int] = dict.fromkeys(_CHUNKED, 0)

    def write_block(self, tables: dict[str, pa.Table], g0: int, g1: int) -> None:
        pos = g0
        while pos < g1:
            chunk = pos // self.chunk_stays
            end = min(g1, (chunk + 1) * self.chunk_stays)
            if chunk != self.chunk:
                self._finish_chunk()
                self.chunk = chunk
            for name in _CHUNKED:
                t = tables[name]
                gcol = t.column("_g").to_numpy()
                lo, hi = np.searchsorted(gcol, [pos, end])
                part = t.slice(lo, hi - lo).select(self.schemas[name].names)
                if part.num_rows:
                    self.buffers.setdefault(name, []).append(part)
                    if sum(p.num_rows for p in self.buffers[name]) >= self._FLUSH_ROWS:
                        self._flush(name)
            pos = end

    def _flush(self, name: str) -> None:
        parts = self.buffers.pop(name, [])
        if not parts:
            return
        table = pa.concat_tables(parts)
        self._writer(name).write_table(table, row_group_size=1 << 20)
        self.rows[name] += table.num_rows

    def _writer(self, name: str) -> pq.ParquetWriter:
        w = self.writers.get(name)
        if w is None:
            path = self.out / TABLE_DIRS[name] / f"part-{self.chunk:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            w = pq.ParquetWriter(path, self.schemas[name], compression="snappy")
            self.writers[name] = w
        return w

    def _finish_chunk(self) -> None:
        if self.chunk < 0:
            return
        for name in _CHUNKED:
            self._flush(name)
            self._writer(name).close()  # opens (and writes an empty file) when the chunk had no rows
        self.writers.clear()

    def close(self) -> dict[str, int]:
        self._finish_chunk()
        return dict(self.rows)


# --------------------------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------------------------


def _rng(seed: int, block: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block, stream)))


def _u(rng: np.random.Generator, lo: Any, hi: Any, n: int | None = None) -> np.ndarray:
    return rng.uniform(lo, hi, n)


def _minute(t: np.ndarray) -> np.ndarray:
    """Floor times (s) to the minute, keeping the NULL sentinel."""
    return np.where(t == _NAT, _NAT, t - np.mod(t, 60))


def _ceil_minute(t: np.ndarray) -> np.ndarray:
    """Round times (s) up to the next whole minute."""
    return t + np.mod(-t, 60)


def _grid(
    rng: np.random.Generator,
    start: np.ndarray,
    end: np.ndarray,
    step: np.ndarray | float,
    jitter: float = 0.0,
    drop: float = 0.0,
    keep_ends: bool = False,
    include_end: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-stay times from ``start`` to ``end`` every ``step`` s (± ``jitter`` s), some dropped.

    With ``keep_ends`` the first and last points are never dropped; with ``include_end`` a point at ``end`` is
    added when the regular grid stops more than a quarter step before it. Returns (local stay index, time in s)
    sorted by stay then time.
    """
    step_a = np.broadcast_to(np.asarray(step, dtype=np.float64), start.shape)
    span = np.maximum(end - start, 0).astype(np.float64)
    n = np.floor(span / step_a).astype(np.int64) + 1
    n = np.where(end >= start, n, 0)
    total = int(n.sum())
    rep = np.repeat(np.arange(len(start)), n)
    first = np.cumsum(n) - n
    pos = np.arange(total) - np.repeat(first, n)
    t = start[rep] + (pos * step_a[rep]).astype(np.int64)
    if jitter:
        t = t + rng.uniform(-jitter, jitter, total).astype(np.int64)
        t = np.clip(t, start[rep], end[rep])
    if include_end:
        last_t = np.where(n > 0, start + ((n - 1) * step_a).astype(np.int64), end)
        extra = np.flatnonzero((n > 0) & (end - last_t > step_a / 4))
        rep = np.concatenate([rep, extra])
        t = np.concatenate([t, end[extra]])
        order = np.argsort(rep, kind="stable")
        rep, t = rep[order], t[order]
        n = np.bincount(rep, minlength=len(start))
        first = np.cumsum(n) - n
        total = len(rep)
    keep = np.ones(total, dtype=bool)
    if drop:
        keep = rng.random(total) >= drop
        if keep_ends:
            keep[first[n > 0]] = True
            keep[(first + n - 1)[n > 0]] = True
    return rep[keep], t[keep]


def _cat(pool: Any, idx: np.ndarray) -> pa.Array:
    """Strings ``pool[idx]``; ``idx < 0`` → NULL."""
    arr = pool if isinstance(pool, pa.Array) else pa.array(list(pool), type=pa.string())
    return pc.take(arr, pa.array(idx.astype(np.int32), mask=idx < 0))


def _numtext(num: np.ndarray, text_idx: np.ndarray, texts: pa.Array) -> pa.Array:
    """``value`` column: ``texts[text_idx]`` where given, else the number formatted; NULL when neither."""
    as_text = pc.take(texts, pa.array(np.where(text_idx >= 0, text_idx, 0).astype(np.int32)))
    as_num = pc.cast(pa.array(np.where(np.isnan(num), 0.0, num)), pa.string())
    out = pc.if_else(pa.array(text_idx >= 0), as_text, as_num)
    null = (text_idx < 0) & np.isnan(num)
    if null.any():
        out = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), out)
    return out


def _to_arrow(values: Any, typ: pa.DataType) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == typ else values.cast(typ)
    v = np.asarray(values)
    if pa.types.is_timestamp(typ):
        mask = v == _NAT
        return pa.array(np.where(mask, 0, v) * 1_000_000, type=typ, mask=mask)
    if pa.types.is_date32(typ):
        mask = v == _NAT
        return pa.array(np.where(mask, 0, v).astype(np.int32), type=typ, mask=mask)
    if pa.types.is_floating(typ):
        return pa.array(v.astype(np.float64), type=typ, from_pandas=True)
    if pa.types.is_boolean(typ):
        return pa.array(v.astype(bool), type=typ)
    if pa.types.is_integer(typ):
        mask = v < 0
        return pa.array(np.where(mask, 0, v).astype(typ.to_pandas_dtype()), type=typ, mask=mask)
    raise TypeError(f"no numpy conversion for {typ}")  # pragma: no cover - programming error


def _finish(
    name: str, cols: dict[str, Any], s: np.ndarray, t: np.ndarray, g0: int, perm: np.ndarray | None = None
) -> pa.Table:
    """Sort rows by (stay, time), build the Arrow table with the table's schema plus the hidden ``_g`` column."""
    schema = SCHEMAS[name]
    if perm is None:
        perm = _sort_perm(s, t)
    arrays = []
    for f in schema:
        v = cols[f.name]
        if callable(v):
            arrays.append(_to_arrow(v(perm), f.type))
        elif isinstance(v, (pa.Array, pa.ChunkedArray)):
            arrays.append(_to_arrow(pc.take(v, pa.array(perm)), f.type))
        else:
            arrays.append(_to_arrow(np.asarray(v)[perm], f.type))
    arrays.append(pa.array((g0 + s[perm]).astype(np.int64)))
    return pa.Table.from_arrays(arrays, schema=schema.append(pa.field("_g", pa.int64())))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _trunc_lognormal(
    rng: np.random.Generator, n: int, mu: float, sd: float, lo: float | None, hi: float | None
) -> np.ndarray:
    """Log-normal draws truncated to [lo, hi] by inverse CDF (vectorised)."""
    a = ndtr((math.log(lo) - mu) / sd) if lo else 0.0
    b = ndtr((math.log(hi) - mu) / sd) if hi else 1.0
    u = rng.uniform(a, b, n)
    u = np.clip(u, 1e-12, 1 - 1e-12)
    return np.exp(mu + sd * ndtri(u))


# --------------------------------------------------------------------------------------------------------------
# Latent stays
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Stays:
    n: int
    g: np.ndarray
    subject_id: np.ndarray
    hadm_id: np.ndarray
    stay_id: np.ndarray
    first_of_subject: np.ndarray
    female: np.ndarray
    anchor_age: np.ndarray
    anchor_year: np.ndarray
    anchor_group: np.ndarray
    icd10: np.ndarray
    weight: np.ndarray
    severity: np.ndarray
    infected: np.ndarray
    source: np.ndarray
    noninf_reason: np.ndarray
    onset_kind: np.ndarray
    onset: np.ndarray
    event_time: np.ndarray
    plateau_h: np.ndarray
    tau_h: np.ndarray
    base: np.ndarray  # (n, 6)
    amp: np.ndarray  # (n, 6)
    died: np.ndarray
    died_in_icu: np.ndarray
    deathtime: np.ndarray
    dod_days: np.ndarray
    admittime: np.ndarray
    dischtime: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    ed: np.ndarray
    edregtime: np.ndarray
    edouttime: np.ndarray
    careunit: np.ndarray
    comorb: np.ndarray  # (n, 10) bool
    latent_class: np.ndarray  # 0 MALS, 1 SII, 2 unclassified (-1 not infected)
    art_line: np.ndarray
    temp_f: np.ndarray
    foley: np.ndarray
    irrigation: np.ndarray
    # filled in later
    vent_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vent_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    niv_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    niv_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pressors: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


_W_SOURCE = np.array(
    [  # resp, coag, liver, cardio, cns, renal
        [1.0, 0.4, 0.25, 0.7, 0.4, 0.5],  # pneumonia
        [0.5, 0.7, 0.4, 1.0, 0.4, 0.7],  # bacteremia
        [0.35, 0.4, 0.3, 0.8, 0.5, 0.9],  # urinary
        [0.5, 0.5, 0.9, 0.8, 0.3, 0.6],  # abdominal
    ]
)
_W_NONINF = np.array(
    [
        [0.5, 0.3, 0.3, 1.0, 0.4, 0.5],  # cardiac (NSTEMI)
        [0.6, 0.2, 0.1, 0.4, 1.0, 0.2],  # neuro (ICH)
        [0.3, 0.6, 0.5, 0.8, 0.3, 0.5],  # GI bleed
        [1.0, 0.2, 0.2, 0.5, 0.4, 0.4],  # respiratory failure
        [0.7, 0.4, 0.5, 1.0, 0.9, 0.7],  # cardiac arrest
        [0.3, 0.2, 0.2, 0.5, 0.5, 0.8],  # DKA
    ]
)
_NONINF_P = (0.25, 0.2, 0.15, 0.2, 0.08, 0.12)


def _draw_stays(rng: np.random.Generator, cfg: _Cfg, g0: int, n: int) -> _Stays:
    g = np.arange(g0, g0 + n, dtype=np.int64)
    infected = rng.random(n) < cfg.infected_fraction
    source = np.where(infected, rng.choice(4, n, p=[0.45, 0.2, 0.2, 0.15]), -1)
    noninf_reason = rng.choice(len(_NONINF_P), n, p=_NONINF_P)
    severity = np.where(infected, rng.beta(2.2, 2.8, n), rng.beta(1.6, 3.4, n))
    age = np.clip(np.round(rng.normal(64, 16, n)), 18, 91)
    female = rng.random(n) < 0.44
    weight = np.round(np.clip(rng.normal(np.where(female, 72, 86), 18), 38, 180), 1)
    comorb = rng.random((n, len(_ICD_COMORB))) < np.array([0.5, 0.3, 0.0, 0.2, 0.15, 0.15, 0.2, 0.35, 0.15, 0.05])
    latent_class = np.where(infected, rng.choice(3, n, p=np.array(cfg.q_class) / sum(cfg.q_class)), -1)

    # death
    endo_effect = np.select([latent_class == 0, latent_class == 1], [0.9, 0.5], 0.0)
    p_die = _sigmoid(-4.2 + 4.6 * severity + 0.025 * (age - 64) + endo_effect)
    died = rng.random(n) < p_die

    # subjects: ~7 % of admissions are a later admission of the previous stay's (surviving) subject
    readmit = rng.random(n) < 0.07
    readmit[0] = False
    readmit[1:] &= ~died[:-1]
    first_of_subject = ~readmit
    seg = np.cumsum(first_of_subject) - 1
    first_idx = np.flatnonzero(first_of_subject)
    subject_first = first_idx[seg]

    # durations (hours)
    ed = rng.random(n) < 0.7
    pre_h = np.where(ed, _u(rng, 2, 10, n), np.clip(np.exp(rng.normal(math.log(36), 0.8, n)), 12, 400))
    los_h = np.clip(np.exp(rng.normal(math.log(44.0) + 0.9 * severity, 0.75, n)), 6, 45 * 24)
    died_in_icu = died & (rng.random(n) < 0.75)
    post_h = np.where(
        died_in_icu,
        0.0,
        np.where(died, _u(rng, 12, 240, n), np.clip(np.exp(rng.normal(math.log(72), 0.8, n)), 4, 1440)),
    )
    gap_h = np.clip(np.exp(rng.normal(math.log(90 * 24), 1.0, n)), 48, 700 * 24)
    step_s = ((pre_h + los_h + post_h + gap_h) * _H).astype(np.int64)
    cs = np.concatenate([[0], np.cumsum(step_s)[:-1]])
    anchor_year = rng.integers(2110, 2200, n)
    anchor_group = rng.integers(0, len(_ANCHOR_GROUPS), n)
    year0 = np.datetime64("1970-01-01", "Y")
    yr_s = (year0 + (anchor_year - 1970).astype("timedelta64[Y]")).astype("datetime64[s]").astype(np.int64)
    base_s = yr_s + (_u(rng, 0, 2.5, n) * 365.25 * _DAY).astype(np.int64)
    admittime = _minute(base_s[subject_first] + (cs - cs[subject_first]))
    intime = _minute(admittime + (pre_h * _H).astype(np.int64)) + rng.integers(0, 60, n)
    outtime = intime + (los_h * _H).astype(np.int64)
    dischtime = _minute(outtime + (post_h * _H).astype(np.int64)) + np.where(died_in_icu, 0, 60)
    dischtime = np.where(died_in_icu, outtime, dischtime)
    deathtime = np.where(died, dischtime, _NAT)
    edregtime = np.where(ed, _minute(admittime - (_u(rng, 1, 6, n) * _H).astype(np.int64)), _NAT)
    edouttime = np.where(ed, np.minimum(_minute(admittime + (_u(rng, 0, 1, n) * _H).astype(np.int64)), intime), _NAT)

    # subject-level attributes come from the subject's first stay
    female = female[subject_first]
    anchor_age = age[subject_first]
    anchor_year = anchor_year[subject_first]
    anchor_group = anchor_group[subject_first]
    icd10 = np.where(anchor_group <= 1, False, np.where(anchor_group == 2, rng.random(n) < 0.5, True))
    # out-of-hospital death within a year for some survivors (only the subject's last stay can die)
    last_of_subject = np.r_[first_of_subject[1:], True]
    dod_s = np.where(
        died,
        deathtime,
        np.where(
            last_of_subject & (rng.random(n) < 0.08), dischtime + (_u(rng, 1, 365, n) * _DAY).astype(np.int64), _NAT
        ),
    )
    dod_days = np.where(dod_s == _NAT, _NAT, np.floor_divide(dod_s, _DAY))

    # infection onset
    kind = rng.choice(3, n, p=[0.65, 0.15, 0.2])  # community, ward, icu-acquired
    kind = np.where((kind == 1) & (pre_h < 52), 0, kind)
    kind = np.where((kind == 2) & (los_h < 96), 0, kind)
    arrival = np.where(ed, edregtime, admittime)
    onset = np.select(
        [kind == 0, kind == 1],
        [
            arrival - (_u(rng, 0, 24, n) * _H).astype(np.int64),
            admittime + (_u(rng, 48, np.maximum(pre_h - 2, 49), n) * _H).astype(np.int64),
        ],
        intime + (_u(rng, 48, np.maximum(los_h - 36, 49), n) * _H).astype(np.int64),
    )
    onset = np.where(infected, _minute(onset), _NAT)
    event_time = np.where(infected, onset, intime - (_u(rng, 0, 8, n) * _H).astype(np.int64))

    # organ dysfunction
    w = np.where(infected[:, None], _W_SOURCE[np.maximum(source, 0)], _W_NONINF[noninf_reason])
    amp = 1.25 * severity[:, None] * w * np.exp(rng.normal(0, 0.3, (n, 6)))
    base = 0.03 + np.abs(rng.normal(0, 0.04, (n, 6)))
    base[:, _ORG_RENAL] += 0.35 * comorb[:, 5]  # CKD
    base[:, _ORG_LIVER] += 0.45 * comorb[:, 9]  # cirrhosis
    base[:, _ORG_COAG] += 0.3 * comorb[:, 9]
    base[:, _ORG_RESP] += 0.15 * comorb[:, 4]  # COPD

    return _Stays(
        n=n,
        g=g,
        subject_id=(10_000_000 + g0 + subject_first).astype(np.int64),
        hadm_id=20_000_000 + g,
        stay_id=30_000_000 + g,
        first_of_subject=first_of_subject,
        female=female,
        anchor_age=anchor_age,
        anchor_year=anchor_year,
        anchor_group=anchor_group,
        icd10=icd10,
        weight=weight,
        severity=severity,
        infected=infected,
        source=source,
        noninf_reason=noninf_reason,
        onset_kind=np.where(infected, kind, -1),
        onset=onset,
        event_time=event_time,
        plateau_h=_u(rng, 12, 72, n),
        tau_h=_u(rng, 12, 60, n),
        base=base,
        amp=amp,
        died=died,
        died_in_icu=died_in_icu,
        deathtime=deathtime,
        dod_days=dod_days,
        admittime=admittime,
        dischtime=dischtime,
        intime=intime,
        outtime=outtime,
        ed=ed,
        edregtime=edregtime,
        edouttime=edouttime,
        careunit=rng.choice(len(_CAREUNITS), n, p=[0.3, 0.12, 0.2, 0.15, 0.1, 0.08, 0.05]),
        comorb=comorb,
        latent_class=latent_class,
        art_line=rng.random(n) < 0.25 + 0.55 * severity,
        temp_f=rng.random(n) < 0.3,
        foley=rng.random(n) < 0.55 + 0.4 * severity,
        irrigation=rng.random(n) < 0.03,
    )


def _levels(st: _Stays, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Organ-dysfunction levels (rows × 6) at times ``t`` (s) for stays ``idx``."""
    h = (t - st.event_time[idx]) / _H
    rise = _sigmoid((h - 3.0) / 2.5)
    dec = np.exp(-np.clip(h - st.plateau_h[idx], 0, None) / st.tau_h[idx])
    died = st.died[idx]
    prof = rise * np.where(died, 1.0, dec)
    dt = np.where(died, st.deathtime[idx], 0) - t
    ramp = np.where(died, np.clip(1.0 - dt / (36.0 * _H), 0.0, 1.0), 0.0)
    return np.clip(st.base[idx] + st.amp[idx] * prof[:, None] + 0.35 * ramp[:, None], 0.0, 1.3)


def _runs(idx: np.ndarray, t: np.ndarray, above: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of consecutive ``above`` rows per stay: (stay, start time, end time, number of points)."""
    same_prev = np.r_[False, idx[1:] == idx[:-1]]
    same_next = np.r_[idx[1:] == idx[:-1], False]
    start = above & ~(np.r_[False, above[:-1]] & same_prev)
    end = above & ~(np.r_[above[1:], False] & same_next)
    si, ei = np.flatnonzero(start), np.flatnonzero(end)
    return idx[si], t[si], t[ei], ei - si + 1


def _merge_runs(
    stay: np.ndarray, t0: np.ndarray, t1: np.ndarray, npts: np.ndarray, gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge runs of the same stay separated by at most ``gap`` s (clinicians do not stop a drip for one hour)."""
    if len(stay) == 0:
        return stay, t0, t1, npts
    new = np.r_[True, (stay[1:] != stay[:-1]) | (t0[1:] - t1[:-1] > gap)]
    starts = np.flatnonzero(new)
    return stay[starts], t0[starts], np.maximum.reduceat(t1, starts), np.add.reduceat(npts, starts)


def _per_stay_interval(
    n: int, run_stay: np.ndarray, run_start: np.ndarray, run_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First start and last end per stay (``_NAT`` where a stay has no run)."""
    s = np.full(n, np.iinfo(np.int64).max)
    e = np.full(n, _NAT)
    np.minimum.at(s, run_stay, run_start)
    np.maximum.at(e, run_stay, run_end)
    s = np.where(e == _NAT, _NAT, s)
    return s, e


# --------------------------------------------------------------------------------------------------------------
# One block
# --------------------------------------------------------------------------------------------------------------


def _generate_block(
    cfg: _Cfg, block: int, g0: int, n: int, counters: dict[str, int], lab_texts: pa.Array
) -> dict[str, pa.Table]:
    st = _draw_stays(_rng(cfg.seed, block, 0), cfg, g0, n)
    out: dict[str, pa.Table] = {}
    bad: dict[str, np.ndarray] = {}
    detail: list[pa.Table] = []

    chart_parts, hr = _chartevents(_rng(cfg.seed, block, 1), st)
    lab, endo = _labevents(_rng(cfg.seed, block, 2), st, cfg, chart_parts)
    chart = _chart_cols(_rng(cfg.seed, block, 9), chart_parts)
    inp = _inputevents(_rng(cfg.seed, block, 3), st, hr)
    outp = _outputevents(_rng(cfg.seed, block, 4), st)
    proc = _procedureevents(_rng(cfg.seed, block, 5), st)
    micro, rx, abx_inputs = _micro_and_rx(_rng(cfg.seed, block, 6), st)
    inp = _concat_cols(inp, abx_inputs)

    brng = _rng(cfg.seed, block, 7)
    _bad_chart(brng, chart, cfg.bad_row_rate)
    _bad_lab(brng, lab, cfg.bad_row_rate)
    _lab_columns(lab, lab_texts)
    _bad_input(brng, inp, cfg.bad_row_rate)
    _bad_output(brng, outp, st, cfg.bad_row_rate)
    _proc_columns(proc)

    def finish(name: str, cols: dict[str, Any], tkey: str, id_col: str | None = None) -> None:
        s = cols.pop("_s")
        t = cols[tkey]
        kinds = cols.pop("_bad", None)
        order = _sort_perm(s, t)
        # sequential ids in (stay, time) order, counted across blocks
        if id_col is not None:
            ids = np.empty(len(s), np.int64)
            ids[order] = counters.get(id_col, 0) + 1 + np.arange(len(s))
            counters[id_col] = counters.get(id_col, 0) + len(s)
            cols[id_col] = ids
            if id_col == "orderid":
                first = np.full(int(cols["_link"].max()) + 1 if len(s) else 0, np.iinfo(np.int64).max)
                np.minimum.at(first, cols["_link"], ids)
                cols["linkorderid"] = first[cols["_link"]]
            if id_col == "pharmacy_id":  # poe_seq: unique order sequence; poe_id = "<subject_id>-<poe_seq>"
                subj = st.subject_id[s]
                cols["poe_seq"] = ids.astype(np.int32)
                cols["poe_id"] = lambda p, a=subj, b=ids: pc.binary_join_element_wise(
                    pc.cast(pa.array(a[p]), pa.string()), pc.cast(pa.array(b[p]), pa.string()), "-"
                )
        for hidden in [k for k in cols if k.startswith("_")]:
            cols.pop(hidden)
        _fill_ids(cols, st, s)
        table = _finish(name, cols, s, t, g0, order)
        out[name] = table
        if kinds is not None:
            nk = len(BAD_ROW_KINDS)
            bad[name] = np.bincount(s[kinds >= 0] * nk + kinds[kinds >= 0], minlength=n * nk).reshape(n, nk)
            detail.append(_bad_detail(name, table, kinds[order], tkey, id_col))

    finish("chartevents", chart, "charttime")
    _offset_group_ids(lab, counters, "specimen_id", 1)
    finish("labevents", lab, "charttime", "labevent_id")
    finish("inputevents", inp, "starttime", "orderid")
    finish("outputevents", outp, "charttime")
    finish("procedureevents", proc, "starttime", "orderid")
    _offset_group_ids(micro, counters, "micro_specimen_id", 1_000_000)
    finish("microbiologyevents", micro, "chartdate", "microevent_id")
    finish("prescriptions", rx, "starttime", "pharmacy_id")
    out.update(_stay_tables(_rng(cfg.seed, block, 8), st))

    counts = np.zeros((n, len(BAD_ROW_KINDS)), np.int64)
    for m in bad.values():
        counts += m
    out["_truth/stays"] = _truth_table(st, cfg, endo, counts, g0)
    if detail:
        out["_truth/bad_rows"] = pa.concat_tables(detail)
    else:  # pragma: no cover - every block has event tables
        out["_truth/bad_rows"] = SCHEMAS["_truth/bad_rows"].empty_table()
    # rows in _truth/bad_rows are ordered by stay like every other table
    bt = out["_truth/bad_rows"]
    order = np.argsort(bt["_g"].to_numpy(), kind="stable")
    out["_truth/bad_rows"] = bt.take(pa.array(order))
    return out


def _sort_perm(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row order by (stay, time); ties keep generation order (stable), so the order is reproducible."""
    tt = np.where(t == _NAT, 0, t)
    key = s.astype(np.int64) * (1 << 34) + (tt - (tt.min() if len(tt) else 0))
    return np.argsort(key, kind="stable")


def _offset_group_ids(cols: dict[str, Any], counters: dict[str, int], name: str, base: int) -> None:
    local = cols[name]
    start = counters.get(name, base)
    cols[name] = start + local
    counters[name] = start + (int(local.max()) + 1 if len(local) else 0)


def _fill_ids(cols: dict[str, Any], st: _Stays, s: np.ndarray) -> None:
    if "subject_id" not in cols:
        cols["subject_id"] = st.subject_id[s]
    if "hadm_id" not in cols:
        cols["hadm_id"] = st.hadm_id[s]
    if "stay_id" not in cols:
        cols["stay_id"] = st.stay_id[s]


def _concat_cols(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in a:
        va, vb = a[k], b[k]
        if k == "_link":
            vb = vb + (int(va.max()) + 1 if len(va) else 0)
        out[k] = np.concatenate([va, vb])
    return out


def _bad_detail(name: str, table: pa.Table, kinds_sorted: np.ndarray, tkey: str, id_col: str | None) -> pa.Table:
    rows = np.flatnonzero(kinds_sorted >= 0)
    sub = table.take(pa.array(rows))
    n = len(rows)
    kind_names = pa.array(list(BAD_ROW_KINDS))
    cols = {
        "table": pa.array([name] * n, type=pa.string()),
        "kind": pc.take(kind_names, pa.array(kinds_sorted[rows].astype(np.int32))),
        "subject_id": sub["subject_id"],
        "hadm_id": sub["hadm_id"],
        "stay_id": pc.add(sub["_g"], 30_000_000).cast(pa.int32()),
        "itemid": sub["itemid"],
        "time": sub[tkey],
        "row_id": sub[id_col].cast(pa.int64()) if id_col else pa.nulls(n, pa.int64()),
        "_g": sub["_g"],
    }
    schema = SCHEMAS["_truth/bad_rows"].append(pa.field("_g", pa.int64()))
    return pa.Table.from_pydict(
        {k: v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for k, v in cols.items()}, schema=schema
    )


# --------------------------------------------------------------------------------------------------------------
# chartevents
# --------------------------------------------------------------------------------------------------------------


class _ChartParts:
    """Accumulates chartevents rows as numpy pieces: stay, time, itemid, valuenum, text index."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, s: np.ndarray, t: np.ndarray, item: Any, num: np.ndarray, text: np.ndarray | None = None) -> None:
        k = len(s)
        self.parts.append(
            (
                s,
                t,
                np.broadcast_to(np.asarray(item, np.int32), (k,)).copy(),
                np.asarray(num, np.float64),
                np.full(k, -1, np.int16) if text is None else np.asarray(text).astype(np.int16),
            )
        )


_CHART_UOMS = ("bpm", "mmHg", "insp/min", "%", "°F", "°C", "cmH2O", "kg", "mg/dL", "K/uL", "mL")
_CHART_UOM_OF = {
    220045: 0,
    220046: 0,
    220047: 0,
    220050: 1,
    220051: 1,
    220052: 1,
    220179: 1,
    220180: 1,
    220181: 1,
    225312: 1,
    220210: 2,
    224690: 2,
    220277: 3,
    223769: 3,
    223770: 3,
    223761: 4,
    223762: 5,
    220339: 6,
    226512: 7,
    220615: 8,
    225690: 8,
    227457: 9,
    224685: 10,
}


def _chartevents(rng: np.random.Generator, st: _Stays) -> tuple[_ChartParts, dict[str, np.ndarray]]:
    n = st.n
    cp = _ChartParts()
    add = cp.add
    t_in = _ceil_minute(st.intime)

    # hourly grid (heart rate defines the charted span of the stay); every 30 min while haemodynamically unstable
    start = t_in + 60 * rng.integers(0, 20, n)
    end = np.maximum(_minute(st.outtime - rng.integers(0, 20 * 60, n)), start)
    hs, ht = _grid(rng, start, end, 3600.0, jitter=8 * 60, drop=0.04, keep_ends=True, include_end=True)
    ht = _minute(ht)
    lv = _levels(st, hs, ht)
    unstable = lv[:, _ORG_CARDIO] > 0.45
    hs_x, ht_x = hs[unstable], ht[unstable] + 30 * 60
    inside = ht_x < end[hs_x]
    vs_s = np.concatenate([hs, hs_x[inside]])
    vs_t = np.concatenate([ht, ht_x[inside]])
    vlv = np.concatenate([lv, _levels(st, hs_x[inside], ht_x[inside])])
    m = len(vs_s)
    off_hr = rng.normal(0, 8, n)
    hr_val = np.round(np.clip(78 + 35 * vlv[:, _ORG_CARDIO] + off_hr[vs_s] + rng.normal(0, 6, m), 30, 190))
    add(vs_s, vs_t, 220045, hr_val)
    af = st.comorb[:, 6]
    rhythm = np.where(af[vs_s] & (rng.random(m) < 0.9), 3, np.select([hr_val > 100, hr_val < 60], [1, 2], 0))
    keep = rng.random(m) >= 0.1
    add(vs_s[keep], vs_t[keep], 220048, np.full(keep.sum(), np.nan), _TX_RHYTHM + rhythm[keep])
    keep = rng.random(m) >= 0.05
    add(
        vs_s[keep],
        vs_t[keep],
        220210,
        np.round(np.clip(16 + 12 * vlv[keep, _ORG_RESP] + rng.normal(0, 3, keep.sum()), 6, 50)),
    )
    keep = rng.random(m) >= 0.05
    add(
        vs_s[keep],
        vs_t[keep],
        220277,
        np.round(np.clip(98 - 7 * vlv[keep, _ORG_RESP] + rng.normal(0, 1.5, keep.sum()), 70, 100)),
    )
    # blood pressure: arterial line (220052, or 225312 for some stays) or non-invasive; MAP held near 65-70 on pressors
    off_map = rng.normal(0, 6, n)
    map_val = np.clip(85 - 36 * np.minimum(vlv[:, _ORG_CARDIO], 0.45) + off_map[vs_s] + rng.normal(0, 5, m), 35, 160)
    pp = np.clip(rng.normal(45, 8, m), 20, 90)
    sbp, dbp = np.round(map_val + 2 * pp / 3), np.round(map_val - pp / 3)
    map_val = np.round(map_val)
    keep = rng.random(m) >= 0.05
    art = st.art_line[vs_s] & keep
    art_item = np.where(rng.random(n) < 0.08, 225312, 220052)
    add(vs_s[art], vs_t[art], art_item[vs_s[art]], map_val[art])
    add(vs_s[art], vs_t[art], 220050, sbp[art])
    add(vs_s[art], vs_t[art], 220051, dbp[art])
    nibp = ~st.art_line[vs_s] & keep
    add(vs_s[nibp], vs_t[nibp], 220181, map_val[nibp])
    add(vs_s[nibp], vs_t[nibp], 220179, sbp[nibp])
    add(vs_s[nibp], vs_t[nibp], 220180, dbp[nibp])

    # airway / ventilation from the hourly levels
    airway = np.maximum(lv[:, _ORG_RESP], 0.8 * lv[:, _ORG_CNS])
    thr = 0.55 + rng.normal(0, 0.05, n)
    rs, r0, r1, _ = _runs(hs, ht, airway > thr[hs])
    long_enough = (r1 - r0) >= 2 * _H
    vs, ve = _per_stay_interval(n, rs[long_enough], r0[long_enough], r1[long_enough])
    ve = np.where(ve == _NAT, _NAT, np.minimum(ve + (_u(rng, 0, 8, n) * _H).astype(np.int64), st.outtime))
    vs = np.where(vs == _NAT, _NAT, np.maximum(vs - (_u(rng, 0, 1, n) * _H).astype(np.int64), t_in))
    st.vent_start, st.vent_end = _minute(vs), _minute(ve)
    ns_, n0, n1, _ = _runs(hs, ht, (airway > 0.38) & (airway <= thr[hs]))
    ok = (n1 - n0) >= 2 * _H
    nvs, nve = _per_stay_interval(n, ns_[ok], n0[ok], n1[ok])
    use_niv = (nvs != _NAT) & (st.vent_start == _NAT) & (rng.random(n) < 0.5)
    st.niv_start = np.where(use_niv, _minute(nvs), _NAT)
    st.niv_end = np.where(use_niv, _minute(np.minimum(nve, nvs + 48 * _H)), _NAT)

    def on_vent(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (st.vent_start[s] != _NAT) & (t >= st.vent_start[s]) & (t <= st.vent_end[s])

    def on_niv(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (st.niv_start[s] != _NAT) & (t >= st.niv_start[s]) & (t <= st.niv_end[s])

    # ventilator-measured respiratory rate and tidal volume, hourly while intubated
    v1 = on_vent(hs, ht) & (rng.random(len(hs)) >= 0.1)
    add(hs[v1], ht[v1], 224690, np.round(np.clip(18 + 10 * lv[v1, _ORG_RESP] + rng.normal(0, 3, v1.sum()), 8, 40)))
    add(hs[v1], ht[v1], 224685, np.round(np.clip(rng.normal(6.5, 1.0, v1.sum()) * (st.weight[hs[v1]] * 0.8), 150, 900)))

    # 4-hourly grid: temperature, GCS, NIBP cross-checks, ventilator settings, O2 device, alarm limits
    fs, ft = _grid(rng, t_in + 60 * rng.integers(0, 90, n), st.outtime, 4 * 3600.0, jitter=30 * 60, drop=0.05)
    ft = _minute(ft)
    lv4 = _levels(st, fs, ft)
    k4 = len(fs)
    h_on = (ft - st.event_time[fs]) / _H
    fever = st.infected[fs] * _sigmoid((h_on - 2) / 2) * np.exp(-np.clip(h_on - 48, 0, None) / 24)
    temp_c = 36.9 + 1.4 * fever + rng.normal(0, 0.35, k4)
    is_f = st.temp_f[fs]
    add(fs[~is_f], ft[~is_f], 223762, np.round(temp_c[~is_f], 1))
    add(fs[is_f], ft[is_f], 223761, np.round(temp_c[is_f] * 9 / 5 + 32, 1))
    cross = st.art_line[fs] & (rng.random(k4) < 0.5)
    m4 = np.clip(85 - 36 * np.minimum(lv4[:, _ORG_CARDIO], 0.45) + off_map[fs] + rng.normal(0, 6, k4), 35, 160)
    add(fs[cross], ft[cross], 220181, np.round(m4[cross]))
    # GCS: worse with CNS dysfunction and while intubated and sedated
    vent4 = on_vent(fs, ft)
    f = np.clip((lv4[:, _ORG_CNS] - 0.1) / 0.9 + 0.25 * vent4 + rng.normal(0, 0.06, k4), 0, 1)
    eye = np.clip(4 - np.round(3 * f), 1, 4).astype(np.int16)
    verbal = np.clip(5 - np.round(4 * f), 1, 5).astype(np.int16)
    motor = np.clip(6 - np.round(5 * f), 1, 6).astype(np.int16)
    gk = [rng.random(k4) >= 0.03 for _ in range(3)]
    add(fs[gk[0]], ft[gk[0]], 220739, eye[gk[0]], _TX_EYE + eye[gk[0]] - 1)
    vtext = np.where(vent4, _TX_ETT, _TX_VERBAL + verbal - 1)
    vnum = np.where(vent4, 1, verbal)
    add(fs[gk[1]], ft[gk[1]], 223900, vnum[gk[1]], vtext[gk[1]])
    add(fs[gk[2]], ft[gk[2]], 223901, motor[gk[2]], _TX_MOTOR + motor[gk[2]] - 1)
    add(
        fs[vent4],
        ft[vent4],
        223849,
        np.full(vent4.sum(), np.nan),
        _TX_VENT + rng.choice(len(_VENT_MODES), vent4.sum(), p=[0.5, 0.2, 0.25, 0.05]),
    )
    add(
        fs[vent4],
        ft[vent4],
        220339,
        np.round(np.clip(5 + 8 * lv4[vent4, _ORG_RESP] + rng.normal(0, 1.5, vent4.sum()), 5, 20)),
    )
    niv4 = on_niv(fs, ft)
    air4 = np.maximum(lv4[:, _ORG_RESP], 0.8 * lv4[:, _ORG_CNS])
    device = np.select([vent4, niv4, air4 > 0.4, air4 > 0.2], [0, 1, 2, 3], 4)
    dk = rng.random(k4) < 0.7
    add(fs[dk], ft[dk], 226732, np.full(dk.sum(), np.nan), _TX_O2 + device[dk])
    al = rng.random(k4) < 0.5
    add(fs[al], ft[al], 220046, np.full(al.sum(), 120.0))
    add(fs[al], ft[al], 220047, np.full(al.sum(), 50.0))
    add(fs[al], ft[al], 223769, np.full(al.sum(), 100.0))
    add(fs[al], ft[al], 223770, np.where(st.comorb[fs[al], 4], 88.0, 92.0))

    # FiO2 (percent), 2-hourly while on respiratory support or with hypoxaemia
    ts_, tt_ = _grid(rng, t_in + 60 * rng.integers(0, 60, n), st.outtime, 2 * 3600.0, jitter=20 * 60)
    tt_ = _minute(tt_)
    lv2 = _levels(st, ts_, tt_)
    supp = on_vent(ts_, tt_) | on_niv(ts_, tt_) | (lv2[:, _ORG_RESP] > 0.3)
    supp &= rng.random(len(ts_)) >= 0.1
    fio2 = _fio2_percent(lv2[supp, _ORG_RESP], rng)
    frac = rng.random(supp.sum()) < 0.02  # charted as a fraction (MIMIC quirk; mimic-code multiplies by 100)
    add(ts_[supp], tt_[supp], 223835, np.where(frac, fio2 / 100, fio2))
    # admission weight
    add(np.arange(n), t_in + 60 * rng.integers(0, 120, n), 226512, st.weight)
    return cp, {"s": hs, "t": ht, "cardio": lv[:, _ORG_CARDIO]}


def _chart_cols(rng: np.random.Generator, cp: _ChartParts) -> dict[str, Any]:
    s = np.concatenate([p[0] for p in cp.parts])
    t = np.concatenate([p[1] for p in cp.parts])
    k = len(s)
    item = np.concatenate([p[2] for p in cp.parts])
    return {
        "_s": s,
        "charttime": t,
        "itemid": item,
        "_num": np.concatenate([p[3] for p in cp.parts]),
        "_text": np.concatenate([p[4] for p in cp.parts]),
        "_uom": _lookup(item, _CHART_UOM_OF, -1),
        "caregiver_id": rng.integers(10_000, 99_999, k),
        "storetime": t + rng.integers(60, 90 * 60, k),
        "warning": (rng.random(k) < 0.005).astype(np.int16),
    }


def _fio2_percent(l_resp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clinician-set FiO2 (%) for a respiratory-dysfunction level: 21 … 100 in steps of 5."""
    raw = 21 + 79 * np.clip((l_resp - 0.15) / 0.75 + rng.normal(0, 0.05, len(l_resp)), 0, 1)
    return np.clip(np.round(raw / 5) * 5, 21, 100)


def _lookup(keys: np.ndarray, mapping: Mapping[int, int], default: int) -> np.ndarray:
    ks = np.array(sorted(mapping), dtype=np.int64)
    vs = np.array([mapping[k] for k in ks], dtype=np.int64)
    pos = np.clip(np.searchsorted(ks, keys), 0, len(ks) - 1)
    return np.where(ks[pos] == keys, vs[pos], default)


def _chart_columns(cols: dict[str, Any]) -> None:
    """Turn chartevents' internal columns into value / valuenum / valueuom."""
    num, text, uom = cols.pop("_num"), cols.pop("_text"), cols.pop("_uom")
    pool_u = pa.array(list(_CHART_UOMS))
    cols["value"] = lambda p: _numtext(num[p], text[p], _CHART_TEXTS)
    cols["valuenum"] = num
    cols["valueuom"] = lambda p: _cat(pool_u, uom[p])


# --------------------------------------------------------------------------------------------------------------
# labevents
# --------------------------------------------------------------------------------------------------------------


def _labevents(
    rng: np.random.Generator, st: _Stays, cfg: _Cfg, chart: _ChartParts
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    n = st.n
    rows: list[tuple[np.ndarray, ...]] = []  # s, t, item, num, text, specimen(local), prio
    spec_counter = [0]

    def new_specimens(k: int) -> np.ndarray:
        out = spec_counter[0] + np.arange(k)
        spec_counter[0] += k
        return out

    def add(
        s: np.ndarray, t: np.ndarray, spec: np.ndarray, item: int, num: np.ndarray, text: np.ndarray | None = None
    ) -> None:
        k = len(s)
        rows.append(
            (
                s,
                t,
                np.full(k, item, np.int32),
                num.astype(np.float64),
                np.full(k, -1, np.int16) if text is None else text.astype(np.int16),
                spec,
            )
        )

    # routine draws: on admission, then every 8-24 h (sicker → more often), 12 h before ICU up to ICU discharge
    step = (24.0 / (1 + 2 * st.severity)) * _H
    gs, gt = _grid(rng, np.maximum(st.intime - 12 * _H, st.admittime + _H), st.outtime, step, jitter=2 * _H)
    adm_s = np.arange(n)
    adm_t = st.admittime + (_u(rng, 0.3, 2, n) * _H).astype(np.int64)
    ds = np.concatenate([adm_s, gs])
    dt = _minute(np.concatenate([adm_t, gt]))
    lv = _levels(st, ds, dt)
    m = len(ds)
    noise = lambda sd: np.exp(rng.normal(0, sd, m))  # noqa: E731

    def panel(p: float, items: list[tuple[int, np.ndarray]]) -> None:
        take = rng.random(m) < p
        spec = new_specimens(int(take.sum()))
        for item, values in items:
            present = rng.random(take.sum()) >= 0.01  # a component occasionally not resulted
            add(ds[take][present], dt[take][present], spec[present], item, values[take][present])

    plt_factor = np.exp(rng.normal(0, 0.2, n))
    panel(
        0.93,
        [
            (51265, np.round(np.clip(260 * np.exp(-1.9 * lv[:, _ORG_COAG]) * plt_factor[ds] * noise(0.08), 3, 900))),
            (
                51301,
                np.round(
                    np.clip(
                        8
                        + 9 * st.infected[ds] * _sigmoid((dt - st.event_time[ds]) / _H / 6) * noise(0.25)
                        + rng.normal(0, 1.5, m),
                        0.5,
                        60,
                    ),
                    1,
                ),
            ),
            (51222, np.round(np.clip(rng.normal(10.5, 1.6, m), 5, 17), 1)),
        ],
    )
    panel(
        0.95,
        [
            (50912, np.round(np.clip(0.8 * np.exp(1.85 * lv[:, _ORG_RENAL]) * noise(0.07), 0.2, 15), 1)),
            (51006, np.round(np.clip(14 * np.exp(1.4 * lv[:, _ORG_RENAL]) * noise(0.15), 3, 180))),
            (50983, np.round(rng.normal(139, 4, m))),
            (50971, np.round(np.clip(rng.normal(4.1, 0.5, m), 2.2, 7.5), 1)),
        ],
    )
    bili_p = np.clip(0.3 + 0.35 * st.severity[ds] + 0.3 * (st.source[ds] == 3), 0, 0.95)
    take = rng.random(m) < bili_p
    add(
        ds[take],
        dt[take],
        new_specimens(int(take.sum())),
        50885,
        np.round(np.clip(0.5 * np.exp(3.2 * lv[take, _ORG_LIVER]) * noise(0.12)[take], 0.1, 45), 1),
    )
    take = rng.random(m) < 0.1 + 0.1 * st.infected[ds]
    add(
        ds[take],
        dt[take],
        new_specimens(int(take.sum())),
        50889,
        np.round(np.clip(5 + 180 * st.infected[ds[take]] * lv[take, _ORG_CARDIO] * noise(0.3)[take], 0.3, 400), 1),
    )

    # blood gases: every ~6 h while intubated, otherwise daily for some (more with hypoxaemia)
    vent = st.vent_start != _NAT
    bs1, bt1 = _grid(
        rng, np.where(vent, st.vent_start, st.outtime), np.where(vent, st.vent_end, st.outtime - 1), 6 * _H, jitter=_H
    )
    bs2, bt2 = _grid(rng, st.intime + rng.integers(0, 6 * _H, n), st.outtime, 24 * _H, jitter=3 * _H)
    lv2 = _levels(st, bs2, bt2)
    keep2 = rng.random(len(bs2)) < 0.15 + 0.8 * np.clip(lv2[:, _ORG_RESP] - 0.15, 0, 1)
    bs = np.concatenate([bs1, bs2[keep2]])
    bt = _minute(np.concatenate([bt1, bt2[keep2]]))
    blv = _levels(st, bs, bt)
    k = len(bs)
    spec = new_specimens(k)
    stype = rng.choice(3, k, p=[0.85, 0.12, 0.03])  # ART. / VEN. / MIX.
    add(bs, bt, spec, 52033, np.full(k, np.nan), stype)
    fio2 = _fio2_percent(blv[:, _ORG_RESP], rng)
    pf = np.clip(480 * np.exp(-1.75 * blv[:, _ORG_RESP]) * np.exp(rng.normal(0, 0.12, k)), 40, 600)
    po2 = np.where(stype == 0, pf * fio2 / 100, rng.normal(40, 7, k))
    add(bs, bt, spec, 50821, np.round(np.clip(po2, 20, 650)))
    add(bs, bt, spec, 50818, np.round(np.clip(rng.normal(40 + 8 * blv[:, _ORG_RESP], 5), 15, 110)))
    add(bs, bt, spec, 50820, np.round(np.clip(7.41 - 0.14 * blv[:, _ORG_CARDIO] + rng.normal(0, 0.04, k), 6.8, 7.7), 2))
    vent_b = (st.vent_start[bs] != _NAT) & (bt >= st.vent_start[bs]) & (bt <= st.vent_end[bs])
    lab_fio2 = rng.random(k) < np.where(vent_b, 0.65, 0.2)
    add(bs[lab_fio2], bt[lab_fio2], spec[lab_fio2], 50816, fio2[lab_fio2])
    lac = rng.random(k) < 0.5
    add(
        bs[lac],
        bt[lac],
        spec[lac],
        50813,
        np.round(np.clip(1.0 + 6 * blv[lac, _ORG_CARDIO] ** 2 * np.exp(rng.normal(0, 0.25, lac.sum())), 0.3, 25), 1),
    )

    # ferritin + synthetic HLA-DR (screened infected stays), repeat ferritin / HLA-DR, ferritin work-ups
    endo = _endotype_draws(rng, st, cfg)
    scr = endo["screened"]
    si = np.flatnonzero(scr)
    f_t = endo["screen_time"][si]
    cens_f = endo["ferritin_censored"][si]
    add(
        si,
        f_t,
        new_specimens(len(si)),
        FERRITIN_ITEMID,
        np.where(cens_f, np.nan, endo["ferritin"][si]),
        np.where(cens_f, 4, -1),
    )
    hi = si[endo["hla_reported"][si]]
    add(
        hi,
        endo["screen_time"][hi] + (_u(rng, 0, 2, len(hi)) * _H).astype(np.int64) // 60 * 60,
        new_specimens(len(hi)),
        HLA_DR_ITEMID,
        endo["hla"][hi],
    )
    # repeat ferritin ~72 h later (half of the screened, if still in the ICU)
    rep_t = _minute(f_t + ((72 + rng.normal(0, 6, len(si))) * _H).astype(np.int64))
    rep = (rng.random(len(si)) < 0.5) & (rep_t < st.outtime[si])
    rf = np.round(endo["ferritin"][si] * np.exp(rng.normal(np.where(st.died[si], 0.1, -0.25), 0.3)))
    rf = np.maximum(rf, 5)
    rcens = (rf > cfg.ferritin_report_limit) & (rng.random(len(si)) < cfg.censored_ferritin_rate)
    add(
        si[rep],
        rep_t[rep],
        new_specimens(int(rep.sum())),
        FERRITIN_ITEMID,
        np.where(rcens, np.nan, rf)[rep],
        np.where(rcens, 4, -1)[rep],
    )
    rep_h = rep & (rng.random(len(si)) < 0.6) & endo["hla_reported"][si]
    add(
        si[rep_h],
        rep_t[rep_h] + 1800,
        new_specimens(int(rep_h.sum())),
        HLA_DR_ITEMID,
        np.round(np.clip(endo["hla"][si] * np.exp(rng.normal(0.15, 0.3, len(si))), 100, 90000))[rep_h],
    )
    wk = np.flatnonzero(~st.infected & (rng.random(n) < 0.05))
    wf = np.round(np.clip(np.exp(rng.normal(math.log(250), 1.0, len(wk))), 5, 60000))
    wc = (wf > cfg.ferritin_report_limit) & (rng.random(len(wk)) < cfg.censored_ferritin_rate)
    wt = _minute(st.intime[wk] + ((st.outtime[wk] - st.intime[wk]) * rng.random(len(wk))).astype(np.int64))
    add(wk, wt, new_specimens(len(wk)), FERRITIN_ITEMID, np.where(wc, np.nan, wf), np.where(wc, 4, -1))

    s = np.concatenate([r[0] for r in rows])
    t = np.concatenate([r[1] for r in rows])
    item = np.concatenate([r[2] for r in rows])
    num = np.concatenate([r[3] for r in rows])
    text = np.concatenate([r[4] for r in rows])
    specimen = np.concatenate([r[5] for r in rows]).astype(np.int64)
    k = len(s)
    # bedside copies of some lab results in chartevents (MetaVision "Labs" items), only during the ICU stay
    copy_of = {51265: 227457, 50912: 220615, 50885: 225690}
    cp = np.isin(item, list(copy_of)) & (t >= st.intime[s]) & (t <= st.outtime[s]) & (rng.random(k) < 0.5)
    chart.add(s[cp], t[cp], _lookup(item[cp], copy_of, 0), num[cp])
    cols: dict[str, Any] = {
        "_s": s,
        "charttime": t,
        "itemid": item,
        "_num": num,
        "_text": text,
        "_specimen": specimen,
        "storetime": t + rng.integers(20 * 60, 3 * 3600, k),
        "_prov": np.where(rng.random(k) < 0.3, -1, rng.integers(0, len(_PROVIDERS), k)),
        "_prio": rng.choice(3, k, p=[0.55, 0.35, 0.1]),
        "_uomfix": np.full(k, -1, np.int8),
    }
    return cols, endo


def _endotype_draws(rng: np.random.Generator, st: _Stays, cfg: _Cfg) -> dict[str, np.ndarray]:
    """Screening time, true ferritin / HLA-DR, censoring and the observable endotype for every stay."""
    n = st.n
    cls = st.latent_class
    # screening: infected stays, 6-30 h after the later of onset and ICU admission, while still in the ICU
    anchor = np.maximum(np.where(st.infected, st.onset, st.intime), st.intime)
    t = anchor + (_u(rng, 6, 30, n) * _H).astype(np.int64)
    late = t >= st.outtime - _H
    t = np.where(late, anchor + (np.maximum(st.outtime - anchor, 0) * _u(rng, 0.1, 0.8, n)).astype(np.int64), t)
    feasible = st.infected & (np.where(st.infected, st.onset, 0) < st.outtime - 2 * _H)
    screened = feasible & (rng.random(n) < cfg.screen_probability)
    screen_time = np.where(screened, _minute(t), _NAT)

    f_low = np.clip(
        np.round(_trunc_lognormal(rng, n, _FERR_LOW_MU, _FERR_LOW_SD, None, MALS_FERRITIN_NG_PER_ML)),
        5,
        MALS_FERRITIN_NG_PER_ML,
    )
    f_mals = np.maximum(
        np.round(MALS_FERRITIN_NG_PER_ML * np.exp(np.abs(rng.normal(0, _FERR_MALS_SD, n)))), MALS_FERRITIN_NG_PER_ML + 1
    )
    ferritin = np.where(cls == 0, f_mals, f_low)
    h_sii = np.clip(
        np.round(_trunc_lognormal(rng, n, _HLA_SII_MU, _HLA_SII_SD, None, SII_HLA_DR_AB_PER_CELL)),
        150,
        SII_HLA_DR_AB_PER_CELL - 1,
    )
    h_unc = np.maximum(
        np.round(_trunc_lognormal(rng, n, _HLA_UNC_MU, _HLA_UNC_SD, SII_HLA_DR_AB_PER_CELL, None)),
        SII_HLA_DR_AB_PER_CELL,
    )
    h_mals = np.round(np.clip(np.exp(rng.normal(_HLA_MALS_MU, _HLA_MALS_SD, n)), 150, 90000))
    hla = np.select([cls == 0, cls == 1], [h_mals, h_sii], h_unc)
    censored = screened & (ferritin > cfg.ferritin_report_limit) & (rng.random(n) < cfg.censored_ferritin_rate)
    hla_reported = screened & (rng.random(n) >= cfg.hla_missing)

    true = np.select([cls == 0, (cls != 0) & (hla < SII_HLA_DR_AB_PER_CELL)], [0, 1], 2)
    true = np.where(st.infected, true, -1)
    if cfg.ferritin_report_limit >= MALS_FERRITIN_NG_PER_ML:
        cens_decides_mals = censored
    else:
        cens_decides_mals = np.zeros(n, bool)
    obs = np.select(
        [
            censored & ~cens_decides_mals,
            ferritin > MALS_FERRITIN_NG_PER_ML,
            ~hla_reported,
            hla < SII_HLA_DR_AB_PER_CELL,
        ],
        [3, 0, 3, 1],
        2,
    )
    obs = np.where(screened, obs, -1)
    return {
        "screened": screened,
        "screen_time": screen_time,
        "ferritin": ferritin.astype(np.float64),
        "hla": hla.astype(np.float64),
        "ferritin_censored": censored,
        "hla_reported": hla_reported,
        "endotype_true": true,
        "endotype_observable": obs,
    }


_PROVIDERS = pa.array([f"P{i:05X}" for i in range(1, 1201)])


def _lab_columns(cols: dict[str, Any], lab_texts: pa.Array) -> None:
    num, text, item = cols.pop("_num"), cols.pop("_text"), cols["itemid"]
    uomfix = cols.pop("_uomfix")
    items = np.array(sorted(_LAB_ITEMS), dtype=np.int64)
    pos = np.clip(np.searchsorted(items, item), 0, len(items) - 1)
    known = items[pos] == item
    units = [(_LAB_ITEMS[int(i)][3]) for i in items]
    upool = sorted({u for u in units if u} | {"umol/L", "mg/kg/min"})
    u_idx = np.array([upool.index(u) if u else -1 for u in units], dtype=np.int64)
    uom = np.where(known, u_idx[pos], -1)
    uom = np.where(uomfix >= 0, upool.index("umol/L"), uom)
    lo = np.array([_LAB_ITEMS[int(i)][4] if _LAB_ITEMS[int(i)][4] is not None else np.nan for i in items])
    hi = np.array([_LAB_ITEMS[int(i)][5] if _LAB_ITEMS[int(i)][5] is not None else np.nan for i in items])
    ref_lo, ref_hi = np.where(known, lo[pos], np.nan), np.where(known, hi[pos], np.nan)
    abnormal = ~np.isnan(num) & ((num < np.nan_to_num(ref_lo, nan=-np.inf)) | (num > np.nan_to_num(ref_hi, nan=np.inf)))
    abnormal &= uomfix < 0
    comment = np.where(item == HLA_DR_ITEMID, 0, -1)
    prov, prio = cols.pop("_prov"), cols.pop("_prio")
    cols["specimen_id"] = cols.pop("_specimen")
    cols["value"] = lambda p: _numtext(num[p], text[p], lab_texts)
    cols["valuenum"] = num
    cols["valueuom"] = lambda p: _cat(pa.array(upool), uom[p])
    cols["ref_range_lower"] = ref_lo
    cols["ref_range_upper"] = ref_hi
    cols["flag"] = lambda p: _cat(pa.array(["abnormal"]), np.where(abnormal[p], 0, -1))
    cols["priority"] = lambda p: _cat(pa.array(["ROUTINE", "STAT"]), np.where(prio[p] == 2, -1, prio[p]))
    cols["order_provider_id"] = lambda p: _cat(_PROVIDERS, prov[p])
    cols["comments"] = lambda p: _cat(pa.array([HLA_DR_COMMENT]), comment[p])


# --------------------------------------------------------------------------------------------------------------
# inputevents (vasopressors with rate changes, propofol, fluids) and procedureevents (ventilation)
# --------------------------------------------------------------------------------------------------------------

_PRESSOR_RATE = {  # itemid -> (rateuom, amountuom, base rate, slope per unit of cardiovascular level above onset)
    221906: ("mcg/kg/min", "mg", 0.03, 0.8),
    221289: ("mcg/kg/min", "mg", 0.02, 0.3),
    221662: ("mcg/kg/min", "mg", 3.0, 20.0),
    221653: ("mcg/kg/min", "mg", 2.5, 10.0),
    222315: ("units/hour", "units", 2.4, 0.0),
    222168: ("mcg/kg/min", "mg", 20.0, 40.0),
}


def _inputevents(rng: np.random.Generator, st: _Stays, hr: dict[str, np.ndarray]) -> dict[str, Any]:
    n = st.n
    hs, ht, cardio = hr["s"], hr["t"], hr["cardio"]
    noisy = cardio + rng.normal(0, 0.02, len(hs))
    thr = 0.5 + rng.normal(0, 0.03, n)
    first = rng.choice(3, n, p=[0.85, 0.1, 0.05])  # norepinephrine / dopamine / epinephrine first line
    first_item = np.array([221906, 221662, 221289])[first]
    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = []  # stay, start, end, item, onset

    rs, r0, r1, npts = _merge_runs(*_runs(hs, ht, noisy > thr[hs]), gap=4 * _H)
    tail = (_u(rng, 0, 50, len(rs)) * 60).astype(np.int64)
    dur = np.where(npts == 1, (_u(rng, 10, 55, len(rs)) * 60).astype(np.int64), r1 - r0 + tail)
    episodes.append((rs, r0, r0 + dur, first_item[rs], 0.45))
    st.pressors = np.zeros(n, bool)
    st.pressors[rs] = True
    # second agent (vasopressin or epinephrine) when very unstable
    second = np.where(rng.random(n) < 0.5, 222315, 221289)
    s2, a0, a1, np2 = _merge_runs(*_runs(hs, ht, noisy > thr[hs] + 0.3), gap=4 * _H)
    ok = np2 >= 2
    episodes.append((s2[ok], a0[ok], a1[ok], second[s2[ok]], 0.75))
    # dobutamine for some pressor stays (low output)
    dob = rng.random(n) < 0.08
    s3, b0, b1, np3 = _merge_runs(*_runs(hs, ht, (noisy > thr[hs] + 0.1) & dob[hs]), gap=4 * _H)
    episodes.append((s3, b0, b1 + 30 * 60, np.full(len(s3), 221653), 0.55))
    # propofol while intubated
    vent = np.flatnonzero((st.vent_start != _NAT) & (rng.random(n) < 0.75))
    episodes.append(
        (
            vent,
            st.vent_start[vent] + 15 * 60,
            np.maximum(st.vent_end[vent] - 30 * 60, st.vent_start[vent] + 45 * 60),
            np.full(len(vent), 222168),
            0.0,
        )
    )

    # split every episode into segments (rate changes every 1-4 h) sharing a link id
    es = np.concatenate([e[0] for e in episodes])
    e0 = _minute(np.concatenate([e[1] for e in episodes]))
    e1 = _minute(np.concatenate([e[2] for e in episodes]))
    e1 = np.maximum(e1, e0 + 10 * 60)
    e1 = np.minimum(e1, np.maximum(st.outtime[es], e0 + 10 * 60))
    eitem = np.concatenate([e[3] for e in episodes])
    eon = np.concatenate([np.full(len(e[0]), e[4]) for e in episodes])
    step = _u(rng, 1.0, 4.0, len(es)) * _H
    seg_e, seg_t = _grid(rng, e0, e1 - 1, step, jitter=20 * 60)
    seg_t[np.r_[True, seg_e[1:] != seg_e[:-1]]] = e0[seg_e[np.r_[True, seg_e[1:] != seg_e[:-1]]]]
    seg_t = _minute(seg_t)
    nxt_same = np.r_[seg_e[1:] == seg_e[:-1], False]
    seg_end = np.where(nxt_same, np.r_[seg_t[1:], 0], e1[seg_e])
    good = seg_end > seg_t
    seg_e, seg_t, seg_end, nxt_same = seg_e[good], seg_t[good], seg_end[good], nxt_same[good]
    s = es[seg_e]
    item = eitem[seg_e]
    lc = _levels(st, s, seg_t)[:, _ORG_CARDIO]
    rate = np.empty(len(s))
    rateuom = np.empty(len(s), np.int64)
    amountuom = np.empty(len(s), np.int64)
    upool = ["mcg/kg/min", "units/hour", "mg/kg/min", "mL/hour"]
    apool = ["mg", "units", "mL", "dose"]
    for it, (ru, au, r0_, slope) in _PRESSOR_RATE.items():
        m = item == it
        over = np.clip(lc[m] - eon[seg_e][m], 0, 1)
        r = (r0_ + slope * over) * np.exp(rng.normal(0, 0.15, m.sum()))
        rate[m] = np.round(r, 3 if r0_ < 1 else 1)
        rateuom[m] = upool.index(ru)
        amountuom[m] = apool.index(au)
    rate = rate.astype(np.float32).astype(np.float64)  # MetaVision stores single precision (e.g. 0.0500000007450581)
    minutes = (seg_end - seg_t) / 60.0
    per_kg = rateuom == 0
    w = st.weight[s]
    amount = np.where(per_kg, rate * w * minutes / 1000.0, rate * minutes / 60.0)
    status = np.where(
        nxt_same, 0, np.where(rng.random(len(s)) < 0.2, 2, 1)
    )  # ChangeDose/Rate, FinishedRunning, Stopped
    k = len(s)
    pressor_cols: dict[str, Any] = {
        "_s": s,
        "starttime": seg_t,
        "endtime": seg_end,
        "itemid": item.astype(np.int32),
        "amount": amount,
        "_amountuom": amountuom,
        "rate": rate,
        "_rateuom": rateuom,
        "_link": seg_e.astype(np.int64),
        "_cat": np.where(item == 222168, 1, 0),
        "totalamount": np.full(k, 250.0),
        "_status": status,
    }
    # fluid boluses early in shock: 1-3 x NaCl 0.9 % 500/1000 mL (no rate)
    nb = np.where(st.pressors | (rng.random(n) < 0.3), rng.integers(1, 4, n), 0)
    bs = np.repeat(np.arange(n), nb)
    bt = _minute(st.intime[bs] + (_u(rng, 0, 12, len(bs)) * _H).astype(np.int64))
    bt = np.minimum(bt, st.outtime[bs] - 20 * 60)
    vol = np.where(rng.random(len(bs)) < 0.6, 1000.0, 500.0)
    kb = len(bs)
    bolus_cols: dict[str, Any] = {
        "_s": bs,
        "starttime": bt,
        "endtime": bt + (_u(rng, 15, 60, kb) * 60).astype(np.int64) // 60 * 60,
        "itemid": np.full(kb, 225158, np.int32),
        "amount": vol,
        "_amountuom": np.full(kb, 2),
        "rate": np.full(kb, np.nan),
        "_rateuom": np.full(kb, -1),
        "_link": (seg_e.max() + 1 if len(seg_e) else 0) + np.arange(kb),
        "_cat": np.full(kb, 2),
        "totalamount": vol,
        "_status": np.ones(kb, np.int64),
    }
    cols = {k_: np.concatenate([pressor_cols[k_], bolus_cols[k_]]) for k_ in pressor_cols}
    return _input_common(rng, st, cols)


def _input_common(rng: np.random.Generator, st: _Stays, cols: dict[str, Any]) -> dict[str, Any]:
    k = len(cols["_s"])
    s = cols["_s"]
    cols["caregiver_id"] = rng.integers(10_000, 99_999, k)
    cols["storetime"] = cols["starttime"] + rng.integers(0, 45 * 60, k)
    cols["patientweight"] = st.weight[s]
    cols["isopenbag"] = (cols["_cat"] == 2).astype(np.int16)
    cols["continueinnextdept"] = np.zeros(k, np.int16)
    cols["originalamount"] = cols["amount"].copy()
    cols["originalrate"] = cols["rate"].copy()
    cols["_bad"] = np.full(k, -1, np.int8)
    return cols


def _input_columns(cols: dict[str, Any]) -> None:
    au, ru, cat, status = (cols.pop(k) for k in ("_amountuom", "_rateuom", "_cat", "_status"))
    cols["amountuom"] = lambda p: _cat(pa.array(["mg", "units", "mL", "dose"]), au[p])
    cols["rateuom"] = lambda p: _cat(pa.array(["mcg/kg/min", "units/hour", "mg/kg/min", "mL/hour"]), ru[p])
    cols["ordercategoryname"] = lambda p: _cat(
        pa.array(["01-Drips", "02-Fluids (Crystalloids)", "03-IV Fluid Bolus", "08-Antibiotics (IV)"]),
        np.select([cat[p] == 0, cat[p] == 1, cat[p] == 2], [0, 0, 2], 3),
    )
    cols["secondaryordercategoryname"] = lambda p: _cat(
        pa.array(["Additive", "Additives (Ivpb)"]), np.select([cat[p] <= 1, cat[p] == 3], [0, 1], -1)
    )
    cols["ordercomponenttypedescription"] = lambda p: _cat(
        pa.array(["Main order parameter", "Additive"]), np.zeros(len(p), np.int64)
    )
    cols["ordercategorydescription"] = lambda p: _cat(
        pa.array(["Continuous Med", "Bolus", "Drug Push", "Intermittent"]),
        np.select([cat[p] <= 1, cat[p] == 2], [0, 1], 3),
    )
    total = cols["totalamount"]
    cols["totalamountuom"] = lambda p: _cat(pa.array(["mL"]), np.where(np.isnan(total[p]), -1, 0))
    cols["statusdescription"] = lambda p: _cat(pa.array(["ChangeDose/Rate", "FinishedRunning", "Stopped"]), status[p])


def _procedureevents(rng: np.random.Generator, st: _Stays) -> dict[str, Any]:
    inv = np.flatnonzero(st.vent_start != _NAT)
    niv = np.flatnonzero(st.niv_start != _NAT)
    s = np.concatenate([inv, niv])
    t0 = np.concatenate([st.vent_start[inv], st.niv_start[niv]])
    t1 = np.concatenate([st.vent_end[inv], st.niv_end[niv]])
    item = np.concatenate([np.full(len(inv), 225792), np.full(len(niv), 225794)]).astype(np.int32)
    k = len(s)
    return {
        "_s": s,
        "starttime": t0,
        "endtime": t1,
        "itemid": item,
        "value": (t1 - t0) / 60.0,
        "_link": np.arange(k, dtype=np.int64),
        "caregiver_id": rng.integers(10_000, 99_999, k),
        "storetime": t1 + rng.integers(0, 3600, k),
        "patientweight": st.weight[s],
        "isopenbag": np.ones(k, np.int16),
        "continueinnextdept": np.zeros(k, np.int16),
        "originalamount": (t1 - t0) / 60.0,
        "originalrate": np.zeros(k),
        "_died": st.died_in_icu[s] & (t1 >= st.outtime[s] - 60),
    }


def _proc_columns(cols: dict[str, Any]) -> None:
    died = cols.pop("_died")
    k = len(died)
    cols["valueuom"] = lambda p: _cat(pa.array(["min"]), np.zeros(k, np.int64))
    cols["location"] = lambda p: _cat(pa.array(["Mouth"]), np.full(k, -1))
    cols["locationcategory"] = lambda p: _cat(pa.array(["Invasive Venous"]), np.full(k, -1))
    cols["ordercategoryname"] = lambda p: _cat(pa.array(["Ventilation"]), np.zeros(k, np.int64))
    cols["ordercategorydescription"] = lambda p: _cat(pa.array(["Task"]), np.zeros(k, np.int64))
    cols["statusdescription"] = lambda p: _cat(pa.array(["FinishedRunning", "Stopped"]), died[p].astype(np.int64))


# --------------------------------------------------------------------------------------------------------------
# outputevents
# --------------------------------------------------------------------------------------------------------------


def _outputevents(rng: np.random.Generator, st: _Stays) -> dict[str, Any]:
    n = st.n
    step = np.where(st.foley, 1.0, _u(rng, 3, 6, n)) * _H
    s, t = _grid(rng, st.intime + rng.integers(20 * 60, 2 * 3600, n), st.outtime, step, jitter=10 * 60, drop=0.08)
    t = _minute(t)
    prev_same = np.r_[False, s[1:] == s[:-1]]
    interval_h = np.where(prev_same, (t - np.r_[t[:1], t[:-1]]) / _H, step[s] / _H)
    lv = _levels(st, s, t)
    rate = 70 * np.exp(-2.8 * lv[:, _ORG_RENAL]) * np.exp(rng.normal(0, 0.35, len(s)))
    vol = np.maximum(np.round(rate * np.clip(interval_h, 0.25, 8) / 5) * 5, 0)
    item = np.where(st.foley[s], 226559, np.where(rng.random(len(s)) < 0.9, 226560, 226561))
    item = np.where(rng.random(len(s)) < 0.01, 226567, item)
    irr = st.irrigation[s]
    irrigant = np.round(_u(rng, 100, 400, len(s)) / 10) * 10
    # GU irrigation: irrigant in (227488) and irrigant + urine out (227489)
    item = np.where(irr, 227489, item)
    vol = np.where(irr, vol + irrigant, vol)
    s_all = np.concatenate([s, s[irr]])
    t_all = np.concatenate([t, t[irr]])
    item_all = np.concatenate([item, np.full(irr.sum(), 227488)]).astype(np.int32)
    vol_all = np.concatenate([vol, irrigant[irr]])
    k = len(s_all)
    return {
        "_s": s_all,
        "charttime": t_all,
        "itemid": item_all,
        "value": vol_all,
        "caregiver_id": rng.integers(10_000, 99_999, k),
        "storetime": t_all + rng.integers(60, 3600, k),
        "_bad": np.full(k, -1, np.int8),
    }


# --------------------------------------------------------------------------------------------------------------
# microbiologyevents, prescriptions, antibiotic inputevents
# --------------------------------------------------------------------------------------------------------------


def _micro_and_rx(rng: np.random.Generator, st: _Stays) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    n = st.n
    inf = st.infected
    arrival = np.where(st.ed, st.edregtime, st.admittime)
    # suspicion time: infected → after onset (not before arrival); some non-infected get a rule-out work-up
    rule_out = ~inf & (rng.random(n) < 0.15)
    t_sus = np.where(
        inf,
        np.maximum(
            st.onset + (_u(rng, 0.5, 8, n) * _H).astype(np.int64), arrival + (_u(rng, 0.3, 3, n) * _H).astype(np.int64)
        ),
        st.intime + ((st.outtime - st.intime) * _u(rng, 0.05, 0.6, n)).astype(np.int64),
    )
    t_sus = np.minimum(t_sus, st.dischtime - _H)
    culture_first = rng.random(n) < 0.75
    t_cult = _minute(np.where(culture_first, t_sus, t_sus + (_u(rng, 0.5, 20, n) * _H).astype(np.int64)))
    t_abx = _minute(np.where(culture_first, t_sus + (_u(rng, 0.25, 6, n) * _H).astype(np.int64), t_sus))
    t_cult = np.minimum(t_cult, st.dischtime - 30 * 60)
    t_abx = np.minimum(t_abx, st.dischtime - 30 * 60)
    worked_up = inf | rule_out

    # causative organism per infected stay
    org = np.full(n, -1)
    for src, (orgs, p) in _ORG_BY_SOURCE.items():
        m = st.source == src
        org[m] = np.array(orgs)[rng.choice(len(orgs), m.sum(), p=p)]
    # specimens: (stay, time, spec key index, positive, organism)
    sp: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    w = np.flatnonzero(worked_up)
    p_blood = np.select([st.source == 1, st.source == 0, st.source == 2, st.source == 3], [0.95, 0.15, 0.2, 0.25], 0.0)
    for set_no in range(2):
        pos = inf[w] & (rng.random(len(w)) < p_blood[w] * (1.0 if set_no == 0 else 0.8))
        contaminant = ~inf[w] & (rng.random(len(w)) < 0.03) & (set_no == 0)
        o = np.where(contaminant, 7, np.where(pos, org[w], -1))
        sp.append((w, t_cult[w], np.full(len(w), 0), pos | contaminant, o))
    src_spec = {0: 1, 2: 2, 3: 3}  # pneumonia → sputum, urinary → urine, abdominal → peritoneal fluid
    p_src = {0: 0.55, 2: 0.85, 3: 0.6}
    for src, key in src_spec.items():
        m = np.flatnonzero(inf & (st.source == src) & (rng.random(n) < 0.9))
        pos = rng.random(len(m)) < p_src[src]
        sp.append(
            (
                m,
                _minute(t_cult[m] + (_u(rng, 0, 3, len(m)) * _H).astype(np.int64)),
                np.full(len(m), key),
                pos,
                np.where(pos, org[m], -1),
            )
        )
    urine_ro = np.flatnonzero((rule_out | (inf & (st.source != 2))) & (rng.random(n) < 0.5))
    sp.append(
        (
            urine_ro,
            _minute(t_cult[urine_ro] + (_u(rng, 0, 4, len(urine_ro)) * _H).astype(np.int64)),
            np.full(len(urine_ro), 2),
            np.zeros(len(urine_ro), bool),
            np.full(len(urine_ro), -1),
        )
    )
    mrsa = np.flatnonzero(rng.random(n) < 0.4)
    mpos = rng.random(len(mrsa)) < 0.08
    sp.append(
        (
            mrsa,
            _minute(st.intime[mrsa] + (_u(rng, 0, 6, len(mrsa)) * _H).astype(np.int64)),
            np.full(len(mrsa), 4),
            mpos,
            np.where(mpos, 10, -1),
        )
    )

    ss = np.concatenate([x[0] for x in sp])
    stime = np.concatenate([x[1] for x in sp])
    skey = np.concatenate([x[2] for x in sp])
    spos = np.concatenate([x[3] for x in sp])
    sorg = np.concatenate([x[4] for x in sp])
    nspec = len(ss)
    date_only = rng.random(nspec) < 0.05
    # rows per specimen: negative → 1; positive → one per antibiotic tested (or 1 when no panel)
    panel_len = np.array([len(o[2]) for o in _ORGS])
    nrows = np.where(spos, np.maximum(panel_len[np.maximum(sorg, 0)], 1), 1)
    r_spec = np.repeat(np.arange(nspec), nrows)
    r_pos = np.arange(len(r_spec)) - np.repeat(np.cumsum(nrows) - nrows, nrows)
    max_panel = max(panel_len.max(), 1)
    panel = np.full((len(_ORGS), max_panel), -1)
    for i, org_row in enumerate(_ORGS):
        panel[i, : len(org_row[2])] = org_row[2]
    r_org = sorg[r_spec]
    has_panel = (r_org >= 0) & (panel_len[np.maximum(r_org, 0)] > 0)
    r_ab = np.where(has_panel, panel[np.maximum(r_org, 0), np.minimum(r_pos, max_panel - 1)], -1)
    # susceptibility fixed per (stay, antibiotic)
    resist = rng.random((n, len(_ABS))) < 0.15
    r_res = np.where(r_ab >= 0, resist[ss[r_spec], np.maximum(r_ab, 0)], False)
    r_interp = np.where(r_ab < 0, -1, np.where(r_res, 1, np.where(rng.random(len(r_spec)) < 0.05, 2, 0)))
    dil_val = np.select([r_interp == 0, r_interp == 1, r_interp == 2], [1.0, 32.0, 8.0], np.nan)
    spec_rows = _SPEC_KEYS
    spec_itemid = np.array([_SPEC[k][0] for k in spec_rows], np.int32)
    test_itemid = np.array([_SPEC[k][2] for k in spec_rows], np.int32)
    org_itemid = np.array([o[0] for o in _ORGS], np.int32)
    ab_itemid = np.array([a[0] for a in _ABS], np.int32)
    ct = stime[r_spec]
    chartdate = ct - np.mod(ct, _DAY)
    store = stime[r_spec] + ((_u(rng, 20, 72, nspec) * _H).astype(np.int64))[r_spec]
    neg_comment = np.where(~spos[r_spec], np.where(skey[r_spec] == 4, 1, 0), -1)
    quantity = np.where(spos[r_spec] & (skey[r_spec] == 2), 0, -1)
    prov = np.where(rng.random(nspec) < 0.5, -1, rng.integers(0, len(_PROVIDERS), nspec))
    micro: dict[str, Any] = {
        "_s": ss[r_spec],
        "micro_specimen_id": r_spec.astype(np.int64),
        "chartdate": chartdate,
        "charttime": np.where(date_only[r_spec], _NAT, ct),
        "spec_itemid": spec_itemid[skey[r_spec]],
        "test_seq": np.ones(len(r_spec), np.int32),
        "storedate": store - np.mod(store, _DAY),
        "storetime": store,
        "test_itemid": test_itemid[skey[r_spec]],
        "org_itemid": np.where(r_org >= 0, org_itemid[np.maximum(r_org, 0)], -1),
        "isolate_num": np.where(r_org >= 0, 1, -1).astype(np.int16),
        "ab_itemid": np.where(r_ab >= 0, ab_itemid[np.maximum(r_ab, 0)], -1),
        "dilution_value": dil_val,
        "order_provider_id": lambda p, pr=prov[r_spec]: _cat(_PROVIDERS, pr[p]),
        "spec_type_desc": lambda p, k_=skey[r_spec]: _cat([_SPEC[x][1] for x in spec_rows], k_[p]),
        "test_name": lambda p, k_=skey[r_spec]: _cat([_SPEC[x][3] for x in spec_rows], k_[p]),
        "org_name": lambda p, o_=r_org: _cat([o[1] for o in _ORGS], o_[p]),
        "quantity": lambda p, q_=quantity: _cat([">100,000 CFU/mL"], q_[p]),
        "ab_name": lambda p, a_=r_ab: _cat([a[1] for a in _ABS], a_[p]),
        "dilution_text": lambda p, i_=r_interp: _cat(["<=1", "=>32", "8"], i_[p]),
        "dilution_comparison": lambda p, i_=r_interp: _cat(["<=", "=>", "="], i_[p]),
        "interpretation": lambda p, i_=r_interp: _cat(["S", "R", "I"], i_[p]),
        "comments": lambda p, c_=neg_comment: _cat(["NO GROWTH.", "No MRSA isolated."], c_[p]),
    }

    # ---------------- prescriptions
    orders: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # stay, drug, start, stop
    course_end = np.minimum(t_abx + (_u(rng, 5, 10, n) * _DAY).astype(np.int64), st.dischtime)
    for src, (regs, p) in _REGIMENS.items():
        m = np.flatnonzero(inf & (st.source == src))
        choice = rng.choice(len(regs), len(m), p=p)
        reg = np.array(regs)[choice]
        for j in range(2):
            d = reg[:, j]
            ok = d >= 0
            start = _minute(t_abx[m] + j * (_u(rng, 0, 2, len(m)) * _H).astype(np.int64))
            stop = course_end[m]
            # vancomycin often stopped at 48-72 h once cultures are back
            early = (d == _D_VANC) & (rng.random(len(m)) < 0.4)
            stop = np.where(early, np.minimum(stop, start + (_u(rng, 48, 72, len(m)) * _H).astype(np.int64)), stop)
            orders.append((m[ok], d[ok], start[ok], _minute(stop[ok])))
    ro = np.flatnonzero(rule_out)
    for drug in (_D_VANC, _D_CEFE):
        start = _minute(t_abx[ro])
        orders.append(
            (
                ro,
                np.full(len(ro), drug),
                start,
                _minute(np.minimum(start + (_u(rng, 24, 48, len(ro)) * _H).astype(np.int64), st.dischtime[ro])),
            )
        )
    pro = np.flatnonzero(~inf & ~rule_out & (rng.random(n) < 0.1))
    ps = _minute(st.intime[pro] - (_u(rng, 0, 3, len(pro)) * _H).astype(np.int64))
    orders.append((pro, np.full(len(pro), _D_CEFA), ps, np.minimum(ps + _DAY, st.dischtime[pro])))
    for drug, prob in ((_D_BACI, 0.05), (_D_ERYO, 0.03)):
        m = np.flatnonzero(rng.random(n) < prob)
        stt = _minute(st.intime[m] + ((st.outtime[m] - st.intime[m]) * rng.random(len(m))).astype(np.int64))
        orders.append((m, np.full(len(m), drug), stt, np.minimum(stt + 3 * _DAY, st.dischtime[m])))
    # diluent (BASE) rows next to vancomycin orders
    van = [(o[0][o[1] == _D_VANC], o[2][o[1] == _D_VANC], o[3][o[1] == _D_VANC]) for o in orders]
    vs_ = np.concatenate([v[0] for v in van])
    vkeep = rng.random(len(vs_)) < 0.7
    orders.append(
        (
            vs_[vkeep],
            np.full(vkeep.sum(), _D_ISOD),
            np.concatenate([v[1] for v in van])[vkeep],
            np.concatenate([v[2] for v in van])[vkeep],
        )
    )
    # routine non-antibiotic drugs
    nr = rng.integers(5, 12, n)
    rs = np.repeat(np.arange(n), nr)
    rd = _ROUTINE_DRUGS[rng.integers(0, len(_ROUTINE_DRUGS), len(rs))]
    rstart = _minute(
        st.admittime[rs] + ((st.dischtime[rs] - st.admittime[rs]) * rng.random(len(rs)) * 0.7).astype(np.int64)
    )
    rstop = np.minimum(rstart + (_u(rng, 0.5, 6, len(rs)) * _DAY).astype(np.int64), st.dischtime[rs])
    orders.append((rs, rd, rstart, _minute(rstop)))
    o_s = np.concatenate([o[0] for o in orders])
    o_d = np.concatenate([o[1] for o in orders]).astype(np.int64)
    o_start = np.concatenate([o[2] for o in orders])
    o_stop = np.maximum(np.concatenate([o[3] for o in orders]), o_start + 60 * 60)
    k = len(o_s)
    drugs = _DRUGS
    col = lambda j: [d[j] for d in drugs]  # noqa: E731
    o_prov = rng.integers(0, len(_PROVIDERS), k)
    rx: dict[str, Any] = {
        "_s": o_s,
        "starttime": o_start,
        "stoptime": o_stop,
        "doses_per_24_hrs": np.array(col(8), np.float64)[o_d],
        "order_provider_id": lambda p: _cat(_PROVIDERS, o_prov[p]),
        "drug_type": lambda p: _cat(col(1), o_d[p]),
        "drug": lambda p: _cat(col(0), o_d[p]),
        "formulary_drug_cd": lambda p: _cat(col(2), o_d[p]),
        "gsn": lambda p: _cat([""], np.full(len(p), -1)),
        "ndc": lambda p: _cat(["0"], np.zeros(len(p), np.int64)),
        "prod_strength": lambda p: _cat(col(3), o_d[p]),
        "form_rx": lambda p: _cat([""], np.full(len(p), -1)),
        "dose_val_rx": lambda p: _cat(col(4), o_d[p]),
        "dose_unit_rx": lambda p: _cat(col(5), o_d[p]),
        "form_val_disp": lambda p: _cat(col(6), o_d[p]),
        "form_unit_disp": lambda p: _cat(col(7), o_d[p]),
        "route": lambda p: _cat(col(9), o_d[p]),
    }

    # ---------------- antibiotic doses charted in inputevents while in the ICU
    icu_item = np.array(col(10), np.int64)[o_d]
    has = icu_item > 0
    a_s, a_d, a_item = o_s[has], o_d[has], icu_item[has]
    a0 = np.maximum(o_start[has], st.intime[a_s])
    a1 = np.minimum(o_stop[has], st.outtime[a_s])
    per_day = np.array(col(8), np.float64)[a_d]
    gi, gt = _grid(rng, a0, a1 - 1, (24.0 / per_day) * _H)
    gt = _minute(gt)
    kk = len(gi)
    abx_inputs: dict[str, Any] = {
        "_s": a_s[gi],
        "starttime": gt,
        "endtime": gt + (_u(rng, 30, 90, kk) * 60).astype(np.int64) // 60 * 60,
        "itemid": a_item[gi].astype(np.int32),
        "amount": np.ones(kk),
        "_amountuom": np.full(kk, 3),
        "rate": np.full(kk, np.nan),
        "_rateuom": np.full(kk, -1),
        "_link": np.arange(kk, dtype=np.int64),
        "_cat": np.full(kk, 3),
        "totalamount": np.full(kk, np.nan),
        "_status": np.ones(kk, np.int64),
    }
    return micro, rx, _input_common(rng, st, abx_inputs)


# --------------------------------------------------------------------------------------------------------------
# Bad rows
# --------------------------------------------------------------------------------------------------------------


def _pick_kinds(rng: np.random.Generator, applicable: np.ndarray, rate: float) -> np.ndarray:
    """Each row with ≥ 1 applicable kind is bad with probability ``rate``; its kind is uniform among those."""
    k = len(applicable)
    kinds = np.full(k, -1, np.int8)
    if rate <= 0 or k == 0:
        return kinds
    eligible = applicable.any(axis=1)
    sel = np.flatnonzero(eligible & (rng.random(k) < rate))
    if len(sel):
        app = applicable[sel]
        cnt = app.sum(axis=1)
        j = np.floor(rng.random(len(sel)) * cnt).astype(np.int64)
        csum = np.cumsum(app, axis=1)
        kinds[sel] = np.argmax(csum > j[:, None], axis=1).astype(np.int8)
    return kinds


def _bad_chart(rng: np.random.Generator, cols: dict[str, Any], rate: float) -> None:
    num, text, item = cols["_num"], cols["_text"], cols["itemid"]
    s, t = cols["_s"], cols["charttime"]
    k = len(num)
    # the first and last heart rate of a stay define its charted span (mimic-code icustay_times): never made bad
    hr = item == 220045
    n_st = int(s.max()) + 1 if k else 0
    lo, hi = np.full(n_st, np.iinfo(np.int64).max), np.full(n_st, np.iinfo(np.int64).min)
    np.minimum.at(lo, s[hr], t[hr])
    np.maximum.at(hi, s[hr], t[hr])
    protected = hr & ((t == lo[s]) | (t == hi[s]))
    app = np.zeros((k, len(BAD_ROW_KINDS)), bool)
    app[:, _K_UNKNOWN] = ~protected
    app[:, _K_TEXT] = ~np.isnan(num) & ~protected
    app[:, _K_IMPLAUSIBLE] = ~np.isnan(num) & (text < 0) & ~protected
    kinds = _pick_kinds(rng, app, rate)
    m = kinds == _K_UNKNOWN
    item[m] = rng.choice(_UNKNOWN_CHART_ITEMIDS, m.sum())
    m = kinds == _K_TEXT
    num[m], text[m] = np.nan, _TX_ERROR
    m = kinds == _K_IMPLAUSIBLE
    num[m] = 99999.0
    cols["_bad"] = kinds
    _chart_columns(cols)


def _bad_lab(rng: np.random.Generator, cols: dict[str, Any], rate: float) -> None:
    num, text, item = cols["_num"], cols["_text"], cols["itemid"]
    k = len(num)
    protected = (item == FERRITIN_ITEMID) | (item == HLA_DR_ITEMID)
    app = np.zeros((k, len(BAD_ROW_KINDS)), bool)
    app[:, _K_UNKNOWN] = ~protected
    app[:, _K_TEXT] = ~protected & ~np.isnan(num)
    app[:, _K_IMPLAUSIBLE] = ~protected & ~np.isnan(num)
    app[:, _K_UNIT] = (item == 50885) | (item == 50912)
    kinds = _pick_kinds(rng, app, rate)
    m = kinds == _K_UNKNOWN
    item[m] = rng.choice(_UNKNOWN_LAB_ITEMIDS, m.sum())
    m = kinds == _K_TEXT
    num[m], text[m] = np.nan, 3
    m = kinds == _K_IMPLAUSIBLE
    num[m] = 99999.0
    m = kinds == _K_UNIT
    factor = np.where(item == 50885, 17.104, 88.42)  # mg/dL → µmol/L
    num[m] = np.round(num[m] * factor[m])
    cols["_uomfix"][m] = 1
    cols["_bad"] = kinds


def _bad_input(rng: np.random.Generator, cols: dict[str, Any], rate: float) -> None:
    rate_v, item = cols["rate"], cols["itemid"]
    k = len(rate_v)
    app = np.zeros((k, len(BAD_ROW_KINDS)), bool)
    app[:, _K_IMPLAUSIBLE] = ~np.isnan(rate_v)
    app[:, _K_UNIT] = item == 221906
    kinds = _pick_kinds(rng, app, rate)
    m = kinds == _K_IMPLAUSIBLE
    rate_v[m] = 99999.0
    m = kinds == _K_UNIT
    rate_v[m] = np.float32(rate_v[m] / 1000.0).astype(np.float64)
    cols["_rateuom"][m] = 2  # mg/kg/min
    cols["_bad"] = kinds
    _input_columns(cols)


def _bad_output(rng: np.random.Generator, cols: dict[str, Any], st: _Stays, rate: float) -> None:
    k = len(cols["value"])
    app = np.zeros((k, len(BAD_ROW_KINDS)), bool)
    app[:, _K_IMPLAUSIBLE] = True
    app[:, _K_BEFORE] = True
    kinds = _pick_kinds(rng, app, rate)
    m = kinds == _K_IMPLAUSIBLE
    cols["value"][m] = 99999.0
    m = kinds == _K_BEFORE
    s = cols["_s"][m]
    t = _minute(st.intime[s] - (_u(rng, 1, 48, m.sum()) * _H).astype(np.int64))
    cols["charttime"][m] = t
    cols["storetime"][m] = t + 600
    cols["valueuom"] = lambda p: _cat(pa.array(["mL"]), np.zeros(len(p), np.int64))
    cols["_bad"] = kinds


# --------------------------------------------------------------------------------------------------------------
# Stay-level tables and truth
# --------------------------------------------------------------------------------------------------------------


def _stay_tables(rng: np.random.Generator, st: _Stays) -> dict[str, pa.Table]:
    n = st.n
    idx = np.arange(n)
    g0 = int(st.g[0])
    out: dict[str, pa.Table] = {}
    fs = np.flatnonzero(st.first_of_subject)
    # dod belongs to the subject: take it from the subject's last stay
    subj = np.cumsum(st.first_of_subject) - 1
    dod = np.full(len(fs), _NAT)
    np.maximum.at(dod, subj, st.dod_days)
    out["patients"] = _finish(
        "patients",
        {
            "subject_id": st.subject_id[fs],
            "gender": _cat(["M", "F"], st.female[fs].astype(np.int64)),
            "anchor_age": st.anchor_age[fs].astype(np.int16),
            "anchor_year": st.anchor_year[fs].astype(np.int16),
            "anchor_year_group": _cat(_ANCHOR_GROUPS, st.anchor_group[fs]),
            "dod": dod,
        },
        fs,
        np.zeros(len(fs), np.int64),
        g0,
    )
    dloc = np.where(st.died, 0, rng.choice(5, n, p=[0.45, 0.2, 0.2, 0.1, 0.05]) + 1)
    out["admissions"] = _finish(
        "admissions",
        {
            "subject_id": st.subject_id,
            "hadm_id": st.hadm_id,
            "admittime": st.admittime,
            "dischtime": st.dischtime,
            "deathtime": st.deathtime,
            "admission_type": _cat(
                ["EW EMER.", "URGENT", "DIRECT EMER.", "ELECTIVE", "OBSERVATION ADMIT"],
                np.where(st.ed, rng.choice([0, 4], n, p=[0.85, 0.15]), rng.choice([1, 2, 3], n, p=[0.5, 0.3, 0.2])),
            ),
            "admit_provider_id": _cat(_PROVIDERS, rng.integers(0, len(_PROVIDERS), n)),
            "admission_location": _cat(
                ["EMERGENCY ROOM", "TRANSFER FROM HOSPITAL", "PHYSICIAN REFERRAL"],
                np.where(st.ed, 0, rng.choice([1, 2], n)),
            ),
            "discharge_location": _cat(
                ["DIED", "HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB", "HOSPICE"], dloc
            ),
            "insurance": _cat(["Medicare", "Medicaid", "Other"], rng.choice(3, n, p=[0.45, 0.1, 0.45])),
            "language": _cat(["ENGLISH", "?"], (rng.random(n) < 0.1).astype(np.int64)),
            "marital_status": _cat(
                ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED"],
                np.where(rng.random(n) < 0.05, -1, rng.choice(4, n, p=[0.45, 0.3, 0.15, 0.1])),
            ),
            "race": _cat(
                ["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN", "OTHER", "UNKNOWN"],
                rng.choice(6, n, p=[0.65, 0.12, 0.05, 0.04, 0.06, 0.08]),
            ),
            "edregtime": st.edregtime,
            "edouttime": st.edouttime,
            "hospital_expire_flag": st.died.astype(np.int16),
        },
        idx,
        st.admittime,
        g0,
    )
    last = np.where(rng.random(n) < 0.9, st.careunit, rng.integers(0, len(_CAREUNITS), n))
    out["icustays"] = _finish(
        "icustays",
        {
            "subject_id": st.subject_id,
            "hadm_id": st.hadm_id,
            "stay_id": st.stay_id,
            "first_careunit": _cat(_CAREUNITS, st.careunit),
            "last_careunit": _cat(_CAREUNITS, last),
            "intime": st.intime,
            "outtime": st.outtime,
            "los": (st.outtime - st.intime) / _DAY,
        },
        idx,
        st.intime,
        g0,
    )
    # diagnoses: infection codes first for infected stays, then the admitting problem and comorbidities
    codes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # stay, code index into table, priority

    table: list[tuple[str, str]] = []

    def code_id(pair: tuple[str, str]) -> int:
        if pair not in table:
            table.append(pair)
        return table.index(pair)

    inf = np.flatnonzero(st.infected)
    septic = st.infected & (st.severity > 0.35)
    shock = st.infected & (st.severity > 0.55)
    m = np.flatnonzero(septic)
    codes.append((m, np.full(len(m), code_id(_ICD_SEPSIS)), np.full(len(m), 0)))
    src_ids = np.array([code_id(_ICD_SOURCE[i]) for i in range(4)])
    codes.append((inf, src_ids[st.source[inf]], np.full(len(inf), 1)))
    m = np.flatnonzero(septic & ~shock)
    codes.append((m, np.full(len(m), code_id(_ICD_SEVERE_SEPSIS)), np.full(len(m), 2)))
    m = np.flatnonzero(shock)
    codes.append((m, np.full(len(m), code_id(_ICD_SEPTIC_SHOCK)), np.full(len(m), 2)))
    non = np.flatnonzero(~st.infected)
    ni_ids = np.array([code_id(p) for p in _ICD_NONINF])
    codes.append((non, ni_ids[st.noninf_reason[non]], np.full(len(non), 0)))
    cm_ids = np.array([code_id(p) for p in _ICD_COMORB])
    cs_, cc_ = np.nonzero(st.comorb)
    codes.append((cs_, cm_ids[cc_], np.full(len(cs_), 3)))
    ds = np.concatenate([c[0] for c in codes])
    dc = np.concatenate([c[1] for c in codes])
    dp = np.concatenate([c[2] for c in codes])
    order = np.lexsort((dp, ds))
    ds, dc = ds[order], dc[order]
    first = np.r_[True, ds[1:] != ds[:-1]]
    grp_start = np.maximum.accumulate(np.where(first, np.arange(len(ds)), 0))
    seq = np.arange(len(ds)) - grp_start + 1
    v10 = st.icd10[ds]
    code10 = np.array([p[0] for p in table])
    code9 = np.array([p[1] for p in table])
    out["diagnoses_icd"] = _finish(
        "diagnoses_icd",
        {
            "subject_id": st.subject_id[ds],
            "hadm_id": st.hadm_id[ds],
            "seq_num": seq.astype(np.int32),
            "icd_code": pa.array(np.where(v10, code10[dc], code9[dc]).tolist(), type=pa.string()),
            "icd_version": np.where(v10, 10, 9).astype(np.int32),
        },
        ds,
        seq.astype(np.int64),
        g0,
    )
    return out


def _truth_table(st: _Stays, cfg: _Cfg, endo: dict[str, np.ndarray], counts: np.ndarray, g0: int) -> pa.Table:
    n = st.n
    idx = np.arange(n)
    cols: dict[str, Any] = {
        "stay_id": st.stay_id,
        "subject_id": st.subject_id,
        "hadm_id": st.hadm_id,
        "seed": np.full(n, cfg.seed, np.int64),
        "infected": st.infected,
        "source": _cat(SOURCES, st.source),
        "onset_kind": _cat(["community", "hospital_ward", "icu"], st.onset_kind),
        "infection_onset": st.onset,
        "severity": np.round(st.severity, 4),
        "ventilated": st.vent_start != _NAT,
        "vasopressors": st.pressors,
        "died": st.died,
        "screened": endo["screened"],
        "screen_time": endo["screen_time"],
        "ferritin_true_ng_per_ml": np.where(endo["screened"], endo["ferritin"], np.nan),
        "ferritin_censored": endo["ferritin_censored"],
        "hla_dr_true_ab_per_cell": np.where(endo["screened"], endo["hla"], np.nan),
        "hla_dr_reported": endo["hla_reported"],
        "endotype_true": _cat(ENDOTYPES[:3], endo["endotype_true"]),
        "endotype_observable": _cat(ENDOTYPES, endo["endotype_observable"]),
        "bad_rows_total": counts.sum(axis=1).astype(np.int32),
    }
    for j, kname in enumerate(BAD_ROW_KINDS):
        cols[f"bad_{kname}"] = counts[:, j].astype(np.int32)
    return _finish("_truth/stays", cols, idx, st.intime, g0)


# --------------------------------------------------------------------------------------------------------------
# Dictionaries
# --------------------------------------------------------------------------------------------------------------


def _d_items() -> dict[str, list[Any]]:
    rows: list[tuple[Any, ...]] = []
    for itemid, (label, abbr, cat, unit, ptype) in _CHART_ITEMS.items():
        rows.append((itemid, label, abbr, "chartevents", cat, unit, ptype, None, None))
    for itemid, (label, cat, unit) in _INPUT_ITEMS.items():
        rows.append((itemid, label, label, "inputevents", cat, unit, "Solution", None, None))
    for itemid, label in _OUTPUT_ITEMS.items():
        rows.append((itemid, label, label, "outputevents", "Output", "mL", "Numeric", None, None))
    for itemid, label in _PROC_ITEMS.items():
        rows.append((itemid, label, label, "procedureevents", "Ventilation", None, "Process", None, None))
    rows.sort()
    names = SCHEMAS["d_items"].names
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


def _d_labitems() -> dict[str, list[Any]]:
    rows = sorted((itemid, v[0], v[1], v[2]) for itemid, v in _LAB_ITEMS.items())
    return {name: [r[i] for r in rows] for i, name in enumerate(SCHEMAS["d_labitems"].names)}
