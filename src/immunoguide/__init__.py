"""immunoguide: biomarker-guided (precision) immunotherapy in sepsis.

From raw ICU data to SOFA (1996 and SOFA-2) and Sepsis-3 onset, immune endotype (MALS / immunoparalysis),
eligibility with evidence, concealed randomisation, follow-up, the statistical analysis plan and the next trial.

Key references: Singer M et al. JAMA 2016;315:801-810 (doi:10.1001/jama.2016.0287, Sepsis-3);
Vincent JL et al. Intensive Care Med 1996;22:707-710 (doi:10.1007/BF01709751, SOFA);
Ranzani OT et al. JAMA 2025 (doi:10.1001/jama.2025.20516, SOFA-2);
Giamarellos-Bourboulis EJ et al. JAMA 2025 (doi:10.1001/jama.2025.24175, ImmunoSep).

The public Python API is the names in ``__all__`` (listed, with what each does, in the README's "Python API"
section). Each is imported on first use, so ``import immunoguide`` stays cheap: a rule does not pull in the cohort
engine, the trial store or the statistics.

>>> import immunoguide
>>> immunoguide.load_protocol("immunosep-2025").label
'immunosep-2025@1.0.0'
"""

__version__ = "0.1.0"

#: Public name → the module that defines it (imported on first access by :func:`__getattr__`).
_API = {
    # single-patient rules
    "SofaInputs": "immunoguide.rules.sofa",
    "score_sofa": "immunoguide.rules.sofa",
    "PatientTimeline": "immunoguide.rules.timeline",
    "hourly_sofa": "immunoguide.rules.hourly",
    "sepsis3_onset": "immunoguide.rules.sepsis3",
    "BiomarkerResult": "immunoguide.rules.endotype",
    "classify_endotype": "immunoguide.rules.endotype",
    "PatientRecord": "immunoguide.protocols.record",
    "evaluate_eligibility": "immunoguide.rules.eligibility",
    "dose_schedule": "immunoguide.rules.regimen",
    "grade_lab": "immunoguide.rules.ctcae",
    # versioned, cited data files
    "load_criteria": "immunoguide.criteria",
    "load_preset": "immunoguide.criteria.presets",
    "available_protocols": "immunoguide.protocols",
    "load_protocol": "immunoguide.protocols",
    "load_sap": "immunoguide.analysis.sap",
    # cohorts (MIMIC-III / MIMIC-IV, synthetic data, the set-based engine)
    "convert_mimic3": "immunoguide.cohort.sources.mimic3",
    "convert_mimic4": "immunoguide.cohort.sources.mimic4",
    "generate_mimic4": "immunoguide.synth",
    "run_cohort": "immunoguide.cohort.pipeline",
    "screen_cohort": "immunoguide.cohort.screening",
    "validate_against_ricu": "immunoguide.cohort.validation",
    # the trial
    "TrialStore": "immunoguide.trial.store",
    "randomize": "immunoguide.trial.randomization",
    "export_trial": "immunoguide.trial.export",
    "build_report": "immunoguide.analysis.report",
    # design of the next trial
    "simulate_trials": "immunoguide.design.simulate",
    "simulated_power": "immunoguide.design.power",
    "sample_size_two_proportions": "immunoguide.design.power",
    # the whole story, and the errors every entry point raises
    "run_demo": "immunoguide.demo",
    "ImmunoguideError": "immunoguide.errors",
}

__all__ = [
    "BiomarkerResult",
    "ImmunoguideError",
    "PatientRecord",
    "PatientTimeline",
    "SofaInputs",
    "TrialStore",
    "available_protocols",
    "build_report",
    "classify_endotype",
    "convert_mimic3",
    "convert_mimic4",
    "dose_schedule",
    "evaluate_eligibility",
    "export_trial",
    "generate_mimic4",
    "grade_lab",
    "hourly_sofa",
    "load_criteria",
    "load_preset",
    "load_protocol",
    "load_sap",
    "randomize",
    "run_cohort",
    "run_demo",
    "sample_size_two_proportions",
    "score_sofa",
    "screen_cohort",
    "sepsis3_onset",
    "simulate_trials",
    "simulated_power",
    "validate_against_ricu",
]

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would cost more than the package itself
if TYPE_CHECKING:
    from immunoguide.analysis.report import build_report
    from immunoguide.analysis.sap import load_sap
    from immunoguide.cohort.pipeline import run_cohort
    from immunoguide.cohort.screening import screen_cohort
    from immunoguide.cohort.sources.mimic3 import convert_mimic3
    from immunoguide.cohort.sources.mimic4 import convert_mimic4
    from immunoguide.cohort.validation import validate_against_ricu
    from immunoguide.criteria import load_criteria
    from immunoguide.criteria.presets import load_preset
    from immunoguide.demo import run_demo
    from immunoguide.design.power import sample_size_two_proportions, simulated_power
    from immunoguide.design.simulate import simulate_trials
    from immunoguide.errors import ImmunoguideError
    from immunoguide.protocols import available_protocols, load_protocol
    from immunoguide.protocols.record import PatientRecord
    from immunoguide.rules.ctcae import grade_lab
    from immunoguide.rules.eligibility import evaluate_eligibility
    from immunoguide.rules.endotype import BiomarkerResult, classify_endotype
    from immunoguide.rules.hourly import hourly_sofa
    from immunoguide.rules.regimen import dose_schedule
    from immunoguide.rules.sepsis3 import sepsis3_onset
    from immunoguide.rules.sofa import SofaInputs, score_sofa
    from immunoguide.rules.timeline import PatientTimeline
    from immunoguide.synth import generate_mimic4
    from immunoguide.trial.export import export_trial
    from immunoguide.trial.randomization import randomize
    from immunoguide.trial.store import TrialStore


def __getattr__(name: str) -> object:
    """Import a public name from its module on first access (PEP 562) and keep it on the package."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'immunoguide' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
