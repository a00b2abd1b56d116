"""The batch entries of a patient's chart (issue 16): :func:`record_doses` and :func:`record_followups` write exactly
what the same calls of :func:`record_dose` and :func:`record_followup` write — the same rows, the same audit entries
in the same order (event time, actor, reason, payload) — return what the last call returns, and refuse what the
single calls refuse, with the entries before a refused one recorded as after the single calls.

Each scenario runs twice on copies of one store, once call by call and once as a batch, and compares the stores.
The audit entries are compared without the system time and what is chained over it (hash, MAC): those come from
the wall clock.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.errors import ImmunoguideError, InputError, UnknownPatient
from immunoguide.trial import (
    DoseEntry,
    FollowUpEntry,
    TrialStore,
    record_dose,
    record_doses,
    record_followup,
    record_followups,
    verify_audit,
)
from immunoguide.trial.models import AUDITED_TABLES, AuditRecord
from trial_helpers import COORD, COORD_MIL, h, labs, make_lists, randomised
from trial_helpers import h as at

#: The audit columns that come from the system clock (the time of the commit, and the chain over it).
WALL_CLOCK = {"system_at", "prev_hash", "hash", "mac"}
LATE = "entered from the paper chart"


def _store(tmp_path: Path, sqlite_template: Path, name: str) -> TrialStore:
    """A store with one randomised MALS patient, P1 (randomised at h(9))."""
    (tmp_path / name).mkdir()
    db = tmp_path / name / "trial.db"
    shutil.copyfile(sqlite_template, db)
    st = TrialStore(f"sqlite:///{db}")
    make_lists(st, tmp_path / name, strata=("MALS",))
    randomised(st, "P1")
    return st


def _contents(st: TrialStore) -> dict[str, list[dict[str, Any]]]:
    """Every row of every audited table, and every audit entry without its wall-clock columns."""
    out: dict[str, list[dict[str, Any]]] = {}
    with st.session() as s:
        for model in AUDITED_TABLES:
            t = model.__table__
            out[t.name] = [dict(r._mapping) for r in s.execute(select(t).order_by(*t.primary_key.columns))]
        trail = AuditRecord.__table__
        out["audit_log"] = [{k: v for k, v in r._mapping.items() if k not in WALL_CLOCK}
                            for r in s.execute(select(trail).order_by(trail.c.seq))]
        assert verify_audit(s).ok
    return out


def _run(st: TrialStore, step: Callable[[Any], Any]) -> tuple[Any, str | None]:
    """Run ``step`` in one transaction, which commits even when the step raised; (its result, error message)."""
    with st.session() as s:
        try:
            return step(s), None
        except ImmunoguideError as exc:
            return None, f"{type(exc).__name__}: {exc}"


def _compare(tmp_path: Path, sqlite_template: Path, singles: Callable[[Any], Any],
             batch: Callable[[Any], Any]) -> tuple[Any, str | None, dict[str, list[dict[str, Any]]]]:
    """Both runs: same result, same error, same store; (result, error, the store's contents)."""
    one, many = _store(tmp_path, sqlite_template, "one"), _store(tmp_path, sqlite_template, "many")
    try:
        res_one, err_one = _run(one, singles)
        res_many, err_many = _run(many, batch)
        assert err_many == err_one
        assert res_many == res_one
        contents = _contents(one)
        assert _contents(many) == contents
    finally:
        one.dispose()
        many.dispose()
    return res_one, err_one, contents


def _entries(contents: dict[str, list[dict[str, Any]]], table: str) -> list[tuple[Any, ...]]:
    """(action, event time, reason) of the audit entries of ``table``'s rows written by the scenario (the
    coordinator's), in order."""
    return [(e["action"], e["at"], e["reason"]) for e in contents["audit_log"]
            if e["table_name"] == table and e["actor"] == COORD.user]


def _course(tz: tzinfo = UTC) -> list[DoseEntry]:
    """Doses on time, late, early, missed, pinned to a number, with a note, and entered late (with a reason); the
    times in the zone ``tz``."""
    t = h(10).astimezone(tz)
    return [
        DoseEntry("IV", t, t + timedelta(minutes=20)),
        DoseEntry("SC", t, t + timedelta(minutes=25), note="left thigh"),
        DoseEntry("IV", t + timedelta(hours=11), t + timedelta(hours=11, minutes=5)),  # dose 2, 3 h late
        DoseEntry("IV", t + timedelta(hours=23), t + timedelta(hours=23, minutes=5)),  # dose 4 (3 missed)
        DoseEntry("IV", t + timedelta(hours=31), t + timedelta(hours=61), number=5, late_entry_reason=LATE),
        DoseEntry("SC", t + timedelta(hours=46), t + timedelta(hours=46, minutes=30)),  # dose 2, 2 h early
        DoseEntry("IV", t + timedelta(hours=40), t + timedelta(hours=41)),
    ]


def _singles(code: str, doses: list[DoseEntry]) -> Callable[[Any], Any]:
    def step(s: Any) -> Any:
        out = None
        for d in doses:
            out = record_dose(s, code, d.kit, d.given_at, actor=COORD, now=d.now, number=d.number, note=d.note,
                              late_entry_reason=d.late_entry_reason)
        return out
    return step


@pytest.mark.parametrize("tz", [UTC, timezone(timedelta(hours=2))])
def test_record_doses_writes_what_record_dose_writes(tmp_path: Path, sqlite_template: Path, tz: tzinfo) -> None:
    """Also with times in another zone than UTC: the view shows the earlier doses as the store returns them."""
    view, err, contents = _compare(tmp_path, sqlite_template, _singles("P1", _course(tz)),
                                   lambda s: record_doses(s, "P1", _course(tz), actor=COORD))
    assert err is None and view["recorded"]["number"] == 6 and view["counts"]["missed"] == 1
    # each dose's entry at its own time, the late one with its reason; the first dose started the schedule
    late = "late entry (30.0 h after given_at): " + LATE
    assert _entries(contents, "dose_administrations") == [
        ("insert", d.now, late if d.late_entry_reason else None) for d in _course()]
    assert _entries(contents, "patients")[-1] == ("update", _course()[0].now, None)
    assert [r["number"] for r in contents["dose_administrations"]] == [1, 1, 2, 4, 5, 2, 6]


@pytest.mark.parametrize(("bad", "error"), [
    (DoseEntry("IV", h(9.5), h(12)), "at or after the first recorded dose"),  # refused: before the first dose
    (DoseEntry("IM", h(12), h(12)), "kit one of"),  # refused: no such kit
    (DoseEntry("IV", h(10), h(12), number=1), "not yet recorded"),  # refused: dose 1 is recorded
    (DoseEntry("IV", h(12), h(90)), "late entry"),  # refused: late without a reason
])
def test_record_doses_refuses_what_record_dose_refuses(tmp_path: Path, sqlite_template: Path, bad: DoseEntry,
                                                       error: str) -> None:
    """The refused dose raises the single call's error; the doses before it are recorded (and audited)."""
    doses = [*_course()[:3], bad, *_course()[3:]]
    _, err, contents = _compare(tmp_path, sqlite_template, _singles("P1", doses),
                                lambda s: record_doses(s, "P1", doses, actor=COORD))
    assert err is not None and error in err
    assert len(contents["dose_administrations"]) == 3


def test_record_doses_checks_the_actor_and_its_input(tmp_path: Path, sqlite_template: Path) -> None:
    st = _store(tmp_path, sqlite_template, "st")
    try:
        with st.session() as s:
            with pytest.raises(UnknownPatient):
                record_doses(s, "P1", _course(), actor=COORD_MIL)
            with pytest.raises(InputError):
                record_doses(s, "P1", [], actor=COORD)
    finally:
        st.dispose()


def _days(tz: tzinfo = UTC) -> list[FollowUpEntry]:
    """Day 0 with labs, SOFA and safety labs; SOFA days; a late day 3; day 15's infection outcome; death by day 28;
    the times of the days in the zone ``tz``."""
    def h(hours: float) -> datetime:
        return at(hours).astimezone(tz)

    day0_labs = {"ferritin": 6100, "ferritin_unit": "ng/mL", "ferritin_sample_time": h(12).isoformat()}
    safety = {"sample_time": h(11).isoformat(), "result_time": h(13).isoformat(), "source": "central lab",
              "hemoglobin": 8.9, "hemoglobin_unit": "g/dL", "hemoglobin_lln": 12.0,
              "platelets": 41, "platelets_unit": "10^9/L", "platelets_lln": 150}
    return [
        FollowUpEntry(0, h(14), sofa_total=11, labs=day0_labs, safety_labs=safety),
        FollowUpEntry(1, h(34), sofa_total=9),
        FollowUpEntry(2, h(70), labs=labs("unclassified", sample_h=9 + 48 + 2)),
        FollowUpEntry(3, h(9 + 24 * 9), assessed_at=h(9 + 24 * 3 + 2), sofa_total=7, late_entry_reason=LATE),
        FollowUpEntry(15, h(9 + 24 * 16), assessed_at=h(9 + 24 * 15 + 2), infection_assessment="failure"),
        FollowUpEntry(28, h(9 + 24 * 30), assessed_at=h(9 + 24 * 28 + 2), vital_status="dead",
                      death_at=h(9 + 24 * 20), late_entry_reason=LATE),
    ]


def _followup_singles(days: list[FollowUpEntry]) -> Callable[[Any], Any]:
    def step(s: Any) -> Any:
        out = None
        for d in days:
            out = record_followup(
                s, "P1", d.day, actor=COORD, now=d.now, assessed_at=d.assessed_at, sofa_total=d.sofa_total,
                sofa_inputs=d.sofa_inputs, sofa_criteria=d.sofa_criteria, labs=d.labs,
                infection_assessment=d.infection_assessment, vital_status=d.vital_status, death_at=d.death_at,
                late_entry_reason=d.late_entry_reason, safety_labs=d.safety_labs)
        return out
    return step


@pytest.mark.parametrize("tz", [UTC, timezone(timedelta(hours=-5))])
def test_record_followups_writes_what_record_followup_writes(tmp_path: Path, sqlite_template: Path,
                                                             tz: tzinfo) -> None:
    view, err, contents = _compare(tmp_path, sqlite_template, _followup_singles(_days(tz)),
                                   lambda s: record_followups(s, "P1", _days(tz), actor=COORD))
    assert err is None and [d["day"] for d in view["days"]] == [0, 1, 2, 3, 15, 28]
    assert [(a, at) for a, at, _ in _entries(contents, "followups")] == [
        ("insert", d.now) for d in _days(tz)]
    assert [r is not None for _, _, r in _entries(contents, "followups")] == [False, False, False, True, False, True]
    assert len(_entries(contents, "safety_lab_results")) == 2 and len(_entries(contents, "lab_results")) == 3


@pytest.mark.parametrize(("bad", "error"), [
    (FollowUpEntry(1, h(40), sofa_total=5), "not yet recorded"),  # refused: day 1 is recorded
    (FollowUpEntry(4, h(40)), "at least one item"),  # refused: nothing entered
    (FollowUpEntry(5, h(9 + 24 * 12), assessed_at=h(9 + 24 * 5 + 1), sofa_total=6), "late entry"),  # no reason
    (FollowUpEntry(6, h(40), sofa_total=6), "IG-E"),  # refused: assessed (now) outside day 6
])
def test_record_followups_refuses_what_record_followup_refuses(tmp_path: Path, sqlite_template: Path,
                                                               bad: FollowUpEntry, error: str) -> None:
    days = [*_days()[:3], bad, *_days()[3:]]
    _, err, contents = _compare(tmp_path, sqlite_template, _followup_singles(days),
                                lambda s: record_followups(s, "P1", days, actor=COORD))
    assert err is not None and error in err
    assert [r["day"] for r in contents["followups"]] == [0, 1, 2]


def test_a_queued_audit_entry_holds_every_column_of_the_trail() -> None:
    """The entries a transaction queues (plain objects, inserted at its commit) carry exactly the audit_log columns."""
    from dataclasses import fields

    from immunoguide.trial.audit import QueuedEntry

    assert [f.name for f in fields(QueuedEntry)] == [c.key for c in AuditRecord.__table__.columns]
