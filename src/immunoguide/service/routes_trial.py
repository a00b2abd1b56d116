"""``/trial``: every trial operation over HTTP, each one call of a :mod:`immunoguide.trial` function.

Every route runs in one store transaction (:meth:`immunoguide.trial.store.TrialStore.session`: committed when the
trial function returns, rolled back when it raises) and passes the logged-in user's
:class:`~immunoguide.trial.access.Actor` (user, role, site) and the service clock's ``now``. Authorisation, site
restriction and blinding happen inside ``trial/`` (its role-aware read layer builds every record returned here);
this module only translates HTTP to function calls. Errors become HTTP answers in :mod:`immunoguide.service.errors`.

Not exposed here, by design: allocation-list *generation* (the statistician's offline step; the lists hold the
arms) and store backup/restore (whole-database files with arms; ``immunoguide trial backup`` on the server).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from immunoguide import trial
from immunoguide.service._context import ActorDep, NowDep, ServiceState, StateDep, shipped_protocol
from immunoguide.service.schemas import (
    AdverseEventRequest,
    AllocationListUpload,
    ConsentRequest,
    DoseRequest,
    ErrorBody,
    FollowUpRequest,
    LabsRequest,
    RandomizeRequest,
    SaeReportRequest,
    ScreenRequest,
    UnblindRequest,
    WithdrawRequest,
)
from immunoguide.trial.access import authorize

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Not authenticated (IG-E418)."},
    403: {"model": ErrorBody, "description": "Role or site may not do this (IG-E408)."},
    404: {"model": ErrorBody, "description": "Unknown patient or record (IG-E406, IG-E417)."},
    409: {"model": ErrorBody, "description": "Refused by the trial's state: already randomised, duplicate, window "
                                             "missed, not eligible, list mismatch … (IG-E4xx)."},
    422: {"model": ErrorBody, "description": "Invalid input (IG-E1xx)."},
}

router = APIRouter(prefix="/trial", tags=["trial"], responses=_ERRORS)

Code = Annotated[str, PathParam(min_length=1, max_length=64, description="Study code of the patient.")]
Json = dict[str, Any]


def _tx(state: ServiceState, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(session, *args, **kwargs)`` in one store transaction, committed before the response is built."""
    with state.store.session() as s:
        return fn(s, *args, **kwargs)


# -- screening, consent, classification, randomisation --------------------------------------------------------


@router.get("/patients", summary="Screening log")
def screening_log(st: StateDep, actor: ActorDep) -> list[Json]:
    """Every screened patient the user may see (site users: their site), with the latest eligibility."""
    return _tx(st, trial.screening_log, actor=actor)


