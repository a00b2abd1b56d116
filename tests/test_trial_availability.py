"""Randomisation never blocks (issue 14, findings 2 and 3): a client killed at any step of an allocation while other
allocations run leaves no gap and no false alarm — the next patient is always randomised, by the library and by the
command line, every check passes and the service starts; concurrent command-line randomisations on PostgreSQL are
never falsely refused. On SQLite and PostgreSQL (the ``pg`` cases run in CI, IMMUNOGUIDE_REQUIRE_PG=1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cli_concurrency import run_cli_burst
from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import trial_app
from immunoguide.service import ServiceSettings, create_app
from immunoguide.trial import TrialStore, randomize, verify_allocation_lists, verify_audit
from immunoguide.trial.models import AllocationSlot, EligibilityEvaluation, Patient
from trial_helpers import COORD, enrol, h, make_lists

TESTS = Path(__file__).resolve().parent

#: The steps of an allocation at which the client is killed (see :func:`immunoguide.trial.randomization.randomize`):
#: after locking the patient but before the list lock and slot; holding the list lock with the lowest free slot
#: chosen; after every row and audit entry is written and chained (chain head locked) but before the commit.
STEPS = ("before_slot", "holding_slot", "after_recording")

_VICTIM = r"""
import datetime, sys, time
sys.path[:0] = {paths!r}
from immunoguide.trial import Actor, TrialStore, audit, randomization

def pause(where):
    print("HOLDING", where, flush=True)
    time.sleep(120)

step = {step!r}
if step == "before_slot":
    orig_lock = randomization._lock_list
    def lock(session, site, stratum):
        pause("before the list lock")
        return orig_lock(session, site, stratum)
    randomization._lock_list = lock
elif step == "holding_slot":
    orig_take = randomization._take_slot
    def take(session, lst, key):
        slot = orig_take(session, lst, key)
        pause(f"slot {{slot.seq}} under the list lock")
        return slot
    randomization._take_slot = take
else:
    orig_chain = audit.chain_pending
    def chain(session):
        orig_chain(session)
        pause("everything written and chained, not committed")
    audit.chain_pending = chain
st = TrialStore({url!r})
with st.session() as s:
    randomization.randomize(s, "P1", actor=Actor("coord_ATH", "site_coordinator", "ATH"),
                            now=datetime.datetime.fromisoformat({now!r}))
