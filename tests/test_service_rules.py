"""``/rules``: the REST answers are the rules' own results, and bad input is refused with the domain error code."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from immunoguide.protocols import load_protocol
from immunoguide.rules.eligibility import PatientRecord, evaluate_eligibility
from immunoguide.rules.endotype import classify_endotype, results_from_record
from immunoguide.rules.sofa import SofaInputs, score_sofa
from immunoguide.service import ServiceSettings, create_app
from service_support import NOW, PASSWORD, screening_record

PROTOCOL = load_protocol("immunosep-2025")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """A service over an in-memory store with one user."""
    app = create_app("sqlite://", settings=ServiceSettings(auto_upgrade=True, simulation_store=True, clock=lambda: NOW))
    with TestClient(app) as c:
        app.state.service.users.create_user("coord", PASSWORD, "site_coordinator", "ATH")
        r = c.post("/auth/token", json={"username": "coord", "password": PASSWORD})
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


def test_sofa_route_returns_score_sofa_result_for_the_same_inputs(client: TestClient) -> None:
    """POST /rules/sofa gives exactly what score_sofa gives for the same record, unit variants converted once."""
    record = {"platelets_10e3_per_ul": 45, "bilirubin_umol_per_l": 34.208, "map_mmhg": 62, "gcs": 12,
              "creatinine_mg_per_dl": 2.4, "pao2_mmhg": 70, "fio2_percent": 50}
    r = client.post("/rules/sofa", json={"inputs": record})
    assert r.status_code == 200
    assert r.json() == score_sofa(SofaInputs.from_record(record)).to_dict()
    assert r.json()["inputs_used"]["bilirubin_mg_per_dl"] == 2.0


def test_sofa2_criteria_and_policy_override_are_recorded_in_the_result(client: TestClient) -> None:
    """The criteria label and the overridden policy come back in the result."""
    r = client.post("/rules/sofa", json={"inputs": {"platelets_10e3_per_ul": 90}, "criteria": "sofa1",
                                         "policies": {"missing_component": "no_imputation"}})
    assert r.status_code == 200
    assert r.json()["policies"]["missing_component"] == "no_imputation"
    assert r.json()["total"] is None


def test_implausible_platelets_are_refused_with_code_and_field(client: TestClient) -> None:
    """A negative platelet count is a 422 with IG-E102 naming the field, never scored."""
    r = client.post("/rules/sofa", json={"inputs": {"platelets_10e3_per_ul": -5}})
    assert r.status_code == 422
    body = r.json()
    assert (body["code"], body["error"], body["field"]) == ("IG-E102", "ImplausibleValueError", "platelets_10e3_per_ul")
    assert body["docs_url"].endswith("IG-E102")
    assert set(body) >= {"code", "error", "message", "expected", "got", "where", "field", "todo", "docs_url"}


def test_unknown_sofa_field_is_refused_naming_the_field(client: TestClient) -> None:
    """A misspelt input field is an IG-E100 error whose field is the misspelt name."""
    r = client.post("/rules/sofa", json={"inputs": {"platelet": 90}})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (422, "IG-E100", "platelet")


def test_unknown_policy_option_is_a_policy_error(client: TestClient) -> None:
    """An option the policy does not offer is 422 with the policy code IG-E300."""
    r = client.post("/rules/sofa", json={"inputs": {"gcs": 15}, "policies": {"missing_component": "guess"}})
    assert (r.status_code, r.json()["code"]) == (422, "IG-E300")


@pytest.mark.parametrize("delta", [-1.0, 0.0, 1.0])
def test_classify_route_agrees_with_the_rule_around_the_ferritin_cut_off(client: TestClient, delta: float) -> None:
    """Below, at and above the protocol file's ferritin threshold the route returns classify_endotype's result."""
    mals = next(r for r in PROTOCOL.classification.endotypes if r.name == "MALS")
    cut = next(c for c in mals.all_of if c.analyte == "ferritin").threshold
    record = {"ferritin": cut + delta, "ferritin_unit": "ng/mL", "hla_dr_per_monocyte": 3100,
              "hla_dr_method": "quantibrite_abc", "id": "p1"}
    r = client.post("/rules/classify", json={"record": record})
    results, anchor, at = results_from_record(record, PROTOCOL.classification)
    expected = classify_endotype(PROTOCOL.classification, results, anchor_time=anchor, at=at,
                                 protocol_label=PROTOCOL.label)
    assert r.status_code == 200
    assert r.json() == {"id": "p1", **expected.to_dict()}
    assert r.json()["endotype"] == ("MALS" if delta > 0 else "immunoparalysis")


def test_censored_ferritin_is_indeterminate_with_the_endotypes_still_possible(client: TestClient) -> None:
    """'GREATER THAN 2000' cannot decide the 4420 cut-off: indeterminate, with MALS among the possibilities."""
    r = client.post("/rules/classify", json={"record": {"ferritin": "GREATER THAN 2000", "ferritin_unit": "ng/mL"}})
    assert r.json()["endotype"] == "indeterminate"
    assert "MALS" in r.json()["possible_endotypes"]
    assert "censored_undecidable" in [x["code"] for x in r.json()["reasons"]]


def test_ferritin_without_unit_is_a_missing_input_error(client: TestClient) -> None:
    """A value without its unit is refused (IG-E103) naming ferritin_unit."""
    r = client.post("/rules/classify", json={"record": {"ferritin": 820}})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (422, "IG-E103", "ferritin_unit")


@pytest.mark.parametrize("protocol", ["no-such-protocol", "immunosep-2025@9.9.9"])
def test_unknown_protocol_is_refused_with_the_criteria_code(client: TestClient, protocol: str) -> None:
    """An id that is not shipped (or a version that is not) is 422 IG-E203."""
    r = client.post("/rules/classify", json={"protocol": protocol, "record": {}})
    assert (r.status_code, r.json()["code"]) == (422, "IG-E203")


@pytest.mark.parametrize("protocol", ["/etc/passwd.toml", "../immunosep-2025.toml", "C:\\x.toml"])
def test_protocol_file_paths_are_never_read_from_a_request(client: TestClient, protocol: str) -> None:
    """A path in the protocol field is refused by the request schema before anything is loaded."""
    r = client.post("/rules/eligibility", json={"protocol": protocol, "patient": {}})
    assert (r.status_code, r.json()["code"], r.json()["error"]) == (422, "IG-E100", "RequestValidationError")
    assert r.json()["errors"][0]["loc"] == ["body", "protocol"]


def test_eligibility_route_returns_evaluate_eligibility_result(client: TestClient) -> None:
    """The route's result equals evaluate_eligibility on the same record and time."""
    patient = {**screening_record(), "consent": "patient", "endotype": "immunoparalysis",
               "planned_first_dose_time": NOW.isoformat()}
    r = client.post("/rules/eligibility", json={"patient": patient, "at": NOW.isoformat()})
    expected = evaluate_eligibility(PROTOCOL, PatientRecord.model_validate(patient), at=NOW)
    assert r.status_code == 200
    assert r.json() == expected.to_dict()
    assert r.json()["eligible"] is True


