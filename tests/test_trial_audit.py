"""The audit trail: every write recorded with who/when/before/after in a hash chain; `audit verify` detects any
edit, insertion or deletion behind its back — in the trail or in a data table (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import EXIT_INTEGRITY, audit_app
from immunoguide.errors import AuditChainBroken
from immunoguide.trial import TrialStore, record_followup, require_intact, verify_audit, withdraw
from immunoguide.trial.audit import GENESIS_HASH, canonical_json, row_image
from immunoguide.trial.models import AUDITED_TABLES, AuditRecord, Patient
from trial_helpers import COORD, INVESTIGATOR, h, make_lists, randomised, row_counts


@pytest.fixture
def store(store_url: str, tmp_path: Path):
    """A store with two randomised patients, a follow-up day and a withdrawal (every kind of write)."""
    st = TrialStore(store_url)
    make_lists(st, tmp_path, strata=("MALS",), n=10)
    randomised(st, "P1")
    randomised(st, "P2")
    with st.session() as s:
        record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=7)
        withdraw(s, "P2", "consent withdrawn", actor=INVESTIGATOR, now=h(40))
    yield st
    st.dispose()


def _issues(store: TrialStore) -> set[str]:
    with store.session() as s:
        return {i.id for i in verify_audit(s).issues}


def _sql(store: TrialStore, sql: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_every_row_has_an_audit_entry_matching_it(store: TrialStore) -> None:
    """Each row of every audited table was written through the trail: its last entry's 'after' equals the row."""
    with store.session() as s:
        entries = s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all()
        last = {(e.table_name, e.row_id): e for e in entries}
        n = 0
        for model in AUDITED_TABLES:
            for obj in s.execute(select(model)).scalars():
                n += 1
                e = last[(model.__tablename__, str(obj.id))]
                assert e.payload["after"] == row_image(obj)
                assert e.actor and e.role and e.at is not None
    assert n > 25 and len(entries) >= n


def test_updates_record_the_row_before_and_after(store: TrialStore) -> None:
    """Withdrawing P2 is an update of its patient row with status randomised → withdrawn, by the investigator."""
    with store.session() as s:
        pid = s.execute(select(Patient.id).where(Patient.code == "P2")).scalar_one()
        e = s.execute(select(AuditRecord).where(AuditRecord.table_name == "patients", AuditRecord.row_id == str(pid),
                                                AuditRecord.action == "update").order_by(AuditRecord.seq.desc())
                      .limit(1)).scalar_one()
    assert (e.payload["before"]["status"], e.payload["after"]["status"]) == ("randomised", "withdrawn")
    assert (e.actor, e.role, e.at) == ("dr_kotsaki", "investigator", h(40))


def test_chain_hashes_and_macs_follow_the_documented_formula(store: TrialStore) -> None:
    """hash_1 = sha256(64 zeros + canonical JSON of the header, with the system time and the reason), and
    mac_1 = HMAC-SHA-256 under the audit sub-key of the trial key, recomputed independently of the code."""
    import hmac

    with store.session() as s:
        e = s.execute(select(AuditRecord).where(AuditRecord.seq == 1)).scalar_one()
    assert (e.action, e.table_name, e.reason) == ("configure", "store_config", "trial init")
    header = {"seq": 1, "at": e.at.isoformat(), "actor": e.actor, "role": e.role, "action": e.action,
              "table": e.table_name, "row_id": e.row_id, "patient_id": e.patient_id,
              "payload_sha256": hashlib.sha256(canonical_json(e.payload).encode()).hexdigest(),
              "system_at": e.system_at.isoformat(), "reason": e.reason}
    text_ = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert e.prev_hash == GENESIS_HASH
    assert e.hash == hashlib.sha256((GENESIS_HASH + text_).encode()).hexdigest()
    secret = bytes.fromhex(os.environ["IMMUNOGUIDE_TRIAL_KEY"])
    sub = hmac.new(secret, b"immunoguide/audit", hashlib.sha256).digest()
    body = json.dumps(["entry", e.hash], sort_keys=True, separators=(",", ":")).encode()
    assert e.mac == hmac.new(sub, body, hashlib.sha256).hexdigest()


def test_an_intact_store_verifies(store: TrialStore) -> None:
    """No issue on a store written only through the workflow (including a withdrawal)."""
    assert _issues(store) == set()


def test_writes_that_bypass_the_audit_are_refused_by_the_session(store: TrialStore) -> None:
    """Changing a row through the ORM without the audit functions fails at flush and stores nothing."""
    before = row_counts(store)
    with pytest.raises(RuntimeError, match="unaudited write"):
        with store.session() as s:
            p = s.execute(select(Patient).where(Patient.code == "P1")).scalar_one()
            p.status = "withdrawn"
    assert row_counts(store) == before and _issues(store) == set()


