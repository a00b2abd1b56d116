"""Next-trial design: closed-form sample size, simulated power against the closed form, priors, simulator, CLI."""

from __future__ import annotations

import json
import math
import warnings
from importlib import resources

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from immunoguide.analysis import DailySofaRecord, sofa_response
from immunoguide.analysis.vectorised import mann_whitney_from_counts
from immunoguide.cli._design import design_app
from immunoguide.design import (
    Scenario,
    calibrate_slope,
    closed_form_power,
    exact_power_two_proportions,
    load_priors,
    primary_analysis,
    sample_size_two_proportions,
    screened_needed,
    simulate_primary_analysis,
    simulate_trials,
    simulated_power,
    simulated_sample_size,
)
from immunoguide.design.simulate import load_priors_text
from immunoguide.errors import CriteriaError, InputError, StatisticsError, UnknownProtocolSettingWarning

PRIORS_TEXT = resources.files("immunoguide.design").joinpath("priors.toml").read_text("utf-8")


def sap_design_scenario(n_randomised: int = 236, dropout: float = 0.0) -> Scenario:
    """The SAP planning assumptions (20 % vs 40 % responders; spec §6.1), placebo mortality given explicitly."""
    return Scenario.from_priors(
        n_randomised=n_randomised,
        dropout=dropout,
        placebo_response=0.20,
        response_effect=0.20,
        placebo_mortality_28d=load_priors().value("placebo_mortality_28d.overall"),
    )


# ----------------------------------------------------------------------------------------------------------------
# Closed form
# ----------------------------------------------------------------------------------------------------------------
def test_sap_sample_size_is_109_uncorrected_and_118_corrected_with_table_z_values() -> None:
    """40 % vs 20 %, two-sided α 0.05, power 0.90: 109 per arm uncorrected and 118 with the Fleiss continuity
    correction (spec §6.1 'Recomputed (derived)'), reproduced with the two-decimal z values 1.96 and 1.28."""
    r = sample_size_two_proportions(0.20, 0.40, alpha=0.05, power=0.90, quantiles="table_2dp")
    assert (r.n_per_arm_uncorrected, r.n_per_arm_corrected) == (109, 118)


def test_exact_quantiles_give_108_24_and_118_02_which_round_up_to_109_and_119() -> None:
    """With exact normal quantiles n = 108.24 and n' = 118.02 per arm: the spec's 118 is n' to the nearest integer;
    the conventional round-up gives 119 (documented discrepancy with spec §6.1)."""
    r = sample_size_two_proportions(0.20, 0.40)
    assert round(r.n_per_arm_uncorrected_exact, 2) == 108.24
    assert round(r.n_per_arm_corrected_exact, 2) == 118.02
    assert (r.n_per_arm_uncorrected, r.n_per_arm_corrected) == (109, 119)
    assert round(r.n_per_arm_corrected_exact) == 118


def test_fleiss_formula_hand_computation() -> None:
    """Hand computation: n = (1.959964·√(2·.3·.7) + 1.281552·√(.24 + .16))² / .2² ; n' = n/4 (1 + √(1 + 4/(0.2 n)))²."""
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.90)
    n = (za * math.sqrt(2 * 0.3 * 0.7) + zb * math.sqrt(0.24 + 0.16)) ** 2 / 0.2**2
    ncc = n / 4 * (1 + math.sqrt(1 + 4 / (0.2 * n))) ** 2
    r = sample_size_two_proportions(0.40, 0.20)  # symmetric in the two rates
    assert r.n_per_arm_uncorrected_exact == pytest.approx(n, rel=1e-12)
    assert r.n_per_arm_corrected_exact == pytest.approx(ncc, rel=1e-12)


def test_protocol_117_per_arm_with_15_percent_dropout_needs_276_randomised() -> None:
    """234 / 0.85 = 275.3 → 276 (the protocol rounded further, to 280: spec §6.1)."""
    r = sample_size_two_proportions(0.20, 0.40)
    assert math.ceil(2 * 117 / 0.85) == 276
    assert r.randomised_total(0.15) == math.ceil(2 * 119 / 0.85)


