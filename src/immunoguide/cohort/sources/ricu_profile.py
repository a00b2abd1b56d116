"""The ``ricu`` source profile: MIMIC-III and MIMIC-IV read as ricu 0.6.3 reads them (the ricu preset's adapters).

The default adapters (:mod:`.mimic3`, :mod:`.mimic4`) read a source as immunoguide's clinical choices say (arterial
gases only, GU irrigant netted, CareVue rates per kg, events attached by subject within a day of the stay …). The
reference preset ``ricu`` must score the *same facts ricu scores*, so this profile reads the source with ricu's
concept dictionary and item callbacks; ``ricu_items.toml`` names every item, bound and source file. The front ends
(:func:`immunoguide.cohort.sources.mimic3_ricu.convert_mimic3_ricu`,
:func:`immunoguide.cohort.sources.mimic4_ricu.convert_mimic4_ricu`) register the source tables under common names
(``rr_*`` views, below) and :func:`build_ricu_timeline` does the rest:

* **Attachment.** Tables with an ICU-stay column by that column; hospital-admission tables (labs, cultures, and
  MIMIC-IV prescriptions) to the first ICU stay of the admission ending at or after the row's *index* time — for
  cultures the chart date, as ricu assigns the stay before ``mimic_sampling`` sets the time — else to the last stay
  (ricu ``upgrade_id``: a rolling join with ``rollends``). No window around the stay.
* **Values.** Within ricu's bounds (concept-dict ``min``/``max``), no unit conversion (CareVue rates charted per
  minute are kept as charted, as ricu keeps them). Then immunoguide's plausibility ranges (``criteria/concepts.toml``)
  apply as everywhere; rows ricu keeps and immunoguide refuses (e.g. MAP 0) are counted in ``data_quality``.
* **FiO2** in % (21–100) as a fraction; **PaO2** from any specimen.
* **GCS** as its charted components (``gcs_eye``, ``gcs_verbal``, ``gcs_motor``, ``gcs_total_charted``) and a
  ``gcs_sedated`` flag at every charting with an intubated value ('1.0 ET/Trach', 'No Response-ETT'; any item); the
  per-charting total ``gcs`` is written too, so either ``gcs_assembly`` policy can read the timeline.
* **Urine** from ricu's outputevents items (0–2000 mL per charting; no irrigant subtraction).
* **Catecholamine infusions** (ricu ``mimic_rate_mv`` / ``expand_intervals`` and ``vaso60``): MetaVision rows run
  from start to end; a CareVue charting runs to one minute before the next charting of the same order
  (``linkorderid``), the last one for 59 minutes. ricu's ≥ 1 h rule is applied here because it is defined on the
  source's orders: per drug, each order's span (MetaVision: first start to last end; CareVue: first to last
  charting; spans of 0 dropped), widened by 5 minutes and grouped as ``data.table::foverlaps(mult = "first")``
  groups them in ricu's ``merge_ranges``; groups spanning at least 60 minutes keep the rate rows inside them
  (segments clipped to the kept windows). The ricu preset therefore sets ``vasopressor_min_duration = none``.
* **Ventilation.** MIMIC-III (ricu ``vent_ind`` from events): every charting of a ventilator-setting item starts a
  window ending at the first end event (extubation, O2-delivery-device charting) whose minute before is at or after
  it, when within 6 h; without one, ricu 0.6.3 computes the duration as the start's *time since admission* plus 6 h
  (``calc_dur``: ``x + match_win``, a ricu quirk reproduced); windows under 30 minutes are dropped; written as
  ``invasive`` (ricu does not tell). MIMIC-IV (ricu ``mech_vent``): procedure 225792 (invasive) and 225794
  (non-invasive) from start to end. ricu floors a window's start to its hour since admission before adding the
  duration, so each episode runs from that hour's start to ``hour start + duration``.
* **Antibiotics**: prescriptions whose drug matches ricu's regular expression (case-insensitive) — MIMIC-III with an
  ICU-stay id, at start date + 12 h; MIMIC-IV by admission, at their start — and the MetaVision antibiotic items.
  **Cultures**: every microbiology row, at its charttime or chart date + 12 h; positive when an organism is named.

The ``rr_*`` views a front end registers (times as TIMESTAMP):
``rr_chart(stay_id, time, itemid, valuenum, value_text)``, ``rr_lab(hadm_id, time, itemid, valuenum, value_text,
valueuom)``, ``rr_output(stay_id, time, itemid, value)``, ``rr_mv(stay_id, start, stop, rate, linkorderid, itemid)``,
``rr_cv(stay_id, start, rate, linkorderid, itemid, row_id)``, ``rr_presc(stay_id, hadm_id, time, name, route)``
(one of the two ids set), ``rr_micro(hadm_id, chartdate, time, date_only, specimen, positive)``, and for ventilation
``rr_vent_start(stay_id, t)`` and ``rr_vent_end(stay_id, t)`` (MIMIC-III) or ``rr_mech_vent(stay_id, start, stop,
kind)`` (MIMIC-IV); plus the tables ``stays`` and ``diagnoses`` in the timeline's columns.
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

import duckdb
import pandas as pd

from immunoguide.cohort.sources._mimic_sql import GCS_TOTAL_OBS, _in, _plausible, _strs, gcs_raw_sql, gcs_total_sql
from immunoguide.cohort.sources.mimic3 import AdapterReport, finish_adapter

__all__ = [
    "RICU_PROFILE_CHOICES",
    "build_ricu_timeline",
    "load_ricu_items",
    "ricu_order_windows",
    "ricu_vent_windows",
]

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_CATECHOLAMINES = ("norepinephrine", "epinephrine", "dopamine", "dobutamine")
_GCS_PARTS = ("gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total_charted")

#: The reading rules this profile applies (recorded in adapter.json).
RICU_PROFILE_CHOICES: dict[str, str] = {
    "profile": "ricu",
    "attachment": "ICU-stay tables by their stay id; admission tables to the first stay ending at or after the row (ricu upgrade_id)",
    "values": "ricu concept-dict bounds, no unit conversion, then immunoguide plausibility",
    "pao2_specimen": "any",
    "gcs": "charted components + ETT flags (and the per-charting total)",
    "infusions": "ricu mimic_rate_mv / expand_intervals; vaso60 (>= 1 h by order) applied here",
    "ventilation": "ricu vent_ind (MIMIC-III events, calc_dur quirk) or mech_vent procedures (MIMIC-IV)",
    "antibiotics": "ricu abx: prescriptions regex + MetaVision antibiotic items",
    "cultures": "ricu samp: every microbiology row (charttime or chartdate + 12 h), stay by chart date",
}


def load_ricu_items() -> dict[str, Any]:
    """The ricu profile's item map (``ricu_items.toml``)."""
    return tomllib.loads(resources.files("immunoguide.cohort.sources").joinpath("ricu_items.toml").read_text("utf-8"))


