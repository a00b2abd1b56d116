"""``/rules``: the pure clinical rules over HTTP (SOFA, immune endotype, eligibility).

Each route reads one JSON object, calls the rule exactly as the CLI does (``immunoguide score sofa``,
``immunoguide classify``) and returns the rule's own result record, which names the criteria or protocol
version, the policies or settings used and the inputs used. Any authenticated user may call them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from immunoguide.errors import InputError, UnknownCriteriaError
from immunoguide.protocols import available_protocols, load_protocol
from immunoguide.rules.eligibility import PatientRecord, evaluate_eligibility
from immunoguide.rules.endotype import classify_endotype, results_from_record
from immunoguide.rules.sofa import SofaInputs, score_sofa
from immunoguide.service._context import ActorDep, shipped_protocol
from immunoguide.service.schemas import ClassifyRequest, EligibilityRequest, ErrorBody, SofaRequest, SofaResponse

__all__ = ["router", "validation_to_input_error"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Not authenticated (IG-E418)."},
    422: {"model": ErrorBody, "description": "Invalid input (IG-E1xx, IG-E3xx, unknown protocol IG-E203)."},
}

router = APIRouter(prefix="/rules", tags=["rules"], responses=_ERRORS)


def validation_to_input_error(exc: ValidationError, where: str) -> InputError:
    """The first pydantic error as an :class:`~immunoguide.errors.InputError` naming the field."""
    err = exc.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or None
    return InputError(expected=str(err["msg"]).lower(), got=err.get("input"),
                      where=f"{where}" + (f", field {field}" if field else ""),
                      todo="fix the field's value or type", field=field)


@router.get("/protocols", summary="Shipped protocols")
async def list_protocols(actor: ActorDep) -> list[dict[str, Any]]:
    """Every shipped protocol: id, version, label (id@version), title, endotypes."""
    out = []
    for pid in available_protocols():
        p = load_protocol(pid)
        out.append({"id": p.id, "version": p.version, "label": p.label, "title": p.title,
                    "endotypes": list(p.endotype_names)})
    return out


@router.post("/sofa", summary="Score SOFA over one window", response_model=SofaResponse)
async def rules_sofa(body: SofaRequest, actor: ActorDep) -> dict[str, Any]:
    """SOFA-1 (default) or SOFA-2 from the worst values of one window: components, total, missing and imputed
    components, policies and inputs used."""
    inputs = SofaInputs.from_record(body.inputs, where="inputs")
    return score_sofa(inputs, criteria=body.criteria, policies=body.policies or None).to_dict()


@router.post("/classify", summary="Classify the immune endotype")
async def rules_classify(body: ClassifyRequest, actor: ActorDep) -> dict[str, Any]:
    """Immune endotype (MALS, immunoparalysis, the protocol's fallback, or indeterminate with reasons and the
    endotypes still possible) from one flat record, under the protocol's classification rules."""
    protocol = shipped_protocol(body.protocol)
    spec = protocol.classification
    if spec is None:
        raise UnknownCriteriaError(expected="a protocol with a [classification] section", got=protocol.label,
                                   where="field protocol", todo="pick a protocol that defines endotype rules",
                                   field="protocol")
    results, anchor, at = results_from_record(body.record, spec, where="record")
    result = classify_endotype(spec, results, anchor_time=anchor, at=at, protocol_label=protocol.label)
    out: dict[str, Any] = {"id": body.record["id"]} if body.record.get("id") is not None else {}
    out.update(result.to_dict())
    return out


@router.post("/eligibility", summary="Evaluate eligibility")
async def rules_eligibility(body: EligibilityRequest, actor: ActorDep) -> dict[str, Any]:
    """Every inclusion and exclusion criterion of the protocol: met / not met / unknown with its evidence;
    eligible True / False / None (undetermined); arms still open; settings used and warnings."""
    protocol = shipped_protocol(body.protocol)
    try:
        patient = PatientRecord.model_validate(body.patient)
    except ValidationError as exc:
        raise validation_to_input_error(exc, "patient") from None
    return evaluate_eligibility(protocol, patient, at=body.at, settings=body.settings or None).to_dict()