def test_closed_form_power_inverts_the_sample_size_formula() -> None:
    """At the unrounded n the normal-approximation power is exactly the target, with and without correction."""
    r = sample_size_two_proportions(0.20, 0.40)
    assert closed_form_power(0.2, 0.4, r.n_per_arm_uncorrected_exact) == pytest.approx(0.90, abs=1e-9)
    assert closed_form_power(0.2, 0.4, r.n_per_arm_corrected_exact, continuity_correction=True) == pytest.approx(
        0.90, abs=1e-9
    )


def test_exact_fisher_power_equals_enumeration_with_scipy() -> None:
    """The enumerated exact power equals a brute-force loop over scipy.stats.fisher_exact (15 vs 17 patients)."""
    n_c, n_a, p_c, p_a = 17, 15, 0.2, 0.6
    ref = sum(
        stats.binom.pmf(a, n_a, p_a) * stats.binom.pmf(c, n_c, p_c)
        for a in range(n_a + 1)
        for c in range(n_c + 1)
        if stats.fisher_exact([[a, n_a - a], [c, n_c - c]]).pvalue <= 0.05
    )
    assert exact_power_two_proportions(n_c, n_a, p_c, p_a) == pytest.approx(ref, rel=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Simulated power
# ----------------------------------------------------------------------------------------------------------------
def test_simulated_power_at_118_per_arm_is_within_3_mc_se_of_the_closed_form() -> None:
    """Full simulated trials (SOFA trajectories → SAP responders → Fisher) at 118 analysable per arm, 20 % vs 40 %:
    power within 3 Monte Carlo SEs of the continuity-corrected closed form (0.8999) and of the exact Fisher power."""
    r = simulated_power(sap_design_scenario(236), "sofa-response", n_sims=4000, seed=20251208)
    cf = r.closed_form
    assert cf is not None and cf.n_per_arm == 118.0
    assert abs(r.power - cf.power_continuity_corrected) <= 3 * r.mc_se, (r.power, cf)
    assert abs(r.power - cf.power_fisher_exact) <= 3 * r.mc_se, (r.power, cf)
    assert r.mc_se == pytest.approx(math.sqrt(r.power * (1 - r.power) / 4000))


def test_same_seed_gives_the_same_simulated_power_and_another_seed_differs() -> None:
    """Reproducibility: the same seed reproduces every trial's P value; a different seed does not."""
    sc = sap_design_scenario(120)
    a = simulate_primary_analysis(sc, 300, seed=5)
    b = simulate_primary_analysis(sc, 300, seed=5)
    c = simulate_primary_analysis(sc, 300, seed=6)
    np.testing.assert_array_equal(a.p_value, b.p_value)
    assert not np.array_equal(a.p_value, c.p_value)


def test_simulated_responder_rates_match_their_calibrated_targets() -> None:
    """Across 2000 simulated trials the placebo and active responder proportions are 20 % and 40 % within 3 SE
    (simulation SE combined with the calibration cohort's sampling SE, n_cal = 300,000)."""
    b = simulate_primary_analysis(sap_design_scenario(236), 2000, seed=3)
    for events, n, target in ((b.events_control, b.n_control, 0.20), (b.events_active, b.n_active, 0.40)):
        p = events.sum() / n.sum()
        se = math.sqrt(target * (1 - target) * (1 / n.sum() + 1 / 300_000))
        assert abs(p - target) <= 3 * se


def test_calibration_shortcut_equals_the_public_sap_derivation() -> None:
    """The weights shortcut used inside the slope calibration gives the same responders as sofa_response_arrays."""
    from immunoguide.analysis import sofa_response_arrays
    from immunoguide.analysis.endpoints import sofa_fill_plan
    from immunoguide.design import simulate as sim_mod

    sc = sap_design_scenario()
    spec = sim_mod.load_sap().sofa_response["d2_9"]
    rng = np.random.default_rng(0)
    comp = sim_mod._draw_components(rng, (5000,), 8, sim_mod._draw_deaths(rng, (5000,), 0.5, 0.39), sc)
    window = sim_mod._window(comp, 0.2, sc, 2, 9)
    plan = sofa_fill_plan(np.zeros(5000, bool), np.isnan(window), comp.died_on_day, spec=spec)
    fast = sim_mod._responder_rate(comp, 0.2, sc, plan, sim_mod._plan_weights(plan))
    ref = sofa_response_arrays(comp.baseline, window, comp.died_on_day).responder.mean()
    assert fast == ref


def test_calibrated_trajectory_reaches_its_target_on_the_calibration_cohort() -> None:
    """The slope calibration hits the target responder rate to within 1/n_cal on its fixed-seed cohort."""
    sc = sap_design_scenario()
    for active, target in ((False, 0.20), (True, 0.40)):
        _, achieved = calibrate_slope(sc, "SII", active)
        assert abs(achieved - target) <= 2e-4


def test_unreachable_responder_rate_is_refused() -> None:
    """A 95 % responder rate cannot be reached when ~20 % die before day 9 (scored 24): IG-E500."""
    sc = Scenario.from_priors(placebo_response=0.95, placebo_mortality_28d=0.5)
    with pytest.raises(StatisticsError):
        calibrate_slope(sc, "SII", False)


def test_type_one_error_of_mortality_analysis_is_at_most_alpha() -> None:
    """With no mortality effect, the Fisher test on 28-day deaths rejects at most α (+3 MC SE): it is conservative."""
    r = simulated_power(sap_design_scenario(280, 0.15), "mortality28", n_sims=3000, seed=11)
    assert r.power <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 3000)
    assert r.closed_form is None  # no effect, no closed form


