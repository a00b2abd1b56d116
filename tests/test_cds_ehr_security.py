"""CDS Hooks 2.0 as an EHR calls it: signed JWTs against the EHR's JWK Set, fhirServer queries, cards' links.

The EHR is :class:`immunoguide.ehr_sandbox.EhrSandbox` served by uvicorn on a loopback port: it signs the JWTs,
publishes its keys and answers the FHIR searches (a FHIR REST double limited to the interactions the service uses;
its resources are validated with fhir.resources R4B). The service under test runs in a TestClient with the fixed
clock ``NOW`` and trusts that EHR only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from immunoguide.ehr_sandbox import EhrSandbox, free_port, serve_in_thread
from immunoguide.service import ServiceSettings, create_app
from immunoguide.service.cds_cards import STUDY_CODE_SYSTEM
from immunoguide.service.cds_security import EhrIssuer, EhrSettings
from service_support import NOW, PASSWORD, patient_view_request

SERVICE_URL = "https://immunoguide.test"
HOOK = "/cds-services/immunoguide-patient-view"
AUD = SERVICE_URL + HOOK


@pytest.fixture(scope="module")
def ehr() -> Iterator[EhrSandbox]:
    """The sandbox EHR on a free loopback port, holding the three constructed patients' resources."""
    sock = free_port()
    sb = EhrSandbox(f"http://127.0.0.1:{sock.getsockname()[1]}")
    for kind in ("immunoparalysis", "mals", "indeterminate"):
        pf = patient_view_request(kind)["prefetch"]
        patient = dict(pf["patient"])
        if kind == "immunoparalysis":
            patient["identifier"] = [{"system": STUDY_CODE_SYSTEM, "value": "ATH-001"}]
        sb.add(patient)
        for key in ("observations", "flags", "conditions", "encounter"):
            sb.add(*(e["resource"] for e in pf[key]["entry"]))
    with serve_in_thread(sb.app, sock):
        yield sb


def _settings(ehr: EhrSandbox, **kw: Any) -> ServiceSettings:
    issuer = EhrIssuer(iss=ehr.base_url, name="sandbox", jwks_url=ehr.jwks_url, subjects=(ehr.cds_client_id,),
                       fhir_servers=(ehr.fhir_base,))
    kw.setdefault("jwks_min_refresh_s", 0)
    return ServiceSettings(auto_upgrade=True, simulation_store=True, clock=lambda: NOW,  # a fixed clock: simulation
                           ehr=EhrSettings(service_url=SERVICE_URL, issuers=(issuer,), **kw))


@pytest.fixture
def client(ehr: EhrSandbox) -> Iterator[TestClient]:
    """A fresh service (empty JWK Set cache and replay memory) trusting the sandbox EHR."""
    app = create_app("sqlite://", settings=_settings(ehr))
    with TestClient(app) as c:
        yield c


def _call(client: TestClient, token: str, body: dict[str, Any]) -> Any:
    return client.post(HOOK, json=body, headers={"Authorization": f"Bearer {token}"})


def _full(kind: str = "immunoparalysis") -> dict[str, Any]:
    return copy.deepcopy(patient_view_request(kind))


def test_ehr_signed_jwt_gets_cards(client: TestClient, ehr: EhrSandbox) -> None:
    """A JWT signed RS384 by the registered EHR, aud = the service URL, gets the immunoparalysis card."""
    r = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full())
    assert r.status_code == 200, r.text
    card = r.json()["cards"][0]
    assert card["extension"]["endotype"] == "immunoparalysis"


def test_ehr_signed_es384_jwt_is_accepted(client: TestClient, ehr: EhrSandbox) -> None:
    """ES384 (P-384) is the other algorithm CDS Hooks names; a rotated-in EC key verifies too."""
    kid = ehr.rotate_key("ES384")
    try:
        r = _call(client, ehr.sign_cds_jwt(AUD, now=NOW, kid=kid), _full())
        assert r.status_code == 200, r.text
    finally:
        ehr.retire_key(kid)


def _refused(r: Any, words: str) -> None:
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["code"] == "IG-E418"
    assert words in body["message"], body["message"]
    assert r.headers.get("www-authenticate") == "Bearer"


def test_wrong_audience_is_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """A token addressed to another service (aud) is refused with 401, naming the expected aud."""
    _refused(_call(client, ehr.sign_cds_jwt("https://other.test/cds-services/x", now=NOW), _full()), f"aud = {AUD}")


def test_expired_token_is_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """A token that expired more than the 60 s leeway ago is refused."""
    token = ehr.sign_cds_jwt(AUD, now=NOW - timedelta(minutes=7), lifetime_s=300)
    _refused(_call(client, token, _full()), "expired 120 s ago")


