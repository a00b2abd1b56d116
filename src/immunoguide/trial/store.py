"""Opening the trial store: an engine and sessions from a database URL, and Alembic migrations run from code.

SQLite (a file, the embedded default) and PostgreSQL (``postgresql+psycopg://…``, multi-site) are supported
through the same models. Every write transaction is serialised where it must be:

* **SQLite**: every transaction starts with ``BEGIN IMMEDIATE`` (the database write lock is taken at the start,
  so two writers never interleave; others wait up to ``busy_timeout_s``), foreign keys are enforced, the journal
  is a write-ahead log with ``synchronous=FULL`` (a committed transaction survives a crash or power loss);
* **PostgreSQL**: ``READ COMMITTED`` with explicit row locks — the patient row, the allocation list (``FOR
  UPDATE``: one allocation per list at a time, see :mod:`immunoguide.trial.randomization`) and, at commit, after
  every data change is flushed, the audit-chain head (``FOR UPDATE``), always in that order.

The schema is created and upgraded only by the Alembic migrations shipped in ``trial/migrations``
(:meth:`TrialStore.upgrade`, the ``immunoguide trial init`` command); no ``alembic.ini`` is needed.

Examples
--------
>>> from immunoguide.trial.keys import TrialKey
>>> store = TrialStore("sqlite://", key=TrialKey.generate())          # in-memory, for illustration
>>> store.initialise()["mode"], store.schema_revision() == HEAD_REVISION
('real', True)
>>> store.dispose()
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from immunoguide.errors import ImplausibleTime, InputError, StoreError, TrialKeyError

if TYPE_CHECKING:
    from immunoguide.trial._authz import Actor
    from immunoguide.trial.keys import TrialKey

__all__ = ["DEFAULT_URL", "ENV_URL", "HEAD_REVISION", "TrialStore", "default_url", "set_store_clock", "store_now"]

#: Default store: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///immunoguide.db"
#: Environment variable that overrides the default URL.
ENV_URL = "IMMUNOGUIDE_DB_URL"
#: The newest migration shipped (``trial/migrations/versions``).
HEAD_REVISION = "0004"


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
    key : TrialKey, optional
        The trial key (:mod:`immunoguide.trial.keys`); default the one configured in the environment
        (``$IMMUNOGUIDE_TRIAL_KEY_FILE`` or ``$IMMUNOGUIDE_TRIAL_KEY``), if any. Writes and unblinded reads need it.
    busy_timeout_s : float
        SQLite only: how long a writer waits for the write lock (seconds).
    pool_size : int
        PostgreSQL only: connections kept open (concurrent writers from threads need one each).
    engine : Engine, optional
        Use this engine instead of creating one from ``url`` (its owner disposes it).
    """

    def __init__(self, url: str | None = None, *, key: TrialKey | None = None, busy_timeout_s: float = 60.0,
                 pool_size: int = 5, engine: Engine | None = None) -> None:
        if engine is not None:
            self.engine = engine
            self.url = engine.url.render_as_string(hide_password=False)
            self._owns_engine = False
        else:
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
            self.engine = create_engine(self.url, **kwargs)
            if self.engine.dialect.name == "sqlite":
                _serialise_sqlite(self.engine)
            self._owns_engine = True
        from immunoguide.trial.clock import KEY_INFO
        from immunoguide.trial.keys import load_key

        self.key: TrialKey | None = key if key is not None else load_key()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False,
                                      info={KEY_INFO: self.key})
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
        """Create or upgrade the schema to ``revision`` (Alembic ``upgrade``, run from code).

        SQLite: foreign keys are switched off for the migration (``batch`` migrations rebuild tables that other
        tables refer to) and checked afterwards (``PRAGMA foreign_key_check``); any violation rolls it back.
        """
        from alembic import command

        with self.engine.connect() as conn:
            sqlite = self.dialect == "sqlite"
            raw = conn.connection.driver_connection if sqlite else None
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, where SQLite honours it
            try:
                with conn.begin():
                    command.upgrade(self._alembic_config(conn), revision)
                    if sqlite:
                        bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if bad:
                            raise StoreError(expected="no foreign-key violation after the migration", got=bad[:5],
                                             where=self.safe_url, todo="restore the store from its backup")
            finally:
                if raw is not None:
                    raw.execute("PRAGMA foreign_keys=ON")

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def check_revision(self) -> None:
        """Raise :class:`StoreError` unless the database is at :data:`HEAD_REVISION` (initialised or not)."""
        rev = self.schema_revision()
        if rev != HEAD_REVISION:
            raise StoreError(
                expected=f"a trial store at schema revision {HEAD_REVISION}",
                got=rev,
                where=self.safe_url,
                todo="run `immunoguide trial init --db URL` (creates or upgrades the schema)",
            )

    def check_schema(self) -> None:
        """Raise :class:`StoreError` unless the database is at :data:`HEAD_REVISION` and initialised (configured
        with a trial key by :meth:`initialise`)."""
        self.check_revision()
        with self.engine.connect() as conn:
            configured = conn.execute(text("SELECT count(*) FROM store_config")).scalar_one()
        if not configured:
            raise StoreError(
                expected="a trial store initialised with a trial key", got="no store configuration",
                where=self.safe_url,
                todo="run `immunoguide trial init` with IMMUNOGUIDE_TRIAL_KEY_FILE set (`immunoguide trial keygen` "
                     "makes a key)",
            )

    def initialise(self, *, simulation: bool = False, trial_start: datetime | None = None, now: datetime | None = None,
                   clock_tolerance_s: int | None = None, late_entry_after_h: float | None = None) -> dict[str, Any]:
        """Create or upgrade the schema, configure the store once (mode, trial key id, clock tolerance, trial start),
        seal any plaintext allocation list of a revision-0002 store and record any account not yet audited.

        Parameters
        ----------
        simulation : bool
            A simulation store (the demo's, tests'): the caller's clock is accepted (``--now``) and the command line
            may act under a role given by flags. A real store (default) takes times from the system clock and
            needs accounts. Fixed when the store is first configured.
        trial_start : datetime, optional
            Dates before it are refused (consent, screening); default the first allocation list's import.
        now : datetime, optional
            Event time of the configuration entry (simulation stores only; real stores use the system clock).

        Returns
        -------
        dict
            ``db``, ``schema_revision``, ``mode``, ``key_id``, ``configured`` (True when configured by this call),
            ``sealed_lists`` and ``adopted_accounts``.
        """
        from immunoguide.trial import accounts, audit, clock
        from immunoguide.trial.models import StoreConfig
        from immunoguide.trial.randomization import seal_legacy_lists

        self.upgrade()
        key = self.key
        if key is None:
            raise TrialKeyError(expected="the trial key to initialise the store", got=None, where="environment",
                                todo="make one with `immunoguide trial keygen --out trial.key`, keep it outside the "
                                     "database and export IMMUNOGUIDE_TRIAL_KEY_FILE=trial.key")
        configured = False
        with self.session() as s:
            cfg = clock.store_config(s)
            sys_t = clock.system_now(s)
            if cfg is None:
                if now is not None and not simulation:
                    raise ImplausibleTime(expected="no --now on a real store", got=now.isoformat(),
                                          where="trial init", todo="--now works only with --simulation")
                when = now if (simulation and now is not None) else sys_t
                if trial_start is not None and trial_start.tzinfo is None:
                    raise StoreError(expected="a trial start with a UTC offset", got=trial_start.isoformat(),
                                     where="trial init", todo="e.g. 2025-03-01T00:00:00+00:00")
                first = audit.head_seq(s) + 1
                cfg = StoreConfig(
                    id=1, mode="simulation" if simulation else "real", key_id=key.key_id, created_at=sys_t,
                    trial_start=trial_start,
                    clock_tolerance_s=clock.DEFAULT_CLOCK_TOLERANCE_S if clock_tolerance_s is None else clock_tolerance_s,
                    late_entry_after_h=clock.DEFAULT_LATE_ENTRY_AFTER_H if late_entry_after_h is None
                    else late_entry_after_h,
                    keyed_from_seq=first, mac="")
                cfg.mac = clock.config_mac(key, cfg)
                s.add(cfg)
                s.flush()
                clock.forget_config(s)
                audit.append(s, accounts.SYSTEM_ACTOR, when, action="configure", table="store_config", row_id="1",
                             patient_id=None, payload={"before": None, "after": clock.config_image(cfg)},
                             reason="trial init")
                configured = True
            elif simulation and cfg.mode != "simulation":
                raise StoreError(expected="a new store for --simulation", got="a real store", where=self.safe_url,
                                 todo="a real store never becomes a simulation store")
            when = now if (cfg.mode == "simulation" and now is not None) else sys_t
            sealed = seal_legacy_lists(s, now=when)
            adopted = accounts.adopt_unaudited(s, when)
            out = {"db": self.safe_url, "schema_revision": HEAD_REVISION, "mode": cfg.mode, "key_id": cfg.key_id,
                   "configured": configured, "keyed_from_seq": cfg.keyed_from_seq, "sealed_lists": sealed,
                   "adopted_accounts": adopted}
        return out

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
        """Close every pooled connection (of an engine this store created)."""
        if self._owns_engine:
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


