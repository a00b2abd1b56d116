"""Safety monitoring in the trial store: structured safety labs graded by CTCAE v5.0, AE terms coded to CTCAE v5.0
(free text refused), safety signals on coded data that honour their condition and compare arms under the DSMB's
statistical rule, withdrawal removing the new rows, and an existing revision-0002 store upgrading with its data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.errors import InputError, MissingInputError, NotAuthorized, UnknownTermError, WrongTypeError
from immunoguide.rules.signal_rule import SignalRule, evaluate_signal_rule
from immunoguide.trial import (
    TrialStore,
    adverse_events_view,
    patient_view,
    record_adverse_event,
    record_followup,
    record_safety_labs,
    safety_labs_view,
    safety_signals,
    verify_audit,
    withdraw,
)
from immunoguide.trial.models import AdverseEventCoding, SafetyLabResult
from immunoguide.trial.store import HEAD_REVISION
from trial_helpers import COORD, DSMB, STATISTICIAN, h, make_lists, randomised

LABS_DAY3 = {"sample_time": h(80).isoformat(), "result_time": h(81).isoformat(), "source": "central lab ATH",
             "hemoglobin": 7.4, "hemoglobin_unit": "g/dL", "hemoglobin_lln": 13.0,
             "platelets": 42, "platelets_unit": "10^9/L", "platelets_lln": 150,
             "bilirubin": 41, "bilirubin_unit": "umol/L", "bilirubin_uln": 21}


@pytest.fixture
def store(tmp_path: Path, sqlite_template: Path) -> Any:
    import shutil

    db = tmp_path / "trial.db"
    shutil.copyfile(sqlite_template, db)
    st = TrialStore(f"sqlite:///{db}")
    yield st
    st.dispose()


def _arm(store: TrialStore, code: str) -> str:
    with store.session() as s:
        return patient_view(s, code, actor=DSMB)["randomisation"]["arm"]


def _randomise_into(store: TrialStore, stratum: str, arm: str, prefix: str, start: int = 0) -> str:
    for i in range(start, start + 14):
        code = f"{prefix}{i}"
        randomised(store, code, stratum=stratum)
        if _arm(store, code) == arm:
            return code
    raise AssertionError(f"no {arm} in 14 slots")


def _ae(s: Any, code: str, term: str, *, at: float = 30, grade: int = 3, serious: bool = False) -> dict[str, Any]:
    return record_adverse_event(s, code, term=term, onset_at=h(at), grade=grade, serious=serious,
                                relatedness="possible", outcome="recovering", actor=COORD, now=h(at + 1))


# ---------------------------------------------------------------------------------------------------------------
# safety labs


def test_haemoglobin_is_entered_at_follow_up_as_a_graded_safety_lab(store: TrialStore, tmp_path: Path) -> None:
    """Before: ``hemoglobin_g_per_dl`` at follow-up was IG-E100. Now a follow-up day takes safety labs: Hgb 7.4 g/dL
    is CTCAE Anemia grade 3, platelets 42 x10^9/L grade 3, bilirubin 41 umol/L with ULN 21 grade 2."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s:
        with pytest.raises(InputError):
            record_followup(s, "P1", 3, actor=COORD, now=h(90), labs={"hemoglobin_g_per_dl": 7.4})
    with store.session() as s:
        record_followup(s, "P1", 3, actor=COORD, now=h(90), assessed_at=h(82), sofa_total=7, safety_labs=LABS_DAY3)
        rows = {r["analyte"]: r for r in safety_labs_view(s, "P1", actor=STATISTICIAN)}
    assert (rows["hemoglobin"]["term"], rows["hemoglobin"]["grade"]) == ("Anemia", 3)
    assert rows["hemoglobin"]["meddra_code"] == "10002272"
    assert (rows["platelets"]["term"], rows["platelets"]["grade"]) == ("Platelet count decreased", 3)
    assert rows["bilirubin"]["grade"] == 2 and rows["bilirubin"]["value"] == pytest.approx(41 / 17.104)
    # limits are kept canonical (mg/dL) and shown back in the unit the laboratory reported
    assert rows["bilirubin"]["unit"] == "mg/dL" and rows["bilirubin"]["uln_as_reported"] == pytest.approx(21)
    assert rows["hemoglobin"]["study_day"] == 2  # sampled 80 h after onset, randomised at h(9): day 2
    assert rows["platelets"]["source"] == "central lab ATH"


