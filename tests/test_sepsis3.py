"""Sepsis-3 over one timeline: suspected-infection pairing, the SOFA window around it, and the baseline policies.

Window lengths and the rise threshold are read from the criteria file the rule reads
(``criteria/sepsis3_singer_2016.toml``), so the edge tests move with the data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoguide.errors import ConflictingInputError, CriteriaError, PolicyError, UnknownCriteriaError
from immunoguide.rules.hourly import HOUR, hourly_sofa
from immunoguide.rules.sepsis3 import (
    load_sepsis3_criteria,
    load_sepsis3_criteria_text,
    sepsis3_onset,
    suspected_infections,
)
from immunoguide.rules.timeline import AntibioticAdministration, CultureSample, Observation, PatientTimeline

T0 = datetime(2024, 5, 1, 0, 0)
CRIT = load_sepsis3_criteria()
ABX_FIRST = CRIT.window("antibiotic_then_culture_h")  # 24 h in the shipped file
CX_FIRST = CRIT.window("culture_then_antibiotic_h")  # 72 h
BEFORE = CRIT.window("sofa_before_si_h")  # 48 h
AFTER = CRIT.window("sofa_after_si_h")  # 24 h
SECOND = timedelta(seconds=1)
TOML = Path(__file__).resolve().parents[1] / "src" / "immunoguide" / "criteria" / "sepsis3_singer_2016.toml"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def stay(*, abx=(), cx=(), obs=(), days: float = 8, **kw) -> PatientTimeline:  # type: ignore[no-untyped-def]
    return PatientTimeline(
        stay_id="s",
        icu_intime=T0,
        icu_outtime=T0 + timedelta(days=days),
        antibiotics=[AntibioticAdministration(time=t, name="ceftriaxone") for t in abx],
        cultures=[c if isinstance(c, CultureSample) else CultureSample(time=c, specimen="BLOOD") for c in cx],
        observations=list(obs),
        **kw,
    )


def plt(t: datetime, value: float) -> Observation:
    return Observation(time=t, concept="platelets_10e3_per_ul", value=value)


# --------------------------------------------------------------------------------------------------------------
# Suspected infection pairing
# --------------------------------------------------------------------------------------------------------------


def test_culture_then_antibiotic_exactly_72_hours_later_is_suspected_infection_at_culture_time():
    """culture < abx <= culture + 72 h pairs; the SI time is the culture time."""
    (si,) = suspected_infections(stay(cx=[at(10)], abx=[at(10) + CX_FIRST]))
    assert (si.direction, si.time, si.culture_time, si.antibiotic_time) == (
        "culture_first",
        at(10),
        at(10),
        at(10) + CX_FIRST,
    )


def test_antibiotic_one_second_after_the_72_hour_culture_window_is_not_paired():
    """An antibiotic 72 h + 1 s after the culture makes no suspected infection."""
    assert suspected_infections(stay(cx=[at(10)], abx=[at(10) + CX_FIRST + SECOND])) == ()


def test_antibiotic_then_culture_exactly_24_hours_later_is_suspected_infection_at_antibiotic_time():
    """culture - 24 h <= abx < culture pairs; the SI time is the antibiotic time."""
    (si,) = suspected_infections(stay(abx=[at(10)], cx=[at(10) + ABX_FIRST]))
    assert (si.direction, si.time, si.culture_time) == ("antibiotic_first", at(10), at(10) + ABX_FIRST)


def test_culture_one_second_after_the_24_hour_antibiotic_window_is_not_paired():
    """A culture 24 h + 1 s after the antibiotic makes no suspected infection."""
    assert suspected_infections(stay(abx=[at(10)], cx=[at(10) + ABX_FIRST + SECOND])) == ()


def test_simultaneous_antibiotic_and_culture_pair_only_under_the_paired_policy():
    """mimic-code's strict inequalities leave equal times unpaired; policy paired pairs them at that time."""
    tl = stay(abx=[at(10)], cx=[at(10)])
    assert suspected_infections(tl) == ()
    (si,) = suspected_infections(tl, policies={"simultaneous_antibiotic_culture": "paired"})
    assert (si.direction, si.time) == ("simultaneous", at(10))


