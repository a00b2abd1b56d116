"""The daily trial workflow over the store (SQLite and PostgreSQL): screening log, consent, classification, kits,
emergency unblinding, dosing, follow-up, adverse events and safety signals, withdrawal with data removal."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.errors import (
    ConflictingInputError,
    DuplicateConsent,
    InputError,
    NotAuthorized,
    NotAVisitDay,
    NotEligible,
    PatientWithdrawn,
    UnknownPatient,
)
from immunoguide.trial import (
    TrialStore,
    adverse_events_view,
    consort,
    dosing_view,
    enter_labs,
    kits_view,
    lab_results_view,
    patient_view,
    randomize,
    record_adverse_event,
    record_consent,
    record_dose,
    record_followup,
    report_sae,
    safety_signals,
    screen,
    screening_log,
    unblind,
    verify_audit,
    withdraw,
)
from immunoguide.trial.models import AuditRecord, FollowUp, LabResult, Patient
from trial_helpers import (
    ADMIN,
    COORD,
    COORD_MIL,
    DSMB,
    INVESTIGATOR,
    INVESTIGATOR_MIL,
    PHARMACIST,
    STATISTICIAN,
    enrol,
    h,
    labs,
    make_lists,
    randomised,
    row_counts,
    screening_record,
)


@pytest.fixture
def store(store_url: str):
    st = TrialStore(store_url)
    yield st
    st.dispose()


def _arm(store: TrialStore, code: str) -> str:
    with store.session() as s:
        return patient_view(s, code, actor=DSMB)["randomisation"]["arm"]


def _randomise_until(store: TrialStore, stratum: str, arm: str, prefix: str) -> str:
    """Randomise patients of a stratum until one lands in ``arm``; return its code."""
    for i in range(12):
        code = f"{prefix}{i}"
        randomised(store, code, stratum=stratum)
        if _arm(store, code) == arm:
            return code
    raise AssertionError(f"no {arm} in 12 slots")


# ---------------------------------------------------------------------------------------------------------------
# screening, consent, classification


def test_screening_log_keeps_the_eligibility_evidence(store: TrialStore) -> None:
    """The screening log stores each criterion's status with the value, unit and time it used (age 68 for I1)."""
    with store.session() as s:
        view = screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
    assert view["status"] == "screening" and view["eligible"] is None
    assert {u["id"] for u in view["undetermined"]} == {"I3", "I6", "I7", "E2"}  # consent, endotype, first dose
    i1 = next(c for c in view["evidence"]["criteria"] if c["id"] == "I1")
    assert i1["status"] == "met" and i1["evidence"][0]["value"] == 68 and i1["evidence"][0]["unit"] == "years"
    assert {w["setting"] for w in view["warnings"]} >= {"steroid_exclusion", "other_exclusions"}


def test_screen_failure_is_logged_with_its_reason_for_consort(store: TrialStore) -> None:
    """A 17-year-old fails I1 and hits E1: a screen failure whose reasons appear in the log and in CONSORT."""
    with store.session() as s:
        view = screen(s, "P1", "ATH", screening_record(age_years=17), actor=COORD, now=h(1))
        screen(s, "P2", "ATH", screening_record(dnr_order=True), actor=COORD, now=h(1))
    assert view["status"] == "screen_failed" and {b["id"] for b in view["blocking"]} == {"I1", "E1"}
    with store.session() as s:
        log = {r["patient"]: r for r in screening_log(s, actor=COORD)}
        c = consort(s, actor=STATISTICIAN)
    assert log["P1"]["screen_failure_reasons"] == ["I1", "E1"] and log["P2"]["screen_failure_reasons"] == ["E6"]
    assert c["screened"] == 2 and c["screen_failures"] == 2
    assert c["screen_failure_reasons"] == {"E1": 1, "E6": 1, "I1": 1}


