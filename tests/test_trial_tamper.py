"""Tamper evidence a database administrator cannot forge (issue 14, finding 5): a row edited and the chain re-hashed
passes an unkeyed check but not the keyed one; a store rolled back to an earlier copy is caught by a checkpoint kept
outside the database (`audit verify --checkpoint FILE`); account and role changes are audited, and an account
promoted in SQL is reported and cannot log in; the store's configuration cannot be switched to simulation."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._serve import users_app
from immunoguide.cli._trial import EXIT_INTEGRITY, audit_app, trial_app
from immunoguide.errors import AuditChainBroken, NotAuthenticated, NotAuthorized
from immunoguide.service.auth import UserStore
from immunoguide.trial import TrialStore, record_followup, verify_audit
from immunoguide.trial.audit import GENESIS_HASH, _header, canonical_json, checkpoint, entry_hash
from immunoguide.trial.models import AuditHead, AuditRecord
from trial_helpers import ADMIN, COORD, STATISTICIAN, h, make_lists, randomised

PASSWORD = "a-long-test-password"


@pytest.fixture
def store(store_url: str, tmp_path: Path):
    """Two randomised patients and a follow-up day."""
    st = TrialStore(store_url)
    make_lists(st, tmp_path, strata=("MALS",), n=10)
    randomised(st, "P1")
    randomised(st, "P2")
    with st.session() as s:
        record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=7)
    yield st
    st.dispose()


def _ids(st: TrialStore, **kw: Any) -> set[str]:
    with st.session() as s:
        return {i.id for i in verify_audit(s, **kw).issues}


def _forge(st: TrialStore) -> None:
    """What a database administrator can do without the key: edit the follow-up row and its audit image, then
    recompute every payload hash, entry hash and the head, as `audit verify` (unkeyed) expects them."""
    with st.engine.begin() as conn:
        conn.execute(text("UPDATE followups SET sofa_total = 2"))
        rows = conn.execute(text("SELECT seq, payload, table_name FROM audit_log ORDER BY seq")).mappings().all()
        for r in rows:
            if r["table_name"] == "followups" and r["payload"] is not None:
                payload = json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]
                payload["after"]["sofa_total"] = 2
                conn.execute(text("UPDATE audit_log SET payload = :p, payload_sha256 = :h WHERE seq = :s"),
                             {"p": json.dumps(payload), "h": hashlib.sha256(canonical_json(payload).encode()).hexdigest(),
                              "s": r["seq"]})
    with st.session() as s:  # re-hash the chain from the start (the formula is public)
        prev = GENESIS_HASH
        for rec in s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all():
            new = entry_hash(prev, {**_header(rec), "seq": rec.seq})
            s.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
                      {"p": prev, "h": new, "s": rec.seq})
            prev = new
        s.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})


def test_a_row_edited_and_the_chain_re_hashed_is_caught_only_by_the_keyed_verification(store: TrialStore) -> None:
    """The forger's chain passes every unkeyed check (the weakness the issue found) but every re-hashed entry's MAC
    is wrong (IG-AUD-E011) and the head's too (IG-AUD-E012); `audit verify` with the key exits 5."""
    _forge(store)
    other = TrialStore(store.url, key=None)
    other.key = None
    try:
        with other.session() as s:
            s.info.pop("immunoguide_trial_key", None)
            unkeyed = verify_audit(s)
        assert unkeyed.ok and not unkeyed.keyed
    finally:
        other.dispose()
    assert {"IG-AUD-E011", "IG-AUD-E012"} <= _ids(store)
    res = CliRunner().invoke(audit_app, ["verify", "--db", store.url])
    assert res.exit_code == EXIT_INTEGRITY and json.loads(res.stdout)["keyed"] is True


def test_a_store_rolled_back_to_an_earlier_copy_is_caught_by_a_checkpoint(tmp_path: Path, sqlite_template: Path) -> None:
    """A copy of the database taken earlier verifies on its own (every MAC is genuine); the checkpoint exported to
    a file after later writes shows the history no longer reaches it (IG-AUD-E018), and an edited checkpoint is
    refused (IG-AUD-E017)."""
    db = tmp_path / "trial.db"
    shutil.copyfile(sqlite_template, db)
    st = TrialStore(f"sqlite:///{db}")
    make_lists(st, tmp_path / "lists", strata=("MALS",))
    randomised(st, "P1")
    st.dispose()
    shutil.copyfile(db, tmp_path / "earlier.db")
    st = TrialStore(f"sqlite:///{db}")
    randomised(st, "P2")
    cp_file = tmp_path / "checkpoint.json"
    res = CliRunner().invoke(audit_app, ["checkpoint", "--db", st.url, "--out", str(cp_file), "--user", "admin",
                                         "--role", "administrator", "--now", h(12).isoformat()])
    assert res.exit_code == 0, res.output
    ok = CliRunner().invoke(audit_app, ["verify", "--db", st.url, "--checkpoint", str(cp_file)])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["checkpoints"][0]["held"] is True
    st.dispose()
    shutil.copyfile(tmp_path / "earlier.db", db)  # the rollback: P2's randomisation and the checkpoint vanish
    st = TrialStore(f"sqlite:///{db}")
    try:
        assert _ids(st) == set()  # on its own the earlier copy is a genuine, verifying store
        bad = CliRunner().invoke(audit_app, ["verify", "--db", st.url, "--checkpoint", str(cp_file)])
        assert bad.exit_code == EXIT_INTEGRITY
        assert json.loads(bad.stdout)["first_broken"]["id"] == "IG-AUD-E018"
        edited = json.loads(cp_file.read_text())
        edited["seq"] -= 1
        assert "IG-AUD-E017" in _ids(st, checkpoints=[edited])
    finally:
        st.dispose()


