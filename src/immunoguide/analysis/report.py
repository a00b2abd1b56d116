"""The trial's statistical report: HTML and PDF with CONSORT, tables, forest plot, survival and SOFA curves.

:func:`build_report` reads the trial **only through the trial's read layer** — :func:`immunoguide.trial.export_trial`
(run here for a store, or an export directory written by it) — so blinding is the trial's, not the report's:

* the **blinded report** (``blinded=True``; roles allowed to export: statistician, dsmb, administrator) pools the
  arms. A blinded export holds no arm at all, so there is nothing to code as "A"/"B"; arm and kit-content columns
  are dropped on load even when the actor could see them. Tables are pooled overall and by immune stratum (the
  stratum is the endotype, visible to everyone); no per-arm safety signal is computed.
* the **unblinded DSMB report** (``blinded=False``) needs a role that sees arms (:func:`~immunoguide.trial.access.
  sees_arms`: dsmb); anyone else gets :class:`~immunoguide.errors.NotAuthorized`. Groups are precision
  immunotherapy (arm role ``active``) vs placebo, overall and within each stratum.

Endpoints come from :mod:`immunoguide.analysis.endpoints` (SAP rules, every day value traceable to its stored
``followups`` row, imputed days flagged ``locf`` / ``death_24``) and the statistics from
:mod:`immunoguide.analysis.estimators` (Newcombe risk difference, Woolf OR, Fisher P, proportional odds,
Kaplan–Meier and log-rank, subgroup interactions). The report lists every protocol setting (with its confidence
and warning), every SAP policy and every choice the report itself makes (:data:`REPORT_POLICIES`).

Files written to ``out_dir`` (``_dsmb`` in the names of the unblinded report's files): ``report.html`` (self-contained:
figures embedded as SVG) and the PDF of the same name (WeasyPrint), ``figures/*.svg|png`` (matplotlib, Agg),
``traceability.csv`` (every day value of the SOFA endpoints with its flag and source row), ``patients.csv`` (per
patient: death, last contact, day-15 infection, reversal draws and adverse events, each with its source rows) and
``report_summary.json`` (the numbers of :attr:`ReportResult.summary`).

Examples
--------
>>> _fmt_ci(0.172, 0.068, 0.272, pct=True)
'17.2 (6.8 to 27.2)'
>>> _fmt_p(0.0015), _fmt_p(0.00001), _fmt_p(None)
('0.002', '< 0.001', '–')
>>> [p.name for p in REPORT_POLICIES][:2]
['study_day_numbering', 'screen_failure_reason']
"""

from __future__ import annotations

import base64
import csv
import json
import math
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoguide.analysis.endpoints import (
    BiomarkerDraw,
    DailySofaRecord,
    SofaResponseResult,
    immune_reversal,
    infection_outcome_day15,
    mean_sofa_survivors,
    mortality,
    sofa_response,
)
from immunoguide.analysis.estimators import (
    kaplan_meier,
    logrank,
    proportional_odds,
    subgroup_interactions,
    two_proportions,
    woolf_odds_ratio,
)
from immunoguide.analysis.sap import Sap, load_sap
from immunoguide.errors import ImmunoguideError, InputError, NotAuthorized, PolicyError
from immunoguide.protocols import Protocol, describe_regimen, load_protocol
from immunoguide.trial.access import Actor, authorize, sees_arms

__all__ = ["REPORT_POLICIES", "GROUPS", "ReportPolicy", "ReportResult", "build_report", "resolve_report_policies"]

#: Treatment groups of the unblinded report: protocol arm role → group key and label.
GROUPS: Mapping[str, tuple[str, str]] = {"active": ("precision", "Precision immunotherapy"),
                                         "placebo": ("placebo", "Placebo")}
_GROUP_LABEL = {k: lab for k, lab in GROUPS.values()}
_STRATUM_LABEL = {"MALS": "MALS", "immunoparalysis": "SII (immunoparalysis)"}
_SAP_ENDOTYPE = {"MALS": "MALS", "immunoparalysis": "SII"}
_RELATED = ("possible", "probable", "definite")
_COLORS = {"precision": "#1f5fa8", "placebo": "#c0504d", "all": "#2b6e4f", "MALS": "#7a4fa0",
           "immunoparalysis": "#d08a1c"}


@dataclass(frozen=True)
class ReportPolicy:
    """A choice the report makes that neither the protocol nor the SAP fixes (listed in every report).

    ``options`` maps every option the report implements to what it means; ``option`` is the default. Choose another
    with ``build_report(policies={name: option})`` or ``immunoguide report --policy name=option``.
    """

    name: str
    option: str
    text: str
    options: Mapping[str, str] = field(default_factory=dict)

    def choose(self, option: str) -> ReportPolicy:
        """This policy with ``option`` (PolicyError for an option the report does not implement)."""
        opts = dict(self.options) or {self.option: self.text}
        if option not in opts:
            raise PolicyError(expected=f"an option of report policy {self.name}: {sorted(opts)}", got=option,
                              where="--policy", todo=f"use one of {', '.join(sorted(opts))}")
        return ReportPolicy(self.name, option, opts[option], self.options)


_DAY_1 = ("The SAP's day 1 (the baseline SOFA; spec §5.1, SAP p. 66) is the day of randomisation and first dose: "
          "the store's follow-up day 0 (the 24 h from randomisation) is SAP day 1, follow-up day d is SAP day d + 1, "
          "and a death at t days after randomisation falls on SAP day floor(t) + 1. Reasoning: the SAP's baseline "
          "precedes the treatment effect, the protocol schedule has a day 0 (screening/classification sample) before "
          "day 1, and the endpoint definitions number day 1 as the day of randomisation / first dose. The sources do "
          "not print the mapping itself, so it is a named choice (confidence: likely).")
_FOLLOWUP_DAY = ("The store's follow-up day d is SAP day d: the SAP baseline is follow-up day 1 (24-48 h after "
                 "randomisation, after several doses); a death at t days falls on day max(1, floor(t)). Kept for "
                 "comparison with reports made before the mapping was settled.")

#: Every choice the report itself makes; each is printed in the report's settings section.
REPORT_POLICIES: tuple[ReportPolicy, ...] = (
    ReportPolicy("study_day_numbering", "randomisation_day_is_sap_day_1", _DAY_1,
                 {"randomisation_day_is_sap_day_1": _DAY_1, "followup_day_is_sap_day": _FOLLOWUP_DAY}),
    ReportPolicy("screen_failure_reason", "one_per_patient_exclusion_first",
                 "CONSORT counts each screen failure once, under its first blocking exclusion (protocol order) or, "
                 "without one, its first blocking inclusion: a refused consent (E2) is not counted again as missing "
                 "consent (I3). How many patients had more than one reason is shown.",
                 {"one_per_patient_exclusion_first":
                  "CONSORT counts each screen failure once, under its first blocking exclusion (protocol order) or, "
                  "without one, its first blocking inclusion: a refused consent (E2) is not counted again as missing "
                  "consent (I3). How many patients had more than one reason is shown.",
                  "every_blocking_criterion":
                  "CONSORT lists every blocking criterion of every screen failure: a patient with several reasons "
                  "is counted under each (the counts do not add up to the screen failures)."}),
    ReportPolicy("not_evaluable_sofa_response", "non_responder",
                 "Analysed patients whose SOFA-response endpoint is not evaluable (no day-1 SOFA, or conflicting "
                 "rows) count as non-responders, so the denominator is the whole analysed set as in JAMA Table 2; "
                 "how many is shown next to each result."),
    ReportPolicy("mortality_denominator", "known_vital_status",
                 "Mortality by day 28/90 is computed over patients whose vital status at the horizon is known; "
                 "patients lost to follow-up before the horizon are left out and counted."),
    ReportPolicy("zero_cell_correction", "haldane_if_zero",
                 "A 2x2 table with an empty cell gets 0.5 added to every cell for the Woolf OR (Haldane-Anscombe); "
                 "the table says so. The risk difference and Fisher P use the observed counts."),
    ReportPolicy("biomarker_draw_per_day", "latest_of_day",
                 "Serial draws: one draw per study day, the latest sample of each analyte that day; the "
                 "pre-randomisation classification sample is study day 0."),
    ReportPolicy("biomarker_censored_values", "point_values_only",
                 "A laboratory result reported as a bound (e.g. '> 100000') is not used for reversal."),
    ReportPolicy("km_censoring", "last_known_alive_day",
                 "Kaplan-Meier: time from randomisation to death (days); patients alive are censored on the last "
                 "follow-up day they were known alive (days from randomisation), and everyone at day 90."),
    ReportPolicy("sofa_trajectory", "measured_only",
                 "Mean SOFA trajectories use measured values only (no LOCF, no death score); 95 % CI of the mean "
                 "from the t distribution; x axis in SAP days (study_day_numbering)."),
    ReportPolicy("ae_relatedness", "possible_probable_definite",
                 "An adverse event is 'related' when its relatedness is possible, probable or definite."),
    ReportPolicy("safety_population", "analysed",
                 "Safety tables use the analysed population (randomised minus withdrawals with data removal: their "
                 "data no longer exist)."),
    ReportPolicy("blinded_groups", "pooled",
                 "The blinded report pools the arms (a blinded export holds no arm to code as A/B); results are "
                 "shown overall and by immune stratum."),
    ReportPolicy("lost_to_follow_up", "no_day_90_status_after_day_90",
                 "CONSORT: a randomised, analysed patient is lost to follow-up when the report time is past day 90 "
                 "and no day-90 vital status (and no death) is recorded; withdrawals are counted separately."),
    ReportPolicy("discontinued_intervention", "last_dose_before_course_end",
                 "CONSORT: a patient received the allocated intervention when at least one dose is recorded; the "
                 "intervention was discontinued when the last recorded dose was more than one dosing interval "
                 "(48 h) before the end of the 15-day course, split by death, withdrawal or other reason."),
)