def test_unclassified_endotype_is_a_screen_failure(store: TrialStore) -> None:
    """Ferritin <= 4420 with HLA-DR >= 5000 AB/c is neither MALS nor immunoparalysis: not eligible (I6)."""
    with store.session() as s:
        screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
        record_consent(s, "P1", "patient", h(2), actor=COORD, now=h(2))
        view = enter_labs(s, "P1", labs("unclassified"), actor=COORD, now=h(8))
    assert view["classification"]["endotype"] == "unclassified" and view["stratum"] is None
    assert view["status"] == "screen_failed" and [b["id"] for b in view["blocking"]] == ["I6"]


@pytest.mark.parametrize(("stratum", "endotype"), [("MALS", "MALS"), ("immunoparalysis", "immunoparalysis")])
def test_classification_from_entered_labs_sets_the_stratum(store: TrialStore, stratum: str, endotype: str) -> None:
    """Ferritin 6100 ng/mL → MALS; ferritin 900 with HLA-DR 2900 AB/c (QuantiBRITE) → immunoparalysis."""
    with store.session() as s:
        screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
        view = enter_labs(s, "P1", labs(stratum), actor=COORD, now=h(8))
    assert view["stratum"] == endotype
    used = view["classification"]["inputs_used"]
    assert all(u["sample_time"] is not None and u["age_h"] == pytest.approx(5.0) for u in used)
    with store.session() as s:
        row = s.execute(select(LabResult).where(LabResult.concept == "ferritin_ng_per_ml")).scalar_one()
    assert row.raw_unit == "ng/mL" and row.sample_time == h(3) and row.result_time == h(5)


def test_hla_dr_in_mfi_cannot_classify_immunoparalysis(store: TrialStore) -> None:
    """An mHLA-DR result in MFI is not comparable with QuantiBRITE AB/c: no stratum, and no randomisation."""
    bad = {**labs("immunoparalysis"), "hla_dr_method": "mfi"}
    with store.session() as s:
        screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
        record_consent(s, "P1", "patient", h(2), actor=COORD, now=h(2))
        view = enter_labs(s, "P1", bad, actor=COORD, now=h(8))
    assert view["stratum"] is None and view["classification"]["endotype"] == "indeterminate"
    assert "assay_method_mismatch" in {e["code"] for e in view["classification"]["excluded"]}
    with store.session() as s, pytest.raises(NotEligible):
        randomize(s, "P1", actor=COORD, now=h(9))


def test_consent_by_a_relative_is_accepted_and_recorded_once(store: TrialStore) -> None:
    """A first-degree relative may consent (I3); a second consent raises DuplicateConsent and stores nothing."""
    with store.session() as s:
        screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
        view = record_consent(s, "P1", "first_degree_relative", h(2), actor=COORD, now=h(2))
    assert view["consent"]["kind"] == "given" and "I3" not in {u["id"] for u in view["undetermined"]}
    before = row_counts(store)
    with store.session() as s, pytest.raises(DuplicateConsent):
        record_consent(s, "P1", "patient", h(3), actor=COORD, now=h(3))
    assert row_counts(store) == before


def test_refused_consent_is_a_screen_failure(store: TrialStore) -> None:
    """Consent refused hits exclusion E2."""
    with store.session() as s:
        screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
        view = record_consent(s, "P1", "refused", h(2), actor=COORD, now=h(2))
    assert view["status"] == "screen_failed" and "E2" in {b["id"] for b in view["blocking"]}


def test_site_users_see_their_own_site_only(store: TrialStore) -> None:
    """A Milan coordinator can neither read nor act on an Athens patient — told, as for a code that does not exist,
    that there is no such patient — and the Athens log hides Milan."""
    enrol(store, "A1")
    enrol(store, "M1", site="MIL")
    with store.session() as s, pytest.raises(UnknownPatient) as other_site:
        patient_view(s, "A1", actor=COORD_MIL)
    with store.session() as s, pytest.raises(UnknownPatient) as no_such:
        patient_view(s, "ZZ9", actor=COORD_MIL)
    assert (other_site.value.expected, other_site.value.todo) == (no_such.value.expected, no_such.value.todo)
    with store.session() as s, pytest.raises(UnknownPatient):
        record_consent(s, "A1", "patient", h(3), actor=COORD_MIL, now=h(3))
    with store.session() as s:
        assert [r["patient"] for r in screening_log(s, actor=COORD)] == ["A1"]
        assert {r["patient"] for r in screening_log(s, actor=STATISTICIAN)} == {"A1", "M1"}


