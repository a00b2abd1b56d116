"""Trial operations over a real database: what a site runs every day during a biomarker-guided trial.

SQLite is the embedded default and PostgreSQL the multi-site backend, both through SQLAlchemy 2 with Alembic
migrations (:class:`TrialStore`). ``trial/`` is the only owner of the schema; ``service/`` and ``cli/`` call
the functions below, never the tables.

Workflow (each step a function over an open session; the caller's transaction commits or rolls back the whole
step; each takes the acting :class:`Actor` and an explicit timezone-aware ``now``):

1. :func:`screen` — screening log with the eligibility evidence; screen failures with their reason.
2. :func:`record_consent` — patient, first-degree relative or spouse (or refused), once.
3. :func:`enter_labs` — ferritin / mHLA-DR with method and sample/receipt/result times; baseline endotype.
4. :func:`generate_allocation_list`, :func:`import_allocation_list`, :func:`verify_allocation_lists`,
   :func:`randomize` — sealed lists per site and stratum (keyed commitments; no arm in the store), the lowest free
   slot recorded in the patient's transaction, once per patient, < 72 h window on the system clock.
5. :func:`kits_view`, :func:`unblind` — double-dummy kits (contents for unblinded roles only); emergency
   unblinding of one patient, audited.
6. :func:`record_dose`, :func:`dosing_view` — schedule from the protocol; late/missed doses flagged;
   :func:`record_doses` — a patient's doses (:class:`DoseEntry`) recorded in order, as :func:`record_dose` each.
7. :func:`record_followup`, :func:`followup_view`, :func:`serial_endotypes` — visit days, SOFA, serial
   endotype with transitions, day-15 infection, day-28/90 vital status; :func:`record_followups` — a patient's
   days (:class:`FollowUpEntry`) recorded in order, as :func:`record_followup` each.
8. :func:`record_adverse_event`, :func:`report_sae`, :func:`safety_signals` — CTCAE v5.0 coding and grade, SAE
   clocks (24 h, 15 days), signals under the DSMB rule for the unblinded safety reviewer;
   :func:`record_safety_labs`, :func:`safety_labs_view` — structured safety labs graded by CTCAE v5.0.
9. :func:`withdraw` — with or without data removal (tombstone, CONSORT counts kept; :func:`consort`).

Integrity: every write goes through :mod:`immunoguide.trial.audit` (append-only hash chain MAC'd with the trial key
of :mod:`immunoguide.trial.keys`, system time beside event time, checkpoints; :func:`verify_audit`); accounts through
:mod:`immunoguide.trial.accounts`; a store is real (system clock) or a simulation (:mod:`immunoguide.trial.clock`);
:func:`export_trial`, :func:`backup_store`, :func:`restore_store`. Everything that leaves ``trial/`` is built by the
role-aware read layer :mod:`immunoguide.trial.access`. Design and regulatory mapping: ``docs/trial-integrity.md``.
"""

from __future__ import annotations

from immunoguide.trial.access import ROLES, Actor, consort, lab_results_view, patient_view, screening_log
from immunoguide.trial.adverse_events import (
    adverse_events_view,
    overdue_sae_reports,
    record_adverse_event,
    report_sae,
    safety_signals,
)
from immunoguide.trial.audit import AuditReport, require_intact, verify_audit
from immunoguide.trial.dosing import DoseEntry, dosing_view, record_dose, record_doses
from immunoguide.trial.enrolment import enter_labs, record_consent, screen
from immunoguide.trial.export import backup_store, export_trial, restore_store
from immunoguide.trial.followup import (
    FollowUpEntry,
    followup_days,
    followup_view,
    record_followup,
    record_followups,
    serial_endotypes,
)
from immunoguide.trial.kits import kits_view, unblind
from immunoguide.trial.randomization import (
    generate_allocation_list,
    import_allocation_list,
    randomize,
    require_lists_verified,
    startup_checks,
    verify_allocation_lists,
)
from immunoguide.trial.safety_labs import record_safety_labs, safety_labs_view
from immunoguide.trial.store import TrialStore, default_url
from immunoguide.trial.withdrawal import withdraw

__all__ = [
    "ROLES",
    "Actor",
    "AuditReport",
    "DoseEntry",
    "FollowUpEntry",
    "TrialStore",
    "adverse_events_view",
    "backup_store",
    "consort",
    "default_url",
    "dosing_view",
    "enter_labs",
    "export_trial",
    "followup_days",
    "followup_view",
    "generate_allocation_list",
    "import_allocation_list",
    "kits_view",
    "lab_results_view",
    "overdue_sae_reports",
    "patient_view",
    "randomize",
    "record_adverse_event",
    "record_consent",
    "record_dose",
    "record_doses",
    "record_followup",
    "record_followups",
    "record_safety_labs",
    "report_sae",
    "require_intact",
    "require_lists_verified",
    "restore_store",
    "safety_labs_view",
    "safety_signals",
    "screen",
    "screening_log",
    "serial_endotypes",
    "startup_checks",
    "unblind",
    "verify_allocation_lists",
    "verify_audit",
    "withdraw",
]
