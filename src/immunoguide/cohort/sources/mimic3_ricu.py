"""MIMIC-III read as ricu 0.6.3 reads it (its ``mimic`` / ``mimic_demo`` sources): the front end of the ``ricu``
source profile (:mod:`.ricu_profile` describes every reading rule) for MIMIC-III CSV folders such as the open demo.

Only what is particular to MIMIC-III is here: the CareVue and MetaVision tables, prescriptions carrying an ICU-stay
id and a start *date* (ricu ``mimic_abx_presc``: + 720 min), and ventilation from start and end events (ricu
``vent_ind``). Stays and diagnoses are read as the default adapter reads them.
"""

from __future__ import annotations

from pathlib import Path

from immunoguide.cohort.sources._mimic_sql import _in
from immunoguide.cohort.sources.mimic3 import (
    AdapterReport,
    _keep_rows,
    _register,
    create_stays,
    duckdb_connection,
    load_items,
)
from immunoguide.cohort.sources.ricu_profile import build_ricu_timeline, load_ricu_items
from immunoguide.criteria.definitions import SOFA_DEFINITIONS

__all__ = ["convert_mimic3_ricu"]


def convert_mimic3_ricu(data_dir: str | Path, out_dir: str | Path) -> AdapterReport:
    """Convert a MIMIC-III CSV folder into the timeline schema as ricu 0.6.3 reads it.

    Parameters
    ----------
    data_dir : path
        Folder with the MIMIC-III tables as ``.csv.gz`` (or ``.csv``), e.g. the open demo.
    out_dir : path
        Output folder; one Parquet file per timeline table and ``adapter.json``.
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    it = load_items()
    ri = load_ricu_items()
    m3, rules = ri["mimic3"], ri["rules"]
    con = duckdb_connection()
    _register(con, data_dir, extra=("procedureevents_mv",))
    chart_ids = sorted({i for c in m3.values() if isinstance(c, dict) for i in c.get("chartevents", [])})
    ett = ", ".join("'" + v.replace("'", "''") + "'" for v in m3["ett_gcs_values"])
    # chartevents is decompressed and parsed once (the weight of create_stays and every concept below read it)
    _keep_rows(con, "chartevents", f"itemid IN {_in(sorted({*chart_ids, *it['chart']['weight_kg']}))} OR value IN ({ett})")
    create_stays(con, it, int(it["attachment"]["pre_icu_h"]))
    con.execute(
        """CREATE TABLE diagnoses AS SELECT s.stay_id, d.icd9_code AS code, 9 AS version
           FROM raw_diagnoses_icd d JOIN stays s USING (hadm_id) WHERE d.icd9_code IS NOT NULL"""
    )
    con.execute(
        f"""CREATE TABLE rr_chart AS SELECT icustay_id AS stay_id, charttime AS time, itemid, valuenum, value AS value_text
            FROM raw_chartevents WHERE icustay_id IS NOT NULL AND (itemid IN {_in(chart_ids)} OR value IN ({ett}))"""
    )
    con.execute(
        "CREATE VIEW rr_lab AS SELECT hadm_id, charttime AS time, itemid, valuenum, value AS value_text, valueuom FROM raw_labevents"
    )
    con.execute("CREATE VIEW rr_output AS SELECT icustay_id AS stay_id, charttime AS time, itemid, value FROM raw_outputevents WHERE icustay_id IS NOT NULL")
    drugs = SOFA_DEFINITIONS.catecholamines
    mv_ids = [i for d in drugs for i in m3[d]["inputevents_mv"]] + list(m3["abx_inputevents"])
    con.execute(
        f"""CREATE TABLE rr_mv AS SELECT icustay_id AS stay_id, starttime AS start, endtime AS stop, rate, linkorderid,
                   itemid FROM raw_inputevents_mv WHERE icustay_id IS NOT NULL AND itemid IN {_in(mv_ids)}"""
    )
    cv_ids = [i for d in drugs for i in m3[d]["inputevents_cv"]]
    # ricu expand_intervals runs per concept's items: the order key is (stay, linkorderid) within one drug
    cv_drug = "CASE " + " ".join(f"WHEN itemid IN {_in(m3[d]['inputevents_cv'])} THEN '{d}'" for d in drugs) + " END"
    con.execute(
        f"""CREATE TABLE rr_cv AS SELECT icustay_id AS stay_id, charttime AS start, rate,
                   {cv_drug} || ':' || CAST(linkorderid AS VARCHAR) AS linkorderid, itemid, row_id
            FROM raw_inputevents_cv WHERE icustay_id IS NOT NULL AND itemid IN {_in(cv_ids)}"""
    )
    con.execute(
        f"""CREATE TABLE rr_presc AS SELECT icustay_id AS stay_id, CAST(NULL AS BIGINT) AS hadm_id,
                   startdate + INTERVAL {int(rules['abx_prescription_offset_min'])} MINUTE AS time, drug AS name, route
            FROM raw_prescriptions WHERE icustay_id IS NOT NULL AND startdate IS NOT NULL"""
    )
    noon = int(rules["sample_date_only_offset_h"])
    con.execute(
        f"""CREATE VIEW rr_micro AS SELECT hadm_id, chartdate, coalesce(charttime, chartdate + INTERVAL {noon} HOUR) AS time,
                   charttime IS NULL AS date_only, spec_type_desc AS specimen, org_itemid IS NOT NULL AS positive
            FROM raw_microbiologyevents"""
    )
    con.execute(
        f"""CREATE VIEW rr_vent_start AS SELECT DISTINCT stay_id, date_trunc('minute', time) AS t FROM rr_chart
            WHERE itemid IN {_in(m3['vent_start']['chartevents'])}"""
    )
    con.execute(
        f"""CREATE VIEW rr_vent_end AS
            SELECT DISTINCT stay_id, date_trunc('minute', time) AS t FROM rr_chart WHERE itemid IN {_in(m3['vent_end']['chartevents'])}
            UNION
            SELECT DISTINCT icustay_id, date_trunc('minute', starttime) FROM raw_procedureevents_mv
            WHERE icustay_id IS NOT NULL AND itemid IN {_in(m3['vent_end']['procedureevents_mv'])}"""
    )
    return build_ricu_timeline(con, out, dataset="mimic3", items=m3, extra_lab_ids=tuple(it["lab"]["ferritin_ng_per_ml"]))