def test_biomarker_results_are_readable_by_the_site_and_blinded_roles_but_not_another_site(store: TrialStore) -> None:
    """The stored ferritin (canonical ng/mL) is read back for the Athens coordinator and the statistician; the
    Milan coordinator is refused like for the rest of the record."""
    with store.session() as s:
        screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1))
        enter_labs(s, "P1", labs("MALS"), actor=COORD, now=h(8))
    with store.session() as s:
        for actor in (COORD, STATISTICIAN):
            res = {r.concept: r for r in lab_results_view(s, "P1", actor=actor)}
            assert res["ferritin_ng_per_ml"].value.lower == res["ferritin_ng_per_ml"].value.upper > 4420
            assert res["ferritin_ng_per_ml"].sample_time == h(3)
    with store.session() as s, pytest.raises(UnknownPatient):
        lab_results_view(s, "P1", actor=COORD_MIL)


# ---------------------------------------------------------------------------------------------------------------
# kits and unblinding


def test_kits_are_blinded_except_for_the_unblinded_pharmacist(store: TrialStore, tmp_path: Path) -> None:
    """Every patient gets an IV and an SC kit; site staff see numbers and labels only; the pharmacist sees contents."""
    make_lists(store, tmp_path, strata=("MALS",))
    a = _randomise_until(store, "MALS", "mals_anakinra", "A")
    p = _randomise_until(store, "MALS", "mals_placebo", "B")
    with store.session() as s:
        blind_a, blind_p = kits_view(s, a, actor=COORD), kits_view(s, p, actor=INVESTIGATOR)
        pharm_a, pharm_p = kits_view(s, a, actor=PHARMACIST), kits_view(s, p, actor=PHARMACIST)
    for v in (blind_a, blind_p):
        assert v["blinded"] and [k["route"] for k in v["kits"]] == ["IV", "SC"]
        assert all(set(k) == {"kit_number", "route", "label", "assigned_at"} for k in v["kits"])
    # the label of an active and a placebo IV kit differ only by the kit number
    la, lp = (v["kits"][0] for v in (blind_a, blind_p))
    assert la["label"].replace(la["kit_number"], "#") == lp["label"].replace(lp["kit_number"], "#")
    assert [k["regimen"] for k in pharm_a["kits"]] == ["anakinra_iv", "placebo_sc"]
    assert [k["regimen"] for k in pharm_p["kits"]] == ["placebo_iv", "placebo_sc"]


