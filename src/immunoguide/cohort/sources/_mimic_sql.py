"""SQL fragments the MIMIC adapters share: :mod:`.mimic3`, :mod:`.mimic4` and the ``ricu`` profile (:mod:`.ricu_profile`).

Each fragment is DuckDB SQL text with the item ids, names and tables of one source passed in; what differs between
MIMIC-III and MIMIC-IV (column names such as ``icustay_id``, text-typed columns read with ``TRY_CAST``, the join that
keeps rows of known stays) is a parameter, so one reading rule is written once. The tables a fragment reads or
creates (``chart_num``, ``gcs_raw``, ``gcs``, ``lab_raw``, ``vent_pts``, ``win``, ``stays``) are those of the adapters.

>>> _in([3, 1])
'(3, 1)'
>>> _strs(["ART", "it's"])
"('ART', 'it''s')"
"""

from __future__ import annotations

from collections.abc import Iterable

from immunoguide.units import concepts

__all__ = [
    "FIO2_FRACTION",
    "FIO2_LAB_OK",
    "GCS_IMPUTED_DQ",
    "GCS_SEDATED_OBS",
    "GCS_TOTAL_OBS",
    "antibiotic_filter_sql",
    "chart_map_fio2_sql",
    "cultures_sql",
    "gcs_raw_sql",
    "gcs_total_sql",
    "items_joined_sql",
    "lab_checked_dq_sql",
    "numeric_lab_sql",
    "observations_sql",
    "vent_episodes_sql",
    "weight_ctes_sql",
]


def _in(ids: list[int]) -> str:
    """An SQL list of integers (``(NULL)`` when empty, which matches nothing)."""
    return "(" + ", ".join(str(int(i)) for i in ids) + ")" if ids else "(NULL)"


def _str(x: str) -> str:
    """An SQL string literal."""
    return "'" + x.replace("'", "''") + "'"


def _strs(xs: list[str]) -> str:
    """An SQL list of quoted strings."""
    return "(" + ", ".join(_str(x) for x in xs) + ")"


def _plausible(concept: str, col: str = "value") -> str:
    """``col`` within the plausible range of ``concept`` (``criteria/concepts.toml``)."""
    c = concepts()[concept]
    return f"({col} BETWEEN {c.min!r} AND {c.max!r})"


# ---- chart: MAP and FiO2 -----------------------------------------------------------------------------------------------

#: Charted FiO2 as a fraction: values <= 1 are fractions, 20-100 are %; (1, 20) are oxygen flows (NULL, mimic-code
#: ``bg.sql``). Rounded to 3 decimals: CareVue stores FiO2 as float32 (0.21 arrives as 0.20999999).
FIO2_FRACTION = """CASE WHEN valuenum > 0.2 AND valuenum <= 1 THEN round(valuenum, 3)
                    WHEN valuenum >= 20 AND valuenum <= 100 THEN round(valuenum / 100.0, 3) END"""


def chart_map_fio2_sql(map_ids: list[int], fio2_ids: list[int]) -> tuple[list[str], list[str]]:
    """Observations (MAP in mmHg, FiO2 as a fraction) and data-quality selects over ``chart_num``.

    The first observation select names the columns of the observation union (``stay_id, time, concept, value,
    value_text, unit, method, source``); an implausible MAP and an unusable FiO2 are counted per stay and item.
    """
    fio2 = FIO2_FRACTION
    obs = [
        f"""SELECT stay_id, time, 'map_mmhg' AS concept, valuenum AS value, value_text, 'mmHg' AS unit, NULL AS method,
                   'chartevents:' || itemid AS source
            FROM chart_num WHERE itemid IN {_in(map_ids)} AND {_plausible("map_mmhg", "valuenum")}""",
        f"""SELECT stay_id, time, 'fio2_fraction', {fio2}, value_text, 'fraction', NULL, 'chartevents:' || itemid
            FROM chart_num WHERE itemid IN {_in(fio2_ids)} AND ({fio2}) IS NOT NULL""",
    ]
    dq = [
        f"""SELECT stay_id, 'chartevents', CAST(itemid AS VARCHAR), CASE WHEN valuenum IS NULL THEN 'text_in_numeric_field'
                   ELSE 'implausible_value' END, count(*), min(coalesce(CAST(valuenum AS VARCHAR), value_text))
            FROM chart_num WHERE itemid IN {_in(map_ids)} AND NOT coalesce({_plausible("map_mmhg", "valuenum")}, false)
            GROUP BY ALL""",
        f"""SELECT stay_id, 'chartevents', CAST(itemid AS VARCHAR), CASE WHEN valuenum IS NULL THEN 'text_in_numeric_field'
                   WHEN valuenum > 1 AND valuenum < 20 THEN 'fio2_looks_like_o2_flow' ELSE 'implausible_value' END,
                   count(*), min(coalesce(CAST(valuenum AS VARCHAR), value_text))
            FROM chart_num WHERE itemid IN {_in(fio2_ids)} AND ({fio2}) IS NULL GROUP BY ALL""",
    ]
    return obs, dq


