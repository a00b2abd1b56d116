"""The report's tables: endpoints per group or stratum, Table 1, safety, CONSORT counts, forest rows, settings,
traceability and the summary — plain rows for the template, computed from the analysis dataset
(:mod:`immunoguide.analysis.dataset`) with the estimators of :mod:`immunoguide.analysis.estimators`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from immunoguide.analysis.dataset import (
    GROUP_LABEL,
    GROUPS,
    RELATED,
    SAP_ENDOTYPE,
    STRATUM_LABEL,
    AnalysisData,
    Patient,
    baseline_value,
    json_col,
    value_or_none,
)
from immunoguide.analysis.estimators import proportional_odds, subgroup_interactions, two_proportions, woolf_odds_ratio
from immunoguide.analysis.report.fmt import _arm_short, _fmt_np
from immunoguide.analysis.report_policies import REPORT_POLICIES, ReportPolicy, resolve_report_policies
from immunoguide.analysis.sap import Sap
from immunoguide.errors import ImmunoguideError, InputError
from immunoguide.protocols import Protocol


# ------------------------------------------------------------------------------------------------------------------
# statistics per column
# ------------------------------------------------------------------------------------------------------------------
def _columns(patients: list[Patient], unblinded: bool) -> list[tuple[str, str, list[Patient]]]:
    """(key, label, patients) for the table columns: groups (unblinded) or pooled, then by stratum."""
    cols: list[tuple[str, str, list[Patient]]] = []
    if unblinded:
        for g, _ in GROUPS.values():
            cols.append((g, g.capitalize(), [p for p in patients if p.group == g]))
    cols.append(("all", "All analysed", list(patients)))
    return cols


def _binary(patients: list[Patient], kind: str) -> tuple[int, int, int]:
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


def _endpoint_table(patients: list[Patient], sap: Sap, unblinded: bool) -> list[dict[str, Any]]:
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


def _stratum_table(patients: list[Patient], sap: Sap, unblinded: bool) -> list[dict[str, Any]]:
    rows = []
    for stratum in ("MALS", "immunoparalysis"):
        ps = [p for p in patients if p.stratum == stratum]
        for kind in ("d2_9", "d2_15"):
            row: dict[str, Any] = {"stratum": SAP_ENDOTYPE[stratum], "label": _endpoint_label(kind, sap)}
            if unblinded:
                a = _binary([p for p in ps if p.group == "precision"], kind)
                b = _binary([p for p in ps if p.group == "placebo"], kind)
                row.update({"precision": _fmt_np(a[0], a[1]), "placebo": _fmt_np(b[0], b[1]), "compare": _compare(a, b)})
            e, n, _ = _binary(ps, kind)
            row["all"] = _fmt_np(e, n)
            rows.append(row)
    return rows


def _infection(patients: list[Patient], sap: Sap, unblinded: bool) -> dict[str, Any]:
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


def _mean_sofa_row(patients: list[Patient], unblinded: bool) -> dict[str, Any]:
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


def _table1_columns(patients: list[Patient], unblinded: bool) -> list[tuple[str, str, list[Patient]]]:
    """Table 1 columns: the groups and all (unblinded), or each immune stratum and all (blinded: arms pooled)."""
    if unblinded:
        return _columns(patients, unblinded)
    return [(s, STRATUM_LABEL[s], [p for p in patients if p.stratum == s]) for s in ("MALS", "immunoparalysis")] + [
        ("all", "All analysed", list(patients))]


def _table1(patients: list[Patient], protocol: Protocol, unblinded: bool) -> list[dict[str, Any]]:
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
        vals = [baseline_value(p.record, key) for p in patients]
        if all(v is None for v in vals):
            rows.append({"label": label, "cells": {k: "not collected" for k, _, _ in cols}, "muted": True})
        elif key == "mechanical_ventilation":
            cat(label, lambda p, key=key: baseline_value(p.record, key), [(True, "yes"), (False, "no")])
        else:
            cont(f"{label}, median [IQR]", lambda p, key=key: baseline_value(p.record, key), "median")
    return rows



# ------------------------------------------------------------------------------------------------------------------
# safety
# ------------------------------------------------------------------------------------------------------------------
def _safety(patients: list[Patient], protocol: Protocol, unblinded: bool) -> dict[str, Any]:
    cols: list[tuple[str, str, list[Patient]]] = []
    if unblinded:
        for stratum in ("MALS", "immunoparalysis"):
            for g, _ in GROUPS.values():
                ps = [p for p in patients if p.stratum == stratum and p.group == g]
                arms = sorted({p.arm for p in ps if p.arm})
                label = _arm_short(protocol, arms[0]) if arms else f"{SAP_ENDOTYPE[stratum]} {g}"
                cols.append((f"{stratum}:{g}", label, ps))
        for g, _ in GROUPS.values():
            cols.append((g, f"{g.capitalize()}, all", [p for p in patients if p.group == g]))
    else:
        for stratum in ("MALS", "immunoparalysis"):
            cols.append((stratum, STRATUM_LABEL[stratum], [p for p in patients if p.stratum == stratum]))
    cols.append(("all", "All analysed", list(patients)))

    def pts_with(ps: list[Patient], pred: Any) -> str:
        n = sum(1 for p in ps if any(pred(a) for a in p.aes))
        return f"{n}\u00a0({100.0 * n / len(ps):.1f}%)" if ps else "0"

    def events(ps: list[Patient], pred: Any) -> str:
        return str(sum(1 for p in ps for a in p.aes if pred(a)))

    def serious(a: Mapping[str, Any]) -> bool:
        return bool(a["serious"])

    def related(a: Mapping[str, Any]) -> bool:
        return a["relatedness"] in RELATED

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

    def labs_with(ps: list[Patient], term: str, g: int) -> str:
        n = sum(1 for p in ps if any(r["ctcae_term"] == term and value_or_none(r["grade"]) is not None and int(r["grade"]) >= g
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
# CONSORT
# ------------------------------------------------------------------------------------------------------------------
def _primary_reasons(data: AnalysisData, protocol: Protocol, policy: ReportPolicy) -> tuple[dict[str, int], int] | None:
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
        blocking = json_col(r["blocking"]) or []
        if len(blocking) > 1:
            several += 1
        chosen = next((c for c in order if c in blocking), blocking[0] if blocking else "(reason removed)")
        counts[chosen] += 1
    counts["(reason removed)"] += len(failed - seen)
    return {k: v for k, v in counts.items() if v}, several


def _flow(data: AnalysisData, patients: list[Patient], protocol: Protocol, now: datetime) -> dict[str, dict[str, Any]]:
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
        day90 = [r for r in p.rows if int(r["day"]) >= 90 and value_or_none(r.get("vital_status")) is not None]
        if pd.Timestamp(now) > horizon and p.death_days is None and not day90 and p.code not in withdrawn:
            rec["lost"] = True
        out[p.code] = rec
    return out


def _flow_totals(flow: Mapping[str, Mapping[str, Any]], patients: list[Patient], unblinded: bool) -> list[dict[str, Any]]:
    """Rows of the CONSORT follow-up table (groups, or strata when blinded)."""
    keys = [g for g, _ in GROUPS.values()] if unblinded else ["MALS", "immunoparalysis"]
    rows = []
    for key in keys:
        ps = [p for p in patients if ((p.group or "") if unblinded else p.stratum) == key]
        recs = [flow.get(p.code, {}) for p in ps]
        disc = Counter(r.get("discontinued") for r in recs if r.get("discontinued"))
        rows.append({"label": GROUP_LABEL.get(key, STRATUM_LABEL.get(key, key)), "n": len(ps),
                     "received": sum(1 for r in recs if r.get("received")),
                     "not_received": sum(1 for r in recs if not r.get("received")),
                     "discontinued": sum(disc.values()), "died": disc.get("died", 0),
                     "withdrew": disc.get("withdrew", 0), "other": disc.get("other", 0),
                     "lost": sum(1 for r in recs if r.get("lost"))})
    return rows


# ------------------------------------------------------------------------------------------------------------------
# forest plot rows (subgroups)
# ------------------------------------------------------------------------------------------------------------------
def _forest_rows(patients: list[Patient], sap: Sap) -> list[dict[str, Any]]:
    """Rows of the forest plot: overall, per stratum, SAP subgroups (or 'not collected')."""
    def counts(ps: list[Patient]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (_binary([p for p in ps if p.group == "precision"], "d2_9"),
                _binary([p for p in ps if p.group == "placebo"], "d2_9"))

    def orow(label: str, ps: list[Patient], *, indent: bool = True, p_int: float | None = None,
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
        "apache_ii": [baseline_value(p.record, "apache_ii") for p in patients],
        "charlson_index": [baseline_value(p.record, "charlson_index") for p in patients],
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
        member = [(baseline_value(p.record, spec.column) if spec.column != "baseline_sofa" else p.baseline_sofa) for p in patients]
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


# ------------------------------------------------------------------------------------------------------------------
# settings, traceability, summary
# ------------------------------------------------------------------------------------------------------------------
def _settings(protocol: Protocol, sap: Sap, data: AnalysisData,
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
        meta = json_col(r.get("meta")) or {}
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


def _trace_rows(patients: list[Patient], unblinded: bool) -> list[dict[str, Any]]:
    rows = []
    for p in patients:
        r = p.primary
        row: dict[str, Any] = {"code": p.code, "stratum": STRATUM_LABEL.get(p.stratum, p.stratum),
                               "group": GROUP_LABEL.get(p.group or "", "") if unblinded else None,
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


def _summary(c: Mapping[str, Any], patients: list[Patient], endpoints: list[dict[str, Any]], proto: Protocol, sap: Sap,
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
