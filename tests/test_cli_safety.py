"""`immunoguide safety …`: CTCAE term look-up and lab grading, safety labs, the alert listing, turnaround, signals,
the store clock; and the trial CLI's input edges (free-text AE term, duplicate keys in --labs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._safety import safety_app
from immunoguide.cli._trial import trial_app
from immunoguide.trial import TrialStore, record_followup
from trial_helpers import COORD, h, make_lists, randomised

runner = CliRunner()
ROOT = typer.Typer()
ROOT.add_typer(safety_app, name="safety")
ROOT.add_typer(trial_app, name="trial")


def run(*args: str, code: int = 0) -> Any:
    res = runner.invoke(ROOT, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout if code == 0 else res.stderr)


@pytest.fixture
def db(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "trial.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def who(db: str, user: str, role: str, site: str | None, at: float) -> list[str]:
    out = ["--db", db, "--user", user, "--role", role, "--now", h(at).isoformat()]
    return out + (["--site", site] if site else [])


def test_term_lookup_lists_ctcae_terms_with_meddra_codes_and_flags_unconfirmed_ones() -> None:
    """`safety terms anemia` finds Anemia 10002272; `safety terms hemorrhage` lists site-specific terms, uncoded ones
    flagged."""
    out = run("safety", "terms", "anaemia")
    assert out["terms"][0]["term"] == "Anemia" and out["terms"][0]["meddra_code"] == "10002272"
    bleed = run("safety", "terms", "hemorrhage")["terms"]
    assert bleed and all(t["meddra_code"] or t["meddra_flag"] for t in bleed)


def test_grade_command_grades_by_ctcae_and_refuses_non_numbers() -> None:
    """`safety grade platelets 40 --unit 10^9/L` is grade 3; `true` is refused (exit 2)."""
    assert run("safety", "grade", "platelets", "40", "--unit", "10^9/L")["grade"] == 3
    assert run("safety", "grade", "bilirubin", "41", "--unit", "umol/L", "--uln", "21")["grade"] == 2
    assert run("safety", "grade", "hemoglobin", "true", "--unit", "g/dL", code=2)["error"]["code"] == "IG-E100"


def test_safety_labs_are_recorded_and_listed_and_the_alerts_list_a_stratum_switch(db: str, tmp_path: Path) -> None:
    """A coordinator records Hgb 7.4 g/dL (grade 3); a MALS sample on day 3 of an immunoparalysis patient is listed by
    `safety alerts` as a stratum switch (critical/warning filter)."""
    st = TrialStore(db)
    make_lists(st, tmp_path, strata=("immunoparalysis",))
    randomised(st, "P1", stratum="immunoparalysis")
    with st.session() as s:
        record_followup(s, "P1", 3, actor=COORD, now=h(9 + 24 * 3 + 5),
                        labs={"ferritin": 6000, "ferritin_unit": "ng/mL", "ferritin_sample_time": h(9 + 72 + 2).isoformat()})
    st.dispose()
    rec = json.dumps({"sample_time": h(60).isoformat(), "hemoglobin": 7.4, "hemoglobin_unit": "g/dL"})
    out = run("safety", *who(db, "rivera", "site_coordinator", "ATH", 70), "labs", "P1", "--labs", rec)
    assert out["recorded"]["results"][0]["grade"] == 3 and out["results"][0]["term"] == "Anemia"
    alerts = run("safety", *who(db, "stat", "statistician", None, 100), "alerts", "--level", "critical,warning")
    assert [a["code"] for a in alerts["alerts"]] == ["stratum_switch"]
    assert run("safety", *who(db, "stat", "statistician", None, 100), "turnaround")["rows"]


def test_signals_need_the_dsmb_and_the_rule_can_be_chosen(db: str) -> None:
    """A coordinator is refused (exit 4); the DSMB gets the rule it asked for."""
    assert run("safety", *who(db, "rivera", "site_coordinator", "ATH", 10), "signals", code=4)["error"]["code"] == "IG-E408"
    out = run("safety", *who(db, "chair", "dsmb", None, 10), "signals", "--rule", "bayes_beta_binomial")
    assert out["rule"]["method"] == "bayes_beta_binomial" and out["rule"]["overridden"] is True


def test_store_clock_is_shown_and_set_by_the_administrator(db: str) -> None:
    """The clock is wall time until the administrator sets a simulated time; a coordinator may not set it."""
    assert run("safety", "--db", db, "clock")["mode"] == "wall"
    run("safety", *who(db, "rivera", "site_coordinator", "ATH", 1), "clock", "--simulated-now", h(100).isoformat(),
        code=4)
    set_ = run("safety", *who(db, "admin", "administrator", None, 1), "clock", "--simulated-now", h(100).isoformat())
    assert set_["mode"] == "simulated" and set_["frozen"] is True
    assert run("safety", "--db", db, "clock")["store_now"] == h(100).isoformat()
    # without --now the store commands act at the store's time, not the wall clock
    alerts = run("safety", "--db", db, "--user", "rivera", "--role", "site_coordinator", "--site", "ATH", "alerts")
    assert alerts["at"] == h(100).isoformat()
    assert run("safety", *who(db, "rivera", "site_coordinator", "ATH", 7), "alerts")["at"] == h(7).isoformat()
    from immunoguide.trial.store import store_now

    assert store_now(db, h(5000)) == h(100)


def test_trial_cli_refuses_free_text_ae_terms_and_duplicate_lab_keys(db: str, tmp_path: Path) -> None:
    """`trial ae record --term "foo bar"` is refused (IG-E113, exit 2); `trial classify-lab` with a duplicate key too
    (IG-E110)."""
    st = TrialStore(db)
    make_lists(st, tmp_path, strata=("MALS",))
    randomised(st, "P1")
    st.dispose()
    base = who(db, "rivera", "site_coordinator", "ATH", 40)
    err = run("trial", *base, "ae", "record", "P1", "--term", "foo bar", "--onset", h(30).isoformat(), "--grade", "2",
              "--serious", "no", "--relatedness", "possible", "--outcome", "recovered", code=2)
    assert err["error"]["code"] == "IG-E113"
    t = h(3).isoformat()
    dup = f'{{"ferritin": 100, "ferritin_unit": "ng/mL", "ferritin": 6100, "ferritin_sample_time": "{t}"}}'
    err = run("trial", *base, "classify-lab", "P1", "--labs", dup, code=2)
    assert err["error"]["code"] == "IG-E110"