def _bounds(ri: dict[str, Any], concept: str, col: str = "valuenum") -> str:
    lo, hi = ri["bounds"][concept]
    return f"({col} BETWEEN {float(lo)!r} AND {float(hi)!r})"


def attach_to_stays(con: duckdb.DuckDBPyConnection, select_sql: str, key_col: str, name: str) -> None:
    """``CREATE TABLE name``: the rows of ``select_sql`` (with ``hadm_id`` and ``key_col``) and their ``stay_id`` — the
    first ICU stay of the admission ending at or after ``key_col``, else the admission's last stay (ricu
    ``upgrade_id``); rows without an admission id or of an admission without an ICU stay are dropped, as in ricu."""
    if not (con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ricu_hstay'").fetchone()
            or (0,))[0]:
        con.execute(
            """CREATE TABLE ricu_hstay AS SELECT stay_id, hadm_id, intime, date_trunc('minute', outtime) AS out_min,
                      row_number() OVER (PARTITION BY hadm_id ORDER BY intime, stay_id) AS seq FROM stays"""
        )
        con.execute("CREATE TABLE ricu_hlast AS SELECT hadm_id, max(seq) AS seq FROM ricu_hstay GROUP BY 1")
    con.execute(f"CREATE TABLE {name}_src AS {select_sql}")
    con.execute(
        f"""
        CREATE TABLE {name} AS
        WITH r AS (SELECT row_number() OVER () AS rid, * FROM {name}_src WHERE hadm_id IS NOT NULL),
        a AS (SELECT r.rid, h.seq FROM r ASOF LEFT JOIN ricu_hstay h ON r.hadm_id = h.hadm_id AND r.{key_col} <= h.out_min)
        SELECT r.* EXCLUDE (rid), s.stay_id AS ricu_stay_id
        FROM r JOIN a USING (rid) JOIN ricu_hlast l ON l.hadm_id = r.hadm_id
        JOIN ricu_hstay s ON s.hadm_id = r.hadm_id AND s.seq = coalesce(a.seq, l.seq)
        """
    )