def resolve_report_policies(overrides: Mapping[str, str] | None = None) -> dict[str, ReportPolicy]:
    """Every report policy with the option used: the default, or ``overrides[name]``.

    >>> resolve_report_policies({"study_day_numbering": "followup_day_is_sap_day"})["study_day_numbering"].option
    'followup_day_is_sap_day'
    """
    out = {p.name: p for p in REPORT_POLICIES}
    for name, option in (overrides or {}).items():
        if name not in out:
            raise PolicyError(expected=f"a report policy of {sorted(out)}", got=name, where="--policy",
                              todo="check the policy name (immunoguide report --help)")
        out[name] = out[name].choose(option)
    return out


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote, and the headline numbers.

    ``summary`` holds screened, screen failures, randomised (per stratum; per arm and group when unblinded),
    withdrawals with data removal, analysed, and the primary endpoint (responders and n per group — or pooled —
    with, when unblinded, the Newcombe risk difference and CI, the Woolf OR and CI and the Fisher P).
    """

    html_path: Path
    pdf_path: Path
    blinded: bool
    #: figure name → SVG file (embedded in the HTML and PDF); ``<name>_png`` → the PNG of the same figure
    figures: Mapping[str, Path]
    summary: Mapping[str, Any]
    pdf_pages: int
    traceability_csv: Path


# ------------------------------------------------------------------------------------------------------------------
# formatting helpers (also jinja filters)
# ------------------------------------------------------------------------------------------------------------------
def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}"


def _fmt_ci(est: float | None, lo: float | None, hi: float | None, *, pct: bool = False, digits: int | None = None) -> str:
    if est is None or lo is None or hi is None:
        return "–"
    k = 100.0 if pct else 1.0
    d = digits if digits is not None else (1 if pct else 2)
    return f"{k * est:.{d}f} ({k * lo:.{d}f} to {k * hi:.{d}f})"


def _fmt_np(n: int, d: int) -> str:
    return f"{n}/{d}\u00a0({100.0 * n / d:.1f}%)" if d else f"{n}/0"


# ------------------------------------------------------------------------------------------------------------------
# reading the trial through its export
# ------------------------------------------------------------------------------------------------------------------
_TABLES = ("patients", "allocation_lists", "allocation_slots", "followups", "adverse_events", "withdrawals",
           "lab_results")
#: Tables read when present (exports written before they existed lack them; the report says so).
_OPTIONAL_TABLES = ("eligibility_evaluations", "dose_administrations", "adverse_event_codings", "safety_lab_results")
_TIME_COLS = {"screened_at", "sepsis3_onset", "first_dose_at", "allocated_at", "assessed_at", "death_at",
              "recorded_at", "onset_at", "aware_at", "initial_report_at", "followup_report_at", "withdrawn_at",
              "sample_time", "receipt_time", "result_time", "entered_at", "imported_at", "given_at", "evaluated_at",
              "coded_at"}


@dataclass
class _Data:
    tables: dict[str, pd.DataFrame]
    consort: dict[str, Any]
    manifest: dict[str, Any]
    source: str
    signals: dict[str, Any] | None = None
    missing_tables: list[str] = field(default_factory=list)
    alerts: dict[str, Any] | None = None
    turnaround: dict[str, Any] | None = None


def _read_table(d: Path, name: str) -> pd.DataFrame:
    pq, cs = d / f"{name}.parquet", d / f"{name}.csv"
    if pq.exists():
        df = pd.read_parquet(pq)
    elif cs.exists():
        df = pd.read_csv(cs)
    else:
        raise InputError(expected=f"{name}.parquet or {name}.csv in the export", got=sorted(p.name for p in d.iterdir()),
                         where=str(d), todo="export the trial with `immunoguide trial export --out DIR`")
    for c in df.columns:
        if c in _TIME_COLS and not pd.api.types.is_datetime64_any_dtype(df[c]):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    return df


def _load_export_dir(d: Path) -> _Data:
    dd = d / "data_dictionary.json"
    if not dd.is_file() or not (d / "consort.json").is_file():
        raise InputError(expected="a trial export directory (data_dictionary.json, consort.json, one file per table)",
                         got=str(d), where="report input", todo="export the trial with `immunoguide trial export`")
    manifest = json.loads(dd.read_text())["manifest"]
    tables = {t: _read_table(d, t) for t in _TABLES}
    missing = []
    for t in _OPTIONAL_TABLES:
        if (d / f"{t}.parquet").exists() or (d / f"{t}.csv").exists():
            tables[t] = _read_table(d, t)
        else:
            tables[t] = pd.DataFrame()
            missing.append(t)
    data = _Data(tables, json.loads((d / "consort.json").read_text()), manifest, f"export {d}")
    data.missing_tables = missing
    return data


def _load_store(store: Any, actor: Actor, now: datetime, *, unblinded: bool, signal_rule: str | None = None) -> _Data:
    from immunoguide.trial import export_trial, safety_signals
    from immunoguide.trial.monitoring import alerts_view, turnaround_report

    with tempfile.TemporaryDirectory(prefix="immunoguide-report-") as tmp:
        with store.session() as s:
            export_trial(s, tmp, actor=actor, now=now, formats=("parquet",))
            signals = safety_signals(s, actor=actor, now=now, rule_method=signal_rule) if unblinded else None
            alerts = alerts_view(s, actor=actor, now=now)
            turnaround = turnaround_report(s, actor=actor, now=now)
        data = _load_export_dir(Path(tmp))
    data.source = f"trial store {store.safe_url}"
    data.signals = signals
    data.alerts = alerts
    data.turnaround = turnaround
    return data


def _blind(data: _Data) -> None:
    """Drop every arm-bearing column (the blinded report uses none, whoever runs it)."""
    slots = data.tables["allocation_slots"]
    data.tables["allocation_slots"] = slots.drop(columns=[c for c in ("arm",) if c in slots.columns])
    data.consort = {k: v for k, v in data.consort.items() if "_by_arm" not in k}
    data.signals = None


def _json_col(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return None
    return v


def _none(v: Any) -> Any:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


# ------------------------------------------------------------------------------------------------------------------
# per-patient derivation
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class _Patient:
    code: str
    site: str
    stratum: str
    randomised_at: datetime
    arm: str | None
    group: str | None
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    died_on_day: int | None = None
    death_days: float | None = None
    last_alive_day: int | None = None
    #: SAP day = follow-up day + sap_offset (report policy study_day_numbering)
    sap_offset: int = 0
    last_alive_followup_day: int | None = None
    baseline_sofa: int | None = None
    primary: SofaResponseResult | None = None
    primary_reason: str | None = None
    d2_15: SofaResponseResult | None = None
    d2_15_reason: str | None = None
    mort: dict[int, Any] = field(default_factory=dict)
    infection: str | None = None
    reversal: Any = None
    mean_sofa: Any = None
    aes: list[dict[str, Any]] = field(default_factory=list)
    safety_labs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def _days_between(t: datetime, t0: datetime) -> float:
    return (pd.Timestamp(t) - pd.Timestamp(t0)).total_seconds() / 86400.0


def _derive(data: _Data, protocol: Protocol, sap: Sap, *, unblinded: bool,
            policies: Mapping[str, ReportPolicy] | None = None) -> tuple[list[_Patient], list[str]]:
    t = data.tables
    pts = t["patients"]
    slots = t["allocation_slots"]
    slots = slots[slots["patient_code"].notna()]
    removed = set(pts.loc[pts["data_removed"].astype(bool), "code"])
    warnings: list[str] = []
    labels = set(pts["protocol"].dropna())
    if labels and labels != {protocol.label}:
        warnings.append(f"patients were screened under {sorted(labels)}; the report uses {protocol.label}")
    fu = t["followups"]
    aes = t["adverse_events"]
    labs = t["lab_results"]
    pol = policies or resolve_report_policies()
    offset = 1 if pol["study_day_numbering"].option == "randomisation_day_is_sap_day_1" else 0
    codings = t.get("adverse_event_codings", pd.DataFrame())
    coded = {int(r["ae_id"]): r for r in codings.to_dict("records")} if not codings.empty else {}
    slr = t.get("safety_lab_results", pd.DataFrame())
    if data.missing_tables:
        warnings.append(f"the export has no {', '.join(data.missing_tables)} (written before they existed): the "
                        "related tables and CONSORT boxes say 'not in this export'")
    out: list[_Patient] = []
    by_code = pts.set_index("code")
    for _, s in slots.sort_values("patient_code").iterrows():
        code = s["patient_code"]
        if code in removed:
            continue
        p = by_code.loc[code]
        arm = s.get("arm") if unblinded else None
        group = GROUPS[protocol.arm(arm).role][0] if arm else None
        rec = _json_col(p["screening_record"]) or {}
        pt = _Patient(code, p["site"], p["stratum"], s["allocated_at"], arm, group, rec,
                      fu[fu["patient_code"] == code].sort_values("day").to_dict("records"), sap_offset=offset)
        # death and last contact (SAP days: report policy study_day_numbering)
        deaths = [r for r in pt.rows if r.get("vital_status") == "dead" and _none(r.get("death_at")) is not None]
        if deaths:
            pt.death_days = _days_between(deaths[0]["death_at"], pt.randomised_at)
            whole = int(math.floor(pt.death_days))
            pt.died_on_day = whole + 1 if offset else max(1, whole)
            pt.sources["death"] = f"followups/{int(deaths[0]['id'])}"
        alive = [r for r in pt.rows if r.get("vital_status") != "dead"]
        if alive:
            last = max(alive, key=lambda r: int(r["day"]))
            pt.last_alive_followup_day = int(last["day"])
            pt.last_alive_day = int(last["day"]) + offset
            pt.sources["last_alive"] = f"followups/{int(last['id'])}"
        # SOFA endpoints (SAP day = follow-up day + offset; day 1 is the SAP baseline)
        sofa_rows = [r for r in pt.rows if _none(r.get("sofa_total")) is not None and int(r["day"]) + offset >= 1]
        recs = [DailySofaRecord(code, int(r["day"]) + offset, int(r["sofa_total"]), pt.died_on_day,
                                row_id=f"followups/{int(r['id'])}")
                for r in sofa_rows]
        base = [r for r in sofa_rows if int(r["day"]) + offset == 1]
        pt.baseline_sofa = int(base[0]["sofa_total"]) if base else None
        for key in ("d2_9", "d2_15"):
            res, reason = None, None
            if not recs:
                reason = "no SOFA recorded on any study day >= 1"
            else:
                try:
                    res = sofa_response(recs, endpoint=key, sap=sap)  # type: ignore[arg-type]
                    reason = res.reason
                except ImmunoguideError as exc:
                    reason = f"data conflict: {exc.message}"
            if key == "d2_9":
                pt.primary, pt.primary_reason = res, reason
            else:
                pt.d2_15, pt.d2_15_reason = res, reason
        if recs:
            try:
                pt.mean_sofa = mean_sofa_survivors(recs, sap=sap)
            except ImmunoguideError as exc:
                pt.notes.append(f"mean SOFA d1-9: {exc.message}")
        # mortality
        for h in sap.mortality_horizons_days:
            lka = pt.last_alive_day if pt.last_alive_day and pt.last_alive_day >= 1 else None
            if lka is not None and pt.died_on_day is not None and lka > pt.died_on_day:
                lka = pt.died_on_day
            try:
                pt.mort[h] = mortality(code, died_on_day=pt.died_on_day, last_known_alive_day=lka, horizon_days=h)
            except ImmunoguideError as exc:
                pt.notes.append(f"mortality d{h}: {exc.message}")
        # day-15 infection
        d15 = [r for r in pt.rows if _none(r.get("infection_assessment")) is not None]
        if d15:
            pt.infection = infection_outcome_day15(code, d15[0]["infection_assessment"], sap=sap).category
            pt.sources["infection"] = f"followups/{int(d15[0]['id'])}"
        # reversal
        pt.reversal = _reversal(pt, labs[labs["patient_code"] == code], sap)
        pt.aes = aes[aes["patient_code"] == code].to_dict("records")
        for a in pt.aes:
            c = coded.get(int(a["id"]))
            a["ctcae_term"] = c["ctcae_term"] if c else None
            a["meddra_code"] = _none(c["meddra_code"]) if c else None
            a["display_term"] = c["ctcae_term"] if c else f"{a['term']} (uncoded)"
        pt.safety_labs = slr[slr["patient_code"] == code].to_dict("records") if not slr.empty else []
        out.append(pt)
    return out, warnings


def _reversal(pt: _Patient, labs: pd.DataFrame, sap: Sap) -> Any:
    endotype = _SAP_ENDOTYPE.get(pt.stratum)
    if endotype is None or labs.empty:
        return None
    per_day: dict[int, dict[str, tuple[datetime, float, str]]] = {}
    for _, r in labs.iterrows():
        lo, hi = _none(r["value_lower"]), _none(r["value_upper"])
        if lo is None or hi is None or lo != hi or _none(r["sample_time"]) is None:
            continue
        day = max(0, int(math.floor(_days_between(r["sample_time"], pt.randomised_at))))
        cur = per_day.setdefault(day, {}).get(r["concept"])
        if cur is None or r["sample_time"] >= cur[0]:
            per_day[day][r["concept"]] = (r["sample_time"], float(lo), f"lab_results/{int(r['id'])}")
    draws = [BiomarkerDraw(pt.code, day,
                           ferritin_ng_per_ml=v.get("ferritin_ng_per_ml", (None, None, None))[1],
                           hla_dr_per_monocyte=v.get("hla_dr_per_monocyte", (None, None, None))[1],
                           row_id=",".join(sorted(x[2] for x in v.values())))
             for day, v in sorted(per_day.items())]
    if not draws:
        return None
    try:
        return immune_reversal(draws, endotype=endotype, sap=sap)  # type: ignore[arg-type]
    except ImmunoguideError as exc:
        pt.notes.append(f"reversal: {exc.message}")
        return None


# ------------------------------------------------------------------------------------------------------------------
# statistics per column
# ------------------------------------------------------------------------------------------------------------------
def _columns(patients: list[_Patient], unblinded: bool) -> list[tuple[str, str, list[_Patient]]]:
    """(key, label, patients) for the table columns: groups (unblinded) or pooled, then by stratum."""
    cols: list[tuple[str, str, list[_Patient]]] = []
    if unblinded:
        for g, _ in GROUPS.values():
            cols.append((g, g.capitalize(), [p for p in patients if p.group == g]))
    cols.append(("all", "All analysed", list(patients)))
    return cols


def _binary(patients: list[_Patient], kind: str) -> tuple[int, int, int]:
    """(events, denominator, not evaluable) for one binary endpoint."""
    if kind in ("d2_9", "d2_15"):
        res = [p.primary if kind == "d2_9" else p.d2_15 for p in patients]
        ev = sum(1 for r in res if r is not None and r.responder)
        ne = sum(1 for r in res if r is None or not r.evaluable)
        return ev, len(patients), ne
    if kind.startswith("mort"):
        h = int(kind[4:])
        known = [p.mort.get(h) for p in patients]
        ok = [m for m in known if m is not None and m.evaluable]
        return sum(1 for m in ok if m.dead), len(ok), len(patients) - len(ok)
    if kind == "reversal":
        ok = [p.reversal for p in patients if p.reversal is not None and p.reversal.evaluable]
        return sum(1 for r in ok if r.reversed), len(ok), len(patients) - len(ok)
    raise InputError(expected="a binary endpoint", got=kind, where="report")


def _compare(a: tuple[int, int, int], b: tuple[int, int, int]) -> dict[str, Any]:
    """Newcombe RD, Woolf OR (Haldane if a cell is empty) and Fisher P for group a vs b; or why not."""
    try:
        r = two_proportions(a[0], a[1], b[0], b[1], zero_cell_correction="haldane_if_zero")
    except ImmunoguideError as exc:
        return {"estimable": False, "reason": exc.message}
    rd, orr = r.risk_difference, r.odds_ratio
    return {"estimable": True, "rd": rd.difference, "rd_low": rd.ci_low, "rd_high": rd.ci_high,
            "or": orr.odds_ratio, "or_low": orr.ci_low, "or_high": orr.ci_high, "or_corrected": orr.corrected,
            "p": r.fisher.p_value, "result": r}


_ENDPOINTS = (
    ("d2_9", "primary"), ("d2_15", "secondary"), ("mort28", "secondary"), ("mort90", "secondary"),
    ("reversal", "secondary"),
)


def _endpoint_label(kind: str, sap: Sap) -> str:
    if kind in sap.sofa_response:
        return sap.sofa_response[kind].label
    if kind.startswith("mort"):
        return f"{kind[4:]}-day all-cause mortality"
    return "Reversal of immune dysfunction (patients with >= 2 serial draws)"


def _endpoint_table(patients: list[_Patient], sap: Sap, unblinded: bool) -> list[dict[str, Any]]:
    cols = _columns(patients, unblinded)
    rows = []
    for kind, role in _ENDPOINTS:
        cells = {k: _binary(ps, kind) for k, _, ps in cols}
        row: dict[str, Any] = {"kind": kind, "role": role, "label": _endpoint_label(kind, sap),
                               "cells": {k: {"events": e, "n": n, "not_evaluable": ne, "text": _fmt_np(e, n)}
                                         for k, (e, n, ne) in cells.items()}}
        if unblinded:
            row["compare"] = _compare(cells["precision"], cells["placebo"])
        rows.append(row)
    return rows


def _stratum_table(patients: list[_Patient], sap: Sap, unblinded: bool) -> list[dict[str, Any]]:
    rows = []
    for stratum in ("MALS", "immunoparalysis"):
        ps = [p for p in patients if p.stratum == stratum]
        for kind in ("d2_9", "d2_15"):
            row: dict[str, Any] = {"stratum": _SAP_ENDOTYPE[stratum], "label": _endpoint_label(kind, sap)}
            if unblinded:
                a = _binary([p for p in ps if p.group == "precision"], kind)
                b = _binary([p for p in ps if p.group == "placebo"], kind)
                row.update({"precision": _fmt_np(a[0], a[1]), "placebo": _fmt_np(b[0], b[1]), "compare": _compare(a, b)})
            e, n, _ = _binary(ps, kind)
            row["all"] = _fmt_np(e, n)
            rows.append(row)
    return rows


def _infection(patients: list[_Patient], sap: Sap, unblinded: bool) -> dict[str, Any]:
    cats = sap.infection_categories
    cols = _columns(patients, unblinded)
    counts = {k: [sum(1 for p in ps if p.infection == c) for c in cats] for k, _, ps in cols}
    missing = {k: sum(1 for p in ps if p.infection is None) for k, _, ps in cols}
    out: dict[str, Any] = {"categories": list(cats), "counts": counts, "missing": missing}
    if unblinded:
        rows = [p for p in patients if p.infection is not None]
        df = pd.DataFrame({"infection": [p.infection for p in rows], "treated": [1 if p.group == "precision" else 0 for p in rows]})
        try:
            if df.empty or df["treated"].nunique() < 2:
                raise InputError(expected="day-15 assessments in both groups", got=len(df), where="proportional odds")
            res = proportional_odds(df, "infection", "treated", cats)
            te = res.treatment_effect
            out["ordinal"] = {"estimable": True, "or": te.odds_ratio, "low": te.ci_low, "high": te.ci_high,
                              "p": te.p_value, "method": res.method, "ci_method": res.ci_method, "n": res.n}
        except ImmunoguideError as exc:
            out["ordinal"] = {"estimable": False, "reason": exc.message}
    return out


def _mean_sofa_row(patients: list[_Patient], unblinded: bool) -> dict[str, Any]:
    cells = {}
    for k, _, ps in _columns(patients, unblinded):
        v = [p.mean_sofa.mean_sofa for p in ps if p.mean_sofa is not None and p.mean_sofa.evaluable]
        cells[k] = f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f} (n = {len(v)})" if len(v) > 1 else (
            f"{v[0]:.2f} (n = 1)" if v else "n = 0")
    return cells


# ------------------------------------------------------------------------------------------------------------------
# Table 1
# ------------------------------------------------------------------------------------------------------------------
def _num(vals: Sequence[Any]) -> list[float]:
    return [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _table1_columns(patients: list[_Patient], unblinded: bool) -> list[tuple[str, str, list[_Patient]]]:
    """Table 1 columns: the groups and all (unblinded), or each immune stratum and all (blinded: arms pooled)."""
    if unblinded:
        return _columns(patients, unblinded)
    return [(s, _STRATUM_LABEL[s], [p for p in patients if p.stratum == s]) for s in ("MALS", "immunoparalysis")] + [
        ("all", "All analysed", list(patients))]


def _table1(patients: list[_Patient], protocol: Protocol, unblinded: bool) -> list[dict[str, Any]]:
    cols = _table1_columns(patients, unblinded)
    rows: list[dict[str, Any]] = [{"label": "Patients analysed, n", "cells": {k: str(len(ps)) for k, _, ps in cols}}]

    def cont(label: str, getter: Any, kind: str = "mean") -> None:
        cells = {}
        for k, _, ps in cols:
            v = _num([getter(p) for p in ps])
            miss = len(ps) - len(v)
            if not v:
                cells[k] = "–"
                continue
            if kind == "mean":
                txt = f"{np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
            else:
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                txt = f"{med:g} [{q1:g}–{q3:g}]"
            cells[k] = txt + (f" (missing {miss})" if miss else "")
        rows.append({"label": label, "cells": cells})

    def cat(label: str, getter: Any, levels: Sequence[tuple[Any, str]]) -> None:
        rows.append({"label": label, "cells": {k: "" for k, _, _ in cols}, "header": True})
        for val, lab in levels:
            cells = {}
            for k, _, ps in cols:
                n = sum(1 for p in ps if getter(p) == val)
                cells[k] = f"{n}\u00a0({100.0 * n / len(ps):.1f}%)" if ps else "0"
            rows.append({"label": lab, "cells": cells, "indent": True})
        miss = {k: sum(1 for p in ps if getter(p) is None) for k, _, ps in cols}
        if any(miss.values()):
            rows.append({"label": "not recorded", "cells": {k: str(v) for k, v in miss.items()}, "indent": True})

    sites = sorted({p.site for p in patients})
    cat("Site", lambda p: p.site, [(s, s) for s in sites])
    cont("Age, years, mean ± SD", lambda p: p.record.get("age_years"))
    cat("Sex", lambda p: p.record.get("sex"), [("female", "female"), ("male", "male")])
    cont("SOFA at screening, median [IQR]", lambda p: p.record.get("sofa_total"), "median")
    offset = patients[0].sap_offset if patients else 1
    cont(f"SOFA on SAP day 1 (baseline: follow-up day {1 - offset}), median [IQR]", lambda p: p.baseline_sofa, "median")
    cat("Immune stratum (endotype)", lambda p: p.stratum, [("MALS", "MALS (ferritin > 4420 ng/mL)"),
                                                          ("immunoparalysis", "SII (immunoparalysis)")])
    sources = protocol.vocabularies.infection_sources
    seen = sorted({str(p.record["infection_source"]) for p in patients if p.record.get("infection_source")})
    cat("Infection source", lambda p: p.record.get("infection_source"),
        [(s, f"{s}: {sources.get(s, s)}") for s in seen])
    cat("COVID-19", lambda p: p.record.get("covid19"), [(True, "yes"), (False, "no")])
    for key, label in (("mechanical_ventilation", "Mechanical ventilation at screening"), ("apache_ii", "APACHE II"),
                       ("charlson_index", "Charlson comorbidity index")):
        vals = [_lookup(p.record, key) for p in patients]
        if all(v is None for v in vals):
            rows.append({"label": label, "cells": {k: "not collected" for k, _, _ in cols}, "muted": True})
        elif key == "mechanical_ventilation":
            cat(label, lambda p, key=key: _lookup(p.record, key), [(True, "yes"), (False, "no")])
        else:
            cont(f"{label}, median [IQR]", lambda p, key=key: _lookup(p.record, key), "median")
    return rows


#: SAP subgroup column → the screening-record field that holds it (PatientRecord, units in the names).
_RECORD_FIELD = {"apache_ii": "apache_ii_points", "charlson_index": "charlson_index_points"}


def _lookup(record: Mapping[str, Any], key: str) -> Any:
    """A baseline fact from the screening record: top-level field (or its unit-named field), protocol flag or lab
    value (None if absent)."""
    keys = (key, _RECORD_FIELD[key]) if key in _RECORD_FIELD else (key,)
    for where in (record, record.get("flags") or {}, record.get("labs") or {}):
        for k in keys:
            if k in where and where[k] is not None:
                return where[k]
    return None


# ------------------------------------------------------------------------------------------------------------------
# safety
# ------------------------------------------------------------------------------------------------------------------
def _safety(patients: list[_Patient], protocol: Protocol, unblinded: bool) -> dict[str, Any]:
    cols: list[tuple[str, str, list[_Patient]]] = []
    if unblinded:
        for stratum in ("MALS", "immunoparalysis"):
            for g, _ in GROUPS.values():
                ps = [p for p in patients if p.stratum == stratum and p.group == g]
                arms = sorted({p.arm for p in ps if p.arm})
                label = _arm_short(protocol, arms[0]) if arms else f"{_SAP_ENDOTYPE[stratum]} {g}"
                cols.append((f"{stratum}:{g}", label, ps))
        for g, _ in GROUPS.values():
            cols.append((g, f"{g.capitalize()}, all", [p for p in patients if p.group == g]))
    else:
        for stratum in ("MALS", "immunoparalysis"):
            cols.append((stratum, _STRATUM_LABEL[stratum], [p for p in patients if p.stratum == stratum]))
    cols.append(("all", "All analysed", list(patients)))

    def pts_with(ps: list[_Patient], pred: Any) -> str:
        n = sum(1 for p in ps if any(pred(a) for a in p.aes))
        return f"{n}\u00a0({100.0 * n / len(ps):.1f}%)" if ps else "0"

    def events(ps: list[_Patient], pred: Any) -> str:
        return str(sum(1 for p in ps for a in p.aes if pred(a)))

    def serious(a: Mapping[str, Any]) -> bool:
        return bool(a["serious"])

    def related(a: Mapping[str, Any]) -> bool:
        return a["relatedness"] in _RELATED

    lines = [
        ("Patients", lambda ps: str(len(ps))),
        ("Patients with any AE", lambda ps: pts_with(ps, lambda a: True)),
        ("AEs (events)", lambda ps: events(ps, lambda a: True)),
        ("Patients with a serious AE (SAE)", lambda ps: pts_with(ps, serious)),
        ("SAEs (events)", lambda ps: events(ps, serious)),
        ("Patients with a related AE", lambda ps: pts_with(ps, related)),
        ("Patients with a related SAE", lambda ps: pts_with(ps, lambda a: serious(a) and related(a))),
        ("Patients with an AE of CTCAE grade >= 3", lambda ps: pts_with(ps, lambda a: int(a["grade"]) >= 3)),
        ("Patients with a fatal AE (grade 5)", lambda ps: pts_with(ps, lambda a: int(a["grade"]) == 5)),
    ]
    overview = [{"label": lab, "cells": {k: fn(ps) for k, _, ps in cols}} for lab, fn in lines]
    # SAEs by CTCAE term (patients with the term); uncoded (legacy free-text) AEs are listed as such
    def term_of(a: Mapping[str, Any]) -> str:
        return str(a.get("display_term") or a["term"])

    terms = sorted({term_of(a) for p in patients for a in p.aes if a["serious"]})
    by_term = [{"label": term, "cells": {k: pts_with(ps, lambda a, term=term: a["serious"] and term_of(a) == term)
                                         for k, _, ps in cols}} for term in terms]
    all_terms = sorted({term_of(a) for p in patients for a in p.aes})
    any_term = [{"label": term, "cells": {k: pts_with(ps, lambda a, term=term: term_of(a) == term) for k, _, ps in cols}}
                for term in all_terms]
    # structured safety labs: patients with a CTCAE grade >= 1 and >= 3 per term
    lab_terms = sorted({str(r["ctcae_term"]) for p in patients for r in p.safety_labs})

    def labs_with(ps: list[_Patient], term: str, g: int) -> str:
        n = sum(1 for p in ps if any(r["ctcae_term"] == term and _none(r["grade"]) is not None and int(r["grade"]) >= g
                                     for r in p.safety_labs))
        return f"{n}\u00a0({100.0 * n / len(ps):.1f}%)" if ps else "0"

    labs: list[dict[str, Any]] = []
    for term in lab_terms:
        labs.append({"label": f"{term}, grade ≥ 1", "cells": {k: labs_with(ps, term, 1) for k, _, ps in cols}})
        labs.append({"label": f"{term}, grade ≥ 3", "cells": {k: labs_with(ps, term, 3) for k, _, ps in cols},
                     "indent": True})
    measured = {k: str(sum(1 for p in ps if p.safety_labs)) for k, _, ps in cols}
    return {"columns": [(k, lab) for k, lab, _ in cols], "overview": overview, "sae_terms": by_term,
            "ae_terms": any_term, "lab_rows": labs, "lab_measured": measured}


# ------------------------------------------------------------------------------------------------------------------
# figures (matplotlib, object API: no global pyplot state)
# ------------------------------------------------------------------------------------------------------------------
def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=150)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    return fig


def _save(fig: Any, fig_dir: Path, name: str, figures: dict[str, Path]) -> None:
    fig_dir.mkdir(parents=True, exist_ok=True)
    svg, png = fig_dir / f"{name}.svg", fig_dir / f"{name}.png"
    import matplotlib

    # Reproducible files: no creation date, fixed id salt (the same seed gives the same report, byte for byte).
    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans", "svg.hashsalt": name}):
        fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})  # text as <text>, searchable
    fig.savefig(png, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    figures[name] = svg
    figures[f"{name}_png"] = png


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, *, fc: str = "#f4f6f9", ec: str = "#44546a",
         size: float = 8.2, bold_first: bool = True, align: str = "center") -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.4,rounding_size=1.2",
                                fc=fc, ec=ec, lw=0.9))
    lines = text.split("\n")
    if align == "left":
        ax.text(x - w / 2 + 1.5, y + h / 2 - 1.2, text, ha="left", va="top", fontsize=size, linespacing=1.35)
    elif bold_first and len(lines) > 1:
        ax.text(x, y, lines[0] + "\n" + "\n".join(" " for _ in lines[1:]), ha="center", va="center", fontsize=size,
                fontweight="bold", linespacing=1.35)
        ax.text(x, y, " \n" + "\n".join(lines[1:]), ha="center", va="center", fontsize=size, linespacing=1.35)
    else:
        ax.text(x, y, text, ha="center", va="center", fontsize=size, fontweight="bold" if bold_first else "normal",
                linespacing=1.35)


def _arrow(ax: Any, x1: float, y1: float, x2: float, y2: float) -> None:
    ax.annotate("", xy=(x2, y2), xytext=(x1, y1), arrowprops=dict(arrowstyle="-|>", color="#44546a", lw=0.9,
                                                                   shrinkA=0, shrinkB=0, mutation_scale=9))


def _line(ax: Any, xs: Sequence[float], ys: Sequence[float]) -> None:
    ax.plot(xs, ys, color="#44546a", lw=0.9)


def _criterion_label(protocol: Protocol, cid: str, *, width: int | None = 46) -> str:
    try:
        text = protocol.criterion(cid).text
    except ImmunoguideError:
        return cid
    if cid == "I6":
        text = "immune state neither MALS nor SII (unclassified)"
    if width is not None and len(text) > width + 1:
        text = text[:width] + "…"
    return f"{cid} {text}"


def _arm_short(protocol: Protocol, code: str) -> str:
    """``"MALS anakinra"``, ``"SII placebo"``: stratum and the arm's active drug (or placebo)."""
    arm = protocol.arm(code)
    drugs = sorted({protocol.regimens[r].drug for r in arm.kits.values() if not protocol.regimens[r].is_placebo})
    stratum = _SAP_ENDOTYPE.get(arm.endotypes[0], arm.endotypes[0]) if arm.endotypes else ""
    return f"{stratum} {' + '.join(drugs) if drugs else 'placebo'}".strip()


