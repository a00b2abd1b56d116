"""Bad input on every command gives a clear error with a stable code and stores nothing half-way
(row counts of every table and of the audit trail are unchanged) — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import EXIT_INPUT, EXIT_REFUSED, trial_app
from immunoguide.errors import (
    AllocationListUnavailable,
    AlreadyRandomized,
    ConsentMissing,
    DuplicateConsent,
    DuplicateRecord,
    ImmunoguideError,
    InputError,
    MissingInputError,
    NotAuthorized,
    NotAVisitDay,
    NotRandomized,
    RandomizationWindowMissed,
    UnknownPatient,
    WrongStratum,
)
from immunoguide.trial import (
    TrialStore,
    enter_labs,
    import_allocation_list,
    randomize,
    record_adverse_event,
    record_consent,
    record_dose,
    record_followup,
    screen,
    unblind,
    withdraw,
)
from trial_helpers import (
    ADMIN,
    COORD,
    STATISTICIAN,
    enrol,
    h,
    labs,
    make_lists,
    randomised,
    row_counts,
    screening_record,
)


@pytest.fixture
def world(store_url: str, tmp_path: Path):
    """Lists for ATH; P1 randomised (MALS), P2 enrolled (MALS, not randomised), P3 screened only, M1 at MIL."""
    st = TrialStore(store_url)
    files = make_lists(st, tmp_path, n=10)
    randomised(st, "P1")
    enrol(st, "P2")
    enrol(st, "M1", site="MIL")
    with st.session() as s:
        screen(s, "P3", "ATH", screening_record(), actor=COORD, now=h(1))
    st.files = files  # type: ignore[attr-defined]
    yield st
    st.dispose()


NAIVE = datetime(2025, 3, 1, 12, 0)
MIL = __import__("immunoguide.trial", fromlist=["Actor"]).Actor("bianchi", "site_coordinator", "MIL")

Case = tuple[str, Callable[[Session, Any], object], type[ImmunoguideError], str]
CASES: list[Case] = [
    ("randomise an unknown patient", lambda s, w: randomize(s, "NOPE", actor=COORD, now=h(9)), UnknownPatient, "IG-E406"),
    ("consent for an unknown patient",
     lambda s, w: record_consent(s, "NOPE", "patient", h(2), actor=COORD, now=h(2)), UnknownPatient, "IG-E406"),
    ("dose for an unknown patient",
     lambda s, w: record_dose(s, "NOPE", "IV", h(10), actor=COORD, now=h(10)), UnknownPatient, "IG-E406"),
    ("wrong stratum", lambda s, w: randomize(s, "P2", actor=COORD, now=h(9), stratum="immunoparalysis"),
     WrongStratum, "IG-E407"),
    ("randomisation window missed", lambda s, w: randomize(s, "P2", actor=COORD, now=h(72)),
     RandomizationWindowMissed, "IG-E403"),
    ("duplicate consent", lambda s, w: record_consent(s, "P2", "spouse", h(3), actor=COORD, now=h(3)),
     DuplicateConsent, "IG-E405"),
    ("dose for a patient not randomised", lambda s, w: record_dose(s, "P2", "IV", h(10), actor=COORD, now=h(10)),
     NotRandomized, "IG-E404"),
    ("randomise twice", lambda s, w: randomize(s, "P1", actor=COORD, now=h(10)), AlreadyRandomized, "IG-E401"),
    ("randomise without consent", lambda s, w: randomize(s, "P3", actor=COORD, now=h(9)), ConsentMissing, "IG-E411"),
    ("screen a code twice", lambda s, w: screen(s, "P1", "ATH", screening_record(), actor=COORD, now=h(1)),
     DuplicateRecord, "IG-E413"),
    ("time without offset",
     lambda s, w: screen(s, "P9", "ATH", screening_record(sepsis3_onset_time=NAIVE.isoformat()), actor=COORD,
                         now=h(5)), InputError, "IG-E100"),
    ("unknown screening field",
     lambda s, w: screen(s, "P9", "ATH", {**screening_record(), "age": 70}, actor=COORD, now=h(1)), InputError,
     "IG-E100"),
    ("consent value not in the protocol",
     lambda s, w: record_consent(s, "P3", "neighbour", h(2), actor=COORD, now=h(2)), InputError, "IG-E100"),
    ("lab value without its unit",
     lambda s, w: enter_labs(s, "P3", {k: v for k, v in labs("MALS").items() if k != "ferritin_unit"}, actor=COORD,
                             now=h(8)), MissingInputError, "IG-E103"),
    ("dose from a kit the patient does not have",
     lambda s, w: record_dose(s, "P1", "IM", h(10), actor=COORD, now=h(10)), InputError, "IG-E100"),
    ("dose given in the future", lambda s, w: record_dose(s, "P1", "IV", h(30), actor=COORD, now=h(10)),
     InputError, "IG-E100"),
    ("dose number beyond the schedule",
     lambda s, w: record_dose(s, "P1", "SC", h(10), number=9, actor=COORD, now=h(10)), InputError, "IG-E100"),
    ("adverse event grade 7",
     lambda s, w: record_adverse_event(s, "P1", term="Rash", onset_at=h(20), grade=7, serious=False,
                                       relatedness="possible", outcome="recovered", actor=COORD, now=h(21)),
     InputError, "IG-E100"),
    ("adverse event of a patient not randomised",
     lambda s, w: record_adverse_event(s, "P2", term="Rash", onset_at=h(20), grade=1, serious=False,
                                       relatedness="possible", outcome="recovered", actor=COORD, now=h(21)),
     NotRandomized, "IG-E404"),
    ("follow-up on a day that is no visit day",
     lambda s, w: record_followup(s, "P1", 16, actor=COORD, now=h(500), sofa_total=4), NotAVisitDay, "IG-E415"),
    ("unblinding by a coordinator",
     lambda s, w: unblind(s, "P1", "need to know", actor=COORD, now=h(20)), NotAuthorized, "IG-E408"),
    ("another site's patient", lambda s, w: record_dose(s, "P1", "IV", h(10), actor=MIL, now=h(10)), UnknownPatient,
     "IG-E406"),
    ("withdrawal without consent", lambda s, w: withdraw(s, "P3", "changed mind", actor=COORD, now=h(5)),
     ConsentMissing, "IG-E411"),
    ("randomise at a site without a list", lambda s, w: randomize(s, "M1", actor=MIL, now=h(9)),
     AllocationListUnavailable, "IG-E412"),
    ("import a list twice",
     lambda s, w: import_allocation_list(s, w.files[("ATH", "MALS")].csv, actor=ADMIN, now=h(0)), DuplicateRecord,
     "IG-E413"),
    ("import by a statistician",
     lambda s, w: import_allocation_list(s, w.files[("ATH", "MALS")].csv, actor=STATISTICIAN, now=h(0)),
     NotAuthorized, "IG-E408"),
]


@pytest.mark.parametrize(("what", "call", "error", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_command_is_refused_with_its_code_and_stores_nothing(world: TrialStore, what: str, call: Callable,
                                                                 error: type[ImmunoguideError], code: str) -> None:
    """The command raises its error (stable code, expected/got/what to do) and no table or audit row changes."""
    before = row_counts(world)
    with pytest.raises(error) as info:
        with world.session() as s:
            call(s, world)
    assert info.value.code == code
    assert info.value.expected and info.value.todo, info.value.message
    assert row_counts(world) == before


def test_a_crash_after_the_slot_is_taken_rolls_everything_back(world: TrialStore, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """If kit assignment fails after the slot, the screening-log entry and the patient update were written, the
    transaction rolls back as a whole: the slot stays free and the next randomisation takes it."""
    import immunoguide.trial.kits as kits

    before = row_counts(world)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("label printer on fire")

    monkeypatch.setattr(kits, "assign_kits", boom)
    with pytest.raises(RuntimeError), world.session() as s:
        randomize(s, "P2", actor=COORD, now=h(9))
    assert row_counts(world) == before
    monkeypatch.undo()
    with world.session() as s:
        assert randomize(s, "P2", actor=COORD, now=h(9))["randomisation_number"] == "ATH-MALS-0002"


CLI_CASES = [
    (["randomize", "NOPE"], EXIT_REFUSED, "IG-E406"),
    (["randomize", "P2", "--stratum", "immunoparalysis"], EXIT_REFUSED, "IG-E407"),
    (["consent", "P2", "--by", "patient", "--signed-at", h(3).isoformat()], EXIT_REFUSED, "IG-E405"),
    (["dose", "P2", "--kit", "IV", "--given-at", h(10).isoformat()], EXIT_REFUSED, "IG-E404"),
    (["consent", "P3", "--by", "patient", "--signed-at", "yesterday"], EXIT_INPUT, "IG-E100"),
    (["screen", "P9", "--record", "{not json"], EXIT_INPUT, "IG-E100"),
]


@pytest.mark.parametrize(("args", "exit_code", "code"), CLI_CASES, ids=[" ".join(c[0][:2]) for c in CLI_CASES])
def test_cli_reports_the_error_as_json_with_an_exit_code(world: TrialStore, args: list[str], exit_code: int,
                                                         code: str) -> None:
    """The CLI prints one JSON error line on stderr (code, expected, got, what to do) and stores nothing."""
    before = row_counts(world)
    res = CliRunner().invoke(trial_app, ["--db", world.url, "--user", "rivera", "--role", "site_coordinator",
                                         "--site", "ATH", "--now", h(9).isoformat(), *args])
    assert res.exit_code == exit_code, res.output
    err = json.loads(res.stderr.strip().splitlines()[-1])["error"]
    assert err["code"] == code and err["todo"]
    assert row_counts(world) == before
