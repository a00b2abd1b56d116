"""REDCap in and out: data dictionary + records export, import in one transaction, a round trip that keeps every
record, and bad rows reported per row with nothing imported.

Trial A is the report tests' seeded trial (screen failures, consent refusal, classification labs, randomised
patients with daily SOFA, deaths, day-15 infection, day-28/90 vital status, serial labs, a withdrawal). Each site's
REDCap files are exported from A, imported into a fresh store B the way a site would work — baseline part, then
immunoguide randomises, then the follow-up part — and exported again: the records files are identical.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from immunoguide.errors import InputError, RecordsRejected
from immunoguide.trial import TrialStore, generate_allocation_list, import_allocation_list, randomize
from immunoguide.trial.access import Actor
from immunoguide.trial.models import AuditRecord, FollowUp, LabResult, Patient
from immunoguide.trial.redcap import DICTIONARY_COLUMNS, export_redcap, import_redcap, load_mapping
from report_trial_builder import ADMIN, LATE, RAND_H, SITES, STATISTICIAN, BuiltTrial, _t, build_trial


def coord(site: str) -> Actor:
    return Actor(f"coord_{site}", "site_coordinator", site)


@pytest.fixture(scope="module")
def trial_a(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("redcap_a")
    built = build_trial(f"sqlite:///{d / 'a.db'}", d / "lists", n_randomised=10)
    yield built
    built.store.dispose()


@pytest.fixture(scope="module")
def exported(trial_a: BuiltTrial, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A's REDCap files, one project per site."""
    root = tmp_path_factory.mktemp("redcap_export")
    for site in SITES:
        with trial_a.store.session() as s:
            export_redcap(s, root / site, actor=STATISTICIAN, now=LATE, site=site)
    return {site: root / site for site in SITES}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_dictionary_has_redcap_columns_and_every_mapped_field(exported: dict[str, Path]) -> None:
    """The data dictionary has REDCap's 18 columns and one row per mapped field, with choices and validations."""
    rows = _rows(exported["ATH"] / "redcap_dictionary.csv")
    assert list(rows[0]) == list(DICTIONARY_COLUMNS)
    m = load_mapping()
    assert [r["Variable / Field Name"] for r in rows] == [f.name for f in m.fields]
    sex = next(r for r in rows if r["Variable / Field Name"] == "sex")
    assert sex["Choices, Calculations, OR Slider Labels"] == "1, Male | 2, Female"
    onset = next(r for r in rows if r["Variable / Field Name"] == "sepsis3_onset")
    assert onset["Text Validation Type OR Show Slider Number"] == "datetime_seconds_ymd"


def test_records_export_holds_every_patient_lab_and_followup_day(trial_a: BuiltTrial,
                                                                 exported: dict[str, Path]) -> None:
    """Every screened patient still in the data has a screening row; every lab result and follow-up day a
    repeating instance; no arm anywhere."""
    rows = [r for site in SITES for r in _rows(exported[site] / "redcap_records.csv")]
    with trial_a.store.session() as s:
        n_pat = s.execute(select(func.count()).select_from(Patient).where(Patient.data_removed.is_(False))).scalar_one()
        n_lab = s.execute(select(func.count()).select_from(LabResult)).scalar_one()
        n_fu = s.execute(select(func.count()).select_from(FollowUp)).scalar_one()
    kinds = [r["redcap_repeat_instrument"] or "screening" for r in rows]
    assert (kinds.count("screening"), kinds.count("laboratory"), kinds.count("followup")) == (n_pat, n_lab, n_fu)
    assert not any("arm" in c for c in rows[0])


def _store(path: Path) -> TrialStore:
    st = TrialStore(f"sqlite:///{path}")
    st.initialise(simulation=True)  # the imports run on the test's clock
    for site in SITES:
        for stratum in ("MALS", "immunoparalysis"):
            seed = hashlib.sha256(f"b-{site}-{stratum}".encode()).hexdigest()  # a reproducible 256-bit test seed
            f = generate_allocation_list(site, stratum, 24, seed=seed, out_dir=path.parent / "lists")
            with st.session() as s:
                import_allocation_list(s, f.csv, actor=ADMIN, now=_t(0))
    return st