# -- the store's clock (see :mod:`immunoguide.trial.clock`) ----------------------------------------------------


def set_store_clock(session: Session, *, simulated_now: datetime | None, frozen: bool, actor: Actor,
                    wall_now: datetime, note: str = "") -> dict[str, Any]:
    """Set a simulation store's clock (administrator): ``simulated_now`` None → the system clock; else simulated,
    standing at ``simulated_now`` at wall time ``wall_now`` (``frozen``: stays there).

    Recorded in the audit trail (action ``set_clock``, the clock before and after; event time ``wall_now``). Raises
    NotAuthorized (not an administrator) and ImplausibleTime (a real store: its clock is the system clock).
    """
    from immunoguide.trial import audit
    from immunoguide.trial._authz import authorize
    from immunoguide.trial._common import aware
    from immunoguide.trial.clock import _read_clock_row, is_simulation
    from immunoguide.trial.models import StoreClock
    from immunoguide.units import check_plausible_time

    authorize(actor, "restore")  # store administration: the administrator's permission
    aware(wall_now, "wall_now")
    if simulated_now is not None:
        aware(simulated_now, "simulated_now")
        check_plausible_time(simulated_now, field="simulated_now")
    if not isinstance(frozen, bool):
        raise InputError(expected="frozen true or false", got=frozen, where="field frozen", todo="say yes or no",
                         field="frozen")
    if not is_simulation(session):
        raise ImplausibleTime(expected="a simulation store (a real store's clock is the system clock)",
                              got=simulated_now.isoformat() if simulated_now else "the system clock",
                              where="store clock (real store)",
                              todo="a simulated time is for demo, training and replay stores (`trial init "
                                   "--simulation`); a real store needs nothing set")
    before = _read_clock_row(session)
    row = session.execute(select(StoreClock).where(StoreClock.id == 1)).scalar_one_or_none()
    values = {"mode": "wall" if simulated_now is None else "simulated", "simulated_epoch": simulated_now,
              "wall_epoch": None if simulated_now is None else wall_now, "frozen": bool(frozen and simulated_now),
              "note": note, "set_at": wall_now, "set_by": actor.user}
    if row is None:
        session.add(StoreClock(id=1, **values))
    else:
        for k, v in values.items():
            setattr(row, k, v)
    session.flush()
    setting = _read_clock_row(session)
    audit.append(session, actor, wall_now, action="set_clock", table="store_clock", row_id="1", patient_id=None,
                 payload={"before": before.to_dict(), "after": setting.to_dict()})
    return setting.to_dict()


def store_now(url: str, wall_now: datetime) -> datetime:
    """The time of the store at ``url`` at wall time ``wall_now``: its simulated clock on a simulation store, else
    ``wall_now`` (a real store, no clock set, or a store that predates the clock table — the schema check of the
    caller reports an old store)."""
    from sqlalchemy.exc import SQLAlchemyError

    from immunoguide.trial.clock import read_store_clock

    st = TrialStore(url)
    try:
        with st.session() as s:
            return read_store_clock(s).now(wall_now)
    except SQLAlchemyError:
        return wall_now
    finally:
        st.dispose()
