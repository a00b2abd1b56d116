"""Dose schedules from protocol files and reconciliation of given doses.

ImmunoSep (immunosep-spec.md §3): anakinra 200 mg IV q8h × 15 d with SC placebo; rhIFN-γ 100 µg SC q48h × 15 d
with IV placebo (8 doses on days 1, 3, …, 15 is derived, tagged likely); placebo arm IV + SC placebo (double
dummy; saline 20 mL IV, 0.5 mL SC, likely). Renal adjustment is unknown. Meisel 2009 (§8): GM-CSF 4 µg/kg/day ×
8 days, route not captured. SAVE-MORE (§8): anakinra 100 mg SC once daily × 10 days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from immunoguide.errors import ImplausibleValueError, InputError, MissingInputError, UnknownCriteriaError
from immunoguide.protocols import load_protocol
from immunoguide.rules.regimen import Administration, dose_schedule, reconcile

IS = load_protocol("immunosep-2025")
T0 = datetime(2024, 3, 1, 8, 0)


def test_anakinra_arm_gives_45_iv_doses_every_8_hours_for_15_days() -> None:
    """MALS active arm: 45 × anakinra 200 mg IV at 0, 8, …, 352 h; days 1–15, three per day."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    iv = s.kit("IV")
    assert len(iv) == 45
    assert [d.due for d in iv] == [T0 + timedelta(hours=8 * k) for k in range(45)]
    assert {(d.drug, d.dose, d.dose_unit, d.route) for d in iv} == {("anakinra", 200.0, "mg", "IV")}
    assert [d.day for d in iv] == [1 + k // 3 for k in range(45)]
    assert iv[-1].due - T0 < timedelta(days=15)


def test_anakinra_arm_has_sc_placebo_on_the_ifn_gamma_schedule() -> None:
    """MALS active arm: SC kit is 8 × saline 0.5 mL every 48 h (double dummy)."""
    sc = dose_schedule(IS, "mals_anakinra", T0).kit("SC")
    assert len(sc) == 8 and all(d.is_placebo and d.volume_ml == 0.5 and d.dose is None for d in sc)
    assert [d.day for d in sc] == [1, 3, 5, 7, 9, 11, 13, 15]


def test_ifn_gamma_arm_gives_8_sc_doses_every_48_hours_and_iv_placebo() -> None:
    """SII active arm: 8 × IFN-γ 100 µg SC on days 1, 3, …, 15, plus 45 × saline 20 mL IV q8h."""
    s = dose_schedule(IS, "sii_ifng", T0)
    sc, iv = s.kit("SC"), s.kit("IV")
    assert [(d.drug, d.dose, d.dose_unit) for d in sc] == [("rhIFN-gamma", 100.0, "ug")] * 8
    assert [d.due for d in sc] == [T0 + timedelta(hours=48 * k) for k in range(8)]
    assert [d.day for d in sc] == [1, 3, 5, 7, 9, 11, 13, 15]
    assert len(iv) == 45 and all(d.is_placebo and d.volume_ml == 20 for d in iv)


def test_eight_ifn_gamma_doses_are_flagged_as_derived() -> None:
    """The 8-dose count is derived in the spec (likely): the schedule carries that note for the SC kit."""
    notes = dose_schedule(IS, "sii_ifng", T0).notes
    assert any(n.startswith("kit SC: schedule likely") and "derived" in n for n in notes)


@pytest.mark.parametrize("arm", ["mals_placebo", "sii_placebo"])
def test_placebo_arms_get_iv_and_sc_placebo(arm: str) -> None:
    """Placebo arms: 45 IV placebo + 8 SC placebo, no active drug."""
    s = dose_schedule(IS, arm, T0)
    assert len(s.kit("IV")) == 45 and len(s.kit("SC")) == 8
    assert all(d.is_placebo for d in s.doses)


def test_every_immunosep_arm_has_the_same_kit_timetable() -> None:
    """Double dummy: kit, number, day and due time are identical in all four arms (the ward view cannot unblind)."""
    views = {a.code: dose_schedule(IS, a.code, T0).blinded() for a in IS.arms}
    assert len({tuple(tuple(sorted(d.items())) for d in v) for v in views.values()}) == 1


def test_crcl_below_30_warns_without_changing_the_anakinra_dose() -> None:
    """CrCl 25 mL/min: the unknown renal adjustment is a decisive warning; every dose stays 200 mg."""
    s = dose_schedule(IS, "mals_anakinra", T0, crcl_ml_per_min=25)
    (w,) = [w for w in s.warnings if w.setting == "anakinra_renal_adjustment"]
    assert w.decisive is True and w.option == "not_applied" and w.depends == ("kit IV",)
    assert {d.dose for d in s.kit("IV")} == {200.0} and len(s.kit("IV")) == 45
    assert any("no dose adjustment" in n for n in s.notes)


def test_crcl_exactly_30_does_not_warn() -> None:
    """The label's level is 'CrCl < 30': 30 mL/min itself raises no renal warning."""
    s = dose_schedule(IS, "mals_anakinra", T0, crcl_ml_per_min=30)
    assert "anakinra_renal_adjustment" not in {w.setting for w in s.warnings}


def test_crcl_not_given_is_an_undecided_renal_warning() -> None:
    """Without CrCl the renal check cannot be done: the warning stays, undecided."""
    (w,) = [w for w in dose_schedule(IS, "mals_anakinra", T0).warnings if w.setting == "anakinra_renal_adjustment"]
    assert w.decisive is None


@pytest.mark.parametrize("arm", ["mals_placebo", "sii_ifng", "sii_placebo"])
def test_renal_warning_is_the_same_in_every_arm_so_it_does_not_unblind(arm: str) -> None:
    """The IV kit warns at CrCl 25 in every arm, whatever it holds."""
    s = dose_schedule(IS, arm, T0, crcl_ml_per_min=25)
    assert any(w.setting == "anakinra_renal_adjustment" and w.decisive for w in s.warnings)


def test_schedule_warns_about_unknown_stopping_rules() -> None:
    """The fixed 15-day course depends on the unknown stopping rules, which the schedule lists."""
    (w,) = [w for w in dose_schedule(IS, "sii_ifng", T0).warnings if w.setting == "treatment_stopping_rules"]
    assert set(w.depends) == {"kit IV", "kit SC"}


@pytest.mark.parametrize("weight", [45.0, 72.5, 130.0])
def test_gm_csf_dose_is_4_ug_per_kg_times_body_weight(weight: float) -> None:
    """Meisel 2009: 8 daily doses of 4 µg/kg × weight; route not captured is noted and warned."""
    p = load_protocol("gm-csf-meisel-2009")
    s = dose_schedule(p, "gm_csf", T0, weight_kg=weight)
    assert len(s.doses) == 8 and [d.day for d in s.doses] == list(range(1, 9))
    assert {(d.dose, d.dose_unit) for d in s.doses} == {(round(4 * weight, 6), "ug")}
    assert s.doses[0].route == "unknown" and "study_drug_route" in {w.setting for w in s.warnings}


def test_gm_csf_without_weight_is_refused() -> None:
    """A per-kg dose cannot be computed without the body weight: MissingInputError naming weight_kg."""
    with pytest.raises(MissingInputError) as info:
        dose_schedule(load_protocol("gm-csf-meisel-2009"), "gm_csf", T0)
    assert info.value.field == "weight_kg"


def test_implausible_weight_is_refused() -> None:
    """A weight of 7 kg (likely grams or a typo) is implausible for an adult dose."""
    with pytest.raises(ImplausibleValueError):
        dose_schedule(load_protocol("gm-csf-meisel-2009"), "gm_csf", T0, weight_kg=7)


def test_meisel_placebo_has_no_dose_and_mirrors_the_schedule() -> None:
    """The Meisel placebo runs 8 daily doses without a volume (placebo product not captured)."""
    s = dose_schedule(load_protocol("gm-csf-meisel-2009"), "placebo", T0, weight_kg=70)
    assert len(s.doses) == 8 and all(d.is_placebo and d.volume_ml is None for d in s.doses)
    assert "placebo_product" in {w.setting for w in s.warnings}


def test_save_more_anakinra_is_100_mg_sc_daily_for_10_days() -> None:
    """SAVE-MORE: 10 × anakinra 100 mg SC every 24 h."""
    s = dose_schedule(load_protocol("save-more-2021"), "anakinra", T0)
    assert [(d.dose, d.dose_unit, d.route) for d in s.doses] == [(100.0, "mg", "SC")] * 10
    assert [d.due for d in s.doses] == [T0 + timedelta(days=k) for k in range(10)]


def test_save_more_comparator_arm_is_not_invented() -> None:
    """The comparator regimen is not captured: no doses, and the schedule warns why."""
    s = dose_schedule(load_protocol("save-more-2021"), "comparator", T0)
    assert s.doses == () and "comparator_regimen" in {w.setting for w in s.warnings}


def test_unknown_arm_is_rejected() -> None:
    """An arm code the protocol does not declare raises UnknownCriteriaError."""
    with pytest.raises(UnknownCriteriaError):
        dose_schedule(IS, "anakinra", T0)


def test_timezone_aware_start_keeps_8_hour_spacing() -> None:
    """An aware start time gives aware due times 8 h apart."""
    s = dose_schedule(IS, "mals_anakinra", T0.replace(tzinfo=UTC))
    iv = s.kit("IV")
    assert iv[1].due - iv[0].due == timedelta(hours=8) and iv[0].due.tzinfo is not None


# --- reconciliation --------------------------------------------------------------------------------------------


def _given(s, kit: str, numbers: range, shift_h: float = 0.0) -> list[Administration]:
    return [Administration(kit, d.due + timedelta(hours=shift_h)) for d in s.kit(kit) if d.number in numbers]


def test_doses_given_on_time_are_on_time_and_future_doses_pending() -> None:
    """Day 1 given on schedule: 3 IV and 1 SC on time; at 20 h nothing is missed; the rest is pending."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    given = _given(s, "IV", range(1, 4)) + _given(s, "SC", range(1, 2))
    r = reconcile(s, given, late_after_h=1, at=T0 + timedelta(hours=20))
    assert r.counts["on_time"] == 4 and r.counts["missed"] == 0 and r.counts["pending"] == 53 - 4


def test_dose_given_two_hours_late_is_flagged_late() -> None:
    """The second anakinra dose given 2 h after its due time (tolerance 1 h) is late, with its delay."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    iv = s.kit("IV")
    given = [Administration("IV", iv[0].due), Administration("IV", iv[1].due + timedelta(hours=2))]
    r = reconcile(s, given, late_after_h=1, at=iv[1].due + timedelta(hours=2))
    st = r.of_kit("IV")
    assert (st[0].status, st[1].status, st[1].delay_h) == ("on_time", "late", 2.0)


def test_dose_exactly_at_the_tolerance_is_on_time() -> None:
    """Given exactly late_after_h after its due time is still on time ('late' means more than the tolerance)."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    r = reconcile(s, [Administration("IV", T0 + timedelta(hours=1))], late_after_h=1)
    assert r.of_kit("IV")[0].status == "on_time"


def test_skipped_dose_is_missed_and_the_next_on_time_dose_keeps_its_slot() -> None:
    """Dose 2 never given, dose 3 given on time: dose 2 is missed, dose 3 on time (not matched to dose 2)."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    iv = s.kit("IV")
    r = reconcile(s, [Administration("IV", iv[0].due), Administration("IV", iv[2].due)], late_after_h=1,
                  at=iv[2].due + timedelta(minutes=5))
    assert [x.status for x in r.of_kit("IV")[:4]] == ["on_time", "missed", "on_time", "pending"]


def test_late_dose_stays_with_its_own_slot() -> None:
    """Dose 2 given 6 h late (2 h before dose 3) is dose 2, late — not dose 3 early."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    iv = s.kit("IV")
    r = reconcile(s, [Administration("IV", iv[1].due + timedelta(hours=6))], late_after_h=1, at=iv[1].due + timedelta(hours=6))
    assert [x.status for x in r.of_kit("IV")[:3]] == ["missed", "late", "pending"]


def test_ifn_gamma_given_a_day_early_is_flagged_early() -> None:
    """A second IFN-γ dose given 24 h after the first (due at 48 h) is early."""
    s = dose_schedule(IS, "sii_ifng", T0)
    sc = s.kit("SC")
    r = reconcile(s, [Administration("SC", sc[0].due), Administration("SC", sc[0].due + timedelta(hours=24))],
                  late_after_h=2)
    assert [(x.status, x.delay_h) for x in r.of_kit("SC")[:2]] == [("on_time", 0.0), ("early", -24.0)]


def test_without_a_reconciliation_time_the_latest_administration_is_the_reference() -> None:
    """Without `at`, doses whose window passed before the latest recorded dose are missed, later ones pending."""
    s = dose_schedule(IS, "sii_ifng", T0)
    sc = s.kit("SC")
    r = reconcile(s, [Administration("SC", sc[2].due)], late_after_h=2)
    assert [x.status for x in r.of_kit("SC")[:4]] == ["missed", "missed", "on_time", "pending"]
    assert reconcile(s, [], late_after_h=2).counts["pending"] == len(s.doses)


def test_explicit_dose_number_wins_and_a_second_record_of_it_is_unscheduled() -> None:
    """An administration pinned to dose 1 matches it; a duplicate pinned record is reported as unscheduled."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    a = Administration("IV", T0 + timedelta(hours=3), number=1)
    r = reconcile(s, [a, Administration("IV", T0 + timedelta(hours=3), number=1)], late_after_h=1, at=T0 + timedelta(hours=4))
    assert r.of_kit("IV")[0].status == "late" and len(r.unscheduled) == 1


def test_administration_from_a_kit_the_arm_does_not_have_is_rejected() -> None:
    """Recording a dose from an 'IM' kit in an IV/SC arm is an input error."""
    s = dose_schedule(IS, "mals_anakinra", T0)
    with pytest.raises(InputError, match="kit"):
        reconcile(s, [Administration("IM", T0)], late_after_h=1)


def test_negative_tolerance_is_rejected() -> None:
    """A negative lateness tolerance is an input error."""
    with pytest.raises(InputError):
        reconcile(dose_schedule(IS, "mals_anakinra", T0), [], late_after_h=-1)


def test_reconciliation_flags_are_listed_and_serialisable() -> None:
    """flagged() returns early/late/missed doses of every kit (the SC dummy too); to_dict is JSON-safe."""
    import json

    s = dose_schedule(IS, "mals_anakinra", T0)
    iv = s.kit("IV")
    r = reconcile(s, [Administration("IV", iv[1].due + timedelta(hours=3))], late_after_h=1, at=iv[2].due)
    assert [(f.dose.kit, f.dose.number, f.status) for f in r.flagged()] == [
        ("IV", 1, "missed"), ("SC", 1, "missed"), ("IV", 2, "late")]
    assert json.loads(json.dumps(r.to_dict()))["counts"]["late"] == 1
    assert json.loads(json.dumps(s.to_dict()))["doses"][0]["prescribed"] == "anakinra 200 mg"