def test_round_trip_through_redcap_keeps_every_record(trial_a: BuiltTrial, exported: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A → REDCap files → B (baseline part; immunoguide randomises; follow-up part) → REDCap files: identical."""
    b = _store(tmp_path / "b.db")
    try:
        for site in SITES:
            d = exported[site]
            with b.session() as s:
                res = import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord(site),
                                    now=_t(9), part="baseline")
            assert res["imported"]["screening"] == sum(1 for r in _rows(d / "redcap_records.csv")
                                                       if not r["redcap_repeat_instrument"])
        for code, e in trial_a.patients.items():
            if not e.data_removed:
                with b.session() as s:
                    randomize(s, code, actor=coord(e.site), now=_t(RAND_H))
        for site in SITES:
            d = exported[site]
            with b.session() as s:
                import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord(site), now=LATE,
                              part="followup", late_entry_reason="transferred from the site's REDCap project")
        for site in SITES:
            with b.session() as s:
                export_redcap(s, tmp_path / "again" / site, actor=STATISTICIAN, now=LATE, site=site)
            assert ((tmp_path / "again" / site / "redcap_records.csv").read_text()
                    == (exported[site] / "redcap_records.csv").read_text())
        with b.session() as s:  # the strata (classification from the imported labs) are A's
            strata = dict(s.execute(select(Patient.code, Patient.stratum)).all())
        assert {c: e.stratum for c, e in trial_a.patients.items() if not e.data_removed} == {
            c: strata[c] for c, e in trial_a.patients.items() if not e.data_removed}
    finally:
        b.dispose()


def _bad_copy(src: Path, dest: Path, edits: list[tuple[int, str, str]]) -> Path:
    """The records CSV with cells replaced: (data row index, column, new value)."""
    rows = _rows(src)
    for i, col, value in edits:
        rows[i][col] = value
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


def test_bad_rows_are_reported_per_row_and_nothing_is_imported(exported: dict[str, Path], tmp_path: Path) -> None:
    """Three bad cells in three rows: each row is reported with its line and reason, and the store stays empty
    (no patient, no audit entry)."""
    d = exported["ATH"]
    rows = _rows(d / "redcap_records.csv")
    lab = next(i for i, r in enumerate(rows) if r["redcap_repeat_instrument"] == "laboratory")
    bad = _bad_copy(d / "redcap_records.csv", tmp_path / "bad.csv", [
        (0, "sofa_total", "nine"), (1 if rows[1]["redcap_repeat_instrument"] == "" else 0, "sex", "7"),
        (lab, "lab_sample_time", "")])
    b = _store(tmp_path / "b.db")
    try:
        with pytest.raises(RecordsRejected) as info, b.session() as s:
            import_redcap(s, bad, d / "redcap_dictionary.csv", actor=coord("ATH"), now=_t(9), part="baseline")
        rows_out = info.value.rows
        reasons = {r["row"]: " ".join(r["errors"]) for r in rows_out}
        assert "sofa_total: expected an integer, got 'nine'" in reasons[2]
        assert "lab_sample_time: required field is empty" in reasons[lab + 2]
        assert any("sex: expected a code among ['1', '2'], got '7'" in v for v in reasons.values())
        with b.session() as s:
            assert s.execute(select(func.count()).select_from(Patient)).scalar_one() == 0
            assert s.execute(select(func.count()).select_from(AuditRecord)
                             .where(AuditRecord.table_name == "patients")).scalar_one() == 0
    finally:
        b.dispose()


def test_a_row_the_trial_refuses_rolls_back_the_whole_import(exported: dict[str, Path], tmp_path: Path) -> None:
    """Valid cells but a follow-up part for patients never randomised in B: every record is reported and nothing
    is written, not even the records that went through before the first failure."""
    d = exported["ATH"]
    b = _store(tmp_path / "b.db")
    try:
        with b.session() as s:
            import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord("ATH"), now=_t(9),
                          part="baseline")
        with b.session() as s:
            before = s.execute(select(func.count()).select_from(AuditRecord)).scalar_one()
        with pytest.raises(RecordsRejected) as info, b.session() as s:
            import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord("ATH"), now=LATE,
                          part="followup")
        assert all("IG-E404" in r["errors"][0] for r in info.value.rows if r["instrument"] == "record")
        with b.session() as s:
            assert s.execute(select(func.count()).select_from(AuditRecord)).scalar_one() == before
            assert s.execute(select(func.count()).select_from(FollowUp)).scalar_one() == 0
    finally:
        b.dispose()


def test_a_project_without_the_mapped_fields_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    """A data dictionary lacking a mapped field (or with another type) is not imported from."""
    rows = _rows(exported["ATH"] / "redcap_dictionary.csv")
    rows = [r for r in rows if r["Variable / Field Name"] != "fu_sofa_total"]
    for r in rows:
        if r["Variable / Field Name"] == "sofa_total":
            r["Text Validation Type OR Show Slider Number"] = "number"
    dd = tmp_path / "dd.csv"
    with dd.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(DICTIONARY_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    b = _store(tmp_path / "b.db")
    try:
        with pytest.raises(InputError, match="fu_sofa_total: not in the project") as info, b.session() as s:
            import_redcap(s, exported["ATH"] / "redcap_records.csv", dd, actor=coord("ATH"), now=_t(9))
        assert "sofa_total: text/number instead of text/integer" in info.value.message
    finally:
        b.dispose()


def test_cli_import_reports_rows_on_stderr_and_exits_2(exported: dict[str, Path], tmp_path: Path) -> None:
    """`immunoguide redcap import` exits 2 with the refused rows in the JSON error; a clean file imports (exit 0)."""
    from immunoguide.cli import app

    b = _store(tmp_path / "b.db")
    b.dispose()
    d = exported["MIL"]
    bad = _bad_copy(d / "redcap_records.csv", tmp_path / "bad.csv", [(0, "consent_signed", "yesterday")])
    common = ["redcap", "--db", f"sqlite:///{tmp_path / 'b.db'}", "--user", "coord_MIL", "--role", "site_coordinator",
              "--site", "MIL", "--now", _t(9).isoformat(), "import"]
    r = CliRunner().invoke(app, [*common, str(bad), "--dictionary", str(d / "redcap_dictionary.csv"),
                                 "--part", "baseline"])
    assert r.exit_code == 2, r.output
    err = json.loads(r.stderr.strip().splitlines()[-1])["error"]
    assert err["code"] == "IG-E108" and err["rows"][0]["row"] == 2
    assert "consent_signed: expected a date-time" in err["rows"][0]["errors"][0]
    r = CliRunner().invoke(app, [*common, str(d / "redcap_records.csv"), "--dictionary",
                                 str(d / "redcap_dictionary.csv"), "--part", "baseline"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["imported"]["screening"] >= 1
