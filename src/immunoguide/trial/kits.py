"""Double-dummy kits and emergency unblinding.

Each randomised patient receives one kit per kit name of the protocol's arms (ImmunoSep: an **IV** kit —
anakinra or placebo — and an **SC** kit — rhIFN-γ or placebo). A kit's number is derived from the allocation
list's checksum, the slot and the route (not sequential, so it reveals nothing), and its label is the same for
every kit of a route whatever it holds: it names every content the route can hold. The content (regimen) is
seen by unblinded pharmacists (who prepare the drugs) and the DSMB only; everyone else sees kit numbers and
labels (:mod:`immunoguide.trial.access`).

Emergency unblinding (:func:`unblind`) reveals one patient's arm to an investigator of the patient's site, with
a mandatory reason; it is stored and audited, and the patient's arm is shown to the site's investigators from
then on.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from immunoguide.errors import InputError
from immunoguide.protocols import Protocol, describe_regimen
from immunoguide.trial import audit
from immunoguide.trial._common import aware, get_patient, protocol_of, require_randomised
from immunoguide.trial.access import Actor, arm_visible, blind_row
from immunoguide.trial.models import AllocationList, AllocationSlot, Kit, Patient, Unblinding

__all__ = ["assign_kits", "kit_dict", "kit_label", "kits_of", "kits_view", "unblind"]


def kit_label(protocol: Protocol, route: str, kit_number: str) -> str:
    """The label printed on a kit: identical for every kit of ``route`` except the number.

    >>> from immunoguide.protocols import load_protocol
    >>> print(kit_label(load_protocol("immunosep-2025"), "IV", "IV-0123456789"))
    immunosep-2025 | IV kit IV-0123456789 | blinded study medication: one of anakinra 200 mg IV q8h x 15 d;
    placebo (normal saline 0.9 %) 20 mL IV q8h x 15 d | for clinical-trial use only
    """
    contents = sorted({describe_regimen(protocol.regimens[rid]) for a in protocol.arms for k, rid in a.kits.items()
                       if k == route})
    return (f"{protocol.id} | {route} kit {kit_number} | blinded study medication: one of {'; '.join(contents)} | "
            "for clinical-trial use only")


def _kit_number(lst: AllocationList, slot: AllocationSlot, route: str) -> str:
    digest = hashlib.sha256(f"{lst.content_sha256}:{slot.seq}:{route}".encode()).hexdigest()
    return f"{route}-{digest[:12].upper()}"


def assign_kits(session: Session, actor: Actor, now: datetime, p: Patient, protocol: Protocol,
                lst: AllocationList, slot: AllocationSlot) -> list[Kit]:
    """Create the patient's kits for the arm of ``slot`` (called by :func:`~immunoguide.trial.randomization.randomize`)."""
    arm = protocol.arm(slot.arm)
    kits = []
    for route, regimen in sorted(arm.kits.items()):
        number = _kit_number(lst, slot, route)
        kits.append(Kit(kit_number=number, patient_id=p.id, route=route, regimen=regimen,
                        label=kit_label(protocol, route, number), assigned_at=now))
    audit.insert_many(session, actor, now, kits)
    return kits


_KITS_OF = select(Kit).where(Kit.patient_id == bindparam("patient_id")).order_by(Kit.route)


def kits_of(session: Session, p: Patient) -> list[Kit]:
    """The patient's kits, by route."""
    return list(session.execute(_KITS_OF, {"patient_id": p.id}).scalars())


def kit_dict(session: Session, k: Kit, protocol: Protocol, actor: Actor, p: Patient) -> dict[str, Any]:
    """One kit as ``actor`` may see it (content only when the arm is visible to them)."""
    row = {"kit_number": k.kit_number, "route": k.route, "label": k.label, "assigned_at": k.assigned_at.isoformat(),
           "regimen": k.regimen}
    out = blind_row("kits", row, actor)
    if arm_visible(session, actor, p):
        r = protocol.regimens[k.regimen]
        out["regimen"] = k.regimen
        out["content"] = describe_regimen(r)
        out["is_placebo"] = r.is_placebo
    return out


def kits_view(session: Session, code: str, *, actor: Actor) -> dict[str, Any]:
    """The patient's kits: numbers and labels for everyone; contents for unblinded roles only."""
    p = get_patient(session, code, actor, "view", lock=False)
    require_randomised(session, p, "kits")
    proto = protocol_of(p)
    return {"patient": p.code, "blinded": not arm_visible(session, actor, p),
            "kits": [kit_dict(session, k, proto, actor, p) for k in kits_of(session, p)]}


def unblind(session: Session, code: str, reason: str, *, actor: Actor, now: datetime) -> dict[str, Any]:
    """Emergency unblinding of one patient by an investigator of the patient's site (reason required, audited).

    Returns the patient's arm and kit contents. Raises NotAuthorized (any other role or site), NotRandomized,
    InputError (empty reason).
    """
    aware(now, "now")
    p = get_patient(session, code, actor, "unblind")
    slot = require_randomised(session, p, "unblinding")
    if not isinstance(reason, str) or len(reason.strip()) < 5:
        raise InputError(expected="the clinical reason for the emergency unblinding (at least 5 characters)",
                         got=reason, where="field reason", todo="state why the arm must be known", field="reason")
    audit.insert(session, actor, now, Unblinding(patient_id=p.id, reason=reason.strip(), unblinded_at=now,
                                                 unblinded_by=actor.user, role=actor.role))
    proto = protocol_of(p)
    arm = proto.arm(slot.arm)
    return {
        "patient": p.code,
        "arm": arm.code,
        "arm_label": arm.label,
        "unblinded_at": now.isoformat(),
        "unblinded_by": actor.user,
        "reason": reason.strip(),
        "kits": [kit_dict(session, k, proto, actor, p) for k in kits_of(session, p)],
    }