def test_clock_skew_within_the_leeway_is_tolerated(client: TestClient, ehr: EhrSandbox) -> None:
    """A token issued 30 s 'in the future' by a fast EHR clock, or expired 30 s ago, still verifies (leeway 60 s)."""
    assert _call(client, ehr.sign_cds_jwt(AUD, now=NOW + timedelta(seconds=30)), _full()).status_code == 200
    late = ehr.sign_cds_jwt(AUD, now=NOW - timedelta(seconds=330), lifetime_s=300)
    assert _call(client, late, _full()).status_code == 200


def test_token_from_the_future_beyond_the_leeway_is_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """iat two minutes ahead of the service clock is refused."""
    _refused(_call(client, ehr.sign_cds_jwt(AUD, now=NOW + timedelta(minutes=2)), _full()), "iat 120 s ahead")


def test_long_lived_token_is_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """exp - iat of one hour exceeds the five minutes the service accepts."""
    _refused(_call(client, ehr.sign_cds_jwt(AUD, now=NOW, lifetime_s=3600), _full()), "at most 300 s")


def test_unknown_issuer_is_refused_without_fetching_keys(client: TestClient, ehr: EhrSandbox) -> None:
    """A JWT whose iss is not a registered EHR is refused before any key is fetched."""
    before = len(ehr.requests)
    token = ehr.sign_cds_jwt(AUD, now=NOW, iss="https://rogue-ehr.test")
    _refused(_call(client, token, _full()), "trusted EHR issuer")
    assert client.app.state.cds_jwt_verifier.jwks.fetches == 0  # type: ignore[attr-defined]
    assert len(ehr.requests) == before


def test_token_signed_by_another_key_is_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """A token whose signature does not verify with the EHR's published key of that kid is refused."""
    rogue = EhrSandbox(ehr.base_url)
    rogue.keys[-1].kid = ehr.keys[-1].kid  # same iss and kid, different private key
    _refused(_call(client, rogue.sign_cds_jwt(AUD, now=NOW), _full()), "valid signature")


def test_replayed_jti_is_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """The same token (same jti) is accepted once only."""
    token = ehr.sign_cds_jwt(AUD, now=NOW)
    assert _call(client, token, _full()).status_code == 200
    _refused(_call(client, token, _full()), "jti not used before")


def test_unsigned_or_hmac_tokens_are_refused(client: TestClient, ehr: EhrSandbox) -> None:
    """alg 'none' and HS256 (a shared secret) are not among the accepted algorithms."""
    import jwt as pyjwt

    claims = {"iss": ehr.base_url, "sub": ehr.cds_client_id, "aud": AUD, "iat": int(NOW.timestamp()),
              "exp": int(NOW.timestamp()) + 60, "jti": "x1"}
    hs = pyjwt.encode(claims, "a-shared-secret-of-32-bytes-length!", algorithm="HS256", headers={"kid": "k"})
    _refused(_call(client, hs, _full()), "signed with one of")
    none = pyjwt.encode(claims, None, algorithm="none", headers={"kid": "k"})  # type: ignore[arg-type]
    _refused(_call(client, none, _full()), "signed with one of")


def test_jku_not_on_the_allow_list_is_not_fetched(client: TestClient, ehr: EhrSandbox) -> None:
    """A jku header pointing elsewhere is refused (keys are fetched only from allow-listed URLs)."""
    token = ehr.sign_cds_jwt(AUD, now=NOW, jku="https://attacker.test/jwks.json")
    _refused(_call(client, token, _full()), "jku allowed")


def test_key_rotation_refetches_the_jwk_set_once(client: TestClient, ehr: EhrSandbox) -> None:
    """After the EHR rotates its key, a token with the new kid makes the service re-fetch the JWK Set once; the
    cached set serves the next calls."""
    assert _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full()).status_code == 200
    verifier = client.app.state.cds_jwt_verifier  # type: ignore[attr-defined]
    assert verifier.jwks.fetches == 1
    old = ehr.keys[-1].kid
    ehr.rotate_key()
    try:
        assert _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full()).status_code == 200
        assert verifier.jwks.fetches == 2
        assert _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full()).status_code == 200
        assert _call(client, ehr.sign_cds_jwt(AUD, now=NOW, kid=old), _full()).status_code == 200
        assert verifier.jwks.fetches == 2
    finally:
        ehr.retire_key(old)


