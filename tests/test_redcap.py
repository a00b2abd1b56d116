"""REDCap in and out: data dictionary + records export, import in one transaction, a round trip that keeps every
record, and bad rows reported per row with nothing imported.

Trial A is the report tests' seeded trial (screen failures, consent refusal, classification labs, randomised
patients with daily SOFA, deaths, day-15 infection, day-28/90 vital status, serial labs, a withdrawal). Each site's
REDCap files are exported from A, imported into a fresh store B the way a site would work — baseline part, then
immunoguide randomises, then the follow-up part — and exported again: the records files are identical.

A and B are simulation stores (their clinical times lie in 2025, on the tests' fixed clock). The follow-up part is
imported 120 days after the trial started, so every follow-up day is a late entry: it needs a reason, which the
audit trail keeps. On a real store the import runs as an authenticated account at the system time
(:func:`test_on_a_real_store_the_import_is_the_accounts_at_the_system_time`).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from immunoguide.errors import InputError, RecordsRejected
from immunoguide.service.auth import UserStore
from immunoguide.trial import TrialStore, generate_allocation_list, import_allocation_list, randomize, verify_audit
from immunoguide.trial.access import Actor
from immunoguide.trial.models import AuditRecord, FollowUp, LabResult, Patient
from immunoguide.trial.redcap import DICTIONARY_COLUMNS, export_redcap, import_redcap, load_mapping, write_dictionary
from report_trial_builder import ADMIN, LATE, RAND_H, SITES, STATISTICIAN, BuiltTrial, _t, build_trial
from trial_helpers import hex_seed

#: The data manager's reason for entering follow-up days late (they were transcribed from REDCap).
LATE_REASON = "transcribed from the site's REDCap project"


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
    """Store B: a simulation store (A's times are in 2025) with the lists of both sites."""
    st = TrialStore(f"sqlite:///{path}")
    st.initialise(simulation=True)
    for site in SITES:
        for stratum in ("MALS", "immunoparalysis"):
            f = generate_allocation_list(site, stratum, 24, seed=hex_seed(f"b-{site}-{stratum}"),
                                         out_dir=path.parent / "lists")
            with st.session() as s:
                import_allocation_list(s, f.csv, actor=ADMIN, now=_t(0))
    return st


def test_round_trip_through_redcap_keeps_every_record(trial_a: BuiltTrial, exported: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A → REDCap files → B (baseline part; immunoguide randomises; follow-up part, late with a reason) → REDCap
    files: identical. Every entry names the REDCap file it came from; the late follow-up days carry the reason."""
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
                res = import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord(site),
                                    now=LATE, part="followup", late_entry_reason=LATE_REASON)
            assert res["source"]["file"] == "redcap_records.csv" and len(res["source"]["sha256"]) == 64
        with b.session() as s:
            reasons = {t: set(s.execute(select(AuditRecord.reason).where(AuditRecord.table_name == t,
                                                                      AuditRecord.action == "insert")).scalars())
                       for t in ("patients", "followups")}
            assert all(r.startswith("imported from REDCap: redcap_records.csv (sha256 ") for r in reasons["patients"])
            assert all(r.startswith("late entry (") and LATE_REASON in r and "imported from REDCap" in r
                       for r in reasons["followups"])
            assert verify_audit(s).ok
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
        refused = [r for r in info.value.rows if r["instrument"] == "followup"]
        assert refused and all("IG-E404" in r["errors"][0] for r in refused)
        with b.session() as s:
            assert s.execute(select(func.count()).select_from(AuditRecord)).scalar_one() == before
            assert s.execute(select(func.count()).select_from(FollowUp)).scalar_one() == 0
    finally:
        b.dispose()


def test_late_follow_up_days_need_a_reason_and_every_late_row_is_reported(trial_a: BuiltTrial,
                                                                          exported: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """REDCap's follow-up times are clinical times: imported 120 days later without --late-reason, every follow-up
    row is refused with IG-E419 (with its line and instance, not only the first of each record) and nothing is
    written; a reason too short to explain anything is refused the same way."""
    d = exported["ATH"]
    b = _store(tmp_path / "b.db")
    try:
        with b.session() as s:
            import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord("ATH"), now=_t(9),
                          part="baseline")
        for code, e in trial_a.patients.items():
            if e.site == "ATH" and not e.data_removed:
                with b.session() as s:
                    randomize(s, code, actor=coord("ATH"), now=_t(RAND_H))
        with b.session() as s:
            before = s.execute(select(func.count()).select_from(AuditRecord)).scalar_one()
        fu_lines = {i + 2 for i, r in enumerate(_rows(d / "redcap_records.csv"))
                    if r["redcap_repeat_instrument"] == "followup"}
        assert len(fu_lines) > 10
        for reason in (None, "late"):
            with pytest.raises(RecordsRejected) as info, b.session() as s:
                import_redcap(s, d / "redcap_records.csv", d / "redcap_dictionary.csv", actor=coord("ATH"),
                              now=LATE, part="followup", late_entry_reason=reason)
            rows = info.value.rows
            assert {r["row"] for r in rows} == fu_lines
            assert all(r["instrument"] == "followup" and r["instance"] >= 1 for r in rows)
            assert all("IG-E419" in r["errors"][0] and "late entry" in r["errors"][0] for r in rows)
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


def _records_now(path: Path, records: dict[str, str]) -> Path:
    """A REDCap records CSV with one screened patient per ``code → site``, its onset 9 h, consent 3 h and an
    immunoparalysis lab pair 2 h before now (REDCap's date-times: whole seconds, the project's time zone, UTC)."""
    now = datetime.now(UTC).replace(microsecond=0)
    ago = lambda h: (now - timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    m = load_mapping()
    columns = [m.record_id, "redcap_repeat_instrument", "redcap_repeat_instance"] + [
        f.name for f in m.fields if f.name != m.record_id] + ["screening_complete", "laboratory_complete"]
    rows: list[dict[str, str]] = []
    for code, site in records.items():
        rows.append({m.record_id: code, "site": site, "age_years": "71", "sex": "1", "infection_source": "1",
                     "covid19": "0", "admission_source": "1", "sofa_total": "9", "sepsis3_onset": ago(9),
                     "stage_iv_malignancy": "0", "dnr_order": "0", "anc_per_mm3": "6100", "consent_by": "1",
                     "consent_signed": ago(3), "screening_complete": "2"})
        for i, (analyte, value, unit, method) in enumerate((("1", "880", "ng/mL", ""),
                                                            ("2", "3100", "AB/c", "QuantiBRITE")), start=1):
            rows.append({m.record_id: code, "redcap_repeat_instrument": "laboratory", "redcap_repeat_instance": str(i),
                         "lab_phase": "1", "lab_analyte": analyte, "lab_value": value, "lab_unit": unit,
                         "lab_method": method, "lab_sample_time": ago(2), "laboratory_complete": "2"})
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in columns} for r in rows)
    return path


def test_on_a_real_store_the_import_is_the_accounts_at_the_system_time(tmp_path: Path) -> None:
    """On a real store `immunoguide redcap import` acts as the logged-in account: --role/--site and --now are
    refused, no credential is not authenticated, a record of another site than the account's is refused (nothing
    imported), and the imported entries are the account's, at the system time, naming the REDCap file."""
    from immunoguide.cli import app

    url = f"sqlite:///{tmp_path / 'real.db'}"
    st = TrialStore(url)
    assert st.initialise()["mode"] == "real"
    users = UserStore(st)
    users.create_user("rivera", "a-long-test-password", "site_coordinator", "ATH")
    token, _ = users.login("rivera", "a-long-test-password", now=datetime.now(UTC))
    dd = write_dictionary(tmp_path / "redcap_dictionary.csv")
    both = _records_now(tmp_path / "both.csv", {"R001": "ATH", "R002": "MIL"})
    ath = _records_now(tmp_path / "ath.csv", {"R001": "ATH"})

    def run(*args: str, env: dict[str, str] | None = None, code: int = 0) -> Any:
        r = CliRunner().invoke(app, ["redcap", "--db", url, *args[:-1], "import", args[-1], "--dictionary", str(dd),
                                     "--part", "baseline"], env={"IMMUNOGUIDE_TOKEN": token} if env is None else env)
        assert r.exit_code == code, r.output
        return json.loads(r.stdout) if code == 0 else json.loads(r.stderr.strip().splitlines()[-1])["error"]

    assert run("--role", "site_coordinator", "--site", "ATH", str(ath), code=4)["code"] == "IG-E408"
    assert run("--now", datetime.now(UTC).isoformat(), str(ath), code=4)["code"] == "IG-E419"
    assert run("--user", "rivera", "--role", "site_coordinator", "--site", "ATH", str(ath), env={},
               code=4)["code"] == "IG-E408"
    assert run(str(ath), env={}, code=4)["code"] == "IG-E418"
    err = run(str(both), code=2)
    assert err["code"] == "IG-E108"
    assert [(r["record"], r["instrument"]) for r in err["rows"]] == [("R002", "screening")]
    assert "IG-E408" in err["rows"][0]["errors"][0]
    with st.session() as s:
        assert s.execute(select(func.count()).select_from(Patient)).scalar_one() == 0
    out = run(str(ath))
    assert (out["imported_by"], out["role"], out["imported"]["screening"]) == ("rivera", "site_coordinator", 1)
    with st.session() as s:
        entries = s.execute(select(AuditRecord).where(AuditRecord.patient_id.is_not(None))).scalars().all()
        assert entries and {(e.actor, e.role) for e in entries} == {("rivera", "site_coordinator")}
        assert all(e.reason.startswith("imported from REDCap: ath.csv (sha256 ") for e in entries)
        for e in entries:
            at, sys_at = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (e.at, e.system_at))
            assert abs((at - sys_at).total_seconds()) < 300
        assert s.execute(select(Patient.stratum)).scalar_one() == "immunoparalysis"
        assert verify_audit(s).ok
    st.dispose()
