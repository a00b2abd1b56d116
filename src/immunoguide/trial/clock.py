"""Who-knows-the-time: the system clock, the store's configuration (real or simulation) and the checks of times.

Two times are kept for every write (21 CFR 11.10(e); ICH E6(R3) 4.2.2(d)):

* the **event time** (``now`` of every trial function, the audit entry's ``at``): when the clinical event happened
  or was recorded, as the caller says;
* the **system time** (the audit entry's ``system_at``): the database server's clock when the entry was chained
  (PostgreSQL ``clock_timestamp()``; SQLite has no server, so the host's UTC clock), taken after the chain head is
  locked, so it never decreases along the chain.

A **real** store (the default of ``immunoguide trial init``) refuses an event time that differs from the system
time by more than ``clock_tolerance_s`` (default :data:`DEFAULT_CLOCK_TOLERANCE_S`): nobody can back-date or
post-date a randomisation, and windows such as ImmunoSep's 72 h are judged on a time the system vouches for.
A **simulation** store (``trial init --simulation``, the demo's) accepts the caller's clock and records the system
time beside it.

Clinical times that lie before the recording (a dose given in the night, entered in the morning) are accepted;
more than ``late_entry_after_h`` hours (default :data:`DEFAULT_LATE_ENTRY_AFTER_H`, the platform's choice) late,
the entry needs a reason, which the audit trail records. Dates must lie in the trial: not before its start
(``trial_start`` of the configuration, else the first allocation list's import) and not in the future.

The configuration row (``store_config``) carries a MAC under the trial key; a process holding the key refuses a
configuration that does not verify (someone switched a real store to simulation, or changed its key id).

The store's clock
-----------------
What "now" is when nobody says (the dashboard, REST and CDS Hooks, ``immunoguide trial``/``safety``/``report``
without ``--now``), :func:`read_store_clock`:

* a **real** store's clock is the system clock, always: a ``store_clock`` row there is ignored (nobody can move a
  real store's time, not even an administrator, and a row written in SQL changes nothing: the mode is MAC'd);
* a **simulation** store keeps a *simulated clock* (table ``store_clock``, one row; none = the system clock). A demo
  store holds synthetic data dated in the 22nd century (MIMIC-style shifted dates) and a replay store holds past
  data; read with the system clock such a store shows "study day −51634" and a "−1 507 572.8 h window". Its clock
  is ``simulated_epoch + (wall now − wall_epoch)`` (the data's time line, running) or, ``frozen``, always
  ``simulated_epoch`` (the demo freezes it at the time its reports were written).

``immunoguide safety clock`` shows the clock and sets it (:func:`immunoguide.trial.store.set_store_clock`:
administrator, simulation stores only, recorded in the audit trail as action ``set_clock`` with the clock before and
after); :func:`immunoguide.trial.store.store_now` reads a store's time from its URL. Both live with the store: this
module knows the configuration and the clock, and imports neither the audit trail nor the store.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> c = ClockSetting("simulated", datetime(2150, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), False)
>>> c.now(datetime(2026, 1, 2, tzinfo=UTC)).isoformat()
'2150-01-02T00:00:00+00:00'
>>> ClockSetting("wall", None, None, False).now(datetime(2026, 1, 2, tzinfo=UTC)).year
2026
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from immunoguide.errors import AuditChainBroken, ImplausibleTime, TrialKeyError
from immunoguide.trial._txn import per_transaction
from immunoguide.trial.keys import TrialKey
from immunoguide.trial.models import AllocationList, StoreClock, StoreConfig

__all__ = [
    "ClockSetting",
    "DEFAULT_CLOCK_TOLERANCE_S",
    "DEFAULT_LATE_ENTRY_AFTER_H",
    "KEY_INFO",
    "MODES",
    "check_event_time",
    "check_late_entry",
    "check_not_before_trial",
    "check_study_day",
    "config_image",
    "config_mac",
    "forget_config",
    "forget_trial_start",
    "is_simulation",
    "read_store_clock",
    "require_key",
    "session_key",
    "store_config",
    "system_now",
    "trial_start",
]

MODES = ("real", "simulation")
#: Largest difference between an event time and the system clock on a real store (seconds; platform choice).
DEFAULT_CLOCK_TOLERANCE_S = 300
#: A clinical time more than this many hours before its recording needs a reason (platform choice).
DEFAULT_LATE_ENTRY_AFTER_H = 24.0
#: ``Session.info`` key of the trial key (set by :class:`~immunoguide.trial.store.TrialStore`).
KEY_INFO = "immunoguide_trial_key"
_CONFIG_INFO = "_immunoguide_store_config"
_START_INFO = "_immunoguide_trial_start"


def session_key(session: Session) -> TrialKey | None:
    """The trial key the session's store was opened with (None: no key configured in this process)."""
    key = session.info.get(KEY_INFO)
    return key if isinstance(key, TrialKey) else None


