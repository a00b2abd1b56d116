"""Serial endotypes start from the randomisation stratum and show every sample; pending assays are kept and watched
against the < 72 h window; turnaround per site and laboratory; alerts (stratum switch, reversal, pending)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.trial import TrialStore, enter_labs, record_consent, record_followup, screen
from immunoguide.trial.followup import serial_endotypes
from immunoguide.trial.monitoring import alerts_view, patient_alerts, turnaround_report
from trial_helpers import COORD, COORD_MIL, DSMB, STATISTICIAN, h, make_lists, randomised, screening_record


@pytest.fixture
def store(tmp_path: Path, sqlite_template: Path) -> Any:
    db = tmp_path / "trial.db"
    shutil.copyfile(sqlite_template, db)
    st = TrialStore(f"sqlite:///{db}")
    yield st
    st.dispose()





def _day(d: float, hours: float = 2.0) -> str:
    """Study day ``d`` of a patient randomised at h(9)."""
    return h(9 + 24 * d + hours).isoformat()


def _ferritin(value: float, t: str, **extra: Any) -> dict[str, Any]:
    return {"ferritin": value, "ferritin_unit": "ng/mL", "ferritin_sample_time": t, **extra}


def test_immunoparalysis_patient_turning_mals_on_day_3_shows_a_switch_and_no_mals_reversal(store: TrialStore,
                                                                                           tmp_path: Path) -> None:
    """Before: the serial baseline was the first visit-day sample, so a patient randomised as immunoparalysis who is
    MALS on day 3 showed no transition and a later ferritin fall was a 'Reversal of MALS'. Now the baseline is the
    stratum: a transition immunoparalysis → MALS on day 3, a stratum-switch alert, and no MALS reversal."""
    make_lists(store, tmp_path, strata=("immunoparalysis",))
    randomised(store, "P1", stratum="immunoparalysis")
    hla = {"hla_dr": 3000, "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc"}
    with store.session() as s:
        record_followup(s, "P1", 3, actor=COORD, now=h(9 + 24 * 3 + 5),
                        labs=_ferritin(6000, _day(3), **hla, hla_dr_sample_time=_day(3)))
        record_followup(s, "P1", 5, actor=COORD, now=h(9 + 24 * 5 + 5),
                        labs=_ferritin(3000, _day(5), **hla, hla_dr_sample_time=_day(5)))
        serial = serial_endotypes(s, "P1", actor=COORD, now=h(9 + 24 * 6))
        alerts = patient_alerts(s, "P1", actor=STATISTICIAN, now=h(9 + 24 * 6))
    assert serial["baseline_endotype"] == "immunoparalysis"
    assert {"from": "immunoparalysis", "to": "MALS", "from_day": -1, "day": 3} in serial["transitions"]
    assert all(r["endotype"] != "MALS" for r in serial["reversals"])
    switch = [a for a in alerts if a["code"] == "stratum_switch"]
    assert switch and switch[0]["details"] == {"day": 3, "stratum": "immunoparalysis", "endotype": "MALS"}
    assert switch[0]["level"] == "warning"


def test_a_sample_on_a_non_visit_day_is_classified_and_shown(store: TrialStore, tmp_path: Path) -> None:
    """A ferritin drawn on study day 6 (no protocol visit) is stored and shown: day 6 is in the serial view
    (visit_day false) and in the sample list."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s:
        enter_labs(s, "P1", _ferritin(3500, _day(6)), actor=COORD, now=h(9 + 24 * 6 + 5))
        serial = serial_endotypes(s, "P1", actor=COORD, now=h(9 + 24 * 7))
    day6 = next(d for d in serial["days"] if d["day"] == 6)
    assert day6["visit_day"] is False and day6["endotype"] is not None
    assert any(x["study_day"] == 6 and x["visit_day"] is False for x in serial["samples"])
    assert serial["reversals"] and serial["reversals"][0]["day"] == 6  # 6100 → 3500 ng/mL: ≥ 15 % fall


def _screen_consent(store: TrialStore, code: str, site: str = "ATH") -> None:
    coord = COORD if site == "ATH" else COORD_MIL
    with store.session() as s:
        screen(s, code, site, screening_record(), actor=coord, now=h(1))
        record_consent(s, code, "patient", h(2), actor=coord, now=h(2))