def test_mortality_effect_gives_power_close_to_the_closed_form() -> None:
    """A 15-point mortality reduction (49.7 % → 34.7 %) at 280 randomised, 15 % dropout: simulated power within
    3 MC SE of the exact Fisher power at the expected analysable size."""
    sc = Scenario.from_priors(placebo_mortality_28d=0.497, mortality_effect=-0.15, placebo_response=0.2)
    r = simulated_power(sc, "mortality28", n_sims=3000, seed=12)
    assert r.closed_form is not None
    # the analysable n per arm is random (dropout), so allow the exact power at floor(n) some slack of 0.02
    assert abs(r.power - r.closed_form.power_fisher_exact) <= 3 * r.mc_se + 0.02


def test_vectorised_primary_analysis_equals_per_patient_sap_derivation_and_scipy() -> None:
    """For one simulated trial the vectorised analysis equals the per-patient SAP endpoint + scalar estimators."""
    from immunoguide.analysis import two_proportions

    sc = sap_design_scenario(280, 0.15)
    sim = simulate_trials(sc, 3, seed=99)
    batch = primary_analysis(sim)
    for t in range(3):
        ev = {True: 0, False: 0}
        nn = {True: 0, False: 0}
        for j in range(sc.n_randomised):
            if not sim.analysable[t, j]:
                continue
            died = sim.died_on_day[t, j]
            recs = [DailySofaRecord("p", 1, int(sim.baseline[t, j]))]
            recs += [
                DailySofaRecord("p", d, None if np.isnan(v) else int(v))
                for d, v in zip(range(2, 10), sim.window[t, j], strict=True)
                if not (math.isfinite(died) and d > died)
            ]
            if math.isfinite(died):
                recs.append(DailySofaRecord("p", 10, None, died_on_day=int(died)))
            act = bool(sim.active[t, j])
            ev[act] += bool(sofa_response(recs).responder)
            nn[act] += 1
        assert (batch.events_active[t], batch.n_active[t]) == (ev[True], nn[True])
        assert (batch.events_control[t], batch.n_control[t]) == (ev[False], nn[False])
        ref = two_proportions(ev[True], nn[True], ev[False], nn[False])
        assert batch.p_value[t] == pytest.approx(ref.fisher.p_value, rel=1e-9)
        assert batch.ci_low[t] == pytest.approx(ref.risk_difference.ci_low, rel=1e-12)
        assert batch.odds_ratio[t] == pytest.approx(ref.odds_ratio.odds_ratio, rel=1e-12)