def _primary_reasons(data: _Data, protocol: Protocol, policy: ReportPolicy) -> tuple[dict[str, int], int] | None:
    """Screen failures counted once per patient (policy ``screen_failure_reason``): criterion → patients, and how
    many patients had more than one blocking criterion. None when the export holds no screening log."""
    ev = data.tables.get("eligibility_evaluations")
    if ev is None or ev.empty or policy.option != "one_per_patient_exclusion_first":
        return None
    pts = data.tables["patients"]
    failed = set(pts.loc[pts["status"] == "screen_failed", "code"])
    order = [c.id for c in protocol.exclusion] + [c.id for c in protocol.inclusion]
    counts: Counter[str] = Counter()
    several = 0
    last = ev.sort_values("id").groupby("patient_code").tail(1)
    seen = set()
    for _, r in last.iterrows():
        code = r["patient_code"]
        if code not in failed:
            continue
        seen.add(code)
        blocking = _json_col(r["blocking"]) or []
        if len(blocking) > 1:
            several += 1
        chosen = next((c for c in order if c in blocking), blocking[0] if blocking else "(reason removed)")
        counts[chosen] += 1
    counts["(reason removed)"] += len(failed - seen)
    return {k: v for k, v in counts.items() if v}, several


def _flow(data: _Data, patients: list[_Patient], protocol: Protocol, now: datetime) -> dict[str, dict[str, Any]]:
    """Per analysed patient: received the allocated intervention (a dose recorded), discontinued it (last dose more
    than 48 h before the end of the 15-day course: died / withdrew / other), lost to follow-up (past day 90 without
    a day-90 vital status or a death). Keyed by patient code."""
    doses = data.tables.get("dose_administrations")
    wds = data.tables["withdrawals"]
    withdrawn = set(wds["patient_code"]) if not wds.empty else set()
    days = max([r.duration_days for r in protocol.regimens.values() if r.duration_days] or [15])
    out: dict[str, dict[str, Any]] = {}
    for p in patients:
        given = [] if doses is None or doses.empty else sorted(doses.loc[doses["patient_code"] == p.code, "given_at"])
        rec: dict[str, Any] = {"received": bool(given), "discontinued": None, "lost": False}
        if given:
            first, lastd = given[0], given[-1]
            end = pd.Timestamp(first) + pd.Timedelta(days=days)
            if pd.Timestamp(lastd) < end - pd.Timedelta(hours=48) and pd.Timestamp(now) > end:
                died = p.death_days is not None and pd.Timestamp(p.randomised_at) + pd.Timedelta(days=p.death_days) <= end
                rec["discontinued"] = "died" if died else "withdrew" if p.code in withdrawn else "other"
        horizon = pd.Timestamp(p.randomised_at) + pd.Timedelta(days=90)
        day90 = [r for r in p.rows if int(r["day"]) >= 90 and _none(r.get("vital_status")) is not None]
        if pd.Timestamp(now) > horizon and p.death_days is None and not day90 and p.code not in withdrawn:
            rec["lost"] = True
        out[p.code] = rec
    return out


