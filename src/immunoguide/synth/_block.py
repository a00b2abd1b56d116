"""One block of :data:`~immunoguide.synth.BLOCK_STAYS` stays: draw the stays, run the emitters and the fault injection
on the block's own random streams, number the rows across blocks and build the block's Arrow tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from immunoguide.synth._catalogue import BAD_ROW_KINDS
from immunoguide.synth._faults import _bad_chart, _bad_detail, _bad_input, _bad_lab, _bad_output
from immunoguide.synth._hosp_events import _lab_columns, _labevents, _micro_and_rx
from immunoguide.synth._icu_events import (
    _chart_cols,
    _chart_columns,
    _chartevents,
    _input_columns,
    _inputevents,
    _output_columns,
    _outputevents,
    _proc_columns,
    _procedureevents,
)
from immunoguide.synth._model import _Cfg, _draw_stays, _rng, _Stays
from immunoguide.synth._stay_tables import _stay_tables, _truth_table
from immunoguide.synth._tables import SCHEMAS, _finish, _sort_perm

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
    _chart_columns(chart)
    _bad_lab(brng, lab, cfg.bad_row_rate)
    _lab_columns(lab, lab_texts)
    _bad_input(brng, inp, cfg.bad_row_rate)
    _input_columns(inp)
    _bad_output(brng, outp, st, cfg.bad_row_rate)
    _output_columns(outp)
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
