"""Shared helpers of the REST-service tests: a fixed clock, a seeded two-site trial store, users, FHIR prefetch.

Times are fixed so that responses are reproducible: the service clock is :data:`NOW`; the seeded patients had
Sepsis-3 onset 40 h before it and were randomised 20 h before it (inside ImmunoSep's 72 h window, I7).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from immunoguide.service import ServiceSettings, create_app

NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
ONSET = NOW - timedelta(hours=40)
RANDOMISED_AT = NOW - timedelta(hours=20)
SITES = ("ATH", "MIL")

#: (user, role, site) of the test users; password = PASSWORD for all.
USERS: tuple[tuple[str, str, str | None], ...] = (
    ("coord-ath", "site_coordinator", "ATH"),
    ("inv-ath", "investigator", "ATH"),
    ("pharm-ath", "unblinded_pharmacist", "ATH"),
    ("coord-mil", "site_coordinator", "MIL"),
    ("stat", "statistician", None),
    ("dsmb", "dsmb", None),
    ("admin", "administrator", None),
)
PASSWORD = "a-long-test-password"

#: Seeded patients: code → (site, ferritin ng/mL, HLA-DR AB/c, randomised?).
PATIENTS: dict[str, tuple[str, float, float, bool]] = {
    "ATH-001": ("ATH", 820, 3100, True),
    "ATH-002": ("ATH", 6200, 9000, True),
    "ATH-003": ("ATH", 900, 7000, False),
    "MIL-001": ("MIL", 700, 2500, True),
    "MIL-002": ("MIL", 5000, 4000, False),
}


def screening_record(onset: datetime = ONSET) -> dict[str, Any]:
    """ImmunoSep screening facts of an eligible adult with CAP, admitted through the ED (SOFA 9)."""
    return {
        "age_years": 70, "sex": "male", "infection_source": "CAP", "admission_source": "emergency_department",
        "sofa_total": 9, "sepsis3_onset_time": onset.isoformat(), "covid19": False, "stage_iv_malignancy": False,
        "dnr_order": False, "anc_per_mm3": 6200,
    }


def lab_record(ferritin: float, hla_dr: float, sampled: datetime) -> dict[str, Any]:
    """Ferritin (ng/mL) and QuantiBRITE mHLA-DR (AB/c) sampled at ``sampled``."""
    return {"ferritin": ferritin, "ferritin_unit": "ng/mL", "ferritin_sample_time": sampled.isoformat(),
            "hla_dr": hla_dr, "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
            "hla_dr_sample_time": sampled.isoformat()}


def seed_store(path: Path) -> dict[str, Any]:
    """A migrated SQLite store with allocation lists for two sites, patients of both sites (some randomised, with a
    dose, a serious AE and a follow-up day) and the test users. Returns the arms allocated per patient."""
    from immunoguide import trial
    from immunoguide.service.auth import UserStore
    from immunoguide.trial.access import Actor
    from immunoguide.trial.store import TrialStore

    st = TrialStore(f"sqlite:///{path}")
    st.initialise(simulation=True)  # the service tests run on a fixed clock (NOW)
    lists = path.parent / "lists"
    admin = Actor("admin", "administrator")
    t0 = NOW - timedelta(hours=30)
    for site in SITES:
        for stratum in ("MALS", "immunoparalysis"):
            seed = hashlib.sha256(f"svc-{site}-{stratum}".encode()).hexdigest()
            f = trial.generate_allocation_list(site, stratum, 8, seed=seed, out_dir=lists)
            with st.session() as s:
                trial.import_allocation_list(s, f.csv, actor=admin, now=t0)
    arms: dict[str, str] = {}
    for code, (site, ferritin, hla, randomise) in PATIENTS.items():
        co = Actor(f"seed-{site}", "site_coordinator", site)
        with st.session() as s:
            trial.screen(s, code, site, screening_record(), actor=co, now=t0)
        with st.session() as s:
            trial.record_consent(s, code, "patient", t0, actor=co, now=t0 + timedelta(minutes=5))
        with st.session() as s:
            trial.enter_labs(s, code, lab_record(ferritin, hla, t0 - timedelta(hours=2)), actor=co,
                             now=t0 + timedelta(minutes=10))
        if randomise:
            with st.session() as s:
                trial.randomize(s, code, actor=co, now=RANDOMISED_AT)
            with st.session() as s:
                p = trial.patient_view(s, code, actor=Actor("dsmb", "dsmb"))
                arms[code] = p["randomisation"]["arm"]
            with st.session() as s:
                trial.record_dose(s, code, "IV", RANDOMISED_AT + timedelta(minutes=30), actor=co,
                                  now=RANDOMISED_AT + timedelta(hours=1), number=1)
    ath = Actor("seed-ATH", "site_coordinator", "ATH")
    with st.session() as s:
        trial.record_adverse_event(s, "ATH-001", term="Anemia", onset_at=NOW - timedelta(hours=10), grade=3,
                                   serious=True, relatedness="possible", outcome="recovering", actor=ath,
                                   now=NOW - timedelta(hours=9))
    with st.session() as s:
        trial.record_followup(s, "ATH-001", 0, actor=ath, now=NOW - timedelta(hours=2), sofa_total=8)
    users = UserStore(st)
    for name, role, site in USERS:
        users.create_user(name, PASSWORD, role, site)
    st.dispose()
    return {"arms": arms}


def copy_store(template: Path, dest_dir: Path) -> Path:
    """A private copy of a seeded store file."""
    dest = dest_dir / "trial.db"
    shutil.copyfile(template, dest)
    return dest


@contextmanager
def client_for(db: Path, **settings: Any) -> Iterator[TestClient]:
    """A TestClient over the store at ``db`` with the fixed clock :data:`NOW`."""
    cfg = ServiceSettings(clock=lambda: NOW, **settings)
    app = create_app(f"sqlite:///{db}", settings=cfg)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def login(client: TestClient, user: str, password: str = PASSWORD) -> dict[str, str]:
    """Authorization header of a fresh token for ``user``."""
    r = client.post("/auth/token", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# ---------------------------------------------------------------------------------------------------------------
# FHIR R4B prefetch


LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CONCEPT = "https://immunoguide.example/fhir/CodeSystem/concept"
FLAG = "https://immunoguide.example/fhir/CodeSystem/eligibility-flag"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"


def _t(h: float) -> str:
    return (NOW - timedelta(hours=h)).isoformat().replace("+00:00", "Z")


def _obs(oid: str, pid: str, system: str, code: str, hours_ago: float, **value: Any) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final",
                         "code": {"coding": [{"system": system, "code": code}]},
                         "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _t(hours_ago)}
    o.update(value)
    return o


def _q(value: float, unit: str, code: str | None = None, comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": code or unit}
    if comparator:
        q["comparator"] = comparator
    return {"valueQuantity": q}


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{r['resourceType']}-{r['id']}", "resource": r} for r in resources]}


def patient_view_request(kind: str) -> dict[str, Any]:
    """A CDS Hooks patient-view call for one of three patients.

    ``immunoparalysis``: ferritin 820 ng/mL, QuantiBRITE mHLA-DR 3,100 AB/c, CAP, admitted through the ED,
    Sepsis-3 onset 31 h ago (window closes in 41 h), SOFA inputs, no exclusion.
    ``mals``: ferritin 6,500 ng/mL, no mHLA-DR (MALS takes precedence, ferritin alone decides).
    ``indeterminate``: ferritin reported as "GREATER THAN 2000" (censored), no mHLA-DR.
    """
    pid = f"pt-{kind}"
    patient = {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1954-06-12"}
    encounter = {"resourceType": "Encounter", "id": f"enc-{kind}", "status": "in-progress",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                 "subject": {"reference": f"Patient/{pid}"}, "period": {"start": _t(40)},
                 "hospitalization": {"admitSource": {"coding": [
                     {"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}]}}}
    conditions = [
        {"resourceType": "Condition", "id": f"cap-{kind}", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": ICD10, "code": "J18.9", "display": "Pneumonia, unspecified organism"}]},
         "onsetDateTime": _t(40)},
        {"resourceType": "Condition", "id": f"sepsis-{kind}", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": SNOMED, "code": "91302008", "display": "Sepsis (disorder)"}]},
         "onsetDateTime": _t(31)},
    ]
    obs = [
        _obs(f"plt-{kind}", pid, LOINC, "777-3", 8, **_q(85, "10*3/uL")),
        _obs(f"crea-{kind}", pid, LOINC, "2160-0", 8, **_q(2.4, "mg/dL")),
        _obs(f"bili-{kind}", pid, LOINC, "1975-2", 8, **_q(1.1, "mg/dL")),
        _obs(f"map-{kind}", pid, LOINC, "8478-0", 5, **_q(62, "mm[Hg]")),
        _obs(f"gcs-{kind}", pid, LOINC, "9269-2", 5, **_q(14, "{score}")),
        _obs(f"pao2-{kind}", pid, LOINC, "2703-7", 7, **_q(70, "mm[Hg]")),
        _obs(f"fio2-{kind}", pid, LOINC, "3150-0", 7, **_q(0.5, "1")),
        _obs(f"anc-{kind}", pid, CONCEPT, "anc_per_mm3", 8, **_q(6200, "/mm3")),
    ]
    issued = {"issued": _t(5)}
    if kind == "immunoparalysis":
        obs.append(_obs("fer-ip", pid, LOINC, "2276-4", 6, **_q(820, "ng/mL"), **issued))
        obs.append(_obs("hla-ip", pid, CONCEPT, "hla_dr_per_monocyte", 6, **_q(3100, "AB/c", "{AB}/{cell}"),
                        method={"coding": [{"code": "quantibrite_abc"}]}, **issued))
    elif kind == "mals":
        obs.append(_obs("fer-mals", pid, LOINC, "2276-4", 6, **_q(6500, "ug/L"), **issued))
    elif kind == "indeterminate":
        obs.append(_obs("fer-ind", pid, LOINC, "2276-4", 6, valueString="GREATER THAN 2000", **issued))
    else:
        raise ValueError(kind)
    flags = [
        _obs(f"flag-malig-{kind}", pid, FLAG, "stage_iv_malignancy", 9, valueBoolean=False),
        _obs(f"flag-dnr-{kind}", pid, FLAG, "dnr_order", 9, valueBoolean=False),
        _obs(f"flag-covid-{kind}", pid, FLAG, "covid19", 9, valueBoolean=False),
    ]
    return {
        "hook": "patient-view",
        "hookInstance": f"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea-{kind}",
        "context": {"userId": "Practitioner/example", "patientId": pid},
        "prefetch": {"patient": patient, "observations": _bundle(obs), "flags": _bundle(flags),
                     "conditions": _bundle(conditions), "encounter": _bundle([encounter])},
    }
