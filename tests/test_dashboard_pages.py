"""The web dashboard's pages through the FastAPI TestClient: cookie login, every page for every role allowed to
see it, blinding in the rendered HTML, 403 for forbidden pages and other sites, the plots and the regimen calendar,
and the forms (screen → consent → labs → randomise → dose → follow-up → AE) with their error pages.

The store is ``service_support.seed_store`` (sites ATH and MIL, lists for both strata, randomised patients with a
dose, a serious AE and a follow-up day) plus a day-0 follow-up scored from SOFA inputs for ATH-002; the service
clock is fixed at ``service_support.NOW``. The blinding detector is checked against positive controls: the
unblinded roles' pages must show the arms the seed allocated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from immunoguide import trial
from immunoguide.protocols import describe_regimen, load_protocol
from immunoguide.rules.regimen import dose_schedule
from immunoguide.service.dashboard import COOKIE
from immunoguide.trial.access import UNBLINDED_ROLES, Actor
from immunoguide.trial.store import TrialStore
from service_support import NOW, PASSWORD, PATIENTS, USERS, client_for, copy_store, seed_store

PROTOCOL = load_protocol("immunosep-2025")
ARM_CODES = [a.code for a in PROTOCOL.arms]
ARM_LABELS = [a.label for a in PROTOCOL.arms]
REGIMEN_IDS = list(PROTOCOL.regimens)
REGIMEN_TEXTS = [describe_regimen(r) for r in PROTOCOL.regimens.values()]
#: Words that name what a kit holds (drugs and products of the protocol's regimens).
DRUG_WORDS = sorted({r.drug for r in PROTOCOL.regimens.values()} | {"saline", "IFN"})
#: Strings no blinded page may contain anywhere.
BLIND_STRINGS = ARM_CODES + ARM_LABELS + REGIMEN_IDS + REGIMEN_TEXTS + ["prescribed", "is_placebo"]

ROLE = {u: r for u, r, _ in USERS}
SITE = {u: s for u, _, s in USERS}
BLINDED_USERS = [u for u, r, _ in USERS if r not in UNBLINDED_ROLES]
SOFA_INPUTS = {"pao2_mmhg": 70, "fio2_fraction": 0.5, "respiratory_support": True, "platelets_10e3_per_ul": 85,
               "bilirubin_mg_per_dl": 1.1, "map_mmhg": 62, "gcs": 14, "creatinine_mg_per_dl": 2.4}


def _seed(path: Path) -> dict[str, Any]:
    info = seed_store(path)
    st = TrialStore(f"sqlite:///{path}")
    with st.session() as s:
        trial.record_followup(s, "ATH-002", 0, actor=Actor("seed-ATH", "site_coordinator", "ATH"),
                              now=NOW - timedelta(hours=1), sofa_inputs=SOFA_INPUTS)
    st.dispose()
    return info


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One seeded store file (copied by the tests that write)."""
    d = tmp_path_factory.mktemp("dashboard")
    info = _seed(d / "template.db")
    return d / "template.db", info


