"""Sample size and power for the next trial: closed-form two-proportion formulas and simulated power.

Closed form (two-sided α, 1:1, normal approximation; Fleiss JL, Levin B, Paik MC, *Statistical Methods for Rates
and Proportions*, 3rd ed., Wiley 2003, eqs. 4.14 and 4.15)::

    n   = [z_{α/2} sqrt(2 p̄ q̄) + z_β sqrt(p1 q1 + p2 q2)]² / (p1 − p2)²          (per arm, uncorrected)
    n'  = n/4 · [1 + sqrt(1 + 4 / (n |p1 − p2|))]²                               (Fleiss continuity correction)

For 40 % vs 20 %, α 0.05, power 0.90 this gives n = 108.24 → **109** per arm and n' = 118.02. Rounded up, n' is
**119**; the spec's **118** (§6.1, "derived") is reproduced with the two-decimal table value z_β = 1.28
(``quantiles="table_2dp"``: n = 108.14 → 109, n' = 117.92 → 118) or by rounding 118.02 to the nearest integer.
Both numbers are reported; the default uses exact normal quantiles.

Simulated power: whole trials are simulated (:mod:`immunoguide.design.simulate`) and analysed exactly as the SAP
analyses the primary endpoint: the SAP responder derivation per patient, then the **two-sided Fisher exact test**
(the test that reproduces the published P values, spec §6.4, tagged *likely*), with the Newcombe interval and the
Woolf OR. Everything is vectorised over trials. 28-day mortality uses the same Fisher test on deaths; organ-support-
free days use the two-sided Mann–Whitney U test (normal approximation with tie and continuity correction).
Power is the fraction of trials with P <= α; its Monte Carlo standard error is sqrt(P(1 − P)/n_sims).

Examples
--------
>>> r = sample_size_two_proportions(0.20, 0.40)
>>> r.n_per_arm_uncorrected, r.n_per_arm_corrected, round(r.n_per_arm_corrected_exact, 2)
(109, 119, 118.02)
>>> t = sample_size_two_proportions(0.20, 0.40, quantiles="table_2dp")
>>> t.n_per_arm_uncorrected, t.n_per_arm_corrected
(109, 118)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
from scipy import stats

from immunoguide.analysis.endpoints import sofa_response_arrays
from immunoguide.analysis.vectorised import (
    fisher_two_sided_p,
    mann_whitney_from_counts,
    newcombe_interval,
    woolf_interval,
)
from immunoguide.design.simulate import OSFD_CATEGORIES, Scenario, SimulatedTrials, simulate_trials
from immunoguide.errors import InputError

__all__ = [
    "ENDPOINTS",
    "ClosedFormPower",
    "Endpoint",
    "PowerResult",
    "PrimaryAnalysisBatch",
    "SampleSizeResult",
    "SimulatedSampleSizeResult",
    "closed_form_power",
    "exact_power_two_proportions",
    "primary_analysis",
    "sample_size_two_proportions",
    "simulate_primary_analysis",
    "simulated_power",
    "simulated_sample_size",
]

Endpoint = Literal["sofa-response", "mortality28", "organ-support-free-days"]
ENDPOINTS: tuple[str, ...] = ("sofa-response", "mortality28", "organ-support-free-days")
_TABLE_Z = {0.05: 1.96, 0.01: 2.58, 0.10: 1.64}  # two-sided alpha -> z_{alpha/2}, two decimals
_TABLE_ZB = {0.80: 0.84, 0.90: 1.28, 0.95: 1.64}  # power -> z_beta, two decimals


def _check_prob(x: float, name: str, *, open_interval: bool = True) -> float:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and (0 < x < 1 if open_interval else 0 <= x <= 1)
    if not ok:
        raise InputError(expected=f"{name} strictly between 0 and 1", got=x, field=name)
    return float(x)


# ------------------------------------------------------------------------------------------------------------------
# Closed form
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleSizeResult:
    """Closed-form per-arm sample size for two proportions (1:1), with and without continuity correction."""

    p_control: float
    p_active: float
    alpha: float
    power: float
    quantiles: str
    z_alpha: float
    z_beta: float
    n_per_arm_uncorrected_exact: float
    n_per_arm_corrected_exact: float
    n_per_arm_uncorrected: int
    n_per_arm_corrected: int
    method: str = (
        "two-sided normal approximation for two independent proportions (Fleiss, Levin & Paik 2003, eq. 4.14); "
        "continuity correction n/4 (1 + sqrt(1 + 4/(n |d|)))^2 (eq. 4.15); per-arm sizes rounded up"
    )

    def randomised_total(self, dropout: float, *, corrected: bool = True) -> int:
        """Patients to randomise (both arms) so that ``2n`` remain after a ``dropout`` fraction: ceil(2n / (1 − d))."""
        if not 0 <= dropout < 1:
            raise InputError(expected="0 <= dropout < 1", got=dropout, field="dropout")
        n = self.n_per_arm_corrected if corrected else self.n_per_arm_uncorrected
        return math.ceil(round(2 * n / (1 - dropout), 9))

    def summary(self) -> str:
        """Two lines of text."""
        return (
            f"{self.p_active:.0%} vs {self.p_control:.0%}, two-sided alpha {self.alpha:g}, power {self.power:g} "
            f"(z {self.z_alpha:.4f}, {self.z_beta:.4f}; quantiles {self.quantiles})\n"
            f"n per arm: {self.n_per_arm_uncorrected} uncorrected ({self.n_per_arm_uncorrected_exact:.2f}), "
            f"{self.n_per_arm_corrected} with continuity correction ({self.n_per_arm_corrected_exact:.2f})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def sample_size_two_proportions(
    p_control: float,
    p_active: float,
    *,
    alpha: float = 0.05,
    power: float = 0.90,
    quantiles: Literal["exact", "table_2dp"] = "exact",
) -> SampleSizeResult:
    """Per-arm sample size to detect ``p_active`` vs ``p_control`` with a two-sided test.

    Parameters
    ----------
    p_control, p_active : float
        Event (responder) probabilities.
    alpha : float
        Two-sided significance level.
    power : float
        Target power.
    quantiles : {"exact", "table_2dp"}
        ``"exact"``: normal quantiles from :func:`scipy.stats.norm.ppf`. ``"table_2dp"``: the two-decimal
        table values used in hand calculations (1.96, 1.28, …; only for the tabulated alpha/power).
    """
    p1, p2 = _check_prob(p_control, "p_control"), _check_prob(p_active, "p_active")
    alpha, power = _check_prob(alpha, "alpha"), _check_prob(power, "power")
    if p1 == p2:
        raise InputError(expected="p_active != p_control", got=(p2, p1), todo="a zero effect needs infinite n")
    if quantiles == "exact":
        za, zb = float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))
    elif quantiles == "table_2dp":
        if alpha not in _TABLE_Z or power not in _TABLE_ZB:
            raise InputError(
                expected=f"alpha in {sorted(_TABLE_Z)} and power in {sorted(_TABLE_ZB)} for table quantiles",
                got=(alpha, power),
                field="quantiles",
            )
        za, zb = _TABLE_Z[alpha], _TABLE_ZB[power]
    else:
        raise InputError(expected="quantiles 'exact' or 'table_2dp'", got=quantiles, field="quantiles")
    d = abs(p2 - p1)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / d**2
    ncc = n / 4 * (1 + math.sqrt(1 + 4 / (n * d))) ** 2
    return SampleSizeResult(
        p_control=p1,
        p_active=p2,
        alpha=alpha,
        power=power,
        quantiles=quantiles,
        z_alpha=za,
        z_beta=zb,
        n_per_arm_uncorrected_exact=n,
        n_per_arm_corrected_exact=ncc,
        n_per_arm_uncorrected=math.ceil(round(n, 9)),
        n_per_arm_corrected=math.ceil(round(ncc, 9)),
    )


def closed_form_power(
    p_control: float, p_active: float, n_per_arm: float, *, alpha: float = 0.05, continuity_correction: bool = False
) -> float:
    """Normal-approximation power of the two-sided two-proportion test with ``n_per_arm`` per arm.

    With the continuity correction the difference is reduced by 1/n (the inverse of the Fleiss formula).

    >>> round(closed_form_power(0.2, 0.4, 118, continuity_correction=True), 4)
    0.8999
    """
    p1, p2 = _check_prob(p_control, "p_control"), _check_prob(p_active, "p_active")
    if n_per_arm <= 0:
        raise InputError(expected="n_per_arm > 0", got=n_per_arm, field="n_per_arm")
    za = float(stats.norm.ppf(1 - alpha / 2))
    d = abs(p2 - p1) - (1.0 / n_per_arm if continuity_correction else 0.0)
    pbar = (p1 + p2) / 2
    z = (d * math.sqrt(n_per_arm) - za * math.sqrt(2 * pbar * (1 - pbar))) / math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(stats.norm.cdf(z))


def exact_power_two_proportions(
    n_control: int, n_active: int, p_control: float, p_active: float, *, alpha: float = 0.05
) -> float:
    """Exact power of the two-sided Fisher test (P <= alpha), by enumerating all (n_c + 1)(n_a + 1) outcomes.

    >>> round(exact_power_two_proportions(118, 118, 0.2, 0.4), 4)
    0.9044
    """
    xc = np.arange(n_control + 1)
    xa = np.arange(n_active + 1)
    A, C = np.meshgrid(xa, xc, indexing="ij")
    p = fisher_two_sided_p(A, np.full_like(A, n_active), C, np.full_like(C, n_control))
    w = stats.binom.pmf(A, n_active, p_active) * stats.binom.pmf(C, n_control, p_control)
    return float(w[p <= alpha].sum())


# ------------------------------------------------------------------------------------------------------------------
# Vectorised trial analysis
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrimaryAnalysisBatch:
    """Per-trial results of the two-group binary analysis (arrays of length ``n_trials``).

    Differences and intervals are active − control proportions; ``odds_ratio`` is NaN where a cell is zero.
    """

    endpoint: str
    alpha: float
    n_active: np.ndarray = field(repr=False)
    n_control: np.ndarray = field(repr=False)
    events_active: np.ndarray = field(repr=False)
    events_control: np.ndarray = field(repr=False)
    difference: np.ndarray = field(repr=False)
    ci_low: np.ndarray = field(repr=False)
    ci_high: np.ndarray = field(repr=False)
    odds_ratio: np.ndarray = field(repr=False)
    or_low: np.ndarray = field(repr=False)
    or_high: np.ndarray = field(repr=False)
    p_value: np.ndarray = field(repr=False)
    method: str = "SAP responder derivation; Newcombe hybrid score CI; Woolf OR; two-sided Fisher exact test"

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return int(self.p_value.shape[0])

    @staticmethod
    def concatenate(parts: list[PrimaryAnalysisBatch]) -> PrimaryAnalysisBatch:
        """Join batches (same endpoint and alpha)."""
        names = [
            "n_active", "n_control", "events_active", "events_control", "difference", "ci_low", "ci_high",
            "odds_ratio", "or_low", "or_high", "p_value",
        ]  # fmt: skip
        return PrimaryAnalysisBatch(
            endpoint=parts[0].endpoint,
            alpha=parts[0].alpha,
            **cast(dict[str, Any], {k: np.concatenate([getattr(p, k) for p in parts]) for k in names}),
        )


def _binary_batch(
    endpoint: str, alpha: float, event: np.ndarray, use: np.ndarray, active: np.ndarray
) -> PrimaryAnalysisBatch:
    ua, uc = use & active, use & ~active
    n_a, n_c = ua.sum(axis=1), uc.sum(axis=1)
    e_a, e_c = (event & ua).sum(axis=1), (event & uc).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d, lo, hi = newcombe_interval(e_a, n_a, e_c, n_c, alpha=alpha)
    or_, or_lo, or_hi = woolf_interval(e_a, n_a, e_c, n_c, alpha=alpha)
    p = fisher_two_sided_p(e_a, n_a, e_c, n_c)
    return PrimaryAnalysisBatch(endpoint, alpha, n_a, n_c, e_a, e_c, d, lo, hi, or_, or_lo, or_hi, p)


def primary_analysis(sim: SimulatedTrials, *, alpha: float = 0.05) -> PrimaryAnalysisBatch:
    """The SAP primary analysis of every simulated trial: derive responders, then Newcombe, Woolf and Fisher.

    Analysable patients (not dropped out) with a baseline SOFA are analysed in their randomised arm.
    """
    t, n = sim.active.shape
    L = sim.window.shape[-1]
    r = sofa_response_arrays(
        sim.baseline.reshape(-1),
        sim.window.reshape(-1, L),
        sim.died_on_day.reshape(-1),
        endpoint=sim.endpoint,  # type: ignore[arg-type]
        policies={"death_day": sim.death_day_policy},
    )
    use = sim.analysable & r.evaluable.reshape(t, n)
    return _binary_batch(f"sofa-response-{sim.endpoint}", alpha, r.responder.reshape(t, n), use, sim.active)


def _mortality_analysis(sim: SimulatedTrials, alpha: float) -> PrimaryAnalysisBatch:
    dead = np.isfinite(sim.died_on_day) & (sim.died_on_day <= 28)
    return _binary_batch("mortality28", alpha, dead, sim.analysable, sim.active)


def _osfd_p(sim: SimulatedTrials) -> np.ndarray:
    t, _ = sim.active.shape
    k = len(OSFD_CATEGORIES)
    cat = sim.osfd - OSFD_CATEGORIES[0]
    rows = np.broadcast_to(np.arange(t)[:, None], cat.shape)
    out = []
    for arm in (True, False):
        m = sim.analysable & (sim.active == arm)
        out.append(np.bincount((rows[m] * k + cat[m]).ravel(), minlength=t * k).reshape(t, k))
    _, p = mann_whitney_from_counts(out[0], out[1])
    return p


def _chunks(n_trials: int, chunk: int) -> list[int]:
    return [min(chunk, n_trials - s) for s in range(0, n_trials, chunk)]


def simulate_primary_analysis(
    sc: Scenario,
    n_trials: int,
    *,
    seed: int | None = None,
    alpha: float = 0.05,
    chunk: int = 500,
    endpoint: Literal["d2_9", "d2_15"] = "d2_9",
) -> PrimaryAnalysisBatch:
    """Simulate and analyse ``n_trials`` trials in chunks (chunk ``i`` uses ``SeedSequence(seed).spawn(...)[i]``).

    The result depends on (``seed``, ``chunk``): keep both to reproduce it.
    """
    seeds = np.random.SeedSequence(seed).spawn(len(_chunks(n_trials, chunk)))
    parts = [
        primary_analysis(simulate_trials(sc, size, seed=s, endpoint=endpoint), alpha=alpha)
        for size, s in zip(_chunks(n_trials, chunk), seeds, strict=True)
    ]
    return PrimaryAnalysisBatch.concatenate(parts)


# ------------------------------------------------------------------------------------------------------------------
# Simulated power and sample size
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClosedFormPower:
    """Closed-form powers at the expected analysable size per arm (two-proportion endpoints only)."""

    p_control: float
    p_active: float
    n_per_arm: float
    power_normal: float
    power_continuity_corrected: float
    power_fisher_exact: float
    method: str = (
        "normal approximation without / with continuity correction at the expected analysable n per arm; "
        "exact Fisher power by enumeration at a FIXED floor(n) per arm. With dropout the analysable n is random and "
        "the exact Fisher power is jagged in n (20% vs 40%: 0.905 at 119/119, 0.919 at 118/120), so the simulated "
        "power can differ from this single value by more than its Monte Carlo error"
    )


@dataclass(frozen=True)
class PowerResult:
    """Simulated power with its Monte Carlo error (and the closed form where one exists)."""

    endpoint: str
    test: str
    n_randomised: int
    n_sims: int
    seed: int | None
    chunk: int
    alpha: float
    power: float
    mc_se: float
    mc_ci_low: float
    mc_ci_high: float
    rejections: int
    expected_analysable_per_arm: float
    arm_values: Mapping[str, float]
    closed_form: ClosedFormPower | None
    assumptions: tuple[str, ...]
    scenario: Mapping[str, Any]

    def summary(self) -> str:
        """A few lines of text (the CLI's plain output)."""
        lines = [
            f"endpoint {self.endpoint}; test: {self.test}; alpha {self.alpha:g} (two-sided)",
            f"n randomised {self.n_randomised} (expected analysable per arm {self.expected_analysable_per_arm:.1f})",
            "arms: " + ", ".join(f"{k} {v:.4g}" for k, v in self.arm_values.items()),
            f"simulated power {self.power:.4f} (Monte Carlo SE {self.mc_se:.4f}; 95% {self.mc_ci_low:.4f} to "
            f"{self.mc_ci_high:.4f}; {self.rejections}/{self.n_sims} trials, seed {self.seed})",
        ]
        cf = self.closed_form
        if cf is not None:
            lines.append(
                f"closed form at n {cf.n_per_arm:.1f}/arm: normal {cf.power_normal:.4f}, continuity-corrected "
                f"{cf.power_continuity_corrected:.4f}, exact Fisher at fixed {int(cf.n_per_arm)}/arm "
                f"{cf.power_fisher_exact:.4f}"
            )
        lines += [f"ASSUMPTION: {a}" for a in self.assumptions]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        d = asdict(self)
        d["arm_values"] = dict(self.arm_values)
        d["scenario"] = dict(self.scenario)
        return d


def _power_from_pvalues(p: np.ndarray, alpha: float) -> tuple[int, float, float]:
    valid = np.nan_to_num(p, nan=1.0)
    rej = int((valid <= alpha).sum())
    pw = rej / p.size
    return rej, pw, math.sqrt(pw * (1 - pw) / p.size)


def simulated_power(
    sc: Scenario,
    endpoint: Endpoint,
    *,
    n_sims: int = 2000,
    seed: int | None = None,
    alpha: float = 0.05,
    chunk: int = 500,
) -> PowerResult:
    """Simulated power of the SAP analysis of ``endpoint`` under scenario ``sc``.

    Parameters
    ----------
    endpoint : {"sofa-response", "mortality28", "organ-support-free-days"}
        SAP primary responder endpoint (Fisher), 28-day mortality (Fisher) or organ-support-free days (Mann–Whitney).
    n_sims : int
        Simulated trials; the Monte Carlo SE is sqrt(P(1 − P) / n_sims).
    seed : int, optional
        Same seed (and chunk) → same result.
    """
    if endpoint not in ENDPOINTS:
        raise InputError(expected=f"endpoint in {list(ENDPOINTS)}", got=endpoint, field="endpoint")
    if not isinstance(n_sims, int) or n_sims < 1:
        raise InputError(expected="n_sims an integer >= 1", got=n_sims, field="n_sims")
    alpha = _check_prob(alpha, "alpha")
    seeds = np.random.SeedSequence(seed).spawn(len(_chunks(n_sims, chunk)))
    pvals = []
    for size, s in zip(_chunks(n_sims, chunk), seeds, strict=True):
        sim = simulate_trials(sc, size, seed=s, sofa=endpoint == "sofa-response")
        if endpoint == "sofa-response":
            pvals.append(primary_analysis(sim, alpha=alpha).p_value)
        elif endpoint == "mortality28":
            pvals.append(_mortality_analysis(sim, alpha).p_value)
        else:
            pvals.append(_osfd_p(sim))
    p = np.concatenate(pvals)
    rej, pw, se = _power_from_pvalues(p, alpha)
    n_arm = sc.n_active * (1 - sc.dropout)
    n_ctl = (sc.n_randomised - sc.n_active) * (1 - sc.dropout)
    closed: ClosedFormPower | None = None
    if endpoint == "sofa-response":
        pc, pa = sc.marginal_response_rate(False), sc.marginal_response_rate(True)
        test = "two-sided Fisher exact test on SAP responders (days 2-9)"
    elif endpoint == "mortality28":
        pc, pa = sc.marginal_mortality_rate(False), sc.marginal_mortality_rate(True)
        test = "two-sided Fisher exact test on 28-day deaths"
    else:
        pc = pa = float("nan")
        test = "two-sided Mann-Whitney U test on organ-support-free days to day 28 (deaths = -1)"
    if endpoint != "organ-support-free-days":
        arm_values = {"control": pc, "active": pa}
        if 0 < pc < 1 and 0 < pa < 1 and pc != pa:
            nn = 0.5 * (n_arm + n_ctl)
            closed = ClosedFormPower(
                p_control=pc,
                p_active=pa,
                n_per_arm=nn,
                power_normal=closed_form_power(pc, pa, nn, alpha=alpha),
                power_continuity_corrected=closed_form_power(pc, pa, nn, alpha=alpha, continuity_correction=True),
                power_fisher_exact=exact_power_two_proportions(int(n_ctl), int(n_arm), pc, pa, alpha=alpha),
            )
    else:
        arm_values = {
            "control support days": sc.support_days_mean(False),
            "active support days": sc.support_days_mean(True),
            "control 28d mortality": sc.marginal_mortality_rate(False),
            "active 28d mortality": sc.marginal_mortality_rate(True),
        }
    half = 1.959963984540054 * se
    return PowerResult(
        endpoint=endpoint,
        test=test,
        n_randomised=sc.n_randomised,
        n_sims=n_sims,
        seed=seed,
        chunk=chunk,
        alpha=alpha,
        power=pw,
        mc_se=se,
        mc_ci_low=max(0.0, pw - half),
        mc_ci_high=min(1.0, pw + half),
        rejections=rej,
        expected_analysable_per_arm=0.5 * (n_arm + n_ctl),
        arm_values=arm_values,
        closed_form=closed,
        assumptions=sc.assumptions,
        scenario=sc.to_dict(),
    )


@dataclass(frozen=True)
class SimulatedSampleSizeResult:
    """Smallest even trial size (randomised) whose simulated power reaches the target, found by bisection."""

    endpoint: str
    target_power: float
    n_randomised: int
    power: float
    mc_se: float
    evaluations: tuple[tuple[int, float], ...]
    n_sims: int
    seed: int | None
    note: str = (
        "bisection on simulated power (same seed at every size); the answer is uncertain by the Monte Carlo error "
        "of the power near the target; increase n_sims to narrow it"
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def simulated_sample_size(
    sc: Scenario,
    endpoint: Endpoint,
    *,
    target_power: float = 0.90,
    n_sims: int = 1000,
    seed: int | None = 0,
    alpha: float = 0.05,
    n_min: int = 20,
    n_max: int = 4000,
) -> SimulatedSampleSizeResult:
    """Smallest even ``n_randomised`` in [n_min, n_max] with simulated power >= ``target_power`` (bisection)."""
    target_power = _check_prob(target_power, "target_power")
    evals: dict[int, PowerResult] = {}

    def pw(n: int) -> float:
        if n not in evals:
            evals[n] = simulated_power(sc.with_n(n), endpoint, n_sims=n_sims, seed=seed, alpha=alpha)
        return evals[n].power

    lo, hi = n_min + (n_min % 2), n_max - (n_max % 2)
    if pw(hi) < target_power:
        raise InputError(
            expected=f"power >= {target_power} reachable with at most {n_max} randomised",
            got=round(evals[hi].power, 4),
            where=f"simulated_sample_size ({endpoint})",
            todo="increase n_max or the effect size",
        )
    if pw(lo) >= target_power:
        hi = lo
    while hi - lo > 2:
        mid = (lo + hi) // 2
        mid -= mid % 2
        if pw(mid) >= target_power:
            hi = mid
        else:
            lo = mid
    best = evals[hi]
    return SimulatedSampleSizeResult(
        endpoint=endpoint,
        target_power=target_power,
        n_randomised=hi,
        power=best.power,
        mc_se=best.mc_se,
        evaluations=tuple(sorted((n, r.power) for n, r in evals.items())),
        n_sims=n_sims,
        seed=seed,
    )
