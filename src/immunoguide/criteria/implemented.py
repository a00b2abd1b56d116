"""The policy options the rule code implements, per rule: what a criteria file may declare, and no more.

The single-patient rules (:mod:`immunoguide.rules.sofa`, :mod:`~immunoguide.rules.sofa2`,
:mod:`~immunoguide.rules.sepsis3`) implement each option listed here and re-export their table as
``IMPLEMENTED_POLICIES``; the set-based engine translates the same tables (``cohort/engine*.py``). The tables live
here, below the rules, so that the criteria loader can check a file against them without importing the rule code
(criteria → rules was an import cycle). Adding an option here without implementing it in the rules and the engine
fails the policy tests (every option is exercised on both paths: tests/test_sofa_random_differential.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["IMPLEMENTED", "SEPSIS3_POLICIES", "SOFA1_POLICIES", "SOFA2_POLICIES"]

SOFA1_POLICIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "respiratory_support": frozenset({"imv_or_niv", "imv_only"}),
        "pf_below_200_without_support": frozenset({"two_points", "unscored"}),
        "fio2_missing": frozenset({"unscored", "room_air"}),
        "dopamine_exactly_5": frozenset({"two_points", "three_points"}),
        "bilirubin_exactly_12": frozenset({"four_points", "three_points"}),
        "creatinine_exactly_5": frozenset({"four_points", "three_points"}),
        "gcs_when_sedated": frozenset({"presedation_else_normal", "assume_normal", "as_measured", "unscored"}),
        "missing_component": frozenset({"impute_normal", "no_imputation"}),
        "urine_output_window": frozenset({"mimic_code", "ricu", "as_recorded"}),
        "vasopressor_min_duration": frozenset({"one_hour", "none"}),
        "zero_rate_infusion": frozenset({"not_running", "mimic_code"}),
        "map_from_sbp_dbp": frozenset({"derive", "do_not_derive"}),
        # Hourly semantics (rules/hourly.py H1–H15; the single-window score ignores them).
        "hourly_grid": frozenset({"clock_hours", "icu_admission_hours"}),
        "rolling_window": frozenset({"24_rows", "25_rows"}),
        "pf_pairing": frozenset({"latest_fio2_4h", "ricu_match_2h"}),
        "gcs_assembly": frozenset({"as_charted", "ricu_hourly_components"}),
    }
)

SOFA2_POLICIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "missing_component": frozenset({"impute_normal", "no_imputation"}),
        "gcs_when_sedated": frozenset({"presedation_else_normal", "assume_normal", "as_measured", "unscored"}),
        "norepinephrine_salt_when_unstated": frozenset({"base", "bitartrate_monohydrate"}),
        "vasopressor_min_duration": frozenset({"one_hour", "none"}),
        "zero_rate_infusion": frozenset({"not_running", "literal"}),
        "map_from_sbp_dbp": frozenset({"derive", "do_not_derive"}),
        "fio2_missing": frozenset({"unscored", "room_air"}),
        "respiratory_support_ceiling": frozenset({"honour_unavailable_flag", "always_cap"}),
        "vasoactive_ceiling": frozenset({"honour_unavailable_flag", "ignore_flag"}),
        "dopamine_not_alone": frozenset({"other_agent", "ignored", "max_with_dopamine_ladder"}),
        "rrt_oliguria_window": frozenset({"six_hour_mean", "longer_than_six_hours"}),
    }
)

SEPSIS3_POLICIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "baseline": frozenset({"running_minimum", "zero", "immunosep_registry"}),
        "si_window": frozenset({"first", "any"}),
        "simultaneous_antibiotic_culture": frozenset({"unpaired", "paired"}),
        "suspected_infection_pairing": frozenset({"per_antibiotic", "ricu_hourly_rolling"}),
        "sofa_rows_from": frozenset({"icu_admission", "first_sofa_datum"}),
    }
)

#: Rule id (the ``rule`` of a criteria file) → the options its code implements.
IMPLEMENTED: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType(
    {"sofa1": SOFA1_POLICIES, "sofa2": SOFA2_POLICIES, "sepsis3": SEPSIS3_POLICIES}
)
