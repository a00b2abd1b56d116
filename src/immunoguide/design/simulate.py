"""Vectorised simulator of next-trial populations and outcomes, with priors from the ImmunoSep package.

Model (one row per randomised patient, numpy arrays of shape ``(trials, patients)``; every prior is read from the
cited ``priors.toml`` and each modelling choice that no source gives is listed in :attr:`Scenario.assumptions`):

1. **Endotype.** Only MALS and SII patients are randomised; among them MALS has probability
   ``mals / (mals + sii)`` of the screened mix (7.1 % and 33.9 % of 672 screened → 17.4 %, spec §7.3).
   :func:`screened_needed` gives the number screened for a target number randomised.
2. **Allocation** 1:1, ``n // 2`` active. **Dropout**: each patient is independently not analysable
   (withdrawn with data removal) with probability ``dropout`` (planning value 15 %, spec §6.1).
3. **Death by day 28** ~ Bernoulli(placebo mortality of the endotype + mortality effect). The stratum-specific
   placebo mortality is *unknown* (spec §7.3): it is an explicit parameter; without it the overall 49.7 % is used
   for both endotypes and flagged as an assumption (:class:`~immunoguide.errors.UnknownProtocolSettingWarning`).
   A death falls on days 1–9 with probability 0.388 (derived from eTable 8), otherwise on days 10–28, uniformly.
4. **SOFA.** Day-1 SOFA = round(Normal(9.4, 3.5)) clipped 0–24 (median 9, 49 % ≥ 10: spec §6.3). Day-d SOFA =
   clip(round(B − s·(d − 1) + ε_d), 0, 24) with a patient slope s ~ Normal(μ, 0.5) and ε_d ~ Normal(0, 1). The mean
   slope μ of each endotype × arm is **calibrated** (bisection on a fixed-seed calibration cohort) so that the SAP
   responder rate equals its target (placebo rate of the endotype, plus the effect for the active arm). A fraction
   of patients (10.2 % of day-9 survivors, derived from eTable 8) stop having SOFA recorded from a day uniform in
   3–9; the SAP's LOCF then applies. Deaths are independent of the trajectory (assumption).
5. **Organ-support-free days to day 28** (not an ImmunoSep endpoint; all assumptions): survivors spend
   S ~ Geometric(1 / mean) days (1, 2, …, capped at 28) on organ support, OSFD = 28 − S; deaths by day 28 get −1.
   Active arm mean = placebo mean + effect (days).

The SAP endpoint is derived with :func:`immunoguide.analysis.endpoints.sofa_response_arrays` (same rules as the
per-patient :func:`~immunoguide.analysis.endpoints.sofa_response`).

Examples
--------
>>> sc = Scenario.from_priors(placebo_mortality_28d={"MALS": 0.5, "SII": 0.5})
>>> round(sc.mals_fraction, 3), sc.n_randomised, sc.dropout
(0.174, 280, 0.15)
>>> sim = simulate_trials(sc, n_trials=2, seed=1, sofa=False)  # deaths, dropout and OSFD only
>>> sim.died_on_day.shape, sim.window.shape, int(sim.osfd.min()) >= -1
((2, 280), (2, 280, 8), True)
"""

from __future__ import annotations

import math
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from scipy import optimize

from immunoguide.analysis.endpoints import SofaFillPlan, sofa_fill_plan, sofa_response_arrays
from immunoguide.analysis.sap import load_sap
from immunoguide.errors import CriteriaError, InputError, StatisticsError, UnknownProtocolSettingWarning

__all__ = [
    "ENDOTYPES",
    "OSFD_CATEGORIES",
    "Prior",
    "Priors",
    "Scenario",
    "SimulatedTrials",
    "calibrate_slope",
    "load_priors",
    "screened_needed",
    "simulate_trials",
]

