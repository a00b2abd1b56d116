"""The store's clock: wall time, or a simulated time for stores whose data live on another time line.

A demo store holds synthetic data dated in the 22nd century (MIMIC-style shifted dates) and a replay store holds past data;
read with the wall clock, such a store shows "study day −51634" and a "−1 507 572.8 h window". The store therefore
records its clock (table ``store_clock``, one row; none = wall time):

``wall``
    the current UTC time (every production store);
``simulated``
    ``simulated_epoch + (wall now − wall_epoch)`` — the data's time line, running; or, ``frozen``, always
    ``simulated_epoch`` (the demo freezes it at the time its reports were written).

The service (dashboard, REST, CDS Hooks) reads the clock at start-up and uses it for ``now`` unless a clock is
configured explicitly, and so do ``immunoguide safety …`` and ``immunoguide report``/``report-dsmb`` without ``--now``
(:func:`store_now`); ``immunoguide safety clock`` shows and sets it (administrator). Setting it is recorded in the
audit trail (action ``set_clock``).

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
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from immunoguide.errors import InputError
from immunoguide.trial import audit
from immunoguide.trial._common import aware
from immunoguide.trial.access import Actor, authorize
from immunoguide.trial.models import StoreClock
from immunoguide.units import check_plausible_time

__all__ = ["ClockSetting", "read_store_clock", "set_store_clock", "store_now"]


@dataclass(frozen=True)
class ClockSetting:
    """A store's clock (see the module docstring)."""

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


WALL = ClockSetting("wall", None, None, False, "wall time (no store clock set)")


def read_store_clock(session: Session) -> ClockSetting:
    """The store's clock (``wall`` when none is set)."""
    row = session.execute(select(StoreClock).where(StoreClock.id == 1)).scalar_one_or_none()
    if row is None:
        return WALL
    return ClockSetting(row.mode, row.simulated_epoch, row.wall_epoch, row.frozen, row.note)


def set_store_clock(session: Session, *, simulated_now: datetime | None, frozen: bool, actor: Actor,
                    wall_now: datetime, note: str = "") -> dict[str, Any]:
    """Set the store's clock (administrator): ``simulated_now`` None → wall time; else simulated, standing at
    ``simulated_now`` now (``frozen``: stays there). Recorded in the audit trail."""
    authorize(actor, "restore")  # store administration: the administrator's permission
    aware(wall_now, "wall_now")
    if simulated_now is not None:
        aware(simulated_now, "simulated_now")
        check_plausible_time(simulated_now, field="simulated_now")
    if not isinstance(frozen, bool):
        raise InputError(expected="frozen true or false", got=frozen, where="field frozen", todo="say yes or no",
                         field="frozen")
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
    setting = read_store_clock(session)
    audit.append(session, actor, wall_now, action="set_clock", table="store_clock", row_id="1", patient_id=None,
                 payload=setting.to_dict())
    return setting.to_dict()


def store_now(url: str, wall_now: datetime) -> datetime:
    """The time of the store at ``url`` at wall time ``wall_now`` (its clock; wall time when none is set or the
    store predates the clock table — the schema check of the caller reports an old store)."""
    from sqlalchemy.exc import SQLAlchemyError

    from immunoguide.trial.store import TrialStore

    st = TrialStore(url)
    try:
        with st.session() as s:
            return read_store_clock(s).now(wall_now)
    except SQLAlchemyError:
        return wall_now
    finally:
        st.dispose()
