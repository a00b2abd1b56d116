"""HL7 CDS Hooks ``patient-view``: golden cards for three patients, what-to-measure-next, malformed prefetch.

Golden cards (``tests/golden/cds_cards_<patient>.json``) are the full responses for the prefetch built by
``service_support.patient_view_request`` at the fixed clock ``service_support.NOW``. The patients are constructed
cases, not published vignettes: their expected content follows from the ImmunoSep protocol file
(``protocols/immunosep-2025.toml``: MALS ferritin > 4420 ng/mL; immunoparalysis ferritin <= 4420 ng/mL and
QuantiBRITE mHLA-DR < 5000 AB/c; I7 < 72 h from Sepsis-3 onset to the first dose). After a deliberate change,
regenerate them with::

    .venv/bin/python tests/test_service_cds_hooks.py --regenerate

and review the diff before committing.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service_support import NOW, PASSWORD, patient_view_request

GOLDEN = Path(__file__).parent / "golden"
HOOK = "/cds-services/immunoguide-patient-view"
KINDS = ("immunoparalysis", "mals", "indeterminate")


def _client() -> Any:
    from immunoguide.service import ServiceSettings, create_app

    app = create_app("sqlite://", settings=ServiceSettings(auto_upgrade=True, simulation_store=True, clock=lambda: NOW))
    return app, TestClient(app)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """A service over an in-memory store with one logged-in user (an EHR service account)."""
    app, c = _client()
    with c:
        app.state.service.users.create_user("ehr", PASSWORD, "investigator", "ATH")
        r = c.post("/auth/token", json={"username": "ehr", "password": PASSWORD})
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


def _golden(kind: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"cds_cards_{kind}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", KINDS)
def test_patient_view_cards_match_the_golden_file(client: TestClient, kind: str) -> None:
    """The whole CDS response for each constructed patient equals its reviewed golden file."""
    r = client.post(HOOK, json=patient_view_request(kind))
    assert r.status_code == 200, r.text
    assert r.json() == _golden(kind)


def test_immunoparalysis_card_states_endotype_markers_eligibility_and_window(client: TestClient) -> None:
    """mHLA-DR 3,100 AB/c with ferritin 820 ng/mL: immunoparalysis, eligible, window closes 72 - 31 = 41 h from now."""
    card = client.post(HOOK, json=patient_view_request("immunoparalysis")).json()["cards"][0]
    assert card["summary"] == ("Immunoparalysis (mHLA-DR 3,100 AB/c, ferritin 820 ng/mL): eligible for "
                               "immunosep-2025@1.0.0; screening window closes in 41 h")
    assert card["indicator"] == "warning"
    assert card["source"]["label"] == "immunoguide immunosep-2025@1.0.0"
    assert "| mHLA-DR | 3,100 AB/c | quantibrite_abc |" in card["detail"]
    assert card["extension"]["hours_left"] == 41.0


def test_mals_by_ferritin_alone_needs_no_hla_dr(client: TestClient) -> None:
    """Ferritin 6,500 µg/L (= ng/mL) > 4420 decides MALS (precedence 1) without an mHLA-DR result."""
    card = client.post(HOOK, json=patient_view_request("mals")).json()["cards"][0]
    assert card["extension"]["endotype"] == "MALS"
    assert card["summary"].startswith("MALS (ferritin 6,500 ng/mL): eligible")


def test_censored_ferritin_card_says_what_to_measure_next(client: TestClient) -> None:
    """Ferritin 'GREATER THAN 2000' with no mHLA-DR: indeterminate; measure an exact ferritin and mHLA-DR."""
    card = client.post(HOOK, json=patient_view_request("indeterminate")).json()["cards"][0]
    assert card["extension"]["endotype"] == "indeterminate"
    assert card["extension"]["possible_endotypes"] == ["MALS", "immunoparalysis", "unclassified"]
    assert card["indicator"] == "info"
    assert card["extension"]["measure_next"][0].startswith(
        "Measure ferritin as an exact value (ng/mL): the reported >2000 ng/mL cannot decide the cut-off 4420 ng/mL")
    assert card["extension"]["measure_next"][1].startswith("Measure monocyte HLA-DR (QuantiBRITE, AB/c)")


def test_ferritin_below_cut_off_without_hla_dr_asks_for_hla_dr(client: TestClient) -> None:
    """Ferritin 820 ng/mL (<= 4420) alone leaves immunoparalysis or unclassified: measure QuantiBRITE mHLA-DR."""
    req = patient_view_request("immunoparalysis")
    obs = req["prefetch"]["observations"]
    obs["entry"] = [e for e in obs["entry"] if e["resource"]["id"] != "hla-ip"]
    card = client.post(HOOK, json=req).json()["cards"][0]
    assert card["extension"]["measure_next"] == [
        "Measure monocyte HLA-DR (QuantiBRITE, AB/c): ferritin 820 ng/mL ≤ 4420 cannot separate immunoparalysis "
        "from unclassified"]
    assert card["summary"] == "Immune state indeterminate (ferritin 820 ng/mL): measure mHLA-DR (QuantiBRITE, AB/c)"


def test_hla_dr_measured_by_mfi_is_not_used_and_quantibrite_is_asked_for(client: TestClient) -> None:
    """An mHLA-DR result by MFI is not comparable with the AB/c cut-off: not used, measure by QuantiBRITE."""
    req = patient_view_request("immunoparalysis")
    for e in req["prefetch"]["observations"]["entry"]:
        if e["resource"]["id"] == "hla-ip":
            e["resource"]["method"] = {"coding": [{"code": "mfi"}]}
    card = client.post(HOOK, json=req).json()["cards"][0]
    assert card["extension"]["endotype"] == "indeterminate"
    assert card["extension"]["measure_next"][0].startswith("Measure monocyte HLA-DR by QuantiBRITE, AB/c")


def test_unknown_sepsis_onset_is_said_and_no_window_is_computed(client: TestClient) -> None:
    """Without a sepsis Condition or the onset extension, the card says the onset is unknown."""
    req = patient_view_request("immunoparalysis")
    conds = req["prefetch"]["conditions"]
    conds["entry"] = [e for e in conds["entry"] if not e["resource"]["id"].startswith("sepsis")]
    card = client.post(HOOK, json=req).json()["cards"][0]
    assert card["extension"]["window_closes_at"] is None
    assert "Sepsis-3 onset unknown" in card["summary"]
    assert "I5" not in card["extension"]["open_criteria"]


def test_onset_extension_takes_precedence_over_the_condition_onset(client: TestClient) -> None:
    """The sepsis3-onset extension on the Patient sets the window anchor (here 70 h ago: 2 h left)."""
    from immunoguide.service.cds_hooks import SEPSIS3_ONSET_EXTENSION

    req = patient_view_request("immunoparalysis")
    req["prefetch"]["patient"]["extension"] = [{"url": SEPSIS3_ONSET_EXTENSION, "valueDateTime": "2025-02-28T12:00:00Z"}]
    card = client.post(HOOK, json=req).json()["cards"][0]
    assert card["extension"]["hours_left"] == 2.0
    assert card["extension"]["sepsis3_onset"] == "2025-02-28T12:00:00Z"


def test_window_elapsed_makes_the_patient_not_eligible(client: TestClient) -> None:
    """An onset 80 h ago closes the < 72 h window (I7 not met): not eligible."""
    from immunoguide.service.cds_hooks import SEPSIS3_ONSET_EXTENSION

    req = patient_view_request("immunoparalysis")
    req["prefetch"]["patient"]["extension"] = [{"url": SEPSIS3_ONSET_EXTENSION, "valueDateTime": "2025-02-28T02:00:00Z"}]
    card = client.post(HOOK, json=req).json()["cards"][0]
    assert card["extension"]["eligibility"] == "not_eligible"
    assert "I7" in card["extension"]["blocking"]
    assert card["indicator"] == "info"


def test_unusable_observation_is_listed_not_silently_dropped(client: TestClient) -> None:
    """A ferritin in a unit the concept does not accept is named under 'Not used from the prefetch'."""
    req = patient_view_request("mals")
    for e in req["prefetch"]["observations"]["entry"]:
        if e["resource"]["id"] == "fer-mals":
            e["resource"]["valueQuantity"]["unit"] = e["resource"]["valueQuantity"]["code"] = "mg/dL"
    card = client.post(HOOK, json=req).json()["cards"][0]
    assert "Observation/fer-mals: ferritin_ng_per_ml: unit 'mg/dL' not accepted" in card["detail"]
    assert card["extension"]["endotype"] == "indeterminate"


def test_discovery_lists_the_patient_view_service_without_authentication(client: TestClient) -> None:
    """GET /cds-services answers without a token and names the required prefetch keys."""
    r = client.get("/cds-services", headers={"Authorization": ""})
    svc = r.json()["services"][0]
    assert (r.status_code, svc["hook"], svc["id"]) == (200, "patient-view", "immunoguide-patient-view")
    assert {"patient", "observations"} <= set(svc["prefetch"])
    assert "http://loinc.org|2276-4" in svc["prefetch"]["observations"]


def test_service_call_needs_a_token(client: TestClient) -> None:
    """The hook itself requires an authenticated service account."""
    r = client.post(HOOK, json=patient_view_request("mals"), headers={"Authorization": ""})
    assert (r.status_code, r.json()["code"]) == (401, "IG-E418")


def _drop_prefetch(req: dict[str, Any]) -> None:
    del req["prefetch"]


def _status_missing(req: dict[str, Any]) -> None:
    del req["prefetch"]["observations"]["entry"][0]["resource"]["status"]


def _other_patient(req: dict[str, Any]) -> None:
    req["prefetch"]["observations"]["entry"][2]["resource"]["subject"]["reference"] = "Patient/someone-else"


def _naive_time(req: dict[str, Any]) -> None:
    req["prefetch"]["observations"]["entry"][1]["resource"]["effectiveDateTime"] = "2025-03-03T04:00:00"


def _list_not_bundle(req: dict[str, Any]) -> None:
    req["prefetch"]["observations"] = [e["resource"] for e in req["prefetch"]["observations"]["entry"]]


def _wrong_type(req: dict[str, Any]) -> None:
    req["prefetch"]["patient"] = {"resourceType": "Observation", "id": "x", "status": "final", "code": {}}


def _wrong_hook(req: dict[str, Any]) -> None:
    req["hook"] = "order-sign"


def _patient_mismatch(req: dict[str, Any]) -> None:
    req["context"]["patientId"] = "another"


def _entry_without_resource(req: dict[str, Any]) -> None:
    req["prefetch"]["conditions"]["entry"].append({"fullUrl": "urn:x"})


def _bad_quantity(req: dict[str, Any]) -> None:
    req["prefetch"]["observations"]["entry"][0]["resource"]["valueQuantity"]["value"] = "lots"


MALFORMED = {
    "no_prefetch": (_drop_prefetch, "IG-E103", "prefetch.patient"),
    "observation_without_status": (_status_missing, "IG-E100", "prefetch.observations.entry[0].resource.status"),
    "observation_of_another_patient": (_other_patient, "IG-E104", "prefetch.observations.entry[2].resource.subject"),
    "time_without_offset": (_naive_time, "IG-E100", "prefetch.observations.entry[1].resource.effectiveDateTime"),
    "observations_not_a_bundle": (_list_not_bundle, "IG-E100", "prefetch.observations"),
    "patient_of_wrong_type": (_wrong_type, "IG-E100", "prefetch.patient.resourceType"),
    "wrong_hook": (_wrong_hook, "IG-E100", "hook"),
    "patient_not_the_context_patient": (_patient_mismatch, "IG-E104", "prefetch.patient.id"),
    "entry_without_resource": (_entry_without_resource, "IG-E100", "prefetch.conditions.entry[2]"),
    "quantity_not_a_number": (_bad_quantity, "IG-E100", "prefetch.observations.entry[0].resource.valueQuantity.value"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_prefetch_is_refused_with_code_and_place(client: TestClient, case: str) -> None:
    """Each malformed call is a 422 whose error code and field say what is wrong and where."""
    mutate, code, field = MALFORMED[case]
    req = copy.deepcopy(patient_view_request("immunoparalysis"))
    mutate(req)
    r = client.post(HOOK, json=req)
    assert r.status_code == 422, r.text
    assert (r.json()["code"], r.json()["field"]) == (code, field)


def regenerate() -> None:
    """Rewrite the golden card files from the current code (review the diff afterwards)."""
    app, c = _client()
    with c:
        app.state.service.users.create_user("ehr", PASSWORD, "investigator", "ATH")
        tok = c.post("/auth/token", json={"username": "ehr", "password": PASSWORD}).json()["access_token"]
        for kind in KINDS:
            r = c.post(HOOK, json=patient_view_request(kind), headers={"Authorization": f"Bearer {tok}"})
            r.raise_for_status()
            path = GOLDEN / f"cds_cards_{kind}.json"
            path.write_text(json.dumps(r.json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        sys.path.insert(0, str(Path(__file__).parent))
        regenerate()
    else:
        print(__doc__)
