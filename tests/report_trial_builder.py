"""A small seeded ImmunoSep trial built through the trial store's public workflow (for the report tests).

Every step goes through :mod:`immunoguide.trial` exactly as a site would run it: screening (with screen failures),
consent (one refusal), laboratory classification (MALS, immunoparalysis, unclassified), randomisation from imported
allocation lists at two sites, the first IV and SC doses, daily SOFA with gaps, deaths, day-15 infection
assessment, day-28/90 vital status, serial laboratory draws, adverse events (serious, related, fatal) and two
withdrawals (one with removal of the patient's data).

The builder keeps its own record of what it entered (:class:`Entered`), so tests can recompute endpoints from
what was written, independently of how the report reads the store back.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from immunoguide.trial import (
    Actor,
    TrialStore,
    enter_labs,
    generate_allocation_list,
    import_allocation_list,
    patient_view,
    randomize,
    record_adverse_event,
    record_consent,
    record_dose,
    record_followup,
    screen,
    withdraw,
)

#: Sepsis-3 onset of every patient; every time below is an offset from it.
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
#: Randomisation time (hours after T0); study day d of follow-up is assessed at RAND_H + 24 d + 2 hours.
RAND_H = 10.0
#: When everything after randomisation is entered (after the day-90 visit).
LATE = T0 + timedelta(days=120)

ADMIN = Actor("admin", "administrator")
DSMB = Actor("dsmb_chair", "dsmb")
STATISTICIAN = Actor("stat", "statistician")
SITES = ("ATH", "MIL")


def _t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def day_time(day: float, extra_h: float = 2.0) -> datetime:
    """Time of study day ``day`` (day 0 = the 24 h from randomisation)."""
    return _t(RAND_H + 24.0 * day + extra_h)


@dataclass
class Entered:
    """What the builder wrote for one randomised patient (ground truth for tests)."""

    code: str
    site: str
    stratum: str
    arm: str = ""
    role: str = ""
    sofa: dict[int, int] = field(default_factory=dict)          # study day -> SOFA total entered
    death_day: int | None = None                                # study day of death (None: alive at the end)
    withdrawn: bool = False
    data_removed: bool = False
    infection_d15: str | None = None
    last_alive_day: int | None = None


@dataclass
class BuiltTrial:
    """The store and what was entered."""

    store: TrialStore
    patients: dict[str, Entered]
    screened: int
    screen_failures: int
    pending: int


def _record(stratum_rng: random.Random, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "age_years": stratum_rng.randint(40, 88), "sex": stratum_rng.choice(["male", "female"]),
        "infection_source": stratum_rng.choice(["CAP", "CAP", "HAP", "VAP", "primary_BSI"]),
        "admission_source": "emergency_department", "sofa_total": stratum_rng.randint(4, 14),
        "sepsis3_onset_time": T0.isoformat(), "covid19": False, "stage_iv_malignancy": False, "dnr_order": False,
        "anc_per_mm3": 6200, "unwilling_to_become_pregnant": True, "bsi_skin_commensal_or_catheter_related": False,
    }
    age = rec["age_years"]  # severity and comorbidity at screening, derived (no extra draws from the seeded stream)
    rec.update({"apache_ii_points": 12 + age % 20, "charlson_index_points": age // 15,
                "mechanical_ventilation": age % 3 != 0})
    rec.update(over)
    return rec


def _labs(stratum: str, t: datetime, *, ferritin: float | None = None, hla: float | None = None) -> dict[str, Any]:
    base = {"ferritin_unit": "ng/mL", "ferritin_sample_time": t.isoformat(),
            "ferritin_result_time": (t + timedelta(hours=2)).isoformat()}
    if stratum == "MALS":
        return {"ferritin": ferritin if ferritin is not None else 6100, **base}
    fer = ferritin if ferritin is not None else 900
    h = hla if hla is not None else (2900 if stratum == "immunoparalysis" else 12000)
    return {"ferritin": fer, **base, "hla_dr": h, "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
            "hla_dr_sample_time": t.isoformat(), "hla_dr_result_time": (t + timedelta(hours=4)).isoformat()}


#: Follow-up of the built trial is entered at the end (LATE): late entries, with this reason in the audit trail.
LATE_REASON = "test trial: follow-up and adverse events entered at the end of the study"


def build_trial(url: str, list_dir: Path, *, n_randomised: int = 32, seed: int = 20251208) -> BuiltTrial:
    """Build the trial in the store at ``url`` (created and migrated here)."""
    rng = random.Random(seed)
    store = TrialStore(url)
    store.initialise(simulation=True)  # a simulated trial on a fixed clock
    for site in SITES:
        for stratum in ("MALS", "immunoparalysis"):
            list_seed = hashlib.sha256(f"{seed}-{site}-{stratum}".encode()).hexdigest()
            f = generate_allocation_list(site, stratum, 24, seed=list_seed, out_dir=list_dir)
            with store.session() as s:
                import_allocation_list(s, f.csv, actor=ADMIN, now=_t(0))
    patients: dict[str, Entered] = {}
    screened = failures = pending = 0

    # screen failures: unclassified (I6), consent refused (E2), stage IV malignancy (E4); one still pending
    for i, kind in enumerate(("unclassified", "unclassified", "unclassified", "refused", "malignancy", "pending")):
        code, site = f"SF{i:02d}", SITES[i % 2]
        coord = Actor(f"coord_{site}", "site_coordinator", site)
        screened += 1
        with store.session() as s:
            rec = _record(rng, stage_iv_malignancy=(kind == "malignancy"))
            screen(s, code, site, rec, actor=coord, now=_t(1))
            if kind == "malignancy":
                failures += 1
                continue
            record_consent(s, code, "refused" if kind == "refused" else "patient", _t(2), actor=coord, now=_t(2))
            if kind == "refused":
                failures += 1
                continue
            if kind == "pending":
                pending += 1
                continue
            enter_labs(s, code, _labs("unclassified", _t(3)), actor=coord, now=_t(8))
            failures += 1

    for i in range(n_randomised):
        code, site = f"P{i:03d}", SITES[i % 2]
        stratum = "MALS" if i % 3 == 0 else "immunoparalysis"
        coord = Actor(f"coord_{site}", "site_coordinator", site)
        screened += 1
        with store.session() as s:
            screen(s, code, site, _record(rng), actor=coord, now=_t(1))
            record_consent(s, code, rng.choice(["patient", "spouse", "first_degree_relative"]), _t(2), actor=coord,
                           now=_t(2))
            enter_labs(s, code, _labs(stratum, _t(3), ferritin=rng.choice([5200, 6100, 9800]) if stratum == "MALS"
                                      else None, hla=rng.choice([1800, 2900, 4100]) if stratum != "MALS" else None),
                       actor=coord, now=_t(8))
            randomize(s, code, actor=coord, now=_t(RAND_H))
            view = patient_view(s, code, actor=DSMB)["randomisation"]
            e = Entered(code, site, stratum, arm=view["arm"], role=view["arm_role"])
            patients[code] = e
            record_dose(s, code, "IV", _t(RAND_H + 0.5), actor=coord, now=_t(RAND_H + 1))
            record_dose(s, code, "SC", _t(RAND_H + 0.5), actor=coord, now=_t(RAND_H + 1))

        # outcome model: active arms improve more; a few deaths; gaps in the daily SOFA
        active = e.role == "active"
        base = rng.randint(6, 14)
        slope = rng.uniform(0.35, 0.8) if active else rng.uniform(-0.1, 0.45)
        r = rng.random()
        death_day = None
        if r < 0.12:
            death_day = rng.randint(3, 8)
        elif r < 0.25:
            death_day = rng.randint(10, 40)
        elif r < 0.32:
            death_day = rng.randint(45, 85)
        if i == 13 and death_day is not None and death_day > 28:
            death_day = None     # lost to follow-up after day 28: a later death never reaches the trial
        e.death_day = death_day
        withdraw_at = None
        if i == 4:
            withdraw_at = 6          # withdrawal with data removal after day 6
        elif i == 7:
            withdraw_at = 11         # withdrawal, data kept
            e.death_day = death_day = None
        no_baseline = i == 10
        lab7 = _labs(stratum, day_time(7, 1.0),
                     ferritin=(rng.choice([3000, 4800, 6000]) if stratum == "MALS" else rng.choice([800, 5200])),
                     hla=rng.choice([4000, 9000, 12000]))
        infection = (rng.choice(["resolution", "resolution", "intermediate", "failure"]) if active
                     else rng.choice(["resolution", "failure", "superinfection", "intermediate"]))
        with store.session() as s:
            # SAP day d is entered on follow-up day d - 1 (day 0 = the randomisation day = SAP day 1, the baseline;
            # report policy study_day_numbering = randomisation_day_is_sap_day_1); Entered keeps SAP days
            for day in range(1, 16):
                if death_day is not None and day > death_day:
                    break
                if withdraw_at is not None and day > withdraw_at:
                    break
                item: dict[str, Any] = {}
                if not ((day == 1 and no_baseline) or (day > 1 and rng.random() < 0.18)):
                    sofa = max(0, min(24, round(base - slope * (day - 1) + rng.uniform(-1, 1))))
                    if death_day is not None:
                        sofa = min(24, sofa + day // 2)
                    item["sofa_total"] = sofa
                if day == 8:
                    item["labs"] = lab7  # follow-up day 7, a protocol visit day
                if not item:
                    continue
                record_followup(s, code, day - 1, actor=coord, now=LATE, assessed_at=day_time(day - 1),
                                late_entry_reason=LATE_REASON, **item)
                if "sofa_total" in item:
                    e.sofa[day] = item["sofa_total"]
                e.last_alive_day = day - 1
            alive_15 = (death_day is None or death_day > 15) and withdraw_at is None
            if alive_15:
                record_followup(s, code, 15, actor=coord, now=LATE, assessed_at=day_time(15),
                                late_entry_reason=LATE_REASON, infection_assessment=infection)
                e.infection_d15 = infection
                e.last_alive_day = 15
            if withdraw_at is None:
                for horizon in (28, 90):
                    if i == 13 and horizon == 90:
                        continue         # lost to follow-up after day 28
                    if death_day is not None and death_day <= 28 and horizon == 90:
                        continue         # death already recorded at the day-28 visit
                    dead = death_day is not None and death_day <= horizon
                    record_followup(s, code, horizon, actor=coord, now=LATE, assessed_at=day_time(horizon),
                                    late_entry_reason=LATE_REASON, vital_status="dead" if dead else "alive",
                                    death_at=day_time(death_day - 1, 5.0) if dead else None)
                    if not dead:
                        e.last_alive_day = horizon
            # adverse events
            n_ae = rng.randint(0, 3)
            terms = ["anemia", "upper gastrointestinal hemorrhage", "thrombocytopenia", "hypokalemia", "pneumonia", "atrial fibrillation",
                     "acute kidney injury"]
            for _ in range(n_ae):
                onset_day = rng.randint(1, 12)
                if death_day is not None and onset_day > death_day:
                    continue
                if withdraw_at is not None and onset_day > withdraw_at:
                    continue
                serious = rng.random() < 0.45
                record_adverse_event(
                    s, code, term=rng.choice(terms), onset_at=day_time(onset_day, 4.0), grade=rng.choice([1, 2, 3, 4])
                    if serious else rng.choice([1, 2]), serious=serious,
                    relatedness=rng.choice(["not_related", "not_related", "unlikely", "possible", "probable"]),
                    outcome=rng.choice(["recovered", "recovering"]), actor=coord, now=LATE,
                    aware_at=day_time(onset_day, 6.0), late_entry_reason=LATE_REASON)
            if death_day is not None and death_day <= 28 and withdraw_at is None and rng.random() < 0.5:
                record_adverse_event(s, code, term="septic shock", onset_at=day_time(death_day - 1, 1.0), grade=5,
                                     serious=True, relatedness="not_related", outcome="fatal", actor=coord, now=LATE,
                                     aware_at=day_time(death_day - 1, 4.0), late_entry_reason=LATE_REASON)
            if withdraw_at is not None:
                remove = i == 4
                withdraw(s, code, "consent withdrawn by the patient" if remove else "patient decided to stop",
                         actor=coord, now=LATE, remove_data=remove)
                e.withdrawn, e.data_removed = True, remove
    return BuiltTrial(store, patients, screened, failures, pending)