def test_osfd_simulation_is_tested_with_mann_whitney_like_scipy() -> None:
    """The OSFD endpoint (−1 for death, else 28 − support days) of a simulated trial gives scipy's Mann–Whitney P."""
    sc = Scenario.from_priors(placebo_mortality_28d=0.5, support_days_effect=-4.0)
    sim = simulate_trials(sc, 1, seed=4, sofa=False)
    use = sim.analysable[0]
    x, y = sim.osfd[0][use & sim.active[0]], sim.osfd[0][use & ~sim.active[0]]
    assert set(np.unique(sim.osfd)) <= set(range(-1, 29))
    assert np.all(sim.osfd[np.isfinite(sim.died_on_day)] == -1)
    _, p = mann_whitney_from_counts(np.bincount(x + 1, minlength=30)[None], np.bincount(y + 1, minlength=30)[None])
    assert p[0] == pytest.approx(stats.mannwhitneyu(x, y, method="asymptotic").pvalue, rel=1e-9)


def test_osfd_power_grows_with_effect_and_simulated_sample_size_finds_a_bracket() -> None:
    """Larger support-day reductions give more power; the simulated sample-size search returns an even n whose
    simulated power reaches the target."""
    base = dict(placebo_mortality_28d=0.3, placebo_response=0.2)
    weak = simulated_power(
        Scenario.from_priors(support_days_effect=-1.0, **base), "organ-support-free-days", n_sims=400, seed=1
    )
    strong = simulated_power(
        Scenario.from_priors(support_days_effect=-6.0, **base), "organ-support-free-days", n_sims=400, seed=1
    )
    assert strong.power > weak.power
    ss = simulated_sample_size(
        Scenario.from_priors(support_days_effect=-6.0, **base),
        "organ-support-free-days",
        target_power=0.8,
        n_sims=200,
        n_max=600,
    )
    assert ss.n_randomised % 2 == 0 and ss.power >= 0.8
    assert all(p < 0.8 for n, p in ss.evaluations if n < ss.n_randomised)


# ----------------------------------------------------------------------------------------------------------------
# Priors and scenario
# ----------------------------------------------------------------------------------------------------------------
def test_screening_priors_match_the_published_counts() -> None:
    """MALS 48/672 = 7.1 %, SII 228/672 = 33.9 % (confirmed), unclassified ≈ 53 % (likely) (spec §7.3)."""
    p = load_priors()
    assert (p.value("screening.mals"), p.get("screening.mals").confidence) == (round(48 / 672, 4), "confirmed")
    assert p.value("screening.sii") == round(228 / 672, 4)
    assert p.get("screening.unclassified").confidence == "likely"
    assert round(screened_needed(276)) == 672


def test_stratum_placebo_mortality_is_unknown_and_its_default_is_a_flagged_assumption() -> None:
    """The priors file has no value for placebo mortality by endotype (spec §7.3); the scenario default warns."""
    assert load_priors().get("placebo_mortality_28d.by_endotype").value is None
    with pytest.warns(UnknownProtocolSettingWarning):
        sc = Scenario.from_priors()
    assert any("unknown" in a for a in sc.assumptions)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explicit = Scenario.from_priors(placebo_mortality_28d={"MALS": 0.6, "SII": 0.45})
    assert not any("mortality by endotype" in a for a in explicit.assumptions)


def test_every_prior_without_a_source_is_tagged_as_an_assumption() -> None:
    """Confidence tags are from the fixed set and every non-assumption prior cites a source."""
    for prior in load_priors().entries.values():
        assert prior.confidence in {"confirmed", "likely", "derived", "assumption", "unknown"}
        if prior.confidence not in {"assumption"}:
            assert prior.source, prior.key


