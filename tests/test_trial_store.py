"""The store's schema is owned by its Alembic migrations: they run from code and match the models on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.errors import StoreError
from immunoguide.trial import TrialStore
from immunoguide.trial.models import AuditHead, Base, StoreConfig
from immunoguide.trial.store import HEAD_REVISION


def test_migrations_create_exactly_the_models_schema(store_url: str) -> None:
    """`upgrade head` yields the tables, columns, constraints and indexes of models.py (autogenerate finds no diff)."""
    st = TrialStore(store_url)
    try:
        with st.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        assert st.schema_revision() == HEAD_REVISION
        with st.session() as s:
            head = s.execute(select(AuditHead)).scalar_one()
            cfg = s.execute(select(StoreConfig)).scalar_one()
        assert head.seq == 1 and head.mac  # the configuration entry written by `trial init`, MAC'd
        assert (cfg.mode, cfg.key_id, cfg.keyed_from_seq) == ("simulation", st.key.key_id, 1)
    finally:
        st.dispose()


def test_upgrade_is_idempotent_and_an_empty_database_is_refused_until_initialised(tmp_path: Path) -> None:
    """Running `init` twice is harmless; before it — and after a bare schema upgrade, which configures nothing —
    the store says to run it (IG-E416)."""
    st = TrialStore(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        with pytest.raises(StoreError, match="trial init"):
            st.check_schema()
        st.upgrade()
        with pytest.raises(StoreError, match="trial init"):
            st.check_schema()
        first = st.initialise()
        second = st.initialise()
        st.check_schema()
        assert (first["configured"], second["configured"], second["mode"]) == (True, False, "real")
    finally:
        st.dispose()


def test_initialising_a_store_needs_the_trial_key_and_refuses_another_key(tmp_path: Path) -> None:
    """Without a key `trial init` stops (IG-E420); a store made with one key refuses a process holding another."""
    from immunoguide.errors import TrialKeyError
    from immunoguide.trial.keys import TrialKey

    url = f"sqlite:///{tmp_path / 'k.db'}"
    st = TrialStore(url)
    st.key = None
    with pytest.raises(TrialKeyError):
        st.initialise()
    st.dispose()
    TrialStore(url).initialise()
    other = TrialStore(url, key=TrialKey.generate())
    try:
        with pytest.raises(TrialKeyError, match="key id"), other.session() as s:
            from immunoguide.trial.clock import store_config

            store_config(s)
    finally:
        other.dispose()


def test_postgres_urls_use_psycopg3() -> None:
    """A plain postgresql:// URL is read as postgresql+psycopg:// (psycopg 3, the pinned driver)."""
    st = TrialStore("postgresql://u@127.0.0.1:1/db")
    assert st.engine.dialect.driver == "psycopg"
    st.dispose()


@pytest.mark.parametrize(("require", "outcome"), [("1", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_postgresql_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, require: str,
                                                            outcome: type[BaseException]) -> None:
    """Without a server the pg tests fail when IMMUNOGUIDE_REQUIRE_PG=1 (CI) and are skipped otherwise."""
    from conftest_pg import pg_unavailable

    monkeypatch.setenv("IMMUNOGUIDE_REQUIRE_PG", require)
    with pytest.raises(outcome, match="PostgreSQL is not available"):
        pg_unavailable("no initdb")


def test_a_store_whose_service_made_its_own_account_tables_upgrades_keeping_the_accounts(tmp_path: Path) -> None:
    """Before revision 0002 the service created service_users/service_tokens itself; upgrading such a store keeps
    every account and token (the migration creates only what is missing) and a login still works."""
    from datetime import UTC, datetime

    from sqlalchemy import Boolean, Column, DateTime, ForeignKey, MetaData, String, Table, text

    from immunoguide.service.auth import UserStore

    st = TrialStore(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        st.upgrade("0001")
        old = MetaData()  # the tables as service/auth.py created them before revision 0002
        Table("service_users", old, Column("username", String(64), primary_key=True),
              Column("password_hash", String(255), nullable=False), Column("role", String(32), nullable=False),
              Column("site", String(32)), Column("demo", Boolean, nullable=False), Column("active", Boolean, nullable=False),
              Column("created_at", DateTime(timezone=True), nullable=False))
        Table("service_tokens", old, Column("token_hmac", String(64), primary_key=True),
              Column("username", String(64), ForeignKey("service_users.username"), nullable=False, index=True),
              Column("created_at", DateTime(timezone=True), nullable=False),
              Column("expires_at", DateTime(timezone=True), nullable=False), Column("revoked", Boolean, nullable=False))
        old.create_all(st.engine)
        from immunoguide.service.auth import hash_password

        with st.engine.begin() as conn:  # as service/auth.py wrote an account before revision 0002
            conn.execute(old.tables["service_users"].insert().values(
                username="coordinator-ath", password_hash=hash_password("a long enough password"),
                role="site_coordinator", site="ATH", demo=False, active=True,
                created_at=datetime(2026, 11, 23, 12, tzinfo=UTC)))
        st.upgrade()
        assert st.schema_revision() == HEAD_REVISION == "0004"
        assert st.initialise()["adopted_accounts"] == ["coordinator-ath"]  # recorded in the audit trail
        token, principal = UserStore(st).login("coordinator-ath", "a long enough password", now=datetime.now(UTC))
        assert principal.actor.site == "ATH" and token
        with st.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM service_tokens")).scalar_one() == 1
    finally:
        st.dispose()