def test_unknown_kid_refetch_is_rate_limited(ehr: EhrSandbox) -> None:
    """Unknown kid values re-fetch the JWK Set at most once per jwks_min_refresh_s (no hammering of the EHR)."""
    app = create_app("sqlite://", settings=_settings(ehr, jwks_min_refresh_s=3600))
    with TestClient(app) as c:
        assert _call(c, ehr.sign_cds_jwt(AUD, now=NOW), _full()).status_code == 200
        kid = ehr.rotate_key()
        try:
            _refused(_call(c, ehr.sign_cds_jwt(AUD, now=NOW, kid=kid), _full()), "does not publish")
            _refused(_call(c, ehr.sign_cds_jwt(AUD, now=NOW, kid=kid), _full()), "does not publish")
            assert app.state.cds_jwt_verifier.jwks.fetches == 1
        finally:
            ehr.retire_key(kid)


def test_immunoguide_bearer_token_still_works_for_non_ehr_clients(client: TestClient) -> None:
    """A non-EHR client keeps using an immunoguide user's token."""
    client.app.state.service.users.create_user("script", PASSWORD, "investigator", "ATH")  # type: ignore[attr-defined]
    tok = client.post("/auth/token", json={"username": "script", "password": PASSWORD}).json()["access_token"]
    assert _call(client, tok, _full()).status_code == 200


def test_a_jwt_is_refused_where_no_ehr_is_configured(ehr: EhrSandbox) -> None:
    """Without an EHR configuration a JWT is not an accepted credential."""
    app = create_app("sqlite://", settings=ServiceSettings(auto_upgrade=True, simulation_store=True, clock=lambda: NOW))
    with TestClient(app) as c:
        _refused(_call(c, ehr.sign_cds_jwt(AUD, now=NOW), _full()), "trusts no EHR issuer")


# ---------------------------------------------------------------------------------------------------------------
# fhirServer + fhirAuthorization


def _no_prefetch(ehr: EhrSandbox, kind: str = "immunoparalysis", token: str | None = None) -> dict[str, Any]:
    body = _full(kind)
    del body["prefetch"]
    body["fhirServer"] = ehr.fhir_base
    body["fhirAuthorization"] = {"access_token": token or ehr.issue_fhir_token(), "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.rs", "subject": "immunoguide"}
    return body


@pytest.mark.parametrize("kind", ["immunoparalysis", "mals", "indeterminate"])
def test_cards_from_the_fhir_server_equal_cards_from_the_prefetch(client: TestClient, ehr: EhrSandbox,
                                                                  kind: str) -> None:
    """Without prefetch, the service queries the EHR's FHIR server (read + searches with the EHR's bearer token) and
    the card says the same as when everything was prefetched."""
    with_prefetch = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full(kind)).json()["cards"][0]
    n = len(ehr.requests)
    body = _no_prefetch(ehr, kind)
    r = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), body)
    assert r.status_code == 200, r.text
    card = r.json()["cards"][0]
    assert card["summary"] == with_prefetch["summary"]
    ext = {k: v for k, v in card["extension"].items() if k != "fetched_from_fhir_server"}
    assert ext == with_prefetch["extension"]
    assert card["extension"]["fetched_from_fhir_server"] == ["patient", "observations", "flags", "conditions", "encounter"]
    seen = ehr.requests[n:]
    assert [(q["interaction"], q["type"]) for q in seen] == [
        ("read", "Patient"), ("search", "Observation"), ("search", "Observation"), ("search", "Condition"),
        ("search", "Encounter")]
    assert {q["authorization"] for q in seen} == {f"Bearer {body['fhirAuthorization']['access_token']}"}


def test_only_the_missing_prefetch_keys_are_queried(client: TestClient, ehr: EhrSandbox) -> None:
    """A call that prefetched the patient and observations gets only flags, conditions and encounter queried."""
    body = _no_prefetch(ehr)
    full = _full()["prefetch"]
    body["prefetch"] = {"patient": full["patient"], "observations": full["observations"]}
    n = len(ehr.requests)
    r = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), body)
    assert r.status_code == 200, r.text
    assert [q["type"] for q in ehr.requests[n:]] == ["Observation", "Condition", "Encounter"]


def test_a_fhir_server_the_ehr_does_not_own_is_not_queried(client: TestClient, ehr: EhrSandbox) -> None:
    """fhirServer outside the calling EHR's configured bases is never sent the token: the call lacks its prefetch."""
    body = _no_prefetch(ehr)
    body["fhirServer"] = "https://elsewhere.test/fhir"
    n = len(ehr.requests)
    r = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), body)
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (422, "IG-E103", "prefetch.patient")
    assert len(ehr.requests) == n


