"""Opening the trial store: an engine and sessions from a database URL, and Alembic migrations run from code.

SQLite (a file, the embedded default) and PostgreSQL (``postgresql+psycopg://…``, multi-site) are supported
through the same models. Every write transaction is serialised where it must be:

* **SQLite**: every transaction starts with ``BEGIN IMMEDIATE`` (the database write lock is taken at the start,
  so two writers never interleave; others wait up to ``busy_timeout_s``), foreign keys are enforced, the journal
  is a write-ahead log with ``synchronous=FULL`` (a committed transaction survives a crash or power loss);
* **PostgreSQL**: ``READ COMMITTED`` with explicit row locks — the patient row, the allocation slot
  (``FOR UPDATE SKIP LOCKED``) and, at commit, after every data change is flushed, the audit-chain head
  (``FOR UPDATE``), always in that order.

The schema is created and upgraded only by the Alembic migrations shipped in ``trial/migrations``
(:meth:`TrialStore.upgrade`, the ``immunoguide trial init`` command); no ``alembic.ini`` is needed.

Examples
--------
>>> store = TrialStore("sqlite://")          # in-memory, for illustration
>>> store.upgrade()
>>> store.schema_revision() == HEAD_REVISION
True
>>> store.dispose()
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from immunoguide.errors import StoreError

__all__ = ["DEFAULT_URL", "ENV_URL", "HEAD_REVISION", "TrialStore", "default_url"]

#: Default store: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///immunoguide.db"
#: Environment variable that overrides the default URL.
ENV_URL = "IMMUNOGUIDE_DB_URL"
#: The newest migration shipped (``trial/migrations/versions``).
HEAD_REVISION = "0003_safety"


def default_url() -> str:
    """``$IMMUNOGUIDE_DB_URL`` if set, else ``sqlite:///immunoguide.db``."""
    return os.environ.get(ENV_URL) or DEFAULT_URL


def _normalise(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class TrialStore:
    """A trial database: engine, session factory and schema management.

    Parameters
    ----------
    url : str, optional
        SQLAlchemy URL; default :func:`default_url`. ``postgresql://`` is read as ``postgresql+psycopg://``.
    busy_timeout_s : float
        SQLite only: how long a writer waits for the write lock (seconds).
    pool_size : int
        PostgreSQL only: connections kept open (concurrent writers from threads need one each).
    """

    def __init__(self, url: str | None = None, *, busy_timeout_s: float = 60.0, pool_size: int = 5) -> None:
        self.url = _normalise(url or default_url())
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            memory = self.url in ("sqlite://", "sqlite:///:memory:")
            kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
            if memory:
                kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 10
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            _serialise_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        from immunoguide.trial.audit import install_guard

        install_guard(self._sessions)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    # -- schema ---------------------------------------------------------------------------------------------

    def _alembic_config(self, connection: Any) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("immunoguide.trial") / "migrations"))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["connection"] = connection
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Create or upgrade the schema to ``revision`` (Alembic ``upgrade``, run from code)."""
        from alembic import command

        with self.engine.begin() as conn:
            command.upgrade(self._alembic_config(conn), revision)

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def check_schema(self) -> None:
        """Raise :class:`StoreError` unless the database is at :data:`HEAD_REVISION`."""
        rev = self.schema_revision()
        if rev != HEAD_REVISION:
            raise StoreError(
                expected=f"a trial store at schema revision {HEAD_REVISION}",
                got=rev,
                where=self.safe_url,
                todo="run `immunoguide trial init --db URL` (creates or upgrades the schema)",
            )

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden (for messages)."""
        return self.engine.url.render_as_string(hide_password=True)

    # -- sessions -------------------------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit when the block ends normally, roll back on any exception.

        Trial functions never commit; what they write in one call is committed or rolled back as a whole, so
        nothing is stored half-way.
        """
        s = self._sessions()
        try:
            with s.begin():
                yield s
        finally:
            s.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _serialise_sqlite(engine: Engine) -> None:
    """SQLite: BEGIN IMMEDIATE for every transaction (pysqlite's own BEGIN handling switched off), FKs on."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")  # one fsync per commit; readers do not block the writer
        cur.execute("PRAGMA synchronous=FULL")  # a committed randomisation survives a power loss
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