def test_emergency_unblinding_is_restricted_reasoned_and_audited(store: TrialStore, tmp_path: Path) -> None:
    """Only an investigator of the patient's site may unblind, with a reason; the event is audited and the arm is
    then visible to that site's investigators only."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    for actor in (COORD, STATISTICIAN, ADMIN):
        with store.session() as s, pytest.raises(NotAuthorized):
            unblind(s, "P1", "severe bleeding, need to know the drug", actor=actor, now=h(20))
    with store.session() as s, pytest.raises(UnknownPatient):  # another site's investigator: no such patient there
        unblind(s, "P1", "severe bleeding, need to know the drug", actor=INVESTIGATOR_MIL, now=h(20))
    with store.session() as s, pytest.raises(InputError):
        unblind(s, "P1", " ", actor=INVESTIGATOR, now=h(20))
    with store.session() as s:
        out = unblind(s, "P1", "severe bleeding, need to know the drug", actor=INVESTIGATOR, now=h(20))
    assert out["arm"] in ("mals_anakinra", "mals_placebo") and out["arm"] == _arm(store, "P1")
    with store.session() as s:
        entry = s.execute(select(AuditRecord).where(AuditRecord.table_name == "unblindings")).scalar_one()
        assert (entry.actor, entry.role, entry.action, entry.at) == ("dr_kotsaki", "investigator", "insert", h(20))
        assert entry.payload["after"]["reason"] == "severe bleeding, need to know the drug"
        assert patient_view(s, "P1", actor=INVESTIGATOR)["randomisation"]["arm"] == out["arm"]
        assert "arm" not in patient_view(s, "P1", actor=COORD)["randomisation"]


# ---------------------------------------------------------------------------------------------------------------
# dosing


def test_dosing_schedule_flags_late_and_missed_doses(store: TrialStore, tmp_path: Path) -> None:
    """Anakinra/placebo IV q8h × 15 d gives 45 IV doses and SC q48h gives 8; a dose 3 h late is late, and doses
    not given by their due time plus the tolerance are missed."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    start = h(10)
    with store.session() as s:
        record_dose(s, "P1", "IV", start, actor=COORD, now=start)
        record_dose(s, "P1", "SC", start, actor=COORD, now=start)
        record_dose(s, "P1", "IV", start + timedelta(hours=11), actor=COORD, now=start + timedelta(hours=11))
        view = dosing_view(s, "P1", actor=COORD, now=start + timedelta(hours=20))
    iv = [d for d in view["doses"] if d["kit"] == "IV"]
    sc = [d for d in view["doses"] if d["kit"] == "SC"]
    assert len(iv) == 45 and len(sc) == 8 and sc[-1]["day"] == 15
    assert [d["status"] for d in iv[:5]] == ["on_time", "late", "missed", "pending", "pending"]
    assert iv[1]["delay_h"] == pytest.approx(3.0)
    assert {(d["kit"], d["number"], d["status"]) for d in view["flagged"]} == {("IV", 2, "late"), ("IV", 3, "missed")}
    assert "prescribed" not in iv[0] and view["first_dose_window"]["met"] is True
    with store.session() as s:
        pharm = dosing_view(s, "P1", actor=PHARMACIST, now=start + timedelta(hours=20))
    assert pharm["doses"][0]["prescribed"] in ("anakinra 200 mg", "placebo 20 mL")


def test_first_dose_after_the_window_is_recorded_and_flagged(store: TrialStore, tmp_path: Path) -> None:
    """A first dose 73 h after Sepsis-3 onset was given, so it is stored, and flagged as outside the < 72 h window."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1", at=71.5)
    with store.session() as s:
        view = record_dose(s, "P1", "IV", h(73), actor=COORD, now=h(73))
    assert view["first_dose_window"] == {"criterion": "I7", "rule": "first dose < 72 h after Sepsis-3",
                                         "hours_from_sepsis3": 73.0, "met": False}


# ---------------------------------------------------------------------------------------------------------------
# follow-up


def test_followup_days_sofa_and_serial_endotype_transitions(store: TrialStore, tmp_path: Path) -> None:
    """SOFA entered or computed from its worst values; day-2 labs show MALS → unclassified with a ≥ 15 % ferritin
    fall (reversal); day 15 takes the infection assessment and day 28 the vital status."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")  # randomised at h(9): study day k starts at h(9 + 24 k)
    day0 = {"ferritin": 6100, "ferritin_unit": "ng/mL", "ferritin_sample_time": h(12).isoformat()}
    day2 = {**labs("unclassified", sample_h=9 + 48 + 2)}
    with store.session() as s:
        record_followup(s, "P1", 0, actor=COORD, now=h(13), labs=day0)
        record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=9)
        v2 = record_followup(s, "P1", 2, actor=COORD, now=h(66), labs=day2, sofa_inputs={
            "pao2_mmhg": 80, "fio2_fraction": 0.5, "respiratory_support": True, "platelets_10e3_per_ul": 90,
            "gcs": 14, "map_mmhg": 72, "bilirubin_mg_per_dl": 1.0, "creatinine_mg_per_dl": 1.0,
            "urine_output_ml_per_day": 1500})
        v15 = record_followup(s, "P1", 15, actor=COORD, now=h(9 + 24 * 15 + 2), infection_assessment="resolution")
        v28 = record_followup(s, "P1", 28, actor=COORD, now=h(9 + 24 * 28 + 2), vital_status="dead",
                              death_at=h(9 + 24 * 20))
    d2 = next(d for d in v2["days"] if d["day"] == 2)
    assert d2["sofa_source"] == "computed" and d2["sofa_total"] == 6  # resp 3 (P/F 160, support) + coag 2 + cns 1
    serial = v2["serial"]
    # the classification sample (h 3, before randomisation at h 9) is study day -1: the baseline, the stratum MALS
    assert [(d["day"], d["endotype"]) for d in serial["days"]] == [(-1, "MALS"), (0, "MALS"), (2, "unclassified")]
    assert serial["baseline_day"] == -1 and serial["baseline_endotype"] == "MALS"
    assert serial["transitions"] == [{"from": "MALS", "to": "unclassified", "from_day": 0, "day": 2}]
    assert serial["reversals"][0]["kind"] == "relative_fall" and serial["time_to_reversal_days"] == 3
    assert next(d for d in v15["days"] if d["day"] == 15)["infection_assessment"] == "resolution"
    assert next(d for d in v28["days"] if d["day"] == 28)["vital_status"] == "dead"


