"""The FHIR R4B adapter: Bundles become the timeline schema; every unusable resource is a data-quality row."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoguide.cohort.schema import SCHEMAS
from immunoguide.cohort.sources.fhir import FhirReport, convert_fhir, load_codes, stable_id
from immunoguide.errors import InputError
from immunoguide.units import concept

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL = "https://immunoguide.example/fhir/CodeSystem/concept"
ENC = {"reference": "Encounter/icu-1"}
SUBJ = {"reference": "Patient/p1"}
STAY = stable_id("Encounter", "icu-1")


def obs(
    oid: str,
    code: str,
    value: dict[str, Any] | None = None,
    *,
    system: str = LOINC,
    at: str = "2024-01-01T10:00:00Z",
    encounter: dict[str, str] | None = ENC,
    **extra: Any,
) -> Observation:
    """An R4B Observation with one coding and a valueQuantity (or other value[x] in ``extra``)."""
    fields: dict[str, Any] = {
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": SUBJ,
        "effectiveDateTime": at,
        **extra,
    }
    if encounter is not None:
        fields["encounter"] = encounter
    if value is not None:
        fields["valueQuantity"] = value
    return Observation(**fields)


def norepinephrine(
    mid: str, rate: dict[str, Any], start: str = "2024-01-01T10:00:00Z", end: str = "2024-01-01T14:00:00Z"
) -> MedicationAdministration:
    """Norepinephrine (RxNorm 7512) infused over a period at ``rate``."""
    return MedicationAdministration(
        id=mid,
        status="completed",
        subject=SUBJ,
        context=ENC,
        medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "7512", "display": "norepinephrine"}]},
        effectivePeriod={"start": start, "end": end},
        dosage={"rateQuantity": rate},
    )


def good_resources() -> list[Any]:
    """One ICU stay (part of a hospital admission from the ED) with one fact of every kind."""
    return [
        Patient(id="p1", gender="female", birthDate="1960-05-01"),
        Encounter(
            id="hosp-1",
            status="finished",
            subject=SUBJ,
            class_fhir={"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            period={"start": "2023-12-31T20:00:00Z", "end": "2024-01-10T12:00:00Z"},
            hospitalization={
                "admitSource": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}]
                }
            },
        ),
        Encounter(
            id="icu-1",
            status="finished",
            subject=SUBJ,
            partOf={"reference": "Encounter/hosp-1"},
            class_fhir={"system": LOCAL, "code": "ICU"},
            period={"start": "2024-01-01T09:00:00+01:00", "end": "2024-01-05T08:00:00Z"},
        ),
        obs(
            "ferr-cens", "2276-4", {"value": 2000, "comparator": ">", "unit": "ng/mL", "system": UCUM, "code": "ng/mL"}
        ),
        obs(
            "ferr-pmol",
            "2276-4",
            {"value": 4494, "unit": "pmol/L", "system": UCUM, "code": "pmol/L"},
            at="2024-01-01T11:00:00Z",
        ),
        obs(
            "hla",
            "hla_dr_per_monocyte",
            {"value": 3100, "unit": "AB/c"},
            system=LOCAL,
            method={
                "coding": [
                    {"system": "https://immunoguide.example/fhir/CodeSystem/assay-method", "code": "quantibrite_abc"}
                ]
            },
        ),
        obs("plt", "777-3", {"value": 85, "unit": "10*3/uL", "system": UCUM, "code": "10*3/uL"}),
        obs("bili", "1975-2", {"value": 34.208, "unit": "µmol/L"}),
        obs("fio2", "3150-0", {"value": 40, "unit": "%", "system": UCUM, "code": "%"}),
        obs("gcs", "9269-2", {"value": 14, "system": UCUM, "code": "{score}"}),
        obs("wt", "29463-7", {"value": 80, "unit": "kg", "system": UCUM, "code": "kg"}, at="2024-01-01T08:30:00Z"),
        Observation(
            id="uo",
            status="final",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": LOINC, "code": "9187-6"}]},
            effectivePeriod={"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00Z"},
            valueQuantity={"value": 55, "unit": "mL", "system": UCUM, "code": "mL"},
        ),
        # no encounter reference: attached by subject + time (inside [intime - 24 h, outtime])
        obs("k-no-enc", "2823-3", {"value": 4.1, "unit": "mmol/L"}, encounter=None, at="2023-12-31T12:00:00Z"),
        Observation(
            id="bc",
            status="final",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": LOINC, "code": "600-7"}]},
            effectiveDateTime="2024-01-01T09:30:00Z",
            valueCodeableConcept={
                "coding": [{"system": SNOMED, "code": "3092008", "display": "Staphylococcus aureus"}]
            },
        ),
        norepinephrine("ne-kg", {"value": 0.1, "unit": "mcg/kg/min", "system": UCUM, "code": "ug/kg/min"}),
        norepinephrine(
            "ne-min",
            {"value": 8, "unit": "mcg/min", "system": UCUM, "code": "ug/min"},
            start="2024-01-01T14:00:00Z",
            end="2024-01-01T18:00:00Z",
        ),
        MedicationAdministration(
            id="cro",
            status="completed",
            subject=SUBJ,
            context=ENC,
            effectiveDateTime="2024-01-01T09:45:00Z",
            medicationCodeableConcept={
                "coding": [{"system": RXNORM, "code": "1665021", "display": "ceftriaxone 1000 MG Injection"}]
            },
            dosage={"route": {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}},
        ),
        Procedure(
            id="mv",
            status="completed",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": SNOMED, "code": "40617009"}]},
            performedPeriod={"start": "2024-01-01T12:00:00Z", "end": "2024-01-03T12:00:00Z"},
        ),
        # names the hospital encounter (not a stay): attached by subject + recorded time
        Condition(
            id="pna",
            subject=SUBJ,
            encounter={"reference": "Encounter/hosp-1"},
            recordedDate="2024-01-02",
            code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J18.9"}]},
        ),
    ]


def bundle(resources: list[Any]) -> Bundle:
    """A collection Bundle of the given R4B resources (or raw dicts)."""
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r if isinstance(r, dict) else json.loads(r.model_dump_json())} for r in resources],
        }
    )


def raw_bundle(resources: list[Any]) -> dict[str, Any]:
    """A Bundle as plain JSON, so that invalid resources can be put in it."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r if isinstance(r, dict) else json.loads(r.model_dump_json())} for r in resources],
    }


