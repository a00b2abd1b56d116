"""Double-dummy kits and emergency unblinding.

Each randomised patient receives one kit per kit name of the protocol's arms (ImmunoSep: an **IV** kit —
anakinra or placebo — and an **SC** kit — rhIFN-γ or placebo). A kit's number is an HMAC of the list, the slot and
the route under the trial key's *kit* sub-key (not sequential and independent of the arm, so it reveals nothing),
and its label is the same for every kit of a route whatever it holds: it names every content the route can hold.
The store does not hold the content: it follows from the slot's sealed arm (:func:`kit_regimen`), which only a
process holding the trial key can open, and it is shown to unblinded pharmacists (who prepare the drugs) and the
DSMB only; everyone else sees kit numbers and labels (:mod:`immunoguide.trial.access`).

Emergency unblinding (:func:`unblind`) reveals one patient's arm to an investigator of the patient's site, with
a mandatory reason; it is stored and audited, and the patient's arm is shown to the site's investigators from
then on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from immunoguide.errors import InputError
from immunoguide.protocols import Protocol, describe_regimen
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor, arm_visible
from immunoguide.trial._common import aware, get_patient, protocol_of, require_randomised
from immunoguide.trial._sealed import arm_of, kit_dict, kit_regimen, kits_of
from immunoguide.trial.models import AllocationList, AllocationSlot, Kit, Patient, Unblinding

__all__ = ["assign_kits", "kit_dict", "kit_label", "kit_regimen", "kits_of", "kits_view", "unblind"]


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


def _kit_number(session: Session, lst: AllocationList, slot: AllocationSlot, route: str) -> str:
    key = clock.require_key(session, "to number kits")
    digest = key.mac("kit", ["kit", lst.name, lst.site, lst.stratum, slot.seq, route])
    return f"{route}-{digest[:12].upper()}"


def assign_kits(session: Session, actor: Actor, now: datetime, p: Patient, protocol: Protocol,
                lst: AllocationList, slot: AllocationSlot, *, arm: str | None = None) -> list[Kit]:
    """Create the patient's kits for the arm of ``slot`` (called by :func:`~immunoguide.trial.randomization.randomize`).

    The kits' routes are those of the arm (identical for every arm of a double-dummy design); no content is stored.
    """
    a = protocol.arm(arm or arm_of(session, slot, lst))
    kits = []
    for route in sorted(a.kits):
        number = _kit_number(session, lst, slot, route)
        kits.append(Kit(kit_number=number, patient_id=p.id, route=route, regimen=None,
                        label=kit_label(protocol, route, number), assigned_at=now))
    audit.insert_many(session, actor, now, kits)
    return kits


def kits_view(session: Session, code: str, *, actor: Actor) -> dict[str, Any]:
    """The patient's kits: numbers and labels for everyone; contents for unblinded roles only."""
    p = get_patient(session, code, actor, "view", lock=False)
    slot = require_randomised(session, p, "kits")
    proto = protocol_of(p)
    visible = arm_visible(session, actor, p)
    arm = None
    if visible:
        arm = arm_of(session, slot)
    return {"patient": p.code, "blinded": not visible,
            "kits": [kit_dict(session, k, proto, actor, p, arm=arm) for k in kits_of(session, p)]}


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
    arm = proto.arm(arm_of(session, slot))
    return {
        "patient": p.code,
        "arm": arm.code,
        "arm_label": arm.label,
        "unblinded_at": now.isoformat(),
        "unblinded_by": actor.user,
        "reason": reason.strip(),
        "kits": [kit_dict(session, k, proto, actor, p, arm=arm.code) for k in kits_of(session, p)],
    }