@pytest.mark.parametrize(
    ("record", "exc"),
    [
        ({"platelets": False, "platelets_unit": "10^9/L"}, WrongTypeError),
        ({"platelets": 42}, MissingInputError),
        ({"platelets": 42, "platelets_unit": "10^9/L", "platelet": 1}, InputError),
        ({"hemoglobin": 70, "hemoglobin_unit": "g/dL"}, InputError),
        ({"platelets_lln": 150}, MissingInputError),
        ({"hemoglobin": 7.0, "hemoglobin_unit": "g/dL", "sample_time": "0001-01-01T00:00:00+00:00"}, InputError),
    ],
)
def test_bad_safety_lab_records_are_refused_naming_the_field(store: TrialStore, tmp_path: Path,
                                                             record: dict[str, Any], exc: type) -> None:
    """Booleans, values without unit, unknown fields, implausible values, limits without a value and year-0001
    samples are refused; nothing is stored."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    rec = {"sample_time": h(30).isoformat(), **record}
    with store.session() as s, pytest.raises(exc):
        record_safety_labs(s, "P1", rec, actor=COORD, now=h(40))
    with store.session() as s:
        assert s.execute(select(func.count()).select_from(SafetyLabResult)).scalar_one() == 0


# ---------------------------------------------------------------------------------------------------------------
# coded adverse events


def test_free_text_ae_term_is_refused_and_a_ctcae_term_is_coded_with_its_meddra_code(store: TrialStore,
                                                                                     tmp_path: Path) -> None:
    """``--term "foo bar"`` used to be stored; it is refused (IG-E113). 'thrombocytopenia' codes to Platelet count
    decreased (MedDRA 10035528) and keeps the verbatim term; a grade the term does not define is refused."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s, pytest.raises(UnknownTermError):
        _ae(s, "P1", "foo bar")
    with store.session() as s, pytest.raises(InputError, match="grade CTCAE v5.0 defines"):
        _ae(s, "P1", "Platelet count decreased", grade=5)
    with store.session() as s:
        ae = _ae(s, "P1", "thrombocytopenia")
        listed = adverse_events_view(s, "P1", actor=COORD, now=h(40))
    assert ae["term"] == "thrombocytopenia" and ae["ctcae_term"] == "Platelet count decreased"
    assert ae["meddra_code"] == "10035528" and listed[0]["coding"]["soc"] == "Investigations"


