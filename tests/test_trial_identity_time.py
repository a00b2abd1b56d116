"""Who and when, truthfully (issue 14, finding 4): on a real store the command line acts as an authenticated account
whose role is the account's, ``--now`` is refused, every audit entry records the system time (the database
server's clock on PostgreSQL) beside the event time, the 72 h window is judged on a time the system vouches for,
and dates are checked for plausibility (consent not before the trial nor in the future, visits inside their study
day, late entries with a reason)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import trial_app
from immunoguide.errors import ImplausibleTime, InputError, RandomizationWindowMissed
from immunoguide.service.auth import UserStore
from immunoguide.trial import (
    Actor,
    TrialStore,
    enter_labs,
    generate_allocation_list,
    import_allocation_list,
    randomize,
    record_consent,
    record_dose,
    record_followup,
    screen,
    verify_audit,
)
from immunoguide.trial.models import AuditRecord
from service_support import lab_record
from service_support import screening_record as svc_record
from trial_helpers import COORD, enrol, h, make_lists, randomised

PASSWORD = "a-long-test-password"
ACCOUNTS = {"admin": ("administrator", None), "rivera": ("site_coordinator", "ATH"),
            "pharm": ("unblinded_pharmacist", "ATH"), "stat": ("statistician", None), "chair": ("dsmb", None)}


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def real(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A real store (system clock): a MALS list, accounts with tokens, P1 ready to randomise (Sepsis-3 10 h ago)
    and PLATE whose 72 h window closed 8 h ago."""
    url = f"sqlite:///{tmp_path / 'real.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_blank_databases")()
    st = TrialStore(url)
    assert st.initialise()["mode"] == "real"
    f = generate_allocation_list("ATH", "MALS", 8, out_dir=tmp_path / "lists")
    admin = Actor("admin", "administrator")
    with st.session() as s:
        import_allocation_list(s, f.csv, actor=admin, now=_now())
    users = UserStore(st)
    tokens = {}
    for name, (role, site) in ACCOUNTS.items():
        users.create_user(name, PASSWORD, role, site)
        tokens[name], _ = users.login(name, PASSWORD, now=_now())
    co = Actor("rivera", "site_coordinator", "ATH")
    for code, hours in (("P1", 10), ("P2", 11), ("PLATE", 80)):
        onset = _now() - timedelta(hours=hours)
        with st.session() as s:
            screen(s, code, "ATH", svc_record(onset), actor=co, now=_now())
            record_consent(s, code, "patient", _now() - timedelta(minutes=5), actor=co, now=_now())
            enter_labs(s, code, lab_record(6200, 9000, onset + timedelta(hours=1)), actor=co, now=_now())
    yield {"store": st, "url": url, "tokens": tokens}
    st.dispose()


def _cli(world: dict[str, Any], *args: str, token: str | None = None, env: dict[str, str] | None = None,
         code: int = 0) -> Any:
    full_env = {"IMMUNOGUIDE_TOKEN": world["tokens"][token]} if token else {}
    full_env.update(env or {})
    res = CliRunner().invoke(trial_app, ["--db", world["url"], *args], env=full_env)
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if code == 0 else json.loads(res.stderr.strip().splitlines()[-1])["error"]


def test_a_role_given_by_flag_is_refused_on_a_real_store(real: dict[str, Any]) -> None:
    """`--role dsmb` shows nothing without an account: refused as a flag (IG-E408), and without credentials the
    command is not authenticated (IG-E418)."""
    assert _cli(real, "--user", "mallory", "--role", "dsmb", "show", "P1", code=4)["code"] == "IG-E408"
    assert _cli(real, "--user", "mallory", "show", "P1", code=4)["code"] == "IG-E418"
    assert _cli(real, "show", "P1", token="rivera", env={"IMMUNOGUIDE_ROLE": "dsmb"}, code=4)["code"] == "IG-E408"
    wrong = _cli(real, "--user", "chair", "show", "P1", env={"IMMUNOGUIDE_PASSWORD": "not-the-password"}, code=4)
    assert wrong["code"] == "IG-E418"


