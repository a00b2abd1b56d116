"""The patient / ICU model: settings and their checks, the endotype calibration, random streams and time grids, the
latent stays (severity, infection, onset, organ-dysfunction levels, death, admission and ICU times) and the screening
draws (ferritin, monocyte HLA-DR, censoring, observable endotype). No Arrow and no files here: numpy arrays per block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from immunoguide.errors import InputError
from immunoguide.synth._catalogue import (
    _ANCHOR_GROUPS,
    _CAREUNITS,
    _DAY,
    _H,
    _ICD_COMORB,
    _NAT,
    _ORG_COAG,
    _ORG_LIVER,
    _ORG_RENAL,
    _ORG_RESP,
    ENDOTYPE_PRIORS,
    MALS_FERRITIN_NG_PER_ML,
    SII_HLA_DR_AB_PER_CELL,
)
from immunoguide.synth._tables import LAYOUTS, MIMIC4_VERSIONS


@dataclass(frozen=True)
class _Cfg:
    seed: int
    bad_row_rate: float
    censored_ferritin_rate: float
    ferritin_report_limit: float
    infected_fraction: float
    screen_probability: float
    q_class: tuple[float, float, float]  # latent MALS / SII / unclassified
    hla_missing: float


# --------------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------------


def _make_cfg(
    *,
    stays: int,
    seed: int,
    chunk_stays: int,
    bad_row_rate: float,
    censored_ferritin_rate: float,
    limit: float,
    infected_fraction: float,
    endotype_prior: str,
    layout: str = "parquet-parts",
    mimic_version: str = "2.2",
) -> _Cfg:
    where = "generate_mimic4"

    def check(ok: bool, name: str, expected: str, got: Any) -> None:
        if not ok:
            raise InputError(expected=expected, got=got, where=where, field=name, todo=f"pass a valid {name}")

    check(isinstance(stays, int) and 1 <= stays <= 9_999_999, "stays", "an integer in 1..9,999,999", stays)
    check(isinstance(seed, int) and seed >= 0, "seed", "an integer >= 0", seed)
    check(isinstance(chunk_stays, int) and chunk_stays >= 1, "chunk_stays", "an integer >= 1", chunk_stays)
    check(0.0 <= bad_row_rate <= 0.5, "bad_row_rate", "a probability in [0, 0.5]", bad_row_rate)
    check(
        0.0 <= censored_ferritin_rate <= 1.0,
        "censored_ferritin_rate",
        "a probability in [0, 1]",
        censored_ferritin_rate,
    )
    check(0.0 < limit, "ferritin_report_limit_ng_per_ml", "a positive ferritin limit in ng/mL", limit)
    check(0.0 < infected_fraction < 1.0, "infected_fraction", "a fraction in (0, 1)", infected_fraction)
    check(endotype_prior in ENDOTYPE_PRIORS, "endotype_prior", f"one of {sorted(ENDOTYPE_PRIORS)}", endotype_prior)
    check(layout in LAYOUTS, "layout", f"one of {', '.join(LAYOUTS)}", layout)
    check(mimic_version in MIMIC4_VERSIONS, "mimic_version", f"one of {', '.join(MIMIC4_VERSIONS)}", mimic_version)
    q, m = _calibrate_endotypes(ENDOTYPE_PRIORS[endotype_prior], censored_ferritin_rate, limit)
    return _Cfg(
        seed=seed,
        bad_row_rate=bad_row_rate,
        censored_ferritin_rate=censored_ferritin_rate,
        ferritin_report_limit=limit,
        infected_fraction=infected_fraction,
        screen_probability=0.9,
        q_class=q,
        hla_missing=m,
    )


# Ferritin and HLA-DR distributions (synthetic choices; only the thresholds are protocol facts).
_FERR_LOW_MU, _FERR_LOW_SD = math.log(450.0), 1.0  # non-MALS: log-normal, truncated to <= 4420 ng/mL
_FERR_MALS_SD = 0.7  # MALS: 4420 * exp(|N(0, 0.7)|) ng/mL
_HLA_SII_MU, _HLA_SII_SD = math.log(2600.0), 0.45  # truncated to < 5000 AB/c
_HLA_UNC_MU, _HLA_UNC_SD = math.log(11000.0), 0.5  # truncated to >= 5000 AB/c
_HLA_MALS_MU, _HLA_MALS_SD = math.log(6000.0), 0.7


def _calibrate_endotypes(
    target: tuple[float, float, float], r: float, limit: float
) -> tuple[tuple[float, float, float], float]:
    """Latent class mix and HLA-DR-missing probability so that the *observable* mix matches ``target``.

    A MALS ferritin is censored (hence indeterminate) with probability ``r`` when ``limit`` < 4420 ng/mL; a
    non-MALS ferritin with probability ``r * P(limit < F <= 4420)``; a missing HLA-DR makes a non-MALS stay
    indeterminate. When the target cannot be met (too much censoring), no HLA-DR is missing and the non-MALS
    classes keep their target ratio.

    >>> q, m = _calibrate_endotypes((0.2, 0.4, 0.4), 0.0, 2000.0)
    >>> [round(x, 3) for x in q], round(m, 3)
    ([0.2, 0.4, 0.4], 0.0)
    """
    t_m, t_s, t_u = target
    l_m = r if limit < MALS_FERRITIN_NG_PER_ML else 0.0
    if limit < MALS_FERRITIN_NG_PER_ML:
        b = (math.log(MALS_FERRITIN_NG_PER_ML) - _FERR_LOW_MU) / _FERR_LOW_SD
        a = (math.log(limit) - _FERR_LOW_MU) / _FERR_LOW_SD
        p_hi = float((ndtr(b) - ndtr(a)) / ndtr(b))
    else:
        p_hi = 0.0
    l_n = r * p_hi
    q_m = min(t_m / (1.0 - l_m), 0.999) if l_m < 1 else 0.999
    keep = (t_s + t_u) / ((1.0 - l_n) * (1.0 - q_m)) if l_n < 1 else 2.0
    if keep > 1.0:
        m = 0.0
        q_s = (1.0 - q_m) * t_s / (t_s + t_u)
        q_u = (1.0 - q_m) * t_u / (t_s + t_u)
    else:
        m = 1.0 - keep
        q_s = t_s / ((1.0 - l_n) * (1.0 - m))
        q_u = 1.0 - q_m - q_s
    return (q_m, q_s, q_u), m


# --------------------------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------------------------


def _rng(seed: int, block: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block, stream)))


def _u(rng: np.random.Generator, lo: Any, hi: Any, n: int | None = None) -> np.ndarray:
    return rng.uniform(lo, hi, n)


def _minute(t: np.ndarray) -> np.ndarray:
    """Floor times (s) to the minute, keeping the NULL sentinel."""
    return np.where(t == _NAT, _NAT, t - np.mod(t, 60))


def _ceil_minute(t: np.ndarray) -> np.ndarray:
    """Round times (s) up to the next whole minute."""
    return t + np.mod(-t, 60)


def _grid(
    rng: np.random.Generator,
    start: np.ndarray,
    end: np.ndarray,
    step: np.ndarray | float,
    jitter: float = 0.0,
    drop: float = 0.0,
    keep_ends: bool = False,
    include_end: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-stay times from ``start`` to ``end`` every ``step`` s (± ``jitter`` s), some dropped.

    With ``keep_ends`` the first and last points are never dropped; with ``include_end`` a point at ``end`` is
    added when the regular grid stops more than a quarter step before it. Returns (local stay index, time in s)
    sorted by stay then time.
    """
    step_a = np.broadcast_to(np.asarray(step, dtype=np.float64), start.shape)
    span = np.maximum(end - start, 0).astype(np.float64)
    n = np.floor(span / step_a).astype(np.int64) + 1
    n = np.where(end >= start, n, 0)
    total = int(n.sum())
    rep = np.repeat(np.arange(len(start)), n)
    first = np.cumsum(n) - n
    pos = np.arange(total) - np.repeat(first, n)
    t = start[rep] + (pos * step_a[rep]).astype(np.int64)
    if jitter:
        t = t + rng.uniform(-jitter, jitter, total).astype(np.int64)
        t = np.clip(t, start[rep], end[rep])
    if include_end:
        last_t = np.where(n > 0, start + ((n - 1) * step_a).astype(np.int64), end)
        extra = np.flatnonzero((n > 0) & (end - last_t > step_a / 4))
        rep = np.concatenate([rep, extra])
        t = np.concatenate([t, end[extra]])
        order = np.argsort(rep, kind="stable")
        rep, t = rep[order], t[order]
        n = np.bincount(rep, minlength=len(start))
        first = np.cumsum(n) - n
        total = len(rep)
    keep = np.ones(total, dtype=bool)
    if drop:
        keep = rng.random(total) >= drop
        if keep_ends:
            keep[first[n > 0]] = True
            keep[(first + n - 1)[n > 0]] = True
    return rep[keep], t[keep]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _trunc_lognormal(
    rng: np.random.Generator, n: int, mu: float, sd: float, lo: float | None, hi: float | None
) -> np.ndarray:
    """Log-normal draws truncated to [lo, hi] by inverse CDF (vectorised)."""
    a = ndtr((math.log(lo) - mu) / sd) if lo else 0.0
    b = ndtr((math.log(hi) - mu) / sd) if hi else 1.0
    u = rng.uniform(a, b, n)
    u = np.clip(u, 1e-12, 1 - 1e-12)
    return np.exp(mu + sd * ndtri(u))


