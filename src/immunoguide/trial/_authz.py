"""Who may do what: roles, permissions and the blinded columns (the low-level authorisation of ``trial/``).

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

Blinded roles never receive an arm, an arm label or a kit's content: :func:`blind_row` and :func:`arm_visible` are
the only tests of that, used by the role-aware read layer :mod:`immunoguide.trial.access` and the record builders
below it. This module imports nothing of ``trial/`` but the tables, so every trial module may import it.

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