def test_pending_hla_dr_is_kept_and_warned_about_as_the_window_closes(store: TrialStore) -> None:
    """Before: a sample time without a result was ignored. Now it is a pending order; with no turnaround history
    and 12 h left in the 72 h window the patient gets a warning, and once the window has closed a critical alert."""
    _screen_consent(store, "P1")
    with store.session() as s:
        out = enter_labs(s, "P1", {"ferritin": 900, "ferritin_unit": "ng/mL", "ferritin_sample_time": h(40).isoformat(),
                                   "hla_dr_sample_time": h(40).isoformat(), "hla_dr_source": "lab-A"},
                         actor=COORD, now=h(42))
    assert out["pending"] == [{"analyte": "hla_dr", "sample_time": h(40).isoformat(), "source": "lab-A"}]
    with store.session() as s:
        far = patient_alerts(s, "P1", actor=COORD, now=h(44))
        near = patient_alerts(s, "P1", actor=COORD, now=h(60))
        late = patient_alerts(s, "P1", actor=COORD, now=h(73))
    assert [a["code"] for a in far] == ["result_pending"]
    assert near[0]["code"] == "pending_assay_turnaround_unknown" and near[0]["level"] == "warning"
    assert late[0]["code"] == "pending_assay_after_window" and late[0]["level"] == "critical"


def test_pending_assay_whose_expected_result_is_after_the_window_is_critical(store: TrialStore) -> None:
    """Five earlier mHLA-DR results of lab-A at the site took 30 h: a sample drawn at h 50 is expected at ~h 80, after
    the window closes at h 72 — critical now, with the expected time and the turnaround quantile used."""
    for i in range(5):
        _screen_consent(store, f"H{i}")
        t = h(3 + i)
        with store.session() as s:
            enter_labs(s, f"H{i}", {"ferritin": 900, "ferritin_unit": "ng/mL", "ferritin_sample_time": t.isoformat(),
                                    "hla_dr": 3000, "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
                                    "hla_dr_sample_time": t.isoformat(), "hla_dr_source": "lab-A",
                                    "hla_dr_result_time": h(33 + i).isoformat()}, actor=COORD, now=h(40))
    _screen_consent(store, "P1")
    with store.session() as s:
        enter_labs(s, "P1", {"hla_dr_sample_time": h(50).isoformat(), "hla_dr_source": "lab-A"}, actor=COORD, now=h(51))
        alerts = patient_alerts(s, "P1", actor=COORD, now=h(52))
        report = turnaround_report(s, actor=COORD, now=h(52))
    a = alerts[0]
    assert a["code"] == "pending_assay_after_window" and a["level"] == "critical"
    assert a["details"]["expected_turnaround_h"] == pytest.approx(30.0) and a["details"]["laboratory"] == "lab-A"
    row = next(r for r in report["rows"] if r["laboratory"] == "lab-A" and r["concept"] == "hla_dr_per_monocyte")
    assert (row["n"], row["median_h"], row["pending"]) == (5, 30.0, 1)
    assert row["window_h"] == 72.0 and row["reported_after_window"] == 0


def test_result_entry_resolves_the_pending_order(store: TrialStore) -> None:
    """When the result of the pending sample arrives (same sample time), the order is resolved and the alert goes."""
    _screen_consent(store, "P1")
    with store.session() as s:
        enter_labs(s, "P1", {"ferritin": 900, "ferritin_unit": "ng/mL", "ferritin_sample_time": h(40).isoformat(),
                             "hla_dr_sample_time": h(40).isoformat()}, actor=COORD, now=h(41))
        enter_labs(s, "P1", {"hla_dr": 2900, "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
                             "hla_dr_sample_time": h(40).isoformat(), "hla_dr_result_time": h(46).isoformat()},
                   actor=COORD, now=h(47))
        assert patient_alerts(s, "P1", actor=COORD, now=h(60)) == []


def test_turnaround_counts_classification_results_reported_after_the_window(store: TrialStore) -> None:
    """A ferritin sampled at h 60 and reported at h 75 (window closes at h 72) is counted as reported after it."""
    _screen_consent(store, "P1")
    with store.session() as s:
        enter_labs(s, "P1", {"ferritin": 6100, "ferritin_unit": "ng/mL", "ferritin_sample_time": h(60).isoformat(),
                             "ferritin_result_time": h(75).isoformat(), "ferritin_source": "lab-B"},
                   actor=COORD, now=h(76))
        rows = turnaround_report(s, actor=STATISTICIAN, now=h(80))["rows"]
    row = next(r for r in rows if r["laboratory"] == "lab-B")
    assert (row["site"], row["n"], row["median_h"], row["reported_after_window"]) == ("ATH", 1, 15.0, 1)


def test_alert_listing_is_site_filtered_for_site_staff(store: TrialStore) -> None:
    """A site coordinator sees their site's alerts only; the DSMB sees every site."""
    _screen_consent(store, "A1")
    _screen_consent(store, "M1", site="MIL")
    with store.session() as s:
        for code, coord in (("A1", COORD), ("M1", COORD_MIL)):
            enter_labs(s, code, {"hla_dr_sample_time": h(40).isoformat()}, actor=coord, now=h(41))
        ath = alerts_view(s, actor=COORD, now=h(73))
        every = alerts_view(s, actor=DSMB, now=h(73))
    assert {a["patient"] for a in ath["alerts"]} == {"A1"} and ath["counts"]["critical"] == 1
    assert {a["patient"] for a in every["alerts"]} == {"A1", "M1"}
