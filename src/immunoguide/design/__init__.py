"""Next-trial design: a vectorised simulator with cited priors, closed-form sample sizes and simulated power.

Examples
--------
>>> from immunoguide.design import sample_size_two_proportions
>>> sample_size_two_proportions(0.20, 0.40).n_per_arm_uncorrected
109
"""

from immunoguide.design.power import (
    ENDPOINTS,
    ClosedFormPower,
    Endpoint,
    PowerResult,
    PrimaryAnalysisBatch,
    SampleSizeResult,
    SimulatedSampleSizeResult,
    closed_form_power,
    exact_power_two_proportions,
    primary_analysis,
    sample_size_two_proportions,
    simulate_primary_analysis,
    simulated_power,
    simulated_sample_size,
)
from immunoguide.design.simulate import (
    ENDOTYPES,
    OSFD_CATEGORIES,
    Prior,
    Priors,
    Scenario,
    SimulatedTrials,
    calibrate_slope,
    load_priors,
    screened_needed,
    simulate_trials,
)

__all__ = [
    "ENDOTYPES",
    "ENDPOINTS",
    "OSFD_CATEGORIES",
    "ClosedFormPower",
    "Endpoint",
    "PowerResult",
    "PrimaryAnalysisBatch",
    "Prior",
    "Priors",
    "SampleSizeResult",
    "Scenario",
    "SimulatedSampleSizeResult",
    "SimulatedTrials",
    "calibrate_slope",
    "closed_form_power",
    "exact_power_two_proportions",
    "load_priors",
    "primary_analysis",
    "sample_size_two_proportions",
    "screened_needed",
    "simulate_primary_analysis",
    "simulate_trials",
    "simulated_power",
    "simulated_sample_size",
]