TAMPERING = [
    ("edit a payload in the trail", "UPDATE audit_log SET payload = :p WHERE seq = 3", {"p": '{"before": null, "after": {}}'},
     {"IG-AUD-E003"}),
    ("edit who made an entry", "UPDATE audit_log SET actor = 'mallory' WHERE seq = 5", {}, {"IG-AUD-E002"}),
    ("delete an entry in the middle", "DELETE FROM audit_log WHERE seq = 7", {}, {"IG-AUD-E004", "IG-AUD-E001"}),
    ("delete the last entries and rewind the head",
     "DELETE FROM audit_log WHERE seq > (SELECT MAX(seq) - 2 FROM audit_log)", {}, {"IG-AUD-E005"}),
    ("remove a payload without a redaction", "UPDATE audit_log SET payload = NULL WHERE seq = 4", {}, {"IG-AUD-E006"}),
    ("edit a data row", "UPDATE followups SET sofa_total = 2", {}, {"IG-AUD-E008"}),
    ("edit a randomised arm", "UPDATE allocation_slots SET allocated_by = 'mallory' WHERE seq = 1", {},
     {"IG-AUD-E008"}),
    ("delete a data row", "DELETE FROM followups", {}, {"IG-AUD-E009"}),
    ("insert a data row", "INSERT INTO unblindings (patient_id, reason, unblinded_at, unblinded_by, role) "
     "SELECT id, 'x', screened_at, 'mallory', 'investigator' FROM patients WHERE code = 'P1'", {}, {"IG-AUD-E007"}),
]


@pytest.mark.parametrize(("what", "sql", "params", "expected"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_behind_the_audits_back_is_detected(store: TrialStore, what: str, sql: str, params: dict,
                                                      expected: set[str]) -> None:
    """Each kind of edit or deletion made directly in the database is reported with its stable issue id."""
    _sql(store, sql, **params)
    found = _issues(store)
    assert expected <= found, (what, found)
    with store.session() as s, pytest.raises(AuditChainBroken):
        require_intact(verify_audit(s))


def test_the_first_broken_link_is_reported(store: TrialStore) -> None:
    """With two edited entries the report names the earlier one first."""
    _sql(store, "UPDATE audit_log SET actor = 'mallory' WHERE seq IN (9, 4)")
    with store.session() as s:
        report = verify_audit(s)
    assert report.first_broken is not None and report.first_broken.seq == 4


def test_audit_verify_command_exits_nonzero_after_tampering(store: TrialStore) -> None:
    """`immunoguide audit verify` exits 0 on an intact store and 5 once a row was edited behind its back."""
    runner = CliRunner()
    ok = runner.invoke(audit_app, ["verify", "--db", store.url])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    _sql(store, "UPDATE followups SET sofa_total = 2")
    bad = runner.invoke(audit_app, ["verify", "--db", store.url])
    assert bad.exit_code == EXIT_INTEGRITY
    assert json.loads(bad.stdout)["first_broken"]["id"] == "IG-AUD-E008"


@pytest.mark.parametrize("early_chain", [False, True])
def test_a_rolled_back_savepoint_takes_its_audit_entries_with_it(store_url: str, early_chain: bool) -> None:
    """audit.savepoint (the REDCap import's per-record and per-row savepoints): the entries of a block that raised
    are dropped with its data — also when the block chained them early (head_seq) — while the entries queued before
    and after it are committed; the trail verifies. A bare begin_nested, rolled back and then committed, leaves the
    undone write's entry in the trail (the positive control: the verifier reports it)."""
    from immunoguide.trial import audit, screen
    from trial_helpers import screening_record

    st = TrialStore(store_url)
    try:
        with st.session() as s:
            screen(s, "S1", "ATH", screening_record(), actor=COORD, now=h(1))
            with pytest.raises(RuntimeError), audit.savepoint(s):
                screen(s, "S2", "ATH", screening_record(), actor=COORD, now=h(1))
                if early_chain:
                    audit.head_seq(s)
                raise RuntimeError("refused")
            screen(s, "S3", "ATH", screening_record(), actor=COORD, now=h(1))
        with st.session() as s:
            assert set(s.execute(select(Patient.code)).scalars()) == {"S1", "S3"}
            assert {e.row_id for e in s.execute(select(AuditRecord).where(AuditRecord.table_name == "patients"))
                    .scalars()} == {str(i) for i in s.execute(select(Patient.id)).scalars()}
            assert verify_audit(s).ok
        with st.session() as s:
            with pytest.raises(RuntimeError), s.begin_nested():
                screen(s, "S4", "ATH", screening_record(), actor=COORD, now=h(1))
                raise RuntimeError("refused")
        assert _issues(st)
    finally:
        st.dispose()