def test_eligibility_with_an_unknown_field_names_it(client: TestClient) -> None:
    """A field PatientRecord does not know is an IG-E100 error with the field named."""
    r = client.post("/rules/eligibility", json={"patient": {"age": 70}})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (422, "IG-E100", "age")


def test_rules_need_a_token(client: TestClient) -> None:
    """Without a bearer token the rules answer 401 IG-E418 with a WWW-Authenticate challenge."""
    r = client.post("/rules/sofa", json={"inputs": {}}, headers={"Authorization": ""})
    assert (r.status_code, r.json()["code"]) == (401, "IG-E418")
    assert r.headers["www-authenticate"] == "Bearer"


def test_malformed_json_is_refused_with_pydantic_errors(client: TestClient) -> None:
    """Broken JSON is 422 with code IG-E100 and the pydantic error list (type, loc, msg, input, url)."""
    r = client.post("/rules/sofa", content=b'{"inputs": ', headers={"Content-Type": "application/json"})
    body = r.json()
    assert (r.status_code, body["code"], body["error"]) == (422, "IG-E100", "RequestValidationError")
    assert body["errors"][0]["type"] == "json_invalid"
    assert set(body["errors"][0]) == {"type", "loc", "msg", "input", "url"}


def test_unknown_route_and_wrong_method_carry_an_error_code(client: TestClient) -> None:
    """404 and 405 from the router have the same error body (code IG-E100)."""
    assert (client.get("/rules/nothing").status_code, client.get("/rules/nothing").json()["code"]) == (404, "IG-E100")
    r = client.get("/rules/sofa")
    assert (r.status_code, r.json()["code"]) == (405, "IG-E100")


def test_protocol_list_names_every_shipped_protocol_with_its_version(client: TestClient) -> None:
    """GET /rules/protocols lists id@version labels of the shipped protocols."""
    from immunoguide.protocols import available_protocols

    r = client.get("/rules/protocols")
    assert [p["id"] for p in r.json()] == available_protocols()
    assert "immunosep-2025@1.0.0" in [p["label"] for p in r.json()]


def test_naive_and_aware_times_mixed_are_an_input_error(client: TestClient) -> None:
    """A naive sample time with an aware anchor is refused (IG-E100), not compared as local time."""
    record = {"ferritin": 820, "ferritin_unit": "ng/mL", "ferritin_sample_time": datetime(2025, 3, 1, 8).isoformat(),
              "anchor_time": NOW.isoformat()}
    r = client.post("/rules/classify", json={"record": record})
    assert (r.status_code, r.json()["code"]) == (422, "IG-E100")


@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused_before_any_rule(client: TestClient, token: str) -> None:
    """Python's JSON decoder accepts NaN/Infinity; the service refuses them (422 IG-E100) instead of converting
    units of an infinite FiO2."""
    r = client.post("/rules/sofa", content=f'{{"inputs": {{"fio2_percent": {token}}}}}'.encode(),
                    headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (422, "IG-E100")
    assert "inputs.fio2_percent" in r.json()["expected"]


def test_service_start_freezes_its_heap_so_full_collections_do_not_pause_requests() -> None:
    """After start-up the long-lived objects (modules, models, metadata) are frozen out of the collector's walk."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app("sqlite://", settings=ServiceSettings(auto_upgrade=True))) as c:
        assert c.get("/health").status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0  # given back at shutdown
