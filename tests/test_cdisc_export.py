"""CDISC exports: ADaM (ADSL, ADEFF, ADAE, ADTTE) and SDTM (DM, AE, LB, EX, DS) as SAS transport v5 and CSV.

The trial is the report tests' seeded trial (``report_trial_builder``: daily SOFA with gaps, deaths, withdrawals,
adverse events, serial labs), built through the public workflow. The XPT files are read back with two independent
readers (pyreadstat/ReadStat and pandas' own XPORT reader), and the primary endpoint is recomputed from ADEFF's
daily SOFA rows alone (baseline day 1; mean of days 2-9; responder if baseline - mean > 1.4; not evaluable =
non-responder) and compared with the statistical report's numbers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat
import pytest
from typer.testing import CliRunner

from immunoguide.analysis.cdisc import DATASETS, VARIABLES, write_cdisc
from immunoguide.analysis.report import build_report
from immunoguide.protocols import load_protocol
from report_trial_builder import DSMB, LATE, STATISTICIAN, BuiltTrial, build_trial

ADAM = ("adsl", "adeff", "adae", "adtte")
SDTM = ("dm", "ae", "lb", "ex", "ds")
PROTOCOL = load_protocol("immunosep-2025")
ARM_STRINGS = [a.code for a in PROTOCOL.arms] + [a.label for a in PROTOCOL.arms] + ["anakinra", "ANAKINRA",
                                                                                  "IFN", "interferon"]


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("cdisc_trial")
    built = build_trial(f"sqlite:///{d / 'trial.db'}", d / "lists", n_randomised=20)
    yield built
    built.store.dispose()


@pytest.fixture(scope="module")
def out(trial: BuiltTrial, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ADaM and SDTM, unblinded (DSMB) and blinded (statistician), plus both reports."""
    root = tmp_path_factory.mktemp("cdisc")
    for who, actor in (("dsmb", DSMB), ("stat", STATISTICIAN)):
        for standard in ("adam", "sdtm"):
            with trial.store.session() as s:
                write_cdisc(s, root / f"{standard}_{who}", standard=standard, actor=actor, now=LATE)  # type: ignore[arg-type]
    build_report(trial.store, root / "report_dsmb", blinded=False, actor=DSMB, now=LATE)
    build_report(trial.store, root / "report_blinded", blinded=True, actor=STATISTICIAN, now=LATE)
    return root


def _xpt(path: Path) -> tuple[pd.DataFrame, Any]:
    return pyreadstat.read_xport(str(path))


def _summary(out: Path, kind: str) -> dict[str, Any]:
    name = "report_dsmb_summary.json" if kind == "dsmb" else "report_summary.json"
    return json.loads((out / f"report_{'dsmb' if kind == 'dsmb' else 'blinded'}" / name).read_text())


@pytest.mark.parametrize("standard,names", [("adam", ADAM), ("sdtm", SDTM)])
def test_every_dataset_opens_with_two_xpt_readers_and_matches_its_csv(out: Path, standard: str,
                                                                      names: tuple[str, ...]) -> None:
    """Each XPT v5 file opens with ReadStat (pyreadstat) and with pandas' XPORT reader; names, labels and values
    agree with the CSV copy and the define metadata."""
    for who in ("dsmb", "stat"):
        d = out / f"{standard}_{who}"
        for name in names:
            df, meta = _xpt(d / f"{name}.xpt")
            assert meta.table_name == name.upper()
            assert meta.file_label == DATASETS[name.upper()][0][:40]
            assert dict(zip(meta.column_names, meta.column_labels, strict=True)) == {
                c: VARIABLES[name.upper()][c].label for c in meta.column_names}
            other = pd.read_sas(d / f"{name}.xpt", format="xport", encoding="utf-8")
            assert list(other.columns) == list(df.columns) and len(other) == len(df)
            csv = pd.read_csv(d / f"{name}.csv", keep_default_na=False, dtype=str)
            assert list(csv.columns) == list(df.columns) and len(csv) == len(df)
            for c in df.columns:
                if VARIABLES[name.upper()][c].type == "Char":
                    assert df[c].fillna("").tolist() == csv[c].tolist(), f"{name}.{c}"
        define = json.loads((d / "define.json").read_text())
        assert {x["dataset"] for x in define["datasets"]} == {n.upper() for n in names}
        assert define["manifest"]["blinded"] is (who == "stat")