@router.post("/patients", summary="Screen a patient", status_code=201)
def screen(body: ScreenRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Store the patient and the protocol's eligibility result with its evidence (the screening log)."""
    protocol = shipped_protocol(body.protocol)
    return _tx(st, trial.screen, body.code, body.site, body.record, actor=actor, now=now, protocol=protocol.label)


@router.get("/patients/{code}", summary="One patient")
def patient(code: Code, st: StateDep, actor: ActorDep) -> Json:
    """Status, screening log, consent, classification, randomisation (arm only for unblinded roles), withdrawal."""
    return _tx(st, trial.patient_view, code, actor=actor)


@router.post("/patients/{code}/consent", summary="Record consent")
def consent(code: Code, body: ConsentRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Record informed consent (patient, first-degree relative, spouse) or its refusal, once."""
    return _tx(st, trial.record_consent, code, body.given_by, body.signed_at, actor=actor, now=now)


@router.post("/patients/{code}/labs", summary="Enter laboratory results (classification)")
def labs(code: Code, body: LabsRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Store ferritin / mHLA-DR results; before randomisation classify the endotype (the stratum)."""
    return _tx(st, trial.enter_labs, code, body.record, actor=actor, now=now)


@router.post("/patients/{code}/randomize", summary="Randomise")
def randomize(code: Code, body: RandomizeRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Next free slot of the site's list for the patient's stratum, and the IV and SC kits."""
    return _tx(st, trial.randomize, code, actor=actor, now=now, stratum=body.stratum)


# -- kits, unblinding, doses ----------------------------------------------------------------------------------


@router.get("/patients/{code}/kits", summary="Kits")
def kits(code: Code, st: StateDep, actor: ActorDep) -> Json:
    """Kit numbers and labels; contents for unblinded roles only."""
    return _tx(st, trial.kits_view, code, actor=actor)


@router.post("/patients/{code}/unblind", summary="Emergency unblinding")
def unblind(code: Code, body: UnblindRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Reveal one patient's arm to an investigator of the patient's site (reason required; audited)."""
    return _tx(st, trial.unblind, code, body.reason, actor=actor, now=now)


@router.get("/patients/{code}/doses", summary="Dosing schedule and status")
def doses(code: Code, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Every due dose with its status (on time, late, missed, pending)."""
    return _tx(st, trial.dosing_view, code, actor=actor, now=now)


@router.post("/patients/{code}/doses", summary="Record a dose", status_code=201)
def record_dose(code: Code, body: DoseRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Record a dose given from the patient's IV or SC kit."""
    return _tx(st, trial.record_dose, code, body.kit, body.given_at, actor=actor, now=now, number=body.number,
               note=body.note, late_entry_reason=body.late_entry_reason)


# -- follow-up, adverse events, withdrawal ----------------------------------------------------------------------


@router.get("/patients/{code}/followup", summary="Follow-up")
def followup(code: Code, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Recorded follow-up days, overdue days and the serial endotypes."""
    return _tx(st, trial.followup_view, code, actor=actor, now=now)


@router.post("/patients/{code}/followup", summary="Record a follow-up day", status_code=201)
def record_followup(code: Code, body: FollowUpRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """One study day's SOFA (total or inputs), labs, day-15 infection assessment or vital status."""
    return _tx(
        st, trial.record_followup, code, body.day, actor=actor, now=now, assessed_at=body.assessed_at, sofa_total=body.sofa_total,
        sofa_inputs=body.sofa_inputs, sofa_criteria=body.sofa_criteria, labs=body.labs,
        infection_assessment=body.infection_assessment, vital_status=body.vital_status, death_at=body.death_at,
        late_entry_reason=body.late_entry_reason,
    )


@router.get("/patients/{code}/serial-endotypes", summary="Serial endotypes")
def serial_endotypes(code: Code, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Daily endotypes on the visit days, transitions and reversal."""
    return _tx(st, trial.serial_endotypes, code, actor=actor, now=now)


@router.get("/patients/{code}/adverse-events", summary="Adverse events")
def adverse_events(code: Code, st: StateDep, actor: ActorDep, now: NowDep) -> list[Json]:
    """The patient's AEs with the SAE reporting clocks."""
    return _tx(st, trial.adverse_events_view, code, actor=actor, now=now)


@router.post("/patients/{code}/adverse-events", summary="Record an adverse event", status_code=201)
def record_adverse_event(code: Code, body: AdverseEventRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Record an AE (CTCAE grade, seriousness, relatedness, outcome); a serious one starts the SAE clocks."""
    return _tx(
        st, trial.record_adverse_event, code, term=body.term, onset_at=body.onset_at, grade=body.grade, serious=body.serious,
        relatedness=body.relatedness, outcome=body.outcome, actor=actor, now=now, aware_at=body.aware_at,
        late_entry_reason=body.late_entry_reason,
    )


@router.post("/patients/{code}/adverse-events/{ae_id}/reports", summary="Record an SAE report")
def report_sae(
    code: Code, ae_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], body: SaeReportRequest, st: StateDep,
    actor: ActorDep, now: NowDep,
) -> Json:
    """Record the initial (24 h) or full (15 days) report of a serious AE."""
    return _tx(st, trial.report_sae, code, ae_id, body.kind, body.reported_at, actor=actor, now=now,
               late_entry_reason=body.late_entry_reason)


@router.post("/patients/{code}/withdraw", summary="Withdraw")
def withdraw(code: Code, body: WithdrawRequest, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Record a withdrawal; with remove_data the patient's clinical data are deleted (a tombstone stays)."""
    return _tx(st, trial.withdraw, code, body.reason, actor=actor, now=now, remove_data=body.remove_data)


# -- trial-wide views -------------------------------------------------------------------------------------------


@router.get("/consort", summary="CONSORT counts")
def consort(st: StateDep, actor: ActorDep) -> Json:
    """Screened, screen failures by reason, randomised, withdrawn, analysed (by arm for unblinded roles only)."""
    return _tx(st, trial.consort, actor=actor)


@router.get("/safety/overdue-sae-reports", summary="Overdue SAE reports")
def overdue_sae_reports(st: StateDep, actor: ActorDep, now: NowDep) -> list[Json]:
    """Every SAE report overdue now (site users: their site)."""
    return _tx(st, trial.overdue_sae_reports, actor=actor, now=now)


@router.get("/safety/signals", summary="Safety signals (DSMB)")
def safety_signals(st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """The reported safety signals per arm against placebo (unblinded safety reviewer only)."""
    return _tx(st, trial.safety_signals, actor=actor, now=now)


@router.post("/allocation-lists", summary="Import an allocation list", status_code=201)
def import_allocation_list(body: AllocationListUpload, st: StateDep, actor: ActorDep, now: NowDep) -> Json:
    """Import a generated list (its .csv, .meta.json and .sha256 files as text); checksums are verified."""
    authorize(actor, "import_allocation")
    with tempfile.TemporaryDirectory(prefix="ig-alloc-") as d:
        base = Path(d)
        (base / f"{body.name}.csv").write_text(body.csv, encoding="utf-8", newline="")
        (base / f"{body.name}.meta.json").write_text(body.meta_json, encoding="utf-8", newline="")
        (base / f"{body.name}.sha256").write_text(body.sha256, encoding="utf-8", newline="")
        return _tx(st, trial.import_allocation_list, base / f"{body.name}.csv", actor=actor, now=now)


@router.get("/allocation-lists/verify", summary="Verify the allocation lists")
def verify_allocation_lists(st: StateDep, actor: ActorDep) -> Json:
    """Every imported list against its checksum and use (check ids IG-RAND-E…/W…)."""
    authorize(actor, "verify")
    checks = [c.to_dict() for c in _tx(st, trial.verify_allocation_lists)]
    return {"ok": not any(c["level"] == "error" for c in checks), "checks": checks}


@router.get("/audit/verify", summary="Verify the audit trail")
def verify_audit(st: StateDep, actor: ActorDep) -> Json:
    """Walk the hash chain and compare the trail with every audited table (issue ids IG-AUD-E…)."""
    authorize(actor, "verify")
    return _tx(st, trial.verify_audit).to_dict()


@router.get(
    "/export",
    summary="Export the trial (zip)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "A zip of the export directory."}},
)
def export(
    st: StateDep, actor: ActorDep, now: NowDep,
    fmt: Annotated[Literal["csv", "parquet", "both"], Query(alias="format")] = "csv",
) -> Response:
    """Every table as the user may see it (blinded roles: no arm, no kit content), CONSORT counts and the data
    dictionary, zipped."""
    formats = ("csv", "parquet") if fmt == "both" else (fmt,)
    with tempfile.TemporaryDirectory(prefix="ig-export-") as d:
        manifest = _tx(st, trial.export_trial, d, actor=actor, now=now, formats=formats)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in manifest["files"]:
                zf.write(Path(d) / name, arcname=name)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="immunoguide-export-{stamp}.zip"'})