# --------------------------------------------------------------------------------------------------------------
# Latent stays
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Stays:
    n: int
    g: np.ndarray
    subject_id: np.ndarray
    hadm_id: np.ndarray
    stay_id: np.ndarray
    first_of_subject: np.ndarray
    female: np.ndarray
    anchor_age: np.ndarray
    anchor_year: np.ndarray
    anchor_group: np.ndarray
    icd10: np.ndarray
    weight: np.ndarray
    severity: np.ndarray
    infected: np.ndarray
    source: np.ndarray
    noninf_reason: np.ndarray
    onset_kind: np.ndarray
    onset: np.ndarray
    event_time: np.ndarray
    plateau_h: np.ndarray
    tau_h: np.ndarray
    base: np.ndarray  # (n, 6)
    amp: np.ndarray  # (n, 6)
    died: np.ndarray
    died_in_icu: np.ndarray
    deathtime: np.ndarray
    dod_days: np.ndarray
    admittime: np.ndarray
    dischtime: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    ed: np.ndarray
    edregtime: np.ndarray
    edouttime: np.ndarray
    careunit: np.ndarray
    comorb: np.ndarray  # (n, 10) bool
    latent_class: np.ndarray  # 0 MALS, 1 SII, 2 unclassified (-1 not infected)
    art_line: np.ndarray
    temp_f: np.ndarray
    foley: np.ndarray
    irrigation: np.ndarray
    # filled in later
    vent_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vent_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    niv_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    niv_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pressors: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