def test_the_role_and_site_come_from_the_account(real: dict[str, Any]) -> None:
    """The coordinator's token randomises and sees kit numbers only; the pharmacist's sees contents; the DSMB's
    sees the arm; the statistician is refused the safety signals — whatever the user would claim."""
    r = _cli(real, "randomize", "P1", token="rivera")
    assert r["randomised_by"] == "rivera" and "arm" not in r
    assert all("regimen" not in k for k in _cli(real, "kits", "P1", token="rivera")["kits"])
    assert {k["regimen"] for k in _cli(real, "kits", "P1", token="pharm")["kits"]} <= {
        "anakinra_iv", "placebo_iv", "ifng_sc", "placebo_sc"}
    assert _cli(real, "show", "P1", token="chair")["randomisation"]["arm"] in ("mals_anakinra", "mals_placebo")
    assert _cli(real, "ae", "signals", token="stat", code=4)["code"] == "IG-E408"
    pw = _cli(real, "--user", "chair", "show", "P1", env={"IMMUNOGUIDE_PASSWORD": PASSWORD})
    assert pw["randomisation"]["arm"] in ("mals_anakinra", "mals_placebo")


def test_now_is_refused_on_a_real_store_and_a_closed_window_stays_closed(real: dict[str, Any]) -> None:
    """Back-dating with --now is refused (IG-E419) — by the command line and by the library — so PLATE, whose 72 h
    window closed, is refused (IG-E403); nothing is stored and the audit trail verifies."""
    st: TrialStore = real["store"]
    earlier = (_now() - timedelta(hours=20)).isoformat()
    assert _cli(real, "--now", earlier, "randomize", "PLATE", token="rivera", code=4)["code"] == "IG-E419"
    assert _cli(real, "randomize", "PLATE", token="rivera", code=4)["code"] == "IG-E403"
    with st.session() as s, pytest.raises(ImplausibleTime):
        randomize(s, "PLATE", actor=Actor("rivera", "site_coordinator", "ATH"), now=_now() - timedelta(hours=20))
    with st.session() as s, pytest.raises(ImplausibleTime):  # the year 3000 too
        randomize(s, "P1", actor=Actor("rivera", "site_coordinator", "ATH"), now=datetime(3000, 1, 1, tzinfo=UTC))
    with st.session() as s, pytest.raises(RandomizationWindowMissed):
        randomize(s, "PLATE", actor=Actor("rivera", "site_coordinator", "ATH"), now=_now())
    with st.session() as s:
        assert verify_audit(s).ok


def test_every_entry_records_the_system_time_beside_the_event_time(real: dict[str, Any]) -> None:
    """After a randomisation every new audit entry has its system time (within seconds of the wall clock, never
    decreasing along the chain) and, on a real store, an event time within the tolerance of it."""
    before = _now()
    _cli(real, "randomize", "P1", token="rivera")
    after = _now()
    with real["store"].session() as s:
        rows = s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all()
    new = [r for r in rows if r.actor == "rivera" and r.action in ("insert", "update")]
    assert new and all(before - timedelta(seconds=5) <= r.system_at <= after + timedelta(seconds=5) for r in new)
    assert all(abs((r.at - r.system_at).total_seconds()) < 300 for r in new)
    times = [r.system_at for r in rows]
    assert times == sorted(times)


