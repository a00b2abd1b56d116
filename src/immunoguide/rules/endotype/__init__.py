"""Immune endotype classification (MALS, immunoparalysis, …) from biomarker results, and daily re-classification.

The thresholds, precedence, timing window and reversal rules are protocol data
(:class:`~immunoguide.protocols.model.ClassificationSpec`, loaded from a versioned protocol file); this module
only evaluates them. It never guesses: when the data cannot decide, the endotype is ``"indeterminate"`` and the
result says why, with machine-readable reason codes and the endotypes that remain possible.

How a classification is made (:func:`classify_endotype`)
---------------------------------------------------------
1. **Usable results.** For each criterion (analyte, comparator, threshold, accepted assay methods) the results of
   its concept are filtered. A result is *not usable* when its assay method is not one the criterion accepts
   (``assay_method_mismatch``; mHLA-DR in MFI is not comparable with QuantiBRITE AB/c) or is not stated
   (``assay_method_missing``), when it was sampled after ``at`` (``sampled_after_at``) or resulted after ``at``
   (``not_yet_resulted``), or when its sample lies outside the protocol window
   ``[anchor − window_before_anchor_h, anchor + window_after_anchor_h]`` (``outside_window``, bounds inclusive;
   a side the protocol leaves ``None`` is not limited and a warning says so) or has no sample time to check
   against it (``sample_time_missing``).
2. **Which sample.** The *latest usable sample* (by sample time) is used. Several samples with the same latest
   sample time and different values → ``conflicting_results``; several samples of which some have no sample time
   → ``sample_time_missing`` (they cannot be ordered). The chosen sample is ``stale`` when it is older than the
   protocol's ``max_result_age_h`` at ``at``; older samples are never used instead of a stale one.
3. **Criteria.** A criterion is met (True), not met (False) or undecidable (None): censored values are compared
   as intervals (:func:`~immunoguide.rules.measurements.decide`), so ``">5000"`` decides ``> 4420`` but
   ``"GREATER THAN 2000"`` does not (``censored_undecidable``). With ``persistence_count`` N > 1 the latest sample
   must qualify and so must the latest sample of each of the N − 1 calendar days before it (consecutive days) or
   the N − 1 samples before it; when the latest qualifies but the run is shorter → undecidable
   (``persistence_not_established``), when the latest does not qualify → not met.
4. **Rules.** A rule is met when all its criteria are True, not met when any is False, else undecidable. Rules are
   taken by precedence (lower number first): the first met rule wins unless a rule before it is undecidable.
   If no rule is met, the result is ``spec.otherwise``.
5. **Indeterminate.** Otherwise every value the data leave open is tried (each uncertain concept over its possible
   interval, each unestablished persistence both ways); if all lead to the same endotype, that is the answer,
   else the endotype is ``"indeterminate"`` and ``possible_endotypes`` lists what the data cannot tell apart.

Every result records the protocol label, the inputs used with their sample/receipt/result times, their age at
``at`` (hours since sampling) and assay turnaround (sample → result hours), the results that were excluded and why,
and warnings for timing settings the protocol leaves unset (tagged *unknown* in the spec).

Examples
--------
>>> from immunoguide.protocols.model import (BiomarkerCriterion, Citation, ClassificationSpec, EndotypeRule,
...     SampleTiming)
>>> cite = Citation("example", "confirmed")
>>> high = BiomarkerCriterion("ferritin", "ferritin_ng_per_ml", ">", 4420.0, "ng/mL", cite)
>>> spec = ClassificationSpec((EndotypeRule("MALS", 1, (high,), cite),), "unclassified",
...     SampleTiming("sepsis3_onset", None, None, None, cite))
>>> r = classify_endotype(spec, [BiomarkerResult.measured("ferritin_ng_per_ml", ">5000", "ng/mL")],
...     anchor_time=None, at=None, protocol_label="example@1")
>>> r.endotype, r.reasons[0].code
('MALS', 'criteria_met')
>>> r = classify_endotype(spec, [BiomarkerResult.measured("ferritin_ng_per_ml", "GREATER THAN 2000", "ng/mL")],
...     anchor_time=None, at=None, protocol_label="example@1")
>>> r.endotype, r.possible_endotypes, r.reasons[0].code
('indeterminate', ('MALS', 'unclassified'), 'censored_undecidable')

Modules: :mod:`.results` (the result types and reason codes), :mod:`.classify` (one classification: usable
results, which sample, criteria, rules, indeterminate), :mod:`.serial` (daily re-classification, transitions and
reversal), :mod:`.records` (flat records of the CLI and service: results and pending samples).
"""

from __future__ import annotations

from immunoguide.rules.endotype.classify import classify_endotype
from immunoguide.rules.endotype.records import PendingSample, pending_from_record, results_from_record
from immunoguide.rules.endotype.results import (
    INDETERMINATE,
    REASON_CODES,
    BiomarkerResult,
    CriterionOutcome,
    EndotypeResult,
    ExcludedResult,
    InputUsed,
    Reason,
)
from immunoguide.rules.endotype.serial import (
    DailyEndotype,
    Reclassification,
    ReversalEvent,
    Transition,
    reclassify_daily,
)

__all__ = [
    "INDETERMINATE",
    "REASON_CODES",
    "BiomarkerResult",
    "CriterionOutcome",
    "DailyEndotype",
    "EndotypeResult",
    "ExcludedResult",
    "InputUsed",
    "Reason",
    "Reclassification",
    "ReversalEvent",
    "Transition",
    "PendingSample",
    "classify_endotype",
    "pending_from_record",
    "reclassify_daily",
    "results_from_record",
]