_W_SOURCE = np.array(
    [  # resp, coag, liver, cardio, cns, renal
        [1.0, 0.4, 0.25, 0.7, 0.4, 0.5],  # pneumonia
        [0.5, 0.7, 0.4, 1.0, 0.4, 0.7],  # bacteremia
        [0.35, 0.4, 0.3, 0.8, 0.5, 0.9],  # urinary
        [0.5, 0.5, 0.9, 0.8, 0.3, 0.6],  # abdominal
    ]
)
_W_NONINF = np.array(
    [
        [0.5, 0.3, 0.3, 1.0, 0.4, 0.5],  # cardiac (NSTEMI)
        [0.6, 0.2, 0.1, 0.4, 1.0, 0.2],  # neuro (ICH)
        [0.3, 0.6, 0.5, 0.8, 0.3, 0.5],  # GI bleed
        [1.0, 0.2, 0.2, 0.5, 0.4, 0.4],  # respiratory failure
        [0.7, 0.4, 0.5, 1.0, 0.9, 0.7],  # cardiac arrest
        [0.3, 0.2, 0.2, 0.5, 0.5, 0.8],  # DKA
    ]
)
_NONINF_P = (0.25, 0.2, 0.15, 0.2, 0.08, 0.12)


def _draw_stays(rng: np.random.Generator, cfg: _Cfg, g0: int, n: int) -> _Stays:
    g = np.arange(g0, g0 + n, dtype=np.int64)
    infected = rng.random(n) < cfg.infected_fraction
    source = np.where(infected, rng.choice(4, n, p=[0.45, 0.2, 0.2, 0.15]), -1)
    noninf_reason = rng.choice(len(_NONINF_P), n, p=_NONINF_P)
    severity = np.where(infected, rng.beta(2.2, 2.8, n), rng.beta(1.6, 3.4, n))
    age = np.clip(np.round(rng.normal(64, 16, n)), 18, 91)
    female = rng.random(n) < 0.44
    weight = np.round(np.clip(rng.normal(np.where(female, 72, 86), 18), 38, 180), 1)
    comorb = rng.random((n, len(_ICD_COMORB))) < np.array([0.5, 0.3, 0.0, 0.2, 0.15, 0.15, 0.2, 0.35, 0.15, 0.05])
    latent_class = np.where(infected, rng.choice(3, n, p=np.array(cfg.q_class) / sum(cfg.q_class)), -1)

    # death
    endo_effect = np.select([latent_class == 0, latent_class == 1], [0.9, 0.5], 0.0)
    p_die = _sigmoid(-4.2 + 4.6 * severity + 0.025 * (age - 64) + endo_effect)
    died = rng.random(n) < p_die

    # subjects: ~7 % of admissions are a later admission of the previous stay's (surviving) subject
    readmit = rng.random(n) < 0.07
    readmit[0] = False
    readmit[1:] &= ~died[:-1]
    first_of_subject = ~readmit
    seg = np.cumsum(first_of_subject) - 1
    first_idx = np.flatnonzero(first_of_subject)
    subject_first = first_idx[seg]

    # durations (hours)
    ed = rng.random(n) < 0.7
    pre_h = np.where(ed, _u(rng, 2, 10, n), np.clip(np.exp(rng.normal(math.log(36), 0.8, n)), 12, 400))
    los_h = np.clip(np.exp(rng.normal(math.log(44.0) + 0.9 * severity, 0.75, n)), 6, 45 * 24)
    died_in_icu = died & (rng.random(n) < 0.75)
    post_h = np.where(
        died_in_icu,
        0.0,
        np.where(died, _u(rng, 12, 240, n), np.clip(np.exp(rng.normal(math.log(72), 0.8, n)), 4, 1440)),
    )
    gap_h = np.clip(np.exp(rng.normal(math.log(90 * 24), 1.0, n)), 48, 700 * 24)
    step_s = ((pre_h + los_h + post_h + gap_h) * _H).astype(np.int64)
    cs = np.concatenate([[0], np.cumsum(step_s)[:-1]])
    anchor_year = rng.integers(2110, 2200, n)
    anchor_group = rng.integers(0, len(_ANCHOR_GROUPS), n)
    year0 = np.datetime64("1970-01-01", "Y")
    yr_s = (year0 + (anchor_year - 1970).astype("timedelta64[Y]")).astype("datetime64[s]").astype(np.int64)
    base_s = yr_s + (_u(rng, 0, 2.5, n) * 365.25 * _DAY).astype(np.int64)
    admittime = _minute(base_s[subject_first] + (cs - cs[subject_first]))
    intime = _minute(admittime + (pre_h * _H).astype(np.int64)) + rng.integers(0, 60, n)
    outtime = intime + (los_h * _H).astype(np.int64)
    dischtime = _minute(outtime + (post_h * _H).astype(np.int64)) + np.where(died_in_icu, 0, 60)
    dischtime = np.where(died_in_icu, outtime, dischtime)
    deathtime = np.where(died, dischtime, _NAT)
    edregtime = np.where(ed, _minute(admittime - (_u(rng, 1, 6, n) * _H).astype(np.int64)), _NAT)
    edouttime = np.where(ed, np.minimum(_minute(admittime + (_u(rng, 0, 1, n) * _H).astype(np.int64)), intime), _NAT)

    # subject-level attributes come from the subject's first stay
    female = female[subject_first]
    anchor_age = age[subject_first]
    anchor_year = anchor_year[subject_first]
    anchor_group = anchor_group[subject_first]
    icd10 = np.where(anchor_group <= 1, False, np.where(anchor_group == 2, rng.random(n) < 0.5, True))
    # out-of-hospital death within a year for some survivors (only the subject's last stay can die)
    last_of_subject = np.r_[first_of_subject[1:], True]
    dod_s = np.where(
        died,
        deathtime,
        np.where(
            last_of_subject & (rng.random(n) < 0.08), dischtime + (_u(rng, 1, 365, n) * _DAY).astype(np.int64), _NAT
        ),
    )
    dod_days = np.where(dod_s == _NAT, _NAT, np.floor_divide(dod_s, _DAY))

    # infection onset
    kind = rng.choice(3, n, p=[0.65, 0.15, 0.2])  # community, ward, icu-acquired
    kind = np.where((kind == 1) & (pre_h < 52), 0, kind)
    kind = np.where((kind == 2) & (los_h < 96), 0, kind)
    arrival = np.where(ed, edregtime, admittime)
    onset = np.select(
        [kind == 0, kind == 1],
        [
            arrival - (_u(rng, 0, 24, n) * _H).astype(np.int64),
            admittime + (_u(rng, 48, np.maximum(pre_h - 2, 49), n) * _H).astype(np.int64),
        ],
        intime + (_u(rng, 48, np.maximum(los_h - 36, 49), n) * _H).astype(np.int64),
    )
    onset = np.where(infected, _minute(onset), _NAT)
    event_time = np.where(infected, onset, intime - (_u(rng, 0, 8, n) * _H).astype(np.int64))

    # organ dysfunction
    w = np.where(infected[:, None], _W_SOURCE[np.maximum(source, 0)], _W_NONINF[noninf_reason])
    amp = 1.25 * severity[:, None] * w * np.exp(rng.normal(0, 0.3, (n, 6)))
    base = 0.03 + np.abs(rng.normal(0, 0.04, (n, 6)))
    base[:, _ORG_RENAL] += 0.35 * comorb[:, 5]  # CKD
    base[:, _ORG_LIVER] += 0.45 * comorb[:, 9]  # cirrhosis
    base[:, _ORG_COAG] += 0.3 * comorb[:, 9]
    base[:, _ORG_RESP] += 0.15 * comorb[:, 4]  # COPD

    return _Stays(
        n=n,
        g=g,
        subject_id=(10_000_000 + g0 + subject_first).astype(np.int64),
        hadm_id=20_000_000 + g,
        stay_id=30_000_000 + g,
        first_of_subject=first_of_subject,
        female=female,
        anchor_age=anchor_age,
        anchor_year=anchor_year,
        anchor_group=anchor_group,
        icd10=icd10,
        weight=weight,
        severity=severity,
        infected=infected,
        source=source,
        noninf_reason=noninf_reason,
        onset_kind=np.where(infected, kind, -1),
        onset=onset,
        event_time=event_time,
        plateau_h=_u(rng, 12, 72, n),
        tau_h=_u(rng, 12, 60, n),
        base=base,
        amp=amp,
        died=died,
        died_in_icu=died_in_icu,
        deathtime=deathtime,
        dod_days=dod_days,
        admittime=admittime,
        dischtime=dischtime,
        intime=intime,
        outtime=outtime,
        ed=ed,
        edregtime=edregtime,
        edouttime=edouttime,
        careunit=rng.choice(len(_CAREUNITS), n, p=[0.3, 0.12, 0.2, 0.15, 0.1, 0.08, 0.05]),
        comorb=comorb,
        latent_class=latent_class,
        art_line=rng.random(n) < 0.25 + 0.55 * severity,
        temp_f=rng.random(n) < 0.3,
        foley=rng.random(n) < 0.55 + 0.4 * severity,
        irrigation=rng.random(n) < 0.03,
    )