def test_earlier_culture_wins_and_culture_first_beats_antibiotic_first():
    """Per antibiotic the earliest culture before it is taken, even when a culture follows within 24 h."""
    (si,) = suspected_infections(stay(cx=[at(2), at(20), at(30)], abx=[at(25)]))
    assert (si.direction, si.culture_time, si.time) == ("culture_first", at(2), at(2))


def test_positive_culture_wins_a_tie_at_the_same_time():
    """Two cultures at the same time: the positive one is reported."""
    cx = [
        CultureSample(time=at(5), specimen="URINE", positive=False),
        CultureSample(time=at(5), specimen="BLOOD", positive=True),
    ]
    (si,) = suspected_infections(stay(cx=cx, abx=[at(6)]))
    assert (si.specimen, si.positive_culture) == ("BLOOD", True)


def test_one_suspected_infection_per_paired_antibiotic_sorted_by_time():
    """Each antibiotic is paired on its own; unpaired antibiotics are dropped."""
    sis = suspected_infections(stay(cx=[at(100), at(5)], abx=[at(110), at(6), at(300)]))
    assert [(s.time, s.antibiotic_time) for s in sis] == [(at(5), at(6)), (at(100), at(110))]


def test_windows_are_parameters():
    """Shortening the culture-first window to 48 h drops a 60 h pair; widening antibiotic-first to 36 h adds one."""
    tl = stay(cx=[at(0)], abx=[at(60)])
    assert len(suspected_infections(tl)) == 1
    assert suspected_infections(tl, culture_then_antibiotic_h=48) == ()
    tl2 = stay(abx=[at(0)], cx=[at(30)])
    assert suspected_infections(tl2) == ()
    assert len(suspected_infections(tl2, antibiotic_then_culture_h=36)) == 1


# --------------------------------------------------------------------------------------------------------------
# Onset: the three baseline policies on one patient
# --------------------------------------------------------------------------------------------------------------

SI_H = 100  # culture at 100 h, antibiotic at 101 h -> SI at 100 h; SOFA window rows 52 h .. 124 h


def _three_baselines_patient(source: str | None = "inpatient") -> PatientTimeline:
    """An inpatient whose admission SOFA is 1, whose SOFA is already 2 when the window opens, then 3, then 4.

    * admission (0 h): bilirubin 1.5 mg/dL -> liver 1 -> admission SOFA 1 (rows 0 h .. 23 h);
    * from 40 h: bilirubin 2.5 mg/dL every 12 h -> liver 2 throughout the window -> total 2 at 52 h;
    * 60.5 h: platelets 140 -> coagulation 1 -> total 3 from the 61 h row;
    * 70.5 h: platelets 90 -> coagulation 2 -> total 4 from the 71 h row.
    """
    obs = [Observation(time=at(0), concept="bilirubin_mg_per_dl", value=1.5)]
    obs += [Observation(time=at(h), concept="bilirubin_mg_per_dl", value=2.5) for h in range(40, 160, 12)]
    obs += [plt(at(60.5), 140), plt(at(70.5), 90)]
    return stay(cx=[at(SI_H)], abx=[at(SI_H + 1)], obs=obs, admission_time=T0, admission_source=source)