def test_term_without_confirmed_meddra_code_is_coded_and_flagged(store: TrialStore, tmp_path: Path) -> None:
    """A CTCAE term whose MedDRA code could not be confirmed is coded with an empty code and a flag, never a guess."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s:
        ae = _ae(s, "P1", "Gastric hemorrhage")
    assert ae["meddra_code"] is None and ae["coding"]["meddra_flag"]


# ---------------------------------------------------------------------------------------------------------------
# signals


def _downgrade(st: TrialStore, revision: str) -> None:
    from alembic import command

    with st.engine.begin() as conn:
        command.downgrade(st._alembic_config(conn), revision)


def _signal(res: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in res["signals"] if s["id"] == sid)


def test_bleeding_signal_honours_its_thrombocytopenia_condition(store: TrialStore, tmp_path: Path) -> None:
    """Before: a bleed without thrombocytopenia raised the IFN-γ signal with 0 patients 'with context'. Now such a
    patient has the event but is not counted; a platelet count of CTCAE grade >= 1 (a lab, not an AE) makes it count."""
    make_lists(store, tmp_path, strata=("immunoparalysis",))
    ifn = _randomise_into(store, "immunoparalysis", "sii_ifng", "S")
    with store.session() as s:
        _ae(s, ifn, "Upper gastrointestinal hemorrhage", serious=True)
        arm = next(a for a in _signal(safety_signals(s, actor=DSMB, now=h(40)), "bleeding_on_ifng")["arms"]
                   if a["arm"] == "sii_ifng")
    assert (arm["patients_with_event"], arm["patients_with_event_and_condition"], arm["counted"]) == (1, 0, 0)
    with store.session() as s:
        record_safety_labs(s, ifn, {"sample_time": h(28).isoformat(), "platelets": 60, "platelets_unit": "10^9/L"},
                           actor=COORD, now=h(41))
        sig = _signal(safety_signals(s, actor=DSMB, now=h(42)), "bleeding_on_ifng")
    arm = next(a for a in sig["arms"] if a["arm"] == "sii_ifng")
    assert arm["counted"] == 1
    assert arm["events"][0]["condition_evidence"][0]["kind"] == "safety_lab"


def test_signal_compares_the_drug_arm_with_its_placebo_under_the_dsmb_rule(store: TrialStore, tmp_path: Path) -> None:
    """Anemia on anakinra is compared with MALS placebo: counts per arm, Newcombe interval and the posterior
    probability; ``raised`` is the rule's verdict (not any positive difference), and the Bayesian rule can be chosen."""
    make_lists(store, tmp_path, strata=("MALS",))
    codes = [f"M{i}" for i in range(6)]
    for c in codes:
        randomised(store, c)
    arms = {c: _arm(store, c) for c in codes}
    drug = [c for c in codes if arms[c] == "mals_anakinra"]
    with store.session() as s:
        for c in drug:
            _ae(s, c, "Anemia")
        res = safety_signals(s, actor=DSMB, now=h(40))
        bayes = safety_signals(s, actor=DSMB, now=h(40), rule_method="bayes_beta_binomial")
    cmp = _signal(res, "anemia_on_anakinra")["comparisons"][0]
    n_drug, n_plac = len(drug), len(codes) - len(drug)
    expected = evaluate_signal_rule(SignalRule(), len(drug), n_drug, 0, n_plac)
    assert (cmp["drug_events"], cmp["drug_n"], cmp["placebo_events"], cmp["placebo_n"]) == (len(drug), n_drug, 0, n_plac)
    assert cmp["raised"] is expected.raised and cmp["ci_low"] == pytest.approx(expected.ci_low)
    bcmp = _signal(bayes, "anemia_on_anakinra")["comparisons"][0]
    assert bayes["rule"]["method"] == "bayes_beta_binomial" and bayes["rule"]["overridden"] is True
    assert bcmp["raised"] is (bcmp["posterior_prob_drug_higher"] > 0.9)
    assert "DSMB" in res["rule"]["set_by"] and res["rule"]["text"].startswith("raised when")


def test_anemia_signal_counts_a_grade_3_haemoglobin_without_an_ae(store: TrialStore, tmp_path: Path) -> None:
    """A haemoglobin of 7.5 g/dL (grade 3) on anakinra counts for the anemia signal even when no AE was filed."""
    make_lists(store, tmp_path, strata=("MALS",))
    ana = _randomise_into(store, "MALS", "mals_anakinra", "M")
    with store.session() as s:
        record_safety_labs(s, ana, {"sample_time": h(30).isoformat(), "hemoglobin": 7.5, "hemoglobin_unit": "g/dL"},
                           actor=COORD, now=h(31))
        arm = next(a for a in _signal(safety_signals(s, actor=DSMB, now=h(40)), "anemia_on_anakinra")["arms"]
                   if a["arm"] == "mals_anakinra")
    assert arm["counted"] == 1 and arm["events"][0]["evidence"][0]["kind"] == "safety_lab"


def test_signals_stay_dsmb_only(store: TrialStore, tmp_path: Path) -> None:
    """Signals carry arms: the statistician is refused."""
    with store.session() as s, pytest.raises(NotAuthorized):
        safety_signals(s, actor=STATISTICIAN, now=h(40))


# ---------------------------------------------------------------------------------------------------------------
# withdrawal and migration