def test_priors_file_with_an_invalid_fraction_is_rejected() -> None:
    """A fraction outside [0, 1] or a screened mix not summing to 1 fails on load."""
    with pytest.raises(CriteriaError):
        load_priors_text(PRIORS_TEXT.replace("value = 0.0714", "value = 1.0714", 1))
    with pytest.raises(CriteriaError):
        load_priors_text(PRIORS_TEXT.replace("value = 0.0714", "value = 0.1714", 1))


def test_effects_that_leave_the_probability_range_are_refused() -> None:
    """A responder effect pushing a rate above 1 is an input error."""
    with pytest.raises(InputError):
        Scenario.from_priors(placebo_response=0.5, response_effect=0.6, placebo_mortality_28d=0.5)


def test_switching_sofa_off_leaves_deaths_and_osfd_unchanged() -> None:
    """Separate random streams: the same seed gives the same deaths and OSFD with or without SOFA trajectories."""
    sc = sap_design_scenario(100)
    a, b = simulate_trials(sc, 5, seed=2), simulate_trials(sc, 5, seed=2, sofa=False)
    np.testing.assert_array_equal(a.died_on_day, b.died_on_day)
    np.testing.assert_array_equal(a.osfd, b.osfd)
    assert np.isnan(b.window).all() and not np.isnan(a.baseline).any()


def test_endotype_mix_among_randomised_follows_the_screening_priors() -> None:
    """About 17.4 % of randomised patients are MALS (48 / (48 + 228)); dropout about 15 %."""
    sim = simulate_trials(Scenario.from_priors(placebo_mortality_28d=0.5), 200, seed=8, sofa=False)
    se = math.sqrt(0.17 * 0.83 / sim.mals.size)
    assert abs(sim.mals.mean() - 48 / 276) < 4 * se
    assert abs(1 - sim.analysable.mean() - 0.15) < 4 * se


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def test_cli_sample_size_prints_109_and_118_with_table_quantiles() -> None:
    """`design sample-size --quantiles table_2dp` prints 109 uncorrected and 118 corrected per arm."""
    res = CliRunner().invoke(design_app, ["sample-size", "--quantiles", "table_2dp"])
    assert res.exit_code == 0, res.output
    assert "109 uncorrected" in res.output and "118 with continuity correction" in res.output


def test_cli_power_json_reports_power_and_mc_error() -> None:
    """`design power --endpoint sofa-response --effect 0.2 --n 236 --sims 400 --json` gives power and its MC SE."""
    res = CliRunner().invoke(
        design_app,
        ["power", "--endpoint", "sofa-response", "--effect", "0.2", "--n", "236", "--sims", "400", "--seed", "3",
         "--dropout", "0", "--placebo-rate", "0.2", "--placebo-mortality-mals", "0.4966", "--placebo-mortality-sii", "0.4966",
         "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["n_sims"] == 400 and 0.8 < d["power"] <= 1.0
    assert d["mc_se"] == pytest.approx(math.sqrt(d["power"] * (1 - d["power"]) / 400))
    assert d["closed_form"]["n_per_arm"] == 118.0


def test_cli_power_rejects_an_unknown_endpoint() -> None:
    """An endpoint outside sofa-response | mortality28 | organ-support-free-days is a usage error (exit 2)."""
    res = CliRunner().invoke(design_app, ["power", "--endpoint", "ventilator-days", "--effect", "1", "--n", "100"])
    assert res.exit_code == 2


def test_cli_power_warns_about_the_unknown_stratum_mortality() -> None:
    """Without per-endotype placebo mortality the CLI prints the assumption it used."""
    res = CliRunner().invoke(
        design_app, ["power", "--endpoint", "mortality28", "--effect", "-0.1", "--n", "100", "--sims", "200"]
    )
    assert "closed form" in res.output
    assert res.exit_code == 0, res.output
    assert "ASSUMPTION: placebo 28-day mortality by endotype is unknown" in res.output
