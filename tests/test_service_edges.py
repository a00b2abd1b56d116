"""Service edges of issue 15: request-size limit (also without login), login throttling, the same answer for another
site's study code and no such code, strict JSON bodies (duplicate keys, booleans, huge numbers, deep nesting: 422,
never 500), CDS Observations that contradict themselves are not used, the trial-alert CDS card, the store's clock."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from immunoguide.service import ServiceSettings, create_app
from service_support import (
    LOINC,
    NOW,
    PASSWORD,
    _obs,
    _q,
    client_for,
    copy_store,
    login,
    patient_view_request,
    seed_store,
)

HOOK = "/cds-services/immunoguide-patient-view"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edges") / "template.db"
    seed_store(path)
    return path


@pytest.fixture
def client(template: Path, tmp_path: Path) -> Any:
    with client_for(copy_store(template, tmp_path)) as c:
        yield c


# -- request size -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/auth/token", "/rules/sofa", "/dashboard/login"])
def test_a_body_over_the_limit_is_refused_413_before_login(client: TestClient, path: str) -> None:
    """A 2 MB body is refused with 413 IG-E112 on routes that need no login too (the limit is 1 MiB)."""
    r = client.post(path, content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "IG-E112"


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(client: TestClient) -> None:
    """A chunked body with no Content-Length is refused as soon as it passes the limit."""
    def chunks() -> Any:
        for _ in range(40):
            yield b" " * 65536

    r = client.post("/rules/sofa", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "IG-E112"


# -- strict JSON bodies -------------------------------------------------------------------------------------------


def _post_raw(client: TestClient, path: str, text: str, headers: dict[str, str]) -> Any:
    return client.post(path, content=text.encode(), headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"record": {"ferritin": 100, "ferritin_unit": "ng/mL", "ferritin": 6100}}', "IG-E110"),
        ('{"record": {"ferritin": ' + "9" * 400 + ', "ferritin_unit": "ng/mL"}}', "IG-E112"),
        ('{"record": {"ferritin": ' + "9" * 5000 + ', "ferritin_unit": "ng/mL"}}', "IG-E112"),
        ('{"record": ' + "[" * 100_000 + "]" * 100_000 + "}", "IG-E112"),
        ('{"record": {"ferritin": true, "ferritin_unit": "ng/mL"}}', "IG-E111"),
        ('{"record": {"ferritin_ng_per_ml": 9000, "ferritin_unit": "pmol/L"}}', "IG-E104"),
        ('{"record": {"ferritin": 6000, "ferritin_unit": "ng/mL", "ferritin_sample_time": "0001-01-01T00:00:00Z"}}',
         "IG-E102"),
    ],
)
def test_rest_classify_refuses_each_silent_wrong_answer_with_its_code(client: TestClient, body: str, code: str) -> None:
    """Duplicate keys, huge integers, 100 000-deep nesting, booleans, a stated unit that contradicts the field and a
    year-0001 sample are refused with 422 and their code — never classified, never a 500."""
    r = _post_raw(client, "/rules/classify", body, login(client, "stat"))
    assert (r.status_code, r.json()["code"]) == (422, code), r.text[:300]


def test_rest_sofa_refuses_boolean_platelets(client: TestClient) -> None:
    """``platelets_10e3_per_ul: false`` is not scored (coagulation 4 before): 422 IG-E111."""
    r = client.post("/rules/sofa", json={"inputs": {"platelets_10e3_per_ul": False}}, headers=login(client, "stat"))
    assert (r.status_code, r.json()["code"]) == (422, "IG-E111")


def test_near_cut_off_pmol_value_is_mals_over_rest(client: TestClient) -> None:
    """9931.75 pmol/L (4420.0045 ng/mL) is MALS over REST too."""
    r = client.post("/rules/classify", json={"record": {"ferritin": 9931.75, "ferritin_unit": "pmol/L"}},
                    headers=login(client, "stat"))
    assert r.json()["endotype"] == "MALS"


# -- login throttling -----------------------------------------------------------------------------------------------


def test_the_right_password_is_refused_after_too_many_wrong_ones(client: TestClient) -> None:
    """After 5 wrong passwords the account is locked: the right one gets 429 IG-E421 with Retry-After."""
    for _ in range(5):
        r = client.post("/auth/token", json={"username": "coord-ath", "password": "wrong password!"})
        assert r.status_code == 401
    r = client.post("/auth/token", json={"username": "coord-ath", "password": PASSWORD})
    assert (r.status_code, r.json()["code"]) == (429, "IG-E421")
    assert int(r.headers["Retry-After"]) > 0
    assert client.post("/auth/token", json={"username": "stat", "password": PASSWORD}).status_code == 200


def test_dashboard_login_is_throttled_too(client: TestClient) -> None:
    """The dashboard's login form shares the throttle: after 5 failures the right password gets 429."""
    for _ in range(5):
        client.post("/dashboard/login", data={"username": "inv-ath", "password": "nope nope nope"})
    r = client.post("/dashboard/login", data={"username": "inv-ath", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 429 and "IG-E421" in r.text


# -- another site's code ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["", "/followup", "/adverse-events", "/kits", "/doses", "/serial-endotypes"])
def test_another_sites_code_gets_the_answer_of_no_such_code(client: TestClient, route: str) -> None:
    """An Athens coordinator asking for MIL-001 gets exactly the 404 of a code that does not exist."""
    h = login(client, "coord-ath")
    other, none = client.get(f"/trial/patients/MIL-001{route}", headers=h), client.get(f"/trial/patients/MIL-404{route}",
                                                                                      headers=h)
    assert other.status_code == none.status_code == 404
    a, b = other.json(), none.json()
    assert {k: v for k, v in a.items() if k not in ("got", "message")} == {
        k: v for k, v in b.items() if k not in ("got", "message")}


# -- CDS Hooks edges ----------------------------------------------------------------------------------------------


def _with_ferritin(req: dict[str, Any], obs: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(req)
    entries = out["prefetch"]["observations"]["entry"]
    entries[:] = [e for e in entries if e["resource"]["code"]["coding"][0]["code"] != "2276-4"]
    entries.append({"fullUrl": f"urn:uuid:Observation-{obs['id']}", "resource": obs})
    return out


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda o: o["valueQuantity"].update(code="pmol/L", unit="ng/mL"), "IG-E104"),
        (lambda o: o.pop("subject"), "IG-E103"),
        (lambda o: o.update(dataAbsentReason={"coding": [{"code": "error"}]}), "IG-E104"),
        (lambda o: o.update(effectiveDateTime="0001-01-01T00:00:00Z"), "IG-E102"),
    ],
)
def test_self_contradictory_cds_observation_is_not_used(client: TestClient, change: Any, why: str) -> None:
    """A UCUM code contradicting the unit text, no subject, a value with a dataAbsentReason, a year-0001 time: the
    ferritin is listed as not used (with the code) and the endotype does not rest on it."""
    req = patient_view_request("mals")
    pid = req["prefetch"]["patient"]["id"]
    obs = _obs("ferr-x", pid, LOINC, "2276-4", 3, **_q(9000, "ng/mL"))
    change(obs)
    card = client.post(HOOK, json=_with_ferritin(req, obs), headers=login(client, "stat")).json()["cards"][0]
    assert card["extension"]["endotype"] != "MALS"
    assert "Observation/ferr-x" in card["detail"] and why in card["detail"]


