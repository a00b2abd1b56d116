"""The `immunoguide trial` and `immunoguide audit` commands, end to end over a store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import EXIT_INTEGRITY, audit_app, trial_app
from immunoguide.trial.store import HEAD_REVISION
from trial_helpers import h, labs, screening_record


def _run(url: str, who: tuple[str, str, str | None], now: float, *args: str, code: int = 0) -> dict | list:
    user, role, site = who
    base = ["--db", url, "--user", user, "--role", role, "--now", h(now).isoformat()]
    if site:
        base += ["--site", site]
    res = CliRunner().invoke(trial_app, [*base, *args])
    assert res.exit_code == code, f"{args}: {res.output}"
    return json.loads(res.stdout) if code == 0 else json.loads(res.stderr.strip().splitlines()[-1])


COORD = ("rivera", "site_coordinator", "ATH")
INV = ("dr_kotsaki", "investigator", "ATH")
PHARM = ("pharm", "unblinded_pharmacist", "ATH")
ADMIN = ("admin", "administrator", None)
DSMB = ("chair", "dsmb", None)
STAT = ("stat", "statistician", None)


def test_a_patient_goes_through_the_whole_workflow_by_command(store_url: str, tmp_path: Path) -> None:
    """init → allocation generate/import/verify → screen → consent → classify-lab → randomize → kits → dose →
    followup → ae → unblind → withdraw → consort → export → audit verify, each a thin command."""
    runner = CliRunner()
    assert runner.invoke(trial_app, ["--db", store_url, "init"]).exit_code == 0
    lists = tmp_path / "lists"
    gen = runner.invoke(trial_app, ["allocation", "generate", "--site", "ATH", "--stratum", "MALS", "-n", "8",
                                    "--out", str(lists)])
    assert gen.exit_code == 0, gen.output
    csv_path = json.loads(gen.stdout)["csv"]
    _run(store_url, ADMIN, 0, "allocation", "import", csv_path)
    verify = _run(store_url, ADMIN, 0, "allocation", "verify", "--lists", str(lists))
    assert verify["ok"] is True
    rec = tmp_path / "p1.json"
    rec.write_text(json.dumps(screening_record()))
    assert _run(store_url, COORD, 1, "screen", "P1", "--record", f"@{rec}")["eligible"] is None
    _run(store_url, COORD, 2, "consent", "P1", "--by", "spouse", "--signed-at", h(2).isoformat())
    cl = _run(store_url, COORD, 8, "classify-lab", "P1", "--labs", json.dumps(labs("MALS")))
    assert cl["stratum"] == "MALS"
    r = _run(store_url, COORD, 9, "randomize", "P1", "--stratum", "MALS")
    assert r["randomisation_number"] == "ATH-MALS-0001" and "arm" not in r
    assert "regimen" not in _run(store_url, COORD, 9, "kits", "P1")["kits"][0]
    assert _run(store_url, PHARM, 9, "kits", "P1")["kits"][0]["regimen"] in ("anakinra_iv", "placebo_iv")
    dose = _run(store_url, COORD, 10, "dose", "P1", "--kit", "IV", "--given-at", h(10).isoformat())
    assert dose["recorded"]["number"] == 1
    assert _run(store_url, COORD, 30, "dose", "P1")["counts"]["missed"] == 3  # IV doses 2 and 3, SC dose 1
    fu = _run(store_url, COORD, 34, "followup", "P1", "--day", "1", "--sofa-total", "8")
    assert fu["days"][0]["sofa_total"] == 8
    ae = _run(store_url, COORD, 31, "ae", "record", "P1", "--term", "Anemia", "--onset", h(30).isoformat(),
              "--grade", "3", "--serious", "yes", "--relatedness", "possible", "--outcome", "recovering")
    assert ae["sae_clocks"]["initial"]["status"] == "pending"
    _run(store_url, COORD, 40, "ae", "report", "P1", "--ae", str(ae["id"]), "--kind", "initial",
         "--reported-at", h(40).isoformat())
    assert _run(store_url, COORD, 41, "ae", "list", "P1")[0]["sae_clocks"]["initial"]["status"] == "on_time"
    assert _run(store_url, COORD, 41, "ae", "signals", code=4)["error"]["code"] == "IG-E408"
    assert _run(store_url, DSMB, 41, "ae", "signals")["signals"][0]["id"] == "anemia_on_anakinra"
    un = _run(store_url, INV, 42, "unblind", "P1", "--reason", "uncontrolled bleeding")
    assert un["arm"] in ("mals_anakinra", "mals_placebo")
    assert _run(store_url, INV, 42, "show", "P1")["randomisation"]["arm"] == un["arm"]
    _run(store_url, COORD, 50, "withdraw", "P1", "--reason", "asked for removal", "--remove-data")
    consort = _run(store_url, STAT, 51, "consort")
    assert consort["randomised"] == 1 and consort["analysed"] == 0
    assert _run(store_url, COORD, 51, "screening-log")[0]["status"] == "withdrawn"
    out = _run(store_url, STAT, 52, "export", "--out", str(tmp_path / "export"), "--format", "csv")
    assert out["blinded"] is True and (tmp_path / "export" / "data_dictionary.csv").exists()
    res = runner.invoke(audit_app, ["verify", "--db", store_url])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True


def test_allocation_verify_exits_5_when_a_list_file_was_changed(store_url: str, tmp_path: Path) -> None:
    """The start-up check reports IG-RAND-E002 and exits 5; randomisation refuses with the same exit code."""
    runner = CliRunner()
    lists = tmp_path / "lists"
    gen = runner.invoke(trial_app, ["allocation", "generate", "--site", "ATH", "--stratum", "MALS", "-n", "4",
                                    "--out", str(lists)])
    csv_path = Path(json.loads(gen.stdout)["csv"])
    _run(store_url, ADMIN, 0, "allocation", "import", str(csv_path))
    csv_path.write_text(csv_path.read_text().replace("ATH-MALS,ATH,MALS,1,", "ATH-MALS,ATH,MALS,01,"))
    res = CliRunner().invoke(trial_app, ["--db", store_url, "--user", "a", "--role", "administrator",
                                         "allocation", "verify", "--lists", str(lists)])
    assert res.exit_code == EXIT_INTEGRITY
    assert "IG-RAND-E002" in {c["id"] for c in json.loads(res.stdout)["checks"]}


def test_commands_need_an_initialised_store(tmp_path: Path) -> None:
    """A command on an empty database says to run `trial init` (IG-E416) instead of failing on a missing table."""
    err = _run(f"sqlite:///{tmp_path / 'empty.db'}", COORD, 1, "show", "P1", code=4)
    assert err["error"]["code"] == "IG-E416" and "trial init" in err["error"]["todo"]


@pytest.mark.parametrize("missing", ["--user", "--role"])
def test_commands_need_a_user_and_a_role(store_url: str, missing: str) -> None:
    """On a simulation store without an account, every write is stored with who made it: user and role required."""
    args = {"--user": "rivera", "--role": "site_coordinator"}
    args.pop(missing)
    res = CliRunner().invoke(trial_app, ["--db", store_url, *[x for kv in args.items() for x in kv], "show", "P1"])
    assert res.exit_code == 2 and json.loads(res.stderr)["error"]["code"] == "IG-E100"


def test_trial_and_audit_apps_work_registered_under_the_main_command(store_url: str) -> None:
    """Registered as `app.add_typer(trial_app, name="trial")` and `app.add_typer(audit_app, name="audit")`, the
    commands run as `immunoguide trial …` and `immunoguide audit verify`."""
    import typer

    root = typer.Typer()
    root.add_typer(trial_app, name="trial")
    root.add_typer(audit_app, name="audit")
    runner = CliRunner()
    res = runner.invoke(root, ["trial", "--db", store_url, "init"])
    assert res.exit_code == 0 and json.loads(res.stdout)["schema_revision"] == HEAD_REVISION, res.output
    res = runner.invoke(root, ["audit", "verify", "--db", store_url])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True, res.output