@pytest.mark.parametrize(
    "policy, onset_h, baseline, sofa",
    [
        ("zero", SI_H - 48, 0, 2),  # total >= 2: already at the first window row
        ("immunosep_registry", 61, 1, 3),  # inpatient: admission SOFA 1 + 2 -> total 3
        ("running_minimum", 71, 2, 4),  # window minimum 2 + 2 -> total 4
    ],
)
def test_onset_hour_differs_by_baseline_policy(policy, onset_h, baseline, sofa):
    """Zero baseline, ImmunoSep admission SOFA and ricu's running minimum give three different onset hours."""
    r = sepsis3_onset(_three_baselines_patient(), policies={"baseline": policy})
    assert r.status == "onset"
    assert (r.onset_time, r.baseline_sofa, r.sofa_at_onset, r.delta) == (at(onset_h), baseline, sofa, sofa - baseline)
    assert r.suspected_infection_time == at(SI_H) and r.baseline_policy == policy
    assert r.delta >= CRIT.sofa_rise_points


def test_running_minimum_is_the_default_baseline():
    """Without a policy override the ricu delta_cummin baseline applies."""
    assert sepsis3_onset(_three_baselines_patient()).onset_time == at(71)


def test_immunosep_emergency_admission_needs_only_total_sofa_2():
    """ImmunoSep I5(a): an ED admission qualifies at total SOFA >= 2, like the zero baseline."""
    r = sepsis3_onset(_three_baselines_patient("emergency_department"), policies={"baseline": "immunosep_registry"})
    assert (r.onset_time, r.baseline_sofa) == (at(SI_H - 48), 0)


def test_immunosep_baseline_without_admission_source_is_indeterminate():
    """An unknown admission source cannot be read as 'no sepsis': the result is indeterminate with a reason."""
    r = sepsis3_onset(_three_baselines_patient(None), policies={"baseline": "immunosep_registry"})
    assert r.status == "indeterminate" and r.sepsis is None and r.onset_time is None
    assert any("admission_source unknown" in n for n in r.notes)


def test_constant_high_sofa_has_no_rise_under_running_minimum_but_qualifies_with_zero_baseline():
    """A patient at coagulation 3 from before the window has no acute rise (ricu) but meets mimic-code's SOFA >= 2."""
    obs = [plt(at(h), 40) for h in range(0, 190, 12)]
    tl = stay(cx=[at(60)], abx=[at(61)], obs=obs)
    assert sepsis3_onset(tl).status == "no_onset"
    assert sepsis3_onset(tl, policies={"baseline": "zero"}).onset_time == at(12)  # first window row (60 - 48 h)


# --------------------------------------------------------------------------------------------------------------
# Onset window edges, SI choice, bookkeeping
# --------------------------------------------------------------------------------------------------------------


def test_sofa_rise_exactly_24_hours_after_suspected_infection_counts_and_one_hour_later_does_not():
    """The window ends at SI + 24 h inclusive; a rise in the next row is outside it."""
    si = at(60)
    inside = stay(cx=[si], abx=[si + HOUR], obs=[plt(si + AFTER, 40)])
    outside = stay(cx=[si], abx=[si + HOUR], obs=[plt(si + AFTER + SECOND, 40)])
    r = sepsis3_onset(inside, policies={"baseline": "zero"})
    assert (r.status, r.onset_time) == ("onset", si + AFTER)
    assert sepsis3_onset(outside, policies={"baseline": "zero"}).status == "no_onset"


def test_sofa_row_exactly_48_hours_before_suspected_infection_is_in_the_window():
    """The window opens at SI - 48 h inclusive: a rise in that row is the onset."""
    si = at(60)
    r = sepsis3_onset(stay(cx=[si], abx=[si + HOUR], obs=[plt(si - BEFORE, 40)]), policies={"baseline": "zero"})
    assert r.onset_time == si - BEFORE


def test_si_window_any_searches_later_suspected_infections():
    """First SI without a rise: 'first' finds no onset, 'any' finds the rise around the second SI."""
    tl = stay(cx=[at(10), at(150)], abx=[at(11), at(151)], obs=[plt(at(140), 40)], days=10)
    first = sepsis3_onset(tl)
    assert (first.status, first.suspected_infection_time) == ("no_onset", at(10))
    anyr = sepsis3_onset(tl, policies={"si_window": "any"})
    assert (anyr.status, anyr.suspected_infection_time, anyr.onset_time) == ("onset", at(150), at(140))


