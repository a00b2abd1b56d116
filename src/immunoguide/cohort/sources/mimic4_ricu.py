"""MIMIC-IV read as ricu 0.6.3 reads it (its ``miiv`` source): the front end of the ``ricu`` source profile
(:mod:`.ricu_profile` describes every reading rule) for MIMIC-IV in any layout :mod:`.mimic4_tables` reads.

Only what is particular to MIMIC-IV is here: one ``inputevents`` table (MetaVision), prescriptions attached by
hospital admission at their start time, and ventilation from the procedures 225792 (invasive) and 225794
(non-invasive) (ricu ``mech_vent``). Stays and diagnoses are read as the default adapter reads them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from immunoguide.cohort.sources._mimic_sql import _in
from immunoguide.cohort.sources.mimic3 import AdapterReport, duckdb_connection, load_items
from immunoguide.cohort.sources.mimic4 import OPTIONAL_TABLES, create_stays_mimic4
from immunoguide.cohort.sources.mimic4_tables import register_mimic4, unreadable_from_duckdb
from immunoguide.cohort.sources.ricu_profile import build_ricu_timeline, load_ricu_items
from immunoguide.criteria.definitions import SOFA_DEFINITIONS

__all__ = ["RICU_COLUMNS", "convert_mimic4_ricu"]

#: The MIMIC-IV tables and columns the ricu profile reads.
RICU_COLUMNS: dict[str, tuple[str, ...]] = {
    "admissions": ("hadm_id", "admittime", "deathtime", "admission_location", "edregtime"),
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year"),
    "labevents": ("hadm_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
    "microbiologyevents": ("hadm_id", "chartdate", "charttime", "spec_type_desc", "org_itemid"),
    "prescriptions": ("hadm_id", "starttime", "drug", "route"),
    "diagnoses_icd": ("hadm_id", "icd_code", "icd_version"),
    "icustays": ("subject_id", "hadm_id", "stay_id", "intime", "outtime"),
    "chartevents": ("stay_id", "charttime", "itemid", "value", "valuenum", "valueuom"),
    "inputevents": ("stay_id", "starttime", "endtime", "itemid", "rate", "patientweight", "linkorderid"),
    "outputevents": ("stay_id", "charttime", "itemid", "value"),
    "procedureevents": ("stay_id", "starttime", "endtime", "itemid"),
}


def convert_mimic4_ricu(data_dir: str | Path, out_dir: str | Path) -> AdapterReport:
    """Convert MIMIC-IV into the timeline schema as ricu 0.6.3 reads it.

    Raises
    ------
    MissingTableError, MissingColumnError, UnreadableSourceError
        A table or column the profile reads is missing, or a file cannot be read (never a raw DuckDB error).
    """
    out = Path(out_dir)
    con = duckdb_connection()
    source = register_mimic4(con, data_dir, RICU_COLUMNS, optional=tuple(t for t in OPTIONAL_TABLES if t in RICU_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _convert(con, out)
    except duckdb.Error as exc:
        raise unreadable_from_duckdb(exc, source, "mimic4 adapter (ricu profile)") from None
    finally:
        con.close()


def _convert(con: duckdb.DuckDBPyConnection, out: Path) -> AdapterReport:
    it = load_items("mimic4_items.toml")
    m4 = load_ricu_items()["mimic4"]
    create_stays_mimic4(con, it["chart"])
    con.execute(
        """CREATE TABLE diagnoses AS SELECT s.stay_id, d.icd_code AS code, CAST(d.icd_version AS BIGINT) AS version
           FROM raw_diagnoses_icd d JOIN stays s ON s.hadm_id = d.hadm_id WHERE d.icd_code IS NOT NULL"""
    )
    chart_ids = sorted({i for c in m4.values() if isinstance(c, dict) for i in c.get("chartevents", [])})
    ett = ", ".join("'" + v.replace("'", "''") + "'" for v in m4["ett_gcs_values"])
    con.execute(
        f"""CREATE TABLE rr_chart AS SELECT stay_id, CAST(charttime AS TIMESTAMP) AS time, itemid,
                   TRY_CAST(valuenum AS DOUBLE) AS valuenum, value AS value_text
            FROM raw_chartevents WHERE stay_id IS NOT NULL AND (itemid IN {_in(chart_ids)} OR value IN ({ett}))"""
    )
    con.execute(
        """CREATE VIEW rr_lab AS SELECT hadm_id, CAST(charttime AS TIMESTAMP) AS time, itemid,
                  TRY_CAST(valuenum AS DOUBLE) AS valuenum, value AS value_text, valueuom FROM raw_labevents"""
    )
    con.execute(
        """CREATE VIEW rr_output AS SELECT stay_id, CAST(charttime AS TIMESTAMP) AS time, itemid,
                  TRY_CAST(value AS DOUBLE) AS value FROM raw_outputevents WHERE stay_id IS NOT NULL"""
    )
    drugs = SOFA_DEFINITIONS.catecholamines
    ids = [i for d in drugs for i in m4[d]["inputevents"]] + list(m4["abx_inputevents"])
    con.execute(
        f"""CREATE TABLE rr_mv AS SELECT stay_id, CAST(starttime AS TIMESTAMP) AS start, CAST(endtime AS TIMESTAMP) AS stop,
                   TRY_CAST(rate AS DOUBLE) AS rate, CAST(linkorderid AS VARCHAR) AS linkorderid, itemid
            FROM raw_inputevents WHERE stay_id IS NOT NULL AND itemid IN {_in(ids)}"""
    )
    con.execute(
        """CREATE TABLE rr_cv (stay_id BIGINT, start TIMESTAMP, rate DOUBLE, linkorderid VARCHAR, itemid BIGINT,
                                row_id BIGINT)"""
    )
    con.execute(
        """CREATE TABLE rr_presc AS SELECT CAST(NULL AS BIGINT) AS stay_id, hadm_id, CAST(starttime AS TIMESTAMP) AS time,
                  drug AS name, route FROM raw_prescriptions WHERE starttime IS NOT NULL"""
    )
    noon = int(load_ricu_items()["rules"]["sample_date_only_offset_h"])
    con.execute(
        f"""CREATE VIEW rr_micro AS SELECT hadm_id, CAST(chartdate AS TIMESTAMP) AS chartdate,
                   coalesce(CAST(charttime AS TIMESTAMP), CAST(chartdate AS TIMESTAMP) + INTERVAL {noon} HOUR) AS time,
                   charttime IS NULL AS date_only, spec_type_desc AS specimen, org_itemid IS NOT NULL AS positive
            FROM raw_microbiologyevents"""
    )
    kinds = m4["mech_vent"]["procedureevents"]
    case = "CASE " + " ".join(f"WHEN itemid IN {_in(v)} THEN '{k}'" for k, v in kinds.items()) + " END"
    con.execute(
        f"""CREATE VIEW rr_mech_vent AS SELECT stay_id, CAST(starttime AS TIMESTAMP) AS start,
                   CAST(endtime AS TIMESTAMP) AS stop, {case} AS kind FROM raw_procedureevents
            WHERE stay_id IS NOT NULL AND itemid IN {_in([i for v in kinds.values() for i in v])}"""
    )
    return build_ricu_timeline(con, out, dataset="mimic4", items=m4, extra_lab_ids=tuple(it["lab"]["ferritin_ng_per_ml"]))
