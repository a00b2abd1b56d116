"""MIMIC-III → the timeline schema as ricu 0.6.3 reads it (the ``ricu`` source profile of the ricu preset).

The default MIMIC-III adapter (:mod:`.mimic3`) reads the source as immunoguide's clinical choices say (arterial
gases only, GU irrigant netted, CareVue rates per kg, events attached by subject within a day of the stay …). The
reference preset ``ricu`` must score the *same facts ricu scores*, so this profile reads MIMIC-III with ricu's
concept dictionary and item callbacks (``ricu_items.toml`` names every item, bound and source file):

* **Attachment.** Tables with an ICU-stay column (chartevents, outputevents, inputevents, procedureevents,
  prescriptions) by that column; hospital-admission tables (labevents, microbiologyevents) to the first ICU stay of
  the admission ending at or after the row's time — for cultures, the chart *date* (ricu assigns the stay on the
  index column before ``mimic_sampling`` sets the time) — else to the last stay (ricu ``upgrade_id``: a rolling join
  with ``rollends``). No window around the stay: a lab days before the ICU is the stay's.
* **Values.** ``valuenum`` within ricu's bounds (concept-dict ``min``/``max``), no unit conversion: CareVue
  catecholamine rates charted per minute are kept as charted, as ricu keeps them (only its bounds apply). Then
  immunoguide's plausibility ranges (``criteria/concepts.toml``) apply as everywhere; rows ricu keeps and
  immunoguide refuses (e.g. MAP 0) are counted in ``data_quality``.
* **FiO2** from chartevents 3420/223835 and labevents 50816 in % (21–100), as a fraction; **PaO2** 50821 from any
  specimen.
* **GCS** as its charted components (``gcs_eye``, ``gcs_verbal``, ``gcs_motor``, ``gcs_total_charted``) and a
  ``gcs_sedated`` flag at every charting whose value is '1.0 ET/Trach' or 'No Response-ETT' (any item); the
  assembled per-charting total ``gcs`` is written too (as the default adapter does), so either ``gcs_assembly``
  policy can read the timeline.
* **Urine** from ricu's 26 outputevents items (0–2000 mL per charting; no irrigant subtraction).
* **Catecholamine infusions** (ricu ``mimic_rate_mv`` / ``expand_intervals`` and ``vaso60``): MetaVision rows run
  from ``starttime`` to ``endtime``; a CareVue charting runs to one minute before the next charting of the same order
  (``linkorderid``), the last one for 59 minutes. ricu's ≥ 1 h rule is applied here, because it is defined on the
  source's orders: per drug, each order's span (MetaVision: first start to last end; CareVue: first to last
  charting; spans of 0 dropped), widened by 5 minutes and grouped as ``data.table::foverlaps(mult = "first")``
  groups them in ricu's ``merge_ranges``; groups spanning at least 60 minutes keep the rate rows inside them
  (segments are clipped to the kept windows). The ricu preset therefore sets ``vasopressor_min_duration = none``.
* **Ventilation** (ricu ``vent_ind`` for MIMIC-III): every charting of a ventilator-setting item starts a window
  that ends at the first end event (extubation procedures, O2-delivery-device chartings) whose minute before is at or
  after the start, when that is at most 6 h later; without one, ricu 0.6.3 computes the duration as the start's
  *time since admission* plus 6 h (``calc_dur``: ``x + match_win`` — a ricu quirk, reproduced); windows shorter than
  30 minutes are dropped. ricu floors the start to its hour since admission before adding the duration, so the
  episode written here runs from that hour's start to ``hour start + duration``. ricu does not tell invasive from
  non-invasive here: episodes are written as ``invasive``.
* **Antibiotics**: prescriptions with an ICU-stay id whose drug matches ricu's regular expression (case-insensitive),
  at start date + 12 h, and MetaVision antibiotic items at their start. **Cultures**: every microbiology row, at
  its charttime or chart date + 12 h; positive when an organism is named.

Everything else (stays, diagnoses, ferritin for screening) is read as the default adapter reads it.
"""

from __future__ import annotations

import re
import tomllib
from bisect import bisect_left
from collections import defaultdict
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from immunoguide.cohort.sources.mimic3 import (
    AdapterReport,
    _in,
    _register,
    _strs,
    create_stays,
    duckdb_connection,
    finish_adapter,
    gcs_total_sql,
    load_items,
)
from immunoguide.units import concepts

