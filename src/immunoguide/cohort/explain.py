"""Why an hourly SOFA is what it is, in words a clinician reads (``immunoguide cohort explain``).

Reads a cohort run folder — ``sofa_hourly.parquet``, ``sofa_hourly_evidence.parquet`` (the input behind each
component: :func:`immunoguide.cohort.engine.hourly_evidence_expr`), ``metadata.json`` and the timeline's
``stays.parquet`` — and explains one stay's hour: the total, and per component the points, the value that gave them,
when and where it was charted, in which hour of the 24 h window, and whether the component was missing and imputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from immunoguide.errors import InputError
from immunoguide.rules.sofa import COMPONENTS

__all__ = ["HourExplanation", "explain_hour"]

_NAMES = {
    "respiration": "Respiration", "coagulation": "Coagulation", "liver": "Liver",
    "cardiovascular": "Cardiovascular", "cns": "Central nervous system", "renal": "Renal",
}  # fmt: skip
_WORDS = {
    "pf_ratio_mmhg": "PaO2/FiO2 ratio", "platelets_10e3_per_ul": "platelets", "bilirubin_mg_per_dl": "bilirubin",
    "creatinine_mg_per_dl": "creatinine", "map_mmhg": "mean arterial pressure", "gcs": "Glasgow Coma Scale",
    "urine_output_ml_per_day": "urine output", "dopamine_ug_kg_min": "dopamine", "dobutamine_ug_kg_min": "dobutamine",
    "epinephrine_ug_kg_min": "epinephrine", "norepinephrine_ug_kg_min": "norepinephrine",
}  # fmt: skip
_UNITS = {
    "pf_ratio_mmhg": "mmHg", "platelets_10e3_per_ul": "×10³/µL", "bilirubin_mg_per_dl": "mg/dL",
    "creatinine_mg_per_dl": "mg/dL", "map_mmhg": "mmHg", "gcs": "points", "urine_output_ml_per_day": "mL/day",
}  # fmt: skip


@dataclass(frozen=True)
class HourExplanation:
    """One stay's hour explained: the row, its components and the sentences printed."""

    stay_id: int
    hour_end: datetime
    hours_since_admission: int
    total: int | None
    components: dict[str, int | None]
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The explanation as printed."""
        return "\n".join(self.lines)


def _ts(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t is not None and t == t else "?"


def _num(v: float) -> str:
    if v == int(v):
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def explain_hour(out_dir: str | Path, stay_id: int, hour: str | int) -> HourExplanation:
    """Explain stay ``stay_id`` at ``hour``: an integer (rows since the row holding ICU admission, 0 = that row) or a
    time (the row whose interval holds it). Raises :class:`InputError` naming what is missing."""
    import pandas as pd

    out = Path(out_dir)
    ev_path = out / "sofa_hourly_evidence.parquet"
    for p in (out / "sofa_hourly.parquet", ev_path, out / "timeline" / "stays.parquet"):
        if not p.exists():
            raise InputError(
                expected=f"{p.name} in the cohort run folder", got=f"no {p}", where="cohort explain --out",
                todo="point --out at a folder written by `immunoguide cohort run` (with evidence, the default)",
            )  # fmt: skip
    meta = json.loads((out / "metadata.json").read_text()) if (out / "metadata.json").exists() else {}
    pol = meta.get("sofa_policies", {})
    hourly = pd.read_parquet(out / "sofa_hourly.parquet", filters=[("stay_id", "==", int(stay_id))]).sort_values("hour_end")
    if hourly.empty:
        raise InputError(expected="a stay of the run", got=stay_id, where="cohort explain --stay", todo="pick a stay_id of sofa_hourly.parquet")
    stay = pd.read_parquet(out / "timeline" / "stays.parquet", filters=[("stay_id", "==", int(stay_id))]).iloc[0]
    first = hourly.hour_end.iloc[0]
    if isinstance(hour, int) or str(hour).lstrip("-").isdigit():
        k = int(hour)
        row = hourly[hourly.hour_end == first + timedelta(hours=k)]
    else:
        t = pd.Timestamp(hour)
        row = hourly[(hourly.hour_end - timedelta(hours=1) < t) & (t <= hourly.hour_end)]
        if pol.get("hourly_grid") == "icu_admission_hours":
            row = hourly[(hourly.hour_end - timedelta(hours=1) <= t) & (t < hourly.hour_end)]
        k = int((row.hour_end.iloc[0] - first) // timedelta(hours=1)) if len(row) else -1
    if row.empty:
        raise InputError(
            expected=f"an hour of stay {stay_id}: 0 … {len(hourly) - 1} (hours since ICU admission) or a time between "
            f"{_ts(first - timedelta(hours=1))} and {_ts(hourly.hour_end.iloc[-1])}",
            got=hour, where="cohort explain --hour", todo="pick an hour inside the stay",
        )  # fmt: skip
    r = row.iloc[0]
    ev = pd.read_parquet(ev_path, filters=[("stay_id", "==", int(stay_id))])
    ev = ev[ev.hour_end == r.hour_end].set_index("component")
    grid = "hours since ICU admission" if pol.get("hourly_grid") == "icu_admission_hours" else "clock hours"
    window = "25 rows" if pol.get("rolling_window") == "25_rows" else "24 rows"
    preset = (meta.get("preset") or {}).get("id")
    comps = {c: (None if r[c] != r[c] else int(r[c])) for c in COMPONENTS}
    total = None if r["total"] != r["total"] else int(r["total"])
    lines = [
        f"Stay {stay_id}, hour {k} of the ICU stay (row ending {_ts(r.hour_end)}; admitted {_ts(stay.intime)}).",
        f"Grid: {grid}; worst value of each component over {window}"
        + (f"; preset {preset}." if preset else "; immunoguide defaults unless changed (metadata.json)."),
        "Total SOFA " + ("not computable (a component is missing and not imputed)" if total is None else str(total))
        + " = " + " + ".join(f"{_NAMES[c].lower()} {'–' if comps[c] is None else comps[c]}" for c in COMPONENTS) + ".",
    ]  # fmt: skip
    for c in COMPONENTS:
        e = ev.loc[c] if c in ev.index else None
        pts = comps[c]
        if e is None or e["points"] != e["points"] or e["concept"] is None:
            why = "no value in the window"
            imputed = bool(r.get(f"{c}_imputed", pts == 0))
            rule = pol.get("missing_component", "impute_normal")
            lines.append(f"• {_NAMES[c]} {pts if pts is not None else '–'}: {why}"
                         + (f" — counted as normal (missing_component = {rule})." if pts == 0 or imputed else "."))  # fmt: skip
            continue
        concept = str(e["concept"])
        name = _WORDS.get(concept, concept.replace("_", " "))
        unit = "µg/kg/min" if concept.endswith("_ug_kg_min") else _UNITS.get(concept, "")
        what = f"{name} {_num(float(e['value']))} {unit}".strip()
        when = ""
        if e["value_time"] is not None and e["value_time"] == e["value_time"]:
            verb = "infusion running since" if concept.endswith("_ug_kg_min") else "charted"
            when = f", {verb} {_ts(e['value_time'])}"
        src = f" ({e['source']})" if e["source"] else ""
        hours_before = int((r.hour_end - e["source_hour_end"]) // timedelta(hours=1))
        at = "in this hour" if hours_before == 0 else f"in the row ending {_ts(e['source_hour_end'])}, {hours_before} h before"
        detail = f"; {e['detail']}" if e["detail"] else ""
        if e["detail"] == "sedated":
            detail = f"; assessed under sedation (gcs_when_sedated = {pol.get('gcs_when_sedated', '?')})"
        lines.append(f"• {_NAMES[c]} {pts}: {what}{when}{src}, {at}{detail} (the latest hour of the window that scores {pts}).")
    return HourExplanation(int(stay_id), r.hour_end.to_pydatetime(), k, total, comps, tuple(lines))
