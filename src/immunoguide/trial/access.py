"""What leaves ``trial/``: the role-aware read layer that enforces blinding (and who may do what).

Blinded roles never receive an arm, an arm label or a kit's content: every view and export is built here, from
:data:`BLINDED_COLUMNS`, and workflow functions return only what these views produce. The roles (described
once, in :mod:`immunoguide.trial._authz`), the permissions and :func:`authorize` live in that module, below every
trial module, and are re-exported here, the place ``service/`` and ``cli/`` import them from.

Examples
--------
>>> a = Actor("rivera", "site_coordinator", "ATH")
>>> authorize(a, "randomize", site="ATH")
>>> sees_arms(a), sees_arms(Actor("pharm1", "unblinded_pharmacist", "ATH"))
(False, True)
>>> authorize(a, "randomize", site="MIL")
Traceback (most recent call last):
...
immunoguide.errors.NotAuthorized: [IG-E408] expected a user of site 'MIL'; got 'rivera (site_coordinator, site ATH)'; ...
"""

from __future__ import annotations

from typing import Any

from immunoguide.trial._authz import (
    BLINDED_COLUMNS,
    PERMISSIONS,
    ROLES,
    SITE_ROLES,
    UNBLINDED_ROLES,
    Actor,
    arm_visible,
    authorize,
    blind_row,
    sees_arms,
    site_filter,
)
from immunoguide.trial._common import consent_of, get_patient, latest_classification, protocol_of
from immunoguide.trial._labs import lab_results_of
from immunoguide.trial._sealed import arm_of, kit_dict, kits_of

__all__ = [
    "BLINDED_COLUMNS",
    "PERMISSIONS",
    "ROLES",
    "SITE_ROLES",
    "UNBLINDED_ROLES",
    "Actor",
    "arm_visible",
    "authorize",
    "blind_row",
    "consort",
    "lab_results_view",
    "patient_view",
    "randomization_view",
    "screening_log",
    "sees_arms",
    "site_filter",
]


# ---------------------------------------------------------------------------------------------------------------
# Read functions: every record that leaves trial/ is built here (or with blind_row / arm_visible).


def _randomization_record(session: Any, patient: Any, actor: Actor, *, slot: Any = None,
                          allocation_list: Any = None, arm: str | None = None) -> dict[str, Any] | None:
    from sqlalchemy import select

    from immunoguide.protocols import load_protocol
    from immunoguide.trial.models import AllocationList, AllocationSlot

    if slot is None:
        slot = session.execute(select(AllocationSlot).where(AllocationSlot.patient_id == patient.id)).scalar_one_or_none()
    if slot is None:
        return None
    lst = allocation_list if allocation_list is not None else session.get(AllocationList, slot.list_id)
    rec: dict[str, Any] = {
        "randomisation_number": f"{lst.site}-{lst.stratum}-{slot.seq:04d}",
        "list": lst.name,
        "stratum": lst.stratum,
        "randomised_at": slot.allocated_at.isoformat() if slot.allocated_at else None,
        "randomised_by": slot.allocated_by,
    }
    if arm_visible(session, actor, patient):
        a = load_protocol(lst.protocol).arm(arm or arm_of(session, slot, lst))
        rec["arm"] = a.code
        rec["arm_label"] = a.label
        rec["arm_role"] = a.role
    return rec


def randomization_view(session: Any, patient: Any, actor: Actor, *, slot: Any = None, allocation_list: Any = None,
                       kits: Any = None, arm: str | None = None) -> dict[str, Any]:
    """What ``randomize`` returns: randomisation number, stratum, kits; the arm for unblinded roles only."""
    rec = _randomization_record(session, patient, actor, slot=slot, allocation_list=allocation_list, arm=arm) or {}
    proto = protocol_of(patient)
    kits = kits if kits is not None else kits_of(session, patient)
    return {"patient": patient.code, "site": patient.site, "status": patient.status, **rec,
            "blinded": "arm" not in rec,
            "kits": [kit_dict(session, k, proto, actor, patient, arm=rec.get("arm"))
                     for k in sorted(kits, key=lambda k: k.route)]}