def _recompute_primary(adeff: pd.DataFrame, group_col: str | None) -> dict[str, tuple[int, int]]:
    """Responders / analysed per group from ADEFF's daily SOFA rows only."""
    analysed = adeff[(adeff["PARAMCD"] == "RESP9") & (adeff["ANL01FL"] == "Y")]
    daily = adeff[adeff["PARAMCD"] == "SOFA"]
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _, subj in analysed.iterrows():
        key = subj[group_col] if group_col else "all"
        out[key][1] += 1
        rows = daily[daily["USUBJID"] == subj["USUBJID"]].set_index("AVISITN")
        base = rows[rows["ABLFL"] == "Y"]["AVAL"]
        window = [rows["AVAL"].get(float(d)) for d in range(2, 10)]
        if base.empty or any(v is None or pd.isna(v) for v in window):
            continue  # not evaluable: counted as a non-responder (report policy)
        # compare 8 * baseline - sum > 8 * 1.4 exactly (integer SOFA values)
        if 8 * float(base.iloc[0]) - sum(float(v) for v in window) > 8 * 1.4:  # type: ignore[arg-type]
            out[key][0] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_primary_endpoint_recomputed_from_adeff_equals_the_dsmb_report(out: Path) -> None:
    """Per treatment group, responders and analysed subjects recomputed from ADEFF equal the unblinded report."""
    adeff, _ = _xpt(out / "adam_dsmb" / "adeff.xpt")
    got = _recompute_primary(adeff, "TRTGRP")
    primary = _summary(out, "dsmb")["primary"]
    labels = {"precision": "Precision immunotherapy", "placebo": "Placebo"}
    assert {g: (primary["responders"][g], primary["n"][g]) for g in labels} == {
        g: got[label] for g, label in labels.items()}


def test_primary_endpoint_recomputed_from_blinded_adeff_equals_the_blinded_report(out: Path) -> None:
    """Pooled responders / analysed from the blinded ADEFF equal the blinded report's primary endpoint."""
    adeff, _ = _xpt(out / "adam_stat" / "adeff.xpt")
    primary = _summary(out, "blinded")["primary"]
    assert _recompute_primary(adeff, None) == {"all": (primary["responders"]["all"], primary["n"]["all"])}


def test_adeff_responder_records_agree_with_their_own_daily_rows(out: Path) -> None:
    """RESP9 = 1 exactly when the subject's SOFAM9 mean is more than 1.4 below BASE; SOFAM9 is the mean of the
    eight daily values of days 2-9."""
    adeff, _ = _xpt(out / "adam_dsmb" / "adeff.xpt")
    for usubjid, rows in adeff.groupby("USUBJID"):
        resp = rows[rows["PARAMCD"] == "RESP9"].iloc[0]
        mean = rows[rows["PARAMCD"] == "SOFAM9"]
        if resp["EVALFL"] == "N":
            assert mean.empty and resp["AVAL"] == 0 and resp["NEREAS"]
            continue
        days = rows[(rows["PARAMCD"] == "SOFA") & rows["AVISITN"].between(2, 9)]
        assert len(days) == 8, usubjid
        assert mean.iloc[0]["AVAL"] == pytest.approx(days["AVAL"].mean())
        assert resp["AVAL"] == float(resp["BASE"] - mean.iloc[0]["AVAL"] > 1.4)


def test_imputed_days_are_flagged_as_the_report_counts_them(out: Path) -> None:
    """DTYPE LOCF / DEATH24 on days 2-9 of evaluable subjects match the report's imputation counts."""
    adeff, _ = _xpt(out / "adam_dsmb" / "adeff.xpt")
    evaluable = set(adeff[(adeff["PARAMCD"] == "RESP9") & (adeff["EVALFL"] == "Y")]["USUBJID"])
    days = adeff[(adeff["PARAMCD"] == "SOFA") & adeff["AVISITN"].between(2, 9) & adeff["USUBJID"].isin(evaluable)]
    counts = days["DTYPE"].replace("", "measured").value_counts().to_dict()
    want = _summary(out, "dsmb")["primary_day_values"]
    assert {"measured": counts.get("measured", 0), "locf": counts.get("LOCF", 0),
            "death_24": counts.get("DEATH24", 0)} == want
    assert want["locf"] > 0 and want["death_24"] > 0  # the seeded trial exercises both imputations
    locf = days[days["DTYPE"] == "LOCF"]
    assert (locf["SRCDY"] < locf["AVISITN"]).all()


def test_blinded_exports_carry_no_arm(out: Path) -> None:
    """The statistician's ADaM and SDTM files have no arm variable and no arm code, label or drug name."""
    for standard, names in (("adam", ADAM), ("sdtm", SDTM)):
        d = out / f"{standard}_stat"
        for name in names:
            df, _ = _xpt(d / f"{name}.xpt")
            assert not {"ARM", "ARMCD", "TRT01P", "TRTP", "TRTGRP", "ACTARM", "ACTARMCD"} & set(df.columns), name
            text = (d / f"{name}.csv").read_text()
            assert not [s for s in ARM_STRINGS if s in text], name
    ex, _ = _xpt(out / "sdtm_stat" / "ex.xpt")
    assert set(ex["EXTRT"]) <= {"IV STUDY DRUG", "SC STUDY DRUG"}
    ex_dsmb, _ = _xpt(out / "sdtm_dsmb" / "ex.xpt")
    assert "ANAKINRA" in set(ex_dsmb["EXTRT"])


