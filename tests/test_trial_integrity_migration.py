"""Upgrading a revision-0002 store (tests/golden/trial_store_0002.sql, written by the code before issue 14) to the head
(0003 trial integrity, then 0004 safety):
every row is kept, `trial init` seals its plaintext lists with the trial key (arms kept, plaintext and its audit
payloads gone), adopts its accounts into the audit trail, and the store verifies and goes on randomising — on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, insert, text

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.service.auth import UserStore
from immunoguide.trial import TrialStore, patient_view, verify_allocation_lists, verify_audit
from immunoguide.trial.store import HEAD_REVISION
from trial_helpers import DSMB, randomised

GOLDEN = Path(__file__).resolve().parent / "golden" / "trial_store_0002.sql"
TABLES_0002 = ("patients", "eligibility_evaluations", "consents", "lab_results", "classifications", "allocation_lists",
               "allocation_slots", "kits", "dose_administrations", "followups", "adverse_events", "unblindings",
               "withdrawals", "audit_log", "service_users")
ARM_CODES = ("mals_anakinra", "mals_placebo", "sii_ifng", "sii_placebo", "anakinra_iv", "placebo_iv", "ifng_sc",
             "placebo_sc")


def _sqlite_0002(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.executescript(GOLDEN.read_text())
    conn.close()
    return f"sqlite:///{path}"


def _copy(src_url: str, dst_url: str) -> None:
    """Copy every row of the 0002 store into a PostgreSQL database migrated to 0002 (as a restore would)."""
    dst = TrialStore(dst_url)
    dst.upgrade("0002")
    dst.dispose()
    src_engine, dst_engine = create_engine(src_url), create_engine(dst_url)
    meta = MetaData()
    meta.reflect(src_engine)
    dst_meta = MetaData()
    dst_meta.reflect(dst_engine)
    with src_engine.connect() as s, dst_engine.begin() as d:
        d.execute(text("SET TIME ZONE 'UTC'"))
        d.execute(text("DELETE FROM audit_head"))
        for t in meta.sorted_tables:
            if t.name == "alembic_version":
                continue
            rows = [dict(r) for r in s.execute(t.select()).mappings()]
            if rows:
                d.execute(insert(dst_meta.tables[t.name]), rows)
            if "id" in t.c:
                d.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                               f"COALESCE((SELECT MAX(id) FROM {t.name}), 0) + 1, false)"))
    src_engine.dispose()
    dst_engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = _sqlite_0002(tmp_path / "old.db")
    if request.param == "sqlite":
        return url
    pg = request.getfixturevalue("pg_blank_databases")()
    _copy(url, pg)
    return pg


def _counts(url: str) -> dict[str, int]:
    eng = create_engine(url)
    with eng.connect() as conn:
        out = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES_0002}
    eng.dispose()
    return out


def test_a_revision_0002_store_upgrades_keeps_its_data_and_is_sealed(old_store: str, tmp_path: Path) -> None:
    """`trial init` on the 0002 store: schema at the head, every 0002 row kept (the trail only grows), both lists sealed
    with each patient's arm unchanged, no plaintext arm/block/checksum/seed hash left in the tables or the audit
    payloads, accounts adopted and able to log in, audit and lists verify, and the next patient is randomised."""
    eng = create_engine(old_store)
    with eng.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0002"
        arms_before = dict(conn.execute(text(
            "SELECT p.code, s.arm FROM allocation_slots s JOIN patients p ON p.id = s.patient_id")).all())
    eng.dispose()
    before = _counts(old_store)
    st = TrialStore(old_store)
    try:
        summary = st.initialise(simulation=True, now=datetime(2025, 3, 5, tzinfo=UTC))
        assert (summary["schema_revision"], summary["sealed_lists"]) == (HEAD_REVISION, 2)
        assert summary["adopted_accounts"] == ["coord-0002", "stat-0002"]
        after = _counts(old_store)
        assert {t: n for t, n in after.items() if t != "audit_log"} == {t: n for t, n in before.items() if t != "audit_log"}
        assert after["audit_log"] > before["audit_log"]
        with st.session() as s:
            arms_after = {c: patient_view(s, c, actor=DSMB)["randomisation"]["arm"] for c in arms_before}
        assert arms_after == arms_before and len(arms_before) == 3
        with st.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM allocation_slots WHERE arm IS NOT NULL OR block IS NOT NULL "
                                     "OR block_size IS NOT NULL OR arm_mac IS NULL")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM kits WHERE regimen IS NOT NULL")).scalar_one() == 0
            lists = conn.execute(text("SELECT content_sha256, file_sha256, meta, list_mac FROM allocation_lists")).all()
            payloads = [p for (p,) in conn.execute(text(
                "SELECT payload FROM audit_log WHERE table_name IN ('allocation_slots', 'kits', 'allocation_lists') "
                "AND payload IS NOT NULL"))]
        assert all(c is None and f is None and m_ is not None for c, f, m_, m_ in lists)
        for _c, _f, meta, _m in lists:
            meta = json.loads(meta) if isinstance(meta, str) else meta
            assert not {"seed_sha256", "content_sha256", "block_sizes"} & set(meta)
        text_ = " ".join(json.dumps(p) if not isinstance(p, str) else p for p in payloads).replace(" ", "")
        assert not any(f'"arm":"{a}"' in text_ or f'"regimen":"{a}"' in text_ for a in ARM_CODES)
        assert '"block_size":2' not in text_ and '"block_size":4' not in text_ and '"block_size":6' not in text_
        with st.session() as s:
            report = verify_audit(s)
            assert report.ok and report.keyed, report.issues[:3]
            assert [c.id for c in verify_allocation_lists(s) if c.level == "error"] == []
        assert UserStore(st).login("stat-0002", "a-long-password-0002", now=datetime.now(UTC))[0]
        assert randomised(st, "P5")["randomisation_number"] == "ATH-MALS-0003"
        with st.session() as s:
            assert verify_audit(s).ok
    finally:
        st.dispose()


def test_the_0002_store_refuses_work_until_initialised(tmp_path: Path) -> None:
    """Upgraded but not initialised (no trial key configured), the store says to run `trial init` (IG-E416)."""
    from immunoguide.errors import StoreError

    st = TrialStore(_sqlite_0002(tmp_path / "old.db"))
    try:
        st.upgrade()
        with pytest.raises(StoreError, match="trial init"):
            st.check_schema()
    finally:
        st.dispose()