ENDOTYPES: tuple[str, ...] = ("MALS", "SII")
#: OSFD values -1 (death) .. 28, the ordered categories of the Mann-Whitney test.
OSFD_CATEGORIES: tuple[int, ...] = tuple(range(-1, 29))
_CONFIDENCE = frozenset({"confirmed", "likely", "derived", "assumption", "unknown"})
_CALIBRATION_N = 300_000
_CALIBRATION_SEED = 20251208  # fixed: calibration is deterministic (JAMA online date)


# ------------------------------------------------------------------------------------------------------------------
# Priors file
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prior:
    """One prior: value (None when unknown), confidence tag and source."""

    key: str
    value: Any
    confidence: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Priors:
    """The validated priors file; look entries up with :meth:`get` (``"screening.mals"``)."""

    id: str
    version: str
    entries: Mapping[str, Prior]

    def get(self, key: str) -> Prior:
        """The prior at dotted ``key``."""
        try:
            return self.entries[key]
        except KeyError:
            raise InputError(expected=f"a prior key in {sorted(self.entries)}", got=key, where=self.id) from None

    def value(self, key: str) -> Any:
        """Shortcut for ``get(key).value``."""
        return self.get(key).value


def _walk(prefix: str, table: Mapping[str, Any], out: dict[str, Prior]) -> None:
    if "confidence" in table:
        conf = table["confidence"]
        if conf not in _CONFIDENCE:
            raise CriteriaError(expected=f"confidence in {sorted(_CONFIDENCE)}", got=conf, where=prefix, todo="fix tag")
        if conf != "assumption" and conf != "unknown" and "source" not in table:
            raise CriteriaError(expected="a source for a non-assumption prior", got=dict(table), where=prefix)
        value = table.get("value")
        if value is None and conf != "unknown":
            value = {
                k: v for k, v in table.items() if k not in {"confidence", "source", "note", "derivation", "counts"}
            }
        if conf == "unknown" and "value" in table:
            raise CriteriaError(expected="no value for an unknown prior", got=table["value"], where=prefix)
        out[prefix] = Prior(prefix, value, conf, str(table.get("source", "")), str(table.get("note", "")))
        return
    for k, v in table.items():
        if isinstance(v, dict):
            _walk(f"{prefix}.{k}" if prefix else k, v, out)


def load_priors_text(text: str, *, where: str = "<text>") -> Priors:
    """Parse and validate priors TOML text (fractions in [0, 1], the screened mix sums to 1)."""
    doc = tomllib.loads(text)
    meta = doc.get("meta", {})
    entries: dict[str, Prior] = {}
    _walk("", {k: v for k, v in doc.items() if k != "meta"}, entries)
    pri = Priors(id=str(meta.get("id", where)), version=str(meta.get("version", "")), entries=MappingProxyType(entries))
    fractions = [
        "screening.mals",
        "screening.sii",
        "screening.unclassified",
        "screening.other_not_analysed",
        "placebo_response.MALS",
        "placebo_response.SII",
        "placebo_mortality_28d.overall",
        "death_timing.fraction_of_28d_deaths_by_day9",
        "sofa_missing.locf_fraction_day9_survivors",
        "design.dropout_planning",
    ]
    for key in fractions:
        v = pri.value(key)
        if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise CriteriaError(expected=f"{key} a fraction in [0, 1]", got=v, where=where, todo="fix the priors file")
    mix = sum(pri.value(f"screening.{k}") for k in ("mals", "sii", "unclassified", "other_not_analysed"))
    if abs(mix - 1.0) > 0.002:
        raise CriteriaError(expected="screened mix summing to 1", got=round(mix, 4), where=where, todo="fix screening")
    return pri


@cache
def load_priors() -> Priors:
    """Load the shipped ``design/priors.toml``.

    Examples
    --------
    >>> p = load_priors().get("screening.mals")
    >>> p.value, p.confidence
    (0.0714, 'confirmed')
    """
    text = resources.files("immunoguide.design").joinpath("priors.toml").read_text(encoding="utf-8")
    return load_priors_text(text, where="design/priors.toml")


def screened_needed(n_randomised: int, *, priors: Priors | None = None) -> float:
    """Expected number screened to randomise ``n_randomised`` MALS/SII patients (``n / (mals + sii)``).

    >>> round(screened_needed(276))
    672
    """
    pri = priors or load_priors()
    return n_randomised / (pri.value("screening.mals") + pri.value("screening.sii"))


