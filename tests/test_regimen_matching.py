"""Dose reconciliation matches administrations to scheduled doses exactly as its documented rule says.

``reconcile`` finds each administration's dose by a binary search over the kit's doses (issue 16: recording a
15-day course re-matched every dose by scanning them all, O(n^3) over the course). The reference below is the rule
written out the plain way — per administration in time order, the latest unmatched dose due no later than
``given_at`` + the early window, else the next unmatched dose — and hypothesis checks that both give the same
statuses, times, delays and unscheduled administrations on random courses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from immunoguide.protocols import load_protocol
from immunoguide.rules.regimen import Administration, Schedule, dose_schedule, reconcile

IS = load_protocol("immunosep-2025")
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def reference_matching(schedule: Schedule, given: list[Administration], late_after_h: float) -> dict:
    """``(kit, number) → administration`` and the unscheduled ones, by scanning every dose per administration."""
    matched: dict[tuple[str, int], Administration] = {}
    unscheduled: list[Administration] = []
    for kit in schedule.kits:
        doses = schedule.kit(kit)
        early_h = min(late_after_h, doses[0].interval_h / 2)
        rest = []
        for a in (a for a in given if a.kit == kit):
            if a.number is None:
                rest.append(a)
            elif a.number in {d.number for d in doses} and (kit, a.number) not in matched:
                matched[(kit, a.number)] = a
            else:
                unscheduled.append(a)
        for a in sorted(rest, key=lambda a: a.given_at - schedule.start):
            free = [d for d in doses if (kit, d.number) not in matched]
            if not free:
                unscheduled.append(a)
                continue
            due_by = [d for d in free if (a.given_at - d.due).total_seconds() / 3600.0 >= -early_h]
            matched[(kit, (due_by[-1] if due_by else free[0]).number)] = a
    return {"matched": matched, "unscheduled": unscheduled}


_admin = st.tuples(
    st.sampled_from(["IV", "SC"]),
    st.integers(min_value=-6 * 60, max_value=17 * 24 * 60),  # minutes from the first due time
    st.one_of(st.none(), st.integers(min_value=0, max_value=50)),  # a dose number (some not in the schedule)
)


@settings(max_examples=300, deadline=None)
@given(arm=st.sampled_from(["mals_anakinra", "sii_ifng", "mals_placebo", "sii_placebo"]),
       admins=st.lists(_admin, max_size=70), late_after_h=st.sampled_from([0.0, 0.5, 1.0, 4.0]))
def test_every_administration_goes_to_the_dose_the_plain_rule_picks(arm: str, admins: list, late_after_h: float) -> None:
    """Random courses (late, early, repeated, pinned and out-of-schedule doses): the same matching as the rule
    written out dose by dose, hence the same statuses, delays and unscheduled administrations."""
    schedule = dose_schedule(IS, arm, T0)
    given_ = [Administration(kit, T0 + timedelta(minutes=m), n) for kit, m, n in admins]
    at = T0 + timedelta(days=16)
    rec = reconcile(schedule, given_, late_after_h=late_after_h, at=at)
    ref = reference_matching(schedule, given_, late_after_h)
    got = {(s.dose.kit, s.dose.number): s.given_at for s in rec.statuses if s.given_at is not None}
    assert got == {k: a.given_at for k, a in ref["matched"].items()}
    assert list(rec.unscheduled) == ref["unscheduled"]
    assert sum(rec.counts.values()) == len(schedule.doses)


def test_a_course_given_on_time_matches_each_dose_to_its_own_slot() -> None:
    """45 IV doses and 8 SC doses each given 10 minutes after due: every dose on time, in its own slot."""
    schedule = dose_schedule(IS, "mals_anakinra", T0)
    given_ = [Administration(d.kit, d.due + timedelta(minutes=10)) for d in schedule.doses]
    rec = reconcile(schedule, list(reversed(given_)), late_after_h=1.0, at=T0 + timedelta(days=20))
    assert rec.counts["on_time"] == len(schedule.doses) == 53
    assert all(s.given_at == s.dose.due + timedelta(minutes=10) for s in rec.statuses)
