"""Emitters of the ``icu/`` event tables from the latent stays: ``chartevents`` (vitals, GCS, ventilation settings,
bedside labs), ``inputevents`` (vasopressors with rate changes, propofol, fluids), ``procedureevents`` (ventilation)
and ``outputevents`` (urine). Each returns internal columns; ``*_columns`` turns them into MIMIC-IV's value columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from immunoguide.synth._catalogue import (
    _CHART_TEXTS,
    _H,
    _NAT,
    _ORG_CARDIO,
    _ORG_CNS,
    _ORG_RENAL,
    _ORG_RESP,
    _TX_ETT,
    _TX_EYE,
    _TX_MOTOR,
    _TX_O2,
    _TX_RHYTHM,
    _TX_VENT,
    _TX_VERBAL,
    _VENT_MODES,
)
from immunoguide.synth._model import (
    _ceil_minute,
    _grid,
    _levels,
    _merge_runs,
    _minute,
    _per_stay_interval,
    _runs,
    _sigmoid,
    _Stays,
    _u,
)
from immunoguide.synth._tables import _cat, _numtext

# --------------------------------------------------------------------------------------------------------------
# chartevents
# --------------------------------------------------------------------------------------------------------------


class _ChartParts:
    """Accumulates chartevents rows as numpy pieces: stay, time, itemid, valuenum, text index."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, s: np.ndarray, t: np.ndarray, item: Any, num: np.ndarray, text: np.ndarray | None = None) -> None:
        k = len(s)
        self.parts.append(
            (
                s,
                t,
                np.broadcast_to(np.asarray(item, np.int32), (k,)).copy(),
                np.asarray(num, np.float64),
                np.full(k, -1, np.int16) if text is None else np.asarray(text).astype(np.int16),
            )
        )


_CHART_UOMS = ("bpm", "mmHg", "insp/min", "%", "°F", "°C", "cmH2O", "kg", "mg/dL", "K/uL", "mL")
_CHART_UOM_OF = {
    220045: 0,
    220046: 0,
    220047: 0,
    220050: 1,
    220051: 1,
    220052: 1,
    220179: 1,
    220180: 1,
    220181: 1,
    225312: 1,
    220210: 2,
    224690: 2,
    220277: 3,
    223769: 3,
    223770: 3,
    223761: 4,
    223762: 5,
    220339: 6,
    226512: 7,
    220615: 8,
    225690: 8,
    227457: 9,
    224685: 10,
}