def table(out: Path, name: str) -> list[dict[str, Any]]:
    """Rows of one written Parquet table."""
    return pq.read_table(out / f"{name}.parquet").to_pylist()


def test_every_table_is_written_with_exactly_the_timeline_schema(tmp_path: Path) -> None:
    """Each output file has the field names and types of cohort/schema.py SCHEMAS, nothing more."""
    convert_fhir(bundle(good_resources()), tmp_path)
    for name, schema in SCHEMAS.items():
        assert pq.read_table(tmp_path / f"{name}.parquet").schema.equals(schema), name


def test_icu_encounter_inside_an_admission_becomes_one_stay_with_patient_facts(tmp_path: Path) -> None:
    """The ICU encounter is the stay; its parent gives hadm_id, admittime and the ED admit source."""
    rep = convert_fhir(bundle(good_resources()), tmp_path)
    (stay,) = table(tmp_path, "stays")
    assert stay["stay_id"] == STAY == rep.id_map["Encounter/icu-1"]
    assert stay["subject_id"] == stable_id("Patient", "p1") and stay["hadm_id"] == stable_id("Encounter", "hosp-1")
    assert stay["intime"] == datetime(2024, 1, 1, 8, 0)  # 09:00+01:00 in UTC
    assert stay["outtime"] == datetime(2024, 1, 5, 8, 0) and stay["admittime"] == datetime(2023, 12, 31, 20, 0)
    assert stay["admission_source"] == "emergency_department" and stay["sex"] == "female"
    assert stay["age_years"] == round((datetime(2024, 1, 1) - datetime(1960, 5, 1)).days / 365.25, 1)
    assert stay["weight_kg"] == 80.0 and stay["dataset"] == "fhir" and stay["deathtime"] is None


