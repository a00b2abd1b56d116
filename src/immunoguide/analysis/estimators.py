"""Estimators and tests of the ImmunoSep statistical analysis plan, with typed results (never tuples).

Two groups, binary outcome (spec §6.4, "How the CIs and P values were computed"):

* :func:`newcombe_risk_difference` — risk difference with the **Newcombe hybrid score** interval (Wilson score
  intervals combined; Newcombe 1998, method 10). Reproduces the published differences (17.2 (6.8 to 27.2), …).
* :func:`woolf_odds_ratio` — odds ratio with the **Woolf (logit)** interval. A zero cell makes the OR undefined:
  by default this raises :class:`~immunoguide.errors.StatisticsError`; ``zero_cell_correction="haldane_if_zero"``
  adds 0.5 to every cell of such a table (Haldane–Anscombe) and says so in the result.
* :func:`fisher_exact_test` — two-sided **Fisher exact** P (:func:`scipy.stats.fisher_exact`).
* :func:`two_proportions` — the three together (the ``immunoguide stats two-proportions`` command).

Models: :func:`logistic_adjusted` (statsmodels ``Logit``, e.g. adjusted for stratum and site),
:func:`proportional_odds` (statsmodels ``OrderedModel``, day-15 infection outcome), :func:`kaplan_meier`,
:func:`logrank` and :func:`cox` (lifelines), and :func:`subgroup_interactions` (subgroup ORs and treatment ×
subgroup interaction tests from a logistic model).

Every result is a frozen dataclass carrying the method, ``alpha`` and the inputs' sizes, with ``to_dict()``.

Examples
--------
>>> r = two_proportions(46, 131, 26, 145)
>>> print(r.summary())
A 46/131 (35.1%) vs B 26/145 (17.9%)
Risk difference A - B: 17.2 percentage points (95% CI 6.8 to 27.2) [Newcombe hybrid score interval]
Odds ratio A vs B: 2.48 (95% CI 1.42 to 4.32) [Woolf logit interval]
Fisher exact test (two-sided): P = 0.0015

References
----------
Newcombe RG. Interval estimation for the difference between independent proportions: comparison of eleven methods.
Stat Med 1998;17:873-890. doi:10.1002/(SICI)1097-0258(19980430)17:8<873::AID-SIM779>3.0.CO;2-I.
Woolf B. On estimating the relation between blood group and disease. Ann Hum Genet 1955;19:251-253.
Giamarellos-Bourboulis EJ et al. JAMA 2025, doi:10.1001/jama.2025.24175, Table 2 (via spec §6.4).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from immunoguide.analysis.sap import SubgroupSpec, load_sap
from immunoguide.analysis.vectorised import newcombe_interval, woolf_interval
from immunoguide.errors import ConvergenceError, InputError, MissingInputError, StatisticsError

__all__ = [
    "CoxResult",
    "HazardTerm",
    "KaplanMeierResult",
    "LogisticRegressionResult",
    "ModelTerm",
    "OddsRatioResult",
    "ProportionalOddsResult",
    "RiskDifferenceResult",
    "SubgroupRow",
    "SubgroupTable",
    "TestResult",
    "TwoProportionsResult",
    "ZeroCellCorrection",
    "cox",
    "fisher_exact_test",
    "kaplan_meier",
    "logistic_adjusted",
    "logrank",
    "newcombe_risk_difference",
    "proportional_odds",
    "subgroup_interactions",
    "two_proportions",
    "woolf_odds_ratio",
]

ZeroCellCorrection = Literal["none", "haldane_if_zero", "haldane_always"]
_ZERO_CELL_OPTIONS = ("none", "haldane_if_zero", "haldane_always")


# ------------------------------------------------------------------------------------------------------------------
# Validation helpers
# ------------------------------------------------------------------------------------------------------------------
def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise InputError(expected="alpha strictly between 0 and 1 (e.g. 0.05)", got=alpha, field="alpha")
    return float(alpha)


def _check_counts(events: int, n: int, group: str) -> tuple[int, int]:
    for name, v in ((f"{group}_events", events), (f"{group}_n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(expected=f"{name} as a non-negative integer count", got=v, field=name)
    if n == 0:
        raise InputError(
            expected=f"{group}_n >= 1", got=n, field=f"{group}_n", todo="a proportion needs at least one patient"
        )
    if events > n:
        raise InputError(
            expected=f"{group}_events <= {group}_n", got=f"{events}/{n}", field=f"{group}_events", todo="check counts"
        )
    return int(events), int(n)


def _ci_label(alpha: float) -> str:
    pct = 100 * (1 - alpha)
    return f"{pct:.0f}%" if float(pct).is_integer() else f"{pct:g}%"


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


# ------------------------------------------------------------------------------------------------------------------
# Two proportions
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RiskDifferenceResult:
    """Risk difference ``risk_a − risk_b`` (proportions, not percent) with its confidence interval."""

    difference: float
    ci_low: float
    ci_high: float
    risk_a: float
    risk_b: float
    a_events: int
    a_n: int
    b_events: int
    b_n: int
    alpha: float
    method: str = "Newcombe hybrid score interval (Wilson score, no continuity correction; Newcombe 1998 method 10)"

    def summary(self) -> str:
        """One line in percentage points, e.g. ``17.2 percentage points (95% CI 6.8 to 27.2)``."""
        return (
            f"{100 * self.difference:.1f} percentage points ({_ci_label(self.alpha)} CI "
            f"{100 * self.ci_low:.1f} to {100 * self.ci_high:.1f})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass(frozen=True)
class OddsRatioResult:
    """Odds ratio of group a vs group b with the Woolf (logit) interval.

    ``table`` is ``(a_events, a_non_events, b_events, b_non_events)`` as observed; ``cells_used`` after any
    zero-cell correction (``corrected`` True when 0.5 was added).
    """

    odds_ratio: float
    ci_low: float
    ci_high: float
    log_odds_ratio: float
    se_log_odds_ratio: float
    table: tuple[int, int, int, int]
    cells_used: tuple[float, float, float, float]
    zero_cell_correction: str
    corrected: bool
    alpha: float
    method: str = "Woolf logit interval: exp(log OR ± z·sqrt(1/a + 1/b + 1/c + 1/d))"

    def summary(self) -> str:
        """One line, e.g. ``2.48 (95% CI 1.42 to 4.32)``."""
        extra = " [0.5 added to every cell: Haldane-Anscombe]" if self.corrected else ""
        return f"{self.odds_ratio:.2f} ({_ci_label(self.alpha)} CI {self.ci_low:.2f} to {self.ci_high:.2f}){extra}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass(frozen=True)
class TestResult:
    """A hypothesis test: statistic, P value, method, alternative and the alpha it is read at.

    ``statistic_name`` says what ``statistic`` is (for Fisher's test, the sample odds ratio scipy reports).
    """

    statistic: float
    p_value: float
    method: str
    statistic_name: str
    alternative: str = "two-sided"
    alpha: float = 0.05
    degrees_of_freedom: float | None = None

    __test__ = False  # not a pytest test class

    @property
    def significant(self) -> bool:
        """``p_value <= alpha``."""
        return self.p_value <= self.alpha

    def summary(self) -> str:
        """One line, e.g. ``Fisher exact test (two-sided): P = 0.0015``."""
        return f"{self.method} ({self.alternative}): P = {_fmt_p(self.p_value)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        d = asdict(self)
        d["significant"] = self.significant
        return d


def _fmt_p(p: float) -> str:
    if p < 0.0001:
        return "< 0.0001"
    return f"{p:.4f}"


def newcombe_risk_difference(
    a_events: int, a_n: int, b_events: int, b_n: int, *, alpha: float = 0.05
) -> RiskDifferenceResult:
    """Risk difference ``a_events/a_n − b_events/b_n`` with the Newcombe hybrid score interval.

    Parameters
    ----------
    a_events, a_n, b_events, b_n : int
        Events and patients in group a (e.g. precision immunotherapy) and group b (placebo).
    alpha : float
        Two-sided level; the interval has coverage ``1 − alpha``.

    Returns
    -------
    RiskDifferenceResult
        Difference and limits as proportions (multiply by 100 for percentage points).

    Notes
    -----
    With Wilson limits (l_a, u_a), (l_b, u_b): L = D − sqrt((p_a − l_a)² + (u_b − p_b)²),
    U = D + sqrt((u_a − p_a)² + (p_b − l_b)²). Defined for zero and full counts.

    Examples
    --------
    >>> r = newcombe_risk_difference(56, 70, 48, 80)  # Newcombe 1998, Table II, example (a)
    >>> round(r.ci_low, 4), round(r.ci_high, 4)
    (0.0524, 0.3339)
    """
    alpha = _check_alpha(alpha)
    a_events, a_n = _check_counts(a_events, a_n, "a")
    b_events, b_n = _check_counts(b_events, b_n, "b")
    d, lo, hi = newcombe_interval(np.array(a_events), np.array(a_n), np.array(b_events), np.array(b_n), alpha=alpha)
    return RiskDifferenceResult(
        difference=float(d),
        ci_low=float(lo),
        ci_high=float(hi),
        risk_a=a_events / a_n,
        risk_b=b_events / b_n,
        a_events=a_events,
        a_n=a_n,
        b_events=b_events,
        b_n=b_n,
        alpha=alpha,
    )


def woolf_odds_ratio(
    a_events: int,
    a_n: int,
    b_events: int,
    b_n: int,
    *,
    alpha: float = 0.05,
    zero_cell_correction: ZeroCellCorrection = "none",
) -> OddsRatioResult:
    """Odds ratio of group a vs group b with the Woolf (logit) interval.

    Parameters
    ----------
    a_events, a_n, b_events, b_n : int
        Events and patients per group.
    alpha : float
        Two-sided level.
    zero_cell_correction : {"none", "haldane_if_zero", "haldane_always"}
        ``"none"`` (default): a table with a zero cell raises :class:`StatisticsError` (OR 0 or ∞, interval
        undefined). ``"haldane_if_zero"``: add 0.5 to every cell of a table that has a zero cell.
        ``"haldane_always"``: add 0.5 to every cell of every table.

    Raises
    ------
    StatisticsError
        Zero cell with ``zero_cell_correction="none"``.

    Examples
    --------
    >>> woolf_odds_ratio(46, 131, 26, 145).summary()
    '2.48 (95% CI 1.42 to 4.32)'
    >>> woolf_odds_ratio(0, 10, 3, 10, zero_cell_correction="haldane_if_zero").corrected
    True
    """
    alpha = _check_alpha(alpha)
    if zero_cell_correction not in _ZERO_CELL_OPTIONS:
        raise InputError(
            expected=f"zero_cell_correction in {list(_ZERO_CELL_OPTIONS)}",
            got=zero_cell_correction,
            field="zero_cell_correction",
        )
    a_events, a_n = _check_counts(a_events, a_n, "a")
    b_events, b_n = _check_counts(b_events, b_n, "b")
    table = (a_events, a_n - a_events, b_events, b_n - b_events)
    has_zero = 0 in table
    if has_zero and zero_cell_correction == "none":
        raise StatisticsError(
            expected="a 2x2 table without zero cells for the Woolf odds ratio",
            got=f"events/non-events a={table[0]}/{table[1]}, b={table[2]}/{table[3]}",
            where="woolf_odds_ratio",
            todo="the OR is 0 or infinite and its logit interval undefined; report the risk difference, or pass "
            "zero_cell_correction='haldane_if_zero' (adds 0.5 to every cell) and report that you did",
        )
    add = 0.5 if (zero_cell_correction == "haldane_always" or (has_zero and zero_cell_correction != "none")) else 0.0
    cells = tuple(float(c) + add for c in table)
    a, c, b, d = cells  # a: events A, c: non-events A, b: events B, d: non-events B
    log_or = math.log(a) + math.log(d) - math.log(b) - math.log(c)
    se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    or_, lo, hi = woolf_interval(
        np.array(a_events), np.array(a_n), np.array(b_events), np.array(b_n), alpha=alpha, add=add
    )
    return OddsRatioResult(
        odds_ratio=float(or_),
        ci_low=float(lo),
        ci_high=float(hi),
        log_odds_ratio=log_or,
        se_log_odds_ratio=se,
        table=table,
        cells_used=cells,  # type: ignore[arg-type]
        zero_cell_correction=zero_cell_correction,
        corrected=add > 0,
        alpha=alpha,
    )


def fisher_exact_test(a_events: int, a_n: int, b_events: int, b_n: int, *, alpha: float = 0.05) -> TestResult:
    """Two-sided Fisher exact test of the 2×2 table ``[[a_events, a_n − a_events], [b_events, b_n − b_events]]``.

    Uses :func:`scipy.stats.fisher_exact` (``alternative="two-sided"``: sum of the probabilities of all tables
    with the observed margins that are no more probable than the observed one).

    Examples
    --------
    >>> round(fisher_exact_test(3, 4, 1, 4).p_value, 4)  # Fisher's tea-tasting experiment
    0.4857
    """
    alpha = _check_alpha(alpha)
    a_events, a_n = _check_counts(a_events, a_n, "a")
    b_events, b_n = _check_counts(b_events, b_n, "b")
    res = stats.fisher_exact([[a_events, a_n - a_events], [b_events, b_n - b_events]], alternative="two-sided")
    return TestResult(
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        method="Fisher exact test",
        statistic_name="sample odds ratio",
        alternative="two-sided",
        alpha=alpha,
    )


@dataclass(frozen=True)
class TwoProportionsResult:
    """Risk difference (Newcombe), odds ratio (Woolf) and Fisher's exact P for one 2×2 comparison."""

    risk_difference: RiskDifferenceResult
    odds_ratio: OddsRatioResult
    fisher: TestResult

    @property
    def alpha(self) -> float:
        """The two-sided level of the intervals."""
        return self.risk_difference.alpha

    def summary(self) -> str:
        """Four lines of text (the CLI's plain output)."""
        rd = self.risk_difference
        return "\n".join(
            [
                f"A {rd.a_events}/{rd.a_n} ({100 * rd.risk_a:.1f}%) vs B {rd.b_events}/{rd.b_n} ({100 * rd.risk_b:.1f}%)",
                f"Risk difference A - B: {rd.summary()} [Newcombe hybrid score interval]",
                f"Odds ratio A vs B: {self.odds_ratio.summary()} [Woolf logit interval]",
                self.fisher.summary(),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe nested dict."""
        return {
            "alpha": self.alpha,
            "risk_difference": self.risk_difference.to_dict(),
            "odds_ratio": self.odds_ratio.to_dict(),
            "fisher": self.fisher.to_dict(),
        }


def two_proportions(
    a_events: int,
    a_n: int,
    b_events: int,
    b_n: int,
    *,
    alpha: float = 0.05,
    zero_cell_correction: ZeroCellCorrection = "none",
) -> TwoProportionsResult:
    """Newcombe risk difference, Woolf odds ratio and two-sided Fisher P for group a vs group b.

    See :func:`newcombe_risk_difference`, :func:`woolf_odds_ratio` (and its ``zero_cell_correction``) and
    :func:`fisher_exact_test`.
    """
    return TwoProportionsResult(
        risk_difference=newcombe_risk_difference(a_events, a_n, b_events, b_n, alpha=alpha),
        odds_ratio=woolf_odds_ratio(
            a_events, a_n, b_events, b_n, alpha=alpha, zero_cell_correction=zero_cell_correction
        ),
        fisher=fisher_exact_test(a_events, a_n, b_events, b_n, alpha=alpha),
    )


# ------------------------------------------------------------------------------------------------------------------
# Regression models
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelTerm:
    """One coefficient of a logit-link model: log-odds ``coefficient`` and its exponentiated odds ratio."""

    name: str
    coefficient: float
    std_error: float
    odds_ratio: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def _term(name: str, coef: float, se: float, alpha: float) -> ModelTerm:
    z = coef / se if se > 0 else float("nan")
    zc = _z(alpha)
    return ModelTerm(
        name=name,
        coefficient=float(coef),
        std_error=float(se),
        odds_ratio=float(math.exp(coef)),
        ci_low=float(math.exp(coef - zc * se)),
        ci_high=float(math.exp(coef + zc * se)),
        z=float(z),
        p_value=float(2 * stats.norm.sf(abs(z))),
    )


@dataclass(frozen=True)
class LogisticRegressionResult:
    """Logistic regression of a binary outcome on treatment and covariates (Wald intervals and P values)."""

    outcome: str
    treatment: str
    covariates: tuple[str, ...]
    categorical: tuple[str, ...]
    formula: str
    n: int
    n_events: int
    treatment_effect: ModelTerm
    terms: tuple[ModelTerm, ...]
    log_likelihood: float
    alpha: float
    method: str = "maximum-likelihood logistic regression (statsmodels Logit, Newton); Wald CI and P"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def _need_columns(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise MissingInputError(
            expected=f"columns {list(cols)}", got=f"missing {missing}", where=where, todo="add or rename the columns"
        )


def _binary(series: pd.Series, name: str, where: str) -> pd.Series:
    if series.isna().any():
        raise InputError(
            expected=f"{name} recorded for every patient (0/1)",
            got=f"{int(series.isna().sum())} missing",
            where=where,
            field=name,
            todo="drop or derive the missing rows explicitly before fitting (no silent complete-case analysis)",
        )
    vals = set(pd.unique(series.astype(float)))
    if not vals <= {0.0, 1.0}:
        raise InputError(expected=f"{name} coded 0/1", got=sorted(vals)[:5], where=where, field=name)
    return series.astype(float)


def _q(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f'Q("{name}")'


def _fit_quietly(fit_callable: Any, where: str) -> Any:
    from statsmodels.tools.sm_exceptions import ConvergenceWarning as SmConvergenceWarning
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = fit_callable()
        except (PerfectSeparationError, np.linalg.LinAlgError) as exc:
            raise ConvergenceError(
                expected="a model that can be estimated",
                got=f"{type(exc).__name__}: {exc}",
                where=where,
                todo="perfect separation or collinearity: drop or merge sparse covariate levels (e.g. group small "
                "sites), or use an exact/penalised method",
            ) from None
    bad = [w for w in caught if issubclass(w.category, (SmConvergenceWarning, PerfectSeparationWarning))]
    retvals = getattr(res, "mle_retvals", None) or {}
    if bad or retvals.get("converged") is False:
        raise ConvergenceError(
            expected="a converged maximum-likelihood fit",
            got="; ".join(str(w.message) for w in bad) or "optimizer reported no convergence",
            where=where,
            todo="probable (quasi-)separation or too many sparse levels: merge small sites/strata or drop a covariate",
        )
    return res


def logistic_adjusted(
    df: pd.DataFrame,
    outcome: str,
    treatment: str,
    covariates: Sequence[str] = (),
    *,
    categorical: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> LogisticRegressionResult:
    """Logistic regression ``outcome ~ treatment + covariates`` (e.g. adjusted for immune stratum and site).

    Parameters
    ----------
    df : DataFrame
        One row per patient.
    outcome : str
        Binary outcome column (0/1, e.g. SOFA responder).
    treatment : str
        Binary treatment column (1 = precision immunotherapy, 0 = placebo).
    covariates : sequence of str
        Adjustment columns. Non-numeric columns and those in ``categorical`` enter as indicator variables
        (reference = first level in sorted order); others enter linearly.
    categorical : sequence of str, optional
        Numeric columns to treat as categorical (e.g. a numeric site code).
    alpha : float
        Two-sided level of the Wald intervals.

    Returns
    -------
    LogisticRegressionResult
        ``treatment_effect`` is the adjusted odds ratio for treatment.

    Raises
    ------
    MissingInputError, InputError
        Absent columns, non-binary or missing outcome/treatment.
    ConvergenceError
        Perfect separation or non-convergence (the message names the probable cause).

    Notes
    -----
    The SAP's rule for small sites (a "> 8 % large-site rule", spec §6.2) was not captured; group sites before
    calling if you need it. No rows are dropped silently: missing covariates raise.
    """
    import statsmodels.formula.api as smf

    alpha = _check_alpha(alpha)
    cols = [outcome, treatment, *covariates]
    _need_columns(df, cols, "logistic_adjusted")
    data = df[cols].copy()
    data[outcome] = _binary(data[outcome], outcome, "logistic_adjusted")
    data[treatment] = _binary(data[treatment], treatment, "logistic_adjusted")
    for c in covariates:
        if data[c].isna().any():
            raise InputError(
                expected=f"covariate {c} recorded for every patient",
                got=f"{int(data[c].isna().sum())} missing",
                where="logistic_adjusted",
                field=c,
                todo="impute with a named method or exclude rows explicitly before fitting",
            )
    cat = set(categorical or ()) | {c for c in covariates if not pd.api.types.is_numeric_dtype(data[c])}
    rhs = [_q(treatment)] + [f"C({_q(c)})" if c in cat else _q(c) for c in covariates]
    formula = f"{_q(outcome)} ~ " + " + ".join(rhs)
    model = smf.logit(formula, data=data)
    res = _fit_quietly(lambda: model.fit(disp=0, maxiter=100), "logistic_adjusted")
    terms = tuple(_term(str(k), res.params[k], res.bse[k], alpha) for k in res.params.index)
    tname = _q(treatment)
    return LogisticRegressionResult(
        outcome=outcome,
        treatment=treatment,
        covariates=tuple(covariates),
        categorical=tuple(sorted(cat)),
        formula=formula,
        n=int(res.nobs),
        n_events=int(data[outcome].sum()),
        treatment_effect=next(t for t in terms if t.name == tname),
        terms=terms,
        log_likelihood=float(res.llf),
        alpha=alpha,
    )


@dataclass(frozen=True)
class ProportionalOddsResult:
    """Proportional-odds (cumulative logit) model; ``treatment_effect.odds_ratio`` > 1 means a worse category is
    more likely with treatment (categories ordered best → worst)."""

    outcome: str
    treatment: str
    covariates: tuple[str, ...]
    categories: tuple[str, ...]
    counts_treated: tuple[int, ...]
    counts_control: tuple[int, ...]
    n: int
    treatment_effect: ModelTerm
    terms: tuple[ModelTerm, ...]
    thresholds: tuple[tuple[str, float], ...]
    log_likelihood: float
    alpha: float
    ci_method: str
    method: str = (
        "proportional-odds cumulative logit model (statsmodels OrderedModel, BFGS); OR for a worse category; "
        "treatment CI by ci_method (profile likelihood or Wald), other terms Wald; Wald P values"
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def proportional_odds(
    df: pd.DataFrame,
    outcome: str,
    treatment: str,
    categories: Sequence[str],
    covariates: Sequence[str] = (),
    *,
    alpha: float = 0.05,
    ci_method: Literal["profile", "wald"] = "profile",
) -> ProportionalOddsResult:
    """Proportional-odds model for an ordered outcome (e.g. day-15 infection: resolution < … < superinfection).

    Parameters
    ----------
    df : DataFrame
        One row per patient.
    outcome : str
        Column holding one of ``categories``.
    treatment : str
        Binary treatment column (1 = active).
    categories : sequence of str
        Outcome categories from best to worst.
    covariates : sequence of str
        Numeric adjustment columns; non-numeric columns enter as indicators (first sorted level = reference).

    ci_method : {"profile", "wald"}
        Interval for the treatment OR: profile likelihood (default; the published day-15 result 0.59 (0.38 to 0.91)
        reproduces with it, the Wald upper limit 0.915 would print 0.92) or Wald.

    Returns
    -------
    ProportionalOddsResult
        ``treatment_effect.odds_ratio``: common OR of being in a worse category, treated vs control.
    """
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    alpha = _check_alpha(alpha)
    cols = [outcome, treatment, *covariates]
    _need_columns(df, cols, "proportional_odds")
    cats = tuple(categories)
    if len(cats) < 3 or len(set(cats)) != len(cats):
        raise InputError(expected="at least 3 distinct ordered categories", got=cats, field="categories")
    unknown = sorted(set(df[outcome].dropna().unique()) - set(cats), key=str)
    if unknown or df[outcome].isna().any():
        raise InputError(
            expected=f"{outcome} in {list(cats)} for every patient",
            got=unknown or "missing values",
            where="proportional_odds",
            field=outcome,
        )
    treat = _binary(df[treatment], treatment, "proportional_odds")
    exog = pd.DataFrame({treatment: treat.to_numpy()})
    for c in covariates:
        col = df[c]
        if col.isna().any():
            raise InputError(expected=f"{c} recorded for every patient", got="missing values", field=c)
        if pd.api.types.is_numeric_dtype(col):
            exog[c] = col.to_numpy(dtype=float)
        else:
            dummies = pd.get_dummies(col.astype(str), prefix=c, drop_first=True, dtype=float)
            for k in dummies.columns:
                exog[k] = dummies[k].to_numpy()
    y = pd.Series(pd.Categorical(df[outcome], categories=cats, ordered=True))
    model = OrderedModel(y, exog, distr="logit")
    res = _fit_quietly(lambda: model.fit(method="bfgs", disp=False, maxiter=2000), "proportional_odds")
    params, bse = res.params, res.bse
    terms = tuple(_term(str(k), params[k], bse[k], alpha) for k in exog.columns)
    if ci_method == "profile":
        lo, hi = _profile_interval(model, res, 0, alpha)
        terms = (_with_ci(terms[0], lo, hi),) + terms[1:]
    elif ci_method != "wald":
        raise InputError(expected="ci_method 'profile' or 'wald'", got=ci_method, field="ci_method")
    thr_names = [k for k in params.index if k not in exog.columns]
    # OrderedModel parametrises thresholds as the first cut-point then log-increments; report the cut-points.
    cut = model.transform_threshold_params(params.to_numpy())[1:-1]
    t_arr = treat.to_numpy()
    return ProportionalOddsResult(
        outcome=outcome,
        treatment=treatment,
        covariates=tuple(covariates),
        categories=cats,
        counts_treated=tuple(int(((df[outcome] == c).to_numpy() & (t_arr == 1)).sum()) for c in cats),
        counts_control=tuple(int(((df[outcome] == c).to_numpy() & (t_arr == 0)).sum()) for c in cats),
        n=int(len(df)),
        treatment_effect=terms[0],
        terms=terms,
        thresholds=tuple((str(n), float(v)) for n, v in zip(thr_names, cut, strict=True)),
        log_likelihood=float(res.llf),
        alpha=alpha,
        ci_method=ci_method,
    )


def _with_ci(term: ModelTerm, lo: float, hi: float) -> ModelTerm:
    d = asdict(term)
    d["ci_low"], d["ci_high"] = math.exp(lo), math.exp(hi)
    return ModelTerm(**d)


def _profile_interval(model: Any, res: Any, idx: int, alpha: float) -> tuple[float, float]:
    """Profile-likelihood limits (coefficient scale) of parameter ``idx``: where 2·(llf − profile llf) = χ²₁(1 − α)."""
    from scipy import optimize

    params = np.asarray(res.params, dtype=float)
    bhat, se = params[idx], float(np.asarray(res.bse)[idx])
    target = res.llf - stats.chi2.ppf(1 - alpha, 1) / 2
    start = np.delete(params, idx)

    def profile(b: float) -> float:
        r = optimize.minimize(lambda q: -model.loglike(np.insert(q, idx, b)), start, method="BFGS")
        return -float(r.fun) - target

    limits = []
    for sign in (-1.0, 1.0):
        step = 2.0 * se
        far = bhat + sign * step
        for _ in range(20):
            if profile(far) < 0:
                break
            step *= 2
            far = bhat + sign * step
        else:
            raise ConvergenceError(
                expected="a finite profile-likelihood limit",
                got="the profile likelihood stays above the cut-off",
                where="proportional_odds profile interval",
                todo="use ci_method='wald' or check for separation",
            )
        a, b = sorted((bhat, far))
        limits.append(optimize.brentq(profile, a, b, xtol=1e-10))
    return limits[0], limits[1]


# ------------------------------------------------------------------------------------------------------------------
# Survival (lifelines)
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KaplanMeierResult:
    """Kaplan–Meier estimate: survival just after each time in ``timeline`` (time 0 included).

    ``median`` is None when the curve never falls to 0.5 (median not reached).
    """

    label: str
    timeline: tuple[float, ...]
    survival: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    at_risk: tuple[int, ...]
    events: tuple[int, ...]
    n: int
    n_events: int
    median: float | None
    alpha: float
    method: str = "Kaplan-Meier product-limit estimator (lifelines KaplanMeierFitter); CI exponential Greenwood"

    def survival_at(self, t: float) -> float:
        """S(t): the estimate at the last timeline point <= t (right-continuous step function)."""
        idx = int(np.searchsorted(np.asarray(self.timeline), t, side="right")) - 1
        return self.survival[max(idx, 0)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def _durations(durations: Sequence[float], events: Sequence[int] | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(durations, dtype=float)
    e = np.ones_like(t) if events is None else np.asarray(events, dtype=float)
    if t.ndim != 1 or e.shape != t.shape or t.size == 0:
        raise InputError(
            expected="durations and events of the same non-zero length", got=(t.shape, e.shape), where=where
        )
    if np.isnan(t).any() or (t < 0).any():
        raise InputError(
            expected="non-negative durations (days) without missing values", got="negative/NaN", where=where
        )
    if not set(np.unique(e)) <= {0.0, 1.0}:
        raise InputError(
            expected="events coded 0 (censored) / 1 (event)", got=sorted(set(np.unique(e)))[:5], where=where
        )
    return t, e


def kaplan_meier(
    durations: Sequence[float], events: Sequence[int] | None = None, *, alpha: float = 0.05, label: str = "KM"
) -> KaplanMeierResult:
    """Kaplan–Meier survival estimate (lifelines).

    Parameters
    ----------
    durations : sequence of float
        Follow-up times (e.g. days to death or censoring).
    events : sequence of {0, 1}, optional
        1 = event observed, 0 = censored (default: all events).

    Examples
    --------
    >>> km = kaplan_meier([10, 20, 30], [1, 0, 1])
    >>> round(km.survival_at(15), 4), km.survival_at(30), km.median
    (0.6667, 0.0, 30.0)
    """
    from lifelines import KaplanMeierFitter

    alpha = _check_alpha(alpha)
    t, e = _durations(durations, events, "kaplan_meier")
    kmf = KaplanMeierFitter(alpha=alpha, label=label).fit(t, event_observed=e)
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_survival_function_
    table = kmf.event_table
    med = float(kmf.median_survival_time_)
    return KaplanMeierResult(
        label=label,
        timeline=tuple(float(x) for x in sf.index),
        survival=tuple(float(x) for x in sf.to_numpy()),
        ci_low=tuple(float(x) for x in ci.iloc[:, 0].to_numpy()),
        ci_high=tuple(float(x) for x in ci.iloc[:, 1].to_numpy()),
        at_risk=tuple(int(x) for x in table["at_risk"].to_numpy()),
        events=tuple(int(x) for x in table["observed"].to_numpy()),
        n=int(t.size),
        n_events=int(e.sum()),
        median=None if math.isinf(med) else med,
        alpha=alpha,
    )


def logrank(
    durations_a: Sequence[float],
    events_a: Sequence[int] | None,
    durations_b: Sequence[float],
    events_b: Sequence[int] | None,
    *,
    alpha: float = 0.05,
) -> TestResult:
    """Two-group log-rank (Mantel–Cox) test (lifelines ``logrank_test``); statistic is χ² on 1 df.

    Examples
    --------
    >>> round(logrank([10, 20, 30], None, [10, 20, 50], None).p_value, 6)  # R survdiff: p= 0.614107
    0.614107
    """
    from lifelines.statistics import logrank_test

    alpha = _check_alpha(alpha)
    ta, ea = _durations(durations_a, events_a, "logrank (group a)")
    tb, eb = _durations(durations_b, events_b, "logrank (group b)")
    res = logrank_test(ta, tb, event_observed_A=ea, event_observed_B=eb)
    return TestResult(
        statistic=float(res.test_statistic),
        p_value=float(res.p_value),
        method="log-rank test",
        statistic_name="chi-square",
        alternative="two-sided",
        alpha=alpha,
        degrees_of_freedom=1.0,
    )


@dataclass(frozen=True)
class HazardTerm:
    """One Cox coefficient: log-hazard ``coefficient`` and hazard ratio with Wald interval."""

    name: str
    coefficient: float
    std_error: float
    hazard_ratio: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass(frozen=True)
class CoxResult:
    """Cox proportional-hazards fit."""

    duration: str
    event: str
    covariates: tuple[str, ...]
    terms: tuple[HazardTerm, ...]
    n: int
    n_events: int
    log_likelihood: float
    concordance: float
    alpha: float
    method: str = "Cox proportional hazards, Efron ties (lifelines CoxPHFitter); Wald CI and P"

    def term(self, name: str) -> HazardTerm:
        """The term called ``name``."""
        for t in self.terms:
            if t.name == name:
                return t
        raise InputError(expected=f"one of {[t.name for t in self.terms]}", got=name, where="CoxResult.term")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def cox(df: pd.DataFrame, duration: str, event: str, covariates: Sequence[str], *, alpha: float = 0.05) -> CoxResult:
    """Cox proportional-hazards regression (lifelines ``CoxPHFitter``, Efron ties, no penalty).

    Non-numeric covariates enter as indicators (first sorted level = reference).

    Raises
    ------
    ConvergenceError
        The Newton iterations did not converge (lifelines' message names the suspected cause).
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError as LlConvergenceError
    from lifelines.exceptions import ConvergenceWarning as LlConvergenceWarning

    alpha = _check_alpha(alpha)
    _need_columns(df, [duration, event, *covariates], "cox")
    t, e = _durations(df[duration].to_numpy(), df[event].to_numpy(), "cox")
    data = pd.DataFrame({duration: t, event: e})
    for c in covariates:
        col = df[c]
        if col.isna().any():
            raise InputError(expected=f"{c} recorded for every patient", got="missing values", field=c, where="cox")
        if pd.api.types.is_numeric_dtype(col):
            data[c] = col.to_numpy(dtype=float)
        else:
            dummies = pd.get_dummies(col.astype(str), prefix=c, drop_first=True, dtype=float)
            for k in dummies.columns:
                data[k] = dummies[k].to_numpy()
    cph = CoxPHFitter(alpha=alpha)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cph.fit(data, duration_col=duration, event_col=event)
        except LlConvergenceError as exc:
            raise ConvergenceError(
                expected="a converged Cox fit",
                got=str(exc).splitlines()[0],
                where="cox",
                todo="suspect collinearity or a covariate that separates events; drop or merge covariates",
            ) from None
    bad = [w for w in caught if issubclass(w.category, LlConvergenceWarning)]
    if bad:
        raise ConvergenceError(
            expected="a converged Cox fit",
            got=str(bad[0].message).splitlines()[0],
            where="cox",
            todo="suspect (quasi-)separation or collinearity; drop or merge covariates",
        )
    s = cph.summary
    zc = _z(alpha)
    terms = tuple(
        HazardTerm(
            name=str(k),
            coefficient=float(s.loc[k, "coef"]),
            std_error=float(s.loc[k, "se(coef)"]),
            hazard_ratio=float(math.exp(s.loc[k, "coef"])),
            ci_low=float(math.exp(s.loc[k, "coef"] - zc * s.loc[k, "se(coef)"])),
            ci_high=float(math.exp(s.loc[k, "coef"] + zc * s.loc[k, "se(coef)"])),
            z=float(s.loc[k, "z"]),
            p_value=float(s.loc[k, "p"]),
        )
        for k in s.index
    )
    return CoxResult(
        duration=duration,
        event=event,
        covariates=tuple(covariates),
        terms=terms,
        n=int(len(data)),
        n_events=int(e.sum()),
        log_likelihood=float(cph.log_likelihood_),
        concordance=float(cph.concordance_index_),
        alpha=alpha,
    )


# ------------------------------------------------------------------------------------------------------------------
# Subgroups
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubgroupRow:
    """Treatment OR inside and outside one subgroup, and the treatment × subgroup interaction.

    ``interaction.odds_ratio`` is the ratio of the two ORs (in / out) from the logistic model
    ``outcome ~ treatment + subgroup + treatment:subgroup``; its P value is the Wald interaction test.
    """

    subgroup: str
    definition: str
    n_in: int
    n_out: int
    n_missing: int
    odds_ratio_in: OddsRatioResult
    odds_ratio_out: OddsRatioResult
    interaction: ModelTerm
    subgroup_main_effect: ModelTerm

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass(frozen=True)
class SubgroupTable:
    """Typed subgroup table (one :class:`SubgroupRow` per subgroup) with the method and alpha."""

    outcome: str
    treatment: str
    rows: tuple[SubgroupRow, ...]
    alpha: float
    zero_cell_correction: str
    method: str = (
        "within-subgroup Woolf ORs; interaction = Wald test of treatment:subgroup in a logistic model "
        "(statsmodels Logit) with treatment, subgroup and their product"
    )

    def to_frame(self) -> pd.DataFrame:
        """One row per subgroup, for display."""
        return pd.DataFrame(
            [
                {
                    "subgroup": r.subgroup,
                    "definition": r.definition,
                    "n_in": r.n_in,
                    "n_out": r.n_out,
                    "or_in": r.odds_ratio_in.odds_ratio,
                    "or_in_low": r.odds_ratio_in.ci_low,
                    "or_in_high": r.odds_ratio_in.ci_high,
                    "or_out": r.odds_ratio_out.odds_ratio,
                    "interaction_or": r.interaction.odds_ratio,
                    "interaction_low": r.interaction.ci_low,
                    "interaction_high": r.interaction.ci_high,
                    "interaction_p": r.interaction.p_value,
                }
                for r in self.rows
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


_OPS = {
    ">=": lambda s, v: s >= v,
    ">": lambda s, v: s > v,
    "<=": lambda s, v: s <= v,
    "<": lambda s, v: s < v,
    "==": lambda s, v: s == v,
}


def subgroup_interactions(
    df: pd.DataFrame,
    outcome: str,
    treatment: str,
    subgroups: Sequence[SubgroupSpec] | None = None,
    *,
    alpha: float = 0.05,
    zero_cell_correction: ZeroCellCorrection = "none",
) -> SubgroupTable:
    """Subgroup odds ratios and treatment × subgroup interaction tests.

    Parameters
    ----------
    df : DataFrame
        One row per patient with the outcome, the treatment and the subgroup columns.
    subgroups : sequence of SubgroupSpec, optional
        Default: the SAP's subgroups (APACHE II >= 25, Charlson >= 5, baseline SOFA >= 10, endotype == MALS),
        from :func:`immunoguide.analysis.sap.load_sap`.
    zero_cell_correction : str
        Passed to :func:`woolf_odds_ratio` for the within-subgroup ORs.

    Notes
    -----
    Patients with the subgroup variable missing are left out of that subgroup's analysis and counted in
    ``n_missing`` (they are not assigned to either level).
    """
    alpha = _check_alpha(alpha)
    specs = tuple(subgroups) if subgroups is not None else load_sap().subgroups
    _need_columns(df, [outcome, treatment, *[s.column for s in specs]], "subgroup_interactions")
    y = _binary(df[outcome], outcome, "subgroup_interactions")
    t = _binary(df[treatment], treatment, "subgroup_interactions")
    rows = []
    for spec in specs:
        col = df[spec.column]
        known = col.notna().to_numpy()
        if spec.comparator not in _OPS:
            raise InputError(expected=f"comparator in {sorted(_OPS)}", got=spec.comparator, where=spec.name)
        member = np.zeros(len(df), dtype=bool)
        member[known] = _OPS[spec.comparator](col[known], spec.value).to_numpy(dtype=bool)
        yk, tk, gk = y.to_numpy()[known], t.to_numpy()[known], member[known]

        or_in = _or_within(yk, tk, gk, alpha, zero_cell_correction)
        or_out = _or_within(yk, tk, ~gk, alpha, zero_cell_correction)
        fit = logistic_adjusted(
            pd.DataFrame({"y": yk, "t": tk, "g": gk.astype(float), "tg": (tk * gk).astype(float)}),
            "y",
            "t",
            ["g", "tg"],
            alpha=alpha,
        )
        terms = {x.name: x for x in fit.terms}
        rows.append(
            SubgroupRow(
                subgroup=spec.name,
                definition=spec.definition,
                n_in=int(gk.sum()),
                n_out=int((~gk).sum()),
                n_missing=int((~known).sum()),
                odds_ratio_in=or_in,
                odds_ratio_out=or_out,
                interaction=_rename(terms["tg"], f"{treatment} x {spec.name}"),
                subgroup_main_effect=_rename(terms["g"], spec.name),
            )
        )
    return SubgroupTable(
        outcome=outcome, treatment=treatment, rows=tuple(rows), alpha=alpha, zero_cell_correction=zero_cell_correction
    )


def _or_within(
    y: np.ndarray, t: np.ndarray, mask: np.ndarray, alpha: float, zcc: ZeroCellCorrection
) -> OddsRatioResult:
    """Woolf OR of treated vs control among the patients in ``mask``."""
    return woolf_odds_ratio(
        int(y[mask & (t == 1)].sum()),
        int((t[mask] == 1).sum()),
        int(y[mask & (t == 0)].sum()),
        int((t[mask] == 0).sum()),
        alpha=alpha,
        zero_cell_correction=zcc,
    )


def _rename(term: ModelTerm, name: str) -> ModelTerm:
    d = asdict(term)
    d["name"] = name
    return ModelTerm(**d)
