"""The choices the report and its analysis dataset make that neither the protocol nor the SAP fixes.

Every one is listed in each report (settings section) with the option used; ``immunoguide report --policy name=option``
or ``build_report(policies={name: option})`` picks another option. The analysis dataset
(:func:`immunoguide.analysis.dataset.derive`) reads ``study_day_numbering``; the tables and figures of
:mod:`immunoguide.analysis.report` read the others.

Examples
--------
>>> [p.name for p in REPORT_POLICIES][:2]
['study_day_numbering', 'screen_failure_reason']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from immunoguide.errors import PolicyError

__all__ = ["REPORT_POLICIES", "ReportPolicy", "resolve_report_policies"]


@dataclass(frozen=True)
class ReportPolicy:
    """A choice the report makes that neither the protocol nor the SAP fixes (listed in every report).

    ``options`` maps every option the report implements to what it means; ``option`` is the default. Choose another
    with ``build_report(policies={name: option})`` or ``immunoguide report --policy name=option``.
    """

    name: str
    option: str
    text: str
    options: Mapping[str, str] = field(default_factory=dict)

    def choose(self, option: str) -> ReportPolicy:
        """This policy with ``option`` (PolicyError for an option the report does not implement)."""
        opts = dict(self.options) or {self.option: self.text}
        if option not in opts:
            raise PolicyError(expected=f"an option of report policy {self.name}: {sorted(opts)}", got=option,
                              where="--policy", todo=f"use one of {', '.join(sorted(opts))}")
        return ReportPolicy(self.name, option, opts[option], self.options)


_DAY_1 = ("The SAP's day 1 (the baseline SOFA; spec §5.1, SAP p. 66) is the day of randomisation and first dose: "
          "the store's follow-up day 0 (the 24 h from randomisation) is SAP day 1, follow-up day d is SAP day d + 1, "
          "and a death at t days after randomisation falls on SAP day floor(t) + 1. Reasoning: the SAP's baseline "
          "precedes the treatment effect, the protocol schedule has a day 0 (screening/classification sample) before "
          "day 1, and the endpoint definitions number day 1 as the day of randomisation / first dose. The sources do "
          "not print the mapping itself, so it is a named choice (confidence: likely).")
_FOLLOWUP_DAY = ("The store's follow-up day d is SAP day d: the SAP baseline is follow-up day 1 (24-48 h after "
                 "randomisation, after several doses); a death at t days falls on day max(1, floor(t)). Kept for "
                 "comparison with reports made before the mapping was settled.")

#: Every choice the report itself makes; each is printed in the report's settings section.
REPORT_POLICIES: tuple[ReportPolicy, ...] = (
    ReportPolicy("study_day_numbering", "randomisation_day_is_sap_day_1", _DAY_1,
                 {"randomisation_day_is_sap_day_1": _DAY_1, "followup_day_is_sap_day": _FOLLOWUP_DAY}),
    ReportPolicy("screen_failure_reason", "one_per_patient_exclusion_first",
                 "CONSORT counts each screen failure once, under its first blocking exclusion (protocol order) or, "
                 "without one, its first blocking inclusion: a refused consent (E2) is not counted again as missing "
                 "consent (I3). How many patients had more than one reason is shown.",
                 {"one_per_patient_exclusion_first":
                  "CONSORT counts each screen failure once, under its first blocking exclusion (protocol order) or, "
                  "without one, its first blocking inclusion: a refused consent (E2) is not counted again as missing "
                  "consent (I3). How many patients had more than one reason is shown.",
                  "every_blocking_criterion":
                  "CONSORT lists every blocking criterion of every screen failure: a patient with several reasons "
                  "is counted under each (the counts do not add up to the screen failures)."}),
    ReportPolicy("not_evaluable_sofa_response", "non_responder",
                 "Analysed patients whose SOFA-response endpoint is not evaluable (no day-1 SOFA, or conflicting "
                 "rows) count as non-responders, so the denominator is the whole analysed set as in JAMA Table 2; "
                 "how many is shown next to each result."),
    ReportPolicy("mortality_denominator", "known_vital_status",
                 "Mortality by day 28/90 is computed over patients whose vital status at the horizon is known; "
                 "patients lost to follow-up before the horizon are left out and counted."),
    ReportPolicy("zero_cell_correction", "haldane_if_zero",
                 "A 2x2 table with an empty cell gets 0.5 added to every cell for the Woolf OR (Haldane-Anscombe); "
                 "the table says so. The risk difference and Fisher P use the observed counts."),
    ReportPolicy("biomarker_draw_per_day", "latest_of_day",
                 "Serial draws: one draw per study day, the latest sample of each analyte that day; the "
                 "pre-randomisation classification sample is study day 0."),
    ReportPolicy("biomarker_censored_values", "point_values_only",
                 "A laboratory result reported as a bound (e.g. '> 100000') is not used for reversal."),
    ReportPolicy("km_censoring", "last_known_alive_day",
                 "Kaplan-Meier: time from randomisation to death (days); patients alive are censored on the last "
                 "follow-up day they were known alive (days from randomisation), and everyone at day 90."),
    ReportPolicy("sofa_trajectory", "measured_only",
                 "Mean SOFA trajectories use measured values only (no LOCF, no death score); 95 % CI of the mean "
                 "from the t distribution; x axis in SAP days (study_day_numbering)."),
    ReportPolicy("ae_relatedness", "possible_probable_definite",
                 "An adverse event is 'related' when its relatedness is possible, probable or definite."),
    ReportPolicy("safety_population", "analysed",
                 "Safety tables use the analysed population (randomised minus withdrawals with data removal: their "
                 "data no longer exist)."),
    ReportPolicy("blinded_groups", "pooled",
                 "The blinded report pools the arms (a blinded export holds no arm to code as A/B); results are "
                 "shown overall and by immune stratum."),
    ReportPolicy("lost_to_follow_up", "no_day_90_status_after_day_90",
                 "CONSORT: a randomised, analysed patient is lost to follow-up when the report time is past day 90 "
                 "and no day-90 vital status (and no death) is recorded; withdrawals are counted separately."),
    ReportPolicy("discontinued_intervention", "last_dose_before_course_end",
                 "CONSORT: a patient received the allocated intervention when at least one dose is recorded; the "
                 "intervention was discontinued when the last recorded dose was more than one dosing interval "
                 "(48 h) before the end of the 15-day course, split by death, withdrawal or other reason."),
)


def resolve_report_policies(overrides: Mapping[str, str] | None = None) -> dict[str, ReportPolicy]:
    """Every report policy with the option used: the default, or ``overrides[name]``.

    >>> resolve_report_policies({"study_day_numbering": "followup_day_is_sap_day"})["study_day_numbering"].option
    'followup_day_is_sap_day'
    """
    out = {p.name: p for p in REPORT_POLICIES}
    for name, option in (overrides or {}).items():
        if name not in out:
            raise PolicyError(expected=f"a report policy of {sorted(out)}", got=name, where="--policy",
                              todo="check the policy name (immunoguide report --help)")
        out[name] = out[name].choose(option)
    return out
