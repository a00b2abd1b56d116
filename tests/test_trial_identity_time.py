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