__all__ = ["RICU_PROFILE_CHOICES", "convert_mimic3_ricu", "load_ricu_items", "ricu_order_windows", "ricu_vent_windows"]

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_CATECHOLAMINES = ("norepinephrine", "epinephrine", "dopamine", "dobutamine")

#: The reading rules this profile applies (recorded in adapter.json).
RICU_PROFILE_CHOICES: dict[str, str] = {
    "profile": "ricu",
    "attachment": "ICU-stay tables by icustay_id; admission tables to the first stay ending at or after the row (ricu upgrade_id)",
    "values": "ricu concept-dict bounds, no unit conversion, then immunoguide plausibility",
    "pao2_specimen": "any",
    "gcs": "charted components + ETT flags (and the per-charting total)",
    "infusions": "ricu mimic_rate_mv / expand_intervals; vaso60 (>= 1 h by order) applied here",
    "ventilation": "ricu vent_ind (start/end events; calc_dur x + match_win quirk reproduced), written as invasive",
    "antibiotics": "ricu abx: prescriptions regex (icustay_id set, startdate + 720 min) + MetaVision items",
    "cultures": "ricu samp: every microbiology row (charttime or chartdate + 12 h), stay by chart date",
}


def load_ricu_items() -> dict[str, Any]:
    """The ricu profile's item map (``ricu_items.toml``)."""
    return tomllib.loads(resources.files("immunoguide.cohort.sources").joinpath("ricu_items.toml").read_text("utf-8"))


def _bounds(ri: dict[str, Any], concept: str, col: str = "valuenum") -> str:
    lo, hi = ri["bounds"][concept]
    return f"({col} BETWEEN {float(lo)!r} AND {float(hi)!r})"


def _plausible(concept: str, col: str) -> str:
    c = concepts()[concept]
    return f"({col} BETWEEN {c.min!r} AND {c.max!r})"