@pytest.mark.parametrize(
    ("day", "kwargs", "error"),
    [
        (16, {"sofa_total": 5}, NotAVisitDay),
        (4, {"infection_assessment": "failure"}, NotAVisitDay),
        (15, {"infection_assessment": "cured"}, InputError),
        (28, {"vital_status": "dead"}, InputError),
        (3, {"sofa_total": 5, "sofa_inputs": {"gcs": 15}}, ConflictingInputError),
        (3, {"sofa_total": 25}, InputError),
    ],
)
def test_followup_refuses_items_off_their_protocol_day(store: TrialStore, tmp_path: Path, day: int, kwargs: dict,
                                                       error: type[Exception]) -> None:
    """Day 16 is no follow-up day, the infection assessment belongs to day 15, a death needs its time, SOFA ≤ 24."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    before = row_counts(store)
    with store.session() as s, pytest.raises(error):
        record_followup(s, "P1", day, actor=COORD, now=h(9 + 24 * 30), **kwargs)
    assert row_counts(store) == before


# ---------------------------------------------------------------------------------------------------------------
# adverse events


def test_sae_clocks_run_24_hours_and_15_days_from_awareness(store: TrialStore, tmp_path: Path) -> None:
    """An SAE known at h(20) is due for its initial report by h(44) and its full report 15 days later; a report
    at h(50) is late, an unreported full report is pending and becomes overdue."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s:
        ae = record_adverse_event(s, "P1", term="Acute respiratory distress syndrome", onset_at=h(18), grade=4, serious=True,
                                  relatedness="unlikely", outcome="recovering", actor=COORD, now=h(20))
        mild = record_adverse_event(s, "P1", term="Nausea", onset_at=h(18), grade=1, serious=False,
                                    relatedness="possible", outcome="recovered", actor=COORD, now=h(21))
    assert ae["sae_clocks"]["initial"]["due"] == h(44).isoformat() and "sae_clocks" not in mild
    with store.session() as s:
        overdue = adverse_events_view(s, "P1", actor=COORD, now=h(45))[0]["sae_clocks"]
        report_sae(s, "P1", ae["id"], "initial", h(50), actor=COORD, now=h(50))
        later = adverse_events_view(s, "P1", actor=COORD, now=h(20 + 24 * 16))[0]["sae_clocks"]
    assert overdue["initial"]["status"] == "overdue" and overdue["full"]["status"] == "pending"
    assert later["initial"]["status"] == "late" and later["full"]["status"] == "overdue"