print("COMMITTED", flush=True)
"""


@pytest.fixture
def store(store_url: str):
    st = TrialStore(store_url, pool_size=20)
    yield st
    st.dispose()


def _randomise(store: TrialStore, code: str) -> object:
    try:
        with store.session() as s:
            return randomize(s, code, actor=COORD, now=h(9))
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        return exc


def _taken(store: TrialStore) -> dict[str, int]:
    with store.session() as s:
        rows = s.execute(select(Patient.code, AllocationSlot.seq).join(AllocationSlot,
                                                                      AllocationSlot.patient_id == Patient.id)).all()
    return dict(rows)


@pytest.mark.parametrize("step", STEPS)
def test_a_client_killed_at_any_step_never_blocks_randomisation(store: TrialStore, tmp_path: Path, step: str) -> None:
    """The victim is SIGKILLed at ``step`` while three other allocations of the same list run: it stores nothing,
    the others complete, its patient and the next one are randomised (the library, then the command line), the
    slots taken are exactly 1..5, the lists and the audit trail verify, and the service starts without an error."""
    make_lists(store, tmp_path, strata=("MALS",), n=10)
    for code in ("P1", "P2", "P3", "P4", "P5"):
        enrol(store, code)
    with store.session() as s:
        p1_evals = len(s.execute(select(EligibilityEvaluation.id).join(Patient).where(Patient.code == "P1")).all())
    src = str(Path(__import__("immunoguide").__file__).resolve().parents[1])
    script = _VICTIM.format(paths=[src, str(TESTS)], url=store.url, now=h(9).isoformat(), step=step)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results: dict[str, object] = {}
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("HOLDING"), line + (proc.stderr.read() if proc.stderr else "")
        others = [threading.Thread(target=lambda c=c: results.__setitem__(c, _randomise(store, c)))
                  for c in ("P2", "P3", "P4")]
        for t in others:
            t.start()
        time.sleep(1.0)  # the other allocations run (or wait on the victim's locks) while it holds its step
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for t in others:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in others)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert all(isinstance(r, dict) for r in results.values()), results
    with store.session() as s:  # the killed client stored nothing
        p1 = s.execute(select(Patient).where(Patient.code == "P1")).scalar_one()
        assert p1.status != "randomised"
        assert s.execute(select(AllocationSlot).where(AllocationSlot.patient_id == p1.id)).first() is None
        assert len(s.execute(select(EligibilityEvaluation.id).where(EligibilityEvaluation.patient_id == p1.id)).all()) == p1_evals
    assert isinstance(_randomise(store, "P1"), dict)
    res = CliRunner().invoke(trial_app, ["--db", store.url, "--user", "rivera", "--role", "site_coordinator", "--site",
                                         "ATH", "--now", h(9.2).isoformat(), "randomize", "P5"])
    assert res.exit_code == 0, res.output
    assert sorted(_taken(store).values()) == [1, 2, 3, 4, 5]
    with store.session() as s:
        checks = verify_allocation_lists(s, list_dir=tmp_path)
        assert [c.id for c in checks if c.level == "error" or c.id == "IG-RAND-W005"] == []
        report = verify_audit(s)
        assert report.ok and report.keyed, report.issues[:3]
    app = create_app(store.url, settings=ServiceSettings(clock=lambda: h(10)))
    from fastapi.testclient import TestClient

    with TestClient(app):
        assert [c for c in app.state.service.allocation_checks if c["level"] == "error"] == []


def test_an_edited_list_is_reported_at_start_up_and_the_service_still_starts(store: TrialStore, tmp_path: Path) -> None:
    """A list that fails its checks is reported (log, allocation checks, the verify route), never a refusal to start:
    it refuses its own randomisations while the other lists and every other function go on."""
    from fastapi.testclient import TestClient

    make_lists(store, tmp_path, strata=("MALS", "immunoparalysis"), n=6)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE allocation_slots SET arm_mac = :m WHERE seq = 1 AND list_id = "
                          "(SELECT id FROM allocation_lists WHERE stratum = 'MALS')"), {"m": "0" * 64})
    app = create_app(store.url, settings=ServiceSettings(clock=lambda: h(10)))
    with TestClient(app):
        errors = [c for c in app.state.service.allocation_checks if c["level"] == "error"]
        assert [(c["id"], c["list"]) for c in errors] == [("IG-RAND-E001", "ATH-MALS")]


@pytest.mark.pg
def test_concurrent_command_line_randomisations_on_postgresql_are_never_falsely_refused(pg_server: str) -> None:
    """40 `immunoguide trial randomize` processes released together on a real PostgreSQL store (36 patients, 4 of
    them twice; each process authenticated with a coordinator's token): every patient randomised once, the 4 repeats
    refused as already randomised (IG-E401), no other refusal, no duplicate, no gap; lists and audit verify."""
    res = run_cli_burst(pg_server, 40, keep_db=True)
    url = res.pop("url")
    try:
        assert res["false_refusals"] == 0 and res["crash_tracebacks"] == [], res
        assert (res["duplicates"], res["gaps"], res["patients_without_randomisation"]) == (0, 0, 0), res
        assert res["true_refusals_IG_E401"] == res["repeat_attempts"] == 4, res
        st = TrialStore(url)
        try:
            with st.session() as s:
                assert [c.id for c in verify_allocation_lists(s) if c.level == "error"] == []
                report = verify_audit(s)
                assert report.ok and report.keyed, report.issues[:3]
        finally:
            st.dispose()
    finally:
        eng = create_engine(pg_server, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)"))
        eng.dispose()
    print("\n" + json.dumps(res))