def _levels(st: _Stays, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Organ-dysfunction levels (rows × 6) at times ``t`` (s) for stays ``idx``."""
    h = (t - st.event_time[idx]) / _H
    rise = _sigmoid((h - 3.0) / 2.5)
    dec = np.exp(-np.clip(h - st.plateau_h[idx], 0, None) / st.tau_h[idx])
    died = st.died[idx]
    prof = rise * np.where(died, 1.0, dec)
    dt = np.where(died, st.deathtime[idx], 0) - t
    ramp = np.where(died, np.clip(1.0 - dt / (36.0 * _H), 0.0, 1.0), 0.0)
    return np.clip(st.base[idx] + st.amp[idx] * prof[:, None] + 0.35 * ramp[:, None], 0.0, 1.3)


def _runs(idx: np.ndarray, t: np.ndarray, above: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of consecutive ``above`` rows per stay: (stay, start time, end time, number of points)."""
    same_prev = np.r_[False, idx[1:] == idx[:-1]]
    same_next = np.r_[idx[1:] == idx[:-1], False]
    start = above & ~(np.r_[False, above[:-1]] & same_prev)
    end = above & ~(np.r_[above[1:], False] & same_next)
    si, ei = np.flatnonzero(start), np.flatnonzero(end)
    return idx[si], t[si], t[ei], ei - si + 1


def _merge_runs(
    stay: np.ndarray, t0: np.ndarray, t1: np.ndarray, npts: np.ndarray, gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge runs of the same stay separated by at most ``gap`` s (clinicians do not stop a drip for one hour)."""
    if len(stay) == 0:
        return stay, t0, t1, npts
    new = np.r_[True, (stay[1:] != stay[:-1]) | (t0[1:] - t1[:-1] > gap)]
    starts = np.flatnonzero(new)
    return stay[starts], t0[starts], np.maximum.reduceat(t1, starts), np.add.reduceat(npts, starts)


def _per_stay_interval(
    n: int, run_stay: np.ndarray, run_start: np.ndarray, run_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First start and last end per stay (``_NAT`` where a stay has no run)."""
    s = np.full(n, np.iinfo(np.int64).max)
    e = np.full(n, _NAT)
    np.minimum.at(s, run_stay, run_start)
    np.maximum.at(e, run_stay, run_end)
    s = np.where(e == _NAT, _NAT, s)
    return s, e


def _endotype_draws(rng: np.random.Generator, st: _Stays, cfg: _Cfg) -> dict[str, np.ndarray]:
    """Screening time, true ferritin / HLA-DR, censoring and the observable endotype for every stay."""
    n = st.n
    cls = st.latent_class
    # screening: infected stays, 6-30 h after the later of onset and ICU admission, while still in the ICU
    anchor = np.maximum(np.where(st.infected, st.onset, st.intime), st.intime)
    t = anchor + (_u(rng, 6, 30, n) * _H).astype(np.int64)
    late = t >= st.outtime - _H
    t = np.where(late, anchor + (np.maximum(st.outtime - anchor, 0) * _u(rng, 0.1, 0.8, n)).astype(np.int64), t)
    feasible = st.infected & (np.where(st.infected, st.onset, 0) < st.outtime - 2 * _H)
    screened = feasible & (rng.random(n) < cfg.screen_probability)
    screen_time = np.where(screened, _minute(t), _NAT)

    f_low = np.clip(
        np.round(_trunc_lognormal(rng, n, _FERR_LOW_MU, _FERR_LOW_SD, None, MALS_FERRITIN_NG_PER_ML)),
        5,
        MALS_FERRITIN_NG_PER_ML,
    )
    f_mals = np.maximum(
        np.round(MALS_FERRITIN_NG_PER_ML * np.exp(np.abs(rng.normal(0, _FERR_MALS_SD, n)))), MALS_FERRITIN_NG_PER_ML + 1
    )
    ferritin = np.where(cls == 0, f_mals, f_low)
    h_sii = np.clip(
        np.round(_trunc_lognormal(rng, n, _HLA_SII_MU, _HLA_SII_SD, None, SII_HLA_DR_AB_PER_CELL)),
        150,
        SII_HLA_DR_AB_PER_CELL - 1,
    )
    h_unc = np.maximum(
        np.round(_trunc_lognormal(rng, n, _HLA_UNC_MU, _HLA_UNC_SD, SII_HLA_DR_AB_PER_CELL, None)),
        SII_HLA_DR_AB_PER_CELL,
    )
    h_mals = np.round(np.clip(np.exp(rng.normal(_HLA_MALS_MU, _HLA_MALS_SD, n)), 150, 90000))
    hla = np.select([cls == 0, cls == 1], [h_mals, h_sii], h_unc)
    censored = screened & (ferritin > cfg.ferritin_report_limit) & (rng.random(n) < cfg.censored_ferritin_rate)
    hla_reported = screened & (rng.random(n) >= cfg.hla_missing)

    true = np.select([cls == 0, (cls != 0) & (hla < SII_HLA_DR_AB_PER_CELL)], [0, 1], 2)
    true = np.where(st.infected, true, -1)
    if cfg.ferritin_report_limit >= MALS_FERRITIN_NG_PER_ML:
        cens_decides_mals = censored
    else:
        cens_decides_mals = np.zeros(n, bool)
    obs = np.select(
        [
            censored & ~cens_decides_mals,
            ferritin > MALS_FERRITIN_NG_PER_ML,
            ~hla_reported,
            hla < SII_HLA_DR_AB_PER_CELL,
        ],
        [3, 0, 3, 1],
        2,
    )
    obs = np.where(screened, obs, -1)
    return {
        "screened": screened,
        "screen_time": screen_time,
        "ferritin": ferritin.astype(np.float64),
        "hla": hla.astype(np.float64),
        "ferritin_censored": censored,
        "hla_reported": hla_reported,
        "endotype_true": true,
        "endotype_observable": obs,
    }