def lab_results_view(session: Any, code: str, *, actor: Actor) -> list[Any]:
    """One patient's stored biomarker results (:class:`~immunoguide.rules.endotype.BiomarkerResult`, canonical
    units) after the same ``view`` check as :func:`patient_view`; lab values carry no arm, so every role that may
    view the patient sees them."""
    return lab_results_of(session, get_patient(session, code, actor, "view", lock=False))


def patient_view(session: Any, code: str, *, actor: Actor) -> dict[str, Any]:
    """One patient's record as ``actor`` may see it: status, screening log, consent, classification,
    randomisation (arm only when visible), withdrawal."""
    from sqlalchemy import select

    from immunoguide.trial.models import EligibilityEvaluation, Withdrawal

    p = get_patient(session, code, actor, "view", lock=False)
    consent = consent_of(session, p)
    cl = latest_classification(session, p)
    evals = session.execute(select(EligibilityEvaluation).where(EligibilityEvaluation.patient_id == p.id)
                            .order_by(EligibilityEvaluation.id)).scalars().all()
    wd = session.execute(select(Withdrawal).where(Withdrawal.patient_id == p.id)).scalar_one_or_none()
    return {
        "patient": p.code,
        "site": p.site,
        "protocol": p.protocol,
        "status": p.status,
        "data_removed": p.data_removed,
        "screened_at": p.screened_at.isoformat(),
        "sepsis3_onset": p.sepsis3_onset.isoformat() if p.sepsis3_onset else None,
        "stratum": p.stratum,
        "screening_log": [
            {"stage": e.stage, "evaluated_at": e.evaluated_at.isoformat(), "evaluated_by": e.evaluated_by,
             "eligible": e.eligible, "blocking": list(e.blocking), "undetermined": list(e.undetermined)}
            for e in evals
        ],
        "consent": None if consent is None else {"given_by": consent.given_by, "signed_at": consent.signed_at.isoformat()},
        "classification": None if cl is None else {"endotype": cl.endotype, "classified_at": cl.classified_at.isoformat()},
        "randomisation": _randomization_record(session, p, actor),
        "withdrawal": None if wd is None else {"withdrawn_at": wd.withdrawn_at.isoformat(), "reason": wd.reason,
                                               "data_removal": wd.data_removal},
    }


def screening_log(session: Any, *, actor: Actor) -> list[dict[str, Any]]:
    """Every screened patient the actor may see, with the latest eligibility and the screen-failure reason."""
    from sqlalchemy import select

    from immunoguide.trial.models import EligibilityEvaluation, Patient

    authorize(actor, "view")
    stmt = select(Patient).order_by(Patient.id)
    site = site_filter(actor)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    out = []
    for p in session.execute(stmt).scalars():
        last = session.execute(select(EligibilityEvaluation).where(EligibilityEvaluation.patient_id == p.id)
                               .order_by(EligibilityEvaluation.id.desc()).limit(1)).scalar_one_or_none()
        out.append({
            "patient": p.code, "site": p.site, "status": p.status, "screened_at": p.screened_at.isoformat(),
            "eligible": None if last is None else last.eligible,
            "screen_failure_reasons": [] if last is None or last.eligible is not False else list(last.blocking),
            "stratum": p.stratum, "data_removed": p.data_removed,
        })
    return out


