"""Fault injection: turn eligible event rows bad (unknown item id, text in a numeric column, implausible value, unit
mismatch, charted before ICU admission) with a given probability, and the ``_truth/bad_rows`` record of each.

Ferritin and HLA-DR rows and the first and last heart rate of each stay are never made bad.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from immunoguide.synth._catalogue import (
    _H,
    _K_BEFORE,
    _K_IMPLAUSIBLE,
    _K_TEXT,
    _K_UNIT,
    _K_UNKNOWN,
    _TX_ERROR,
    _UNKNOWN_CHART_ITEMIDS,
    _UNKNOWN_LAB_ITEMIDS,
    BAD_ROW_KINDS,
    FERRITIN_ITEMID,
    HLA_DR_ITEMID,
)
from immunoguide.synth._model import _minute, _Stays, _u
from immunoguide.synth._tables import SCHEMAS


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
    cols["_bad"] = kinds