def test_non_ehr_callers_get_no_fhir_queries(client: TestClient, ehr: EhrSandbox) -> None:
    """An immunoguide user's call naming a fhirServer is answered from the prefetch alone."""
    client.app.state.service.users.create_user("script2", PASSWORD, "investigator", "ATH")  # type: ignore[attr-defined]
    tok = client.post("/auth/token", json={"username": "script2", "password": PASSWORD}).json()["access_token"]
    n = len(ehr.requests)
    assert _call(client, tok, _no_prefetch(ehr)).status_code == 422
    assert len(ehr.requests) == n


def test_fhir_server_refusing_the_token_is_a_502(client: TestClient, ehr: EhrSandbox) -> None:
    """When the EHR's FHIR server refuses the access token, the service answers 502 IG-E601 (upstream failure)."""
    r = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _no_prefetch(ehr, token="not-a-token-of-this-ehr"))
    assert (r.status_code, r.json()["code"]) == (502, "IG-E601")


# ---------------------------------------------------------------------------------------------------------------
# links and suggestions


def test_card_links_to_the_dashboard_as_a_smart_app(client: TestClient, ehr: EhrSandbox) -> None:
    """With a study code on the Patient, the card's smart link launches the dashboard with that patient."""
    body = _full()
    body["prefetch"]["patient"]["identifier"] = [{"system": STUDY_CODE_SYSTEM, "value": "ATH-001"}]
    card = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), body).json()["cards"][0]
    (link,) = card["links"]
    assert (link["type"], link["url"]) == ("smart", SERVICE_URL + "/dashboard/smart/launch")
    assert json.loads(link["appContext"]) == {"patient_code": "ATH-001"}


def test_indeterminate_card_suggests_orders_as_valid_service_requests(client: TestClient, ehr: EhrSandbox) -> None:
    """The indeterminate card suggests ordering an exact ferritin and QuantiBRITE mHLA-DR: two create actions of
    FHIR R4B ServiceRequests for the patient (validated), selectionBehavior any."""
    from fhir.resources.R4B.servicerequest import ServiceRequest

    card = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full("indeterminate")).json()["cards"][0]
    assert card["selectionBehavior"] == "any"
    codes = []
    for s in card["suggestions"]:
        (action,) = s["actions"]
        sr = ServiceRequest.model_validate(action["resource"])
        assert (action["type"], sr.subject.reference, sr.intent) == ("create", "Patient/pt-indeterminate", "proposal")
        codes.append(sr.code.coding[0].code)
    assert codes == ["2276-4", "hla_dr_per_monocyte"]


def test_decided_card_suggests_nothing(client: TestClient, ehr: EhrSandbox) -> None:
    """When the classification decides there is no action to suggest."""
    card = _call(client, ehr.sign_cds_jwt(AUD, now=NOW), _full("mals")).json()["cards"][0]
    assert "suggestions" not in card and "selectionBehavior" not in card


def test_ehr_configuration_file_loads_and_refuses_mistakes(tmp_path: Any, monkeypatch: Any) -> None:
    """The TOML configuration of `immunoguide serve` (IMMUNOGUIDE_EHR_CONFIG) loads; an issuer without keys or an
    unknown key is a CriteriaError naming the place."""
    from immunoguide.errors import CriteriaError
    from immunoguide.service.app import app_from_env
    from immunoguide.service.cds_security import load_ehr_settings

    good = tmp_path / "ehr.toml"
    good.write_text('service_url = "https://ig.example.org"\n\n[[ehr]]\niss = "https://ehr.example.org"\n'
                    'jwks_url = "https://ehr.example.org/jwks.json"\nfhir_servers = ["https://ehr.example.org/fhir"]\n'
                    '[ehr.users]\n"Practitioner/9" = "inv-ath"\n')
    s = load_ehr_settings(good)
    assert s.issuer("https://ehr.example.org").users["Practitioner/9"] == "inv-ath"  # type: ignore[union-attr]
    assert s.issuer_for_fhir_server("https://ehr.example.org/fhir/").iss == "https://ehr.example.org"  # type: ignore[union-attr]
    monkeypatch.setenv("IMMUNOGUIDE_EHR_CONFIG", str(good))
    monkeypatch.setenv("IMMUNOGUIDE_DB_URL", "sqlite://")
    assert app_from_env() is not None
    bad = tmp_path / "bad.toml"
    bad.write_text('service_url = "https://ig.example.org"\n\n[[ehr]]\niss = "https://ehr.example.org"\n')
    with pytest.raises(CriteriaError, match="jwks_url or an inline jwks"):
        load_ehr_settings(bad)
    bad.write_text('service_url = "https://ig.example.org"\nleeway = 5\n')
    with pytest.raises(CriteriaError, match="keys among"):
        load_ehr_settings(bad)