def _chartevents(rng: np.random.Generator, st: _Stays) -> tuple[_ChartParts, dict[str, np.ndarray]]:
    n = st.n
    cp = _ChartParts()
    add = cp.add
    t_in = _ceil_minute(st.intime)

    # hourly grid (heart rate defines the charted span of the stay); every 30 min while haemodynamically unstable
    start = t_in + 60 * rng.integers(0, 20, n)
    end = np.maximum(_minute(st.outtime - rng.integers(0, 20 * 60, n)), start)
    hs, ht = _grid(rng, start, end, 3600.0, jitter=8 * 60, drop=0.04, keep_ends=True, include_end=True)
    ht = _minute(ht)
    lv = _levels(st, hs, ht)
    unstable = lv[:, _ORG_CARDIO] > 0.45
    hs_x, ht_x = hs[unstable], ht[unstable] + 30 * 60
    inside = ht_x < end[hs_x]
    vs_s = np.concatenate([hs, hs_x[inside]])
    vs_t = np.concatenate([ht, ht_x[inside]])
    vlv = np.concatenate([lv, _levels(st, hs_x[inside], ht_x[inside])])
    m = len(vs_s)
    off_hr = rng.normal(0, 8, n)
    hr_val = np.round(np.clip(78 + 35 * vlv[:, _ORG_CARDIO] + off_hr[vs_s] + rng.normal(0, 6, m), 30, 190))
    add(vs_s, vs_t, 220045, hr_val)
    af = st.comorb[:, 6]
    rhythm = np.where(af[vs_s] & (rng.random(m) < 0.9), 3, np.select([hr_val > 100, hr_val < 60], [1, 2], 0))
    keep = rng.random(m) >= 0.1
    add(vs_s[keep], vs_t[keep], 220048, np.full(keep.sum(), np.nan), _TX_RHYTHM + rhythm[keep])
    keep = rng.random(m) >= 0.05
    add(
        vs_s[keep],
        vs_t[keep],
        220210,
        np.round(np.clip(16 + 12 * vlv[keep, _ORG_RESP] + rng.normal(0, 3, keep.sum()), 6, 50)),
    )
    keep = rng.random(m) >= 0.05
    add(
        vs_s[keep],
        vs_t[keep],
        220277,
        np.round(np.clip(98 - 7 * vlv[keep, _ORG_RESP] + rng.normal(0, 1.5, keep.sum()), 70, 100)),
    )
    # blood pressure: arterial line (220052, or 225312 for some stays) or non-invasive; MAP held near 65-70 on pressors
    off_map = rng.normal(0, 6, n)
    map_val = np.clip(85 - 36 * np.minimum(vlv[:, _ORG_CARDIO], 0.45) + off_map[vs_s] + rng.normal(0, 5, m), 35, 160)
    pp = np.clip(rng.normal(45, 8, m), 20, 90)
    sbp, dbp = np.round(map_val + 2 * pp / 3), np.round(map_val - pp / 3)
    map_val = np.round(map_val)
    keep = rng.random(m) >= 0.05
    art = st.art_line[vs_s] & keep
    art_item = np.where(rng.random(n) < 0.08, 225312, 220052)
    add(vs_s[art], vs_t[art], art_item[vs_s[art]], map_val[art])
    add(vs_s[art], vs_t[art], 220050, sbp[art])
    add(vs_s[art], vs_t[art], 220051, dbp[art])
    nibp = ~st.art_line[vs_s] & keep
    add(vs_s[nibp], vs_t[nibp], 220181, map_val[nibp])
    add(vs_s[nibp], vs_t[nibp], 220179, sbp[nibp])
    add(vs_s[nibp], vs_t[nibp], 220180, dbp[nibp])

    # airway / ventilation from the hourly levels
    airway = np.maximum(lv[:, _ORG_RESP], 0.8 * lv[:, _ORG_CNS])
    thr = 0.55 + rng.normal(0, 0.05, n)
    rs, r0, r1, _ = _runs(hs, ht, airway > thr[hs])
    long_enough = (r1 - r0) >= 2 * _H
    vs, ve = _per_stay_interval(n, rs[long_enough], r0[long_enough], r1[long_enough])
    ve = np.where(ve == _NAT, _NAT, np.minimum(ve + (_u(rng, 0, 8, n) * _H).astype(np.int64), st.outtime))
    vs = np.where(vs == _NAT, _NAT, np.maximum(vs - (_u(rng, 0, 1, n) * _H).astype(np.int64), t_in))
    st.vent_start, st.vent_end = _minute(vs), _minute(ve)
    ns_, n0, n1, _ = _runs(hs, ht, (airway > 0.38) & (airway <= thr[hs]))
    ok = (n1 - n0) >= 2 * _H
    nvs, nve = _per_stay_interval(n, ns_[ok], n0[ok], n1[ok])
    use_niv = (nvs != _NAT) & (st.vent_start == _NAT) & (rng.random(n) < 0.5)
    st.niv_start = np.where(use_niv, _minute(nvs), _NAT)
    st.niv_end = np.where(use_niv, _minute(np.minimum(nve, nvs + 48 * _H)), _NAT)

    def on_vent(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (st.vent_start[s] != _NAT) & (t >= st.vent_start[s]) & (t <= st.vent_end[s])

    def on_niv(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (st.niv_start[s] != _NAT) & (t >= st.niv_start[s]) & (t <= st.niv_end[s])

    # ventilator-measured respiratory rate and tidal volume, hourly while intubated
    v1 = on_vent(hs, ht) & (rng.random(len(hs)) >= 0.1)
    add(hs[v1], ht[v1], 224690, np.round(np.clip(18 + 10 * lv[v1, _ORG_RESP] + rng.normal(0, 3, v1.sum()), 8, 40)))
    add(hs[v1], ht[v1], 224685, np.round(np.clip(rng.normal(6.5, 1.0, v1.sum()) * (st.weight[hs[v1]] * 0.8), 150, 900)))

    # 4-hourly grid: temperature, GCS, NIBP cross-checks, ventilator settings, O2 device, alarm limits
    fs, ft = _grid(rng, t_in + 60 * rng.integers(0, 90, n), st.outtime, 4 * 3600.0, jitter=30 * 60, drop=0.05)
    ft = _minute(ft)
    lv4 = _levels(st, fs, ft)
    k4 = len(fs)
    h_on = (ft - st.event_time[fs]) / _H
    fever = st.infected[fs] * _sigmoid((h_on - 2) / 2) * np.exp(-np.clip(h_on - 48, 0, None) / 24)
    temp_c = 36.9 + 1.4 * fever + rng.normal(0, 0.35, k4)
    is_f = st.temp_f[fs]
    add(fs[~is_f], ft[~is_f], 223762, np.round(temp_c[~is_f], 1))
    add(fs[is_f], ft[is_f], 223761, np.round(temp_c[is_f] * 9 / 5 + 32, 1))
    cross = st.art_line[fs] & (rng.random(k4) < 0.5)
    m4 = np.clip(85 - 36 * np.minimum(lv4[:, _ORG_CARDIO], 0.45) + off_map[fs] + rng.normal(0, 6, k4), 35, 160)
    add(fs[cross], ft[cross], 220181, np.round(m4[cross]))
    # GCS: worse with CNS dysfunction and while intubated and sedated
    vent4 = on_vent(fs, ft)
    f = np.clip((lv4[:, _ORG_CNS] - 0.1) / 0.9 + 0.25 * vent4 + rng.normal(0, 0.06, k4), 0, 1)
    eye = np.clip(4 - np.round(3 * f), 1, 4).astype(np.int16)
    verbal = np.clip(5 - np.round(4 * f), 1, 5).astype(np.int16)
    motor = np.clip(6 - np.round(5 * f), 1, 6).astype(np.int16)
    gk = [rng.random(k4) >= 0.03 for _ in range(3)]
    add(fs[gk[0]], ft[gk[0]], 220739, eye[gk[0]], _TX_EYE + eye[gk[0]] - 1)
    vtext = np.where(vent4, _TX_ETT, _TX_VERBAL + verbal - 1)
    vnum = np.where(vent4, 1, verbal)
    add(fs[gk[1]], ft[gk[1]], 223900, vnum[gk[1]], vtext[gk[1]])
    add(fs[gk[2]], ft[gk[2]], 223901, motor[gk[2]], _TX_MOTOR + motor[gk[2]] - 1)
    add(
        fs[vent4],
        ft[vent4],
        223849,
        np.full(vent4.sum(), np.nan),
        _TX_VENT + rng.choice(len(_VENT_MODES), vent4.sum(), p=[0.5, 0.2, 0.25, 0.05]),
    )
    add(
        fs[vent4],
        ft[vent4],
        220339,
        np.round(np.clip(5 + 8 * lv4[vent4, _ORG_RESP] + rng.normal(0, 1.5, vent4.sum()), 5, 20)),
    )
    niv4 = on_niv(fs, ft)
    air4 = np.maximum(lv4[:, _ORG_RESP], 0.8 * lv4[:, _ORG_CNS])
    device = np.select([vent4, niv4, air4 > 0.4, air4 > 0.2], [0, 1, 2, 3], 4)
    dk = rng.random(k4) < 0.7
    add(fs[dk], ft[dk], 226732, np.full(dk.sum(), np.nan), _TX_O2 + device[dk])
    al = rng.random(k4) < 0.5
    add(fs[al], ft[al], 220046, np.full(al.sum(), 120.0))
    add(fs[al], ft[al], 220047, np.full(al.sum(), 50.0))
    add(fs[al], ft[al], 223769, np.full(al.sum(), 100.0))
    add(fs[al], ft[al], 223770, np.where(st.comorb[fs[al], 4], 88.0, 92.0))

    # FiO2 (percent), 2-hourly while on respiratory support or with hypoxaemia
    ts_, tt_ = _grid(rng, t_in + 60 * rng.integers(0, 60, n), st.outtime, 2 * 3600.0, jitter=20 * 60)
    tt_ = _minute(tt_)
    lv2 = _levels(st, ts_, tt_)
    supp = on_vent(ts_, tt_) | on_niv(ts_, tt_) | (lv2[:, _ORG_RESP] > 0.3)
    supp &= rng.random(len(ts_)) >= 0.1
    fio2 = _fio2_percent(lv2[supp, _ORG_RESP], rng)
    frac = rng.random(supp.sum()) < 0.02  # charted as a fraction (MIMIC quirk; mimic-code multiplies by 100)
    add(ts_[supp], tt_[supp], 223835, np.where(frac, fio2 / 100, fio2))
    # admission weight
    add(np.arange(n), t_in + 60 * rng.integers(0, 120, n), 226512, st.weight)
    return cp, {"s": hs, "t": ht, "cardio": lv[:, _ORG_CARDIO]}


def _chart_cols(rng: np.random.Generator, cp: _ChartParts) -> dict[str, Any]:
    s = np.concatenate([p[0] for p in cp.parts])
    t = np.concatenate([p[1] for p in cp.parts])
    k = len(s)
    item = np.concatenate([p[2] for p in cp.parts])
    return {
        "_s": s,
        "charttime": t,
        "itemid": item,
        "_num": np.concatenate([p[3] for p in cp.parts]),
        "_text": np.concatenate([p[4] for p in cp.parts]),
        "_uom": _lookup(item, _CHART_UOM_OF, -1),
        "caregiver_id": rng.integers(10_000, 99_999, k),
        "storetime": t + rng.integers(60, 90 * 60, k),
        "warning": (rng.random(k) < 0.005).astype(np.int16),
    }


def _fio2_percent(l_resp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clinician-set FiO2 (%) for a respiratory-dysfunction level: 21 … 100 in steps of 5."""
    raw = 21 + 79 * np.clip((l_resp - 0.15) / 0.75 + rng.normal(0, 0.05, len(l_resp)), 0, 1)
    return np.clip(np.round(raw / 5) * 5, 21, 100)


def _lookup(keys: np.ndarray, mapping: Mapping[int, int], default: int) -> np.ndarray:
    ks = np.array(sorted(mapping), dtype=np.int64)
    vs = np.array([mapping[k] for k in ks], dtype=np.int64)
    pos = np.clip(np.searchsorted(ks, keys), 0, len(ks) - 1)
    return np.where(ks[pos] == keys, vs[pos], default)


def _chart_columns(cols: dict[str, Any]) -> None:
    """Turn chartevents' internal columns into value / valuenum / valueuom."""
    num, text, uom = cols.pop("_num"), cols.pop("_text"), cols.pop("_uom")
    pool_u = pa.array(list(_CHART_UOMS))
    cols["value"] = lambda p: _numtext(num[p], text[p], _CHART_TEXTS)
    cols["valuenum"] = num
    cols["valueuom"] = lambda p: _cat(pool_u, uom[p])


# --------------------------------------------------------------------------------------------------------------
# inputevents (vasopressors with rate changes, propofol, fluids) and procedureevents (ventilation)
# --------------------------------------------------------------------------------------------------------------

_PRESSOR_RATE = {  # itemid -> (rateuom, amountuom, base rate, slope per unit of cardiovascular level above onset)
    221906: ("mcg/kg/min", "mg", 0.03, 0.8),
    221289: ("mcg/kg/min", "mg", 0.02, 0.3),
    221662: ("mcg/kg/min", "mg", 3.0, 20.0),
    221653: ("mcg/kg/min", "mg", 2.5, 10.0),
    222315: ("units/hour", "units", 2.4, 0.0),
    222168: ("mcg/kg/min", "mg", 20.0, 40.0),
}


def _inputevents(rng: np.random.Generator, st: _Stays, hr: dict[str, np.ndarray]) -> dict[str, Any]:
    n = st.n
    hs, ht, cardio = hr["s"], hr["t"], hr["cardio"]
    noisy = cardio + rng.normal(0, 0.02, len(hs))
    thr = 0.5 + rng.normal(0, 0.03, n)
    first = rng.choice(3, n, p=[0.85, 0.1, 0.05])  # norepinephrine / dopamine / epinephrine first line
    first_item = np.array([221906, 221662, 221289])[first]
    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = []  # stay, start, end, item, onset

    rs, r0, r1, npts = _merge_runs(*_runs(hs, ht, noisy > thr[hs]), gap=4 * _H)
    tail = (_u(rng, 0, 50, len(rs)) * 60).astype(np.int64)
    dur = np.where(npts == 1, (_u(rng, 10, 55, len(rs)) * 60).astype(np.int64), r1 - r0 + tail)
    episodes.append((rs, r0, r0 + dur, first_item[rs], 0.45))
    st.pressors = np.zeros(n, bool)
    st.pressors[rs] = True
    # second agent (vasopressin or epinephrine) when very unstable
    second = np.where(rng.random(n) < 0.5, 222315, 221289)
    s2, a0, a1, np2 = _merge_runs(*_runs(hs, ht, noisy > thr[hs] + 0.3), gap=4 * _H)
    ok = np2 >= 2
    episodes.append((s2[ok], a0[ok], a1[ok], second[s2[ok]], 0.75))
    # dobutamine for some pressor stays (low output)
    dob = rng.random(n) < 0.08
    s3, b0, b1, np3 = _merge_runs(*_runs(hs, ht, (noisy > thr[hs] + 0.1) & dob[hs]), gap=4 * _H)
    episodes.append((s3, b0, b1 + 30 * 60, np.full(len(s3), 221653), 0.55))
    # propofol while intubated
    vent = np.flatnonzero((st.vent_start != _NAT) & (rng.random(n) < 0.75))
    episodes.append(
        (
            vent,
            st.vent_start[vent] + 15 * 60,
            np.maximum(st.vent_end[vent] - 30 * 60, st.vent_start[vent] + 45 * 60),
            np.full(len(vent), 222168),
            0.0,
        )
    )

    # split every episode into segments (rate changes every 1-4 h) sharing a link id
    es = np.concatenate([e[0] for e in episodes])
    e0 = _minute(np.concatenate([e[1] for e in episodes]))
    e1 = _minute(np.concatenate([e[2] for e in episodes]))
    e1 = np.maximum(e1, e0 + 10 * 60)
    e1 = np.minimum(e1, np.maximum(st.outtime[es], e0 + 10 * 60))
    eitem = np.concatenate([e[3] for e in episodes])
    eon = np.concatenate([np.full(len(e[0]), e[4]) for e in episodes])
    step = _u(rng, 1.0, 4.0, len(es)) * _H
    seg_e, seg_t = _grid(rng, e0, e1 - 1, step, jitter=20 * 60)
    seg_t[np.r_[True, seg_e[1:] != seg_e[:-1]]] = e0[seg_e[np.r_[True, seg_e[1:] != seg_e[:-1]]]]
    seg_t = _minute(seg_t)
    nxt_same = np.r_[seg_e[1:] == seg_e[:-1], False]
    seg_end = np.where(nxt_same, np.r_[seg_t[1:], 0], e1[seg_e])
    good = seg_end > seg_t
    seg_e, seg_t, seg_end, nxt_same = seg_e[good], seg_t[good], seg_end[good], nxt_same[good]
    s = es[seg_e]
    item = eitem[seg_e]
    lc = _levels(st, s, seg_t)[:, _ORG_CARDIO]
    rate = np.empty(len(s))
    rateuom = np.empty(len(s), np.int64)
    amountuom = np.empty(len(s), np.int64)
    upool = ["mcg/kg/min", "units/hour", "mg/kg/min", "mL/hour"]
    apool = ["mg", "units", "mL", "dose"]
    for it, (ru, au, r0_, slope) in _PRESSOR_RATE.items():
        m = item == it
        over = np.clip(lc[m] - eon[seg_e][m], 0, 1)
        r = (r0_ + slope * over) * np.exp(rng.normal(0, 0.15, m.sum()))
        rate[m] = np.round(r, 3 if r0_ < 1 else 1)
        rateuom[m] = upool.index(ru)
        amountuom[m] = apool.index(au)
    rate = rate.astype(np.float32).astype(np.float64)  # MetaVision stores single precision (e.g. 0.0500000007450581)
    minutes = (seg_end - seg_t) / 60.0
    per_kg = rateuom == 0
    w = st.weight[s]
    amount = np.where(per_kg, rate * w * minutes / 1000.0, rate * minutes / 60.0)
    status = np.where(
        nxt_same, 0, np.where(rng.random(len(s)) < 0.2, 2, 1)
    )  # ChangeDose/Rate, FinishedRunning, Stopped
    k = len(s)
    pressor_cols: dict[str, Any] = {
        "_s": s,
        "starttime": seg_t,
        "endtime": seg_end,
        "itemid": item.astype(np.int32),
        "amount": amount,
        "_amountuom": amountuom,
        "rate": rate,
        "_rateuom": rateuom,
        "_link": seg_e.astype(np.int64),
        "_cat": np.where(item == 222168, 1, 0),
        "totalamount": np.full(k, 250.0),
        "_status": status,
    }
    # fluid boluses early in shock: 1-3 x NaCl 0.9 % 500/1000 mL (no rate)
    nb = np.where(st.pressors | (rng.random(n) < 0.3), rng.integers(1, 4, n), 0)
    bs = np.repeat(np.arange(n), nb)
    bt = _minute(st.intime[bs] + (_u(rng, 0, 12, len(bs)) * _H).astype(np.int64))
    bt = np.minimum(bt, st.outtime[bs] - 20 * 60)
    vol = np.where(rng.random(len(bs)) < 0.6, 1000.0, 500.0)
    kb = len(bs)
    bolus_cols: dict[str, Any] = {
        "_s": bs,
        "starttime": bt,
        "endtime": bt + (_u(rng, 15, 60, kb) * 60).astype(np.int64) // 60 * 60,
        "itemid": np.full(kb, 225158, np.int32),
        "amount": vol,
        "_amountuom": np.full(kb, 2),
        "rate": np.full(kb, np.nan),
        "_rateuom": np.full(kb, -1),
        "_link": (seg_e.max() + 1 if len(seg_e) else 0) + np.arange(kb),
        "_cat": np.full(kb, 2),
        "totalamount": vol,
        "_status": np.ones(kb, np.int64),
    }
    cols = {k_: np.concatenate([pressor_cols[k_], bolus_cols[k_]]) for k_ in pressor_cols}
    return _input_common(rng, st, cols)


def _input_common(rng: np.random.Generator, st: _Stays, cols: dict[str, Any]) -> dict[str, Any]:
    k = len(cols["_s"])
    s = cols["_s"]
    cols["caregiver_id"] = rng.integers(10_000, 99_999, k)
    cols["storetime"] = cols["starttime"] + rng.integers(0, 45 * 60, k)
    cols["patientweight"] = st.weight[s]
    cols["isopenbag"] = (cols["_cat"] == 2).astype(np.int16)
    cols["continueinnextdept"] = np.zeros(k, np.int16)
    cols["originalamount"] = cols["amount"].copy()
    cols["originalrate"] = cols["rate"].copy()
    cols["_bad"] = np.full(k, -1, np.int8)
    return cols


def _input_columns(cols: dict[str, Any]) -> None:
    au, ru, cat, status = (cols.pop(k) for k in ("_amountuom", "_rateuom", "_cat", "_status"))
    cols["amountuom"] = lambda p: _cat(pa.array(["mg", "units", "mL", "dose"]), au[p])
    cols["rateuom"] = lambda p: _cat(pa.array(["mcg/kg/min", "units/hour", "mg/kg/min", "mL/hour"]), ru[p])
    cols["ordercategoryname"] = lambda p: _cat(
        pa.array(["01-Drips", "02-Fluids (Crystalloids)", "03-IV Fluid Bolus", "08-Antibiotics (IV)"]),
        np.select([cat[p] == 0, cat[p] == 1, cat[p] == 2], [0, 0, 2], 3),
    )
    cols["secondaryordercategoryname"] = lambda p: _cat(
        pa.array(["Additive", "Additives (Ivpb)"]), np.select([cat[p] <= 1, cat[p] == 3], [0, 1], -1)
    )
    cols["ordercomponenttypedescription"] = lambda p: _cat(
        pa.array(["Main order parameter", "Additive"]), np.zeros(len(p), np.int64)
    )
    cols["ordercategorydescription"] = lambda p: _cat(
        pa.array(["Continuous Med", "Bolus", "Drug Push", "Intermittent"]),
        np.select([cat[p] <= 1, cat[p] == 2], [0, 1], 3),
    )
    total = cols["totalamount"]
    cols["totalamountuom"] = lambda p: _cat(pa.array(["mL"]), np.where(np.isnan(total[p]), -1, 0))
    cols["statusdescription"] = lambda p: _cat(pa.array(["ChangeDose/Rate", "FinishedRunning", "Stopped"]), status[p])


def _procedureevents(rng: np.random.Generator, st: _Stays) -> dict[str, Any]:
    inv = np.flatnonzero(st.vent_start != _NAT)
    niv = np.flatnonzero(st.niv_start != _NAT)
    s = np.concatenate([inv, niv])
    t0 = np.concatenate([st.vent_start[inv], st.niv_start[niv]])
    t1 = np.concatenate([st.vent_end[inv], st.niv_end[niv]])
    item = np.concatenate([np.full(len(inv), 225792), np.full(len(niv), 225794)]).astype(np.int32)
    k = len(s)
    return {
        "_s": s,
        "starttime": t0,
        "endtime": t1,
        "itemid": item,
        "value": (t1 - t0) / 60.0,
        "_link": np.arange(k, dtype=np.int64),
        "caregiver_id": rng.integers(10_000, 99_999, k),
        "storetime": t1 + rng.integers(0, 3600, k),
        "patientweight": st.weight[s],
        "isopenbag": np.ones(k, np.int16),
        "continueinnextdept": np.zeros(k, np.int16),
        "originalamount": (t1 - t0) / 60.0,
        "originalrate": np.zeros(k),
        "_died": st.died_in_icu[s] & (t1 >= st.outtime[s] - 60),
    }


def _proc_columns(cols: dict[str, Any]) -> None:
    died = cols.pop("_died")
    k = len(died)
    cols["valueuom"] = lambda p: _cat(pa.array(["min"]), np.zeros(k, np.int64))
    cols["location"] = lambda p: _cat(pa.array(["Mouth"]), np.full(k, -1))
    cols["locationcategory"] = lambda p: _cat(pa.array(["Invasive Venous"]), np.full(k, -1))
    cols["ordercategoryname"] = lambda p: _cat(pa.array(["Ventilation"]), np.zeros(k, np.int64))
    cols["ordercategorydescription"] = lambda p: _cat(pa.array(["Task"]), np.zeros(k, np.int64))
    cols["statusdescription"] = lambda p: _cat(pa.array(["FinishedRunning", "Stopped"]), died[p].astype(np.int64))


# --------------------------------------------------------------------------------------------------------------
# outputevents
# --------------------------------------------------------------------------------------------------------------


def _outputevents(rng: np.random.Generator, st: _Stays) -> dict[str, Any]:
    n = st.n
    step = np.where(st.foley, 1.0, _u(rng, 3, 6, n)) * _H
    s, t = _grid(rng, st.intime + rng.integers(20 * 60, 2 * 3600, n), st.outtime, step, jitter=10 * 60, drop=0.08)
    t = _minute(t)
    prev_same = np.r_[False, s[1:] == s[:-1]]
    interval_h = np.where(prev_same, (t - np.r_[t[:1], t[:-1]]) / _H, step[s] / _H)
    lv = _levels(st, s, t)
    rate = 70 * np.exp(-2.8 * lv[:, _ORG_RENAL]) * np.exp(rng.normal(0, 0.35, len(s)))
    vol = np.maximum(np.round(rate * np.clip(interval_h, 0.25, 8) / 5) * 5, 0)
    item = np.where(st.foley[s], 226559, np.where(rng.random(len(s)) < 0.9, 226560, 226561))
    item = np.where(rng.random(len(s)) < 0.01, 226567, item)
    irr = st.irrigation[s]
    irrigant = np.round(_u(rng, 100, 400, len(s)) / 10) * 10
    # GU irrigation: irrigant in (227488) and irrigant + urine out (227489)
    item = np.where(irr, 227489, item)
    vol = np.where(irr, vol + irrigant, vol)
    s_all = np.concatenate([s, s[irr]])
    t_all = np.concatenate([t, t[irr]])
    item_all = np.concatenate([item, np.full(irr.sum(), 227488)]).astype(np.int32)
    vol_all = np.concatenate([vol, irrigant[irr]])
    k = len(s_all)
    return {
        "_s": s_all,
        "charttime": t_all,
        "itemid": item_all,
        "value": vol_all,
        "caregiver_id": rng.integers(10_000, 99_999, k),
        "storetime": t_all + rng.integers(60, 3600, k),
        "_bad": np.full(k, -1, np.int8),
    }


def _output_columns(cols: dict[str, Any]) -> None:
    """outputevents' unit column (every output is in mL)."""
    cols["valueuom"] = lambda p: _cat(pa.array(["mL"]), np.zeros(len(p), np.int64))