def _wrap(text: str, width: int, indent: str = "   ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, subsequent_indent=indent) or [text]


def _consort_figure(c: Mapping[str, Any], protocol: Protocol, unblinded: bool, fig_dir: Path,
                    figures: dict[str, Path], *, primary: tuple[dict[str, int], int] | None = None,
                    flow: Mapping[str, Mapping[str, Any]] | None = None,
                    patients: list[_Patient] | None = None) -> None:
    reasons = primary[0] if primary is not None else c.get("screen_failure_reasons", {})
    excl_lines = [f"Excluded (screen failures): n = {c['screen_failures']}"]
    for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        excl_lines += _wrap(f"• {_criterion_label(protocol, k, width=None)}: {v}", 62)
    if primary is not None:
        excl_lines += _wrap(f"(one reason per patient, exclusions first; {primary[1]} had more than one)", 62, "")
    else:
        excl_lines += _wrap("(a patient may be counted under several criteria)", 62, "")
    excl_lines.append(f"Screening not complete: n = {c.get('pending', 0)}")
    if c.get("withdrawn_before_randomisation"):
        excl_lines.append(f"Withdrew before randomisation: n = {c['withdrawn_before_randomisation']}")
    ex_h = 1.72 * len(excl_lines) + 3.0
    fig = _figure(7.4, 8.6)
    flow = flow or {}
    members: dict[str, list[_Patient]] = {}
    for p in patients or []:
        key = (p.group or "") if unblinded else p.stratum
        members.setdefault(key, []).append(p)

    def flow_lines(key: str) -> tuple[list[str], list[str]]:
        ps = members.get(key, [])
        recs = [flow.get(p.code, {}) for p in ps]
        got = sum(1 for r in recs if r.get("received"))
        disc = Counter(r.get("discontinued") for r in recs if r.get("discontinued"))
        lost = sum(1 for r in recs if r.get("lost"))
        intervention = [f"Received allocated intervention: n = {got}", f"Did not receive it: n = {len(ps) - got}"]
        follow = [f"Lost to follow-up: n = {lost}",
                  f"Discontinued intervention: n = {sum(disc.values())}",
                  f"(died {disc.get('died', 0)}, withdrew {disc.get('withdrew', 0)}, other {disc.get('other', 0)})"]
        return intervention, follow
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.axis("off")
    _box(ax, 26, 95, 40, 6, f"Assessed for eligibility (screened)\nn = {c['screened']}")
    ey = 95 - 3 - 4 - ex_h / 2 - 1
    _box(ax, 73, ey, 52, ex_h, "\n".join(excl_lines), fc="#fbf7ef", ec="#8a6d3b", align="left", size=7.6)
    ry = min(72, ey - ex_h / 2 - 6)
    _arrow(ax, 26, 92, 26, ry + 3)
    _arrow(ax, 26, ey, 47, ey)
    _box(ax, 26, ry, 40, 6, f"Randomised\nn = {c['randomised']}")
    strata = c.get("randomised_by_stratum", {})
    if unblinded:
        roles: dict[str, dict[str, dict[str, int]]] = {"precision": {"arms": {}}, "placebo": {"arms": {}}}
        for arm_code, n_arm in c.get("randomised_by_arm", {}).items():
            arm = protocol.arm(arm_code)
            roles[GROUPS[arm.role][0]]["arms"][arm.code] = n_arm
        groups = []
        for g, lab in GROUPS.values():
            arms = roles[g]["arms"]
            wd = sum(c.get("withdrawn_by_arm", {}).get(a, 0) for a in arms)
            wdr = sum(c.get("withdrawn_with_data_removal_by_arm", {}).get(a, 0) for a in arms)
            an = sum(c.get("analysed_by_arm", {}).get(a, 0) for a in arms)
            alloc = [f"Allocated to {lab.lower()}", f"n = {sum(arms.values())}"]
            for a, n in sorted(arms.items()):
                alloc.append(f"{_arm_short(protocol, a)}: n = {n}")
            groups.append((alloc, wd, wdr, an, g))
    else:
        groups = []
        for stratum in ("MALS", "immunoparalysis"):
            alloc = [f"Stratum {_STRATUM_LABEL[stratum]}", f"randomised n = {strata.get(stratum, 0)}",
                     "(arms pooled: blinded)"]
            groups.append((alloc, c.get("withdrawn_by_stratum", {}).get(stratum, 0),
                           c.get("withdrawn_with_data_removal_by_stratum", {}).get(stratum, 0),
                           c.get("analysed_by_stratum", {}).get(stratum, 0), stratum))
    xs = (26, 74)
    gy = ry - 17
    _line(ax, [26, 26], [ry - 3, ry - 7])
    _line(ax, [xs[0], xs[1]], [ry - 7, ry - 7])
    for x, (alloc, wd, wdr, an, key) in zip(xs, groups, strict=True):
        intervention, follow = flow_lines(key)
        if not flow:
            intervention = ["Intervention received: not in this export"]
            follow = ["Lost to follow-up / discontinued:", "not in this export"]
        lines = alloc + intervention
        h1 = 1.72 * len(lines) + 2.2
        _arrow(ax, x, ry - 7, x, gy + h1 / 2)
        _box(ax, x, gy, 46, h1, "\n".join(lines), size=7.4)
        fy = gy - h1 / 2 - 5 - 6
        _arrow(ax, x, gy - h1 / 2, x, fy + 6)
        _box(ax, x, fy, 46, 12, "Follow-up\n" + "\n".join(follow), fc="#f7f7fb", ec="#55557a", size=7.4)
        wy = fy - 6 - 5 - 5
        _arrow(ax, x, fy - 6, x, wy + 5)
        _box(ax, x, wy, 46, 10, f"Withdrew consent\nn = {wd}\nwith removal of all data: {wdr}\ndata kept (analysed): {wd - wdr}",
             fc="#fbf7ef", ec="#8a6d3b", size=7.4)
        ay = wy - 5 - 5 - 4
        _arrow(ax, x, wy - 5, x, ay + 4)
        _box(ax, x, ay, 46, 8, f"Analysed\nn = {an}\n(excluded: data removal, {wdr})", fc="#eef5ee", ec="#2b6e4f",
             size=7.4)
    bottom = ay - 4
    for line_no, text in enumerate(_wrap("Analysis population: " + c.get("analysis_population", ""), 110, "")):
        ax.text(50, bottom - 2 - 2.2 * line_no, text, ha="center", va="top", fontsize=7.0, color="#555555",
                style="italic")
    ymin = bottom - 8
    ax.set_ylim(ymin, 100)
    fig.set_size_inches(7.4, 8.6 * (100 - ymin) / 100)
    _save(fig, fig_dir, "consort", figures)


def _forest_rows(patients: list[_Patient], sap: Sap) -> list[dict[str, Any]]:
    """Rows of the forest plot: overall, per stratum, SAP subgroups (or 'not collected')."""
    def counts(ps: list[_Patient]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (_binary([p for p in ps if p.group == "precision"], "d2_9"),
                _binary([p for p in ps if p.group == "placebo"], "d2_9"))

    def orow(label: str, ps: list[_Patient], *, indent: bool = True, p_int: float | None = None,
             note: str | None = None) -> dict[str, Any]:
        a, b = counts(ps)
        row: dict[str, Any] = {"label": label, "a": f"{a[0]}/{a[1]}", "b": f"{b[0]}/{b[1]}", "indent": indent,
                               "p_interaction": p_int, "note": note}
        try:
            r = woolf_odds_ratio(a[0], a[1], b[0], b[1], zero_cell_correction="haldane_if_zero")
            row.update({"or": r.odds_ratio, "low": r.ci_low, "high": r.ci_high, "corrected": r.corrected})
        except ImmunoguideError as exc:
            row.update({"or": None, "reason": exc.message})
        return row

    df = pd.DataFrame({
        "responder": [1.0 if (p.primary is not None and p.primary.responder) else 0.0 for p in patients],
        "treated": [1.0 if p.group == "precision" else 0.0 for p in patients],
        "endotype": [p.stratum for p in patients],
        "baseline_sofa": [p.baseline_sofa if p.baseline_sofa is not None else np.nan for p in patients],
        "apache_ii": [_lookup(p.record, "apache_ii") for p in patients],
        "charlson_index": [_lookup(p.record, "charlson_index") for p in patients],
    })
    inter: dict[str, float | None] = {}
    inter_note: dict[str, str] = {}
    for spec in sap.subgroups:
        col = df[spec.column]
        if col.isna().all():
            continue
        try:
            tab = subgroup_interactions(df, "responder", "treated", [spec], zero_cell_correction="haldane_if_zero")
            inter[spec.name] = tab.rows[0].interaction.p_value
        except ImmunoguideError as exc:
            inter[spec.name] = None
            inter_note[spec.name] = f"interaction not estimable ({exc.code})"
    rows = [orow("All analysed", patients, indent=False)]
    rows.append({"header": "Immune stratum"})
    mals = next((s for s in sap.subgroups if s.column == "endotype"), None)
    p_mals = inter.get(mals.name) if mals else None
    rows.append(orow("MALS: anakinra vs placebo", [p for p in patients if p.stratum == "MALS"], p_int=p_mals,
                     note=inter_note.get(mals.name) if mals else None))
    rows.append(orow("SII: rhIFN-γ vs placebo", [p for p in patients if p.stratum == "immunoparalysis"]))
    rows.append({"header": "SAP subgroups (exploratory)"})
    for spec in sap.subgroups:
        if spec.column == "endotype":
            continue
        label = {"apache_ii": "APACHE II", "charlson_index": "Charlson index", "baseline_sofa": "Baseline SOFA"}.get(
            spec.column, spec.column)
        col = df[spec.column]
        if col.isna().all():
            rows.append({"label": f"{label} {_OP_TEXT.get(spec.comparator, spec.comparator)} {spec.value}",
                         "not_collected": True, "indent": True})
            continue
        member = [(_lookup(p.record, spec.column) if spec.column != "baseline_sofa" else p.baseline_sofa) for p in patients]
        inside = [p for p, v in zip(patients, member, strict=True) if v is not None and _cmp(float(v), spec.comparator, float(spec.value))]
        outside = [p for p, v in zip(patients, member, strict=True) if v is not None and not _cmp(float(v), spec.comparator, float(spec.value))]
        rows.append(orow(f"{label} {_OP_TEXT[spec.comparator]} {spec.value:g}", inside, p_int=inter.get(spec.name),
                         note=inter_note.get(spec.name)))
        rows.append(orow(f"{label} {_OP_TEXT[_COMPLEMENT[spec.comparator]]} {spec.value:g}", outside))
    return rows


_OP_TEXT = {">=": "≥", ">": ">", "<=": "≤", "<": "<", "==": "="}
_COMPLEMENT = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "=="}


def _cmp(v: float, op: str, t: float) -> bool:
    return {">=": v >= t, ">": v > t, "<=": v <= t, "<": v < t, "==": v == t}[op]


def _forest_figure(rows: list[dict[str, Any]], fig_dir: Path, figures: dict[str, Path]) -> None:
    n = len(rows)
    fig = _figure(7.4, 0.34 * n + 1.3)
    gs = fig.add_gridspec(1, 3, width_ratios=[2.35, 2.0, 1.25], wspace=0.02, left=0.01, right=0.99, top=0.9,
                          bottom=0.14)
    axl, axp, axr = (fig.add_subplot(gs[0, i]) for i in range(3))
    ys = list(range(n, 0, -1))
    lo_lim, hi_lim = 0.02, 50.0
    for ax in (axl, axr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0.4, n + 0.8)
        ax.axis("off")
    axp.set_ylim(0.4, n + 0.8)
    axp.set_xscale("log")
    axp.set_xlim(lo_lim, hi_lim)
    axp.axvline(1.0, color="#777777", lw=0.8, ls="--")
    axp.set_yticks([])
    for s in ("top", "right", "left"):
        axp.spines[s].set_visible(False)
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = [t for t in (0.05, 0.2, 0.5, 1, 2, 5, 20) if lo_lim <= t <= hi_lim]
    axp.xaxis.set_major_locator(FixedLocator(ticks))
    axp.xaxis.set_minor_locator(NullLocator())
    axp.set_xticklabels([f"{t:g}" for t in ticks])
    axp.set_xlabel("Odds ratio of response, d2–9 (log scale)", fontsize=7.5)
    axp.tick_params(labelsize=7)
    axl.text(0.0, n + 0.75, "Group", fontsize=7.5, fontweight="bold", va="center")
    axl.text(0.72, n + 0.75, "Precision", fontsize=7.5, fontweight="bold", va="center", ha="center")
    axl.text(0.92, n + 0.75, "Placebo", fontsize=7.5, fontweight="bold", va="center", ha="center")
    axr.text(0.02, n + 0.75, "OR (95 % CI)", fontsize=7.5, fontweight="bold", va="center")
    axr.text(0.98, n + 0.75, "P int.", fontsize=7.5, fontweight="bold", va="center", ha="right")
    for y, r in zip(ys, rows, strict=True):
        if "header" in r:
            axl.text(0.0, y, r["header"], fontsize=7.5, fontweight="bold", va="center", color="#333333")
            continue
        axl.text(0.03 if r.get("indent") else 0.0, y, r["label"], fontsize=7.3, va="center")
        if r.get("not_collected"):
            axl.text(0.82, y, "not collected", fontsize=7, va="center", ha="center", color="#888888", style="italic")
            axr.text(0.02, y, "–", fontsize=7.3, va="center")
            continue
        axl.text(0.72, y, r["a"], fontsize=7.3, va="center", ha="center")
        axl.text(0.92, y, r["b"], fontsize=7.3, va="center", ha="center")
        if r.get("or") is None:
            axr.text(0.02, y, "not estimable", fontsize=7, va="center", color="#888888")
            continue
        est, lo, hi = r["or"], r["low"], r["high"]
        c = "#1f5fa8" if not r.get("indent") else "#333333"
        axp.plot([max(lo, lo_lim), min(hi, hi_lim)], [y, y], color=c, lw=1.1)
        if lo < lo_lim:
            axp.annotate("", xy=(lo_lim, y), xytext=(lo_lim * 1.6, y), arrowprops=dict(arrowstyle="-|>", color=c, lw=1))
        if hi > hi_lim:
            axp.annotate("", xy=(hi_lim, y), xytext=(hi_lim / 1.6, y), arrowprops=dict(arrowstyle="-|>", color=c, lw=1))
        if lo_lim <= est <= hi_lim:
            axp.plot([est], [y], marker="D" if not r.get("indent") else "s", color=c, ms=5 if not r.get("indent") else 4)
        star = "*" if r.get("corrected") else ""
        axr.text(0.02, y, f"{est:.2f} ({lo:.2f}–{hi:.2f}){star}", fontsize=7.0, va="center")
        if r.get("p_interaction") is not None:
            axr.text(0.98, y, _fmt_p(r["p_interaction"]), fontsize=7.0, va="center", ha="right")
        elif r.get("note"):
            axr.text(0.98, y, "n.e.", fontsize=7.0, va="center", ha="right", color="#888888")
    axp.text(0.47, n + 0.75, "← favours placebo", transform=axp.get_yaxis_transform(), fontsize=6.6, ha="right",
             va="center", color="#555555")
    axp.text(0.53, n + 0.75, "favours precision →", transform=axp.get_yaxis_transform(), fontsize=6.6, ha="left",
             va="center", color="#555555")
    _save(fig, fig_dir, "forest", figures)


def _km(patients: list[_Patient]) -> tuple[list[float], list[int]]:
    t, e = [], []
    for p in patients:
        if p.death_days is not None and p.death_days <= 90:
            t.append(max(p.death_days, 0.0))
            e.append(1)
        else:
            last = p.last_alive_followup_day if p.last_alive_followup_day is not None else 0
            t.append(float(min(max(last, 0), 90)))
            e.append(0)
    return t, e


def _km_figure(groups: list[tuple[str, str, list[_Patient]]], fig_dir: Path, figures: dict[str, Path]) -> dict[str, Any]:
    fig = _figure(7.0, 4.6)
    ax = fig.add_axes((0.24, 0.34, 0.73, 0.62))
    at = fig.add_axes((0.24, 0.03, 0.73, 0.17))
    at.axis("off")
    at.set_xlim(0, 91)
    at.set_ylim(0, 1)
    ticks = [0, 7, 14, 28, 45, 60, 90]
    stats: dict[str, Any] = {}
    at.text(-3, 1.0, "Number at risk", fontsize=7, fontweight="bold", va="top", ha="right")
    for i, (key, label, ps) in enumerate(groups):
        if not ps:
            continue
        t, e = _km(ps)
        km = kaplan_meier(t, e, label=label)
        x = list(km.timeline)
        ax.step(x, km.survival, where="post", color=_COLORS.get(key, "#333333"), lw=1.5, label=f"{label} (n = {len(ps)})")
        ax.fill_between(x, km.ci_low, km.ci_high, step="post", color=_COLORS.get(key, "#333333"), alpha=0.12, lw=0)
        cens = [ti for ti, ei in zip(t, e, strict=True) if ei == 0 and ti < 90]
        ax.plot(cens, [km.survival_at(c) for c in cens], "|", color=_COLORS.get(key, "#333333"), ms=6)
        y = 0.62 - 0.3 * i
        at.text(-3, y, label, fontsize=6.8, va="center", ha="right", color=_COLORS.get(key, "#333333"))
        for tk in ticks:
            at.text(tk, y, str(sum(1 for ti in t if ti >= tk)), fontsize=6.8, va="center", ha="center")
        stats[key] = {"n": len(ps), "deaths_by_90": int(sum(e)), "survival_28": km.survival_at(28),
                      "survival_90": km.survival_at(90), "median": km.median, "t": t, "e": e}
    ax.set_xlim(0, 91)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ticks)
    ax.set_xlabel("Days from randomisation", fontsize=8)
    ax.set_ylabel("Survival probability", fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.grid(alpha=0.25, lw=0.5)
    ax.legend(fontsize=7.5, loc="lower left", frameon=False)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    _save(fig, fig_dir, "km", figures)
    return stats


def _sofa_traj(groups: list[tuple[str, str, list[_Patient]]], fig_dir: Path, figures: dict[str, Path]) -> list[dict[str, Any]]:
    from scipy import stats as st

    fig = _figure(7.0, 3.6)
    ax = fig.add_axes((0.09, 0.14, 0.88, 0.8))
    table = []
    for i, (key, label, ps) in enumerate(groups):
        xs, ms, los, his = [], [], [], []
        for day in range(1, 16):
            v = [float(r["sofa_total"]) for p in ps for r in p.rows
                 if int(r["day"]) + p.sap_offset == day and _none(r.get("sofa_total")) is not None]
            if not v:
                continue
            m = float(np.mean(v))
            if len(v) > 1:
                half = float(st.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v)))
            else:
                half = float("nan")
            xs.append(day + (i - (len(groups) - 1) / 2) * 0.12)
            ms.append(m)
            los.append(m - half)
            his.append(m + half)
            table.append({"group": label, "day": day, "n": len(v), "mean": m, "low": m - half, "high": m + half})
        c = _COLORS.get(key, "#333333")
        ax.plot(xs, ms, "-o", color=c, ms=3.5, lw=1.4, label=label)
        ax.fill_between(xs, los, his, color=c, alpha=0.14, lw=0)
        ax.errorbar(xs, ms, yerr=[np.array(ms) - np.array(los), np.array(his) - np.array(ms)], fmt="none", ecolor=c,
                    elinewidth=0.7, capsize=1.5, alpha=0.8)
    ax.set_xticks(range(1, 16))
    ax.set_xlim(0.5, 15.5)
    ax.set_xlabel("SAP study day (day 1 = baseline; measured SOFA only; 95 % CI of the mean)", fontsize=8)
    ax.set_ylabel("Mean SOFA (points)", fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.grid(alpha=0.25, lw=0.5)
    ax.legend(fontsize=7.5, frameon=False)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    _save(fig, fig_dir, "sofa_trajectory", figures)
    return table


# ------------------------------------------------------------------------------------------------------------------
# settings, traceability
# ------------------------------------------------------------------------------------------------------------------
def _settings(protocol: Protocol, sap: Sap, data: _Data,
              report_policies: Mapping[str, ReportPolicy] | None = None) -> dict[str, Any]:
    used = protocol.resolve_settings()
    settings = []
    for name, s in protocol.settings.items():
        opt = s.options.get(used[name])
        settings.append({"name": name, "question": s.question, "option": used[name],
                         "option_text": opt.description if opt else "", "confidence": s.confidence,
                         "warning": s.warning, "citation": s.citation, "rationale": s.rationale})
    policies = [{"name": n, "option": p.default, "options": ", ".join(p.options), "source": p.source, "note": p.note}
                for n, p in sap.policies.items()]
    choices = [{"name": n, "value": str(c.value), "confidence": c.confidence, "citation": c.citation, "note": c.note}
               for n, c in protocol.sap.items()]
    endpoints = [{"id": e.id, "name": e.name, "confidence": e.confidence, "citation": e.citation}
                 for e in protocol.endpoints if e.confidence != "confirmed"]
    lists = []
    al = data.tables["allocation_lists"]
    for _, r in al.iterrows():
        meta = _json_col(r.get("meta")) or {}
        # a sealed list keeps its block sizes on the master list only (concealment): say so instead of a blank
        blocks = ", ".join(str(b) for b in meta.get("block_sizes", [])) or "concealed (master list)"
        lists.append({"name": r["name"], "block_sizes": blocks,
                      "block_sizes_source": meta.get("block_sizes_source", ""),
                      "stratification": ", ".join((meta.get("stratification") or {}).get("factors", [])),
                      "source": (meta.get("stratification") or {}).get("source", "")})
    return {"protocol_settings": settings, "sap_policies": policies, "sap_choices": choices,
            "uncertain_endpoints": endpoints,
            "report_policies": [{"name": p.name, "option": p.option, "text": p.text,
                                 "options": ", ".join(p.options) if p.options else p.option,
                                 "overridden": p.option != d.option}
                                for p, d in zip((report_policies or resolve_report_policies()).values(),
                                                REPORT_POLICIES, strict=True)],
            "allocation_lists": lists, "unknown": [s["name"] for s in settings if s["confidence"] == "unknown"]}


def _trace_rows(patients: list[_Patient], unblinded: bool) -> list[dict[str, Any]]:
    rows = []
    for p in patients:
        r = p.primary
        row: dict[str, Any] = {"code": p.code, "stratum": _STRATUM_LABEL.get(p.stratum, p.stratum),
                               "group": _GROUP_LABEL.get(p.group or "", "") if unblinded else None,
                               "died_on_day": p.died_on_day}
        if r is None or not r.evaluable:
            row.update({"evaluable": False, "reason": p.primary_reason or (r.reason if r else ""), "days": [],
                        "baseline": None})
        else:
            row.update({"evaluable": True, "baseline": r.baseline_sofa, "baseline_row": r.baseline_row_id,
                        "days": [{"day": d.day, "sofa": d.sofa, "flag": d.flag, "source_day": d.source_day,
                                  "row": d.source_row_id} for d in r.days],
                        "mean": r.mean_sofa, "delta": r.delta, "responder": r.responder})
        rows.append(row)
    return rows


def _write_trace_csv(path: Path, patients: list[_Patient], unblinded: bool) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "stratum", "group", "endpoint", "evaluable", "reason", "baseline_sofa", "baseline_row",
                    "day", "sofa", "flag", "source_day", "source_row", "mean_sofa", "delta", "responder", "sap",
                    "policies"])
        for p in patients:
            grp = _GROUP_LABEL.get(p.group or "", "") if unblinded else ""
            for key, r, reason in (("d2_9", p.primary, p.primary_reason), ("d2_15", p.d2_15, p.d2_15_reason)):
                if r is None or not r.evaluable:
                    w.writerow([p.code, p.stratum, grp, key, False, reason or "", "", "", "", "", "", "", "", "", "",
                                "", "", ""])
                    continue
                pol = ";".join(f"{k}={v}" for k, v in r.policies.items())
                for d in r.days:
                    w.writerow([p.code, p.stratum, grp, key, True, "", r.baseline_sofa, r.baseline_row_id, d.day,
                                d.sofa, d.flag, d.source_day if d.source_day is not None else "", d.source_row_id or "",
                                f"{r.mean_sofa:.4f}", f"{r.delta:.4f}", r.responder, f"{r.sap_id}@{r.sap_version}", pol])


