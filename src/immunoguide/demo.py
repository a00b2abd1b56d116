"""The main job end to end (``immunoguide demo``): from a synthetic ICU population to the trial report.

Application layer (like ``cli/`` and ``service/``): it only calls the public functions of the layers below, in the
order a real biomarker-guided trial runs them.

1. **Population** — ``immunoguide synth mimic4``: a seeded synthetic MIMIC-IV-shaped ICU population (several
   hospitals, ferritin incl. censored values, synthetic mHLA-DR).
2. **Screening** — the MIMIC-IV adapter and the cohort engine: hourly SOFA, Sepsis-3 onset, infection source,
   endotype screening and eligibility under ``immunosep-2025``.
3. **Enrolment** — each candidate (Sepsis-3 from pneumonia or bacteremia) goes through the trial store exactly as
   a site would run it (same functions as the CLI and REST service, audit trail on): screening log, consent
   (some refuse), laboratory classification from the stay's own ferritin / mHLA-DR results, randomisation from
   checksummed allocation lists (one per site and stratum) inside the < 72 h window.
4. **Conduct** — blinded dosing (with some late and missed doses), daily follow-up from the randomisation day
   (follow-up day 0 = SAP day 1, the baseline) with SOFA trajectories simulated by arm and stratum (priors from
   ``design/priors.toml``: placebo responders ~18 %, active ~35 %), missing visits, deaths, day-15 infection
   outcome, day-28/90 vital status, structured safety laboratory results graded by CTCAE v5.0 with each site
   laboratory's reference limits, adverse events coded to CTCAE v5.0 terms (anaemia more often on anakinra,
   bleeding on interferon-γ in patients with thrombocytopenia), serial biomarker samples (some on non-visit days;
   a few immunoparalysis patients turn MALS: stratum-switch alerts), withdrawals (one kind with removal of the
   patient's data). The candidates' stays are put on one trial calendar (recruitment over ``RECRUITMENT_DAYS``;
   the synthetic population, like MIMIC, puts every stay in its own random year), and the store's clock is set to
   the simulated time of the reports, so the dashboard shows the data's study days.
5. **Analysis** — the SAP and the report (HTML + PDF), blinded and unblinded (DSMB), and the audit-trail check.

The outcome model is a simulation for demonstration only; the data are synthetic and no result is clinical
evidence. The same seed gives the same store, the same numbers and — with ``SOURCE_DATE_EPOCH`` set, which fixes the
"generated" stamp — the same report.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from immunoguide.cohort.screening import SOURCE_TO_PROTOCOL, biomarker_rows

__all__ = ["DemoResult", "run_demo"]

SITES = ("ATH", "MIL")  # the service's demo accounts cover these two sites
#: Infection sources ImmunoSep enrols (cohort engine names → protocol vocabulary), as the cohort screening maps them.
ENROLLED_SOURCES = SOURCE_TO_PROTOCOL
STEP = Callable[[str, int, int], None]
#: The simulated sites enter follow-up, adverse events and SAE reports at the end of the 90 days: late entries, with
#: this reason in the audit trail.
DEMO_LATE_REASON = "simulation: entered at the end of the study"


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: counts, the primary endpoint and where everything was written."""

    out_dir: str
    db_url: str
    screened_stays: int
    sepsis3_stays: int
    candidates: int
    screened_in_trial: int
    randomised: dict[str, int]
    endotype_mix: dict[str, int]
    primary: dict[str, Any]
    report_html: str
    report_pdf: str
    dsmb_report_html: str
    dsmb_report_pdf: str
    audit_intact: bool
    accounts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _utc(t: Any) -> datetime:
    t = t.to_pydatetime() if hasattr(t, "to_pydatetime") else t
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def run_demo(
    out_dir: str | Path,
    *,
    stays: int = 1500,
    seed: int = 20251208,
    progress: STEP | None = None,
) -> DemoResult:
    """Run the whole story into ``out_dir`` (see the module docstring); returns the summary."""
    import pyarrow.parquet as pq

    from immunoguide.cohort.pipeline import run_cohort
    from immunoguide.cohort.sources.mimic4 import convert_mimic4
    from immunoguide.synth import generate_mimic4
    from immunoguide.trial import (
        Actor,
        TrialStore,
        generate_allocation_list,
        import_allocation_list,
        verify_audit,
    )
    from immunoguide.trial.keys import TrialKey, write_key_file

    say = progress or (lambda _msg, _i, _n: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_steps = 6

    say("generating a synthetic multi-site ICU population", 1, n_steps)
    raw = out / "population"
    if not (raw / "_truth" / "summary.json").exists():
        generate_mimic4(raw, stays=stays, seed=seed, overwrite=raw.exists())
    say("screening the population: hourly SOFA, Sepsis-3, endotypes, eligibility", 2, n_steps)
    timeline = out / "timeline"
    convert_mimic4(raw, timeline)
    cohort = out / "cohort"
    run_cohort(timeline, cohort, protocol="immunosep-2025")

    stays_tbl = {r["stay_id"]: r for r in pq.read_table(timeline / "stays.parquet").to_pylist()}
    s3 = {r["stay_id"]: r for r in pq.read_table(cohort / "sepsis3.parquet").to_pylist()}
    screening = {r["stay_id"]: r for r in pq.read_table(cohort / "screening.parquet").to_pylist()}
    markers = biomarker_rows(timeline)
    candidates = [
        sid for sid in sorted(s3)
        if s3[sid]["status"] == "onset" and s3[sid]["infection_source"] in ENROLLED_SOURCES
    ]
    s3, markers = _trial_calendar(candidates, s3, markers)

    say("trial store: allocation lists, screening, consent, classification, randomisation", 3, n_steps)
    db = out / "demo.db"
    if db.exists():
        db.unlink()
    url = f"sqlite:///{db}"
    # A simulation store (its clock is the simulated one; the system time is recorded beside it). Its trial key and
    # list seeds are derived from the demo's seed, so the same seed gives the same store and report; a real trial
    # draws both from the operating system (`immunoguide trial keygen`, `allocation generate` without --seed).
    key = TrialKey(hashlib.sha256(f"immunoguide demo trial key {seed}".encode()).digest())
    key_file = out / "trial.key"
    key_file.unlink(missing_ok=True)
    write_key_file(key_file, key)
    t_first = min((_utc(s3[c]["onset_time"]) for c in candidates), default=datetime(2025, 1, 1, tzinfo=UTC))
    list_time = t_first - timedelta(days=1)
    store = TrialStore(url, key=key)
    _no_fsync_per_commit(store)
    store.initialise(simulation=True, now=list_time)
    admin = Actor("admin", "administrator")
    lists = out / "allocation_lists"
    for site in SITES:
        for stratum in ("MALS", "immunoparalysis"):
            list_seed = hashlib.sha256(f"{seed}-{site}-{stratum}".encode()).hexdigest()
            f = generate_allocation_list(site, stratum, 120, seed=list_seed, out_dir=lists, key=key)
            with store.session() as s:
                import_allocation_list(s, f.csv, actor=admin, now=list_time)

    enrolled = _enrol(store, candidates, stays_tbl, s3, screening, markers, rng)
    say("blinded dosing, 90 days of follow-up, adverse events, withdrawals", 4, n_steps)
    _conduct(store, enrolled, rng, random.Random(f"{seed}-sae-reports"))

    say("statistical analysis plan and reports (blinded and DSMB)", 5, n_steps)
    from immunoguide.analysis.report import ReportRequest, build_reports

    end = max((e["t_rand"] for e in enrolled.values() if "t_rand" in e), default=t_first) + timedelta(days=101)
    from immunoguide.trial.store import set_store_clock

    with store.session() as s:  # the store runs on the data's time line (dashboard: study days, windows)
        set_store_clock(s, simulated_now=end, frozen=True, actor=admin, wall_now=datetime.now(UTC),
                        note="immunoguide demo: synthetic data; the clock stands at the time the reports were made")
    # the data are read at the simulated `end`; each page is stamped with the real generation time (wall clock, or
    # SOURCE_DATE_EPOCH when set: then the same seed gives the same report, byte for byte)
    # the DSMB report (the longer one) is read first and written by a forked process while the blinded one is read
    # and written here: the files are those of two build_report calls, written in about the time of the longer one
    dsmb, blind = build_reports(store, [ReportRequest(out / "report_dsmb", False, Actor("dsmb_chair", "dsmb")),
                                       ReportRequest(out / "report", True, Actor("statistician", "statistician"))],
                                now=end)
    say("verifying the audit trail", 6, n_steps)
    with store.session() as s:
        audit = verify_audit(s)
    arms: dict[str, int] = {}
    strata: dict[str, int] = {}
    for e in enrolled.values():
        if e.get("arm_role"):
            arms[e["arm_role"]] = arms.get(e["arm_role"], 0) + 1
            strata[e["stratum"]] = strata.get(e["stratum"], 0) + 1
    endo: dict[str, int] = {}
    for sid in candidates:
        k = screening.get(sid, {}).get("endotype") or "not screened"
        endo[k] = endo.get(k, 0) + 1
    res = DemoResult(
        out_dir=str(out),
        db_url=url,
        screened_stays=len(stays_tbl),
        sepsis3_stays=sum(1 for r in s3.values() if r["status"] == "onset"),
        candidates=len(candidates),
        screened_in_trial=sum(1 for e in enrolled.values() if e.get("screened")),
        randomised={**{f"arm:{k}": v for k, v in sorted(arms.items())}, **{f"stratum:{k}": v for k, v in sorted(strata.items())}},
        endotype_mix=dict(sorted(endo.items())),
        primary=dsmb.summary.get("primary", {}),
        report_html=str(blind.html_path),
        report_pdf=str(blind.pdf_path),
        dsmb_report_html=str(dsmb.html_path),
        dsmb_report_pdf=str(dsmb.pdf_path),
        audit_intact=audit.ok,
    )
    (out / "demo_summary.json").write_text(json.dumps(res.to_dict(), indent=2, default=str))
    store.dispose()
    _fsync(db)
    return res


def _no_fsync_per_commit(store: Any) -> None:
    """The demo's scratch store commits without waiting for the disk (``PRAGMA synchronous=OFF``).

    A trial store waits for an fsync at every commit (``synchronous=FULL``: a committed randomisation survives a
    power loss). The demo commits several thousand times into a store it deletes and rebuilds on every run; on a
    busy disk those fsyncs were most of its wall time. The pages written are the same (the store's bytes do not
    change, ``benchmarks/demo_checksums.py``); the finished file is synced once, at the end (:func:`_fsync`).
    """
    from sqlalchemy import event

    @event.listens_for(store.engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:  # runs after the store's own (synchronous=FULL)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()

    store.engine.dispose()  # no pooled connection keeps the store's setting


def _fsync(path: Path) -> None:
    """Flush ``path`` (the finished demo store) to disk once."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Recruitment period of the demo trial (days): candidates are enrolled one after another over it.
RECRUITMENT_DAYS = 540


def _trial_calendar(candidates: list[int], s3: dict[int, dict[str, Any]],
                    markers: dict[int, list[dict[str, Any]]]) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict]]]:
    """Put the candidates on one trial calendar.

    The synthetic population (like MIMIC) shifts every stay to its own random year, so the stays' onsets spread
    over a century; a trial recruits over months. Each candidate's stay is moved by whole days (its clock times and
    every interval inside the stay unchanged) so that the onsets follow the candidates' order over
    ``RECRUITMENT_DAYS`` from the earliest onset. Only the trial's copies move (Sepsis-3 onset, biomarker rows);
    the population and cohort files keep their times."""
    onsets = [_utc(s3[c]["onset_time"]) for c in candidates]
    if not onsets:
        return s3, markers
    start = min(onsets)
    step = RECRUITMENT_DAYS / max(1, len(candidates))
    s3 = dict(s3)
    markers = dict(markers)
    for k, (sid, onset) in enumerate(zip(candidates, onsets, strict=True)):
        target = start + timedelta(days=k * step)
        shift = timedelta(days=round((target - onset).total_seconds() / 86400))
        s3[sid] = {**s3[sid], "onset_time": onset + shift}
        markers[sid] = [{**r, "time": _utc(r["time"]) + shift} for r in markers.get(sid, [])]
    return s3, markers


def _screening_record(st: dict[str, Any], sep: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    sex = {"F": "female", "M": "male"}.get(st.get("sex") or "", None)
    rec: dict[str, Any] = {
        "age_years": st["age_years"],
        "infection_source": ENROLLED_SOURCES[sep["infection_source"]],
        "admission_source": "emergency_department" if st["admission_source"] == "emergency_department" else "hospitalised",
        "sofa_total": sep["sofa_at_onset"],
        "sepsis3_onset_time": _utc(sep["onset_time"]).isoformat(),
        "covid19": False,
        "stage_iv_malignancy": rng.random() < 0.03,
        "dnr_order": rng.random() < 0.04,
        "anc_per_mm3": round(rng.lognormvariate(8.8, 0.45)),
        "bsi_skin_commensal_or_catheter_related": False if sep["infection_source"] == "bacteremia" else None,
        # severity and comorbidity at screening (Table 1; SAP subgroups APACHE II >= 25, CCI >= 5): simulated
        "apache_ii_points": int(max(0, min(71, round(rng.gauss(22, 7))))),
        "charlson_index_points": int(max(0, min(20, round(rng.gammavariate(2.2, 1.9))))),
        "mechanical_ventilation": rng.random() < 0.85,
    }
    if sex:
        rec["sex"] = sex
        if sex == "female":
            rec["unwilling_to_become_pregnant"] = True
    return {k: v for k, v in rec.items() if v is not None}


def _lab_record(obs: list[dict[str, Any]], onset: datetime, site: str = "ATH") -> dict[str, Any]:
    """The stay's own ferritin / mHLA-DR nearest after onset (or before), with sample and result times."""
    rec: dict[str, Any] = {}
    for concept, key in (("ferritin_ng_per_ml", "ferritin"), ("hla_dr_per_monocyte", "hla_dr")):
        rows = [o for o in obs if o["concept"] == concept]
        if not rows:
            continue
        o = min(rows, key=lambda r: abs((_utc(r["time"]) - onset).total_seconds()))
        t = _utc(o["time"])
        rec[key] = o["value"] if o["value"] is not None else o["value_text"]
        rec[f"{key}_unit"] = o["unit"]
        rec[f"{key}_sample_time"] = t.isoformat()
        rec[f"{key}_result_time"] = (t + timedelta(hours=2 if key == "ferritin" else 5)).isoformat()
        rec[f"{key}_source"] = f"central lab {site}"
        if key == "hla_dr":
            rec["hla_dr_method"] = o["method"] or "quantibrite_abc"
    return rec


def _enrol(store: Any, candidates: list[int], stays_tbl: dict, s3: dict, screening: dict, markers: dict, rng: random.Random) -> dict[str, dict]:
    from immunoguide.errors import ImmunoguideError
    from immunoguide.trial import Actor, enter_labs, patient_view, randomize, record_consent, screen

    dsmb = Actor("dsmb_chair", "dsmb")
    enrolled: dict[str, dict] = {}
    # one candidate late in the run (the first of the last tenth whose labs include mHLA-DR) has its mHLA-DR pending
    pending_from, pending_left = len(candidates) - max(1, len(candidates) // 10), True
    # The step runs in one transaction: the calls write and audit the same rows and entries, in the same order,
    # as with a transaction per patient and step; the audit chains them at the one commit. (One commit per
    # screening and per randomisation, 386 in all, cost about a quarter of the step.)
    with store.session() as s:
        for i, sid in enumerate(candidates):
            st, sep = stays_tbl[sid], s3[sid]
            site = SITES[sid % len(SITES)]
            coord = Actor(f"coord_{site.lower()}", "site_coordinator", site)
            code = f"{site}-{sid}"
            onset = _utc(sep["onset_time"])
            e: dict[str, Any] = {"stay_id": sid, "site": site, "coord": coord, "onset": onset,
                                 "sofa_screen": sep["sofa_at_onset"]}
            enrolled[code] = e
            res = screen(s, code, site, _screening_record(st, sep, rng), actor=coord, now=onset + timedelta(hours=1))
            e["screened"] = True
            if res.get("eligible") is False:
                continue
            given = rng.choices(["patient", "first_degree_relative", "spouse", "refused"], [0.35, 0.4, 0.17, 0.08])[0]
            record_consent(s, code, given, onset + timedelta(hours=2), actor=coord, now=onset + timedelta(hours=2))
            if given == "refused":
                continue
            labs = _lab_record(markers.get(sid, []), onset, site)
            if not labs:
                continue
            # Results are entered when the last one is reported (assay turnaround), never before.
            t_labs = max(datetime.fromisoformat(v) for k, v in labs.items() if k.endswith("_result_time"))
            t_labs = max(t_labs, onset + timedelta(hours=2)) + timedelta(minutes=10)
            e["t_labs"] = t_labs
            if pending_left and i >= pending_from and "hla_dr" in labs:
                # this candidate's mHLA-DR stays pending (never resulted): a pending-assay alert at the end
                pending_left = False
                pending = {k: v for k, v in labs.items() if k.startswith("ferritin")}
                pending.update({"hla_dr_sample_time": labs["hla_dr_sample_time"], "hla_dr_source": labs["hla_dr_source"]})
                enter_labs(s, code, pending, actor=coord, now=t_labs)
                continue
            try:
                lab_res = enter_labs(s, code, labs, actor=coord, now=t_labs)
            except ImmunoguideError:
                continue  # an unusable result (reported by enter_labs) is a screen failure, never a guess
            e["endotype"] = lab_res.get("stratum") or (lab_res.get("classification") or {}).get("endotype")
            if e["endotype"] not in ("MALS", "immunoparalysis"):
                continue
            t_rand = e["t_labs"] + timedelta(minutes=rng.randrange(30, 600, 5))
            try:
                randomize(s, code, actor=coord, now=t_rand)
            except ImmunoguideError:
                continue  # not eligible at randomisation (e.g. an exclusion), recorded by the store
            view = patient_view(s, code, actor=dsmb)["randomisation"]
            e.update(t_rand=t_rand, stratum=e["endotype"], arm=view["arm"], arm_role=view["arm_role"])
    return enrolled


def _conduct(store: Any, enrolled: dict[str, dict], rng: random.Random, sae_rng: random.Random) -> None:
    """Dosing, follow-up, AEs (SAE reports drawn from ``sae_rng``) and withdrawals for every randomised patient
    (seeded simulation)."""
    from immunoguide.trial import (
        DoseEntry,
        FollowUpEntry,
        enter_labs,
        record_adverse_event,
        record_doses,
        record_followups,
        withdraw,
    )

    randomised = [(c, e) for c, e in enrolled.items() if "t_rand" in e]
    # the first immunoparalysis patient (and ~6 % of the others) turns MALS on day 4: a stratum-switch alert
    first_sii = next((c for c, e in randomised if e["stratum"] == "immunoparalysis"), None)
    for code, e in randomised:
        coord, t0 = e["coord"], e["t_rand"]
        active = e["arm_role"] == "active"
        late = t0 + timedelta(days=100)
        switch = e["stratum"] == "immunoparalysis" and (code == first_sii or rng.random() < 0.06)
        thrombocytopenic = e["arm"].startswith("sii") and rng.random() < (0.22 if active else 0.12)

        def day_t(d: float, h: float = 2.0, t0: datetime = t0) -> datetime:
            return t0 + timedelta(hours=24 * d + h)

        # Outcome model (demonstration only): responder probability by arm, mortality by stratum.
        responder = rng.random() < (0.36 if active else 0.18)
        # the day-0 (SAP day 1) SOFA follows the screening SOFA, hours earlier
        base = max(2, min(20, int(e.get("sofa_screen") or 8) + rng.randint(-1, 2)))
        slope = rng.uniform(0.5, 0.9) if responder else rng.uniform(-0.2, 0.15)
        p28 = (0.62 if e["stratum"] == "MALS" else 0.45) - (0.06 if active else 0.0)
        death_day = None
        if rng.random() < p28:
            death_day = rng.randint(2, 28)
        elif rng.random() < 0.35:
            death_day = rng.randint(29, 90)
        withdraw_day = None
        if rng.random() < 0.03:
            withdraw_day = rng.randint(2, 10)
            death_day = None
        remove_data = withdraw_day is not None and rng.random() < 0.6
        with store.session() as s:
            # Blinded dosing: IV q8h and SC q48h for 15 days; ~3 % missed, ~5 % late.
            # (the patient's chart, recorded dose by dose, each 20 min after it was given: one record_doses call)
            last_day = min(15, (death_day or 99) - 1, (withdraw_day or 99))
            doses = []
            for n in range(0, max(1, last_day) * 3):
                if n > 0 and rng.random() < 0.03:
                    continue
                delay = timedelta(minutes=rng.randrange(120, 300, 5)) if n > 0 and rng.random() < 0.05 else timedelta(0)
                given = t0 + timedelta(hours=0.5 + 8 * n) + delay
                doses.append(DoseEntry("IV", given, given + timedelta(minutes=20)))
            for n in range(0, (max(1, last_day) + 1) // 2):
                given = t0 + timedelta(hours=0.5 + 48 * n)
                doses.append(DoseEntry("SC", given, given + timedelta(minutes=20)))
            record_doses(s, code, doses, actor=coord)
            # the days are entered in batches (record_followups); the extra serial sample goes in between, in order
            days: list[Any] = []
            for day in range(0, 16):  # follow-up day 0 (the randomisation day) is SAP day 1, the baseline
                if death_day is not None and day >= death_day:
                    break
                if withdraw_day is not None and day > withdraw_day:
                    break
                item: dict[str, Any] = {}
                if day == 0 or rng.random() > 0.12:  # missing visits ~12 %
                    sofa = base - slope * day + rng.uniform(-1.2, 1.2) + ((day + 1) / 3 if death_day else 0)
                    item["sofa_total"] = int(max(0, min(24, round(sofa))))
                if day in (4, 8):
                    item["labs"] = _followup_labs(e, day_t(day, 1.0), active, rng, to_mals=switch and day == 4)
                if day in (0, 3, 7, 14):
                    item["safety_labs"] = _safety_labs(e, day_t(day, 0.5), day, active, thrombocytopenic, rng)
                if day == 15:
                    item["infection_assessment"] = rng.choices(
                        ["resolution", "intermediate", "failure", "superinfection"],
                        [0.45, 0.08, 0.25, 0.22] if active else [0.32, 0.06, 0.31, 0.31],
                    )[0]
                if item:
                    days.append(FollowUpEntry(day, late, assessed_at=day_t(day), late_entry_reason=DEMO_LATE_REASON,
                                              **item))
                if day == 6 and rng.random() < 0.25:  # an extra serial sample on a non-visit day
                    if days:
                        record_followups(s, code, days, actor=coord)
                        days = []
                    enter_labs(s, code, _followup_labs(e, day_t(6, 3.0), active, rng), actor=coord, now=late)
            if withdraw_day is None:
                for horizon in (28, 90):
                    if death_day is not None and death_day <= 28 and horizon == 90:
                        continue
                    dead = death_day is not None and death_day <= horizon
                    days.append(FollowUpEntry(
                        horizon, late, assessed_at=day_t(horizon), late_entry_reason=DEMO_LATE_REASON,
                        vital_status="dead" if dead else "alive",
                        death_at=day_t(death_day, 5.0) if dead and death_day is not None else None))
            if days:
                record_followups(s, code, days, actor=coord)
            # Adverse events, coded to CTCAE v5.0 terms: background events plus the signals the trial reported.
            terms = ["Hypokalemia", "Atrial fibrillation", "Acute kidney injury", "Delirium", "Lung infection"]
            if e["arm"].startswith("mals") and active and rng.random() < 0.25:
                terms.append("Anemia")
            if thrombocytopenic and rng.random() < (0.6 if active else 0.25):
                terms += [rng.choice(["Upper gastrointestinal hemorrhage", "Epistaxis", "Hematoma"]), "thrombocytopenia"]
            for term in rng.sample(terms, k=min(len(terms), rng.randint(0, 3))):
                onset_day = rng.randint(1, 12)
                if (death_day and onset_day >= death_day) or (withdraw_day and onset_day > withdraw_day):
                    continue
                serious = rng.random() < 0.4
                ae = record_adverse_event(
                    s, code, term=term, onset_at=day_t(onset_day, 4.0), grade=rng.choice([3, 4]) if serious else rng.choice([1, 2]),
                    serious=serious, relatedness=rng.choice(["not_related", "not_related", "unlikely", "possible"]),
                    outcome=rng.choice(["recovered", "recovering"]), actor=coord, now=late, aware_at=day_t(onset_day, 6.0),
                    late_entry_reason=DEMO_LATE_REASON,
                )
                if serious:
                    _report_sae(s, code, ae, coord, late, sae_rng)
            if death_day is not None and death_day <= 28 and rng.random() < 0.5:
                ae = record_adverse_event(s, code, term="Sepsis", onset_at=day_t(death_day - 1, 1.0), grade=5,
                                          serious=True, relatedness="not_related", outcome="fatal", actor=coord,
                                          now=late, aware_at=day_t(death_day - 1, 4.0),
                                          late_entry_reason=DEMO_LATE_REASON)
                _report_sae(s, code, ae, coord, late, sae_rng)
            if withdraw_day is not None:
                withdraw(s, code, "consent withdrawn" if remove_data else "patient decided to stop the study drugs",
                         actor=coord, now=late, remove_data=remove_data)


def _report_sae(s: Any, code: str, ae: dict[str, Any], coord: Any, now: datetime, rng: random.Random) -> None:
    """The site's SAE reports: the initial report mostly within 24 h of awareness (some late), the full report
    mostly within 15 days; a few stay unreported (overdue on the dashboard and in the DSMB view)."""
    from immunoguide.trial import report_sae

    aware_at = datetime.fromisoformat(ae["aware_at"])
    u = rng.random()
    if u < 0.04:
        return
    initial = aware_at + timedelta(hours=rng.uniform(30, 60) if u < 0.12 else rng.uniform(1, 20))
    report_sae(s, code, ae["id"], "initial", initial, actor=coord, now=now, late_entry_reason=DEMO_LATE_REASON)
    if rng.random() < 0.05:
        return
    full = initial + timedelta(days=rng.uniform(3, 13) if rng.random() < 0.92 else rng.uniform(16, 25))
    report_sae(s, code, ae["id"], "full", min(full, now), actor=coord, now=now, late_entry_reason=DEMO_LATE_REASON)


def _followup_labs(e: dict[str, Any], t: datetime, active: bool, rng: random.Random, *,
                   to_mals: bool = False) -> dict[str, Any]:
    """Serial ferritin / mHLA-DR draws: recovery more likely on the active drug (reversal endpoint); ``to_mals``
    gives an immunoparalysis patient a ferritin above 4420 ng/mL (a stratum switch)."""
    recover = rng.random() < (0.75 if active else 0.5)
    if e["stratum"] == "MALS":
        ferr = rng.uniform(2500, 4300) if recover else rng.uniform(4500, 9000)
        hla = rng.uniform(6000, 14000)
    elif to_mals:
        ferr, hla = rng.uniform(5200, 8800), rng.uniform(1500, 4500)
    else:
        ferr = rng.uniform(300, 1800)
        hla = rng.uniform(8200, 15000) if recover else rng.uniform(1500, 6000)
    lab = f"central lab {e['site']}"
    return {
        "ferritin": round(ferr), "ferritin_unit": "ng/mL", "ferritin_sample_time": t.isoformat(),
        "ferritin_result_time": (t + timedelta(hours=rng.uniform(1.5, 4))).isoformat(), "ferritin_source": lab,
        "hla_dr": round(hla), "hla_dr_unit": "AB/c", "hla_dr_method": "quantibrite_abc",
        "hla_dr_sample_time": t.isoformat(), "hla_dr_result_time": (t + timedelta(hours=rng.uniform(4, 30))).isoformat(),
        "hla_dr_source": lab,
    }


#: Reference limits of the demo sites' laboratories (synthetic; each result carries its lab's LLN/ULN).
_SITE_LAB: dict[str, dict[str, tuple[str, float | None, float | None]]] = {
    "ATH": {"hemoglobin": ("g/dL", 12.0, None), "platelets": ("10^9/L", 150, None),
            "neutrophils": ("10^9/L", 1.8, None), "lymphocytes": ("10^9/L", 1.0, None),
            "bilirubin": ("umol/L", None, 21), "creatinine": ("umol/L", None, 106),
            "ast": ("U/L", None, 40), "alt": ("U/L", None, 41)},
    "MIL": {"hemoglobin": ("g/L", 120, None), "platelets": ("10^3/uL", 140, None),
            "neutrophils": ("/mm3", 1500, None), "lymphocytes": ("/mm3", 1100, None),
            "bilirubin": ("mg/dL", None, 1.2), "creatinine": ("mg/dL", None, 1.2),
            "ast": ("U/L", None, 35), "alt": ("U/L", None, 45)},
}


def _safety_labs(e: dict[str, Any], t: datetime, day: int, active: bool, thrombocytopenic: bool,
                 rng: random.Random) -> dict[str, Any]:
    """One draw's safety labs in the site laboratory's units with its reference limits (synthetic): anaemia deeper
    on anakinra, falling platelets in thrombocytopenic patients (more often on interferon-gamma)."""
    anakinra = active and e["arm"].startswith("mals")
    hgb = rng.gauss(10.4, 1.3) - day * (0.16 if anakinra else 0.07)
    plt = rng.gauss(190, 60) * (0.25 if thrombocytopenic and day >= 3 else 1.0)
    vals = {"hemoglobin": max(5.0, hgb), "platelets": max(8.0, plt), "neutrophils": max(0.3, rng.gauss(9, 4)),
            "lymphocytes": max(0.15, rng.gauss(0.9, 0.4)), "bilirubin": max(0.2, rng.lognormvariate(0.1, 0.6)),
            "creatinine": max(0.4, rng.lognormvariate(0.3, 0.45)), "ast": max(8.0, rng.lognormvariate(3.8, 0.6)),
            "alt": max(6.0, rng.lognormvariate(3.6, 0.6))}
    # canonical-ish values above: g/dL, 10^9/L, 10^9/L, 10^9/L, mg/dL, mg/dL, U/L, U/L → the site's units
    to_site = {("hemoglobin", "g/L"): 10, ("neutrophils", "/mm3"): 1000, ("lymphocytes", "/mm3"): 1000,
               ("bilirubin", "umol/L"): 17.104, ("creatinine", "umol/L"): 88.42}
    rec: dict[str, Any] = {"sample_time": t.isoformat(), "result_time": (t + timedelta(hours=2)).isoformat(),
                           "source": f"central lab {e['site']}"}
    for analyte, (unit, lln, uln) in _SITE_LAB[e["site"]].items():
        v = vals[analyte] * to_site.get((analyte, unit), 1)
        rec[analyte] = round(v, 1 if v < 100 else 0)
        rec[f"{analyte}_unit"] = unit
        if lln is not None:
            rec[f"{analyte}_lln"] = lln
        if uln is not None:
            rec[f"{analyte}_uln"] = uln
    return rec