def test_cds_body_with_duplicate_keys_is_refused(client: TestClient) -> None:
    """A duplicate key anywhere in the hook call is 422 IG-E110 (not the last value)."""
    body = json.dumps(patient_view_request("mals"))
    body = body.replace('"hook": "patient-view"', '"hook": "patient-view", "hook": "patient-view"', 1)
    r = _post_raw(client, HOOK, body, login(client, "stat"))
    assert (r.status_code, r.json()["code"]) == (422, "IG-E110")


def test_cds_card_lists_the_trial_alerts_of_a_trial_patient(template: Path, tmp_path: Path) -> None:
    """A Patient with the trial's study-code identifier gets a card with its alerts (here: a pending mHLA-DR whose
    result would come after the window closes), for a user who may see the patient; another site's user gets none."""
    from immunoguide import trial
    from immunoguide.service.cds_hooks import STUDY_CODE_SYSTEM
    from immunoguide.trial.access import Actor
    from immunoguide.trial.store import TrialStore

    db = copy_store(template, tmp_path)
    st = TrialStore(f"sqlite:///{db}")
    with st.session() as s:
        trial.enter_labs(s, "MIL-002", {"hla_dr_sample_time": (NOW - timedelta(hours=1)).isoformat()},
                         actor=Actor("seed-MIL", "site_coordinator", "MIL"), now=NOW)
    st.dispose()
    req = patient_view_request("mals")
    req["prefetch"]["patient"]["identifier"] = [{"system": STUDY_CODE_SYSTEM, "value": "MIL-002"}]
    late = NOW + timedelta(hours=40)  # onset NOW-40h: the 72 h window has closed
    cfg = ServiceSettings(clock=lambda: late)
    with TestClient(create_app(f"sqlite:///{db}", settings=cfg), raise_server_exceptions=False) as c:
        cards = c.post(HOOK, json=req, headers=login(c, "coord-mil")).json()["cards"]
        other = c.post(HOOK, json=req, headers=login(c, "coord-ath")).json()["cards"]
    trial_card = next(x for x in cards if x["source"]["label"] == "immunoguide trial monitoring")
    assert trial_card["indicator"] == "critical" and "pending assay after window" in trial_card["summary"]
    assert all(x["source"]["label"] != "immunoguide trial monitoring" for x in other)


# -- the store's clock --------------------------------------------------------------------------------------------


def test_service_runs_on_the_stores_simulated_clock(template: Path, tmp_path: Path) -> None:
    """A store whose clock is simulated (demo) gives the dashboard and REST its time line, not the wall clock: the
    study day of a patient randomised at the simulated time is 0, not thousands of days negative."""
    from immunoguide.trial.access import Actor
    from immunoguide.trial.clock import read_store_clock
    from immunoguide.trial.store import TrialStore, set_store_clock

    db = copy_store(template, tmp_path)
    st = TrialStore(f"sqlite:///{db}")
    with st.session() as s:
        set_store_clock(s, simulated_now=NOW, frozen=True, actor=Actor("admin", "administrator"),
                        wall_now=datetime.now(UTC), note="test")
    with st.session() as s:
        assert read_store_clock(s).now(datetime(2030, 1, 1, tzinfo=UTC)) == NOW
        from immunoguide.trial import verify_audit

        assert verify_audit(s).ok
    st.dispose()
    with TestClient(create_app(f"sqlite:///{db}"), raise_server_exceptions=False) as c:
        h = login(c, "coord-ath")
        fu = c.get("/trial/patients/ATH-001/followup", headers=h).json()
        c.post("/dashboard/login", data={"username": "inv-ath", "password": PASSWORD}, follow_redirects=False)
        site = c.get("/dashboard/site")
    assert fu["overdue_days"] == []  # randomised 20 h before the store's time: day 0, nothing overdue yet
    assert site.status_code == 200 and "day 0" in site.text and "day -" not in site.text