def _write_patient_csv(path: Path, patients: list[_Patient], unblinded: bool) -> None:
    """One row per analysed patient: every other derived value with the stored rows it came from."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "site", "stratum", "group", "baseline_sofa", "baseline_row", "died_on_day", "death_row",
                    "last_known_alive_day", "last_alive_row", "dead_by_28", "dead_by_90", "infection_d15",
                    "infection_row", "reversal_evaluable", "reversed", "reversal_day", "reversal_rows", "ae_rows",
                    "notes"])
        for p in patients:
            rev = p.reversal
            rev_rows = ";".join(x for x in ([rev.baseline_row_id] if rev is not None and rev.baseline_row_id else [])
                                + [e.row_id for e in (rev.evidence if rev is not None else ()) if e.row_id])

            dead = {h: "" if m is None or not m.evaluable else str(bool(m.dead))
                    for h, m in ((h, p.mort.get(h)) for h in (28, 90))}

            w.writerow([
                p.code, p.site, p.stratum, _GROUP_LABEL.get(p.group or "", "") if unblinded else "",
                "" if p.baseline_sofa is None else p.baseline_sofa,
                p.primary.baseline_row_id if p.primary is not None and p.primary.baseline_row_id else "",
                "" if p.died_on_day is None else p.died_on_day, p.sources.get("death", ""),
                "" if p.last_alive_day is None else p.last_alive_day, p.sources.get("last_alive", ""),
                dead[28], dead[90], p.infection or "", p.sources.get("infection", ""),
                "" if rev is None else rev.evaluable, "" if rev is None or rev.reversed is None else rev.reversed,
                "" if rev is None or rev.reversal_day is None else rev.reversal_day, rev_rows,
                ";".join(f"adverse_events/{int(a['id'])}" for a in p.aes), " | ".join(p.notes),
            ])


# ------------------------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------------------------
def _authorize(actor: Actor, blinded: bool) -> None:
    if not isinstance(actor, Actor):
        raise NotAuthorized(expected="an Actor (user and trial role)", got=type(actor).__name__, where="report",
                            todo="give --user and --role")
    authorize(actor, "export")
    if not blinded and not sees_arms(actor):
        raise NotAuthorized(
            expected="a role that sees arms (dsmb) for the unblinded DSMB report",
            got=actor.describe(), where="permission unblinded report",
            todo="the unblinded report is for the DSMB only; run the blinded report (`immunoguide report`)",
        )


def build_report(
    store_or_export: Any,
    out_dir: str | Path,
    *,
    blinded: bool,
    actor: Actor,
    protocol: str | Protocol = "immunosep-2025",
    now: datetime | None = None,
    sap: Sap | None = None,
    trace_rows_in_pdf: int = 40,
    policies: Mapping[str, str] | None = None,
    signal_rule: str | None = None,
    generated_at: datetime | None = None,
) -> ReportResult:
    """Write the statistical report (HTML and PDF, figures, traceability CSV, summary JSON) to ``out_dir``.

    Parameters
    ----------
    store_or_export : TrialStore, database URL (str with ``://``) or path
        The trial store (read through :func:`immunoguide.trial.export_trial` as ``actor``), or a directory written
        by ``immunoguide trial export``.
    out_dir : path
        Output folder (created).
    blinded : bool
        True: arms pooled (roles statistician, dsmb, administrator). False: the unblinded DSMB report (dsmb).
    actor : Actor
        Who runs the report; checked by the trial's access layer.
    protocol : str or Protocol
        Protocol id (``"immunosep-2025"``, optionally ``@version``).
    now : datetime, optional
        The data cut-off: the time the trial is read at (timezone-aware; default the current UTC time). A demo or
        replay store passes its own clock's time here.
    trace_rows_in_pdf : int
        Patients of the traceability appendix printed in the PDF (the HTML has all of them).
    policies : mapping, optional
        Report policy overrides, name → option (:data:`REPORT_POLICIES`, e.g. ``study_day_numbering``).
    signal_rule : str, optional
        Override the DSMB rule's method for the signals (``newcombe_rd_lower_bound`` or ``bayes_beta_binomial``).
    generated_at : datetime, optional
        When the report is generated (the stamp on every page): default the wall clock, or ``SOURCE_DATE_EPOCH``
        (reproducible builds) when that environment variable is set. Never the data's (possibly simulated) time.

    Returns
    -------
    ReportResult

    Raises
    ------
    NotAuthorized
        Role may not export, or the unblinded report by a role that does not see arms.
    InputError
        Not a store or export; an unblinded report from a blinded export; PDF rendering unavailable.
    """
    _authorize(actor, blinded)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise InputError(expected="a timezone-aware report time", got=now.isoformat(), where="build_report",
                         todo="give now with a UTC offset")
    generated = generated_at or _generation_time()
    pol = resolve_report_policies(policies)
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    sap = sap or load_sap()
    unblinded = not blinded
    data = _open(store_or_export, actor, now, unblinded=unblinded, signal_rule=signal_rule)
    if unblinded and data.manifest.get("blinded", True):
        raise InputError(expected="an unblinded export (written by a dsmb user) for the DSMB report",
                         got="a blinded export (no arms)", where=data.source,
                         todo="export as the DSMB, or run the report on the store")
    if blinded:
        _blind(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    figures: dict[str, Path] = {}
    patients, warnings = _derive(data, proto, sap, unblinded=unblinded, policies=pol)
    c = data.consort
    primary_reasons = _primary_reasons(data, proto, pol["screen_failure_reason"])
    flow = _flow(data, patients, proto, now) if "dose_administrations" not in data.missing_tables else {}
    _consort_figure(c, proto, unblinded, fig_dir, figures, primary=primary_reasons, flow=flow, patients=patients)
    cols = _columns(patients, unblinded)
    groups = ([(k, _GROUP_LABEL[k], ps) for k, _, ps in cols if k != "all"] if unblinded
              else [("all", "All analysed", patients)])
    forest = None
    if unblinded:
        forest = _forest_rows(patients, sap)
        _forest_figure(forest, fig_dir, figures)
    km_stats = _km_figure(groups, fig_dir, figures)
    logrank_res: dict[str, Any] | None = None
    if unblinded and all(km_stats.get(g) for g in ("precision", "placebo")):
        try:
            lr = logrank(km_stats["precision"]["t"], km_stats["precision"]["e"], km_stats["placebo"]["t"],
                         km_stats["placebo"]["e"])
            logrank_res = {"chi2": lr.statistic, "p": lr.p_value}
        except ImmunoguideError as exc:
            logrank_res = {"reason": exc.message}
    traj = _sofa_traj(groups if unblinded else [("all", "All analysed", patients)], fig_dir, figures)

    endpoints = _endpoint_table(patients, sap, unblinded)
    summary = _summary(c, patients, endpoints, proto, sap, unblinded)
    summary["report_policies"] = {n: p.option for n, p in pol.items()}
    if primary_reasons is not None:
        summary["screen_failure_reasons_one_per_patient"] = dict(sorted(primary_reasons[0].items()))
        summary["screen_failures_with_several_reasons"] = primary_reasons[1]
    summary["consort_follow_up"] = _flow_totals(flow, patients, unblinded) if flow else None
    ctx: dict[str, Any] = {
        "blinded": blinded, "generated_at": generated.astimezone(UTC).isoformat(timespec="seconds"),
        "data_as_of": now.isoformat(timespec="seconds"), "actor": actor.describe(),
        "source": data.source, "protocol": proto, "protocol_label": proto.label, "sap": sap,
        "columns": [(k, lab) for k, lab, _ in cols], "consort": c,
        "consort_reasons": [(_criterion_label(proto, k, width=None), v)
                            for k, v in sorted((primary_reasons[0] if primary_reasons else
                                                c.get("screen_failure_reasons", {})).items())],
        "consort_reasons_once": primary_reasons is not None,
        "consort_several": primary_reasons[1] if primary_reasons else None,
        "flow_totals": _flow_totals(flow, patients, unblinded),
        "alerts": data.alerts, "turnaround": data.turnaround,
        "table1": _table1(patients, proto, unblinded), "endpoints": endpoints,
        "table1_columns": [(k, lab) for k, lab, _ in _table1_columns(patients, unblinded)],
        "strata": _stratum_table(patients, sap, unblinded), "infection": _infection(patients, sap, unblinded),
        "mean_sofa": _mean_sofa_row(patients, unblinded), "forest": forest, "km": {k: {kk: vv for kk, vv in v.items()
                                                                                       if kk not in ("t", "e")}
                                                                                   for k, v in km_stats.items()},
        "km_labels": {k: lab for k, lab, _ in groups}, "logrank": logrank_res, "trajectory": traj,
        "safety": _safety(patients, proto, unblinded), "signals": data.signals if unblinded else None,
        "settings": _settings(proto, sap, data, pol), "trace": _trace_rows(patients, unblinded),
        "trace_pdf_rows": trace_rows_in_pdf, "warnings": warnings + [f"{p.code}: {n}" for p in patients for n in p.notes],
        "summary": summary, "figures": {k: _data_uri(v) for k, v in figures.items() if not k.endswith("_png")},
        "arm_labels": {a.code: a.label for a in proto.arms} if unblinded else {},
        "active_arm_labels": [a.label for a in proto.arms if a.role == "active"] if unblinded else [],
        "arm_short": {a.code: _arm_short(proto, a.code) for a in proto.arms} if unblinded else {},
        "regimens": {rid: describe_regimen(r) for rid, r in proto.regimens.items()} if unblinded else {},
    }
    stem = "report" if blinded else "report_dsmb"
    html = _render(ctx)
    html_path, pdf_path = out / f"{stem}.html", out / f"{stem}.pdf"
    html_path.write_text(html, encoding="utf-8")
    pages = _write_pdf(html, pdf_path, out)
    trace_csv = out / ("traceability.csv" if blinded else "traceability_dsmb.csv")
    _write_trace_csv(trace_csv, patients, unblinded)
    _write_patient_csv(out / ("patients.csv" if blinded else "patients_dsmb.csv"), patients, unblinded)
    (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return ReportResult(html_path, pdf_path, blinded, dict(figures), summary, pages, trace_csv)


def _generation_time() -> datetime:
    """The wall-clock time of generation, or ``SOURCE_DATE_EPOCH`` (reproducible builds) when set."""
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), UTC)
        except ValueError:
            raise InputError(expected="SOURCE_DATE_EPOCH as whole seconds since 1970", got=epoch,
                             where="environment", todo="unset it or give an integer") from None
    return datetime.now(UTC)


def _flow_totals(flow: Mapping[str, Mapping[str, Any]], patients: list[_Patient], unblinded: bool) -> list[dict[str, Any]]:
    """Rows of the CONSORT follow-up table (groups, or strata when blinded)."""
    keys = [g for g, _ in GROUPS.values()] if unblinded else ["MALS", "immunoparalysis"]
    rows = []
    for key in keys:
        ps = [p for p in patients if ((p.group or "") if unblinded else p.stratum) == key]
        recs = [flow.get(p.code, {}) for p in ps]
        disc = Counter(r.get("discontinued") for r in recs if r.get("discontinued"))
        rows.append({"label": _GROUP_LABEL.get(key, _STRATUM_LABEL.get(key, key)), "n": len(ps),
                     "received": sum(1 for r in recs if r.get("received")),
                     "not_received": sum(1 for r in recs if not r.get("received")),
                     "discontinued": sum(disc.values()), "died": disc.get("died", 0),
                     "withdrew": disc.get("withdrew", 0), "other": disc.get("other", 0),
                     "lost": sum(1 for r in recs if r.get("lost"))})
    return rows


def _open(src: Any, actor: Actor, now: datetime, *, unblinded: bool, signal_rule: str | None = None) -> _Data:
    from immunoguide.trial.store import TrialStore

    if isinstance(src, TrialStore):
        src.check_schema()
        return _load_store(src, actor, now, unblinded=unblinded, signal_rule=signal_rule)
    if isinstance(src, str) and "://" in src:
        st = TrialStore(src)
        try:
            st.check_schema()
            return _load_store(st, actor, now, unblinded=unblinded, signal_rule=signal_rule)
        finally:
            st.dispose()
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        return _load_export_dir(Path(src))
    raise InputError(expected="a TrialStore, a database URL or a trial export directory", got=str(src)[:120],
                     where="report input", todo="give --db URL (or an export folder)")


def _summary(c: Mapping[str, Any], patients: list[_Patient], endpoints: list[dict[str, Any]], proto: Protocol, sap: Sap,
             unblinded: bool) -> dict[str, Any]:
    primary = next(e for e in endpoints if e["kind"] == "d2_9")
    imputed = Counter(d.flag for p in patients if p.primary is not None for d in p.primary.days)
    s: dict[str, Any] = {
        "blinded": not unblinded, "protocol": proto.label, "sap": f"{sap.id}@{sap.version}",
        "screened": c["screened"], "screen_failures": c["screen_failures"], "pending": c.get("pending", 0),
        "screen_failure_reasons": dict(c.get("screen_failure_reasons", {})),
        "randomised": c["randomised"], "randomised_by_stratum": dict(c.get("randomised_by_stratum", {})),
        "withdrawn_after_randomisation": c.get("withdrawn_after_randomisation", 0),
        "withdrawn_with_data_removal": c.get("withdrawn_with_data_removal", 0),
        "analysed": c["analysed"], "analysed_by_stratum": dict(c.get("analysed_by_stratum", {})),
        "analysed_in_report": len(patients),
        "primary_day_values": {"measured": imputed.get("measured", 0), "locf": imputed.get("locf", 0),
                               "death_24": imputed.get("death_24", 0)},
    }
    cells = primary["cells"]
    if unblinded:
        by_group: Counter[str] = Counter()
        for arm, n in c.get("randomised_by_arm", {}).items():
            by_group[GROUPS[proto.arm(arm).role][0]] += n
        s["randomised_per_arm"] = dict(c.get("randomised_by_arm", {}))
        s["randomised_per_group"] = dict(by_group)
        s["analysed_per_group"] = {g: cells[g]["n"] for g in ("precision", "placebo")}
        cmp = primary["compare"]
        s["primary"] = {
            "endpoint": "d2_9", "label": primary["label"],
            "responders": {g: cells[g]["events"] for g in ("precision", "placebo")},
            "n": {g: cells[g]["n"] for g in ("precision", "placebo")},
            "not_evaluable": {g: cells[g]["not_evaluable"] for g in ("precision", "placebo")},
            "estimable": cmp["estimable"],
        }
        if cmp["estimable"]:
            s["primary"].update({
                "risk_difference": cmp["rd"], "risk_difference_ci": [cmp["rd_low"], cmp["rd_high"]],
                "odds_ratio": cmp["or"], "odds_ratio_ci": [cmp["or_low"], cmp["or_high"]],
                "odds_ratio_zero_cell_corrected": cmp["or_corrected"], "fisher_p": cmp["p"],
                "methods": "Newcombe hybrid score RD; Woolf logit OR (Haldane-Anscombe only if a cell is empty); "
                           "two-sided Fisher exact P",
            })
        else:
            s["primary"]["reason"] = cmp["reason"]
    else:
        s["randomised_per_arm"] = None
        s["primary"] = {"endpoint": "d2_9", "label": primary["label"], "responders": {"all": cells["all"]["events"]},
                        "n": {"all": cells["all"]["n"]}, "not_evaluable": {"all": cells["all"]["not_evaluable"]}}
    return s


def _data_uri(path: Path) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()


def _render(ctx: Mapping[str, Any]) -> str:
    import jinja2

    text = resources.files("immunoguide.analysis").joinpath("templates", "report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["p"] = _fmt_p
    env.filters["ci"] = lambda c, key="rd", pct=True: _fmt_ci(c.get(key), c.get(f"{key}_low"), c.get(f"{key}_high"),
                                                              pct=pct) if c and c.get("estimable") else "–"
    env.filters["num"] = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    return env.from_string(text).render(**ctx)


def _write_pdf(html: str, pdf_path: Path, base: Path) -> int:
    import warnings

    try:
        with warnings.catch_warnings():
            # WeasyPrint 70 announces that libharfbuzz-subset will become required; optional today (stack.md)
            warnings.filterwarnings("ignore", message="HarfBuzz-Subset", category=DeprecationWarning)
            import weasyprint
            import weasyprint.text.ffi  # noqa: F401  (the module that warns, loaded inside the filter)
    except (ImportError, OSError) as exc:  # pragma: no cover - depends on system libraries
        raise InputError(expected="WeasyPrint with the Debian pango libraries (libpango-1.0-0, libpangoft2-1.0-0)",
                         got=str(exc), where="PDF rendering",
                         todo="apt-get install -y libpango-1.0-0 libpangoft2-1.0-0 (see docs stack.md)") from None
    doc = weasyprint.HTML(string=html, base_url=str(base)).render()
    # Fixed metadata and identifier so that the same input renders the same bytes.
    doc.metadata.created = doc.metadata.modified = None
    doc.write_pdf(pdf_path)
    return len(doc.pages)