@pytest.mark.pg
def test_on_postgresql_the_system_time_is_the_database_servers_clock(pg_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """With the application's clock set to the year 2000, the entries still carry the server's time."""
    import immunoguide.trial.clock as clock

    class Y2K(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime(2000, 1, 1, tzinfo=UTC)

    st = TrialStore(pg_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        monkeypatch.setattr(clock, "datetime", Y2K)
        randomised(st, "P1")
        with st.session() as s:
            last = s.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).scalar_one()
        assert abs((last.system_at - _now()).total_seconds()) < 60
    finally:
        st.dispose()


def test_a_simulation_store_accepts_its_clock_and_records_the_system_time_beside_it(store_url: str,
                                                                                   tmp_path: Path) -> None:
    """The demo's kind of store takes `now` from the caller (here 2025) and still records when it really happened."""
    st = TrialStore(store_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        randomised(st, "P1")
        with st.session() as s:
            last = s.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).scalar_one()
        assert last.at == h(9) and abs((last.system_at - _now()).total_seconds()) < 60
    finally:
        st.dispose()


@pytest.mark.parametrize(("signed", "error"), [(datetime(1990, 3, 1, tzinfo=UTC), ImplausibleTime),
                                               (h(5), InputError)])
def test_consent_dated_before_the_trial_or_in_the_future_is_refused(store_url: str, tmp_path: Path,
                                                                   signed: datetime, error: type) -> None:
    """Consent signed in 1990 (before the trial's first list) or after `now` is refused; 2 h before is kept."""
    st = TrialStore(store_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        with st.session() as s:
            screen(s, "P1", "ATH", _screening(), actor=COORD, now=h(1))
        with st.session() as s, pytest.raises(error):
            record_consent(s, "P1", "patient", signed, actor=COORD, now=h(2))
        with st.session() as s:
            record_consent(s, "P1", "patient", h(0), actor=COORD, now=h(2))
    finally:
        st.dispose()


def _screening() -> dict[str, Any]:
    from trial_helpers import screening_record

    return screening_record()


def test_visits_must_lie_in_their_study_day(store_url: str, tmp_path: Path) -> None:
    """A day-1 follow-up one hour after randomisation is refused (it is day 0); inside day 1 it is kept; a day-28
    vital status may be assessed later, not earlier."""
    st = TrialStore(store_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        randomised(st, "P1")  # at h(9): day 1 = [h(33), h(57))
        with st.session() as s, pytest.raises(ImplausibleTime, match="study day 1"):
            record_followup(s, "P1", 1, actor=COORD, now=h(10), sofa_total=8)
        with st.session() as s, pytest.raises(ImplausibleTime, match="study day 1"):
            record_followup(s, "P1", 1, actor=COORD, now=h(60), assessed_at=h(58), sofa_total=8)
        with st.session() as s:
            record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=8)
        with st.session() as s, pytest.raises(ImplausibleTime, match="study day 28"):
            record_followup(s, "P1", 28, actor=COORD, now=h(9 + 24 * 27), vital_status="alive")
        with st.session() as s:
            record_followup(s, "P1", 28, actor=COORD, now=h(9 + 24 * 29), vital_status="alive")
    finally:
        st.dispose()


def test_a_late_entry_needs_a_reason_which_the_audit_trail_keeps(store_url: str, tmp_path: Path) -> None:
    """A day-1 SOFA entered 3 days after it was assessed, or a dose 2 days after it was given, is refused without a
    reason; with one, the reason is on the entries the command wrote (and only on them)."""
    st = TrialStore(store_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        randomised(st, "P1")
        with st.session() as s, pytest.raises(ImplausibleTime, match="late entry"):
            record_followup(s, "P1", 1, actor=COORD, now=h(34 + 72), assessed_at=h(34), sofa_total=8)
        with st.session() as s, pytest.raises(ImplausibleTime, match="late entry"):
            record_dose(s, "P1", "IV", h(10), actor=COORD, now=h(10 + 48))
        with st.session() as s:
            record_dose(s, "P1", "IV", h(10), actor=COORD, now=h(10.5))
            record_followup(s, "P1", 1, actor=COORD, now=h(34 + 72), assessed_at=h(34), sofa_total=8,
                            late_entry_reason="paper CRF transcribed after the weekend")
        with st.session() as s:
            rows = s.execute(select(AuditRecord).where(AuditRecord.table_name.in_(("followups", "dose_administrations")))
                             ).scalars().all()
        reasons = {r.table_name: r.reason for r in rows}
        assert reasons["followups"].endswith("paper CRF transcribed after the weekend")
        assert reasons["dose_administrations"] is None
        with st.session() as s:
            assert verify_audit(s).ok
    finally:
        st.dispose()


def test_on_a_simulation_store_flags_still_work_for_the_demo(store_url: str, tmp_path: Path) -> None:
    """The demo's kind of store keeps `--user/--role/--now` (training, replays) — and says so nowhere else."""
    make_lists(TrialStore(store_url), tmp_path, strata=("MALS",))
    enrol(TrialStore(store_url), "P1")
    res = CliRunner().invoke(trial_app, ["--db", store_url, "--user", "rivera", "--role", "site_coordinator", "--site",
                                         "ATH", "--now", h(9).isoformat(), "randomize", "P1"])
    assert res.exit_code == 0, res.output


# -- the store clock (issue 15) under the integrity rules (issue 14) -------------------------------------------------


def _safety(url: str, *args: str, token: str | None = None, env: dict[str, str] | None = None, code: int = 0) -> Any:
    import typer

    from immunoguide.cli._safety import safety_app

    root = typer.Typer()
    root.add_typer(safety_app, name="safety")
    full_env = {"IMMUNOGUIDE_TOKEN": token} if token else {}
    full_env.update(env or {})
    res = CliRunner().invoke(root, ["safety", "--db", url, *args], env=full_env)
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if code == 0 else json.loads(res.stderr.strip().splitlines()[-1])["error"]


def test_a_real_stores_clock_is_the_system_clock_and_cannot_be_moved(real: dict[str, Any]) -> None:
    """On a real store `safety clock` shows the system clock; the administrator may not set a simulated time
    (IG-E419), nor can anyone act under a flag role there (IG-E408); a store_clock row written in SQL (a database
    administrator) changes nothing: the safety commands, the report clock and the service still run on the system
    clock."""
    from sqlalchemy import text

    from immunoguide.trial.clock import read_store_clock
    from immunoguide.trial.store import store_now

    url, tokens = real["url"], real["tokens"]
    shown = _safety(url, "clock")
    assert shown["mode"] == "wall" and "real store" in shown["note"]
    assert abs((datetime.fromisoformat(shown["store_now"]) - _now()).total_seconds()) < 60
    err = _safety(url, "clock", "--simulated-now", "2150-01-01T00:00:00+00:00", token=tokens["admin"], code=4)
    assert err["code"] == "IG-E419"
    assert _safety(url, "--user", "x", "--role", "administrator", "clock", "--simulated-now",
                   "2150-01-01T00:00:00+00:00", code=4)["code"] == "IG-E408"
    assert _safety(url, "--now", "2150-01-01T00:00:00+00:00", "alerts", token=tokens["rivera"], code=4)["code"] == "IG-E419"
    st: TrialStore = real["store"]
    with st.engine.begin() as conn:  # behind the software's back
        conn.execute(text("INSERT INTO store_clock (id, mode, simulated_epoch, wall_epoch, frozen, note, set_at, set_by) "
                          "VALUES (1, 'simulated', :t, :t, :f, 'forged', :t, 'dba')"),
                     {"t": datetime(2150, 1, 1, tzinfo=UTC), "f": True})
    with st.session() as s:
        assert read_store_clock(s).mode == "wall"
    assert abs((store_now(url, _now()) - _now()).total_seconds()) < 60
    alerts = _safety(url, "alerts", token=tokens["rivera"])
    assert abs((datetime.fromisoformat(alerts["at"]) - _now()).total_seconds()) < 60


def test_a_simulation_store_acts_at_its_simulated_clock_and_setting_it_is_audited(store_url: str,
                                                                                 tmp_path: Path) -> None:
    """On a simulation store the administrator sets the simulated clock (an audit entry with the clock before and
    after); then every command without --now — trial and safety alike — acts at the simulated time."""
    st = TrialStore(store_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        randomised(st, "P1")
        sim = ["--user", "admin", "--role", "administrator", "--now", h(40).isoformat()]
        out = _safety(store_url, *sim, "clock", "--simulated-now", h(50).isoformat(), "--note", "replay")
        assert out["mode"] == "simulated" and out["simulated_epoch"] == h(50).isoformat()
        labs = json.dumps({"sample_time": h(49).isoformat(), "platelets": 60, "platelets_unit": "10^9/L"})
        coord = ["--user", "rivera", "--role", "site_coordinator", "--site", "ATH"]
        assert _safety(store_url, *coord, "labs", "P1", "--labs", labs)["recorded"]["results"][0]["grade"] == 2
        res = CliRunner().invoke(trial_app, ["--db", store_url, *coord, "show", "P1"])
        assert res.exit_code == 0, res.output
        with st.session() as s:
            rows = s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all()
            assert verify_audit(s).ok
        clock_entry = next(r for r in rows if r.action == "set_clock")
        assert clock_entry.payload["before"]["mode"] == "wall" and clock_entry.payload["after"]["note"] == "replay"
        lab_entries = [r for r in rows if r.table_name == "safety_lab_results"]
        assert lab_entries and all(r.at == h(50) for r in lab_entries)
    finally:
        st.dispose()


def test_adverse_events_and_safety_labs_follow_the_trials_time_rules(store_url: str, tmp_path: Path) -> None:
    """AE onset before the trial is refused; an AE recorded 3 days after the site knew, an SAE report entered 3 days
    after it was sent and a safety lab entered 3 days after its result all need a reason (kept in the audit trail);
    a safety-lab sample before the trial is refused."""
    from immunoguide.trial import record_adverse_event, record_safety_labs, report_sae

    st = TrialStore(store_url)
    try:
        make_lists(st, tmp_path, strata=("MALS",))
        randomised(st, "P1")
        ae = {"term": "Anemia", "grade": 3, "serious": True, "relatedness": "possible", "outcome": "recovering"}
        with st.session() as s, pytest.raises(ImplausibleTime, match="before the trial"):
            record_adverse_event(s, "P1", onset_at=datetime(1990, 1, 1, tzinfo=UTC), actor=COORD, now=h(40), **ae)
        with st.session() as s, pytest.raises(ImplausibleTime, match="late entry"):
            record_adverse_event(s, "P1", onset_at=h(20), aware_at=h(21), actor=COORD, now=h(21 + 72), **ae)
        with st.session() as s:
            rec = record_adverse_event(s, "P1", onset_at=h(20), aware_at=h(21), actor=COORD, now=h(21 + 72),
                                       late_entry_reason="reported by the ward after the weekend", **ae)
        with st.session() as s, pytest.raises(ImplausibleTime, match="late entry"):
            report_sae(s, "P1", rec["id"], "initial", h(22), actor=COORD, now=h(22 + 72))
        with st.session() as s:
            report_sae(s, "P1", rec["id"], "initial", h(22), actor=COORD, now=h(22 + 72),
                       late_entry_reason="fax confirmation found later")
        labs = {"sample_time": h(30).isoformat(), "result_time": h(31).isoformat(), "platelets": 60,
                "platelets_unit": "10^9/L"}
        with st.session() as s, pytest.raises(ImplausibleTime, match="late entry"):
            record_safety_labs(s, "P1", labs, actor=COORD, now=h(31 + 72))
        with st.session() as s, pytest.raises(ImplausibleTime, match="before the trial"):
            record_safety_labs(s, "P1", {**labs, "sample_time": "1990-01-01T00:00:00+00:00",
                                         "result_time": "1990-01-01T02:00:00+00:00"}, actor=COORD, now=h(32))
        with st.session() as s:
            record_safety_labs(s, "P1", labs, actor=COORD, now=h(31 + 72), late_entry_reason="lab interface down")
        with st.session() as s:
            rows = s.execute(select(AuditRecord).where(AuditRecord.table_name.in_(
                ("adverse_events", "adverse_event_codings", "safety_lab_results")))).scalars().all()
            assert verify_audit(s).ok
        reasons = {(r.table_name, r.action): r.reason for r in rows}
        assert reasons[("adverse_event_codings", "insert")].endswith("after the weekend")
        assert reasons[("adverse_events", "update")].endswith("fax confirmation found later")
        assert reasons[("safety_lab_results", "insert")].endswith("lab interface down")
    finally:
        st.dispose()
