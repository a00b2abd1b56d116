"""Small conventions at the borders: ``--version``, assay-method aliases from the protocol vocabulary (case-insensitive,
the canonical tag echoed) and the UCUM code ``{AB}/{cell}`` for mHLA-DR where the method declares it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import immunoguide
from immunoguide.cli import app as cli_app
from immunoguide.errors import CriteriaError
from immunoguide.protocols import load_protocol, load_protocol_text
from immunoguide.rules.endotype import BiomarkerResult, classify_endotype
from service_support import NOW, PASSWORD, patient_view_request

T = datetime(2025, 3, 2, 8, 0, tzinfo=UTC)
IMMUNOSEP_TEXT = resources.files("immunoguide.protocols").joinpath("immunosep-2025.toml").read_text("utf-8")


def test_version_option_prints_the_package_version() -> None:
    """``immunoguide --version`` prints the package version and exits 0."""
    r = CliRunner().invoke(cli_app, ["--version"])
    assert (r.exit_code, r.output.strip()) == (0, f"immunoguide {immunoguide.__version__}")


def _classify(method: str | None) -> object:
    p = load_protocol("immunosep-2025")
    assert p.classification is not None
    results = [BiomarkerResult.measured("ferritin_ng_per_ml", 820, "ng/mL", sample_time=T),
               BiomarkerResult.measured("hla_dr_per_monocyte", 3100, "AB/c", method=method, sample_time=T)]
    return classify_endotype(p.classification, results, anchor_time=T - timedelta(hours=2),
                             at=T + timedelta(hours=3), protocol_label=p.label)


@pytest.mark.parametrize("spelling", ["QuantiBRITE", "quantibrite", "QUANTIBRITE_ABC", " BD QuantiBRITE "])
def test_quantibrite_spellings_classify_and_echo_the_canonical_tag(spelling: str) -> None:
    """mHLA-DR 3,100 AB/c reported by 'QuantiBRITE' (any case, any declared alias) is immunoparalysis, echoed as
    quantibrite_abc (ImmunoSep: ferritin <= 4420 and QuantiBRITE mHLA-DR < 5000)."""
    res = _classify(spelling)
    assert res.endotype == "immunoparalysis"  # type: ignore[attr-defined]
    hla = [i for i in res.inputs_used if i.concept == "hla_dr_per_monocyte"]  # type: ignore[attr-defined]
    assert [i.method for i in hla] == ["quantibrite_abc"]


def test_an_undeclared_method_stays_not_comparable() -> None:
    """MFI is no alias of QuantiBRITE: the result is not comparable and the state is indeterminate."""
    res = _classify("MFI")
    assert res.endotype == "indeterminate"  # type: ignore[attr-defined]
    assert "assay_method_mismatch" in {r.code for r in res.reasons}  # type: ignore[attr-defined]


def test_aliases_come_from_the_protocol_vocabulary() -> None:
    """The alias table is data: the protocol's [vocabularies.methods] declares the spellings and UCUM codes."""
    p = load_protocol("immunosep-2025")
    m = p.vocabularies.methods["quantibrite_abc"]
    assert "QuantiBRITE" in m.aliases and m.ucum == ("{AB}/{cell}",)
    assert dict(p.classification.method_aliases)["quantibrite"] == "quantibrite_abc"  # type: ignore[union-attr]


def test_an_alias_naming_another_method_is_refused_on_load() -> None:
    """A protocol whose alias is another method's tag does not load (the spelling would be ambiguous)."""
    text = IMMUNOSEP_TEXT.replace('aliases = ["QuantiBRITE"', 'aliases = ["mfi_units", "QuantiBRITE"', 1)
    text = text.replace("[vocabularies.infection_sources]",
                        '[vocabularies.methods.mfi_units]\ndescription = "MFI"\nunit = "AB/c"\n'
                        'concepts = ["hla_dr_per_monocyte"]\n\n[vocabularies.infection_sources]', 1)
    with pytest.raises(CriteriaError, match="aliases that name only this method"):
        load_protocol_text(text, where="edited.toml")


@pytest.fixture(scope="module")
def client():
    from immunoguide.service import ServiceSettings, create_app

    # the fixed clock NOW needs a simulation store (a real store accepts only the system clock)
    app = create_app("sqlite://", settings=ServiceSettings(auto_upgrade=True, simulation_store=True, clock=lambda: NOW))
    with TestClient(app) as c:
        app.state.service.users.create_user("ehr", PASSWORD, "investigator", "ATH")
        tok = c.post("/auth/token", json={"username": "ehr", "password": PASSWORD}).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {tok}"
        yield c


def test_fhir_hla_dr_in_ucum_with_a_quantibrite_method_text_is_used(client: TestClient) -> None:
    """An Observation with Quantity code '{AB}/{cell}' (UCUM, no display unit) and method text 'QuantiBRITE' is
    read as 3,100 AB/c by quantibrite_abc: the card says immunoparalysis."""
    req = copy.deepcopy(patient_view_request("immunoparalysis"))
    hla = next(e["resource"] for e in req["prefetch"]["observations"]["entry"] if e["resource"]["id"] == "hla-ip")
    hla["valueQuantity"] = {"value": 3100, "system": "http://unitsofmeasure.org", "code": "{AB}/{cell}"}
    hla["method"] = {"text": "QuantiBRITE"}
    card = client.post("/cds-services/immunoguide-patient-view", json=req).json()["cards"][0]
    assert card["extension"]["endotype"] == "immunoparalysis", card["detail"]
    assert "| mHLA-DR | 3,100 AB/c | quantibrite_abc |" in card["detail"]


def test_fhir_ucum_code_is_not_accepted_for_a_concept_the_method_does_not_measure(client: TestClient) -> None:
    """'{AB}/{cell}' is declared for mHLA-DR only: a ferritin in '{AB}/{cell}' is listed as not used."""
    req = copy.deepcopy(patient_view_request("immunoparalysis"))
    fer = next(e["resource"] for e in req["prefetch"]["observations"]["entry"] if e["resource"]["id"] == "fer-ip")
    fer["valueQuantity"] = {"value": 820, "system": "http://unitsofmeasure.org", "code": "{AB}/{cell}"}
    card = client.post("/cds-services/immunoguide-patient-view", json=req).json()["cards"][0]
    assert "Observation/fer-ip" in card["detail"] and "not accepted for ferritin_ng_per_ml" in card["detail"]
