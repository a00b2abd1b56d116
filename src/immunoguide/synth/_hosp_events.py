"""Emitters of the ``hosp/`` event tables from the latent stays: ``labevents`` (panels, blood gases, ferritin and the
synthetic HLA-DR), ``microbiologyevents`` and ``prescriptions`` with the antibiotic ``inputevents`` paired in time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from immunoguide.synth._catalogue import (
    _ABS,
    _D_BACI,
    _D_CEFA,
    _D_CEFE,
    _D_ERYO,
    _D_ISOD,
    _D_VANC,
    _DAY,
    _DRUGS,
    _H,
    _LAB_ITEMS,
    _NAT,
    _ORG_BY_SOURCE,
    _ORG_CARDIO,
    _ORG_COAG,
    _ORG_LIVER,
    _ORG_RENAL,
    _ORG_RESP,
    _ORGS,
    _PROVIDERS,
    _REGIMENS,
    _ROUTINE_DRUGS,
    _SPEC,
    _SPEC_KEYS,
    FERRITIN_ITEMID,
    HLA_DR_COMMENT,
    HLA_DR_ITEMID,
)
from immunoguide.synth._icu_events import _ChartParts, _fio2_percent, _input_common, _lookup
from immunoguide.synth._model import _Cfg, _endotype_draws, _grid, _levels, _minute, _sigmoid, _Stays, _u
from immunoguide.synth._tables import _cat, _numtext

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