def build_ricu_timeline(
    con: duckdb.DuckDBPyConnection, out: Path, *, dataset: str, items: dict[str, Any], extra_lab_ids: tuple[int, ...] = ()
) -> AdapterReport:
    """Write the timeline tables from the registered ``rr_*`` views, ``stays`` and ``diagnoses`` (module docstring).

    ``items`` is the dataset's section of ``ricu_items.toml``; ``extra_lab_ids`` are lab items kept for screening
    (ferritin), read with the same attachment.
    """
    ri = load_ricu_items()
    rules = ri["rules"]
    dq: list[str] = []

    # ---- labs --------------------------------------------------------------------------------------------------------
    lab_ids = sorted({i for c in items.values() if isinstance(c, dict) for i in c.get("labevents", [])} | set(extra_lab_ids))
    attach_to_stays(con, f"SELECT * FROM rr_lab WHERE itemid IN {_in(lab_ids)}", "time", "lab_r")
    obs: list[str] = []
    for concept in ("platelets_10e3_per_ul", "bilirubin_mg_per_dl", "creatinine_mg_per_dl", "pao2_mmhg"):
        obs.append(
            f"""SELECT ricu_stay_id AS stay_id, time, '{concept}' AS concept, valuenum AS value, value_text,
                       valueuom AS unit, NULL AS method, 'labevents:' || itemid AS source
                FROM lab_r WHERE itemid IN {_in(items[concept]['labevents'])} AND {_bounds(ri, concept)}"""
        )
    obs.append(
        f"""SELECT ricu_stay_id, time, 'fio2_fraction', valuenum / 100.0, value_text, valueuom, NULL, 'labevents:' || itemid
            FROM lab_r WHERE itemid IN {_in(items['fio2_percent']['labevents'])} AND {_bounds(ri, 'fio2_percent')}"""
    )
    if extra_lab_ids:
        obs.append(
            f"""SELECT ricu_stay_id, time, 'ferritin_ng_per_ml', valuenum, value_text, coalesce(valueuom, 'ng/mL'), NULL,
                       'labevents:' || itemid FROM lab_r WHERE itemid IN {_in(list(extra_lab_ids))}"""
        )

    # ---- chart: MAP, FiO2, GCS components, ETT -----------------------------------------------------------------------
    gcs_parts = [c for c in _GCS_PARTS if c in items]
    for concept in ("map_mmhg", *gcs_parts):
        unit = "mmHg" if concept == "map_mmhg" else "points"
        obs.append(
            f"""SELECT stay_id, time, '{concept}', valuenum, value_text, '{unit}', NULL, 'chartevents:' || itemid
                FROM rr_chart WHERE itemid IN {_in(items[concept]['chartevents'])} AND {_bounds(ri, concept)}"""
        )
    obs.append(
        f"""SELECT stay_id, time, 'fio2_fraction', round(valuenum / 100.0, 6), value_text, 'fraction', NULL,
                   'chartevents:' || itemid
            FROM rr_chart WHERE itemid IN {_in(items['fio2_percent']['chartevents'])} AND {_bounds(ri, 'fio2_percent')}"""
    )
    obs.append(
        f"""SELECT DISTINCT stay_id, time, 'gcs_sedated', 1.0, 'ETT', 'flag', NULL, 'chartevents:value'
            FROM rr_chart WHERE value_text IN {_strs(items['ett_gcs_values'])}"""
    )
    # The per-charting total (gcs_assembly = as_charted), as the default adapters assemble it.
    eye, verbal, motor = (items[c]["chartevents"] for c in ("gcs_eye", "gcs_verbal", "gcs_motor"))
    con.execute(gcs_raw_sql(eye, verbal, motor, items["ett_gcs_values"], source="rr_chart", text="value_text"))
    con.execute(gcs_total_sql(6))
    obs.append(GCS_TOTAL_OBS)

    # ---- urine --------------------------------------------------------------------------------------------------------
    obs.append(
        f"""SELECT stay_id, time, 'urine_output_ml', value, NULL, 'mL', NULL, 'outputevents:' || itemid
            FROM rr_output WHERE itemid IN {_in(items['urine_output_ml']['outputevents'])} AND {_bounds(ri, 'urine_output_ml', 'value')}"""
    )

    con.execute("CREATE TABLE observations_all AS " + " UNION ALL ".join(f"SELECT * FROM ({q})" for q in obs))
    con.execute("DELETE FROM observations_all WHERE stay_id NOT IN (SELECT stay_id FROM stays)")
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
    overhang = timedelta(minutes=int(rules["cv_overhang_min"]) - int(rules["time_step_min"]))
    for drug in _CATECHOLAMINES:
        ids = items[drug]
        lo, hi = ri["bounds"][f"{drug}_ug_kg_min"]
        mv = con.execute(f"SELECT * FROM rr_mv WHERE itemid IN {_in(ids.get('inputevents_mv', []) + ids.get('inputevents', []))}").df()
        cv = con.execute(
            f"""SELECT *, lead(start) OVER (PARTITION BY stay_id, linkorderid ORDER BY start, row_id) AS nxt
                FROM rr_cv WHERE itemid IN {_in(ids.get('inputevents_cv', []))}"""
        ).df()
        cv["stop"] = cv["nxt"].where(cv["nxt"].notna(), cv["start"] + overhang + _MINUTE) - _MINUTE
        cols = ["stay_id", "start", "stop", "rate", "source"]
        rates = pd.concat(
            [mv.assign(source="inputevents:" + mv["itemid"].astype(str))[cols],
             cv.assign(source="inputevents_cv:" + cv["itemid"].astype(str))[cols]],
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
        kept = ricu_order_windows(
            spans, gap=timedelta(minutes=int(rules["vaso_max_gap_min"])), min_len=timedelta(minutes=int(rules["vaso_min_window_min"]))
        )
        for sid, grp in rates.groupby("stay_id"):
            for w0, w1 in kept.get(int(sid), []):
                part = grp[(grp["start"] <= w1) & (grp["stop"] >= w0)]
                for r in part.itertuples(index=False):
                    segs.append((int(sid), drug, max(r.start, w0), min(r.stop, w1), float(r.rate), r.source))
    inf = pd.DataFrame(segs, columns=["stay_id", "drug", "start", "stop", "rate_ug_kg_min", "source"])
    con.register("ricu_inf_df", inf)
    con.execute("CREATE TABLE infusions AS SELECT * FROM ricu_inf_df WHERE stay_id IN (SELECT stay_id FROM stays)")

    # ---- ventilation ------------------------------------------------------------------------------------------------------
    intimes = dict(con.execute("SELECT stay_id, intime FROM stays").fetchall())
    if "vent_start" in items:
        vent = ricu_vent_windows(
            con.execute("SELECT DISTINCT stay_id, t FROM rr_vent_start").df(),
            con.execute("SELECT DISTINCT stay_id, t FROM rr_vent_end").df(),
            intimes,
            match=timedelta(minutes=int(rules["vent_match_min"])),
            min_length=timedelta(minutes=int(rules["vent_min_length_min"])),
        )
    else:
        vent = ricu_procedure_windows(con.execute("SELECT stay_id, start, stop, kind FROM rr_mech_vent").df(), intimes)
    con.register("ricu_vent_df", vent)
    con.execute("CREATE TABLE ventilation AS SELECT stay_id, start, stop, kind FROM ricu_vent_df")

    # ---- antibiotics, cultures ---------------------------------------------------------------------------------------------
    rx = re.compile(items["abx_regex"], re.IGNORECASE)
    presc = con.execute("SELECT * FROM rr_presc").df()
    presc = presc[presc["name"].fillna("").map(lambda d: rx.search(d) is not None)]
    con.register("ricu_presc_df", presc)
    attach_to_stays(con, "SELECT hadm_id, time, name, route FROM ricu_presc_df WHERE stay_id IS NULL", "time", "presc_h")
    con.execute(
        f"""CREATE TABLE antibiotics AS
            SELECT stay_id, time, name, route, {'true' if dataset == 'mimic3' else 'false'} AS time_is_date_only
            FROM ricu_presc_df WHERE stay_id IS NOT NULL
            UNION ALL SELECT ricu_stay_id, time, name, route, false FROM presc_h
            UNION ALL
            SELECT stay_id, start, 'inputevents:' || itemid, 'IV', false FROM rr_mv WHERE itemid IN {_in(items['abx_inputevents'])}"""
    )
    con.execute("DELETE FROM antibiotics WHERE stay_id NOT IN (SELECT stay_id FROM stays)")
    attach_to_stays(con, "SELECT * FROM rr_micro", "chartdate", "micro_r")
    con.execute(
        """CREATE TABLE cultures AS SELECT ricu_stay_id AS stay_id, time, specimen, bool_or(positive) AS positive,
                  bool_or(date_only) AS time_is_date_only FROM micro_r GROUP BY 1, 2, 3"""
    )
    ver = f"{ri['version']} ({ri['reference']})"
    return finish_adapter(con, out, dq, dataset=dataset, items_version=ver, choices=dict(RICU_PROFILE_CHOICES))


def ricu_order_windows(
    spans: pd.DataFrame, *, gap: timedelta, min_len: timedelta
) -> dict[int, list[tuple[datetime, datetime]]]:
    """ricu ``vaso60`` windows per stay: order spans ``stay_id, s, e`` grouped as ricu's ``merge_ranges`` does.

    Each span is widened by ``gap``; a span joins the group of the *first* span (in order of start, then end) that
    overlaps it (``data.table::foverlaps(x, x, mult = "first")``, closed intervals), so groups are not merged
    transitively; a group runs from that first span's start to the latest widened end minus ``gap`` and is kept
    when it lasts at least ``min_len``.

    >>> t = pd.Timestamp("2100-01-01 10:00")
    >>> m = pd.Timedelta(minutes=1)
    >>> spans = pd.DataFrame({"stay_id": [1, 1, 1], "s": [t, t + 27 * m, t + 54 * m], "e": [t + 25 * m, t + 52 * m, t + 79 * m]})
    >>> ricu_order_windows(spans, gap=timedelta(minutes=5), min_len=timedelta(minutes=60))  # a chain of 3 short orders
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


def _hour_start(t: datetime, intime: datetime) -> datetime:
    return intime + ((t - intime) // _HOUR) * _HOUR


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
            hs = _hour_start(t, anchor)
            rows.append((sid, hs, hs + dur, "invasive"))
    return pd.DataFrame(rows, columns=["stay_id", "start", "stop", "kind"])


def ricu_procedure_windows(proc: pd.DataFrame, intimes: dict[int, datetime]) -> pd.DataFrame:
    """ricu ``mech_vent`` (MIMIC-IV) windows: each procedure from its start's hour since admission for its duration.

    >>> t0 = datetime(2100, 1, 1, 8, 0)
    >>> p = pd.DataFrame({"stay_id": [1], "start": [t0 + timedelta(minutes=90)], "stop": [t0 + timedelta(minutes=200)],
    ...                   "kind": ["invasive"]})
    >>> [(str(a), str(b)) for a, b in ricu_procedure_windows(p, {1: t0})[["start", "stop"]].itertuples(index=False)]
    [('2100-01-01 09:00:00', '2100-01-01 10:50:00')]
    """
    rows = []
    for r in proc.itertuples(index=False):
        sid = int(r.stay_id)
        if sid not in intimes or pd.isna(r.start) or pd.isna(r.stop) or r.stop < r.start:
            continue
        hs = _hour_start(r.start, intimes[sid])
        rows.append((sid, hs, hs + (r.stop - r.start), r.kind))
    return pd.DataFrame(rows, columns=["stay_id", "start", "stop", "kind"])
