"""MIMIC-III (v1.4, CareVue + MetaVision) → the timeline schema (:mod:`immunoguide.cohort.schema`).

Reads the CSV(.gz) tables of a MIMIC-III copy (the open demo lives in ``../shared/data/mimic-iii-demo``) with
DuckDB, maps item ids from ``mimic3_items.toml`` to concepts, converts units once, checks plausibility against
``criteria/concepts.toml`` and writes one Parquet file per schema table. Every source row it cannot use is
counted in ``data_quality`` with its stay and reason.

Named choices (also returned in :class:`AdapterReport`):

* events attach to an ICU stay by subject when their time is in ``[intime − 24 h, outtime]``;
* PaO2 only from arterial gases (specimen ``ART``, as mimic-code); FiO2 values ≤ 1 are fractions, 20–100 are %,
  values in (1, 20) are oxygen flows and are not used (mimic-code ``bg.sql``);
* GCS total = eye + verbal + motor at a charting time, a missing component carried forward for 6 h (mimic-code,
  ricu); a verbal 'No Response-ETT' / '1.0 ET/Trach' adds a ``gcs_sedated`` observation;
* CareVue infusion rates hold until the next charting of the same drug within 4 h, else for 1 h;
* date-only times (prescriptions, some cultures) are placed at 12:00 and flagged;
* ages above 89 are shifted in MIMIC-III (to ~300 y): recorded as 90 with a data-quality row.
"""

from __future__ import annotations