# ---- GCS ---------------------------------------------------------------------------------------------------------------


def gcs_raw_sql(
    eye: list[int],
    verbal: list[int],
    motor: list[int],
    ett_values: list[str],
    *,
    source: str,
    stay: str = "stay_id",
    time: str = "time",
    num: str = "valuenum",
    text: str = "value",
    where: str = "",
) -> str:
    """``CREATE TABLE gcs_raw``: eye / verbal / motor per stay and charting time, and ``ett`` (a verbal charted as
    one of ``ett_values``), from ``source`` (a chart table or ``raw_chartevents`` with a join).

    ``stay``, ``time``, ``num`` and ``text`` are the source's expressions for the stay id, the time, the numeric and
    the text value; ``where`` adds conditions (``AND …``) to the item filter.
    """
    return f"""
        CREATE TABLE gcs_raw AS
        SELECT {stay} AS stay_id, {time} AS time,
               max(CASE WHEN itemid IN {_in(eye)} THEN {num} END) AS eye,
               max(CASE WHEN itemid IN {_in(verbal)} THEN {num} END) AS verbal,
               max(CASE WHEN itemid IN {_in(motor)} THEN {num} END) AS motor,
               bool_or(itemid IN {_in(verbal)} AND {text} IN {_strs(ett_values)}) AS ett
        FROM {source}
        WHERE itemid IN {_in(eye + verbal + motor)}{where}
        GROUP BY 1, 2
        """


def gcs_total_sql(carry_forward_h: int) -> str:
    """``CREATE TABLE gcs`` from ``gcs_raw`` (eye/verbal/motor per charting time, ``ett`` flag).

    A missing component is carried forward for ``carry_forward_h`` hours, else imputed as normal (eye 4, verbal 5,
    motor 6) and the row flagged ``imputed`` (mimic-code ``measurement/gcs.sql``, ricu).
    """
    return f"""
        CREATE TABLE gcs AS
        WITH w AS (
          SELECT *, last_value(eye IGNORE NULLS) OVER win AS eye_f, last_value(verbal IGNORE NULLS) OVER win AS verbal_f,
                 last_value(motor IGNORE NULLS) OVER win AS motor_f
          FROM gcs_raw
          WINDOW win AS (PARTITION BY stay_id ORDER BY time RANGE BETWEEN INTERVAL {int(carry_forward_h)} HOUR PRECEDING AND CURRENT ROW)
        )
        SELECT stay_id, time, ett, coalesce(eye_f, 4) + coalesce(verbal_f, 5) + coalesce(motor_f, 6) AS total,
               eye_f IS NULL OR verbal_f IS NULL OR motor_f IS NULL AS imputed
        FROM w
        """


#: The GCS total of each charting time (from ``gcs``), when in 3-15.
GCS_TOTAL_OBS = (
    "SELECT stay_id, time, 'gcs', total, NULL, 'points', NULL, 'chartevents:gcs_components' FROM gcs "
    "WHERE total BETWEEN 3 AND 15"
)
#: A ``gcs_sedated`` flag where the verbal component was charted as intubated.
GCS_SEDATED_OBS = (
    "SELECT stay_id, time, 'gcs_sedated', 1.0, 'verbal ETT', 'flag', NULL, 'chartevents:gcs_verbal' FROM gcs WHERE ett"
)
#: Charting times with a component imputed as normal, per stay.
GCS_IMPUTED_DQ = """SELECT stay_id, 'chartevents', 'gcs', 'gcs_component_missing_imputed_normal', count(*), min(CAST(time AS VARCHAR))
           FROM gcs WHERE imputed GROUP BY ALL"""


