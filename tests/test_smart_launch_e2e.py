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


#: fhirUser (Type/id at the sandbox EHR) → immunoguide account, as in the EHR configuration.
LINKS = {"Practitioner/1": "inv-ath", "Practitioner/2": "inv-ath-2", "Practitioner/3": "inv-ath-3",
         "Practitioner/4": "inv-ath-4"}


def _seed(db: Path) -> None:
    """A simulation store (the service runs on the fixed clock NOW) with patient ATH-001 screened at site ATH and
    the investigators the EHR users are linked to (accounts created through the audited account model)."""
    st = TrialStore(f"sqlite:///{db}")
    st.initialise(simulation=True)
    admin = Actor("admin", "administrator")
    for stratum in ("MALS", "immunoparalysis"):
        f = trial.generate_allocation_list("ATH", stratum, 8, out_dir=db.parent / "lists")
        with st.session() as s:
            trial.import_allocation_list(s, f.csv, actor=admin, now=NOW - timedelta(days=2))
    with st.session() as s:
        trial.screen(s, "ATH-001", "ATH", screening_record(), actor=Actor("c", "site_coordinator", "ATH"),
                     now=NOW - timedelta(hours=20))
    users = UserStore(st)
    for name in LINKS.values():
        users.create_user(name, PASSWORD, "investigator", "ATH")
    st.dispose()


@pytest.fixture(scope="module")
def smart_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded store's file."""
    db = tmp_path_factory.mktemp("smart") / "trial.db"
    _seed(db)
    return db


@pytest.fixture(scope="module")
def servers(smart_db: Path) -> Iterator[tuple[str, EhrSandbox]]:
    """immunoguide and the sandbox EHR, each on its own loopback port, trusting each other."""
    d = smart_db.parent
    app_sock, ehr_sock = free_port(), free_port()
    app_url, ehr_url = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in (app_sock, ehr_sock))
    ehr = EhrSandbox(ehr_url, client_id=CLIENT_ID, redirect_uris=[app_url + "/dashboard/smart/callback"],
                     clock=lambda: NOW)
    pf = patient_view_request("immunoparalysis")["prefetch"]
    ehr.add({**pf["patient"], "identifier": [{"system": STUDY_CODE_SYSTEM, "value": "ATH-001"}]})
    issuer = EhrIssuer(iss=ehr_url, name="Sandbox EHR", jwks_url=ehr.jwks_url, fhir_servers=(ehr.fhir_base,),
                       smart_client_id=CLIENT_ID, users=LINKS)
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


def _launch(app_url: str, ehr: EhrSandbox, user: str) -> tuple[httpx.Response, str | None]:
    """A SMART launch followed as a browser follows it, without one: the EHR's launch → the dashboard's launch → the
    EHR's authorize (PKCE) → the callback. Returns the callback's answer and the dashboard cookie it set, if any."""
    with httpx.Client(follow_redirects=True, timeout=15) as c:
        r = c.get(f"{ehr.base_url}/ehr/launch", params={"app_url": f"{app_url}/dashboard/smart/launch",
                                                         "patient": "pt-immunoparalysis", "user": user})
        return r, c.cookies.get("ig_dashboard")


def _logins(db: Path, username: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from immunoguide.trial.models import AuditRecord

    st = TrialStore(f"sqlite:///{db}")
    try:
        with st.session() as s:
            return [dict(e.payload or {}, actor=e.actor, role=e.role) for e in s.execute(
                select(AuditRecord).where(AuditRecord.table_name == "service_users", AuditRecord.action == "login",
                                          AuditRecord.row_id == username).order_by(AuditRecord.seq)).scalars()]
    finally:
        st.dispose()


def test_the_smart_sign_in_is_an_audited_login_of_the_linked_account(servers: tuple[str, EhrSandbox],
                                                                     smart_db: Path) -> None:
    """The EHR user linked to inv-ath-2 is signed in as that account (its role and site): the dashboard token works
    and the sign-in is a login entry of the audit trail naming the EHR and its fhirUser; the chain verifies."""
    from immunoguide.trial import verify_audit

    app_url, ehr = servers
    r, token = _launch(app_url, ehr, "Practitioner/2")
    assert r.status_code == 200 and "Signed in as inv-ath-2" in r.text and token
    page = httpx.get(f"{app_url}/dashboard/patients/ATH-001", cookies={"ig_dashboard": token})
    assert page.status_code == 200 and "inv-ath-2" in page.text
    (login,) = _logins(smart_db, "inv-ath-2")
    assert (login["channel"], login["actor"], login["role"]) == ("smart", "inv-ath-2", "investigator")
    assert (login["iss"], login["fhir_user"]) == (ehr.base_url, f"{ehr.fhir_base}/Practitioner/2")
    st = TrialStore(f"sqlite:///{smart_db}")
    try:
        with st.session() as s:
            assert verify_audit(s).ok
    finally:
        st.dispose()


def test_a_linked_account_changed_outside_immunoguide_or_deactivated_is_not_signed_in(
        servers: tuple[str, EhrSandbox], smart_db: Path) -> None:
    """The link in the EHR configuration gives no more than a password would: an account promoted with a SQL UPDATE
    (not equal to its audited image) and an account the administrator deactivated are refused (401), with no
    dashboard cookie and no login entry."""
    from sqlalchemy import text

    app_url, ehr = servers
    st = TrialStore(f"sqlite:///{smart_db}")
    try:
        with st.engine.begin() as conn:
            conn.execute(text("UPDATE service_users SET role = 'dsmb' WHERE username = 'inv-ath-3'"))
        r, token = _launch(app_url, ehr, "Practitioner/3")
        assert r.status_code == 401 and token is None, r.text
        assert "inv-ath-3" in r.text
        UserStore(st).change_user("inv-ath-4", by=Actor("admin", "administrator"), active=False,
                                  reason="left the site")
        r, token = _launch(app_url, ehr, "Practitioner/4")
        assert r.status_code == 401 and token is None, r.text
    finally:
        with st.engine.begin() as conn:
            conn.execute(text("UPDATE service_users SET role = 'investigator' WHERE username = 'inv-ath-3'"))
        st.dispose()
    assert _logins(smart_db, "inv-ath-3") == [] and _logins(smart_db, "inv-ath-4") == []