def require_key(session: Session, why: str) -> TrialKey:
    """The session's trial key; TrialKeyError naming ``why`` when the process has none."""
    key = session_key(session)
    if key is None:
        raise TrialKeyError(expected=f"the trial key ({why})", got=None, where="environment",
                            todo="export IMMUNOGUIDE_TRIAL_KEY_FILE=/path/to/trial.key (the key the store was "
                                 "initialised with; held by the service and the unblinded team, never in the database)")
    return key


def system_now(session: Session) -> datetime:
    """The system clock: the database server's on PostgreSQL, the host's UTC clock on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        t = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return t.astimezone(UTC)
    return datetime.now(UTC)


def config_image(cfg: StoreConfig) -> dict[str, Any]:
    """The configuration's columns except its MAC (what the MAC covers)."""
    def iso(t: datetime | None) -> str | None:
        if t is None:
            return None
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).isoformat()

    return {"id": cfg.id, "mode": cfg.mode, "key_id": cfg.key_id, "created_at": iso(cfg.created_at),
            "trial_start": iso(cfg.trial_start), "clock_tolerance_s": cfg.clock_tolerance_s,
            "late_entry_after_h": float(cfg.late_entry_after_h), "keyed_from_seq": cfg.keyed_from_seq}


def config_mac(key: TrialKey, cfg: StoreConfig) -> str:
    """The MAC of the configuration under the trial key."""
    return key.mac("config", config_image(cfg))


def forget_config(session: Session) -> None:
    """Drop the configuration (and the trial start) cached in the session (after it was written)."""
    session.info.pop(_CONFIG_INFO, None)
    forget_trial_start(session)


def forget_trial_start(session: Session) -> None:
    """Drop the trial start cached in the session (after an allocation list was imported)."""
    session.info.pop(_START_INFO, None)


def store_config(session: Session) -> StoreConfig | None:
    """The store's configuration (None before ``trial init``), checked against the session's key when there is one.

    Raises TrialKeyError (the session's key is not the store's) or AuditChainBroken (the row fails its MAC).
    """
    return per_transaction(session, _CONFIG_INFO, lambda: _checked_config(session))