# ---- labs --------------------------------------------------------------------------------------------------------------

#: Lab FiO2 (%) that is used (21-100 %).
FIO2_LAB_OK = "valuenum BETWEEN 21 AND 100"


def numeric_lab_sql(concept_name: str, item_ids: list[int], units: list[str]) -> tuple[str, str]:
    """SQL over ``lab_raw`` for one numeric lab concept: (observations SELECT, data-quality SELECT).

    A row is an observation when its unit is the expected one (or absent) and its value plausible; otherwise it is
    counted as ``text_in_numeric_field``, ``unit_mismatch`` or ``implausible_value`` for its stay.
    """
    ok = _strs(units)
    plausible = _plausible(concept_name, "valuenum")
    obs = f"""SELECT stay_id, time, '{concept_name}', valuenum, value_text, valueuom, NULL, 'labevents:' || itemid
              FROM lab_raw WHERE itemid IN {_in(item_ids)} AND (valueuom IN {ok} OR valueuom IS NULL) AND {plausible}"""
    dq = f"""SELECT stay_id, 'labevents', CAST(itemid AS VARCHAR),
                    CASE WHEN valuenum IS NULL THEN 'text_in_numeric_field'
                         WHEN valueuom IS NOT NULL AND valueuom NOT IN {ok} THEN 'unit_mismatch'
                         ELSE 'implausible_value' END, count(*),
                    min(coalesce(CAST(valuenum AS VARCHAR), value_text) || coalesce(' ' || valueuom, ''))
             FROM lab_raw WHERE itemid IN {_in(item_ids)}
               AND NOT (coalesce(valueuom IN {ok}, true) AND coalesce({plausible}, false))
             GROUP BY ALL"""
    return obs, dq


def lab_checked_dq_sql(item_ids: list[int], ok_expr: str) -> str:
    """Data quality over ``lab_raw``: rows of ``item_ids`` failing ``ok_expr`` (text in a numeric field or
    implausible), per stay and item."""
    return f"""SELECT stay_id, 'labevents', CAST(itemid AS VARCHAR),
                       CASE WHEN valuenum IS NULL THEN 'text_in_numeric_field' ELSE 'implausible_value' END, count(*),
                       min(coalesce(CAST(valuenum AS VARCHAR), value_text))
                FROM lab_raw WHERE itemid IN {_in(item_ids)} AND NOT coalesce({ok_expr}, false) GROUP BY ALL"""


# ---- urine output ------------------------------------------------------------------------------------------------------


def items_joined_sql(item_ids: list[int]) -> str:
    """Aggregate: the distinct ``itemid`` of a group (one of ``item_ids``) as text, sorted as text, joined with ``+``.

    What ``string_agg(DISTINCT CAST(itemid AS VARCHAR), '+' ORDER BY CAST(itemid AS VARCHAR))`` gives, at a fifth of
    its cost: an ordered aggregate sorts within each of the millions of (stay, time) groups, nearly all of one row,
    while a bit per item (``bit_or``) is one integer per group, spelled out once per group.

    >>> items_joined_sql([9, 10])
    "concat_ws('+', CASE WHEN bit_or(CASE itemid WHEN 10 THEN 1 WHEN 9 THEN 2 END) & 1 <> 0 THEN '10' END, CASE WHEN bit_or(CASE itemid WHEN 10 THEN 1 WHEN 9 THEN 2 END) & 2 <> 0 THEN '9' END)"
    """
    ids = sorted({str(int(i)) for i in item_ids})
    if len(ids) > 62:
        raise ValueError(f"items_joined_sql: {len(ids)} item ids do not fit a BIGINT bit mask (at most 62)")
    mask = "bit_or(CASE itemid " + " ".join(f"WHEN {i} THEN {1 << k}" for k, i in enumerate(ids)) + " END)"
    return "concat_ws('+', " + ", ".join(f"CASE WHEN {mask} & {1 << k} <> 0 THEN '{i}' END" for k, i in enumerate(ids)) + ")"


