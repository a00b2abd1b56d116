"""The DSMB's statistical rule for a safety signal: drug arm vs its placebo comparator, from counts.

Two rules (the DSMB picks one; ``trial/safety.toml`` ``[signal_rule]`` records which, with who set it):

``newcombe_rd_lower_bound``
    Raised when the lower limit of the Newcombe hybrid-score interval (Newcombe 1998, method 10; the interval the
    ImmunoSep report's risk differences reproduce, spec §6.4) of ``p_drug − p_placebo`` exceeds ``margin``.
``bayes_beta_binomial``
    Independent Beta(``prior_alpha``, ``prior_beta``) priors on both proportions; raised when the posterior
    probability ``P(p_drug > p_placebo | data)`` exceeds ``posterior_threshold``. Computed exactly (Miller's sum
    for an integer first shape parameter), so priors must have integer shape parameters.

Pure functions; no I/O.

Examples
--------
>>> r = evaluate_signal_rule(SignalRule(), 4, 106, 0, 122)    # 4 bleeds on IFN-gamma vs none on placebo
>>> round(r.risk_difference, 4), round(r.ci_low, 4), r.raised
(0.0377, -0.0005, False)
>>> evaluate_signal_rule(SignalRule(method="bayes_beta_binomial"), 4, 106, 0, 122).raised
True
>>> round(prob_greater(5, 11, 1, 15), 3)
0.987
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from immunoguide.errors import InputError, PolicyError

__all__ = ["SIGNAL_METHODS", "SignalDecision", "SignalRule", "evaluate_signal_rule", "newcombe_rd", "prob_greater",
           "wilson"]

SIGNAL_METHODS = ("newcombe_rd_lower_bound", "bayes_beta_binomial")


@dataclass(frozen=True)
class SignalRule:
    """A DSMB statistical rule (defaults: 95 % Newcombe interval above 0; Beta(1, 1) priors, 0.90 threshold)."""

    method: Literal["newcombe_rd_lower_bound", "bayes_beta_binomial"] = "newcombe_rd_lower_bound"
    confidence_level: float = 0.95
    margin: float = 0.0
    prior_alpha: int = 1
    prior_beta: int = 1
    posterior_threshold: float = 0.90

    def __post_init__(self) -> None:
        if self.method not in SIGNAL_METHODS:
            raise PolicyError(expected=f"a signal rule method of {SIGNAL_METHODS}", got=self.method, where="signal rule",
                              todo="pick one of the two rules")
        if not 0.5 < self.confidence_level < 1 or not 0 < self.posterior_threshold < 1:
            raise PolicyError(expected="confidence level in (0.5, 1) and posterior threshold in (0, 1)",
                              got=(self.confidence_level, self.posterior_threshold), where="signal rule",
                              todo="fix the rule")
        for v in (self.prior_alpha, self.prior_beta):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PolicyError(expected="integer prior shape parameters >= 1", got=(self.prior_alpha, self.prior_beta),
                                  where="signal rule", todo="use e.g. Beta(1, 1)")

    def describe(self) -> str:
        """One line for reports: the rule as the DSMB reads it."""
        if self.method == "newcombe_rd_lower_bound":
            return (f"raised when the lower limit of the {100 * self.confidence_level:g}% Newcombe interval of the "
                    f"risk difference (drug − placebo) exceeds {100 * self.margin:g} percentage points")
        return (f"raised when P(p_drug > p_placebo) > {self.posterior_threshold:g} under independent "
                f"Beta({self.prior_alpha}, {self.prior_beta}) priors")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary with the description."""
        return {**asdict(self), "text": self.describe()}


def _z(level: float) -> float:
    # inverse standard normal by bisection on erf (no scipy needed in rules/)
    target = 1 - (1 - level) / 2
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson(events: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``events / n`` (no continuity correction).

    >>> [round(x, 4) for x in wilson(0, 10)]
    [0.0, 0.2775]
    """
    if n <= 0:
        raise InputError(expected="n >= 1", got=n, where="wilson", todo="no interval without patients")
    z = _z(level)
    p = events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_rd(a_events: int, a_n: int, b_events: int, b_n: int, level: float = 0.95) -> tuple[float, float, float]:
    """``(p_a − p_b, low, high)`` with the Newcombe hybrid-score interval.

    >>> [round(x, 4) for x in newcombe_rd(56, 70, 48, 80)]  # Newcombe 1998, Table II, example (a)
    [0.2, 0.0524, 0.3339]
    """
    pa, pb = a_events / a_n, b_events / b_n
    la, ua = wilson(a_events, a_n, level)
    lb, ub = wilson(b_events, b_n, level)
    d = pa - pb
    return d, d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2), d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def prob_greater(a_events: int, a_n: int, b_events: int, b_n: int, *, prior_alpha: int = 1,
                 prior_beta: int = 1) -> float:
    """``P(p_a > p_b)`` for independent Beta posteriors (exact sum; E. Miller, *Formulas for Bayesian A/B testing*).

    With ``p_a ~ Beta(α_A, β_A)`` and ``p_b ~ Beta(α_B, β_B)`` (prior + events, prior + non-events) and integer
    ``α_A``: ``P(p_a > p_b) = Σ_{i=0}^{α_A−1} B(α_B + i, β_A + β_B) / ((β_A + i) B(1 + i, β_A) B(α_B, β_B))``.
    """
    aa, ba = prior_alpha + a_events, prior_beta + a_n - a_events
    ab, bb = prior_alpha + b_events, prior_beta + b_n - b_events
    total = 0.0
    for i in range(aa):
        total += math.exp(_lbeta(ab + i, ba + bb) - math.log(ba + i) - _lbeta(1 + i, ba) - _lbeta(ab, bb))
    return min(1.0, max(0.0, total))


@dataclass(frozen=True)
class SignalDecision:
    """One comparison under a rule: counts, risk difference with interval, posterior probability, raised."""

    drug_events: int
    drug_n: int
    placebo_events: int
    placebo_n: int
    risk_difference: float
    ci_low: float
    ci_high: float
    confidence_level: float
    posterior_prob_drug_higher: float
    method: str
    raised: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return asdict(self)


def evaluate_signal_rule(rule: SignalRule, drug_events: int, drug_n: int, placebo_events: int,
                         placebo_n: int) -> SignalDecision:
    """Apply ``rule`` to one drug-vs-placebo comparison (both groups need at least one patient)."""
    for name, v in (("drug_n", drug_n), ("placebo_n", placebo_n)):
        if v < 1:
            raise InputError(expected=f"{name} >= 1", got=v, where="signal rule",
                             todo="a comparison needs patients in both arms")
    d, lo, hi = newcombe_rd(drug_events, drug_n, placebo_events, placebo_n, rule.confidence_level)
    post = prob_greater(drug_events, drug_n, placebo_events, placebo_n, prior_alpha=rule.prior_alpha,
                        prior_beta=rule.prior_beta)
    if rule.method == "newcombe_rd_lower_bound":
        raised = lo > rule.margin
        reason = (f"lower limit {100 * lo:.1f} pp {'>' if raised else '<='} {100 * rule.margin:g} pp")
    else:
        raised = post > rule.posterior_threshold
        reason = f"P(drug > placebo) = {post:.3f} {'>' if raised else '<='} {rule.posterior_threshold:g}"
    return SignalDecision(drug_events, drug_n, placebo_events, placebo_n, d, lo, hi, rule.confidence_level, post,
                          rule.method, raised, reason)
