"""The dashboard end to end in a real browser: Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser)
driven by Playwright against uvicorn on 127.0.0.1.

A site coordinator (demo account) logs in, screens a patient, records consent, enters ferritin and mHLA-DR (the
patient is classified immunoparalysis), randomises after a confirmation page that shows the kit numbers only,
records doses, a follow-up day scored from SOFA inputs and an adverse event; two days later (the service clock is
moved) a second follow-up day with a serial sample; the patient page then shows the SOFA plot and the biomarker
timeline as inline SVG. The DSMB then logs in and sees the patient's arm. Screenshots go to
``test-artifacts/dashboard/``.

Without ``/usr/bin/chromium`` the test is skipped, unless ``IMMUNOGUIDE_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from immunoguide import trial
from immunoguide.protocols import describe_regimen, load_protocol
from immunoguide.service import ServiceSettings, create_app
from immunoguide.service.auth import UserStore, ensure_demo_users
from immunoguide.trial.access import Actor
from immunoguide.trial.store import TrialStore

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
PROTOCOL = load_protocol("immunosep-2025")
BLIND_STRINGS = ([a.code for a in PROTOCOL.arms] + [a.label for a in PROTOCOL.arms] + list(PROTOCOL.regimens)
                 + [describe_regimen(r) for r in PROTOCOL.regimens.values()])
SII_ARMS = {a.code for a in PROTOCOL.arms if "immunoparalysis" in a.endotypes}
COORD = "demo-site_coordinator-ATH"
DSMB = "demo-dsmb"


class Clock:
    """The service clock, moved by the test."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def _require_browser() -> None:
    if CHROMIUM.exists():
        return
    msg = f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); never `playwright install`"
    if os.environ.get("IMMUNOGUIDE_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _seed(db: Path) -> None:
    """Allocation lists for site ATH (both strata) and the demo accounts (password = user name)."""
    st = TrialStore(f"sqlite:///{db}")
    st.initialise(simulation=True)  # the service runs on the test's clock
    admin = Actor("admin", "administrator")
    for stratum in ("MALS", "immunoparalysis"):
        f = trial.generate_allocation_list("ATH", stratum, 8, out_dir=db.parent / "lists")
        with st.session() as s:
            trial.import_allocation_list(s, f.csv, actor=admin, now=T0 - timedelta(days=2))
    users = UserStore(st)
    ensure_demo_users(users, [(COORD, "site_coordinator", "ATH"), (DSMB, "dsmb", None)])
    st.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Clock]]:
    """uvicorn on a free loopback port (in a thread) over a fresh store; yields the base URL and the clock."""
    _require_browser()
    import uvicorn

    d = tmp_path_factory.mktemp("e2e")
    _seed(d / "trial.db")
    clock = Clock(T0)
    app = create_app(f"sqlite:///{d / 'trial.db'}", settings=ServiceSettings(clock=clock))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", clock
    finally:
        srv.should_exit = True
        th.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def browser(server: tuple[str, Clock]) -> Iterator[Any]:
    """Headless Debian Chromium through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Any, base: str, user: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", user)  # demo accounts: password = user name
    page.click("button[type=submit]")


def submit(page: Any, form: str, values: dict[str, str], selects: dict[str, str] | None = None) -> None:
    """Fill and submit the form with ``data-testid=form`` and wait for the next page."""
    f = page.get_by_test_id(form)
    for name, v in values.items():
        f.locator(f"[name={name}]").fill(v)
    for name, v in (selects or {}).items():
        f.locator(f"select[name={name}]").select_option(v)
    with page.expect_navigation():
        f.locator("button[type=submit]").click()
    assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").inner_text()


SOFA_DAY0 = {"pao2_mmhg": "70", "fio2_fraction": "0.5", "platelets_10e3_per_ul": "85", "bilirubin_mg_per_dl": "1.1",
             "map_mmhg": "62", "gcs": "14", "creatinine_mg_per_dl": "2.4"}
SOFA_DAY2 = {"pao2_mmhg": "95", "fio2_fraction": "0.4", "platelets_10e3_per_ul": "120", "bilirubin_mg_per_dl": "1.0",
             "map_mmhg": "72", "gcs": "15", "creatinine_mg_per_dl": "1.6"}


def test_coordinator_screens_classifies_randomises_doses_and_sees_the_plots_dsmb_sees_the_arm(
        server: tuple[str, Clock], browser: Any) -> None:
    """The site workflow in Chromium ends with the SOFA and biomarker plots on the patient page; the randomisation
    confirmation shows kit numbers only; the DSMB sees the allocated arm."""
    base, clock = server
    for old in ARTIFACTS.glob("*.png"):  # screenshots of an earlier run
        old.unlink()
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    try:
        _workflow(page, base, clock)
    except BaseException:
        shot(page, "99-failure")
        raise
    finally:
        ctx.close()


def _workflow(page: Any, base: str, clock: Clock) -> None:
    code = "ATH-E2E-01"

    log_in(page, base, COORD)
    assert page.url.endswith("/dashboard/site")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ig_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    if not page.get_by_test_id("screen-form").is_visible():  # the form is folded once patients exist
        page.get_by_text("Screen a patient").click()
    submit(page, "screen-form", {"code": code, "age_years": "71", "sofa_total": "9", "anc_per_mm3": "6100",
                                 "sepsis3_onset_time": (T0 - timedelta(hours=20)).isoformat()},
           {"sex": "male", "infection_source": "CAP", "admission_source": "emergency_department", "covid19": "no",
            "stage_iv_malignancy": "no", "dnr_order": "no"})
    assert page.url.endswith(f"/dashboard/patients/{code}?ok=screened")
    shot(page, "01-screened")

    submit(page, "consent-form", {"signed_at": (T0 - timedelta(minutes=30)).isoformat()}, {"given_by": "patient"})
    sampled = (T0 - timedelta(hours=3)).isoformat()
    submit(page, "labs-form", {"ferritin": "880", "ferritin_sample_time": sampled, "hla_dr": "3100",
                               "hla_dr_sample_time": sampled})
    assert page.get_by_test_id("endotype").inner_text().startswith("immunoparalysis")
    shot(page, "02-classified")

    with page.expect_navigation():
        page.get_by_test_id("randomise").click()
    assert page.get_by_test_id("confirm-stratum").inner_text() == "immunoparalysis"
    shot(page, "03-randomise-confirm")
    with page.expect_navigation():
        page.get_by_test_id("confirm-randomise").click()
    kits = page.get_by_test_id("kit-number").all_inner_texts()
    assert [k.split("-")[0] for k in kits] == ["IV", "SC"] and all(re.fullmatch(r"[A-Z]+-[0-9A-F]+", k) for k in kits)
    text = page.content()
    assert not [s for s in BLIND_STRINGS if s in text]
    assert not [w for w in ("anakinra", "ifn", "placebo", "saline") if w in page.inner_text("main").lower()]
    shot(page, "04-randomised-kits")

    page.get_by_role("link", name="Go to the patient").click()
    submit(page, "dose-form", {"given_at": T0.isoformat(), "number": "1"}, {"kit": "IV"})
    submit(page, "dose-form", {"given_at": T0.isoformat(), "number": "1"}, {"kit": "SC"})
    submit(page, "followup-form", {"assessed_at": T0.isoformat(), **SOFA_DAY0},
           {"day": "0", "respiratory_support": "yes"})
    submit(page, "ae-form", {"term": "Anemia", "onset_at": T0.isoformat()},
           {"grade": "3", "serious": "yes", "relatedness": "possible", "outcome": "recovering"})
    assert page.get_by_test_id("ae-table").get_by_text("Anemia").is_visible()

    clock.t = T0 + timedelta(days=2, hours=3)  # study day 2: the 8 h session has expired with its token
    page.goto(f"{base}/dashboard/patients/{code}")
    assert page.url.endswith("/dashboard/login")
    log_in(page, base, COORD)
    page.goto(f"{base}/dashboard/patients/{code}")
    day2 = (T0 + timedelta(days=2, hours=1)).isoformat()
    page.get_by_test_id("followup-form").get_by_text("Serial laboratory sample").click()
    submit(page, "followup-form", {"assessed_at": day2, **SOFA_DAY2, "ferritin": "610", "ferritin_sample_time": day2,
                                   "hla_dr": "8600", "hla_dr_sample_time": day2},
           {"day": "2", "respiratory_support": "yes"})
    submit(page, "dose-form", {"given_at": (T0 + timedelta(days=2, hours=2)).isoformat()}, {"kit": "IV"})

    sofa = page.get_by_test_id("sofa-plot").locator("svg")
    bio = page.get_by_test_id("biomarker-plot").locator("svg")
    assert sofa.is_visible() and bio.is_visible()
    assert sofa.bounding_box()["width"] > 500
    for label in ("Respiration", "Renal", "Total SOFA"):
        assert sofa.get_by_text(label).count() >= 1, label
    for cut in ("4420 ng/mL", "5000 AB/c", "8000 AB/c"):
        assert bio.get_by_text(cut).count() >= 1, cut
    assert page.get_by_test_id("calendar").locator(".dose.on_time").count() == 2
    assert page.get_by_test_id("calendar").locator(".dose.missed").count() >= 1
    shot(page, "05-patient-plots")
    page.get_by_test_id("sofa-plot").screenshot(path=str(ARTIFACTS / "05a-sofa-plot.png"))
    page.get_by_test_id("biomarker-plot").screenshot(path=str(ARTIFACTS / "05b-biomarker-plot.png"))

    page.goto(f"{base}/dashboard/site")
    row = page.locator(f"tr[data-patient='{code}']")
    assert "day 2" in row.inner_text()
    shot(page, "06-site-view")
    page.goto(f"{base}/dashboard/trial")
    assert page.get_by_test_id("recruitment").is_visible()
    shot(page, "07-trial-view")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert page.url.endswith("/dashboard/login?ok=loggedout")

    log_in(page, base, DSMB)
    assert page.url.endswith("/dashboard/dsmb")
    arm = page.get_by_test_id("dsmb-patients").locator("tr", has_text=code).locator("strong").inner_text()
    assert arm in SII_ARMS
    assert page.get_by_test_id("signal-anemia_on_anakinra").is_visible()
    shot(page, "08-dsmb")


def test_missing_chromium_skips_unless_the_browser_is_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Debian's Chromium the browser test is skipped, and fails when IMMUNOGUIDE_REQUIRE_BROWSER=1 (CI)."""
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("IMMUNOGUIDE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="never `playwright install`"):
        _require_browser()
    monkeypatch.setenv("IMMUNOGUIDE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="no-chromium not found"):
        _require_browser()
