"""Stay-level tables (``patients``, ``admissions``, ``diagnoses_icd``, ``icustays``) and the ``_truth/stays`` sidecar."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from immunoguide.synth._catalogue import (
    _ANCHOR_GROUPS,
    _CAREUNITS,
    _DAY,
    _ICD_COMORB,
    _ICD_NONINF,
    _ICD_SEPSIS,
    _ICD_SEPTIC_SHOCK,
    _ICD_SEVERE_SEPSIS,
    _ICD_SOURCE,
    _NAT,
    _PROVIDERS,
    BAD_ROW_KINDS,
    ENDOTYPES,
    SOURCES,
)
from immunoguide.synth._model import _Cfg, _Stays
from immunoguide.synth._tables import _cat, _finish

# --------------------------------------------------------------------------------------------------------------
# Stay-level tables and truth
# --------------------------------------------------------------------------------------------------------------


def _stay_tables(rng: np.random.Generator, st: _Stays) -> dict[str, pa.Table]:
    n = st.n
    idx = np.arange(n)
    g0 = int(st.g[0])
    out: dict[str, pa.Table] = {}
    fs = np.flatnonzero(st.first_of_subject)
    # dod belongs to the subject: take it from the subject's last stay
    subj = np.cumsum(st.first_of_subject) - 1
    dod = np.full(len(fs), _NAT)
    np.maximum.at(dod, subj, st.dod_days)
    out["patients"] = _finish(
        "patients",
        {
            "subject_id": st.subject_id[fs],
            "gender": _cat(["M", "F"], st.female[fs].astype(np.int64)),
            "anchor_age": st.anchor_age[fs].astype(np.int16),
            "anchor_year": st.anchor_year[fs].astype(np.int16),
            "anchor_year_group": _cat(_ANCHOR_GROUPS, st.anchor_group[fs]),
            "dod": dod,
        },
        fs,
        np.zeros(len(fs), np.int64),
        g0,
    )
    dloc = np.where(st.died, 0, rng.choice(5, n, p=[0.45, 0.2, 0.2, 0.1, 0.05]) + 1)
    out["admissions"] = _finish(
        "admissions",
        {
            "subject_id": st.subject_id,
            "hadm_id": st.hadm_id,
            "admittime": st.admittime,
            "dischtime": st.dischtime,
            "deathtime": st.deathtime,
            "admission_type": _cat(
                ["EW EMER.", "URGENT", "DIRECT EMER.", "ELECTIVE", "OBSERVATION ADMIT"],
                np.where(st.ed, rng.choice([0, 4], n, p=[0.85, 0.15]), rng.choice([1, 2, 3], n, p=[0.5, 0.3, 0.2])),
            ),
            "admit_provider_id": _cat(_PROVIDERS, rng.integers(0, len(_PROVIDERS), n)),
            "admission_location": _cat(
                ["EMERGENCY ROOM", "TRANSFER FROM HOSPITAL", "PHYSICIAN REFERRAL"],
                np.where(st.ed, 0, rng.choice([1, 2], n)),
            ),
            "discharge_location": _cat(
                ["DIED", "HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB", "HOSPICE"], dloc
            ),
            "insurance": _cat(["Medicare", "Medicaid", "Other"], rng.choice(3, n, p=[0.45, 0.1, 0.45])),
            "language": _cat(["ENGLISH", "?"], (rng.random(n) < 0.1).astype(np.int64)),
            "marital_status": _cat(
                ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED"],
                np.where(rng.random(n) < 0.05, -1, rng.choice(4, n, p=[0.45, 0.3, 0.15, 0.1])),
            ),
            "race": _cat(
                ["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN", "OTHER", "UNKNOWN"],
                rng.choice(6, n, p=[0.65, 0.12, 0.05, 0.04, 0.06, 0.08]),
            ),
            "edregtime": st.edregtime,
            "edouttime": st.edouttime,
            "hospital_expire_flag": st.died.astype(np.int16),
        },
        idx,
        st.admittime,
        g0,
    )
    last = np.where(rng.random(n) < 0.9, st.careunit, rng.integers(0, len(_CAREUNITS), n))
    out["icustays"] = _finish(
        "icustays",
        {
            "subject_id": st.subject_id,
            "hadm_id": st.hadm_id,
            "stay_id": st.stay_id,
            "first_careunit": _cat(_CAREUNITS, st.careunit),
            "last_careunit": _cat(_CAREUNITS, last),
            "intime": st.intime,
            "outtime": st.outtime,
            "los": (st.outtime - st.intime) / _DAY,
        },
        idx,
        st.intime,
        g0,
    )
    # diagnoses: infection codes first for infected stays, then the admitting problem and comorbidities
    codes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # stay, code index into table, priority

    table: list[tuple[str, str]] = []

    def code_id(pair: tuple[str, str]) -> int:
        if pair not in table:
            table.append(pair)
        return table.index(pair)

    inf = np.flatnonzero(st.infected)
    septic = st.infected & (st.severity > 0.35)
    shock = st.infected & (st.severity > 0.55)
    m = np.flatnonzero(septic)
    codes.append((m, np.full(len(m), code_id(_ICD_SEPSIS)), np.full(len(m), 0)))
    src_ids = np.array([code_id(_ICD_SOURCE[i]) for i in range(4)])
    codes.append((inf, src_ids[st.source[inf]], np.full(len(inf), 1)))
    m = np.flatnonzero(septic & ~shock)
    codes.append((m, np.full(len(m), code_id(_ICD_SEVERE_SEPSIS)), np.full(len(m), 2)))
    m = np.flatnonzero(shock)
    codes.append((m, np.full(len(m), code_id(_ICD_SEPTIC_SHOCK)), np.full(len(m), 2)))
    non = np.flatnonzero(~st.infected)
    ni_ids = np.array([code_id(p) for p in _ICD_NONINF])
    codes.append((non, ni_ids[st.noninf_reason[non]], np.full(len(non), 0)))
    cm_ids = np.array([code_id(p) for p in _ICD_COMORB])
    cs_, cc_ = np.nonzero(st.comorb)
    codes.append((cs_, cm_ids[cc_], np.full(len(cs_), 3)))
    ds = np.concatenate([c[0] for c in codes])
    dc = np.concatenate([c[1] for c in codes])
    dp = np.concatenate([c[2] for c in codes])
    order = np.lexsort((dp, ds))
    ds, dc = ds[order], dc[order]
    first = np.r_[True, ds[1:] != ds[:-1]]
    grp_start = np.maximum.accumulate(np.where(first, np.arange(len(ds)), 0))
    seq = np.arange(len(ds)) - grp_start + 1
    v10 = st.icd10[ds]
    code10 = np.array([p[0] for p in table])
    code9 = np.array([p[1] for p in table])
    out["diagnoses_icd"] = _finish(
        "diagnoses_icd",
        {
            "subject_id": st.subject_id[ds],
            "hadm_id": st.hadm_id[ds],
            "seq_num": seq.astype(np.int32),
            "icd_code": pa.array(np.where(v10, code10[dc], code9[dc]).tolist(), type=pa.string()),
            "icd_version": np.where(v10, 10, 9).astype(np.int32),
        },
        ds,
        seq.astype(np.int64),
        g0,
    )
    return out


def _truth_table(st: _Stays, cfg: _Cfg, endo: dict[str, np.ndarray], counts: np.ndarray, g0: int) -> pa.Table:
    n = st.n
    idx = np.arange(n)
    cols: dict[str, Any] = {
        "stay_id": st.stay_id,
        "subject_id": st.subject_id,
        "hadm_id": st.hadm_id,
        "seed": np.full(n, cfg.seed, np.int64),
        "infected": st.infected,
        "source": _cat(SOURCES, st.source),
        "onset_kind": _cat(["community", "hospital_ward", "icu"], st.onset_kind),
        "infection_onset": st.onset,
        "severity": np.round(st.severity, 4),
        "ventilated": st.vent_start != _NAT,
        "vasopressors": st.pressors,
        "died": st.died,
        "screened": endo["screened"],
        "screen_time": endo["screen_time"],
        "ferritin_true_ng_per_ml": np.where(endo["screened"], endo["ferritin"], np.nan),
        "ferritin_censored": endo["ferritin_censored"],
        "hla_dr_true_ab_per_cell": np.where(endo["screened"], endo["hla"], np.nan),
        "hla_dr_reported": endo["hla_reported"],
        "endotype_true": _cat(ENDOTYPES[:3], endo["endotype_true"]),
        "endotype_observable": _cat(ENDOTYPES, endo["endotype_observable"]),
        "bad_rows_total": counts.sum(axis=1).astype(np.int32),
    }
    for j, kname in enumerate(BAD_ROW_KINDS):
        cols[f"bad_{kname}"] = counts[:, j].astype(np.int32)
    return _finish("_truth/stays", cols, idx, st.intime, g0)