import csv
import json
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from immunoguide.cohort.schema import ROW_GROUP_ROWS, SCHEMAS, sort_columns
from immunoguide.cohort.sources._mimic_sql import (
    FIO2_LAB_OK,
    GCS_IMPUTED_DQ,
    GCS_SEDATED_OBS,
    GCS_TOTAL_OBS,
    _in,
    _plausible,
    _str,
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
from immunoguide.errors import InputError

__all__ = ["AdapterReport", "convert_mimic3", "load_items"]

#: Ventilation levels of ``vent_pts`` (4 invasive … 1 oxygen) as the timeline's kinds.
_VENT_KIND_CASE = "CASE any_value(lvl) WHEN 4 THEN 'invasive' WHEN 3 THEN 'noninvasive' WHEN 2 THEN 'hfnc' ELSE 'oxygen' END"

_TYPE_MAP = {"integer": "BIGINT", "numeric": "DOUBLE", "character": "VARCHAR", "POSIXct": "TIMESTAMP"}
_NEEDED = (
    "icustays", "admissions", "patients", "chartevents", "labevents", "outputevents", "inputevents_cv",
    "inputevents_mv", "prescriptions", "microbiologyevents", "diagnoses_icd",
)


@dataclass(frozen=True)
class AdapterReport:
    """What an adapter wrote: row counts per table, the choices it made and the item map version."""

    dataset: str
    items_version: str
    out_dir: str
    rows: dict[str, int]
    choices: dict[str, Any] = field(default_factory=dict)


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with bounded memory (``IMMUNOGUIDE_DUCKDB_MEMORY``, default 4GB) and spill to disk.

    DuckDB's default limit is 80 % of RAM; the adapters cap it so a whole-database conversion stays within the
    benchmark's 8 GB peak on a 24 GB machine (the rest spills to a temporary directory). DuckDB's own progress bar
    is off: it wrote hundreds of carriage-return lines into non-interactive logs (the CLI shows rich progress).
    """
    con = duckdb.connect(config={"memory_limit": os.environ.get("IMMUNOGUIDE_DUCKDB_MEMORY", "4GB")})
    con.execute("SET enable_progress_bar = false")
    return con


def load_items(name: str = "mimic3_items.toml") -> dict[str, Any]:
    """The item map of a source (TOML shipped next to the adapter)."""
    return tomllib.loads(resources.files("immunoguide.cohort.sources").joinpath(name).read_text("utf-8"))


def _column_types(data_dir: Path) -> dict[str, dict[str, str]]:
    meta = data_dir / "_tables.csv"
    if not meta.exists():
        return {}
    out = {}
    with meta.open() as fh:
        for r in csv.DictReader(fh):
            out[r["table"]] = dict(zip(r["colnames"].split("|"), [_TYPE_MAP[t] for t in r["types"].split("|")], strict=True))
    return out


def _register(con: duckdb.DuckDBPyConnection, data_dir: Path, extra: tuple[str, ...] = ()) -> None:
    types = _column_types(data_dir)
    for t in (*_NEEDED, *extra):
        candidates = [data_dir / f"{t}.csv.gz", data_dir / f"{t}.csv", data_dir / f"{t.upper()}.csv.gz", data_dir / f"{t.upper()}.csv"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise InputError(
                expected=f"MIMIC-III table {t} (.csv or .csv.gz) in {data_dir}",
                got="missing",
                where="mimic3 adapter",
                todo="point --data at a MIMIC-III v1.4 CSV folder",
            )
        if t in types:
            cols = "{" + ", ".join(f"'{c}': '{ty}'" for c, ty in types[t].items()) + "}"
            con.execute(
                f"CREATE VIEW raw_{t} AS SELECT * FROM read_csv('{path}', header=true, quote='\"', escape='\"', columns={cols})"
            )
        else:
            con.execute(f"CREATE VIEW raw_{t} AS SELECT * FROM read_csv('{path}', header=true, sample_size=-1)")


def _keep_rows(con: duckdb.DuckDBPyConnection, table: str, where: str) -> None:
    """Read ``raw_<table>`` once into a table of the rows matching ``where``, and point the view at it."""
    con.execute(f"CREATE TABLE kept_{table} AS SELECT * FROM raw_{table} WHERE {where}")
    con.execute(f"CREATE OR REPLACE VIEW raw_{table} AS SELECT * FROM kept_{table}")


def convert_mimic3(data_dir: str | Path, out_dir: str | Path) -> AdapterReport:
    """Convert a MIMIC-III CSV folder into the timeline schema (Parquet files in ``out_dir``).

    Parameters
    ----------
    data_dir : path
        Folder with the MIMIC-III tables as ``.csv.gz`` (or ``.csv``).
    out_dir : path
        Output folder; one ``<table>.parquet`` per :data:`~immunoguide.cohort.schema.SCHEMAS` table.
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    it = load_items()
    con = duckdb_connection()
    _register(con, data_dir)
    pre = int(it["attachment"]["pre_icu_h"])
    noon = int(it["attachment"]["date_only_hour"])

    # Each large CSV is decompressed and parsed once: the rows of the items this adapter reads are kept in a table
    # that the views of the same name then point at (every statement below reads it, not the file).
    chart_ids = sorted({*it["chart"]["map_mmhg"], *it["chart"]["fio2"], *it["chart"]["weight_kg"], *it["gcs"]["eye"],
                        *it["gcs"]["verbal"], *it["gcs"]["motor"], *it["ventilation"]["invasive_items"],
                        *it["ventilation"]["device_items"]})  # fmt: skip
    _keep_rows(con, "chartevents", f"itemid IN {_in(chart_ids)}")
    create_stays(con, it, pre)
    drugs = [ids for ids in it["vasopressors"].values() if isinstance(ids, dict)] + list(it["other_vasoactives"].values())
    _keep_rows(con, "inputevents_mv", f"itemid IN {_in(sorted({i for d in drugs for i in d.get('mv', [])}))}")
    _keep_rows(con, "inputevents_cv", f"itemid IN {_in(sorted({i for d in drugs for k in ('cv', 'cv_per_kg', 'cv_per_min') for i in d.get(k, [])}))}")
    dq: list[str] = [
        "SELECT stay_id, 'patients' AS source, 'dob' AS item, 'age_shifted_over_89' AS issue, 1 AS n, "
        "'age > 89 shifted in MIMIC-III; recorded as 90' AS example FROM stays WHERE age_shifted"
    ]

    # ---- chart observations: MAP, FiO2 ------------------------------------------------------------------------
    con.execute(
        f"""
        CREATE TABLE chart_num AS
        SELECT c.icustay_id AS stay_id, c.charttime AS time, c.itemid, c.value AS value_text, c.valuenum, c.valueuom
        FROM raw_chartevents c
        WHERE c.itemid IN {_in(it['chart']['map_mmhg'] + it['chart']['fio2'])}
          AND (c.error IS NULL OR c.error = 0)
        """
    )
    obs, chart_dq = chart_map_fio2_sql(it["chart"]["map_mmhg"], it["chart"]["fio2"])
    dq += chart_dq

    # ---- GCS ---------------------------------------------------------------------------------------------------
    g = it["gcs"]
    cf = int(g["carry_forward_h"])
    con.execute(
        gcs_raw_sql(
            g["eye"], g["verbal"], g["motor"], g["verbal_unassessable"], source="raw_chartevents", stay="icustay_id",
            time="charttime", where=" AND icustay_id IS NOT NULL AND (error IS NULL OR error = 0)",
        )
    )  # fmt: skip
    con.execute(gcs_total_sql(cf))
    obs += [GCS_TOTAL_OBS, GCS_SEDATED_OBS]
    dq.append(GCS_IMPUTED_DQ)

    # ---- labs (attached by subject and time window) -------------------------------------------------------------
    lab = it["lab"]
    lab_concepts = ["platelets_10e3_per_ul", "bilirubin_mg_per_dl", "creatinine_mg_per_dl", "potassium_mmol_per_l", "ph", "bicarbonate_mmol_per_l"]
    all_lab_ids = [i for k in lab_concepts for i in lab[k]] + lab["pao2_mmhg"] + lab["fio2_lab"] + lab["ferritin_ng_per_ml"]
    con.execute(
        f"""
        CREATE TABLE lab_raw AS
        SELECT w.stay_id, l.charttime AS time, l.itemid, l.value AS value_text, l.valuenum, l.valueuom, l.subject_id
        FROM raw_labevents l JOIN win w ON w.subject_id = l.subject_id AND l.charttime BETWEEN w.t0 AND w.t1
        WHERE l.itemid IN {_in(all_lab_ids + [lab['specimen']])}
        """
    )
    units = it["lab_units"]
    for k in lab_concepts:
        o, d = numeric_lab_sql(k, lab[k], units[k])
        obs.append(o)
        dq.append(d)
    # PaO2 only from arterial gases; lab FiO2 (%) as a fraction
    obs.append(
        f"""SELECT p.stay_id, p.time, 'pao2_mmhg', p.valuenum, p.value_text, p.valueuom, NULL, 'labevents:' || p.itemid
            FROM lab_raw p JOIN lab_raw s ON s.stay_id = p.stay_id AND s.time = p.time AND s.itemid = {lab['specimen']}
            WHERE p.itemid IN {_in(lab['pao2_mmhg'])} AND s.value_text = 'ART' AND {_plausible('pao2_mmhg', 'p.valuenum')}"""
    )
    obs.append(
        f"""SELECT stay_id, time, 'fio2_fraction', valuenum / 100.0, value_text, valueuom, NULL, 'labevents:' || itemid
            FROM lab_raw WHERE itemid IN {_in(lab['fio2_lab'])} AND {FIO2_LAB_OK}"""
    )
    dq.append(lab_checked_dq_sql(lab["pao2_mmhg"], _plausible("pao2_mmhg", "valuenum")))
    dq.append(lab_checked_dq_sql(lab["fio2_lab"], FIO2_LAB_OK))
    # Ferritin keeps its text (censored values such as 'GREATER THAN 2000' have no valuenum)
    obs.append(
        f"""SELECT stay_id, time, 'ferritin_ng_per_ml', valuenum, value_text, coalesce(valueuom, 'ng/mL'), NULL,
                   'labevents:' || itemid FROM lab_raw WHERE itemid IN {_in(lab['ferritin_ng_per_ml'])}"""
    )

    # ---- urine output ------------------------------------------------------------------------------------------
    u = it["urine"]
    con.execute(
        f"""
        CREATE TABLE uo_raw AS SELECT icustay_id AS stay_id, charttime AS time, itemid, value, valueuom,
               CASE WHEN itemid IN {_in(u['negative_items'])} THEN -value ELSE value END AS signed
        FROM raw_outputevents WHERE itemid IN {_in(u['items'] + u['negative_items'])} AND (iserror IS NULL OR iserror = 0)
        """
    )
    # Net the irrigant against urine charted at the same time (mimic-code sums with the irrigant negative);
    # a net negative volume is not a urine output: it is reported, not loaded.
    con.execute(
        f"""CREATE TABLE uo_net AS SELECT stay_id, time, sum(signed) AS net, {items_joined_sql(u['items'] + u['negative_items'])} AS items
           FROM uo_raw WHERE {_plausible("urine_output_ml")} AND stay_id IS NOT NULL GROUP BY 1, 2"""
    )
    obs.append(
        """SELECT stay_id, time, 'urine_output_ml', net, NULL, 'mL', NULL, 'outputevents:' || items FROM uo_net
           WHERE net >= 0"""
    )
    dq.append(
        f"""SELECT stay_id, 'outputevents', CAST(itemid AS VARCHAR), CASE WHEN value IS NULL THEN 'missing_value'
                  WHEN stay_id IS NULL THEN 'no_stay' ELSE 'implausible_value' END, count(*), min(CAST(value AS VARCHAR))
           FROM uo_raw WHERE NOT coalesce({_plausible("urine_output_ml")}, false) OR stay_id IS NULL GROUP BY ALL"""
    )
    dq.append(
        """SELECT stay_id, 'outputevents', items, 'net_negative_urine_after_irrigant', count(*), min(CAST(net AS VARCHAR))
           FROM uo_net WHERE net < 0 GROUP BY ALL"""
    )

    con.execute(observations_sql(obs))

    # ---- infusions -----------------------------------------------------------------------------------------------
    vp = it["vasopressors"]
    mv_parts, cv_parts = [], []
    for drug, ids in vp.items():
        if not isinstance(ids, dict):
            continue
        mv_parts.append(f"SELECT *, '{drug}' AS drug FROM raw_inputevents_mv WHERE itemid IN {_in(ids['mv'])}")
        cv_parts.append(
            f"SELECT *, '{drug}' AS drug, itemid IN {_in(ids['cv_per_min'])} AS per_min FROM raw_inputevents_cv "
            f"WHERE itemid IN {_in(ids['cv_per_kg'] + ids['cv_per_min'])}"
        )
    # SOFA-2's other vasoactive agents: presence only (rate NULL in the timeline); a positive charted rate is required
    other: dict[str, list[str]] = {"mv": [], "cv": []}
    for drug, ids in it["other_vasoactives"].items():
        other["mv"].append(f"SELECT *, '{drug}' AS drug FROM raw_inputevents_mv WHERE itemid IN {_in(ids['mv'])}")
        other["cv"].append(
            f"SELECT *, '{drug}' AS drug, false AS per_min FROM raw_inputevents_cv WHERE itemid IN {_in(ids['cv'])}"
        )
    con.execute("CREATE TABLE mv_vaso AS " + " UNION ALL ".join(mv_parts))
    con.execute("CREATE TABLE cv_vaso AS " + " UNION ALL ".join(cv_parts))
    con.execute("CREATE TABLE mv_other AS " + " UNION ALL ".join(other["mv"]))
    con.execute("CREATE TABLE cv_other AS " + " UNION ALL ".join(other["cv"]))
    gap, last = int(vp["cv_max_gap_h"]), int(vp["cv_last_segment_h"])
    for src, dst in (("cv_vaso", "cv_seg"), ("cv_other", "cv_other_seg")):
        con.execute(
            f"""
            CREATE TABLE {dst} AS
            WITH o AS (
              SELECT v.icustay_id AS stay_id, v.drug, v.charttime AS start, v.itemid,
                     CASE WHEN v.per_min THEN v.rate / s.weight_kg ELSE v.rate END AS rate,
                     v.per_min AND s.weight_kg IS NULL AS no_weight, v.rate AS raw_rate,
                     lead(v.charttime) OVER (PARTITION BY v.icustay_id, v.drug ORDER BY v.charttime) AS next_t
              FROM {src} v LEFT JOIN stays s ON s.stay_id = v.icustay_id
              WHERE v.rate IS NOT NULL
            )
            SELECT stay_id, drug, start,
                   CASE WHEN next_t IS NOT NULL AND next_t - start <= INTERVAL {gap} HOUR THEN next_t
                        ELSE start + INTERVAL {last} HOUR END AS stop, rate, no_weight, raw_rate, itemid
            FROM o
            """
        )
    con.execute(
        """
        CREATE TABLE infusions AS
        SELECT icustay_id AS stay_id, drug, starttime AS start, endtime AS stop, rate AS rate_ug_kg_min,
               'inputevents_mv:' || itemid AS source
        FROM mv_vaso WHERE rate IS NOT NULL AND endtime > starttime AND coalesce(statusdescription, '') <> 'Rewritten'
          AND rate BETWEEN 0 AND 100
        UNION ALL
        SELECT stay_id, drug, start, stop, rate, 'inputevents_cv:' || itemid FROM cv_seg
        WHERE NOT no_weight AND rate BETWEEN 0 AND 100
        UNION ALL
        SELECT icustay_id, drug, starttime, endtime, NULL, 'inputevents_mv:' || itemid FROM mv_other
        WHERE rate > 0 AND endtime > starttime AND coalesce(statusdescription, '') <> 'Rewritten'
        UNION ALL
        SELECT stay_id, drug, start, stop, NULL, 'inputevents_cv:' || itemid FROM cv_other_seg WHERE raw_rate > 0
        ORDER BY 1, 2, 3
        """
    )
    dq += [
        """SELECT icustay_id, 'inputevents_mv', CAST(itemid AS VARCHAR), CASE WHEN rate IS NULL THEN 'missing_rate'
                  WHEN endtime <= starttime THEN 'times_out_of_order' WHEN statusdescription = 'Rewritten' THEN 'rewritten_order'
                  ELSE 'implausible_value' END, count(*), min(CAST(rate AS VARCHAR))
           FROM mv_vaso WHERE rate IS NULL OR endtime <= starttime OR statusdescription = 'Rewritten' OR NOT (rate BETWEEN 0 AND 100)
           GROUP BY ALL""",
        """SELECT stay_id, 'inputevents_cv', CAST(itemid AS VARCHAR), CASE WHEN no_weight THEN 'rate_per_min_without_weight'
                  ELSE 'implausible_value' END, count(*), min(CAST(raw_rate AS VARCHAR))
           FROM cv_seg WHERE no_weight OR NOT coalesce(rate BETWEEN 0 AND 100, false) GROUP BY ALL""",
    ]

    # ---- ventilation ---------------------------------------------------------------------------------------------
    v = it["ventilation"]
    con.execute(
        f"""
        CREATE TABLE vent_pts AS
        SELECT icustay_id AS stay_id, charttime AS time,
               max(CASE WHEN itemid IN {_in(v['invasive_items'])} THEN 4
                        WHEN value IN {_strs(v['noninvasive_devices'])} THEN 3
                        WHEN value IN {_strs(v['hfnc_devices'])} THEN 2
                        WHEN value IN {_strs(v['oxygen_devices'])} THEN 1 END) AS lvl
        FROM raw_chartevents
        WHERE itemid IN {_in(v['invasive_items'] + v['device_items'])} AND icustay_id IS NOT NULL
        GROUP BY 1, 2 HAVING lvl IS NOT NULL
        """
    )
    eg = int(v["episode_gap_h"])
    con.execute(
        f"""
        CREATE TABLE ventilation AS
        {vent_episodes_sql(eg, _VENT_KIND_CASE)} ORDER BY 1, 2
        """
    )

    # ---- antibiotics -----------------------------------------------------------------------------------------------
    ab = it["antibiotics"]
    con.execute(
        f"""
        CREATE TABLE antibiotics AS
        SELECT w.stay_id, p.startdate + INTERVAL {noon} HOUR AS time, p.drug AS name, p.route, true AS time_is_date_only
        FROM raw_prescriptions p JOIN win w ON w.subject_id = p.subject_id
             AND p.startdate + INTERVAL {noon} HOUR BETWEEN w.t0 AND w.t1
        WHERE {antibiotic_filter_sql(ab)}
        ORDER BY 1, 2
        """
    )

    # ---- cultures --------------------------------------------------------------------------------------------------
    con.execute(cultures_sql(f"coalesce(charttime, chartdate + INTERVAL {noon} HOUR)", "org_itemid IS NOT NULL"))

    # ---- diagnoses ---------------------------------------------------------------------------------------------------
    con.execute(
        """CREATE TABLE diagnoses AS SELECT s.stay_id, d.icd9_code AS code, 9 AS version
           FROM raw_diagnoses_icd d JOIN stays s USING (hadm_id) WHERE d.icd9_code IS NOT NULL ORDER BY 1, 2"""
    )

    choices = {
        "attach_window_pre_icu_h": pre,
        "date_only_hour": noon,
        "gcs_carry_forward_h": cf,
        "cv_infusion_max_gap_h": gap,
        "cv_infusion_last_segment_h": last,
        "ventilation_episode_gap_h": eg,
        "pao2_specimen": "arterial only",
        "fio2_flow_range_dropped": "(1, 20)",
    }
    return finish_adapter(con, out, dq, dataset="mimic3", items_version=str(it["version"]), choices=choices)



def create_stays(con: duckdb.DuckDBPyConnection, it: dict[str, Any], pre: int) -> None:
    """``CREATE TABLE stays`` (one row per ICU stay, timeline columns plus ``age_shifted``) and ``win`` (the window
    ``[intime − pre h, outtime]`` that attaches subject-level events to a stay) from the registered raw tables."""
    con.execute(
        f"""
        CREATE TABLE stays AS
        WITH {weight_ctes_sql(it["chart"]["weight_kg"], stay="icustay_id", chart="raw_chartevents", inputs="raw_inputevents_mv")}
        SELECT i.icustay_id AS stay_id, i.subject_id, i.hadm_id, i.intime, i.outtime, a.admittime, a.deathtime,
               CASE WHEN a.admission_location = 'EMERGENCY ROOM ADMIT' OR a.edregtime IS NOT NULL
                    THEN 'emergency_department' ELSE 'inpatient' END AS admission_source,
               CASE WHEN date_diff('day', p.dob, a.admittime) / 365.25 > 89 THEN 90.0
                    ELSE round(date_diff('day', p.dob, a.admittime) / 365.25, 1) END AS age_years,
               p.gender AS sex, coalesce(w.weight_kg, wi.weight_kg) AS weight_kg, 'mimic3' AS dataset,
               date_diff('day', p.dob, a.admittime) / 365.25 > 89 AS age_shifted
        FROM raw_icustays i JOIN raw_admissions a USING (hadm_id) JOIN raw_patients p ON p.subject_id = i.subject_id
        LEFT JOIN w ON w.stay_id = i.icustay_id LEFT JOIN wi ON wi.stay_id = i.icustay_id
        """
    )
    # window for attaching subject-level events to a stay
    con.execute(
        f"CREATE TABLE win AS SELECT stay_id, subject_id, intime - INTERVAL {pre} HOUR AS t0, outtime AS t1, intime, outtime FROM stays"
    )


def finish_adapter(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    dq: list[str],
    *,
    dataset: str,
    items_version: str,
    choices: dict[str, Any],
) -> AdapterReport:
    """Common end of the SQL adapters: count stays without data, build ``data_quality`` from the ``dq`` selects,
    write every schema table to Parquet and ``adapter.json``, and return the report."""
    dq = [
        *dq,
        """SELECT s.stay_id, 'icustays', 'stay', 'stay_without_observations', 1, NULL FROM stays s
           WHERE NOT EXISTS (SELECT 1 FROM observations o WHERE o.stay_id = s.stay_id)""",
    ]
    con.execute(
        "CREATE TABLE data_quality AS SELECT * FROM ("
        + " UNION ALL ".join(f"SELECT * FROM ({q})" for q in dq)
        + ") t(stay_id, source, item, issue, n, example) ORDER BY 1, 2, 3, 4"
    )
    _drop_working_tables(con)
    report = AdapterReport(dataset=dataset, items_version=items_version, out_dir=str(out), rows=_write(con, out),
                           choices=choices)
    (out / "adapter.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
    return report


def _drop_working_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the adapter's working tables (``chart_num``, ``lab_raw``, ``kept_*`` …) once ``data_quality`` is built:
    only the schema tables are written, and the memory they held is then free for sorting them."""
    working = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
    ).fetchall()
    for (name,) in working:
        if name not in SCHEMAS:
            con.execute(f'DROP TABLE "{name}"')


def _write(con: duckdb.DuckDBPyConnection, out: Path) -> dict[str, int]:
    rows: dict[str, int] = {}
    for table, schema in SCHEMAS.items():
        cols = ", ".join(f'CAST("{f.name}" AS {_duck(f.type)}) AS "{f.name}"' for f in schema)
        # A total order: ties (two drugs at one time, two gases at one hour) are written in one fixed order, so the
        # same source gives byte-identical Parquet whatever the thread scheduling.
        readers = (
            con.sql(f"SELECT {cols} FROM {table}{where} ORDER BY {order}").to_arrow_reader(ROW_GROUP_ROWS)
            for where, order in _sorted_parts(con, table, schema)
        )
        rows[table] = _write_row_groups(readers, out / f"{table}.parquet", schema)
    return rows


def _sorted_parts(con: duckdb.DuckDBPyConnection, table: str, schema: Any) -> list[tuple[str, str]]:
    """``(WHERE clause, ORDER BY list)`` of the parts that, read one after the other, give ``table`` in
    :func:`~immunoguide.cohort.schema.sort_columns` order.

    A table led by a text column (the observations' ``concept``, a dozen values) is read one value at a time, in
    order, each part sorted by the other columns: the same rows in the same order as one sort of the whole table, at
    less than half its cost at 100,000 stays (each sort fits in memory; no comparison starts with two equal strings).
    """
    import pyarrow as pa

    columns = sort_columns(table)
    lead, rest = f'"{columns[0]}"', ", ".join(f'"{c}"' for c in columns[1:])
    if not pa.types.is_string(schema.field(columns[0]).type):
        return [("", f"{lead}, {rest}")]
    values = [v for (v,) in con.execute(f"SELECT DISTINCT {lead} FROM {table} ORDER BY 1").fetchall()]
    where = [f" WHERE {lead} IS NULL" if v is None else f" WHERE {lead} = {_str(v)}" for v in values]
    return [(w, rest) for w in where] or [("", rest)]


def _write_row_groups(readers: Iterable[Any], path: Path, schema: Any) -> int:
    """Write the record batches of ``readers`` (in order) to ``path`` one row group of
    :data:`~immunoguide.cohort.schema.ROW_GROUP_ROWS` rows at a time; returns the number of rows.

    The file is byte for byte what :func:`~immunoguide.cohort.schema.write_table` writes for the whole table (the
    same row groups, cast to the schema, an empty table as one empty row group, the file replaced only once
    complete), without holding the whole table in memory: the observations of 100,000 stays are gigabytes as Arrow.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pending: list[Any] = []
    held = total = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in (b for reader in readers for b in reader):
            pending.append(batch.cast(schema))
            held += batch.num_rows
            while held >= ROW_GROUP_ROWS:
                tbl = pa.Table.from_batches(pending, schema=schema)
                writer.write_table(tbl.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                rest = tbl.slice(ROW_GROUP_ROWS)
                pending, held = rest.to_batches(), rest.num_rows
                total += ROW_GROUP_ROWS
        if held or not total:
            writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
            total += held
    os.replace(tmp, path)
    return total


def _duck(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    return "VARCHAR"