def test_a_checkpoint_needs_the_administrator_and_an_intact_chain(store: TrialStore) -> None:
    """Only the administrator exports checkpoints, and only of a chain that verifies."""
    with store.session() as s, pytest.raises(NotAuthorized):
        checkpoint(s, actor=STATISTICIAN, now=h(40))
    with store.session() as s:
        cp = checkpoint(s, actor=ADMIN, now=h(40))
    with store.session() as s:
        head = s.execute(select(AuditHead)).scalar_one()
    assert cp["seq"] == head.seq - 1  # the export itself is recorded after the checkpointed entry
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE followups SET sofa_total = 3"))
    with store.session() as s, pytest.raises(AuditChainBroken):
        checkpoint(s, actor=ADMIN, now=h(41))


def test_promoting_an_account_in_sql_is_reported_and_cannot_log_in(store: TrialStore) -> None:
    """`UPDATE service_users SET role = 'dsmb'` is reported by `audit verify` (IG-AUD-E008 on service_users) and the
    account can no longer log in or use the token it had."""
    users = UserStore(store)
    users.create_user("stat", PASSWORD, "statistician")
    token, _ = users.login("stat", PASSWORD, now=datetime.now(UTC))
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE service_users SET role = 'dsmb' WHERE username = 'stat'"))
    with store.session() as s:
        issues = verify_audit(s).issues
    assert any(i.id == "IG-AUD-E008" and i.table == "service_users" and i.row_id == "stat" for i in issues)
    fresh = UserStore(store)
    with pytest.raises(NotAuthenticated):
        fresh.login("stat", PASSWORD, now=datetime.now(UTC))
    with pytest.raises(NotAuthenticated):
        fresh.authenticate(token, now=datetime.now(UTC))


def test_account_and_role_changes_are_audited_with_who_and_why(store: TrialStore) -> None:
    """The first account is created by the operator (bootstrap); then creating, promoting and deactivating need an
    administrator's login, and each is an audit entry with the administrator, the reason and the before/after role;
    logins are recorded too; the deactivated account cannot log in."""
    runner = CliRunner()

    def users(*args: str, env: dict[str, str] | None = None, pw: str = PASSWORD) -> Any:
        return runner.invoke(users_app, [*args, "--db", store.url], input=pw + "\n", env=env or {})

    assert users("create-user", "admin", "--role", "administrator", "--password-stdin", "--as", "ops").exit_code == 0
    assert users("create-user", "kim", "--role", "statistician", "--password-stdin").exit_code == 1  # no login
    admin = {"IMMUNOGUIDE_USER": "admin", "IMMUNOGUIDE_PASSWORD": PASSWORD}
    assert users("create-user", "kim", "--role", "statistician", "--password-stdin", env=admin).exit_code == 0
    res = users("set-role", "kim", "--role", "dsmb", "--reason", "appointed to the DSMB", env=admin)
    assert res.exit_code == 0, res.output
    token = users("login", "kim", "--password-stdin").output.strip()
    assert users("deactivate", "kim", "--reason", "left the DSMB", env=admin).exit_code == 0
    with pytest.raises(NotAuthenticated):
        UserStore(store).login("kim", PASSWORD, now=datetime.now(UTC))
    with pytest.raises(NotAuthenticated):
        UserStore(store).authenticate(token, now=datetime.now(UTC))
    with store.session() as s:
        trail = [(r.action, r.actor, r.reason, r.payload) for r in s.execute(
            select(AuditRecord).where(AuditRecord.table_name == "service_users").order_by(AuditRecord.seq)).scalars()]
        assert verify_audit(s).ok
    assert trail[0][:2] == ("insert", "ops")  # the bootstrap operator
    promote = next(t for t in trail if t[0] == "update" and t[3]["after"]["role"] == "dsmb")
    assert promote[1:3] == ("admin", "appointed to the DSMB") and promote[3]["before"]["role"] == "statistician"
    assert ("login", "kim") in {(t[0], t[1]) for t in trail}
    assert any(t[0] == "update" and t[3]["after"]["active"] is False and t[2] == "left the DSMB" for t in trail)
    assert all("password_hash" not in json.dumps(t[3]) for t in trail)


def test_switching_a_real_store_to_simulation_in_sql_is_refused(tmp_path: Path) -> None:
    """The configuration row is MAC'd: a real store set to 'simulation' in SQL (to allow --now) stops every command
    of a process holding the key (exit 5) and `audit verify` reports IG-AUD-E013."""
    st = TrialStore(f"sqlite:///{tmp_path / 'real.db'}")
    st.initialise()
    with st.engine.begin() as conn:
        conn.execute(text("UPDATE store_config SET mode = 'simulation'"))
    res = CliRunner().invoke(trial_app, ["--db", st.url, "--user", "x", "--role", "administrator", "--now",
                                         "2020-01-01T00:00:00+00:00", "consort"])
    assert res.exit_code == EXIT_INTEGRITY, res.output
    assert json.loads(res.stderr.strip().splitlines()[-1])["error"]["code"] == "IG-E409"
    assert "IG-AUD-E013" in _ids(st)
    st.dispose()