def test_grade_5_adverse_event_must_be_fatal(store: TrialStore, tmp_path: Path) -> None:
    """CTCAE grade 5 is death related to the AE: grade 5 with outcome 'recovered' is refused."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s, pytest.raises(ConflictingInputError):
        record_adverse_event(s, "P1", term="Septic shock", onset_at=h(18), grade=5, serious=True,
                             relatedness="not_related", outcome="recovered", actor=COORD, now=h(20))


def test_safety_signals_are_computed_for_the_unblinded_reviewer_only(store: TrialStore, tmp_path: Path) -> None:
    """Anemia on anakinra and bleeding with thrombocytopenia on interferon-γ are counted per arm against the placebo
    arm of the stratum under the DSMB rule, for the DSMB only; site staff, statisticians and pharmacists are refused."""
    make_lists(store, tmp_path)
    ana = _randomise_until(store, "MALS", "mals_anakinra", "M")
    _randomise_until(store, "MALS", "mals_placebo", "N")
    ifn = _randomise_until(store, "immunoparalysis", "sii_ifng", "S")
    _randomise_until(store, "immunoparalysis", "sii_placebo", "T")
    with store.session() as s:
        record_adverse_event(s, ana, term="Anemia", onset_at=h(30), grade=3, serious=False, relatedness="possible",
                             outcome="recovering", actor=COORD, now=h(31))
        record_adverse_event(s, ifn, term="Thrombocytopenia", onset_at=h(30), grade=3, serious=False,
                             relatedness="possible", outcome="recovering", actor=COORD, now=h(31))
        record_adverse_event(s, ifn, term="Gastric hemorrhage", onset_at=h(32), grade=3, serious=True,
                             relatedness="possible", outcome="recovering", actor=COORD, now=h(33))
    for actor in (COORD, INVESTIGATOR, PHARMACIST, STATISTICIAN, ADMIN):
        with store.session() as s, pytest.raises(NotAuthorized):
            safety_signals(s, actor=actor, now=h(40))
    with store.session() as s:
        res = safety_signals(s, actor=DSMB, now=h(40))
    out = {sig["id"]: sig for sig in res["signals"]}
    assert res["rule"]["method"] == "newcombe_rd_lower_bound" and res["rule"]["confidence"] == "unknown"
    anemia = out["anemia_on_anakinra"]
    arm = next(a for a in anemia["arms"] if a["arm"] == "mals_anakinra")
    assert arm["patients_with_event"] == arm["counted"] == 1 and arm["events"][0]["patient"] == ana
    assert arm["events"][0]["evidence"][0]["term"] == "Anemia"
    bleed = out["bleeding_on_ifng"]
    arm = next(a for a in bleed["arms"] if a["arm"] == "sii_ifng")
    assert arm["patients_with_event_and_condition"] == arm["counted"] == 1
    cmp = next(c for c in bleed["comparisons"] if c["arm"] == "sii_ifng")
    assert cmp["comparator"] == "sii_placebo"
    # one patient per arm cannot pass a 95 % interval: the DSMB rule, not "any positive difference", decides
    assert cmp["drug_events"] == 1 and cmp["raised"] is (cmp["ci_low"] > 0) and bleed["raised"] is False


# ---------------------------------------------------------------------------------------------------------------
# withdrawal


def test_withdrawal_with_data_removal_keeps_a_tombstone_and_consort_counts(store: TrialStore, tmp_path: Path) -> None:
    """The patient's clinical rows and their audit payloads are removed; the tombstone, slot and kits stay, CONSORT
    still counts the randomisation, excludes the patient from the analysed set, and the audit trail verifies."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    randomised(store, "P2")
    with store.session() as s:
        record_dose(s, "P1", "IV", h(10), actor=COORD, now=h(10))
        record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=8)
        record_adverse_event(s, "P1", term="Anemia", onset_at=h(30), grade=2, serious=False, relatedness="possible",
                             outcome="recovered", actor=COORD, now=h(31))
        out = withdraw(s, "P1", "patient withdrew consent and asked for data removal", actor=INVESTIGATOR, now=h(40),
                       remove_data=True)
    assert out["removed"]["lab_results"] == 1 and out["removed"]["followups"] == 1
    assert out["removed"]["audit_payloads_redacted"] > 0
    with store.session() as s:
        p1 = s.execute(select(Patient).where(Patient.code == "P1")).scalar_one()
        assert p1.data_removed and p1.status == "withdrawn" and p1.screening_record is None
        assert p1.sepsis3_onset is None and p1.stratum == "MALS"
        assert s.execute(select(func.count()).select_from(LabResult).where(LabResult.patient_id == p1.id)).scalar() == 0
        assert s.execute(select(func.count()).select_from(FollowUp).where(FollowUp.patient_id == p1.id)).scalar() == 0
        leaked = s.execute(select(AuditRecord).where(AuditRecord.patient_id == p1.id,
                                                     AuditRecord.table_name == "lab_results")).scalars().all()
        assert leaked and all(r.payload is None or r.payload["before"] == {"redacted": True} for r in leaked)
        assert verify_audit(s).ok
        c = consort(s, actor=DSMB)
        blinded = consort(s, actor=STATISTICIAN)
    assert c["randomised"] == 2 and c["withdrawn_with_data_removal"] == 1 and c["analysed"] == 1
    assert sum(c["withdrawn_with_data_removal_by_arm"].values()) == 1
    assert "randomised_by_arm" not in blinded and blinded["analysed_by_stratum"] == {"MALS": 1}
    # the slot is never reused: the next patient takes slot 3
    assert randomised(store, "P3")["randomisation_number"] == "ATH-MALS-0003"
    with store.session() as s, pytest.raises(PatientWithdrawn):
        record_dose(s, "P1", "IV", h(41), actor=COORD, now=h(41))