@pytest.fixture(scope="module")
def client(seeded: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client over a private copy of the seeded store (read-only tests)."""
    db = copy_store(seeded[0], tmp_path_factory.mktemp("read"))
    with client_for(db) as c:
        yield c


@pytest.fixture
def write_client(seeded: tuple[Path, dict[str, Any]], tmp_path: Path) -> Iterator[TestClient]:
    """A client over a fresh copy of the seeded store (tests that write)."""
    with client_for(copy_store(seeded[0], tmp_path)) as c:
        yield c


def login(c: TestClient, user: str) -> dict[str, str]:
    """Log in through the dashboard's form; returns the Cookie header of the session (the jar is emptied)."""
    r = c.post("/dashboard/login", data={"username": user, "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    token = r.cookies[COOKIE]
    c.cookies.clear()
    return {"Cookie": f"{COOKIE}={token}"}


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, "no csrf field on the page"
    return m.group(1)


def pages_for(user: str) -> list[str]:
    """Every page ``user`` may open in the seeded store."""
    site = SITE[user]
    codes = [c for c, (s, *_) in PATIENTS.items() if site is None or s == site]
    randomised = [c for c in codes if PATIENTS[c][3]]
    out = ["/dashboard/site", "/dashboard/trial"]
    out += [f"/dashboard/patients/{c}" for c in codes]
    out += [f"/dashboard/patients/{c}/randomised" for c in randomised]
    if ROLE[user] == "dsmb":
        out.append("/dashboard/dsmb")
    return out


@pytest.fixture(scope="module")
def rendered(client: TestClient) -> dict[str, dict[str, tuple[int, str]]]:
    """user → page → (status, HTML) for every page every user may open."""
    out: dict[str, dict[str, tuple[int, str]]] = {}
    for user, _, _ in USERS:
        h = login(client, user)
        out[user] = {}
        for url in pages_for(user):
            r = client.get(url, headers=h, follow_redirects=False)
            out[user][url] = (r.status_code, r.text)
    return out


def strip_schedule_warnings(html: str) -> str:
    """The page without the protocol's schedule-setting warnings (identical for every arm, see the test below)."""
    return re.sub(r'<p class="small muted schedule-warning">.*?</p>', "", html, flags=re.S)


def kit_elements(html: str) -> list[str]:
    """Kit boxes, kit-number cells and dose chips (with their tooltips) of a page."""
    return (re.findall(r'<div class="kit">.*?</div></div>', html, flags=re.S)
            + re.findall(r'<span class="dose [a-z_]+" title="[^"]*">', html)
            + re.findall(r'<td class="kitcol">.*?</td>', html, flags=re.S))


# ---------------------------------------------------------------------------------------------------------------
# login


def test_login_sets_httponly_samesite_strict_cookie_carrying_the_service_token(client: TestClient) -> None:
    """The login form sets an HttpOnly, SameSite=Strict cookie scoped to /dashboard holding a REST bearer token."""
    r = client.post("/dashboard/login", data={"username": "coord-ath", "password": PASSWORD}, follow_redirects=False)
    client.cookies.clear()
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert "secure" not in cookie  # plain http on the test server; set only over https
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {r.cookies[COOKIE]}"})
    assert me.status_code == 200 and me.json()["user"] == "coord-ath"


def test_pages_without_a_valid_session_redirect_to_the_login_page(client: TestClient) -> None:
    """No cookie, or a cookie with an unknown token, sends the browser to the login form."""
    for headers in ({}, {"Cookie": f"{COOKIE}=not-a-token"}):
        r = client.get("/dashboard/site", headers=headers, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert client.get("/dashboard/login").status_code == 200


def test_wrong_password_re_renders_the_login_form_with_401(client: TestClient) -> None:
    """A wrong password gives the login page again, status 401, and no cookie."""
    r = client.post("/dashboard/login", data={"username": "coord-ath", "password": "wrong"}, follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "IG-E418" in r.text and 'name="password"' in r.text


def test_logout_revokes_the_token(write_client: TestClient) -> None:
    """After logout the cookie's token no longer opens pages nor the REST API."""
    h = login(write_client, "coord-ath")
    token = h["Cookie"].split("=", 1)[1]
    page = write_client.get("/dashboard/site", headers=h)
    r = write_client.post("/dashboard/logout", data={"csrf": csrf_of(page.text)}, headers=h, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?ok=loggedout"
    assert write_client.get("/dashboard/site", headers=h, follow_redirects=False).status_code == 303
    assert write_client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_start_page_depends_on_the_role(client: TestClient) -> None:
    """Site staff start on the site view, the DSMB on its unblinded view, everyone else on the trial view."""
    want = {"coord-ath": "site", "pharm-ath": "site", "dsmb": "dsmb", "stat": "trial", "admin": "trial"}
    for user, page in want.items():
        r = client.get("/dashboard/", headers=login(client, user), follow_redirects=False)
        assert r.headers["location"] == f"/dashboard/{page}", user


# ---------------------------------------------------------------------------------------------------------------
# every page for every allowed role


@pytest.mark.parametrize("user", [u for u, _, _ in USERS])
def test_every_allowed_page_renders_for_the_role(user: str, rendered: dict[str, dict[str, tuple[int, str]]]) -> None:
    """Each page the role may open answers 200 with the user's name and role in the header."""
    for url, (status, html) in rendered[user].items():
        assert status == 200, f"{user} {url}: {status}\n{html[:2000]}"
        assert f"{user} · {ROLE[user]}" in html, url


@pytest.mark.parametrize("user", BLINDED_USERS)
def test_blinded_pages_contain_no_arm_label_or_kit_content(user: str,
                                                           rendered: dict[str, dict[str, tuple[int, str]]]) -> None:
    """No page of a blinded role contains an arm code or label, a regimen id or description, and no kit element
    names a drug; apart from the arm-independent schedule warnings no drug or product name appears at all."""
    for url, (_, html) in rendered[user].items():
        for s in BLIND_STRINGS:
            assert s not in html, f"{user} {url} contains {s!r}"
        for el in kit_elements(html):
            for w in DRUG_WORDS:
                assert w.lower() not in el.lower(), f"{user} {url}: kit element names {w!r}: {el}"
        rest = strip_schedule_warnings(html).lower()
        for w in DRUG_WORDS:
            assert w.lower() not in rest, f"{user} {url} names {w!r}"
        assert 'class="badge unblinded"' not in html


def test_schedule_warnings_shown_to_blinded_roles_are_identical_for_every_arm() -> None:
    """The schedule-setting warnings the patient page shows to blinded roles do not depend on the arm."""
    start = datetime.fromisoformat("2025-03-01T08:00:00+00:00")
    texts = {a.code: [(w.setting, w.text) for w in dose_schedule(PROTOCOL, a.code, start).warnings]
             for a in PROTOCOL.arms}
    assert len({tuple(v) for v in texts.values()}) == 1, texts


def test_unblinded_roles_see_the_allocated_arms(rendered: dict[str, dict[str, tuple[int, str]]],
                                                seeded: tuple[Path, dict[str, Any]]) -> None:
    """Positive control of the detector: the DSMB sees every seeded arm; the ATH pharmacist sees ATH arms and kit
    contents."""
    arms = seeded[1]["arms"]
    dsmb = rendered["dsmb"]["/dashboard/dsmb"][1]
    for code, arm in arms.items():
        assert re.search(rf"{code}</a></td>.*?<strong>{arm}</strong>", dsmb, flags=re.S), code
    pharm = rendered["pharm-ath"]["/dashboard/patients/ATH-001"][1]
    assert arms["ATH-001"] in pharm
    arm = PROTOCOL.arm(arms["ATH-001"])
    assert all(describe_regimen(PROTOCOL.regimens[rid]) in pharm for rid in arm.kits.values())


@pytest.mark.parametrize(("user", "url"), [
    ("coord-ath", "/dashboard/dsmb"),
    ("inv-ath", "/dashboard/dsmb"),
    ("pharm-ath", "/dashboard/dsmb"),
    ("stat", "/dashboard/dsmb"),
    ("admin", "/dashboard/dsmb"),
])
def test_forbidden_pages_give_403(client: TestClient, user: str, url: str) -> None:
    """Pages of another role answer 403 with the authorisation error (IG-E408)."""
    r = client.get(url, headers=login(client, user), follow_redirects=False)
    assert r.status_code == 403 and "IG-E408" in r.text


@pytest.mark.parametrize(("user", "url", "unknown"), [
    ("coord-ath", "/dashboard/patients/MIL-001", "/dashboard/patients/MIL-999"),
    ("coord-mil", "/dashboard/patients/ATH-001", "/dashboard/patients/ATH-999"),
    ("pharm-ath", "/dashboard/patients/MIL-001/randomised", "/dashboard/patients/MIL-999/randomised"),
    ("coord-ath", "/dashboard/patients/MIL-002/randomize", "/dashboard/patients/MIL-999/randomize"),
])
def test_another_sites_patient_looks_exactly_like_no_such_patient(client: TestClient, user: str, url: str,
                                                                  unknown: str) -> None:
    """A site user asking for another site's patient gets the answer of a code that does not exist (404 IG-E406),
    so study codes of other sites cannot be probed."""
    h = login(client, user)
    r, r0 = client.get(url, headers=h, follow_redirects=False), client.get(unknown, headers=h, follow_redirects=False)
    assert r.status_code == r0.status_code == 404 and "IG-E406" in r.text
    code, code0 = url.split("/")[3], unknown.split("/")[3]
    assert r.text.replace(code, "X") == r0.text.replace(code0, "X")


@pytest.mark.parametrize(("user", "path", "data"), [
    ("stat", "/dashboard/patients", {"code": "X-1", "site": "ATH"}),
    ("dsmb", "/dashboard/patients/ATH-003/consent", {"given_by": "patient", "signed_at": NOW.isoformat()}),
    ("pharm-ath", "/dashboard/patients/ATH-001/adverse-events",
     {"term": "Rash", "onset_at": NOW.isoformat(), "grade": "1", "serious": "no", "relatedness": "possible",
      "outcome": "recovered"}),
    ("coord-mil", "/dashboard/patients/ATH-003/labs", {"ferritin": "900", "ferritin_sample_time": NOW.isoformat()}),
])
def test_forbidden_actions_give_403_and_store_nothing(write_client: TestClient, user: str, path: str,
                                                      data: dict[str, str]) -> None:
    """A form POST by a role without the permission is refused 403 (another site's patient: 404, as if unknown) and
    the store is unchanged."""
    h = login(write_client, user)
    csrf = csrf_of(write_client.get("/dashboard/site", headers=h).text)
    r = write_client.post(path, data={**data, "csrf": csrf}, headers=h, follow_redirects=False)
    other_site = user == "coord-mil" and "/ATH-" in path
    status, code = (404, "IG-E406") if other_site else (403, "IG-E408")
    assert r.status_code == status and code in r.text
    st_h = login(write_client, "stat")
    log = write_client.get("/trial/patients", headers={"Authorization": "Bearer " + st_h["Cookie"].split("=", 1)[1]})
    assert sorted(p["patient"] for p in log.json()) == sorted(PATIENTS)


@pytest.mark.parametrize("user", ["coord-ath", "inv-ath", "pharm-ath", "coord-mil"])
def test_site_users_see_only_their_site(user: str, rendered: dict[str, dict[str, tuple[int, str]]]) -> None:
    """Site, trial and patient pages of a site user never name another site's patients."""
    other = [c for c, (s, *_) in PATIENTS.items() if s != SITE[user]]
    mine = [c for c, (s, *_) in PATIENTS.items() if s == SITE[user]]
    for url, (_, html) in rendered[user].items():
        for code in other:
            assert code not in html, f"{user} {url} shows {code}"
    site = rendered[user]["/dashboard/site"][1]
    assert all(f'data-patient="{c}"' in site for c in mine)


def test_all_site_roles_see_every_site(rendered: dict[str, dict[str, tuple[int, str]]]) -> None:
    """The statistician's site and trial views list the patients of both sites."""
    for url in ("/dashboard/site", "/dashboard/trial"):
        html = rendered["stat"][url][1]
        assert all(code in html for code in PATIENTS), url


# ---------------------------------------------------------------------------------------------------------------
# content of the views


def test_site_view_shows_day_endotype_eligibility_doses_and_tasks(rendered: dict[str, dict[str, tuple[int, str]]],
                                                                  client: TestClient) -> None:
    """Each site row carries the study day, endotype, eligibility, doses due today and missed doses as the trial's
    dosing view computes them."""
    html = rendered["coord-ath"]["/dashboard/site"][1]
    rows = dict(re.findall(r'<tr data-patient="([^"]+)">(.*?)</tr>', html, flags=re.S))
    assert set(rows) == {"ATH-001", "ATH-002", "ATH-003"}
    token = login(client, "coord-ath")["Cookie"].split("=", 1)[1]
    for code in ("ATH-001", "ATH-002"):
        dv = client.get(f"/trial/patients/{code}/doses", headers={"Authorization": f"Bearer {token}"}).json()
        missed = sum(1 for d in dv["doses"] if d["status"] == "missed")
        assert "day 0" in rows[code]
        assert f'<span class="missed">{missed}</span>' in rows[code]
        today = [d for d in dv["doses"] if d["status"] == "pending" and d["due"][:10] == NOW.date().isoformat()]
        for d in today:
            assert f"{d['kit']} #{d['number']} at {d['due'][11:16]}" in rows[code]
    assert "immunoparalysis" in rows["ATH-001"] and "MALS" in rows["ATH-002"]
    assert "not eligible" in rows["ATH-003"] and "fails I6" in rows["ATH-003"]
    assert "day 0: sofa, labs" in rows["ATH-002"] or "AE entry" in rows["ATH-002"]


def test_patient_page_draws_sofa_components_and_the_protocol_cutoffs(
        rendered: dict[str, dict[str, tuple[int, str]]]) -> None:
    """The patient page embeds the SOFA trajectory (one series per component) and the biomarker timeline with a
    line for every threshold of the protocol's classification and reversal rules."""
    html = rendered["coord-ath"]["/dashboard/patients/ATH-002"][1]
    sofa = re.search(r'data-testid="sofa-plot">(<svg.*?</svg>)', html, flags=re.S)
    bio = re.search(r'data-testid="biomarker-plot">(<svg.*?</svg>)', html, flags=re.S)
    assert sofa and bio
    for label in ("Respiration", "Coagulation", "Liver", "Cardiovascular", "CNS", "Renal", "Total SOFA"):
        assert label in sofa.group(1), label
    thresholds = {c.threshold for rule in [*PROTOCOL.classification.endotypes, *PROTOCOL.classification.reversals]
                  for c in rule.all_of}
    assert thresholds == {4420.0, 5000.0, 8000.0}
    for t in thresholds:
        assert f"{t:g} ng/mL" in bio.group(1) or f"{t:g} AB/c" in bio.group(1), t
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate element ids between the inline SVGs"


def test_regimen_calendar_has_one_chip_per_scheduled_dose_with_its_status(
        rendered: dict[str, dict[str, tuple[int, str]]], client: TestClient) -> None:
    """The calendar shows every dose of the trial's dosing view, with the same status, over 15 treatment days."""
    html = rendered["coord-ath"]["/dashboard/patients/ATH-001"][1]
    cal = re.search(r'<table class="calendar".*?</table>', html, flags=re.S)
    assert cal
    token = login(client, "coord-ath")["Cookie"].split("=", 1)[1]
    dv = client.get("/trial/patients/ATH-001/doses", headers={"Authorization": f"Bearer {token}"}).json()
    chips = re.findall(r'<span class="dose ([a-z_]+)" title="(IV|SC) dose (\d+),', cal.group(0))
    assert sorted((k, int(n), s) for s, k, n in chips) == sorted((d["kit"], d["number"], d["status"])
                                                                 for d in dv["doses"])
    assert re.findall(r"<th[^>]*>(\d+)</th>", cal.group(0)) == [str(d) for d in range(1, 16)]


def test_trial_view_counts_match_consort_and_recruitment(rendered: dict[str, dict[str, tuple[int, str]]],
                                                         client: TestClient) -> None:
    """The trial view shows the CONSORT counts of the trial's read layer and recruitment by site and month."""
    html = rendered["stat"]["/dashboard/trial"][1]
    token = login(client, "stat")["Cookie"].split("=", 1)[1]
    consort = client.get("/trial/consort", headers={"Authorization": f"Bearer {token}"}).json()
    for label, key in (("Screened", "screened"), ("Screen failures", "screen_failures"), ("Randomised", "randomised"),
                       ("Analysed", "analysed")):
        assert re.search(rf"{label}</td><td class=\"num\">{consort[key]}</td>", html), label
    row = re.search(r'<td class="nowrap">2025-03</td>(.*?)</tr>', html, flags=re.S)
    assert row
    nums = [int(x) for x in re.findall(r'<td class="num">(\d+)</td>', row.group(1))]
    ath_s, ath_r, mil_s, mil_r, total_s, total_r = nums
    assert (ath_s, mil_s, total_s) == (3, 2, 5)
    assert (ath_r, mil_r, total_r) == (2, 1, 3)
    assert 'data-testid="recruitment-plot"><svg' in html


def test_dsmb_view_shows_signals_and_unblinded_consort(rendered: dict[str, dict[str, tuple[int, str]]],
                                                       seeded: tuple[Path, dict[str, Any]]) -> None:
    """The DSMB page lists every safety signal of trial/safety.toml and the randomised count of each arm."""
    from collections import Counter

    from immunoguide.trial.adverse_events import load_safety_rules

    html = rendered["dsmb"]["/dashboard/dsmb"][1]
    for sig in load_safety_rules().signals:
        assert f'data-testid="signal-{sig.id}"' in html
    for arm, n in Counter(seeded[1]["arms"].values()).items():
        assert re.search(rf"<strong>{arm}</strong></td><td class=\"num\">{n}</td>", html), arm


# ---------------------------------------------------------------------------------------------------------------
# forms


def test_forms_screen_classify_randomise_dose_followup_and_ae(write_client: TestClient) -> None:
    """A coordinator screens, consents, classifies (immunoparalysis), confirms the randomisation (kit numbers only),
    records a dose, a follow-up day from SOFA inputs and an AE; the patient page then shows them."""
    c = write_client
    h = login(c, "coord-ath")
    csrf = csrf_of(c.get("/dashboard/site", headers=h).text)
    t = NOW.isoformat()

    def post(path: str, data: dict[str, str]) -> Any:
        r = c.post(path, data={**data, "csrf": csrf}, headers=h, follow_redirects=False)
        assert r.status_code == 303, r.text[:3000]
        return r

    post("/dashboard/patients", {
        "code": "ATH-010", "age_years": "64", "sex": "female", "unwilling_to_become_pregnant": "yes",
        "infection_source": "HAP", "admission_source": "emergency_department", "sofa_total": "8",
        "sepsis3_onset_time": (NOW - timedelta(hours=12)).isoformat(), "anc_per_mm3": "5400", "covid19": "no",
        "stage_iv_malignancy": "no", "dnr_order": "no", "bsi_skin_commensal_or_catheter_related": "unknown"})
    post("/dashboard/patients/ATH-010/consent", {"given_by": "spouse", "signed_at": t})
    post("/dashboard/patients/ATH-010/labs", {
        "ferritin": "900", "ferritin_unit": "ng/mL", "ferritin_sample_time": (NOW - timedelta(hours=2)).isoformat(),
        "hla_dr": "3100", "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
        "hla_dr_sample_time": (NOW - timedelta(hours=2)).isoformat()})
    page = c.get("/dashboard/patients/ATH-010", headers=h).text
    assert re.search(r'data-testid="endotype"><span class="endo">immunoparalysis</span>', page)
    confirm = c.get("/dashboard/patients/ATH-010/randomize", headers=h).text
    assert 'name="stratum" value="immunoparalysis"' in confirm
    r = post("/dashboard/patients/ATH-010/randomize", {"stratum": "immunoparalysis"})
    done = c.get(r.headers["location"], headers=h).text
    kits = re.findall(r'data-testid="kit-number">([A-Z]+-[0-9A-F]+)<', done)
    assert [k.split("-")[0] for k in kits] == ["IV", "SC"]
    assert not any(s in done for s in BLIND_STRINGS) and not any(w in done.lower() for w in map(str.lower,
                                                                                                  DRUG_WORDS))
    post("/dashboard/patients/ATH-010/doses", {"kit": "IV", "given_at": t, "number": "1"})
    post("/dashboard/patients/ATH-010/followup", {
        "day": "0", "assessed_at": t, **{k: ("yes" if v is True else str(v)) for k, v in SOFA_INPUTS.items()}})
    post("/dashboard/patients/ATH-010/adverse-events", {
        "term": "Thrombocytopenia", "onset_at": t, "grade": "3", "serious": "yes", "relatedness": "possible",
        "outcome": "not_recovered"})
    page = c.get("/dashboard/patients/ATH-010", headers=h).text
    assert '<span class="dose on_time" title="IV dose 1,' in page
    assert "Thrombocytopenia" in page and "initial: <span" in page
    assert 'data-testid="sofa-plot"><svg' in page and "Respiration" in page


def test_naive_time_is_refused_naming_the_field(write_client: TestClient) -> None:
    """A follow-up time without UTC offset re-renders the patient page with 422 and the field named."""
    h = login(write_client, "coord-ath")
    page = write_client.get("/dashboard/patients/ATH-003", headers=h).text
    r = write_client.post("/dashboard/patients/ATH-001/followup",
                          data={"csrf": csrf_of(page), "day": "2", "sofa_total": "7",
                                "assessed_at": "2025-03-03T09:00"}, headers=h)
    assert r.status_code == 422 and "assessed_at" in r.text and 'data-testid="error"' in r.text
    assert "Patient ATH-001" in r.text


def test_a_late_adverse_event_needs_the_forms_reason_which_the_audit_trail_keeps(write_client: TestClient) -> None:
    """An AE the site became aware of 26 h ago is refused without a reason (422 IG-E419: a late entry; the form has
    the reason field); with the reason it is recorded and the reason is on its audit entries."""
    h = login(write_client, "coord-ath")
    csrf = csrf_of(write_client.get("/dashboard/patients/ATH-001", headers=h).text)
    ae = {"csrf": csrf, "term": "Rash", "onset_at": (NOW - timedelta(hours=27)).isoformat(),
          "aware_at": (NOW - timedelta(hours=26)).isoformat(), "grade": "1", "serious": "no",
          "relatedness": "possible", "outcome": "recovered"}
    r = write_client.post("/dashboard/patients/ATH-001/adverse-events", data=ae, headers=h, follow_redirects=False)
    assert r.status_code == 422 and "IG-E419" in r.text and "or a reason for the late entry" in r.text
    assert 'name="late_entry_reason"' in r.text
    r = write_client.post("/dashboard/patients/ATH-001/adverse-events",
                          data={**ae, "late_entry_reason": "found in the nursing notes"}, headers=h,
                          follow_redirects=False)
    assert r.status_code == 303
    from sqlalchemy import select

    from immunoguide.trial.models import AuditRecord

    with write_client.app.state.service.store.session() as s:  # type: ignore[attr-defined]
        reasons = [r.reason for r in s.execute(select(AuditRecord).where(
            AuditRecord.table_name == "adverse_events", AuditRecord.action == "insert")).scalars()]
    assert any(x and x.endswith("found in the nursing notes") for x in reasons)


def test_randomising_with_a_stratum_other_than_the_patients_is_refused(write_client: TestClient) -> None:
    """A stale confirmation (stratum changed) is refused 409 and the patient stays unrandomised."""
    h = login(write_client, "coord-ath")
    csrf = csrf_of(write_client.get("/dashboard/site", headers=h).text)
    r = write_client.post("/dashboard/patients/ATH-003/randomize", data={"csrf": csrf, "stratum": "MALS"}, headers=h)
    assert r.status_code == 409 and "IG-E4" in r.text
    assert "ATH-003/randomised" not in r.text


def test_post_without_the_csrf_field_is_refused(write_client: TestClient) -> None:
    """A form without the session's CSRF value is refused 403 and stores nothing."""
    h = login(write_client, "coord-ath")
    r = write_client.post("/dashboard/patients", data={"code": "ATH-099", "csrf": "0" * 40}, headers=h)
    assert r.status_code == 403
    assert "ATH-099" not in write_client.get("/dashboard/site", headers=h).text


def test_initial_sae_report_stops_the_24_hour_clock(write_client: TestClient) -> None:
    """Recording the initial report of the seeded serious AE turns its 24 h clock from pending to on time."""
    h = login(write_client, "coord-ath")
    page = write_client.get("/dashboard/patients/ATH-001", headers=h).text
    assert "initial: <span class=\"unk\">pending</span>" in page
    form = re.search(r'action="/dashboard/patients/ATH-001/adverse-events/(\d+)/reports"', page)
    assert form
    r = write_client.post(f"/dashboard/patients/ATH-001/adverse-events/{form.group(1)}/reports",
                          data={"csrf": csrf_of(page), "kind": "initial", "reported_at": NOW.isoformat()}, headers=h,
                          follow_redirects=False)
    assert r.status_code == 303
    page = write_client.get("/dashboard/patients/ATH-001", headers=h).text
    assert "initial: <span class=\"yes\">on_time</span>" in page and "full: <span class=\"unk\">pending</span>" in page


def test_screen_error_keeps_the_entered_values(write_client: TestClient) -> None:
    """An implausible age re-renders the site view (422) with the error and the values the user typed."""
    h = login(write_client, "coord-ath")
    csrf = csrf_of(write_client.get("/dashboard/site", headers=h).text)
    r = write_client.post("/dashboard/patients", data={"csrf": csrf, "code": "ATH-011", "age_years": "400"},
                          headers=h)
    assert r.status_code == 422 and "age_years" in r.text
    assert 'name="code" required maxlength="64" value="ATH-011"' in r.text
