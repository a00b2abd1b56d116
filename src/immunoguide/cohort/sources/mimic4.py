"""MIMIC-IV (hosp + icu modules) → the timeline schema (:mod:`immunoguide.cohort.schema`).

Users bring their own credentialed copy, as distributed: ``DIR/hosp/*.csv.gz`` and ``DIR/icu/*.csv.gz`` as PhysioNet
ships it (v2.0 to v3.1 column sets), Parquet (``DIR/icu/chartevents.parquet`` or a folder
``DIR/icu/chartevents/*.parquet``, as ``immunoguide synth mimic4`` writes), or a DuckDB database built by mimic-code
(schemas ``mimiciv_hosp``, ``mimiciv_icu``); :mod:`.mimic4_tables` finds and registers the tables, with the same
column types in every layout, and names a missing table or column. Item ids are data (``mimic4_items.toml``); units
are converted once;
implausible values, unit mismatches, text in numeric fields and out-of-order times are counted per stay in
``data_quality``. The named choices are those of the MIMIC-III adapter (:mod:`.mimic3`), except ventilation
(mimic-code ``ventilation.sql``: procedures 225792/225794, ventilator modes and the O2 delivery device, 14 h
episode gap) and antibiotics (``prescriptions.starttime`` has a time in MIMIC-IV).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from immunoguide.cohort.sources._mimic_sql import (
    FIO2_LAB_OK,
    GCS_IMPUTED_DQ,
    GCS_SEDATED_OBS,
    GCS_TOTAL_OBS,
    _in,
    _plausible,
    _strs,
    antibiotic_filter_sql,
    chart_map_fio2_sql,
    cultures_sql,
    gcs_raw_sql,
    gcs_total_sql,
    items_joined_sql,
    lab_checked_dq_sql,
    numeric_lab_sql,
    observations_sql,
    vent_episodes_sql,
    weight_ctes_sql,
)
from immunoguide.cohort.sources.mimic3 import AdapterReport, duckdb_connection, finish_adapter, load_items
from immunoguide.cohort.sources.mimic4_tables import Mimic4Source, register_mimic4, unreadable_from_duckdb

__all__ = ["ADAPTER_COLUMNS", "OPTIONAL_TABLES", "convert_mimic4", "create_stays_mimic4"]

#: The MIMIC-IV tables this adapter reads (in the order they are looked up) and the columns it reads from each.
ADAPTER_COLUMNS: dict[str, tuple[str, ...]] = {
    "admissions": ("hadm_id", "admittime", "deathtime", "admission_location", "edregtime"),
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year"),
    "labevents": ("subject_id", "specimen_id", "itemid", "charttime", "value", "valuenum", "valueuom", "comments"),
    "microbiologyevents": ("subject_id", "chartdate", "charttime", "spec_type_desc", "org_itemid"),
    "prescriptions": ("subject_id", "starttime", "drug_type", "drug", "route"),
    "diagnoses_icd": ("hadm_id", "icd_code", "icd_version"),
    "icustays": ("subject_id", "hadm_id", "stay_id", "intime", "outtime"),
    "chartevents": ("stay_id", "charttime", "itemid", "value", "valuenum", "valueuom"),
    "inputevents": (
        "stay_id", "starttime", "endtime", "itemid", "rate", "rateuom", "patientweight", "statusdescription",
    ),
    "outputevents": ("stay_id", "charttime", "itemid", "value"),
    "procedureevents": ("stay_id", "starttime", "endtime", "itemid"),
    "d_items": ("itemid",),
    "d_labitems": ("itemid",),
}
#: Tables the adapter reads when present (without them unknown item ids cannot be told apart).
OPTIONAL_TABLES = ("d_items", "d_labitems")
#: Ventilation levels of ``vent_pts`` (5 invasive … 1 oxygen) as the timeline's kinds (mimic-code ``ventilation.sql``).
_VENT_KIND_CASE = (
    "CASE any_value(lvl) WHEN 5 THEN 'invasive' WHEN 4 THEN 'tracheostomy_ventilated' WHEN 3 THEN 'noninvasive' "
    "WHEN 2 THEN 'hfnc' ELSE 'oxygen' END"
)


def convert_mimic4(data_dir: str | Path, out_dir: str | Path) -> AdapterReport:
    """Convert MIMIC-IV into the timeline schema (Parquet in ``out_dir``).

    Parameters
    ----------
    data_dir : path
        A MIMIC-IV folder (``hosp/``, ``icu/``) of ``.csv.gz``/``.csv`` or Parquet files, or a DuckDB database built
        by mimic-code (see :mod:`.mimic4_tables`).
    out_dir : path
        Output folder; one ``<table>.parquet`` per timeline table and ``adapter.json``.

    Raises
    ------
    MissingTableError, MissingColumnError, UnreadableSourceError
        A table or a column the adapter reads is missing, or a file cannot be read (never a raw DuckDB error).
    """
    out = Path(out_dir)
    con = duckdb_connection()
    source = register_mimic4(con, data_dir, ADAPTER_COLUMNS, optional=OPTIONAL_TABLES)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _convert(con, source, out)
    except duckdb.Error as exc:
        raise unreadable_from_duckdb(exc, source, f"--data {data_dir}") from None



def create_stays_mimic4(con: duckdb.DuckDBPyConnection, chart_items: dict, chart: str = "raw_chartevents") -> None:
    """``CREATE TABLE stays`` (one row per ICU stay in the timeline columns) from the registered MIMIC-IV tables;
    the charted weight is read from ``chart`` (``raw_chartevents`` or a table of its rows holding the weight items)."""
    con.execute(
        f"""
        CREATE TABLE stays AS
        WITH {weight_ctes_sql(chart_items["weight_kg"], stay="stay_id", chart=chart, inputs="raw_inputevents")}
        SELECT i.stay_id, i.subject_id, i.hadm_id, CAST(i.intime AS TIMESTAMP) AS intime,
               CAST(i.outtime AS TIMESTAMP) AS outtime, CAST(a.admittime AS TIMESTAMP) AS admittime,
               CAST(a.deathtime AS TIMESTAMP) AS deathtime,
               CASE WHEN a.admission_location LIKE 'EMERGENCY%' OR a.edregtime IS NOT NULL THEN 'emergency_department'
                    ELSE 'inpatient' END AS admission_source,
               CAST(p.anchor_age AS DOUBLE) + (year(CAST(a.admittime AS TIMESTAMP)) - p.anchor_year) AS age_years,
               p.gender AS sex, coalesce(w.weight_kg, wi.weight_kg) AS weight_kg, 'mimic4' AS dataset
        FROM raw_icustays i JOIN raw_admissions a ON a.hadm_id = i.hadm_id JOIN raw_patients p ON p.subject_id = i.subject_id
        LEFT JOIN w ON w.stay_id = i.stay_id LEFT JOIN wi ON wi.stay_id = i.stay_id
        """
    )

def _convert(con: duckdb.DuckDBPyConnection, source: Mimic4Source, out: Path) -> AdapterReport:
    it = load_items("mimic4_items.toml")
    abx_items = load_items(it["antibiotics"]["from_items"])["antibiotics"]
    dictionaries = [t for t in OPTIONAL_TABLES if t in source.tables]
    pre = int(it["attachment"]["pre_icu_h"])
    noon = int(it["attachment"]["date_only_hour"])
    ch = it["chart"]

    g = it["gcs"]
    v = it["ventilation"]
    # chartevents is by far the largest table (86 M rows at 100,000 synthetic stays; 300 M+ in MIMIC-IV), so it is
    # read twice, not once per use: here for the rows of the items mapped (about a quarter of the synthetic rows),
    # which the weight, MAP/FiO2, GCS and ventilation statements read, and below for the rows without a stay or of
    # an unknown item.
    chart_items = ch["weight_kg"] + ch["map_mmhg"] + ch["fio2"] + g["eye"] + g["verbal"] + g["motor"]
    chart_items += v["mode_items"] + v["device_items"]
    con.execute(
        f"""CREATE TABLE chart_kept AS SELECT stay_id, charttime, itemid, value, valuenum, valueuom FROM raw_chartevents
            WHERE itemid IN {_in(sorted(set(chart_items)))}"""
    )
    create_stays_mimic4(con, ch, chart="chart_kept")
    con.execute(
        f"CREATE TABLE win AS SELECT stay_id, subject_id, intime - INTERVAL {pre} HOUR AS t0, outtime AS t1 FROM stays"
    )
    dq: list[str] = [
        """SELECT stay_id, 'icustays', 'stay', 'times_out_of_order', 1, CAST(intime AS VARCHAR) FROM stays WHERE outtime < intime"""
    ]

    con.execute(
        f"""
        CREATE TABLE chart_num AS
        SELECT c.stay_id, CAST(c.charttime AS TIMESTAMP) AS time, c.itemid, c.value AS value_text,
               TRY_CAST(c.valuenum AS DOUBLE) AS valuenum, c.valueuom
        FROM chart_kept c JOIN stays s ON s.stay_id = c.stay_id
        WHERE c.itemid IN {_in(ch['map_mmhg'] + ch['fio2'])}
        """
    )
    obs, chart_dq = chart_map_fio2_sql(ch["map_mmhg"], ch["fio2"])
    dq += chart_dq

    cf = int(g["carry_forward_h"])
    con.execute(
        gcs_raw_sql(
            g["eye"], g["verbal"], g["motor"], g["verbal_unassessable"],
            source="chart_kept c JOIN stays s ON s.stay_id = c.stay_id", stay="c.stay_id",
            time="CAST(c.charttime AS TIMESTAMP)", num="TRY_CAST(valuenum AS DOUBLE)",
        )
    )  # fmt: skip
    con.execute(gcs_total_sql(cf))
    con.execute(
        f"""
        CREATE TABLE vent_pts AS
        SELECT c.stay_id, CAST(c.charttime AS TIMESTAMP) AS time,
               max(CASE WHEN c.itemid IN {_in(v['mode_items'])} OR c.value IN {_strs(v['invasive_devices'])} THEN 5
                        WHEN c.value IN {_strs(v['tracheostomy_devices'])} THEN 4
                        WHEN c.value IN {_strs(v['noninvasive_devices'])} THEN 3
                        WHEN c.value IN {_strs(v['hfnc_devices'])} THEN 2
                        WHEN c.value IN {_strs(v['oxygen_devices'])} THEN 1 END) AS lvl
        FROM chart_kept c JOIN stays s ON s.stay_id = c.stay_id
        WHERE c.itemid IN {_in(v['mode_items'] + v['device_items'])}
        GROUP BY 1, 2 HAVING lvl IS NOT NULL
        """
    )
    con.execute("DROP TABLE chart_kept")  # its last reader: the memory goes to the observations
    obs += [GCS_TOTAL_OBS, GCS_SEDATED_OBS]
    dq.append(GCS_IMPUTED_DQ)

    lab = it["lab"]
    units = it["lab_units"]
    simple = ["platelets_10e3_per_ul", "bilirubin_mg_per_dl", "creatinine_mg_per_dl", "potassium_mmol_per_l", "ph", "bicarbonate_mmol_per_l"]
    all_ids = [i for k in simple for i in lab[k]] + lab["pao2_mmhg"] + lab["fio2_lab"] + lab["ferritin_ng_per_ml"] + lab["hla_dr_per_monocyte"]
    known = set(all_ids + [lab["specimen"]])
    # labevents is read once: the rows of the mapped items and (with d_labitems) of unknown items, in the stays'
    # windows; every reader of lab_raw selects its own item ids, the unknown-item count the others.
    lab_unknown = "l.itemid NOT IN (SELECT itemid FROM raw_d_labitems)" if "d_labitems" in dictionaries else ""
    con.execute(
        f"""
        CREATE TABLE lab_raw AS
        SELECT w.stay_id, CAST(l.charttime AS TIMESTAMP) AS time, l.itemid, l.value AS value_text,
               TRY_CAST(l.valuenum AS DOUBLE) AS valuenum, l.valueuom, l.comments, l.specimen_id
        FROM raw_labevents l JOIN win w ON w.subject_id = l.subject_id AND CAST(l.charttime AS TIMESTAMP) BETWEEN w.t0 AND w.t1
        WHERE l.itemid IN {_in(sorted(known))}{f" OR {lab_unknown}" if lab_unknown else ""}
        """
    )
    for k in simple:
        o, d = numeric_lab_sql(k, lab[k], units[k])
        obs.append(o)
        dq.append(d)
    obs.append(
        f"""SELECT p.stay_id, p.time, 'pao2_mmhg', p.valuenum, p.value_text, p.valueuom, NULL, 'labevents:' || p.itemid
            FROM lab_raw p JOIN lab_raw s ON s.stay_id = p.stay_id AND s.itemid = {lab['specimen']}
                 AND (s.specimen_id = p.specimen_id OR (s.specimen_id IS NULL AND s.time = p.time))
            WHERE p.itemid IN {_in(lab['pao2_mmhg'])} AND s.value_text IN {_strs(lab['specimen_arterial'])}
              AND {_plausible('pao2_mmhg', 'p.valuenum')}"""
    )
    obs.append(
        f"""SELECT stay_id, time, 'fio2_fraction', round(valuenum / 100.0, 3), value_text, valueuom, NULL, 'labevents:' || itemid
            FROM lab_raw WHERE itemid IN {_in(lab['fio2_lab'])} AND {FIO2_LAB_OK}"""
    )
    dq.append(lab_checked_dq_sql(lab["pao2_mmhg"], _plausible("pao2_mmhg", "valuenum")))
    dq.append(lab_checked_dq_sql(lab["fio2_lab"], FIO2_LAB_OK))
    for k in ("ferritin_ng_per_ml", "hla_dr_per_monocyte"):
        ok = _strs(units[k])
        obs.append(
            f"""SELECT stay_id, time, '{k}', CASE WHEN {_plausible(k, 'valuenum')} THEN valuenum END, value_text,
                       coalesce(valueuom, '{units[k][0]}'),
                       CASE WHEN '{k}' = 'hla_dr_per_monocyte' THEN CASE WHEN comments ILIKE '%quantibrite%' THEN 'quantibrite_abc'
                            WHEN comments ILIKE '%MFI%' THEN 'mfi' END END,
                       'labevents:' || itemid
                FROM lab_raw WHERE itemid IN {_in(lab[k])} AND (valueuom IN {ok} OR valueuom IS NULL)
                  AND (valuenum IS NULL OR {_plausible(k, 'valuenum')})"""
        )
        dq.append(
            f"""SELECT stay_id, 'labevents', CAST(itemid AS VARCHAR),
                       CASE WHEN valueuom IS NOT NULL AND valueuom NOT IN {ok} THEN 'unit_mismatch' ELSE 'implausible_value' END,
                       count(*), min(coalesce(CAST(valuenum AS VARCHAR), value_text) || coalesce(' ' || valueuom, ''))
                FROM lab_raw WHERE itemid IN {_in(lab[k])}
                  AND NOT (coalesce(valueuom IN {ok}, true) AND (valuenum IS NULL OR {_plausible(k, 'valuenum')}))
                GROUP BY ALL"""
        )

    u = it["urine"]
    con.execute(
        f"""
        CREATE TABLE uo_raw AS SELECT o.stay_id, CAST(o.charttime AS TIMESTAMP) AS time, o.itemid,
               TRY_CAST(o.value AS DOUBLE) AS value,
               CASE WHEN o.itemid IN {_in(u['negative_items'])} THEN -TRY_CAST(o.value AS DOUBLE) ELSE TRY_CAST(o.value AS DOUBLE) END AS signed
        FROM raw_outputevents o JOIN stays s ON s.stay_id = o.stay_id
        WHERE o.itemid IN {_in(u['items'] + u['negative_items'])}
        """
    )
    con.execute(
        f"""CREATE TABLE uo_net AS SELECT u.stay_id, u.time, sum(u.signed) AS net, {items_joined_sql(u['items'] + u['negative_items'])} AS items
           FROM uo_raw u JOIN stays s ON s.stay_id = u.stay_id WHERE {_plausible("urine_output_ml", "u.value")} AND u.time >= s.intime GROUP BY 1, 2"""
    )
    obs.append("SELECT stay_id, time, 'urine_output_ml', net, NULL, 'mL', NULL, 'outputevents:' || items FROM uo_net WHERE net >= 0")
    dq += [
        f"""SELECT stay_id, 'outputevents', CAST(itemid AS VARCHAR), CASE WHEN value IS NULL THEN 'text_in_numeric_field'
                  ELSE 'implausible_value' END, count(*), min(CAST(value AS VARCHAR))
           FROM uo_raw u JOIN stays s USING (stay_id) WHERE NOT coalesce({_plausible("urine_output_ml")}, false) AND u.time >= s.intime
           GROUP BY ALL""",
        """SELECT stay_id, 'outputevents', items, 'net_negative_urine_after_irrigant', count(*), min(CAST(net AS VARCHAR))
           FROM uo_net WHERE net < 0 GROUP BY ALL""",
        """SELECT u.stay_id, 'outputevents', CAST(u.itemid AS VARCHAR), 'time_before_icu_admission', count(*), min(CAST(u.time AS VARCHAR))
           FROM uo_raw u JOIN stays s USING (stay_id) WHERE u.time < s.intime GROUP BY ALL""",
    ]
    con.execute(observations_sql(obs))

    # Infusions: rates to ug/kg/min (mimic-code norepinephrine.sql: mg/kg/min x 1000)
    vp = it["vasopressors"]
    drug_case = "CASE " + " ".join(f"WHEN itemid IN {_in(ids)} THEN '{d}'" for d, ids in vp.items()) + " END"
    all_vp = [i for ids in vp.values() for i in ids]
    con.execute(
        f"""
        CREATE TABLE vaso AS
        SELECT v.stay_id, {drug_case} AS drug, CAST(v.starttime AS TIMESTAMP) AS start, CAST(v.endtime AS TIMESTAMP) AS stop,
               v.itemid, TRY_CAST(v.rate AS DOUBLE) AS raw_rate, v.rateuom, v.statusdescription,
               coalesce(TRY_CAST(v.patientweight AS DOUBLE), s.weight_kg) AS wt,
               CASE WHEN v.rateuom = 'mcg/kg/min' THEN TRY_CAST(v.rate AS DOUBLE)
                    WHEN v.rateuom = 'mg/kg/min' THEN TRY_CAST(v.rate AS DOUBLE) * 1000
                    WHEN v.rateuom = 'mcg/min' THEN TRY_CAST(v.rate AS DOUBLE) / nullif(coalesce(TRY_CAST(v.patientweight AS DOUBLE), s.weight_kg), 0)
                    WHEN v.rateuom = 'mg/hour' THEN TRY_CAST(v.rate AS DOUBLE) * 1000 / 60 / nullif(coalesce(TRY_CAST(v.patientweight AS DOUBLE), s.weight_kg), 0)
               END AS rate
        FROM raw_inputevents v JOIN stays s ON s.stay_id = v.stay_id WHERE v.itemid IN {_in(all_vp)}
        """
    )
    # SOFA-2's other vasoactive agents: presence only (rate NULL in the timeline); a positive charted rate is required
    ov = it["other_vasoactives"]
    ov_case = "CASE " + " ".join(f"WHEN itemid IN {_in(ids)} THEN '{d}'" for d, ids in ov.items()) + " END"
    con.execute(
        f"""CREATE TABLE infusions AS SELECT stay_id, drug, start, stop, rate AS rate_ug_kg_min, 'inputevents:' || itemid AS source
           FROM vaso WHERE rate BETWEEN 0 AND 100 AND stop > start AND coalesce(statusdescription, '') <> 'Rewritten'
           UNION ALL
           SELECT stay_id, {ov_case}, CAST(starttime AS TIMESTAMP), CAST(endtime AS TIMESTAMP), NULL, 'inputevents:' || itemid
           FROM raw_inputevents WHERE itemid IN {_in([i for ids in ov.values() for i in ids])}
             AND stay_id IN (SELECT stay_id FROM stays)
             AND TRY_CAST(rate AS DOUBLE) > 0 AND CAST(endtime AS TIMESTAMP) > CAST(starttime AS TIMESTAMP)
             AND coalesce(statusdescription, '') <> 'Rewritten'
           ORDER BY 1, 2, 3"""
    )
    dq.append(
        """SELECT stay_id, 'inputevents', CAST(itemid AS VARCHAR), 'unit_converted_' || replace(rateuom, '/', '_per_'),
                  count(*), min(CAST(raw_rate AS VARCHAR) || ' ' || rateuom)
           FROM vaso WHERE rateuom <> 'mcg/kg/min' AND rate BETWEEN 0 AND 100 GROUP BY ALL"""
    )
    dq.append(
        """SELECT stay_id, 'inputevents', CAST(itemid AS VARCHAR),
                  CASE WHEN stop <= start THEN 'times_out_of_order' WHEN statusdescription = 'Rewritten' THEN 'rewritten_order'
                       WHEN raw_rate IS NULL THEN 'missing_rate' WHEN rate IS NULL THEN 'unit_mismatch' ELSE 'implausible_value' END,
                  count(*), min(CAST(raw_rate AS VARCHAR) || ' ' || coalesce(rateuom, ''))
           FROM vaso WHERE NOT (coalesce(rate BETWEEN 0 AND 100, false) AND stop > start AND coalesce(statusdescription, '') <> 'Rewritten')
           GROUP BY ALL"""
    )

    eg = int(v["episode_gap_h"])
    con.execute(
        f"""
        CREATE TABLE ventilation AS
        {vent_episodes_sql(eg, _VENT_KIND_CASE)}
        UNION ALL
        SELECT p.stay_id, CAST(p.starttime AS TIMESTAMP), CAST(p.endtime AS TIMESTAMP),
               CASE WHEN p.itemid IN {_in(v['procedure_invasive'])} THEN 'invasive' ELSE 'noninvasive' END
        FROM raw_procedureevents p JOIN stays s ON s.stay_id = p.stay_id
        WHERE p.itemid IN {_in(v['procedure_invasive'] + v['procedure_noninvasive'])} AND p.endtime >= p.starttime
        ORDER BY 1, 2
        """
    )

    con.execute(
        f"""
        CREATE TABLE antibiotics AS
        SELECT w.stay_id, CAST(p.starttime AS TIMESTAMP) AS time, p.drug AS name, p.route, false AS time_is_date_only
        FROM raw_prescriptions p JOIN win w ON w.subject_id = p.subject_id AND CAST(p.starttime AS TIMESTAMP) BETWEEN w.t0 AND w.t1
        WHERE {antibiotic_filter_sql(abx_items)}
        ORDER BY 1, 2
        """
    )
    neg = it["cultures"]["negative_org_itemids"]
    con.execute(
        cultures_sql(
            f"coalesce(CAST(charttime AS TIMESTAMP), CAST(chartdate AS TIMESTAMP) + INTERVAL {noon} HOUR)",
            f"org_itemid IS NOT NULL AND org_itemid NOT IN {_in(neg)}",
        )
    )
    con.execute(
        """CREATE TABLE diagnoses AS SELECT s.stay_id, d.icd_code AS code, CAST(d.icd_version AS BIGINT) AS version
           FROM raw_diagnoses_icd d JOIN stays s ON s.hadm_id = d.hadm_id WHERE d.icd_code IS NOT NULL ORDER BY 1, 2"""
    )
    # Unknown item ids in labevents for the analytes' neighbourhood are not errors (MIMIC has thousands of items);
    # rows of the mapped tables without a stay are counted. The second read of chartevents keeps, in one pass, the
    # rows without a stay and (with d_items) those of an unknown item.
    no_stay = "c.stay_id IS NULL OR c.stay_id NOT IN (SELECT stay_id FROM stays)"
    unknown = "c.itemid NOT IN (SELECT itemid FROM raw_d_items)" if "d_items" in dictionaries else ""
    con.execute(
        f"""CREATE TABLE chart_unmapped AS SELECT c.stay_id, c.itemid, c.value FROM raw_chartevents c
            WHERE {no_stay}{f" OR {unknown}" if unknown else ""}"""
    )
    dq.append(
        f"""SELECT NULL, 'chartevents', CAST(itemid AS VARCHAR), 'no_stay', count(*), NULL FROM chart_unmapped c
           WHERE {no_stay} GROUP BY ALL"""
    )
    if unknown:
        dq.append(
            f"""SELECT c.stay_id, 'chartevents', CAST(c.itemid AS VARCHAR), 'unknown_itemid', count(*), min(c.value)
               FROM chart_unmapped c JOIN stays s ON s.stay_id = c.stay_id WHERE {unknown} GROUP BY ALL"""
        )
    if lab_unknown:
        dq.append(
            f"""SELECT stay_id, 'labevents', CAST(itemid AS VARCHAR), 'unknown_itemid', count(*), min(value_text)
               FROM lab_raw l WHERE {lab_unknown} GROUP BY ALL"""
        )
    choices = {
        "attach_window_pre_icu_h": pre,
        "gcs_carry_forward_h": cf,
        "ventilation_episode_gap_h": eg,
        "pao2_specimen": "arterial only (52033 'ART.')",
        "hla_dr_item": lab["hla_dr_per_monocyte"],
        "source_layout": source.layout,
        "source_columns_match_mimic_iv": list(source.versions),
        "single_precision_widened": "mimic4_tables.toml [single_precision] (4-byte FLOAT columns only)",
    }
    return finish_adapter(con, out, dq, dataset="mimic4", items_version=str(it["version"]), choices=choices)
