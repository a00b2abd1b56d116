"""Export of the whole trial for statisticians (Parquet, CSV, data dictionary; blinded by role) and backup →
restore round trips between SQLite and PostgreSQL."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import trial_app
from immunoguide.errors import NotAuthorized, StoreError
from immunoguide.trial import (
    TrialStore,
    backup_store,
    export_trial,
    record_adverse_event,
    record_followup,
    restore_store,
    verify_audit,
    withdraw,
)
from immunoguide.trial.audit import row_image
from immunoguide.trial.export import DATA_DICTIONARY
from immunoguide.trial.models import AUDITED_TABLES, AuditRecord, StoreConfig
from trial_helpers import ADMIN, COORD, DSMB, INVESTIGATOR, STATISTICIAN, h, make_lists, randomised


def _fill(st: TrialStore, lists: Path) -> None:
    make_lists(st, lists, strata=("MALS",), n=10)
    randomised(st, "P1")
    randomised(st, "P2")
    randomised(st, "P3")
    with st.session() as s:
        record_followup(s, "P1", 1, actor=COORD, now=h(34), sofa_total=7)
        record_adverse_event(s, "P1", term="Anemia", onset_at=h(30), grade=2, serious=True, relatedness="possible",
                             outcome="recovered", actor=COORD, now=h(31))
        withdraw(s, "P3", "asked for removal of all data", actor=INVESTIGATOR, now=h(40), remove_data=True)


@pytest.fixture
def store(store_url: str, tmp_path: Path):
    st = TrialStore(store_url)
    _fill(st, tmp_path / "lists")
    yield st
    st.dispose()


def _snapshot(st: TrialStore) -> dict[str, list[dict]]:
    with st.session() as s:
        out = {m.__tablename__: [row_image(o) for o in s.execute(select(m).order_by(m.id)).scalars()]
               for m in (*AUDITED_TABLES, StoreConfig)}
        out["audit_log"] = [row_image(o) for o in s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars()]
    return out


def test_blinded_export_has_no_arm_and_the_dsmb_export_has_it(store: TrialStore, tmp_path: Path) -> None:
    """The statistician's export omits allocation arms and kit contents; the DSMB's export includes them."""
    with store.session() as s:
        blind = export_trial(s, tmp_path / "stat", actor=STATISTICIAN, now=h(50))
        unblind = export_trial(s, tmp_path / "dsmb", actor=DSMB, now=h(50), formats=("csv",))
    assert blind["blinded"] is True and unblind["blinded"] is False
    slots_b = pd.read_parquet(tmp_path / "stat" / "allocation_slots.parquet")
    kits_b = pd.read_csv(tmp_path / "stat" / "kits.csv")
    assert "arm" not in slots_b.columns and "regimen" not in kits_b.columns
    slots_u = pd.read_csv(tmp_path / "dsmb" / "allocation_slots.csv")
    taken = slots_u[slots_u["patient_id"].notna()]
    assert set(taken["arm"]) <= {"mals_anakinra", "mals_placebo"} and taken["arm"].notna().all()
    assert slots_u[slots_u["patient_id"].isna()]["arm"].isna().all()  # future slots stay concealed, even here
    assert set(pd.read_csv(tmp_path / "dsmb" / "kits.csv")["regimen"]) <= {
        "anakinra_iv", "placebo_iv", "ifng_sc", "placebo_sc"}
    for d in ("stat", "dsmb"):  # neither export carries commitments, MACs, blocks or the audit trail
        cols = set(pd.read_csv(tmp_path / d / "allocation_slots.csv").columns)
        assert not cols & {"arm_mac", "block", "block_size"}
        assert "list_mac" not in pd.read_csv(tmp_path / d / "allocation_lists.csv").columns
        assert not (tmp_path / d / "audit_log.csv").exists()


def test_export_refused_to_site_staff(store: TrialStore, tmp_path: Path) -> None:
    """Site coordinators do not export the trial."""
    with store.session() as s, pytest.raises(NotAuthorized):
        export_trial(s, tmp_path, actor=COORD, now=h(50))


def test_every_exported_column_is_in_the_data_dictionary(store: TrialStore, tmp_path: Path) -> None:
    """The dictionary lists each column of each exported file with its type, unit and description."""
    with store.session() as s:
        export_trial(s, tmp_path, actor=DSMB, now=h(50))
    dictionary = pd.read_csv(tmp_path / "data_dictionary.csv")
    described = set(zip(dictionary["table"], dictionary["column"], strict=True))
    for model in AUDITED_TABLES:
        t = model.__tablename__
        for fmt in ("csv", "parquet"):
            df = pd.read_csv(tmp_path / f"{t}.csv") if fmt == "csv" else pd.read_parquet(tmp_path / f"{t}.parquet")
            assert {(t, c) for c in df.columns} <= described, (t, fmt)
    assert set(DATA_DICTIONARY) == {m.__tablename__ for m in AUDITED_TABLES}
    assert all(dictionary["description"].notna())
    sofa = dictionary[(dictionary["table"] == "followups") & (dictionary["column"] == "sofa_total")].iloc[0]
    assert sofa["unit"] == "points (0-24)" and bool(dictionary[dictionary["column"] == "arm"]["blinded"].iloc[0])


def test_export_carries_the_data_and_consort(store: TrialStore, tmp_path: Path) -> None:
    """Rows per table match the store; times are UTC; CONSORT shows the data-removal withdrawal."""
    with store.session() as s:
        manifest = export_trial(s, tmp_path, actor=STATISTICIAN, now=h(50))
    follow = pd.read_parquet(tmp_path / "followups.parquet")
    assert manifest["rows"]["followups"] == 1 and follow["sofa_total"].tolist() == [7]
    assert str(follow["assessed_at"].dt.tz) == "UTC" and follow["patient_code"].tolist() == ["P1"]
    consort = json.loads((tmp_path / "consort.json").read_text())
    assert consort["randomised"] == 3 and consort["withdrawn_with_data_removal"] == 1 and consort["analysed"] == 2


@pytest.mark.parametrize("target", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def test_backup_restore_round_trip(store: TrialStore, target: str, tmp_path: Path, sqlite_template: Path,
                                   request: pytest.FixtureRequest) -> None:
    """A backup restored into an empty store — same or other backend — gives identical rows, a verifying audit
    chain and one more entry recording the restore."""
    backup = tmp_path / "backup.zip"
    info = backup_store(store, backup, actor=ADMIN, now=h(60))
    url = f"sqlite:///{tmp_path / 'restored.db'}" if target == "sqlite" else request.getfixturevalue("pg_blank_databases")()
    dst = TrialStore(url)
    dst.upgrade()  # migrated, not initialised: the configuration comes from the backup
    try:
        res = restore_store(dst, backup, actor=ADMIN, now=h(61))
        assert res["verified"] and res["restored"] == info["tables"]
        assert res["restored"]["store_config"] == 1
        src, out = _snapshot(store), _snapshot(dst)
        assert out["audit_log"][:-1] == src["audit_log"] and out["audit_log"][-1]["action"] == "restore"
        assert {k: v for k, v in out.items() if k != "audit_log"} == {k: v for k, v in src.items() if k != "audit_log"}
        with dst.session() as s:
            assert verify_audit(s).ok
        randomised(dst, "P4")  # the restored store keeps working (sequences moved past the restored ids)
        with pytest.raises(StoreError, match="empty"):
            restore_store(dst, backup, actor=ADMIN, now=h(62))
    finally:
        dst.dispose()


def test_edited_backup_is_refused(store: TrialStore, tmp_path: Path, sqlite_template: Path) -> None:
    """A backup whose table file was edited no longer matches its manifest checksum and is refused."""
    backup = tmp_path / "backup.zip"
    backup_store(store, backup, actor=ADMIN, now=h(60))
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(backup) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "tables/followups.jsonl":
                data = data.replace(b'"sofa_total":7', b'"sofa_total":3')
            dst.writestr(item, data)
    dst_store = TrialStore(f"sqlite:///{tmp_path / 'restored.db'}")
    dst_store.upgrade()
    try:
        with pytest.raises(StoreError, match="followups"):
            restore_store(dst_store, edited, actor=ADMIN, now=h(61))
    finally:
        dst_store.dispose()


def test_backup_and_restore_commands(store: TrialStore, tmp_path: Path, sqlite_template: Path) -> None:
    """`immunoguide trial backup` / `restore` (administrator) round-trip through the CLI."""
    runner = CliRunner()
    backup = tmp_path / "b.zip"
    common = ["--db", store.url, "--user", "admin", "--role", "administrator", "--now", h(60).isoformat()]
    res = runner.invoke(trial_app, [*common, "backup", "--out", str(backup)])
    assert res.exit_code == 0, res.output
    db = tmp_path / "r.db"  # a new database: `restore` migrates it, the backup brings configuration and accounts
    res = runner.invoke(trial_app, ["--db", f"sqlite:///{db}", "--user", "admin", "--now", h(61).isoformat(),
                                    "restore", str(backup)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verified"] is True
    denied = runner.invoke(trial_app, ["--db", store.url, "--user", "x", "--role", "statistician", "backup", "--out",
                                       str(tmp_path / "c.zip")])
    assert denied.exit_code == 4 and json.loads(denied.stderr)["error"]["code"] == "IG-E408"
