"""Who may do what, and what leaves ``trial/``: the role-aware read layer that enforces blinding.

Roles (:data:`ROLES`)
---------------------
``site_coordinator``, ``investigator``
    Blinded site staff: screen, consent, enter labs, randomise, record doses, follow-up, AEs and withdrawals,
    for their own site only. An investigator may unblind one patient of the site in an emergency (with a reason,
    audited); that patient's arm is then shown to the investigators of the site.
``unblinded_pharmacist``
    Prepares the study drugs: sees arms and kit contents, own site only.
``statistician``
    Blinded; all sites; exports the trial (without arms or kit contents) and verifies lists and audit trail.
``dsmb``
    The unblinded safety reviewer: all sites, arms, kit contents and the automatic safety signals.
``administrator``
    Blinded; all sites; imports allocation lists, backs up and restores the store, verifies the audit trail.

Blinded roles never receive an arm, an arm label or a kit's content: every view and export is built here, from
:data:`BLINDED_COLUMNS`, and workflow functions return only what these views produce.

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

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from immunoguide.errors import NotAuthorized

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

ROLES: tuple[str, ...] = (
    "site_coordinator",
    "investigator",
    "unblinded_pharmacist",
    "statistician",
    "dsmb",
    "administrator",
)
#: Roles bound to one site (they see and act on that site's patients only).
SITE_ROLES = frozenset({"site_coordinator", "investigator", "unblinded_pharmacist"})
#: Roles that see arms and kit contents.
UNBLINDED_ROLES = frozenset({"unblinded_pharmacist", "dsmb"})

_SITE_STAFF = frozenset({"site_coordinator", "investigator"})
_ALL = frozenset(ROLES)

#: Permission → roles holding it.
PERMISSIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "screen": _SITE_STAFF,
        "consent": _SITE_STAFF,
        "enter_labs": _SITE_STAFF,
        "randomize": _SITE_STAFF,
        "dose": _SITE_STAFF | {"unblinded_pharmacist"},
        "followup": _SITE_STAFF,
        "adverse_event": _SITE_STAFF,
        "withdraw": _SITE_STAFF,
        "unblind": frozenset({"investigator"}),
        "view": _ALL,
        "safety_signals": frozenset({"dsmb"}),
        "import_allocation": frozenset({"administrator"}),
        "verify": _ALL,
        "export": frozenset({"statistician", "dsmb", "administrator"}),
        "backup": frozenset({"administrator"}),
        "restore": frozenset({"administrator"}),
        "checkpoint": frozenset({"administrator"}),
        "manage_accounts": frozenset({"administrator"}),
    }
)

#: Columns no blinded role receives (table → columns): the arm and kit content (computed for unblinded roles from the
#: sealed commitment), the commitment itself and the legacy plaintext columns of revision 0002.
BLINDED_COLUMNS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "allocation_lists": frozenset({"list_mac", "content_sha256"}),
        "allocation_slots": frozenset({"arm", "arm_mac", "block", "block_size"}),
        "kits": frozenset({"regimen"}),
    }
)


@dataclass(frozen=True)
class Actor:
    """A user acting in a role (site roles carry their site code).

    Raises
    ------
    NotAuthorized
        Unknown role, a site role without a site, or an empty user name.
    """

    user: str
    role: str
    site: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise NotAuthorized(
                expected=f"a role of {list(ROLES)}", got=self.role, where="user role",
                todo="log in with one of the trial roles (--role)",
            )
        if not self.user or not self.user.strip():
            raise NotAuthorized(expected="a user name", got=self.user, where="user", todo="give --user")
        if self.role in SITE_ROLES and not self.site:
            raise NotAuthorized(
                expected=f"a site for role {self.role}", got=None, where="user site",
                todo="give the user's site code (--site)",
            )

    def describe(self) -> str:
        """``"rivera (site_coordinator, site ATH)"``."""
        return f"{self.user} ({self.role}{f', site {self.site}' if self.site else ''})"


def authorize(actor: Actor, permission: str, *, site: str | None = None) -> None:
    """Raise :class:`NotAuthorized` unless ``actor`` holds ``permission`` (for ``site`` when given)."""
    roles = PERMISSIONS[permission]
    if actor.role not in roles:
        raise NotAuthorized(
            expected=f"one of the roles {sorted(roles)} for {permission!r}",
            got=actor.describe(),
            where=f"permission {permission}",
            todo="ask a user with that role",
        )
    if site is not None and actor.role in SITE_ROLES and actor.site != site:
        raise NotAuthorized(
            expected=f"a user of site {site!r}",
            got=actor.describe(),
            where=f"permission {permission}",
            todo="site users act on their own site's patients only",
        )


def sees_arms(actor: Actor) -> bool:
    """True for the roles that see arms and kit contents."""
    return actor.role in UNBLINDED_ROLES


def site_filter(actor: Actor) -> str | None:
    """The only site ``actor`` may see (None: every site)."""
    return actor.site if actor.role in SITE_ROLES else None


def blind_row(table: str, row: Mapping[str, Any], actor: Actor) -> dict[str, Any]:
    """``row`` without the blinded columns of ``table`` unless ``actor`` is unblinded.

    >>> blind_row("kits", {"kit_number": "IV-1A2B", "regimen": "anakinra_iv"}, Actor("k", "investigator", "ATH"))
    {'kit_number': 'IV-1A2B'}
    """
    hidden = BLINDED_COLUMNS.get(table, frozenset())
    if sees_arms(actor) or not hidden:
        return dict(row)
    return {k: v for k, v in row.items() if k not in hidden}


# ---------------------------------------------------------------------------------------------------------------
# Read functions: every record that leaves trial/ is built here (or with blind_row / arm_visible).


def arm_visible(session: Any, actor: Actor, patient: Any) -> bool:
    """Whether ``actor`` may see this patient's arm: unblinded roles, or an investigator of the patient's site
    after an emergency unblinding of that patient."""
    if sees_arms(actor):
        return True
    if actor.role != "investigator" or actor.site != patient.site:
        return False
    from sqlalchemy import select

    from immunoguide.trial.models import Unblinding

    return session.execute(select(Unblinding.id).where(Unblinding.patient_id == patient.id).limit(1)).first() is not None


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
        from immunoguide.trial.randomization import arm_of

        a = load_protocol(lst.protocol).arm(arm or arm_of(session, slot, lst))
        rec["arm"] = a.code
        rec["arm_label"] = a.label
        rec["arm_role"] = a.role
    return rec


def randomization_view(session: Any, patient: Any, actor: Actor, *, slot: Any = None, allocation_list: Any = None,
                       kits: Any = None, arm: str | None = None) -> dict[str, Any]:
    """What ``randomize`` returns: randomisation number, stratum, kits; the arm for unblinded roles only."""
    from immunoguide.trial._common import protocol_of
    from immunoguide.trial.kits import kit_dict, kits_of

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
    from immunoguide.trial._common import get_patient
    from immunoguide.trial.enrolment import lab_results_of

    return lab_results_of(session, get_patient(session, code, actor, "view", lock=False))


def patient_view(session: Any, code: str, *, actor: Actor) -> dict[str, Any]:
    """One patient's record as ``actor`` may see it: status, screening log, consent, classification,
    randomisation (arm only when visible), withdrawal."""
    from sqlalchemy import select

    from immunoguide.trial._common import consent_of, get_patient, latest_classification
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
    from immunoguide.trial.randomization import arm_of

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