def convert_mimic3_ricu(data_dir: str | Path, out_dir: str | Path) -> AdapterReport:
    """Convert a MIMIC-III CSV folder into the timeline schema as ricu 0.6.3 reads it (see the module docstring).

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
    m3 = ri["mimic3"]
    rules = ri["rules"]
    con = duckdb_connection()
    _register(con, data_dir, extra=("procedureevents_mv",))
    create_stays(con, it, int(it["attachment"]["pre_icu_h"]))
    dq: list[str] = []

    # ---- attachment of admission-level rows (ricu upgrade_id) -------------------------------------------------------
    con.execute(
        """
        CREATE TABLE hstay AS
        SELECT stay_id, hadm_id, intime, date_trunc('minute', outtime) AS out_min,
               row_number() OVER (PARTITION BY hadm_id ORDER BY intime, stay_id) AS seq
        FROM stays
        """
    )
    con.execute("CREATE TABLE hlast AS SELECT hadm_id, max(seq) AS seq FROM hstay GROUP BY 1")

    def attach_hadm(select_sql: str, key_col: str, name: str) -> None:
        """``CREATE TABLE name`` = the rows of ``select_sql`` (with hadm_id and ``key_col``) plus their stay_id."""
        con.execute(f"CREATE TABLE {name}_src AS {select_sql}")
        con.execute(
            f"""
            CREATE TABLE {name} AS
            WITH r AS (SELECT row_number() OVER () AS rid, * FROM {name}_src WHERE hadm_id IS NOT NULL),
            a AS (SELECT r.rid, h.seq FROM r ASOF LEFT JOIN hstay h ON r.hadm_id = h.hadm_id AND r.{key_col} <= h.out_min)
            SELECT r.* EXCLUDE (rid), s.stay_id
            FROM r JOIN a USING (rid) JOIN hlast l ON l.hadm_id = r.hadm_id
            JOIN hstay s ON s.hadm_id = r.hadm_id AND s.seq = coalesce(a.seq, l.seq)
            """
        )

    # ---- labs --------------------------------------------------------------------------------------------------------
    ferritin = it["lab"]["ferritin_ng_per_ml"]
    lab_ids = sorted({i for c in m3.values() if isinstance(c, dict) for i in c.get("labevents", [])} | set(ferritin))
    attach_hadm(
        f"SELECT hadm_id, charttime AS time, itemid, valuenum, value AS value_text, valueuom FROM raw_labevents "
        f"WHERE itemid IN {_in(lab_ids)}",
        "time",
        "lab_r",
    )
    obs: list[str] = []
    for concept in ("platelets_10e3_per_ul", "bilirubin_mg_per_dl", "creatinine_mg_per_dl", "pao2_mmhg"):
        ids = m3[concept]["labevents"]
        obs.append(
            f"""SELECT stay_id, time, '{concept}' AS concept, valuenum AS value, value_text, valueuom AS unit,
                       NULL AS method, 'labevents:' || itemid AS source
                FROM lab_r WHERE itemid IN {_in(ids)} AND {_bounds(ri, concept)}"""
        )
    fio2_lab = m3["fio2_percent"]["labevents"]
    obs.append(
        f"""SELECT stay_id, time, 'fio2_fraction', valuenum / 100.0, value_text, valueuom, NULL, 'labevents:' || itemid
            FROM lab_r WHERE itemid IN {_in(fio2_lab)} AND {_bounds(ri, 'fio2_percent')}"""
    )

    # ---- chart: MAP, FiO2, GCS components, ETT ----------------------------------------------------------------------
    gcs_parts = ("gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total_charted")
    chart_concepts = ("map_mmhg", *gcs_parts)
    chart_ids = sorted({i for c in (*chart_concepts, "fio2_percent", "vent_start", "vent_end") for i in m3[c]["chartevents"]})
    con.execute(
        f"""CREATE TABLE chart_r AS SELECT icustay_id AS stay_id, charttime AS time, itemid, valuenum, value AS value_text,
                   valueuom FROM raw_chartevents WHERE icustay_id IS NOT NULL
              AND (itemid IN {_in(chart_ids)} OR value IN {_strs(m3['ett_gcs_values'])})"""
    )
    for concept in chart_concepts:
        unit = "mmHg" if concept == "map_mmhg" else "points"
        obs.append(
            f"""SELECT stay_id, time, '{concept}', valuenum, value_text, '{unit}', NULL, 'chartevents:' || itemid
                FROM chart_r WHERE itemid IN {_in(m3[concept]['chartevents'])} AND {_bounds(ri, concept)}"""
        )
    obs.append(
        f"""SELECT stay_id, time, 'fio2_fraction', round(valuenum / 100.0, 6), value_text, 'fraction', NULL,
                   'chartevents:' || itemid
            FROM chart_r WHERE itemid IN {_in(m3['fio2_percent']['chartevents'])} AND {_bounds(ri, 'fio2_percent')}"""
    )
    obs.append(
        f"""SELECT DISTINCT stay_id, time, 'gcs_sedated', 1.0, 'ETT', 'flag', NULL, 'chartevents:value'
            FROM chart_r WHERE value_text IN {_strs(m3['ett_gcs_values'])}"""
    )
    # The per-charting total (gcs_assembly = as_charted), as the default adapter assembles it.
    g = it["gcs"]
    con.execute(
        f"""
        CREATE TABLE gcs_raw AS
        SELECT stay_id, time,
               max(CASE WHEN itemid IN {_in(g['eye'])} THEN valuenum END) AS eye,
               max(CASE WHEN itemid IN {_in(g['verbal'])} THEN valuenum END) AS verbal,
               max(CASE WHEN itemid IN {_in(g['motor'])} THEN valuenum END) AS motor,
               bool_or(itemid IN {_in(g['verbal'])} AND value_text IN {_strs(g['verbal_unassessable'])}) AS ett
        FROM chart_r WHERE itemid IN {_in(g['eye'] + g['verbal'] + g['motor'])} GROUP BY 1, 2
        """
    )
    con.execute(gcs_total_sql(int(g["carry_forward_h"])))
    obs.append("SELECT stay_id, time, 'gcs', total, NULL, 'points', NULL, 'chartevents:gcs_components' FROM gcs WHERE total BETWEEN 3 AND 15")

    # ---- urine ------------------------------------------------------------------------------------------------------------
    obs.append(
        f"""SELECT icustay_id, charttime, 'urine_output_ml', value, NULL, 'mL', NULL, 'outputevents:' || itemid
            FROM raw_outputevents WHERE icustay_id IS NOT NULL AND itemid IN {_in(m3['urine_output_ml']['outputevents'])}
              AND {_bounds(ri, 'urine_output_ml', 'value')}"""
    )

    # ---- ferritin (screening), read as the default adapter reads it -------------------------------------------------
    obs.append(
        f"""SELECT stay_id, time, 'ferritin_ng_per_ml', valuenum, value_text, coalesce(valueuom, 'ng/mL'), NULL,
                  'labevents:' || itemid FROM lab_r WHERE itemid IN {_in(ferritin)}"""
    )

    con.execute("CREATE TABLE observations_all AS " + " UNION ALL ".join(f"SELECT * FROM ({q})" for q in obs))
    # immunoguide's plausibility ranges apply after ricu's bounds (never score an implausible value)
    sofa_concepts = ("platelets_10e3_per_ul", "bilirubin_mg_per_dl", "creatinine_mg_per_dl", "pao2_mmhg",
                     "fio2_fraction", "map_mmhg", "urine_output_ml", *gcs_parts)  # fmt: skip
    ok = " OR ".join(f"(concept = '{c}' AND {_plausible(c, 'value')})" for c in sofa_concepts)
    con.execute(
        f"""CREATE TABLE observations AS SELECT * FROM observations_all
            WHERE concept NOT IN {_strs(list(sofa_concepts))} OR ({ok})"""
    )
    dq.append(
        f"""SELECT stay_id, 'ricu profile', concept, 'implausible_value', count(*), min(CAST(value AS VARCHAR))
            FROM observations_all WHERE concept IN {_strs(list(sofa_concepts))} AND NOT ({ok}) GROUP BY ALL"""
    )

    # ---- infusions (ricu rate rows and vaso60) ------------------------------------------------------------------------
    segs = []
    mv_ids = [i for d in _CATECHOLAMINES for i in m3[d]["inputevents_mv"]] + list(m3["abx_inputevents_mv"])
    cv_ids = [i for d in _CATECHOLAMINES for i in m3[d]["inputevents_cv"]]
    con.execute(
        f"""CREATE TABLE mv_r AS SELECT icustay_id AS stay_id, starttime AS start, endtime AS stop, rate, linkorderid,
                   itemid FROM raw_inputevents_mv WHERE icustay_id IS NOT NULL AND itemid IN {_in(mv_ids)}"""
    )
    cv_drug = "CASE " + " ".join(f"WHEN itemid IN {_in(m3[d]['inputevents_cv'])} THEN '{d}'" for d in _CATECHOLAMINES) + " END"
    # ricu expand_intervals: per order (icustay, linkorderid) of one concept's items, a charting runs to the next one
    con.execute(
        f"""CREATE TABLE cv_r AS SELECT icustay_id AS stay_id, charttime AS start, rate, linkorderid, itemid, row_id,
                   lead(charttime) OVER (PARTITION BY icustay_id, {cv_drug}, linkorderid ORDER BY charttime, row_id) AS nxt
            FROM raw_inputevents_cv WHERE icustay_id IS NOT NULL AND itemid IN {_in(cv_ids)}"""
    )
    for drug in _CATECHOLAMINES:
        ids = m3[drug]
        lo, hi = ri["bounds"][f"{drug}_ug_kg_min"]
        mv = con.execute(f"SELECT * FROM mv_r WHERE itemid IN {_in(ids['inputevents_mv'])}").df()
        cv = con.execute(f"SELECT * FROM cv_r WHERE itemid IN {_in(ids['inputevents_cv'])}").df()
        overhang = timedelta(minutes=int(rules["cv_overhang_min"]) - int(rules["time_step_min"]))
        cv["stop"] = cv["nxt"].where(cv["nxt"].notna(), cv["start"] + overhang + _MINUTE) - _MINUTE
        rates = pd.concat(
            [mv.assign(source="inputevents_mv:" + mv["itemid"].astype(str))[["stay_id", "start", "stop", "rate", "source"]],
             cv.assign(source="inputevents_cv:" + cv["itemid"].astype(str))[["stay_id", "start", "stop", "rate", "source"]]],
            ignore_index=True,
        )  # fmt: skip
        rates = rates[rates["rate"].notna() & (rates["stop"] >= rates["start"])]
        out_of_bounds = ~rates["rate"].between(lo, hi)
        for sid, n in rates[out_of_bounds].groupby("stay_id").size().items():
            dq.append(f"SELECT {int(sid)}, 'ricu profile', '{drug}', 'rate_outside_ricu_bounds', {int(n)}, '[{lo}, {hi}]'")
        rates = rates[~out_of_bounds]
        spans = pd.concat(
            [mv.groupby(["stay_id", "linkorderid"]).agg(s=("start", "min"), e=("stop", "max")).reset_index(),
             cv.groupby(["stay_id", "linkorderid"]).agg(s=("start", "min"), e=("start", "max")).reset_index()],
            ignore_index=True,
        )  # fmt: skip
        spans = spans[spans["e"] > spans["s"]]
        kept_windows = ricu_order_windows(
            spans, gap=timedelta(minutes=int(rules["vaso_max_gap_min"])), min_len=timedelta(minutes=int(rules["vaso_min_window_min"]))
        )
        for sid, grp in rates.groupby("stay_id"):
            for w0, w1 in kept_windows.get(int(sid), []):
                part = grp[(grp["start"] <= w1) & (grp["stop"] >= w0)]
                for r in part.itertuples(index=False):
                    segs.append((int(sid), drug, max(r.start, w0), min(r.stop, w1), float(r.rate), r.source))
    inf = pd.DataFrame(segs, columns=["stay_id", "drug", "start", "stop", "rate_ug_kg_min", "source"])
    con.register("inf_df", inf)
    con.execute("CREATE TABLE infusions AS SELECT * FROM inf_df")

    # ---- ventilation (ricu vent_ind) ----------------------------------------------------------------------------------
    starts = con.execute(
        f"""SELECT DISTINCT stay_id, date_trunc('minute', time) AS t FROM chart_r
            WHERE itemid IN {_in(m3['vent_start']['chartevents'])}"""
    ).df()
    ends = con.execute(
        f"""SELECT DISTINCT stay_id, date_trunc('minute', time) AS t FROM chart_r
              WHERE itemid IN {_in(m3['vent_end']['chartevents'])}
            UNION
            SELECT DISTINCT icustay_id, date_trunc('minute', starttime) FROM raw_procedureevents_mv
              WHERE icustay_id IS NOT NULL AND itemid IN {_in(m3['vent_end']['procedureevents_mv'])}"""
    ).df()
    intimes = dict(con.execute("SELECT stay_id, intime FROM stays").fetchall())
    vent = ricu_vent_windows(
        starts, ends, intimes,
        match=timedelta(minutes=int(rules["vent_match_min"])), min_length=timedelta(minutes=int(rules["vent_min_length_min"])),
    )  # fmt: skip
    con.register("vent_df", vent)
    con.execute("CREATE TABLE ventilation AS SELECT stay_id, start, stop, kind FROM vent_df")

    # ---- antibiotics, cultures -----------------------------------------------------------------------------------------
    rx = re.compile(m3["abx_regex"], re.IGNORECASE)
    presc = con.execute(
        f"""SELECT icustay_id AS stay_id, startdate + INTERVAL {int(rules['abx_prescription_offset_min'])} MINUTE AS time,
                   drug AS name, route FROM raw_prescriptions WHERE icustay_id IS NOT NULL AND startdate IS NOT NULL"""
    ).df()
    presc = presc[presc["name"].fillna("").map(lambda d: rx.search(d) is not None)]
    con.register("presc_df", presc)
    con.execute(
        f"""CREATE TABLE antibiotics AS
            SELECT p.stay_id, p.time, p.name, p.route, true AS time_is_date_only FROM presc_df p
            WHERE p.stay_id IN (SELECT stay_id FROM stays)
            UNION ALL
            SELECT stay_id, start, 'inputevents_mv:' || itemid, 'IV', false FROM mv_r
            WHERE stay_id IN (SELECT stay_id FROM stays) AND itemid IN {_in(m3['abx_inputevents_mv'])}"""
    )
    noon = int(rules["sample_date_only_offset_h"])
    attach_hadm(
        f"""SELECT hadm_id, chartdate, coalesce(charttime, chartdate + INTERVAL {noon} HOUR) AS time,
                   charttime IS NULL AS date_only, spec_type_desc AS specimen, org_itemid IS NOT NULL AS positive
            FROM raw_microbiologyevents""",
        "chartdate",
        "micro_r",
    )
    con.execute(
        """CREATE TABLE cultures AS SELECT stay_id, time, specimen, bool_or(positive) AS positive,
                  bool_or(date_only) AS time_is_date_only FROM micro_r GROUP BY stay_id, time, specimen"""
    )
    con.execute(
        """CREATE TABLE diagnoses AS SELECT s.stay_id, d.icd9_code AS code, 9 AS version
           FROM raw_diagnoses_icd d JOIN stays s USING (hadm_id) WHERE d.icd9_code IS NOT NULL"""
    )
    return finish_adapter(
        con, out, dq, dataset="mimic3", items_version=f"{ri['version']} ({ri['reference']})", choices=dict(RICU_PROFILE_CHOICES)
    )


def ricu_order_windows(
    spans: pd.DataFrame, *, gap: timedelta, min_len: timedelta
) -> dict[int, list[tuple[datetime, datetime]]]:
    """ricu ``vaso60`` windows per stay: order spans ``stay_id, s, e`` grouped as ricu's ``merge_ranges`` does.

    Each span is widened by ``gap``; a span joins the group of the *first* span (in order of start, then end) that
    overlaps it (``data.table::foverlaps(x, x, mult = "first")``, closed intervals), so groups are not merged
    transitively; a group runs from that first span's start to the latest widened end minus ``gap`` and is kept
    when it lasts at least ``min_len``.

    >>> t = pd.Timestamp("2100-01-01 10:00")
    >>> spans = pd.DataFrame({"stay_id": [1, 1, 1], "s": [t, t + pd.Timedelta(minutes=27), t + pd.Timedelta(minutes=54)],
    ...                       "e": [t + pd.Timedelta(minutes=25), t + pd.Timedelta(minutes=52), t + pd.Timedelta(minutes=79)]})
    >>> ricu_order_windows(spans, gap=timedelta(minutes=5), min_len=timedelta(minutes=60))
    {1: []}
    """
    out: dict[int, list[tuple[datetime, datetime]]] = {}
    for sid, g in spans.sort_values(["stay_id", "s", "e"]).groupby("stay_id"):
        iv = [(r.s, r.e + gap) for r in g.itertuples(index=False)]
        groups: dict[int, datetime] = {}
        for lo, hi in iv:
            first = next(j for j, (a, b) in enumerate(iv) if a <= hi and lo <= b)
            groups[first] = max(groups.get(first, hi), hi)
        out[int(sid)] = [(iv[j][0], end - gap) for j, end in sorted(groups.items()) if end - gap - iv[j][0] >= min_len]
    return out


def ricu_vent_windows(
    starts: pd.DataFrame, ends: pd.DataFrame, intimes: dict[int, datetime], *, match: timedelta, min_length: timedelta
) -> pd.DataFrame:
    """ricu ``vent_ind`` (MIMIC-III) windows as ventilation episodes ``stay_id, start, stop, kind``.

    ``starts`` and ``ends`` hold ``stay_id, t`` (minutes). Each start takes the first end whose minute before is at or
    after it, within ``match``; its duration is end − start, else (ricu 0.6.3 ``calc_dur``) the start's time since
    admission plus ``match``; durations under ``min_length`` are dropped. ricu changes the interval to hours before it
    expands the window, so the episode runs from the start's hour since admission to that hour plus the duration.

    >>> t0 = datetime(2100, 1, 1, 8, 0)
    >>> s = pd.DataFrame({"stay_id": [1, 1], "t": [t0 + timedelta(minutes=90), t0 + timedelta(hours=5)]})
    >>> e = pd.DataFrame({"stay_id": [1], "t": [t0 + timedelta(minutes=150)]})
    >>> w = ricu_vent_windows(s, e, {1: t0}, match=timedelta(hours=6), min_length=timedelta(minutes=30))
    >>> [(str(a), str(b)) for a, b in zip(w.start, w.stop)]
    [('2100-01-01 09:00:00', '2100-01-01 10:00:00'), ('2100-01-01 13:00:00', '2100-01-02 00:00:00')]
    """
    end_by: dict[int, list[datetime]] = defaultdict(list)
    for r in ends.itertuples(index=False):
        end_by[int(r.stay_id)].append(r.t)
    rows = []
    for sid, g in starts.groupby("stay_id"):
        sid = int(sid)
        if sid not in intimes:
            continue
        anchor = intimes[sid]
        shifted = sorted(e - _MINUTE for e in end_by.get(sid, []))
        for t in sorted(g["t"]):
            i = bisect_left(shifted, t)
            if i < len(shifted) and shifted[i] - t <= match:
                dur = shifted[i] + _MINUTE - t
            else:
                dur = (t - anchor) + match  # ricu 0.6.3 calc_dur: x + match_win (the start time, not a duration)
            if dur < min_length:
                continue
            hour_start = anchor + ((t - anchor) // _HOUR) * _HOUR
            rows.append((sid, hour_start, hour_start + dur, "invasive"))
    return pd.DataFrame(rows, columns=["stay_id", "start", "stop", "kind"])