def test_observations_arrive_in_canonical_units_with_censored_text_and_method(tmp_path: Path) -> None:
    """pmol/L ferritin, µmol/L bilirubin, % FiO2 are converted; '>2000' keeps its text; HLA-DR keeps its method."""
    convert_fhir(bundle(good_resources()), tmp_path)
    rows = {r["source"]: r for r in table(tmp_path, "observations")}
    assert set(rows) == {
        f"fhir:Observation/{i}"
        for i in ("ferr-cens", "ferr-pmol", "hla", "plt", "bili", "fio2", "gcs", "wt", "uo", "k-no-enc")
    }
    assert all(r["stay_id"] == STAY for r in rows.values())
    cens = rows["fhir:Observation/ferr-cens"]
    assert (cens["concept"], cens["value"], cens["value_text"], cens["unit"]) == (
        "ferritin_ng_per_ml",
        None,
        ">2000",
        "ng/mL",
    )
    pmol = rows["fhir:Observation/ferr-pmol"]
    assert (
        pmol["value"] == pytest.approx(4494 * concept("ferritin_ng_per_ml").units["pmol/L"])
        and pmol["unit"] == "pmol/L"
    )
    hla = rows["fhir:Observation/hla"]
    assert (hla["concept"], hla["value"], hla["method"]) == ("hla_dr_per_monocyte", 3100.0, "quantibrite_abc")
    assert rows["fhir:Observation/plt"]["value"] == 85.0
    assert rows["fhir:Observation/bili"]["value"] == 2.0
    assert rows["fhir:Observation/fio2"]["value"] == 0.4
    assert (rows["fhir:Observation/gcs"]["concept"], rows["fhir:Observation/gcs"]["value"]) == ("gcs", 14.0)
    uo = rows["fhir:Observation/uo"]
    assert (uo["concept"], uo["value"], uo["time"]) == ("urine_output_ml", 55.0, datetime(2024, 1, 1, 11, 0))
    assert rows["fhir:Observation/k-no-enc"]["time"] == datetime(2023, 12, 31, 12, 0)


def test_infusions_antibiotics_cultures_ventilation_and_diagnoses_are_mapped(tmp_path: Path) -> None:
    """Norepinephrine in mcg/kg/min and mcg/min (÷ 80 kg), ceftriaxone IV, positive blood culture, MV, J18.9."""
    convert_fhir(bundle(good_resources()), tmp_path)
    inf = {r["source"]: r for r in table(tmp_path, "infusions")}
    assert inf["fhir:MedicationAdministration/ne-kg"]["rate_ug_kg_min"] == 0.1
    assert inf["fhir:MedicationAdministration/ne-min"]["rate_ug_kg_min"] == pytest.approx(8 / 80)
    assert {r["drug"] for r in inf.values()} == {"norepinephrine"}
    assert inf["fhir:MedicationAdministration/ne-kg"]["start"] == datetime(2024, 1, 1, 10, 0)
    assert inf["fhir:MedicationAdministration/ne-kg"]["stop"] == datetime(2024, 1, 1, 14, 0)
    assert table(tmp_path, "antibiotics") == [
        {
            "stay_id": STAY,
            "time": datetime(2024, 1, 1, 9, 45),
            "name": "ceftriaxone 1000 MG Injection",
            "route": "Intravenous route",
            "time_is_date_only": False,
        }
    ]
    assert table(tmp_path, "cultures") == [
        {
            "stay_id": STAY,
            "time": datetime(2024, 1, 1, 9, 30),
            "specimen": "BLOOD CULTURE",
            "positive": True,
            "time_is_date_only": False,
        }
    ]
    assert table(tmp_path, "ventilation") == [
        {"stay_id": STAY, "start": datetime(2024, 1, 1, 12, 0), "stop": datetime(2024, 1, 3, 12, 0), "kind": "invasive"}
    ]
    assert table(tmp_path, "diagnoses") == [{"stay_id": STAY, "code": "J189", "version": 10}]


def test_a_clean_bundle_reports_no_data_quality_issue(tmp_path: Path) -> None:
    """The well-formed bundle leaves data_quality empty, and the report says so too."""
    rep = convert_fhir(bundle(good_resources()), tmp_path)
    assert rep.issues == () and table(tmp_path, "data_quality") == []
    assert (
        isinstance(rep, FhirReport) and rep.rows["observations"] == 10 and rep.resources_read == len(good_resources())
    )


def _obs_raw(oid: str, **fields: Any) -> dict[str, Any]:
    base = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": SUBJ,
        "encounter": ENC,
        "code": {"coding": [{"system": LOINC, "code": "2276-4"}]},
        "effectiveDateTime": "2024-01-02T10:00:00Z",
    }
    base.update(fields)
    return base