def test_withdrawal_without_data_removal_keeps_the_data(store: TrialStore, tmp_path: Path) -> None:
    """Without a removal request the data stay and count in the analysis; further data entry is refused."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s:
        record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=8)
        withdraw(s, "P1", "withdrew from treatment", actor=COORD, now=h(40))
        assert s.execute(select(func.count()).select_from(FollowUp)).scalar() == 1
        c = consort(s, actor=STATISTICIAN)
    assert c["withdrawn_after_randomisation"] == 1 and c["withdrawn_with_data_removal"] == 0 and c["analysed"] == 1
    with store.session() as s, pytest.raises(PatientWithdrawn):
        record_followup(s, "P1", 2, actor=COORD, now=h(60), sofa_total=8)


def test_covid19_patients_are_randomised_in_the_mals_stratum_only(store: TrialStore, tmp_path: Path) -> None:
    """ImmunoSep I8: a COVID-19 patient with immunoparalysis is not eligible; one with MALS is randomised."""
    make_lists(store, tmp_path)
    enrol(store, "C1", stratum="immunoparalysis", covid19=True)
    with store.session() as s, pytest.raises(NotEligible, match="I8"):
        randomize(s, "C1", actor=COORD, now=h(9))
    assert randomised(store, "C2", covid19=True)["randomisation_number"] == "ATH-MALS-0001"


def test_startup_checks_report_a_tampered_list_without_stopping(store: TrialStore, tmp_path: Path) -> None:
    """The start-up check returns the warnings of a clean store and, once a slot was deleted, reports IG-RAND-E001
    for that list (reported, not raised: the list refuses its own randomisations, the trial goes on)."""
    from immunoguide.errors import AllocationListMismatch
    from immunoguide.trial import startup_checks

    make_lists(store, tmp_path, strata=("MALS",))
    assert {c.id for c in startup_checks(store, list_dir=tmp_path)} == {"IG-RAND-W002"}
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM allocation_slots WHERE seq = 3")
    assert [(c.id, c.list) for c in startup_checks(store) if c.level == "error"] == [("IG-RAND-E001", "ATH-MALS")]
    enrol(store, "P1")
    with store.session() as s, pytest.raises(AllocationListMismatch):
        randomize(s, "P1", actor=COORD, now=h(9))
