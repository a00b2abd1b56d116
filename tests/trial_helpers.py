"""Shared builders for the trial-store tests: actors, an eligible ImmunoSep screening record, enrolment, lists."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from immunoguide.trial import (
    Actor,
    TrialStore,
    enter_labs,
    generate_allocation_list,
    import_allocation_list,
    randomize,
    record_consent,
    screen,
)
from immunoguide.trial.models import AUDITED_TABLES, AuditRecord

#: Sepsis-3 onset of every test patient (times below are offsets from it).
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

COORD = Actor("rivera", "site_coordinator", "ATH")
INVESTIGATOR = Actor("dr_kotsaki", "investigator", "ATH")
PHARMACIST = Actor("pharm_ath", "unblinded_pharmacist", "ATH")
COORD_MIL = Actor("bianchi", "site_coordinator", "MIL")
INVESTIGATOR_MIL = Actor("dr_rossi", "investigator", "MIL")
STATISTICIAN = Actor("stat", "statistician")
DSMB = Actor("dsmb_chair", "dsmb")
ADMIN = Actor("admin", "administrator")


def hex_seed(text: str) -> str:
    """A reproducible 256-bit hex seed for tests (real lists use the default: 256 bits from the OS)."""
    return hashlib.sha256(text.encode()).hexdigest()


def h(hours: float) -> datetime:
    """``T0 + hours``."""
    return T0 + timedelta(hours=hours)


def screening_record(**overrides: Any) -> dict[str, Any]:
    """An ImmunoSep screening record that meets every inclusion and no exclusion (consent/endotype come later)."""
    rec: dict[str, Any] = {
        "age_years": 68, "sex": "male", "infection_source": "CAP", "admission_source": "emergency_department",
        "sofa_total": 9, "sepsis3_onset_time": T0.isoformat(), "covid19": False, "stage_iv_malignancy": False,
        "dnr_order": False, "anc_per_mm3": 6200,
    }
    rec.update(overrides)
    return rec


def labs(stratum: str, *, sample_h: float = 3.0) -> dict[str, Any]:
    """Laboratory results classifying into ``stratum`` (MALS, immunoparalysis or unclassified)."""
    t = h(sample_h)
    base = {"ferritin_unit": "ng/mL", "ferritin_sample_time": t.isoformat(),
            "ferritin_result_time": (t + timedelta(hours=2)).isoformat()}
    if stratum == "MALS":
        return {"ferritin": 6100, **base}
    hla = 2900 if stratum == "immunoparalysis" else 12000
    return {"ferritin": 900, **base, "hla_dr": hla, "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
            "hla_dr_sample_time": t.isoformat(), "hla_dr_receipt_time": (t + timedelta(hours=1)).isoformat(),
            "hla_dr_result_time": (t + timedelta(hours=4)).isoformat()}


def enrol(store: TrialStore, code: str, *, site: str = "ATH", stratum: str = "MALS",
          actor: Actor | None = None, **record: Any) -> None:
    """Screen, consent and classify one patient (ready to randomise from ``h(8)`` on)."""
    actor = actor or Actor(f"coord_{site}", "site_coordinator", site)
    with store.session() as s:
        screen(s, code, site, screening_record(**record), actor=actor, now=h(1))
        record_consent(s, code, "patient", h(2), actor=actor, now=h(2))
        enter_labs(s, code, labs(stratum), actor=actor, now=h(8))


def make_lists(store: TrialStore, out: Path, sites: Iterable[str] = ("ATH",),
               strata: Iterable[str] = ("MALS", "immunoparalysis"), n: int = 20, seed: int = 7) -> dict[tuple[str, str], Any]:
    """Generate and import one list per site and stratum."""
    files = {}
    for site in sites:
        for stratum in strata:
            f = generate_allocation_list(site, stratum, n, seed=hex_seed(f"{seed}-{site}-{stratum}"), out_dir=out)
            with store.session() as s:
                import_allocation_list(s, f.csv, actor=ADMIN, now=h(0))
            files[(site, stratum)] = f
    return files


def randomised(store: TrialStore, code: str, *, site: str = "ATH", stratum: str = "MALS", at: float = 9.0,
               **record: Any) -> dict[str, Any]:
    """Enrol and randomise one patient; returns the (blinded) randomisation view."""
    enrol(store, code, site=site, stratum=stratum, **record)
    with store.session() as s:
        return randomize(s, code, actor=Actor(f"coord_{site}", "site_coordinator", site), now=h(at))


def row_counts(store: TrialStore) -> dict[str, int]:
    """Rows per audited table and in the audit trail."""
    with store.session() as s:
        out = {m.__tablename__: s.execute(select(func.count()).select_from(m)).scalar_one() for m in AUDITED_TABLES}
        out["audit_log"] = s.execute(select(func.count()).select_from(AuditRecord)).scalar_one()
    return out