# ---- observations, stays -----------------------------------------------------------------------------------------------


def observations_sql(obs: Iterable[str]) -> str:
    """``CREATE TABLE observations``: the rows with a stay of the union of the observation selects.

    One statement, so the union is filtered as it streams instead of being kept as a second table of every
    observation (the largest table of the adapters).
    """
    return (
        "CREATE TABLE observations AS SELECT stay_id, time, concept, value, value_text, unit, method, source FROM ("
        + " UNION ALL ".join(obs)
        + ") WHERE stay_id IS NOT NULL"
    )


def weight_ctes_sql(weight_ids: list[int], *, stay: str, chart: str, inputs: str) -> str:
    """The CTEs ``w`` (first charted weight, kg) and ``wi`` (first infusion ``patientweight``) per stay; weights
    outside 20-400 kg are ignored. ``stay`` is the stay id column of both tables, ``chart``/``inputs`` the tables."""
    return f"""w AS (
          SELECT {stay} AS stay_id, arg_min(valuenum, charttime) AS weight_kg FROM {chart}
          WHERE itemid IN {_in(weight_ids)} AND valuenum BETWEEN 20 AND 400 GROUP BY 1
        ), wi AS (
          SELECT {stay} AS stay_id, arg_min(patientweight, starttime) AS weight_kg FROM {inputs}
          WHERE patientweight BETWEEN 20 AND 400 GROUP BY 1
        )"""


# ---- ventilation, antibiotics, cultures --------------------------------------------------------------------------------


def vent_episodes_sql(gap_h: int, kind_case: str) -> str:
    """Episodes from ``vent_pts`` (stay, time, level): points of one level less than ``gap_h`` hours apart form an
    episode; an episode needs two points. ``kind_case`` maps ``any_value(lvl)`` to the timeline's kind."""
    return f"""WITH o AS (
          SELECT *, CASE WHEN lag(time) OVER w IS NULL OR time - lag(time) OVER w > INTERVAL {int(gap_h)} HOUR THEN 1 ELSE 0 END AS brk
          FROM vent_pts WINDOW w AS (PARTITION BY stay_id, lvl ORDER BY time)
        ), e AS (SELECT *, sum(brk) OVER (PARTITION BY stay_id, lvl ORDER BY time) AS ep FROM o)
        SELECT stay_id, min(time) AS start, max(time) AS stop,
               {kind_case} AS kind
        FROM e GROUP BY stay_id, lvl, ep HAVING count(*) > 1"""


def antibiotic_filter_sql(abx: dict) -> str:
    """The condition on ``prescriptions p`` that makes a row a systemic antibiotic: the drug name contains one of
    ``abx["names"]`` and none of ``abx["excluded_drug_words"]``, it is not a ``BASE`` diluent and its route is not one
    of ``abx["excluded_routes"]`` (topical, ophthalmic …)."""
    like = " OR ".join(f"lower(p.drug) LIKE '%{n}%'" for n in abx["names"])
    nolike = " AND ".join(f"lower(p.drug) NOT LIKE '%{n}%'" for n in abx["excluded_drug_words"])
    return f"""({like}) AND {nolike} AND coalesce(p.drug_type, '') <> 'BASE'
          AND upper(coalesce(p.route, '')) NOT IN {_strs(abx["excluded_routes"])}"""


def cultures_sql(time_expr: str, positive_expr: str) -> str:
    """``CREATE TABLE cultures``: one row per subject, time, specimen (``time_expr``; date-only samples flagged),
    positive when any row of the sample is (``positive_expr``, aggregated), attached to the stays of ``win``."""
    return f"""
        CREATE TABLE cultures AS
        WITH c AS (
          SELECT subject_id, {time_expr} AS time, charttime IS NULL AS date_only, spec_type_desc AS specimen,
                 bool_or({positive_expr}) AS positive
          FROM raw_microbiologyevents GROUP BY 1, 2, 3, 4
        )
        SELECT w.stay_id, c.time, c.specimen, c.positive, c.date_only AS time_is_date_only
        FROM c JOIN win w ON w.subject_id = c.subject_id AND c.time BETWEEN w.t0 AND w.t1 ORDER BY 1, 2
        """
