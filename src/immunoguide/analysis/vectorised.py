"""Vectorised (numpy) versions of the two-group estimators and tests, for simulation over many trials.

Each function takes arrays (one element per trial) and returns arrays; the scalar, library-backed API in
:mod:`immunoguide.analysis.estimators` is the reference, and the tests check these kernels against it (and against
:func:`scipy.stats.fisher_exact` / :func:`scipy.stats.mannwhitneyu`) element by element.

* :func:`fisher_two_sided_p` — two-sided Fisher exact P by summing hypergeometric probabilities no larger than the
  observed one (relative tolerance 1e-7, as R's ``fisher.test``), with log-probabilities from ``gammaln``.
* :func:`newcombe_interval` — Newcombe (1998) hybrid score interval for p_a − p_b (method 10).
* :func:`woolf_interval` — odds ratio with the Woolf (logit) interval; NaN where a cell is zero.
* :func:`mann_whitney_from_counts` — Mann–Whitney U test from category counts of an ordinal outcome, with the tie
  correction and continuity correction of :func:`scipy.stats.mannwhitneyu` (``method="asymptotic"``).

Examples
--------
>>> import numpy as np
>>> p = fisher_two_sided_p(np.array([3, 46]), np.array([4, 131]), np.array([1, 26]), np.array([4, 145]))
>>> np.round(p, 4).tolist()
[0.4857, 0.0015]
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, ndtr, ndtri

__all__ = [
    "FISHER_RELATIVE_TOLERANCE",
    "fisher_two_sided_p",
    "mann_whitney_from_counts",
    "newcombe_interval",
    "wilson_interval",
    "woolf_interval",
]

#: Hypergeometric probabilities within this relative tolerance of the observed table's count as "as extreme"
#: (R ``fisher.test`` uses ``relErr <- 1 + 10^(-7)``).
FISHER_RELATIVE_TOLERANCE = 1e-7


def _z(alpha: float) -> float:
    return float(ndtri(1.0 - alpha / 2.0))


def _log_choose(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def fisher_two_sided_p(
    a_events: np.ndarray, a_n: np.ndarray, b_events: np.ndarray, b_n: np.ndarray, *, chunk: int = 20_000
) -> np.ndarray:
    """Two-sided Fisher exact P for many 2×2 tables ``[[a, a_n - a], [b, b_n - b]]``.

    Parameters
    ----------
    a_events, a_n, b_events, b_n : int arrays of one shape
        Events and group sizes per table.
    chunk : int
        Tables processed at once (memory ~ chunk × (max a_n + 1) floats).

    Returns
    -------
    float array of P values (1.0 where a margin is zero).
    """
    a = np.asarray(a_events, dtype=np.int64).ravel()
    n1 = np.asarray(a_n, dtype=np.int64).ravel()
    b = np.asarray(b_events, dtype=np.int64).ravel()
    n2 = np.asarray(b_n, dtype=np.int64).ravel()
    out = np.empty(a.shape[0], dtype=float)
    if a.size == 0:
        return out.reshape(np.shape(a_events))
    xmax = int(n1.max())
    x = np.arange(xmax + 1, dtype=float)[None, :]
    for s in range(0, a.size, chunk):
        sl = slice(s, s + chunk)
        A, N1, N2 = a[sl].astype(float), n1[sl].astype(float), n2[sl].astype(float)
        K = A + b[sl].astype(float)
        lo = np.maximum(0.0, K - N2)[:, None]
        hi = np.minimum(K, N1)[:, None]
        inside = (x >= lo) & (x <= hi)
        xs = np.where(inside, x, lo)  # keep gammaln arguments valid outside the support
        logp = (
            _log_choose(N1[:, None], xs)
            + _log_choose(N2[:, None], K[:, None] - xs)
            - _log_choose((N1 + N2)[:, None], K[:, None])
        )
        logp_obs = _log_choose(N1, A) + _log_choose(N2, K - A) - _log_choose(N1 + N2, K)
        keep = inside & (logp <= logp_obs[:, None] + np.log1p(FISHER_RELATIVE_TOLERANCE))
        p = np.where(keep, np.exp(logp), 0.0).sum(axis=1)
        out[sl] = np.minimum(p, 1.0)
    return out.reshape(np.shape(a_events))


def wilson_interval(events: np.ndarray, n: np.ndarray, *, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (no continuity correction) for events/n, clipped to [0, 1]."""
    x = np.asarray(events, dtype=float)
    m = np.asarray(n, dtype=float)
    z = _z(alpha)
    p = x / m
    denom = 1.0 + z * z / m
    centre = (p + z * z / (2.0 * m)) / denom
    half = z * np.sqrt(p * (1.0 - p) / m + z * z / (4.0 * m * m)) / denom
    lo = np.where(x == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    hi = np.where(x == m, 1.0, np.clip(centre + half, 0.0, 1.0))
    return lo, hi


def newcombe_interval(
    a_events: np.ndarray, a_n: np.ndarray, b_events: np.ndarray, b_n: np.ndarray, *, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference p_a − p_b with the Newcombe hybrid score interval; returns ``(difference, low, high)``.

    L = D − sqrt((p_a − l_a)² + (u_b − p_b)²), U = D + sqrt((u_a − p_a)² + (p_b − l_b)²), with (l, u) the Wilson
    intervals of each proportion (Newcombe RG, Stat Med 1998;17:873-890, method 10).
    """
    pa = np.asarray(a_events, dtype=float) / np.asarray(a_n, dtype=float)
    pb = np.asarray(b_events, dtype=float) / np.asarray(b_n, dtype=float)
    la, ua = wilson_interval(a_events, a_n, alpha=alpha)
    lb, ub = wilson_interval(b_events, b_n, alpha=alpha)
    d = pa - pb
    low = d - np.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    high = d + np.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return d, low, high


def woolf_interval(
    a_events: np.ndarray,
    a_n: np.ndarray,
    b_events: np.ndarray,
    b_n: np.ndarray,
    *,
    alpha: float = 0.05,
    add: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Odds ratio (a vs b) with the Woolf logit interval; returns ``(or, low, high)``.

    ``add`` is added to every cell first (0.5 = Haldane–Anscombe); with ``add=0`` a table with a zero cell
    gives NaN (undefined).
    """
    a = np.asarray(a_events, dtype=float) + add
    b = np.asarray(b_events, dtype=float) + add
    c = np.asarray(a_n, dtype=float) - np.asarray(a_events, dtype=float) + add
    d = np.asarray(b_n, dtype=float) - np.asarray(b_events, dtype=float) + add
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
        log_or = np.log(a) + np.log(d) - np.log(b) - np.log(c)
        se = np.sqrt(1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d)
        z = _z(alpha)
        or_ = np.where(zero, np.nan, np.exp(log_or))
        lo = np.where(zero, np.nan, np.exp(log_or - z * se))
        hi = np.where(zero, np.nan, np.exp(log_or + z * se))
    return or_, lo, hi


def mann_whitney_from_counts(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann–Whitney U test from counts over ordered categories (low → high).

    Parameters
    ----------
    counts_a, counts_b : (trials, categories) int arrays
        Number of patients of each group in each ordered category.

    Returns
    -------
    (u_a, p) : float arrays
        U statistic of group a (pairs a > b plus half the ties) and the two-sided P, normal approximation with tie
        and continuity correction, as :func:`scipy.stats.mannwhitneyu` with ``method="asymptotic"``. P is NaN where
        all observations are tied or a group is empty.

    Examples
    --------
    >>> import numpy as np
    >>> u, p = mann_whitney_from_counts(np.array([[0, 1, 3]]), np.array([[2, 1, 1]]))
    >>> float(u[0]), round(float(p[0]), 4)
    (13.0, 0.1606)
    """
    ca = np.atleast_2d(np.asarray(counts_a, dtype=float))
    cb = np.atleast_2d(np.asarray(counts_b, dtype=float))
    n1 = ca.sum(axis=1)
    n2 = cb.sum(axis=1)
    n = n1 + n2
    below_b = np.cumsum(cb, axis=1) - cb
    u_a = (ca * (below_b + 0.5 * cb)).sum(axis=1)
    t = ca + cb
    tie = (t**3 - t).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(n1 * n2 / 12.0 * ((n + 1.0) - tie / (n * (n - 1.0))))
        u = np.maximum(u_a, n1 * n2 - u_a)
        z = (u - n1 * n2 / 2.0 - 0.5) / s
        p = np.where((s > 0) & (n1 > 0) & (n2 > 0), np.clip(2.0 * ndtr(-z), 0.0, 1.0), np.nan)
    return u_a, p