def test_adsl_has_one_row_per_analysed_subject_with_flags(out: Path, trial: BuiltTrial) -> None:
    """ADSL: one row per randomised subject still in the data (the withdrawal with data removal is gone), the
    stratum, baseline SOFA and the evaluability flag."""
    adsl, _ = _xpt(out / "adam_dsmb" / "adsl.xpt")
    kept = sorted(c for c, e in trial.patients.items() if not e.data_removed)
    assert sorted(adsl["SUBJID"]) == kept and adsl["USUBJID"].is_unique
    assert set(adsl["STRAT1R"]) == {"MALS", "immunoparalysis"}
    for _, r in adsl.iterrows():
        e = trial.patients[r["SUBJID"]]
        assert (r["EFFFL"] == "Y") == (1 in e.sofa)
        assert (pd.isna(r["BSOFA"]) and 1 not in e.sofa) or r["BSOFA"] == e.sofa.get(1)
        assert (r["DTHFL"] == "Y") == (not pd.isna(r["DTHDY"]))
        assert pd.isna(r["DTHDY"]) or e.death_day is not None


def test_sdtm_domains_hold_every_record_of_the_export(out: Path, trial: BuiltTrial) -> None:
    """DM has every screened patient still in the data, DS one RANDOMIZED record per randomised one, AE and LB
    every adverse event and laboratory result, EX every dose."""
    dm, _ = _xpt(out / "sdtm_dsmb" / "dm.xpt")
    ds, _ = _xpt(out / "sdtm_dsmb" / "ds.xpt")
    removed = {c for c, e in trial.patients.items() if e.data_removed}
    assert len(dm) == trial.screened - len(removed)
    assert (ds["DSDECOD"] == "RANDOMIZED").sum() == len(trial.patients) - len(removed)
    assert (ds["DSDECOD"] == "SCREEN FAILURE").sum() == trial.screen_failures
    assert set(dm.loc[dm["ARMCD"] == "SCRNFAIL", "SUBJID"]) <= {f"SF{i:02d}" for i in range(6)}
    with trial.store.session() as s:
        from sqlalchemy import func, select

        from immunoguide.trial.models import AdverseEvent, DoseAdministration, LabResult

        n_ae = s.execute(select(func.count()).select_from(AdverseEvent)).scalar_one()
        n_lab = s.execute(select(func.count()).select_from(LabResult)).scalar_one()
        n_dose = s.execute(select(func.count()).select_from(DoseAdministration)).scalar_one()
    for name, n in (("ae", n_ae), ("lb", n_lab), ("ex", n_dose)):
        df, _ = _xpt(out / "sdtm_dsmb" / f"{name}.xpt")
        assert len(df) == n, name
    lb, _ = _xpt(out / "sdtm_dsmb" / "lb.xpt")
    assert set(lb["LBTESTCD"]) == {"FERRITIN", "HLADR"}
    assert set(lb.loc[lb["LBTESTCD"] == "HLADR", "LBMETHOD"]) == {"quantibrite_abc"}


def test_cli_trial_export_writes_adam_and_sdtm(trial: BuiltTrial, tmp_path: Path) -> None:
    """`immunoguide trial export --format adam|sdtm` writes the XPT and CSV files and the define metadata."""
    from immunoguide.cli._trial import trial_app

    url = str(trial.store.engine.url)
    for fmt, names in (("adam", ADAM), ("sdtm", SDTM)):
        r = CliRunner().invoke(trial_app, ["--db", url, "--user", "stat", "--role", "statistician",
                                           "--now", LATE.isoformat(), "export", "--format", fmt,
                                           "--out", str(tmp_path / fmt)])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["blinded"] is True
        for n in names:
            assert (tmp_path / fmt / f"{n}.xpt").is_file() and (tmp_path / fmt / f"{n}.csv").is_file()
        assert (tmp_path / fmt / "define.csv").is_file()
    r = CliRunner().invoke(trial_app, ["--db", url, "--user", "c", "--role", "site_coordinator", "--site", "ATH",
                                       "--now", LATE.isoformat(), "export", "--format", "adam",
                                       "--out", str(tmp_path / "no")])
    assert r.exit_code == 4 and "IG-E408" in r.stderr