def test_withdrawal_with_data_removal_removes_safety_labs_and_codings(store: TrialStore, tmp_path: Path) -> None:
    """Safety labs and AE codings are clinical data: removed with the patient's data; the audit trail verifies."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1")
    with store.session() as s:
        _ae(s, "P1", "Anemia")
        record_safety_labs(s, "P1", LABS_DAY3, actor=COORD, now=h(90))
        withdraw(s, "P1", "consent withdrawn", actor=COORD, now=h(91), remove_data=True)
    with store.session() as s:
        assert s.execute(select(func.count()).select_from(SafetyLabResult)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(AdverseEventCoding)).scalar_one() == 0
        assert verify_audit(s).ok


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The revision-0002 store written by the code before issues 14 and 15 (tests/golden/trial_store_0002.sql; its
    AE "Anemia" was entered as free text), on SQLite or copied into PostgreSQL."""
    from test_trial_integrity_migration import _copy, _sqlite_0002

    url = _sqlite_0002(tmp_path / "old.db")
    if request.param == "sqlite":
        return url
    pg = request.getfixturevalue("pg_blank_databases")()
    _copy(url, pg)
    return pg


def test_a_revision_0002_store_upgrades_keeping_its_data_and_legacy_aes_show_uncoded(old_store: str) -> None:
    """A store at revision 0002 (patients, follow-up, a free-text AE of the old code) upgrades to the head with
    `trial init` (0003 trial integrity, then 0004 safety): every row stays, the audit trail still verifies, the old
    AE is listed uncoded (and counted apart by the signals), and safety labs can be entered."""
    from datetime import UTC, datetime

    st = TrialStore(old_store)
    try:
        summary = st.initialise(simulation=True, now=datetime(2025, 3, 5, tzinfo=UTC))
        assert summary["schema_revision"] == HEAD_REVISION == "0004"
        at = datetime(2025, 3, 5, 12, tzinfo=UTC)
        with st.session() as s:
            assert verify_audit(s).ok
            aes = adverse_events_view(s, "P1", actor=COORD, now=at)
            assert [(a["term"], a["coding"]) for a in aes] == [("Anemia", None)]
            assert safety_signals(s, actor=DSMB, now=at)["uncoded_adverse_events"] == 1
            record_safety_labs(s, "P1", {"sample_time": datetime(2025, 3, 5, 6, tzinfo=UTC).isoformat(),
                                         "platelets": 60, "platelets_unit": "10^9/L"}, actor=COORD, now=at)
        with st.session() as s:
            assert verify_audit(s).ok
            assert [r["grade"] for r in safety_labs_view(s, "P1", actor=COORD)] == [2]
    finally:
        st.dispose()


def test_downgrade_from_the_safety_revision_removes_only_its_tables(tmp_path: Path) -> None:
    """Revision 0004 (safety) is self-contained: downgrading to 0003 (trial integrity) drops exactly its four
    tables."""
    from sqlalchemy import inspect

    st = TrialStore(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        st.upgrade()
        with st.engine.connect() as conn:
            head_tables = set(inspect(conn).get_table_names())
        _downgrade(st, "0003")
        assert st.schema_revision() == "0003"
        with st.engine.connect() as conn:
            old_tables = set(inspect(conn).get_table_names())
        assert head_tables - old_tables == {"safety_lab_results", "adverse_event_codings", "lab_orders", "store_clock"}
    finally:
        st.dispose()


def test_safety_lab_day_is_counted_from_randomisation(store: TrialStore, tmp_path: Path) -> None:
    """A draw 30 h after randomisation is study day 1."""
    make_lists(store, tmp_path, strata=("MALS",))
    randomised(store, "P1", at=9.0)
    with store.session() as s:
        out = record_safety_labs(s, "P1", {"sample_time": (h(9) + timedelta(hours=30)).isoformat(),
                                           "neutrophils": 0.8, "neutrophils_unit": "10^9/L"}, actor=COORD, now=h(50))
    assert out["results"][0]["study_day"] == 1 and out["results"][0]["grade"] == 3