# ------------------------------------------------------------------------------------------------------------------
# Scenario
# ------------------------------------------------------------------------------------------------------------------
def _per_endotype(x: float | Mapping[str, float], name: str) -> Mapping[str, float]:
    d = {e: float(x) for e in ENDOTYPES} if isinstance(x, (int, float)) else {e: float(x[e]) for e in ENDOTYPES}
    for e, v in d.items():
        if not math.isfinite(v):
            raise InputError(expected=f"{name} finite", got=v, field=name, where=e)
    return MappingProxyType(d)


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator needs; build it with :meth:`from_priors`.

    Rates are probabilities; effects are absolute differences (active − placebo) on the same scale, per endotype.
    ``support_days_effect`` is in days (active − placebo mean organ-support days among survivors).
    """

    n_randomised: int
    dropout: float
    mals_fraction: float
    placebo_response: Mapping[str, float]
    response_effect: Mapping[str, float]
    placebo_mortality_28d: Mapping[str, float]
    mortality_effect: Mapping[str, float]
    fraction_deaths_by_day9: float
    baseline_sofa_mean: float
    baseline_sofa_sd: float
    slope_sd: float
    noise_sd: float
    locf_fraction: float
    support_days_mean_placebo: float
    support_days_effect: float
    death_day_policy: str = "as_other_days"
    assumptions: tuple[str, ...] = field(default=())
    priors_id: str = ""

    @classmethod
    def from_priors(
        cls,
        *,
        n_randomised: int = 280,
        dropout: float | None = None,
        placebo_response: float | Mapping[str, float] | None = None,
        response_effect: float | Mapping[str, float] = 0.0,
        placebo_mortality_28d: float | Mapping[str, float] | None = None,
        mortality_effect: float | Mapping[str, float] = 0.0,
        support_days_mean_placebo: float | None = None,
        support_days_effect: float = 0.0,
        death_day_policy: str = "as_other_days",
        priors: Priors | None = None,
    ) -> Scenario:
        """A scenario from the priors file, with explicit overrides.

        Parameters
        ----------
        n_randomised : int
            Patients randomised per trial (both arms).
        dropout : float, optional
            Fraction not analysable; default the planning 15 %.
        placebo_response : float or {endotype: float}, optional
            SAP responder rate on placebo; default the ImmunoSep placebo rates by endotype (4/23, 22/122).
        response_effect : float or {endotype: float}
            Active − placebo responder rate.
        placebo_mortality_28d : float or {endotype: float}, optional
            **Unknown in the sources by endotype.** Default: the overall 72/145 for both, flagged as an assumption
            with an :class:`UnknownProtocolSettingWarning`.
        mortality_effect : float or {endotype: float}
            Active − placebo 28-day mortality.
        support_days_mean_placebo : float, optional
            Mean organ-support days among 28-day survivors on placebo (assumption; default from priors).
        support_days_effect : float
            Active − placebo mean organ-support days (days; negative favours active).
        """
        pri = priors or load_priors()
        assumptions: list[str] = []
        if not isinstance(n_randomised, int) or isinstance(n_randomised, bool) or n_randomised < 2:
            raise InputError(expected="n_randomised an integer >= 2", got=n_randomised, field="n_randomised")
        drop = pri.value("design.dropout_planning") if dropout is None else float(dropout)
        if not 0.0 <= drop < 1.0:
            raise InputError(expected="0 <= dropout < 1", got=drop, field="dropout")
        pr = placebo_response
        if pr is None:
            pr = {e: pri.value(f"placebo_response.{e}") for e in ENDOTYPES}
        mort = placebo_mortality_28d
        if mort is None:
            mort = pri.value("placebo_mortality_28d.overall")
            msg = (
                "placebo 28-day mortality by endotype is unknown (spec 7.3); using the overall "
                f"{mort:.1%} (72/145) for MALS and SII"
            )
            assumptions.append(msg)
            warnings.warn(msg, UnknownProtocolSettingWarning, stacklevel=2)
        sdm = (
            pri.value("osfd.support_days_mean_placebo")
            if support_days_mean_placebo is None
            else support_days_mean_placebo
        )
        for key in (
            "sofa_baseline.model",
            "sofa_trajectory.slope_sd_points_per_day",
            "sofa_trajectory.daily_noise_sd_points",
            "sofa_missing.mechanism",
            "death_timing.within_period",
            "osfd.support_days_mean_placebo",
            "osfd.death_value",
        ):
            p = pri.get(key)
            if p.confidence == "assumption":
                assumptions.append(f"{key}: {p.note}")
        assumptions.append("deaths and dropout are independent of the SOFA trajectory and of each other")
        mals, sii = pri.value("screening.mals"), pri.value("screening.sii")
        base = pri.value("sofa_baseline.model")
        sc = cls(
            n_randomised=n_randomised,
            dropout=drop,
            mals_fraction=mals / (mals + sii),
            placebo_response=_per_endotype(pr, "placebo_response"),
            response_effect=_per_endotype(response_effect, "response_effect"),
            placebo_mortality_28d=_per_endotype(mort, "placebo_mortality_28d"),
            mortality_effect=_per_endotype(mortality_effect, "mortality_effect"),
            fraction_deaths_by_day9=pri.value("death_timing.fraction_of_28d_deaths_by_day9"),
            baseline_sofa_mean=float(base["mean"]),
            baseline_sofa_sd=float(base["sd"]),
            slope_sd=pri.value("sofa_trajectory.slope_sd_points_per_day"),
            noise_sd=pri.value("sofa_trajectory.daily_noise_sd_points"),
            locf_fraction=pri.value("sofa_missing.locf_fraction_day9_survivors"),
            support_days_mean_placebo=float(sdm),
            support_days_effect=float(support_days_effect),
            death_day_policy=death_day_policy,
            assumptions=tuple(assumptions),
            priors_id=pri.id,
        )
        sc.validate()
        return sc

    def with_n(self, n_randomised: int) -> Scenario:
        """The same scenario with another trial size."""
        return replace(self, n_randomised=n_randomised)

    def response_rate(self, endotype: str, active: bool) -> float:
        """Target SAP responder probability of one endotype × arm."""
        return self.placebo_response[endotype] + (self.response_effect[endotype] if active else 0.0)

    def mortality_rate(self, endotype: str, active: bool) -> float:
        """28-day mortality probability of one endotype × arm."""
        return self.placebo_mortality_28d[endotype] + (self.mortality_effect[endotype] if active else 0.0)

    def support_days_mean(self, active: bool) -> float:
        """Mean organ-support days among 28-day survivors of one arm."""
        return self.support_days_mean_placebo + (self.support_days_effect if active else 0.0)

    def marginal_response_rate(self, active: bool) -> float:
        """Responder probability of one arm averaged over the endotype mix."""
        w = {"MALS": self.mals_fraction, "SII": 1.0 - self.mals_fraction}
        return sum(w[e] * self.response_rate(e, active) for e in ENDOTYPES)

    def marginal_mortality_rate(self, active: bool) -> float:
        """28-day mortality of one arm averaged over the endotype mix."""
        w = {"MALS": self.mals_fraction, "SII": 1.0 - self.mals_fraction}
        return sum(w[e] * self.mortality_rate(e, active) for e in ENDOTYPES)

    @property
    def n_active(self) -> int:
        """Patients randomised to the active arm (``n // 2``)."""
        return self.n_randomised // 2

    def validate(self) -> None:
        """Raise :class:`InputError` if a rate leaves [0, 1] or the support-day mean is below 1."""
        for e in ENDOTYPES:
            for active in (False, True):
                for name, v in (
                    ("response", self.response_rate(e, active)),
                    ("mortality", self.mortality_rate(e, active)),
                ):
                    if not 0.0 <= v <= 1.0:
                        raise InputError(
                            expected=f"{name} probability in [0, 1]",
                            got=round(v, 4),
                            where=f"{e} {'active' if active else 'placebo'}",
                            todo="reduce the effect size",
                        )
        for active in (False, True):
            if self.support_days_mean(active) < 1.0:
                raise InputError(
                    expected="mean organ-support days >= 1",
                    got=self.support_days_mean(active),
                    where="active" if active else "placebo",
                    todo="reduce the support-days effect",
                )
        load_sap().resolve_policies({"death_day": self.death_day_policy})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the scenario (including the assumptions)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = dict(v) if isinstance(v, Mapping) else (list(v) if isinstance(v, tuple) else v)
        return out


# ------------------------------------------------------------------------------------------------------------------
# Simulation core
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Components:
    baseline: np.ndarray  # (...,)
    slope_z: np.ndarray  # (...,)
    noise: np.ndarray  # (..., L)
    died_on_day: np.ndarray  # (...,) inf = alive at day 28
    stop_day: np.ndarray  # (...,) inf = SOFA recorded throughout


@dataclass(frozen=True)
class _CalibrationScenario:
    baseline_sofa_mean: float
    baseline_sofa_sd: float
    slope_sd: float
    noise_sd: float
    locf_fraction: float
    fraction_deaths_by_day9: float
    death_day_policy: str


def _draw_deaths(
    rng: np.random.Generator, shape: tuple[int, ...], mortality: np.ndarray | float, f9: float
) -> np.ndarray:
    """Study day of death by day 28 (inf = alive at day 28)."""
    dies = rng.random(size=shape) < mortality
    early = rng.random(size=shape) < f9
    day = np.where(early, rng.integers(1, 10, size=shape), rng.integers(10, 29, size=shape)).astype(float)
    return np.where(dies, day, np.inf)


def _draw_components(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    n_days: int,
    died_on_day: np.ndarray,
    sc: Scenario | _CalibrationScenario,
) -> _Components:
    baseline = np.clip(np.rint(rng.normal(sc.baseline_sofa_mean, sc.baseline_sofa_sd, size=shape)), 0, 24)
    slope_z = rng.standard_normal(size=shape)
    noise = rng.standard_normal(size=shape + (n_days,))
    stops = rng.random(size=shape) < sc.locf_fraction
    stop_day = np.where(stops, rng.integers(3, 10, size=shape).astype(float), np.inf)
    return _Components(baseline, slope_z, noise, died_on_day, stop_day)


def _window(
    comp: _Components,
    slope_mean: np.ndarray | float,
    sc: Scenario | _CalibrationScenario,
    first_day: int,
    last_day: int,
) -> np.ndarray:
    """Daily SOFA on first_day..last_day (NaN where not recorded)."""
    days = np.arange(first_day, last_day + 1, dtype=float)
    slope = slope_mean + sc.slope_sd * comp.slope_z
    vals = comp.baseline[..., None] - slope[..., None] * (days - 1.0) + sc.noise_sd * comp.noise[..., : days.size]
    vals = np.clip(np.rint(vals), 0.0, 24.0)
    return np.where(days >= comp.stop_day[..., None], np.nan, vals)


def _responder_rate(
    comp: _Components, mu: float, sc: Scenario | _CalibrationScenario, plan: SofaFillPlan, weights: np.ndarray
) -> float:
    """Responder fraction of the calibration cohort at mean slope ``mu``.

    ``weights[i, j]`` counts the window days of patient ``i`` whose value comes from column ``j`` of
    [baseline | window] under the plan (LOCF sources); days after death add the death score. This equals
    ``plan.totals`` (checked in the tests) but avoids a gather per evaluation.
    """
    spec = plan.spec
    days = np.arange(spec.first_day, spec.last_day + 1, dtype=float)
    vals = comp.baseline[:, None] - (mu + sc.slope_sd * comp.slope_z)[:, None] * (days - 1.0) + sc.noise_sd * comp.noise
    np.clip(np.rint(vals, out=vals), 0.0, 24.0, out=vals)
    totals = comp.baseline * weights[:, 0] + np.einsum("ij,ij->i", vals, weights[:, 1:])
    totals += float(spec.death_score) * plan.dead.sum(axis=1)
    return float(plan.responders(comp.baseline, totals).mean())


def _plan_weights(plan: SofaFillPlan) -> np.ndarray:
    n, L = plan.source.shape
    w = np.zeros((n, L + 1))
    rows = np.arange(n)
    for k in range(L):
        w[rows, plan.source[:, k]] += ~plan.dead[:, k]
    return w


@lru_cache(maxsize=256)
def _calibrate_cached(
    target: float,
    mortality: float,
    sc_key: tuple[float, ...],
    death_day_policy: str,
    endpoint: str,
    n_cal: int,
) -> tuple[float, float]:
    (bmean, bsd, slope_sd, noise_sd, locf, f9) = sc_key
    sc = _CalibrationScenario(bmean, bsd, slope_sd, noise_sd, locf, f9, death_day_policy)
    spec = load_sap().sofa_response[endpoint]
    rng = np.random.default_rng(_CALIBRATION_SEED)
    comp = _draw_components(rng, (n_cal,), spec.n_values, _draw_deaths(rng, (n_cal,), mortality, f9), sc)
    days = np.arange(spec.first_day, spec.last_day + 1, dtype=float)
    # the SAP fill pattern (death score / LOCF) does not depend on the slope: build it once
    plan = sofa_fill_plan(
        np.zeros(n_cal, dtype=bool),
        days[None, :] >= comp.stop_day[:, None],
        comp.died_on_day,
        spec=spec,
        death_day=death_day_policy,
    )
    weights = _plan_weights(plan)
    lo, hi = -4.0, 8.0
    r_lo, r_hi = _responder_rate(comp, lo, sc, plan, weights), _responder_rate(comp, hi, sc, plan, weights)
    if not (r_lo <= target <= r_hi):
        raise StatisticsError(
            expected=f"a responder rate between {r_lo:.3f} and {r_hi:.3f} reachable under this mortality",
            got=target,
            where=f"SOFA-trajectory calibration (endpoint {endpoint}, 28-day mortality {mortality:.3f})",
            todo="lower the target responder rate or the mortality (deaths before day 9 are scored 24)",
        )
    # the rate is a (fine) step function of the slope, non-decreasing; Brent's method needs ~10 evaluations
    hi = optimize.brentq(lambda m: _responder_rate(comp, m, sc, plan, weights) - target, lo, hi, xtol=1e-4, maxiter=200)
    # report the achieved rate through the public SAP derivation (cross-checks the plan shortcut)
    achieved = sofa_response_arrays(
        comp.baseline,
        _window(comp, hi, sc, spec.first_day, spec.last_day),
        comp.died_on_day,
        endpoint=endpoint,  # type: ignore[arg-type]
        policies={"death_day": death_day_policy},
    ).responder.mean()
    return hi, float(achieved)


def calibrate_slope(
    sc: Scenario,
    endotype: str,
    active: bool,
    *,
    endpoint: Literal["d2_9", "d2_15"] = "d2_9",
    n_cal: int = _CALIBRATION_N,
) -> tuple[float, float]:
    """Mean daily SOFA slope (points/day) giving the target responder rate of one endotype × arm.

    Returns ``(slope, achieved_rate)``; the achieved rate on the fixed-seed calibration cohort of ``n_cal``
    patients is within about 1/n_cal of the target, and the population rate within the cohort's sampling error
    sqrt(r(1 − r)/n_cal) (≈ 0.0007 for r = 0.2). Deterministic and cached.
    """
    key = (
        sc.baseline_sofa_mean,
        sc.baseline_sofa_sd,
        sc.slope_sd,
        sc.noise_sd,
        sc.locf_fraction,
        sc.fraction_deaths_by_day9,
    )
    return _calibrate_cached(
        round(sc.response_rate(endotype, active), 12),
        round(sc.mortality_rate(endotype, active), 12),
        key,
        sc.death_day_policy,
        endpoint,
        n_cal,
    )


@dataclass(frozen=True)
class SimulatedTrials:
    """Per-patient arrays of ``n_trials`` simulated trials (shape ``(n_trials, n_randomised)``).

    ``window`` holds SOFA on the endpoint's days (NaN = not recorded); ``died_on_day`` is inf for 28-day survivors;
    ``osfd`` is the organ-support-free days to day 28 (−1 = death).
    """

    endpoint: str
    death_day_policy: str
    active: np.ndarray = field(repr=False)
    mals: np.ndarray = field(repr=False)
    analysable: np.ndarray = field(repr=False)
    baseline: np.ndarray = field(repr=False)
    window: np.ndarray = field(repr=False)
    died_on_day: np.ndarray = field(repr=False)
    osfd: np.ndarray = field(repr=False)
    slopes: Mapping[str, float] = field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return int(self.active.shape[0])


def simulate_trials(
    sc: Scenario,
    n_trials: int,
    *,
    seed: int | np.random.SeedSequence | None = None,
    endpoint: Literal["d2_9", "d2_15"] = "d2_9",
    sofa: bool = True,
) -> SimulatedTrials:
    """Simulate ``n_trials`` trials of ``sc.n_randomised`` patients (vectorised; memory ~ 10 × trials × n × days bytes).

    Population (endotype, dropout), deaths, SOFA trajectories and organ support use separate random streams spawned
    from ``seed``, so switching the SOFA part off (``sofa=False``: mortality and OSFD only, no calibration; the SOFA
    arrays are then NaN) leaves deaths and OSFD unchanged. Use
    :func:`immunoguide.design.power.simulate_primary_analysis` for many trials (it works in chunks).
    """
    if not isinstance(n_trials, int) or n_trials < 1:
        raise InputError(expected="n_trials an integer >= 1", got=n_trials, field="n_trials")
    spec = load_sap().sofa_response[endpoint]
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    r_pop, r_death, r_sofa, r_support = (np.random.default_rng(s) for s in ss.spawn(4))
    shape = (n_trials, sc.n_randomised)
    active = np.broadcast_to(np.arange(sc.n_randomised) < sc.n_active, shape)
    mals = r_pop.random(size=shape) < sc.mals_fraction
    analysable = r_pop.random(size=shape) >= sc.dropout
    group = mals.astype(np.int64) * 2 + active.astype(
        np.int64
    )  # 0 SII-placebo, 1 SII-active, 2 MALS-placebo, 3 MALS-active
    combos = [(e, a) for e in ("SII", "MALS") for a in (False, True)]
    mort = np.array([sc.mortality_rate(e, a) for e, a in combos])[group]
    died = _draw_deaths(r_death, shape, mort, sc.fraction_deaths_by_day9)
    slopes: dict[str, float] = {}
    if sofa:
        comp = _draw_components(r_sofa, shape, spec.n_values, died, sc)
        slopes = {
            f"{e}-{'active' if a else 'placebo'}": calibrate_slope(sc, e, a, endpoint=endpoint)[0] for e, a in combos
        }
        slope_mean = np.array([slopes[f"{e}-{'active' if a else 'placebo'}"] for e, a in combos])[group]
        baseline, window = comp.baseline, _window(comp, slope_mean, sc, spec.first_day, spec.last_day)
    else:
        baseline, window = np.full(shape, np.nan), np.full(shape + (spec.n_values,), np.nan)
    # organ-support-free days (independent of the SOFA trajectory; survivors only)
    support_mean = np.where(active, sc.support_days_mean(True), sc.support_days_mean(False))
    support = np.minimum(r_support.geometric(1.0 / support_mean), 28)
    osfd = np.where(np.isfinite(died), -1, 28 - support).astype(np.int64)
    return SimulatedTrials(
        endpoint=endpoint,
        death_day_policy=sc.death_day_policy,
        active=np.array(active),
        mals=mals,
        analysable=analysable,
        baseline=baseline,
        window=window,
        died_on_day=died,
        osfd=osfd,
        slopes=MappingProxyType(slopes),
    )