def test_no_antibiotic_culture_pair_means_no_suspected_infection():
    """Without a pair the result says so, whatever the SOFA."""
    r = sepsis3_onset(stay(abx=[at(5)], obs=[plt(at(6), 10)]))
    assert r.status == "no_suspected_infection" and r.sepsis is False and r.suspected_infection_time is None


def test_result_records_criteria_policies_and_sofa_policies():
    """Every result carries the Sepsis-3 and SOFA criteria labels and every policy used."""
    r = sepsis3_onset(_three_baselines_patient(), sofa_policies={"vasopressor_min_duration": "none"})
    assert r.criteria == CRIT.label and r.sofa_criteria.startswith("sofa1@")
    assert set(r.policies) == set(CRIT.policies)
    assert r.sofa_policies["vasopressor_min_duration"] == "none"
    assert r.windows_h == CRIT.windows_h
    assert r.to_dict()["onset_time"] == at(71).isoformat()


def test_precomputed_hourly_rows_give_the_same_onset():
    """Passing hourly rows computed separately equals letting sepsis3_onset compute them."""
    tl = _three_baselines_patient()
    assert sepsis3_onset(tl, hourly=hourly_sofa(tl)) == sepsis3_onset(tl)
    with pytest.raises(ConflictingInputError):
        sepsis3_onset(tl, hourly=hourly_sofa(tl), sofa_policies={"missing_component": "no_imputation"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(platelets=st.lists(st.tuples(st.integers(0, 100), st.integers(5, 300)), max_size=8))
def test_running_minimum_onset_never_precedes_zero_baseline_onset(platelets):
    """Invariant: a rise of 2 over a running minimum >= 0 implies total >= 2 at or before that row."""
    tl = stay(cx=[at(40)], abx=[at(41)], obs=[plt(at(h + 0.5), v) for h, v in platelets], days=5)
    rows = hourly_sofa(tl)
    rm = sepsis3_onset(tl, hourly=rows)
    zero = sepsis3_onset(tl, hourly=rows, policies={"baseline": "zero"})
    if rm.onset_time is not None:
        assert zero.onset_time is not None and zero.onset_time <= rm.onset_time


# --------------------------------------------------------------------------------------------------------------
# Criteria file validation
# --------------------------------------------------------------------------------------------------------------


def test_shipped_sepsis3_file_cites_singer_and_seymour():
    """The shipped file carries both DOIs and the ricu-default baseline."""
    assert "10.1001/jama.2016.0287" in CRIT.doi and "10.1001/jama.2016.0288" in CRIT.doi
    assert CRIT.policies["baseline"].default == "running_minimum"
    assert "NCT04990232" in CRIT.policies["baseline"].citation


def test_criteria_file_with_a_negative_window_is_rejected():
    """A window that is not a positive number of hours cannot ship."""
    text = TOML.read_text("utf-8").replace("sofa_before_si_h = 48", "sofa_before_si_h = -48")
    with pytest.raises(CriteriaError, match="sofa_before_si_h"):
        load_sepsis3_criteria_text(text)


def test_criteria_file_whose_policy_options_differ_from_the_code_is_rejected():
    """Data and code cannot drift: a policy option the rule does not implement is an error."""
    text = TOML.read_text("utf-8").replace('zero = "Baseline 0', 'zero_baseline = "Baseline 0')
    with pytest.raises(CriteriaError, match="implemented by the rule"):
        load_sepsis3_criteria_text(text)


def test_unknown_policy_option_and_unknown_criteria_id_are_rejected():
    """Unknown policy options raise PolicyError; unknown criteria ids UnknownCriteriaError."""
    with pytest.raises(PolicyError):
        sepsis3_onset(stay(), policies={"baseline": "median"})
    with pytest.raises(UnknownCriteriaError):
        load_sepsis3_criteria("sepsis4")