BAD_CASES: list[tuple[str, Any, str, str, int | None]] = [
    ("wrong type for status", _obs_raw("bad", status=5), "invalid_resource", "status", STAY),
    ("wrong type for code", _obs_raw("bad", code="2276-4"), "invalid_resource", "code", STAY),
    ("unknown LOINC", obs("bad", "1234-5", {"value": 1, "unit": "mg/dL"}), "unknown_code", "1234-5", STAY),
    ("ferritin in mg/dL", obs("bad", "2276-4", {"value": 0.2, "unit": "mg/dL"}), "unit_mismatch", "2276-4", STAY),
    (
        "text in valueQuantity",
        _obs_raw("bad", valueQuantity={"value": "high", "unit": "ng/mL"}),
        "text_in_numeric_field",
        "2276-4",
        STAY,
    ),
    (
        "non-censored text in valueString",
        obs("bad", "2276-4", valueString="very high"),
        "text_in_numeric_field",
        "2276-4",
        STAY,
    ),
    (
        "platelets above the plausible range",
        obs("bad", "777-3", {"value": 5000, "unit": "10*3/uL"}),
        "implausible_value",
        "777-3",
        STAY,
    ),
    (
        "observation period ends before it starts",
        Observation(
            id="bad",
            status="final",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": LOINC, "code": "9187-6"}]},
            effectivePeriod={"start": "2024-01-02T10:00:00Z", "end": "2024-01-02T09:00:00Z"},
            valueQuantity={"value": 50, "unit": "mL"},
        ),
        "times_out_of_order",
        "9187-6",
        STAY,
    ),
    (
        "infusion ends before it starts",
        norepinephrine(
            "bad", {"value": 0.1, "unit": "ug/kg/min"}, start="2024-01-02T10:00:00Z", end="2024-01-02T09:00:00Z"
        ),
        "times_out_of_order",
        "7512",
        STAY,
    ),
    (
        "infusion rate in mL/h cannot be converted",
        norepinephrine("bad", {"value": 5, "unit": "mL/h"}),
        "unit_mismatch",
        "7512",
        STAY,
    ),
    (
        "ventilation ends before it starts",
        Procedure(
            id="bad",
            status="completed",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": SNOMED, "code": "40617009"}]},
            performedPeriod={"start": "2024-01-02T10:00:00Z", "end": "2024-01-01T10:00:00Z"},
        ),
        "times_out_of_order",
        "40617009",
        STAY,
    ),
    (
        "observation without encounter or subject",
        Observation(
            id="bad",
            status="final",
            code={"coding": [{"system": LOINC, "code": "2276-4"}]},
            effectiveDateTime="2024-01-02T10:00:00Z",
            valueQuantity={"value": 300, "unit": "ng/mL"},
        ),
        "no_encounter",
        "2276-4",
        None,
    ),
    (
        "observation of the subject long before the stay",
        obs("bad", "2276-4", {"value": 300, "unit": "ng/mL"}, encounter=None, at="2023-06-01T10:00:00Z"),
        "no_encounter",
        "2276-4",
        None,
    ),
    (
        "entered-in-error result",
        obs("bad", "2276-4", {"value": 300, "unit": "ng/mL"}, status="entered-in-error"),
        "status_not_usable",
        "2276-4",
        STAY,
    ),
    (
        "status outside the value set (the library does not check it)",
        obs("bad", "2276-4", {"value": 300, "unit": "ng/mL"}, status="bogus"),
        "invalid_code",
        "2276-4",
        STAY,
    ),
    (
        "ferritin comparator outside the value set",
        obs("bad", "2276-4", {"value": 300, "unit": "ng/mL", "comparator": "ad"}),
        "invalid_code",
        "2276-4",
        STAY,
    ),
    (
        "procedure code 426990007 (home oxygen) is not a ventilation kind",
        Procedure(
            id="bad",
            status="completed",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": SNOMED, "code": "426990007"}]},
            performedPeriod={"start": "2024-01-02T10:00:00Z", "end": "2024-01-02T12:00:00Z"},
        ),
        "unknown_code",
        "426990007",
        STAY,
    ),
    (
        "condition coded in SNOMED only",
        Condition(id="bad", subject=SUBJ, encounter=ENC, code={"coding": [{"system": SNOMED, "code": "233604007"}]}),
        "unknown_code",
        "233604007",
        STAY,
    ),
    (
        "ICD-10 code with an impossible shape",
        Condition(
            id="bad",
            subject=SUBJ,
            encounter=ENC,
            code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "18.9J"}]},
        ),
        "invalid_code",
        "18.9J",
        STAY,
    ),
    (
        "medication not in the vasopressor or antibiotic lists",
        MedicationAdministration(
            id="bad",
            status="completed",
            subject=SUBJ,
            context=ENC,
            effectiveDateTime="2024-01-02T10:00:00Z",
            medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "161", "display": "acetaminophen"}]},
        ),
        "unknown_code",
        "161",
        STAY,
    ),
    (
        "topical antibiotic",
        MedicationAdministration(
            id="bad",
            status="completed",
            subject=SUBJ,
            context=ENC,
            effectiveDateTime="2024-01-02T10:00:00Z",
            medicationCodeableConcept={"text": "mupirocin / gentamicin ointment"},
            dosage={"route": {"coding": [{"system": SNOMED, "code": "6064005", "display": "Topical route"}]}},
        ),
        "route_not_systemic",
        "mupirocin / gentamicin ointment",
        STAY,
    ),
]