def _checked_config(session: Session) -> StoreConfig | None:
    """:func:`store_config` read from the store and checked."""
    cfg = session.execute(select(StoreConfig).where(StoreConfig.id == 1)
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    key = session_key(session)
    if cfg is not None and key is not None:
        if key.key_id != cfg.key_id:
            raise TrialKeyError(expected=f"the trial key of this store (key id {cfg.key_id})", got=f"key id {key.key_id}",
                                where="IMMUNOGUIDE_TRIAL_KEY(_FILE)", todo="use the key the store was initialised with")
        if not key.check("config", config_image(cfg), cfg.mac):
            raise AuditChainBroken(expected="a store configuration matching its MAC under the trial key",
                                   got=config_image(cfg), where="store_config",
                                   todo="the configuration was edited in the database (e.g. a real store switched "
                                        "to simulation): stop and investigate; restore from a verified backup")
    return cfg


def is_simulation(session: Session) -> bool:
    """True on a simulation store (the caller's clock is accepted)."""
    cfg = store_config(session)
    return cfg is not None and cfg.mode == "simulation"


def check_event_time(session: Session, now: datetime, *, what: str = "now", system: datetime | None = None) -> None:
    """On a real store: ImplausibleTime unless ``now`` is within the clock tolerance of the system time."""
    cfg = store_config(session)
    if cfg is None or cfg.mode != "real":
        return
    sys_t = system or system_now(session)
    delta = (now - sys_t).total_seconds()
    if abs(delta) > cfg.clock_tolerance_s:
        raise ImplausibleTime(
            expected=f"{what} within {cfg.clock_tolerance_s} s of the system clock ({sys_t.isoformat()})",
            got=f"{now.isoformat()} ({delta:+.0f} s)", where=f"{what} (real store)",
            todo="on a real store times come from the system clock: omit --now (it works only on a simulation store) "
                 "and check the computer's clock")


def trial_start(session: Session) -> datetime | None:
    """The trial's start: the configured ``trial_start``, else the event time of the first allocation list import."""
    cfg = store_config(session)
    if cfg is not None and cfg.trial_start is not None:
        return cfg.trial_start
    # read once per transaction (every screening, consent, safety draw and AE checks its times against it); an
    # import drops it (forget_trial_start)
    return per_transaction(session, _START_INFO, lambda: _first_import(session))


def _first_import(session: Session) -> datetime | None:
    first = session.execute(select(func.min(AllocationList.imported_at))).scalar_one_or_none()
    if first is not None and first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return first


def check_not_before_trial(session: Session, t: datetime, field: str, *, margin: timedelta = timedelta(days=1)) -> None:
    """ImplausibleTime when ``t`` lies more than ``margin`` before the trial's start (default one day: time zones
    of paper forms)."""
    start = trial_start(session)
    if start is not None and t < start - margin:
        raise ImplausibleTime(expected=f"{field} not before the trial (started {start.isoformat()})", got=t.isoformat(),
                              where=f"field {field}", todo="check the date (year) and time zone", field=field)


def check_study_day(anchor: datetime, day: int, assessed_at: datetime, *, within_day: bool) -> None:
    """A visit time consistent with its study day (day ``d`` = the 24 h from ``anchor + d × 24 h``).

    ``within_day``: the assessment describes the day itself (SOFA worst values, samples) and must lie inside it;
    otherwise (vital status, infection outcome) it must not lie before the day starts. Raises ImplausibleTime.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2025, 3, 1, 9, tzinfo=UTC)
    >>> check_study_day(t0, 1, t0 + timedelta(hours=25), within_day=True)
    >>> check_study_day(t0, 1, t0 + timedelta(hours=1), within_day=True)
    Traceback (most recent call last):
    ...
    immunoguide.errors.ImplausibleTime: [IG-E419] expected an assessment of study day 1 ...
    """
    start = anchor + timedelta(days=day)
    end = start + timedelta(days=1)
    if assessed_at < start or (within_day and assessed_at >= end):
        span = f"[{start.isoformat()}, {end.isoformat()})" if within_day else f"from {start.isoformat()}"
        raise ImplausibleTime(expected=f"an assessment of study day {day} {span} (randomised {anchor.isoformat()})",
                              got=assessed_at.isoformat(), where="field assessed_at",
                              todo="check the day and the assessment time (day 0 = the 24 h from randomisation)",
                              field="assessed_at")


def check_late_entry(session: Session, event_time: datetime, now: datetime, field: str, reason: str | None) -> str | None:
    """The late-entry rule: ``event_time`` more than ``late_entry_after_h`` before ``now`` needs a reason.

    Returns the reason to record (None when the entry is not late); raises ImplausibleTime when it is late and no
    reason (at least 5 characters) is given.
    """
    cfg = store_config(session)
    limit_h = float(cfg.late_entry_after_h) if cfg is not None else DEFAULT_LATE_ENTRY_AFTER_H
    late_h = (now - event_time).total_seconds() / 3600.0
    if late_h <= limit_h:
        return None
    if not isinstance(reason, str) or len(reason.strip()) < 5:
        raise ImplausibleTime(
            expected=f"{field} recorded within {limit_h:g} h, or a reason for the late entry",
            got=f"{event_time.isoformat()} recorded {late_h:.1f} h later", where=f"field {field}",
            todo="give the reason for the late entry (CLI --late-reason; it is kept in the audit trail)", field=field)
    return f"late entry ({late_h:.1f} h after {field}): {reason.strip()}"


# -- the store's clock ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockSetting:
    """A store's clock (see the module docstring): ``wall`` (the system clock) or ``simulated``."""

    mode: str
    simulated_epoch: datetime | None
    wall_epoch: datetime | None
    frozen: bool
    note: str = ""

    def now(self, wall_now: datetime) -> datetime:
        """The store's time at wall time ``wall_now``."""
        if self.mode != "simulated" or self.simulated_epoch is None:
            return wall_now
        if self.frozen or self.wall_epoch is None:
            return self.simulated_epoch
        return self.simulated_epoch + (wall_now - self.wall_epoch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"mode": self.mode, "simulated_epoch": self.simulated_epoch.isoformat() if self.simulated_epoch else None,
                "wall_epoch": self.wall_epoch.isoformat() if self.wall_epoch else None, "frozen": self.frozen,
                "note": self.note}


WALL = ClockSetting("wall", None, None, False, "the system clock (no simulated clock set)")
REAL = ClockSetting("wall", None, None, False, "the system clock (a real store: its time cannot be set)")


def _read_clock_row(session: Session) -> ClockSetting:
    row = session.execute(select(StoreClock).where(StoreClock.id == 1)).scalar_one_or_none()
    if row is None:
        return WALL
    return ClockSetting(row.mode, row.simulated_epoch, row.wall_epoch, row.frozen, row.note)


def read_store_clock(session: Session) -> ClockSetting:
    """The store's clock: the system clock on a real store (any ``store_clock`` row ignored), the simulated clock of
    a simulation store (``wall`` when none is set)."""
    if not is_simulation(session):
        return REAL
    return _read_clock_row(session)
