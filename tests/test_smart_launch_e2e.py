"""A card opens the dashboard through a SMART EHR launch with PKCE, in a real browser.

Two uvicorn servers on loopback: immunoguide (trusting the sandbox EHR) and :class:`immunoguide.ehr_sandbox.
EhrSandbox` (JWK Set, FHIR double, SMART authorization server). The EHR calls the CDS service with a signed JWT;
the card's smart link is shown on the sandbox's chart page; Debian's Chromium (Playwright; never a downloaded
browser) clicks it: EHR launch → the dashboard's launch endpoint → the EHR's authorize (PKCE S256) → callback →
token exchange with the code verifier → id_token's fhirUser linked to an immunoguide investigator → the patient
page. Screenshots go to ``test-artifacts/smart/``. Without ``/usr/bin/chromium`` the browser test is skipped unless
``IMMUNOGUIDE_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from immunoguide import trial
from immunoguide.ehr_sandbox import EhrSandbox, free_port, serve_in_thread
from immunoguide.service import ServiceSettings, create_app
from immunoguide.service.auth import UserStore
from immunoguide.service.cds_cards import STUDY_CODE_SYSTEM
from immunoguide.service.cds_security import EhrIssuer, EhrSettings
from immunoguide.service.smart import pkce_challenge
from immunoguide.trial.access import Actor
from immunoguide.trial.store import TrialStore
from service_support import NOW, PASSWORD, patient_view_request, screening_record

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "smart"
HOOK = "/cds-services/immunoguide-patient-view"
CLIENT_ID = "immunoguide-dashboard"


def _seed(db: Path) -> None:
    """A store with patient ATH-001 screened at site ATH and the investigator inv-ath."""
    st = TrialStore(f"sqlite:///{db}")
    st.initialise(simulation=True)  # the service runs on the fixed clock NOW
    admin = Actor("admin", "administrator")
    for stratum in ("MALS", "immunoparalysis"):
        seed = hashlib.sha256(f"smart-{stratum}".encode()).hexdigest()  # a reproducible 256-bit test seed
        f = trial.generate_allocation_list("ATH", stratum, 8, seed=seed, out_dir=db.parent / "lists")
        with st.session() as s:
            trial.import_allocation_list(s, f.csv, actor=admin, now=NOW - timedelta(days=2))
    with st.session() as s:
        trial.screen(s, "ATH-001", "ATH", screening_record(), actor=Actor("c", "site_coordinator", "ATH"),
                     now=NOW - timedelta(hours=20))
    UserStore(st).create_user("inv-ath", PASSWORD, "investigator", "ATH")
    st.dispose()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, EhrSandbox]]:
    """immunoguide and the sandbox EHR, each on its own loopback port, trusting each other."""
    d = tmp_path_factory.mktemp("smart")
    _seed(d / "trial.db")
    app_sock, ehr_sock = free_port(), free_port()
    app_url, ehr_url = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in (app_sock, ehr_sock))
    ehr = EhrSandbox(ehr_url, client_id=CLIENT_ID, redirect_uris=[app_url + "/dashboard/smart/callback"],
                     clock=lambda: NOW)
    pf = patient_view_request("immunoparalysis")["prefetch"]
    ehr.add({**pf["patient"], "identifier": [{"system": STUDY_CODE_SYSTEM, "value": "ATH-001"}]})
    issuer = EhrIssuer(iss=ehr_url, name="Sandbox EHR", jwks_url=ehr.jwks_url, fhir_servers=(ehr.fhir_base,),
                       smart_client_id=CLIENT_ID, users={"Practitioner/1": "inv-ath"})
    settings = ServiceSettings(clock=lambda: NOW, ehr=EhrSettings(service_url=app_url, issuers=(issuer,)))
    app = create_app(f"sqlite:///{d / 'trial.db'}", settings=settings)
    with serve_in_thread(ehr.app, ehr_sock), serve_in_thread(app, app_sock):
        yield app_url, ehr


def _cards(app_url: str, ehr: EhrSandbox) -> dict[str, Any]:
    body = patient_view_request("immunoparalysis")
    body["prefetch"]["patient"]["identifier"] = [{"system": STUDY_CODE_SYSTEM, "value": "ATH-001"}]
    token = ehr.sign_cds_jwt(app_url + HOOK, now=NOW)
    r = httpx.post(app_url + HOOK, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def _require_browser() -> None:
    if CHROMIUM.exists():
        return
    msg = f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); never `playwright install`"
    if os.environ.get("IMMUNOGUIDE_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.mark.browser
def test_card_link_opens_the_patient_page_through_smart_launch_with_pkce(servers: tuple[str, EhrSandbox]) -> None:
    """Clicking the card's smart link on the EHR's chart lands on /dashboard/patients/ATH-001, signed in as the
    investigator linked to the EHR user; the authorization request carried an S256 challenge that the token
    request's verifier hashes to."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    app_url, ehr = servers
    cards = _cards(app_url, ehr)
    (link,) = cards["cards"][0]["links"]
    assert link["type"] == "smart"
    chart = f"{ehr.base_url}/ehr/chart?" + urlencode({"cards": json.dumps(cards), "patient": "pt-immunoparalysis",
                                                      "user": "Practitioner/1"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(chart)
            page.screenshot(path=str(ARTIFACTS / "ehr_chart.png"))
            page.get_by_role("link", name="Open ATH-001 in the immunoguide dashboard").click()
            try:
                page.wait_for_url(f"{app_url}/dashboard/patients/ATH-001", timeout=15_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "failed.png"), full_page=True)
                raise AssertionError(f"ended at {page.url}: {page.content()[:1500]}") from None
            page.screenshot(path=str(ARTIFACTS / "dashboard_patient.png"), full_page=True)
            assert page.locator("h1").first.inner_text().startswith("Patient ATH-001")
            assert "inv-ath" in page.get_by_test_id("who").inner_text()
        finally:
            browser.close()
    auth = ehr.authorize_requests[-1]
    token_req = ehr.token_requests[-1]
    assert (auth["code_challenge_method"], auth["client_id"], auth["aud"]) == ("S256", CLIENT_ID, ehr.fhir_base)
    assert pkce_challenge(token_req["code_verifier"]) == auth["code_challenge"]
    assert 43 <= len(token_req["code_verifier"]) <= 128


def test_launch_from_an_unknown_fhir_server_is_refused(servers: tuple[str, EhrSandbox]) -> None:
    """A launch whose iss is not a configured EHR's FHIR base is refused (403) before anything is fetched."""
    app_url, _ = servers
    r = httpx.get(f"{app_url}/dashboard/smart/launch", params={"iss": "https://rogue.test/fhir", "launch": "x"})
    assert r.status_code == 403 and "IG-E408" in r.text


def test_launch_redirects_to_authorize_with_pkce_and_state(servers: tuple[str, EhrSandbox]) -> None:
    """The launch answers a redirect to the EHR's authorization endpoint with S256 PKCE, state, aud and the
    launch id, and binds the state to the browser with an HttpOnly cookie."""
    app_url, ehr = servers
    r = httpx.get(f"{app_url}/dashboard/smart/launch", params={"iss": ehr.fhir_base, "launch": "abc"})
    assert r.status_code == 302
    loc = urlsplit(r.headers["location"])
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"{ehr.base_url}/authorize"
    assert (q["response_type"], q["code_challenge_method"], q["launch"], q["aud"]) == ("code", "S256", "abc",
                                                                                      ehr.fhir_base)
    assert len(q["code_challenge"]) == 43 and q["state"] and "openid" in q["scope"]
    cookie = r.headers["set-cookie"]
    assert f"ig_smart_state={q['state']}" in cookie and "HttpOnly" in cookie


def test_callback_with_a_foreign_state_is_refused(servers: tuple[str, EhrSandbox]) -> None:
    """A callback whose state was not issued to this browser (no matching cookie) signs nobody in."""
    app_url, _ = servers
    r = httpx.get(f"{app_url}/dashboard/smart/callback", params={"code": "c", "state": "forged"})
    assert r.status_code == 401 and "ig_dashboard" not in r.headers.get("set-cookie", "")


def test_token_endpoint_refuses_a_wrong_code_verifier(servers: tuple[str, EhrSandbox]) -> None:
    """The sandbox's token endpoint holds the line PKCE draws: a code exchanged with another verifier fails."""
    _, ehr = servers
    launch = httpx.get(f"{ehr.base_url}/ehr/launch", params={"app_url": "http://app.test/l", "patient": "p"})
    launch_id = parse_qs(urlsplit(launch.headers["location"]).query)["launch"][0]
    redirect = ehr.redirect_uris[0]
    r = httpx.get(f"{ehr.base_url}/authorize", params={
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect, "launch": launch_id,
        "state": "s", "aud": ehr.fhir_base, "code_challenge": pkce_challenge("right-verifier-" + "x" * 40),
        "code_challenge_method": "S256", "scope": "launch"})
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    t = httpx.post(f"{ehr.base_url}/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": redirect, "client_id": CLIENT_ID,
                                                  "code_verifier": "wrong-verifier-" + "y" * 40})
    assert t.status_code == 400 and "PKCE" in t.json()["error_description"]
