"""Opening the sealed arms and the kits' contents: what every module that shows or uses an arm calls (not public).

A slot's arm is not in the store: it follows from the slot's commitment under the trial key (:func:`arm_of`), and
a kit's content from the patient's arm (:func:`kit_regimen`). Only code that shows arms to unblinded roles, assigns
kits or computes schedules opens them; :func:`kit_dict` is the role-aware record of a kit. The workflow modules
(:mod:`immunoguide.trial.randomization`, :mod:`immunoguide.trial.kits`) re-export these names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from immunoguide.errors import AllocationListMismatch, InputError, WrongStratum
from immunoguide.protocols import Protocol, describe_regimen, load_protocol
from immunoguide.trial import clock
from immunoguide.trial._authz import Actor, arm_visible, blind_row
from immunoguide.trial._txn import per_transaction
from immunoguide.trial.keys import TrialKey
from immunoguide.trial.models import AllocationList, AllocationSlot, Kit, Patient

__all__ = [
    "arm_of",
    "kit_dict",
    "kit_regimen",
    "kits_of",
    "list_mac",
    "randomization_window",
    "slot_mac",
    "stratum_arms",
]


def stratum_arms(protocol: Protocol, stratum: str) -> dict[str, int]:
    """Arm code → allocation weight for one stratum (weights from the protocol's ratio by arm role).

    >>> stratum_arms(load_protocol("immunosep-2025"), "MALS")
    {'mals_anakinra': 1, 'mals_placebo': 1}
    """
    if stratum not in protocol.endotype_names:
        raise WrongStratum(expected=f"a stratum of {protocol.label}: {list(protocol.endotype_names)}", got=stratum,
                           where="allocation list", todo="strata are the protocol's endotypes")
    ratio = protocol.randomisation.ratio.value if protocol.randomisation and protocol.randomisation.ratio else None
    arms = [a for a in protocol.arms if stratum in a.endotypes]
    if ratio is None:
        raise InputError(expected="a protocol with an allocation ratio", got=protocol.label, where="[randomisation]",
                         todo="the protocol file must give [randomisation.ratio]")
    out: dict[str, int] = {}
    for a in arms:
        if a.role not in ratio:
            raise InputError(expected=f"a ratio weight for arm role {a.role}", got=ratio, where="[randomisation.ratio]",
                             todo="give a weight for every arm role")
        out[a.code] = int(ratio[a.role])
    roles = Counter(a.role for a in arms)
    if any(n != 1 for n in roles.values()) or len(out) < 2:
        raise InputError(expected="one arm per ratio role in the stratum", got={a.code: a.role for a in arms},
                         where=f"arms of stratum {stratum}", todo="check the protocol's arms")
    return out


def slot_mac(key: TrialKey, name: str, site: str, stratum: str, seq: int, arm: str) -> str:
    """The commitment to one slot's arm (hex HMAC-SHA-256 under the *allocation* sub-key)."""
    return key.mac("allocation", ["slot", name, site, stratum, int(seq), arm])


def list_mac(key: TrialKey, name: str, site: str, stratum: str, protocol: str, macs: Sequence[str]) -> str:
    """The MAC of a whole sealed list: its identity and every slot's commitment, in slot order."""
    return key.mac("allocation", ["list", name, site, stratum, protocol, len(macs), list(macs)])


def _mismatch(got: Any, where: str, todo: str, expected: str = "an allocation list matching its checksums") -> AllocationListMismatch:
    return AllocationListMismatch(expected=expected, got=got, where=where, todo=todo)


def arm_of(session: Session, slot: AllocationSlot, lst: AllocationList | None = None) -> str:
    """The arm of a slot, opened with the trial key (tries each arm of the list's stratum against the commitment).

    Only code that shows arms to unblinded roles, assigns kits or computes schedules calls this; blinded views
    never need it. Raises TrialKeyError without the key, AllocationListMismatch when the commitment opens to no
    arm (the slot was edited).

    Without ``lst``, the arm opened is kept for the rest of the transaction, keyed by the slot's list, sequence
    number and commitment (a course of doses asks for it once per dose; the list row is read, and the commitment
    checked, once per transaction).
    """
    if lst is not None:
        return _open_arm(session, slot, lst)
    opened: dict[tuple[Any, ...], str] = per_transaction(session, _OPENED_KEY, dict)
    ident = (slot.list_id, slot.seq, slot.arm_mac, slot.arm)
    arm = opened.get(ident)
    if arm is None:
        found = session.get(AllocationList, slot.list_id)
        assert found is not None
        arm = opened[ident] = _open_arm(session, slot, found)
    return arm


#: session.info key of the arms opened in the current transaction ({slot identity: arm}, :func:`per_transaction`).
_OPENED_KEY = "_immunoguide_opened_arms"


def _open_arm(session: Session, slot: AllocationSlot, lst: AllocationList) -> str:
    """:func:`arm_of` with the slot's list: the commitment checked against each arm of the stratum."""
    if slot.arm_mac is None:
        if slot.arm is not None:  # a revision-0002 list not sealed yet (`trial init` seals it)
            return slot.arm
        raise _mismatch(f"slot {slot.seq} of {lst.name} without commitment", "allocation_slots",
                        "run `immunoguide trial allocation verify`")
    key = clock.require_key(session, "to open an arm")
    for arm in stratum_arms(load_protocol(lst.protocol), lst.stratum):
        if key.check("allocation", ["slot", lst.name, lst.site, lst.stratum, slot.seq, arm], slot.arm_mac):
            return arm
    raise _mismatch(f"slot {slot.seq} of {lst.name}: its commitment opens to no arm", "allocation_slots",
                    "the slot was edited in the database: stop randomising at this site and run "
                    "`immunoguide trial allocation verify`")


def randomization_window(protocol: Protocol) -> tuple[str, str, float, str] | None:
    """The protocol's window from the Sepsis-3 anchor to the first dose: (criterion id, comparator, hours, anchor)."""
    for c in protocol.inclusion:
        if c.kind == "window_from_anchor" and c.event == "first_dose" and c.comparator and c.hours is not None:
            return c.id, c.comparator, float(c.hours), str(c.anchor)
    return None


def kit_regimen(session: Session, k: Kit, protocol: Protocol, *, arm: str | None = None) -> str:
    """The content (regimen id) of a kit: the kit's route in the patient's arm (needs the trial key)."""
    if k.regimen is not None:  # revision-0002 kit not sealed yet
        return k.regimen
    if arm is None:
        slot = session.execute(select(AllocationSlot).where(AllocationSlot.patient_id == k.patient_id)).scalar_one()
        arm = arm_of(session, slot)
    return protocol.arm(arm).kits[k.route]


_KITS_OF = select(Kit).where(Kit.patient_id == bindparam("patient_id")).order_by(Kit.route)


def kits_of(session: Session, p: Patient) -> list[Kit]:
    """The patient's kits, by route."""
    return list(session.execute(_KITS_OF, {"patient_id": p.id}).scalars())


def kit_dict(session: Session, k: Kit, protocol: Protocol, actor: Actor, p: Patient, *,
             arm: str | None = None) -> dict[str, Any]:
    """One kit as ``actor`` may see it (content only when the arm is visible to them)."""
    row = {"kit_number": k.kit_number, "route": k.route, "label": k.label, "assigned_at": k.assigned_at.isoformat()}
    out = blind_row("kits", row, actor)
    if arm_visible(session, actor, p):
        regimen = kit_regimen(session, k, protocol, arm=arm)
        r = protocol.regimens[regimen]
        out["regimen"] = regimen
        out["content"] = describe_regimen(r)
        out["is_placebo"] = r.is_placebo
    return out
