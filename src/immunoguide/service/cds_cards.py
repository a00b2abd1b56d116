"""What a CDS card offers besides its text: ``suggestions`` (orders) and ``links`` (SMART launch of the dashboard).

**Suggestions** (CDS Hooks 2.0): when the immune state is indeterminate because a measurement is missing, censored,
of another assay, stale or not yet persistent, the card suggests ordering it — one suggestion per measurement with
one ``create`` action of a FHIR R4B ``ServiceRequest`` (``status`` draft, ``intent`` proposal, the patient as
subject, the reason as text), validated with ``fhir.resources``. The order codes are data
(``service/fhir_orders.toml``: ferritin LOINC 2276-4; monocyte HLA-DR by the local concept code, QuantiBRITE).
A card with suggestions has ``selectionBehavior`` ``any`` (the specification requires it then).

**Links**: when the service knows its public URL (an EHR configuration, :mod:`immunoguide.service.cds_security`),
each card links to the dashboard as a SMART app (``type`` smart, the launch URL ``<service_url>/dashboard/smart/
launch``). ``appContext`` carries the patient's trial study code when the Patient resource has an identifier in
:data:`STUDY_CODE_SYSTEM` (the EHR records it at enrolment), so the launch opens ``/dashboard/patients/<code>``;
otherwise the FHIR patient id, and the launch opens the site page (screening).

Examples
--------
>>> study_code({"resourceType": "Patient", "identifier": [{"system": STUDY_CODE_SYSTEM, "value": "ATH-001"}]})
'ATH-001'
>>> [s["label"] for s in order_suggestions(["hla_dr_per_monocyte"], patient_id="p1", hook_instance="h", reasons={})]
['Order monocyte HLA-DR (QuantiBRITE)']
"""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest

__all__ = ["SMART_LAUNCH_PATH", "STUDY_CODE_SYSTEM", "dashboard_link", "order_suggestions", "orders", "study_code"]

#: Identifier system of the trial's study code on the EHR's Patient resource.
STUDY_CODE_SYSTEM = "https://immunoguide.example/fhir/NamingSystem/study-code"
#: Path of the dashboard's SMART launch endpoint (the ``url`` of a smart link).
SMART_LAUNCH_PATH = "/dashboard/smart/launch"


@cache
def orders() -> Mapping[str, Mapping[str, Any]]:
    """The orderable measurements by concept (``service/fhir_orders.toml``)."""
    doc = tomllib.loads(resources.files("immunoguide.service").joinpath("fhir_orders.toml").read_text("utf-8"))
    return doc["orders"]


def order_suggestions(concepts: Iterable[str], *, patient_id: str | None, hook_instance: str,
                      reasons: Mapping[str, str]) -> list[dict[str, Any]]:
    """One suggestion per orderable concept (first occurrence order), each creating a ServiceRequest.

    Parameters
    ----------
    concepts : iterable of str
        Concepts whose measurement would let the classification decide.
    patient_id : str or None
        FHIR id of the patient (the ServiceRequest's subject); without it no suggestion is made.
    hook_instance : str
        The call's ``hookInstance`` (suggestion uuids are derived from it, so they are stable per call).
    reasons : mapping of str to str
        Concept → the sentence saying why (the ServiceRequest's ``reasonCode.text``).
    """
    if not patient_id:
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for concept in concepts:
        spec = orders().get(concept)
        if spec is None or concept in seen:
            continue
        seen.add(concept)
        resource: dict[str, Any] = {
            "resourceType": "ServiceRequest", "status": "draft", "intent": "proposal",
            "code": {"coding": [dict(c) for c in spec["coding"]], "text": spec["text"]},
            "subject": {"reference": f"Patient/{patient_id}"},
        }
        if reasons.get(concept):
            resource["reasonCode"] = [{"text": reasons[concept][:1000]}]
        ServiceRequest.model_validate(resource)  # the suggestion is valid FHIR R4B
        out.append({
            "label": spec["label"],
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"immunoguide:{hook_instance}:order:{concept}")),
            "isRecommended": True,
            "actions": [{"type": "create", "description": spec["label"], "resource": resource}],
        })
    return out


def study_code(patient: Any) -> str | None:
    """The trial study code on a FHIR Patient (JSON), from an identifier in :data:`STUDY_CODE_SYSTEM`."""
    if not isinstance(patient, Mapping):
        return None
    for ident in patient.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == STUDY_CODE_SYSTEM and ident.get("value"):
            return str(ident["value"])
    return None


def dashboard_link(service_url: str, patient: Any, patient_id: str | None) -> dict[str, Any]:
    """The card's SMART link to the dashboard (patient page when the study code is known, else the site page)."""
    code = study_code(patient)
    ctx = {"patient_code": code} if code else {"fhir_patient": patient_id}
    return {
        "label": f"Open {code} in the immunoguide dashboard" if code else "Open the immunoguide dashboard (screening)",
        "url": service_url.rstrip("/") + SMART_LAUNCH_PATH,
        "type": "smart",
        "appContext": json.dumps(ctx, separators=(",", ":")),
    }