def consort(session: Any, *, actor: Actor) -> dict[str, Any]:
    """CONSORT flow counts: screened, screen failures by reason, randomised, withdrawals (with data removal),
    analysed (randomised minus data-removal withdrawals, the ImmunoSep SAP population). Counts by arm only
    for unblinded roles; by stratum for everyone."""
    from collections import Counter

    from sqlalchemy import select

    from immunoguide.protocols import load_protocol
    from immunoguide.trial.models import AllocationList, AllocationSlot, EligibilityEvaluation, Patient, Withdrawal

    authorize(actor, "view")
    site = site_filter(actor)
    stmt = select(Patient)
    if site is not None:
        stmt = stmt.where(Patient.site == site)
    patients = list(session.execute(stmt).scalars())
    ids = [p.id for p in patients]
    slots = {s.patient_id: (s, l) for s, l in session.execute(
        select(AllocationSlot, AllocationList).join(AllocationList).where(AllocationSlot.patient_id.in_(ids))).all()}
    wds = {w.patient_id: w for w in session.execute(select(Withdrawal).where(Withdrawal.patient_id.in_(ids))).scalars()}
    reasons: Counter[str] = Counter()
    failures = 0
    for p in patients:
        if p.status == "screen_failed":
            failures += 1
            last = session.execute(select(EligibilityEvaluation).where(EligibilityEvaluation.patient_id == p.id)
                                   .order_by(EligibilityEvaluation.id.desc()).limit(1)).scalar_one_or_none()
            for cid in (last.blocking if last is not None else []) or ["(reason removed)"]:
                reasons[cid] += 1
    unblinded = sees_arms(actor)
    by_stratum: Counter[str] = Counter()
    by_arm: Counter[str] = Counter()
    wd_stratum: Counter[str] = Counter()
    wd_removal_stratum: Counter[str] = Counter()
    wd_arm: Counter[str] = Counter()
    wd_removal_arm: Counter[str] = Counter()
    roles: dict[str, str] = {}
    for pid, (s, lst) in slots.items():
        by_stratum[lst.stratum] += 1
        arm = arm_of(session, s, lst) if unblinded else None  # arms are opened for unblinded roles only
        if arm is not None:
            by_arm[arm] += 1
            if arm not in roles:
                roles[arm] = load_protocol(lst.protocol).arm(arm).role
        w = wds.get(pid)
        if w is not None:
            wd_stratum[lst.stratum] += 1
            if arm is not None:
                wd_arm[arm] += 1
            if w.data_removal:
                wd_removal_stratum[lst.stratum] += 1
                if arm is not None:
                    wd_removal_arm[arm] += 1
    randomised = len(slots)
    removal = sum(1 for pid, w in wds.items() if w.data_removal and pid in slots)
    out: dict[str, Any] = {
        "site": site,
        "screened": len(patients),
        "screen_failures": failures,
        "screen_failure_reasons": dict(sorted(reasons.items())),
        "pending": sum(1 for p in patients if p.status == "screening"),
        "withdrawn_before_randomisation": sum(1 for pid in wds if pid not in slots),
        "randomised": randomised,
        "randomised_by_stratum": dict(sorted(by_stratum.items())),
        "withdrawn_after_randomisation": sum(1 for pid in wds if pid in slots),
        "withdrawn_with_data_removal": removal,
        "withdrawn_by_stratum": dict(sorted(wd_stratum.items())),
        "withdrawn_with_data_removal_by_stratum": dict(sorted(wd_removal_stratum.items())),
        "analysed": randomised - removal,
        "analysed_by_stratum": {k: v - wd_removal_stratum.get(k, 0) for k, v in sorted(by_stratum.items())},
        "analysis_population": "randomised minus withdrawals with data removal (ImmunoSep SAP; spec §6.2)",
        "blinded": not unblinded,
    }
    if unblinded:
        role_count: Counter[str] = Counter()
        role_removal: Counter[str] = Counter()
        for arm, n in by_arm.items():
            role_count[roles[arm]] += n
            role_removal[roles[arm]] += wd_removal_arm.get(arm, 0)
        out["randomised_by_arm"] = dict(sorted(by_arm.items()))
        out["withdrawn_by_arm"] = dict(sorted(wd_arm.items()))
        out["withdrawn_with_data_removal_by_arm"] = dict(sorted(wd_removal_arm.items()))
        out["analysed_by_arm"] = {k: v - wd_removal_arm.get(k, 0) for k, v in sorted(by_arm.items())}
        out["randomised_by_arm_role"] = dict(sorted(role_count.items()))
        out["analysed_by_arm_role"] = {k: v - role_removal.get(k, 0) for k, v in sorted(role_count.items())}
    return out