@pytest.mark.parametrize(("case", "bad", "issue", "item", "stay"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_resource_is_one_data_quality_row_and_nothing_else(
    tmp_path: Path, case: str, bad: Any, issue: str, item: str, stay: int | None
) -> None:
    """A bad resource adds exactly one data_quality row (its reason, code and stay) and no row anywhere else."""
    base = convert_fhir(bundle(good_resources()), tmp_path / "base")
    rep = convert_fhir(raw_bundle([*good_resources(), bad]), tmp_path / "out")
    kind = bad["resourceType"] if isinstance(bad, dict) else bad.get_resource_type()
    (row,) = table(tmp_path / "out", "data_quality")
    assert (row["source"], row["issue"], row["item"], row["stay_id"], row["n"]) == (
        f"fhir:{kind}/bad",
        issue,
        item,
        stay,
        1,
    )
    assert rep.issues[0].issue == issue
    for name in SCHEMAS:
        if name != "data_quality":
            assert table(tmp_path / "out", name) == table(tmp_path / "base", name), name
    assert rep.rows["data_quality"] == base.rows["data_quality"] + 1


def test_per_minute_rate_without_a_body_weight_is_reported_not_guessed(tmp_path: Path) -> None:
    """A norepinephrine rate in mcg/min on a stay without a weight is a rate_per_min_without_weight row."""
    resources = [r for r in good_resources() if getattr(r, "id", None) != "wt"]
    rep = convert_fhir(bundle(resources), tmp_path)
    assert {r["source"] for r in table(tmp_path, "infusions")} == {"fhir:MedicationAdministration/ne-kg"}
    assert [(i.source, i.issue, i.stay_id) for i in rep.issues] == [
        ("fhir:MedicationAdministration/ne-min", "rate_per_min_without_weight", STAY)
    ]


def test_encounter_ending_before_it_starts_is_not_a_stay(tmp_path: Path) -> None:
    """An ICU encounter whose period ends before it starts is reported and its facts find no stay."""
    enc = Encounter(
        id="icu-2",
        status="finished",
        class_fhir={"code": "ICU"},
        subject={"reference": "Patient/p2"},
        period={"start": "2024-02-02T08:00:00Z", "end": "2024-02-01T08:00:00Z"},
    )
    o = obs(
        "x",
        "2276-4",
        {"value": 300, "unit": "ng/mL"},
        encounter={"reference": "Encounter/icu-2"},
        subject={"reference": "Patient/p2"},
        at="2024-02-01T10:00:00Z",
    )
    rep = convert_fhir(bundle([enc, o]), tmp_path)
    assert table(tmp_path, "stays") == [] and table(tmp_path, "observations") == []
    assert [(i.source, i.issue) for i in rep.issues] == [
        ("fhir:Encounter/icu-2", "times_out_of_order"),
        ("fhir:Observation/x", "no_encounter"),
    ]


def test_stay_without_observations_is_reported(tmp_path: Path) -> None:
    """A stay that received no usable observation appears in data_quality as stay_without_observations."""
    enc = Encounter(
        id="500",
        status="finished",
        class_fhir={"code": "ICU"},
        subject=SUBJ,
        period={"start": "2024-03-01T08:00:00Z", "end": "2024-03-02T08:00:00Z"},
    )
    rep = convert_fhir(bundle([Patient(id="p1", birthDate="1950-01-01"), enc]), tmp_path)
    (stay,) = table(tmp_path, "stays")
    assert stay["stay_id"] == 500 and rep.id_map == {"Patient/p1": stable_id("Patient", "p1")}
    assert [(i.stay_id, i.issue) for i in rep.issues] == [(500, "stay_without_observations")]
    assert stay["admission_source"] is None  # no admitSource: unknown, not guessed


def test_outpatient_encounter_is_counted_not_turned_into_a_stay(tmp_path: Path) -> None:
    """An ambulatory encounter is not a stay and is reported as encounter_class_not_inpatient."""
    enc = Encounter(
        id="amb",
        status="finished",
        subject=SUBJ,
        class_fhir={"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        period={"start": "2024-03-01T08:00:00Z", "end": "2024-03-01T09:00:00Z"},
    )
    rep = convert_fhir(bundle([enc]), tmp_path)
    assert table(tmp_path, "stays") == []
    assert [(i.item, i.issue) for i in rep.issues] == [("AMB", "encounter_class_not_inpatient")]


def test_censored_value_string_and_mfi_method_are_kept_as_charted(tmp_path: Path) -> None:
    """A valueString '> 5000' keeps its text (ng/mL by the LOINC property); a method 'MFI' text becomes 'mfi'."""
    extra = [
        obs("fs", "2276-4", valueString="> 5000"),
        obs("hla-mfi", "hla_dr_per_monocyte", {"value": 9000, "unit": "AB/c"}, system=LOCAL, method={"text": "MFI"}),
    ]
    rep = convert_fhir(bundle([*good_resources(), *extra]), tmp_path)
    rows = {r["source"]: r for r in table(tmp_path, "observations")}
    fs = rows["fhir:Observation/fs"]
    assert (fs["value"], fs["value_text"], fs["unit"]) == (None, "> 5000", "ng/mL")
    assert rows["fhir:Observation/hla-mfi"]["method"] == "mfi" and rep.issues == ()


def test_bundle_references_by_full_url_resolve(tmp_path: Path) -> None:
    """Transaction-style references ('urn:uuid:…' fullUrls) link observations to their encounter."""
    enc = json.loads(
        Encounter(
            status="finished",
            class_fhir={"code": "ICU"},
            period={"start": "2024-01-01T08:00:00Z", "end": "2024-01-02T08:00:00Z"},
        ).model_dump_json()
    )
    o = json.loads(
        obs(
            "o",
            "777-3",
            {"value": 90, "unit": "10*3/uL"},
            encounter={"reference": "urn:uuid:e-1"},
            subject={"reference": "urn:uuid:p-1"},
        ).model_dump_json()
    )
    raw = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:e-1", "resource": enc}, {"fullUrl": "urn:uuid:o-1", "resource": o}],
    }
    rep = convert_fhir(raw, tmp_path)
    (row,) = table(tmp_path, "observations")
    assert row["stay_id"] == rep.id_map["urn:uuid:e-1"] == table(tmp_path, "stays")[0]["stay_id"]


def test_json_file_directory_and_ndjson_inputs_give_the_same_tables(tmp_path: Path) -> None:
    """A Bundle file, a directory holding it, and NDJSON of its resources convert to the same rows."""
    b = bundle(good_resources())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.json").write_text(b.model_dump_json())
    lines = [json.dumps(e["resource"]) for e in json.loads(b.model_dump_json())["entry"]]
    (tmp_path / "r.ndjson").write_text("\n".join(lines) + "\n")
    convert_fhir(tmp_path / "in" / "b.json", tmp_path / "a")
    convert_fhir(tmp_path / "in", tmp_path / "b")
    convert_fhir(tmp_path / "r.ndjson", tmp_path / "c")
    for name in SCHEMAS:
        assert table(tmp_path / "a", name) == table(tmp_path / "b", name) == table(tmp_path / "c", name), name


def test_broken_ndjson_line_is_reported_and_the_rest_converted(tmp_path: Path) -> None:
    """One line that is not JSON becomes an invalid_json row naming the line; the other lines are converted."""
    lines = [json.dumps(json.loads(r.model_dump_json())) for r in good_resources()]
    lines.insert(3, "{not json")
    (tmp_path / "r.ndjson").write_text("\n".join(lines))
    rep = convert_fhir(tmp_path / "r.ndjson", tmp_path / "out")
    assert [(i.source, i.issue) for i in rep.issues] == [("fhir:r.ndjson:4", "invalid_json")]
    assert rep.rows["observations"] == 10


def test_duplicate_resources_are_counted_once(tmp_path: Path) -> None:
    """The same Observation exported twice gives one row and a duplicate_resource data-quality row."""
    rep = convert_fhir(bundle([*good_resources(), good_resources()[6]]), tmp_path)
    assert rep.rows["observations"] == 10
    assert [(i.source, i.issue) for i in rep.issues] == [("fhir:Observation/plt", "duplicate_resource")]


@pytest.mark.parametrize(
    ("content", "name"),
    [
        ("this is not json", "x.json"),
        ("[1, 2, 3]", "x.json"),
        ('{"hello": "world"}', "x.json"),
        ('{"resourceType": "NotAResource"}', "x.json"),
        ("{broken\n[1]\n", "x.ndjson"),
    ],
)
def test_input_that_is_not_json_or_not_fhir_raises_and_writes_nothing(tmp_path: Path, content: str, name: str) -> None:
    """Only a file that is not JSON / FHIR at all raises InputError, and no table is written then."""
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match="FHIR R4B"):
        convert_fhir(tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_conversion_is_deterministic(tmp_path: Path) -> None:
    """Two runs over the same resources in another order give identical tables, data_quality included."""
    bad = [obs("u1", "1234-5", {"value": 1, "unit": "mg/dL"}), obs("u2", "2276-4", {"value": 1, "unit": "mg/dL"})]
    convert_fhir(bundle([*good_resources(), *bad]), tmp_path / "a")
    convert_fhir(bundle(list(reversed([*good_resources(), *bad]))), tmp_path / "b")
    for name in SCHEMAS:
        assert table(tmp_path / "a", name) == table(tmp_path / "b", name), name
    assert len(table(tmp_path / "a", "data_quality")) == 2


def test_values_at_the_plausibility_edges_of_every_mapped_loinc_load_and_beyond_are_reported(tmp_path: Path) -> None:
    """For each numeric LOINC of fhir_codes.toml, min and max of concepts.toml load; max + 1 % + 1 is implausible."""
    numeric = {code: spec["concept"] for code, spec in load_codes()["loinc"].items() if spec.get("kind") != "culture"}
    extra = []
    for code, name in numeric.items():
        c = concept(name)
        for tag, v in (("min", c.min), ("max", c.max), ("over", c.max * 1.01 + 1)):
            extra.append(obs(f"{tag}-{code}", code, {"value": v, "unit": c.unit}))
    rep = convert_fhir(bundle([*good_resources(), *extra]), tmp_path)
    loaded = {r["source"]: r["value"] for r in table(tmp_path, "observations")}
    for code, name in numeric.items():
        assert loaded[f"fhir:Observation/min-{code}"] == concept(name).min, code
        assert loaded[f"fhir:Observation/max-{code}"] == concept(name).max, code
    assert {(i.source, i.issue) for i in rep.issues} == {
        (f"fhir:Observation/over-{code}", "implausible_value") for code in numeric
    }


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
_resource = st.builds(
    lambda t, body: {**body, "resourceType": t},
    st.sampled_from(
        [
            "Observation",
            "Encounter",
            "Patient",
            "MedicationAdministration",
            "Procedure",
            "Condition",
            "Bundle",
            "Medication",
            "Basic",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "status",
                "code",
                "subject",
                "encounter",
                "valueQuantity",
                "period",
                "effectiveDateTime",
                "entry",
                "class",
                "dosage",
                "effectivePeriod",
            ]
        ),
        _json,
        max_size=5,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json, _resource, st.lists(_resource, max_size=3).map(raw_bundle)))
def test_random_junk_json_never_crashes_the_adapter(value: Any) -> None:
    """Any JSON value either raises InputError or yields a report whose issues are exactly the data_quality rows."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "in.json"
        p.write_text(json.dumps(value))
        try:
            rep = convert_fhir(p, Path(d) / "out")
        except InputError:
            assert not (Path(d) / "out").exists()
            return
        assert rep.rows["data_quality"] == len(rep.issues) == len(table(Path(d) / "out", "data_quality"))


def test_death_inside_the_admission_and_a_birth_year_only_are_recorded(tmp_path: Path) -> None:
    """deceasedDateTime inside the admission is the deathtime; a year-only birthDate gives a flagged mid-year age."""
    resources = good_resources()
    resources[0] = Patient(id="p1", gender="male", birthDate="1960", deceasedDateTime="2024-01-04T06:00:00Z")
    rep = convert_fhir(bundle(resources), tmp_path)
    (stay,) = table(tmp_path, "stays")
    assert stay["deathtime"] == datetime(2024, 1, 4, 6, 0) and stay["sex"] == "male"
    assert stay["age_years"] == round((datetime(2024, 1, 1) - datetime(1960, 7, 1)).days / 365.25, 1)
    assert [(i.item, i.issue, i.stay_id) for i in rep.issues] == [("Patient.birthDate", "birth_date_imprecise", STAY)]


def test_blood_pressure_panel_components_become_separate_observations(tmp_path: Path) -> None:
    """A panel (85354-9) with systolic, diastolic and mean components gives one row per mapped component."""
    panel = Observation(
        id="bp",
        status="final",
        subject=SUBJ,
        encounter=ENC,
        effectiveDateTime="2024-01-02T10:00:00Z",
        code={"coding": [{"system": LOINC, "code": "85354-9"}]},
        component=[
            {"code": {"coding": [{"system": LOINC, "code": c}]}, "valueQuantity": {"value": v, "unit": "mm[Hg]"}}
            for c, v in (("8480-6", 120), ("8462-4", 60), ("8478-0", 80))
        ],
    )
    rep = convert_fhir(bundle([*good_resources(), panel]), tmp_path)
    bp = sorted(
        (r["concept"], r["value"]) for r in table(tmp_path, "observations") if r["source"] == "fhir:Observation/bp"
    )
    assert bp == [("dbp_mmhg", 60.0), ("map_mmhg", 80.0), ("sbp_mmhg", 120.0)] and rep.issues == ()


_units = st.sampled_from(["ng/mL", "pmol/L", "mg/dL", "µmol/L", "10*3/uL", "%", "mL", "mmol/L", "kg", "", "abc"])
_codes = st.sampled_from([c for c, spec in load_codes()["loinc"].items() if spec.get("kind") != "culture"] + ["1234-5"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_codes, st.floats(-1e6, 1e6, allow_nan=False), _units, st.booleans()), min_size=1, max_size=8)
)
def test_every_valid_observation_is_either_loaded_or_reported(values: list[tuple[str, float, str, bool]]) -> None:
    """Observations with arbitrary LOINC codes, numbers and units each end up as rows or data-quality rows, never lost."""
    extra = [
        obs(
            f"h{i}",
            code,
            {"value": round(v, 3), "unit": u} if u else {"value": round(v, 3)},
            encounter=ENC if enc else None,
        )
        for i, (code, v, u, enc) in enumerate(values)
    ]
    with tempfile.TemporaryDirectory() as d:
        convert_fhir(bundle([*good_resources(), *extra]), Path(d))
        loaded = {r["source"] for r in table(Path(d), "observations")}
        reported = {r["source"] for r in table(Path(d), "data_quality")}
        for i in range(len(values)):
            assert f"fhir:Observation/h{i}" in loaded | reported


def test_hla_dr_without_a_unit_is_reported_not_assumed_to_be_antibodies_per_cell(tmp_path: Path) -> None:
    """An mHLA-DR Quantity with no unit could be MFI: it is a unit_missing row, never read as AB/c."""
    bad = obs("bad", "hla_dr_per_monocyte", {"value": 4000}, system=LOCAL)
    rep = convert_fhir(bundle([*good_resources(), bad]), tmp_path)
    assert [(i.source, i.issue) for i in rep.issues] == [("fhir:Observation/bad", "unit_missing")]
    assert "fhir:Observation/bad" not in {r["source"] for r in table(tmp_path, "observations")}
