"""Agreement with a reference implementation on real data, hour by hour, with every difference explained.

:func:`validate_against_ricu` runs each reference preset (:mod:`immunoguide.criteria.presets`) on a MIMIC-III copy
and compares its hourly SOFA (components and total, hours inside the ICU stay) and its Sepsis-3 onsets with what
ricu 0.6.3 output on the same data (``tests/reference/ricu-0.6.3-mimic-iii-demo``; ``SOURCE.md`` there says how
it was made). :func:`validation_markdown` renders ``docs/validation.md``; ``immunoguide docs validation``
regenerates it and a test keeps it from drifting.

How a difference is explained (attribution along a path of choices)
    The ricu preset is the start. Each choice in which another preset differs from it — each SOFA policy in
    :data:`SOFA_PATH` order, then the source profile (how the source is read), then each Sepsis-3 policy in
    :data:`SEPSIS3_PATH` order — is switched one at a time, and the hours (and stays) are compared after every
    switch. A disagreement of the preset is attributed to the switch after which it last began to disagree. Every
    disagreement is thus explained by a named choice, except those already present under the ricu preset itself:
    these are the *residue*, each classified further by what immunoguide refused to read (``data_quality``).

Alignment of hours
    ricu's row ``k`` covers ``[intime + k h, intime + (k + 1) h)``. Rows on hours since admission
    (``hourly_grid = icu_admission_hours``) match exactly; a clock-hour row ``(end − 1 h, end]`` is compared with the
    ricu row holding its midpoint (``end − 30 min``). Only hours with ``0 <= k < length of stay`` are compared, as
    ricu's output also covers hours before and after the stay.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.rules.sofa import COMPONENTS

__all__ = [
    "SEPSIS3_PATH",
    "SOFA_PATH",
    "PresetValidation",
    "RicuReference",
    "validate_against_ricu",
    "validation_markdown",
]

#: ricu's component columns.
RICU_COMPONENTS: Mapping[str, str] = {
    "respiration": "sofa_resp_comp", "coagulation": "sofa_coag_comp", "liver": "sofa_liver_comp",
    "cardiovascular": "sofa_cardio_comp", "cns": "sofa_cns_comp", "renal": "sofa_renal_comp",
}  # fmt: skip
#: Order in which SOFA policies are switched from ricu's choice to the preset's (attribution path).
SOFA_PATH: tuple[str, ...] = (
    "hourly_grid", "rolling_window", "pf_pairing", "fio2_missing", "respiratory_support",
    "pf_below_200_without_support", "gcs_assembly", "gcs_when_sedated", "urine_output_window",
    "vasopressor_min_duration", "zero_rate_infusion", "map_from_sbp_dbp", "dopamine_exactly_5",
    "bilirubin_exactly_12", "creatinine_exactly_5", "missing_component",
)  # fmt: skip
#: Order in which Sepsis-3 policies are switched (after the SOFA policies and the source profile).
SEPSIS3_PATH: tuple[str, ...] = (
    "suspected_infection_pairing", "simultaneous_antibiotic_culture", "sofa_rows_from", "baseline", "si_window",
)  # fmt: skip
_PROFILE_STEP = "source profile"


@dataclass(frozen=True)
class RicuReference:
    """ricu's output on a data set (the files of ``SOURCE.md``)."""

    sofa: pd.DataFrame
    inputs: pd.DataFrame
    susp_inf: pd.DataFrame
    sep3: pd.DataFrame
    directory: str

    @classmethod
    def read(cls, directory: str | Path) -> RicuReference:
        """Read the four reference files of ``directory``."""
        d = Path(directory)
        return cls(
            sofa=pd.read_csv(d / "ricu_sofa_hourly_mimic_demo.csv.gz"),
            inputs=pd.read_csv(d / "ricu_sofa_inputs_hourly_mimic_demo.csv.gz"),
            susp_inf=pd.read_csv(d / "ricu_susp_inf_mimic_demo.csv"),
            sep3=pd.read_csv(d / "ricu_sep3_mimic_demo.csv"),
            directory=str(d),
        )


@dataclass
class Cause:
    """A named choice (or residue class) and the disagreements attributed to it."""

    step: str
    category: str
    explanation: str
    hours: int = 0
    per_component: dict[str, int] = field(default_factory=dict)
    stays_sepsis3: int = 0
    example: str = ""


@dataclass
class PresetValidation:
    """Agreement of one preset with the reference, and the causes of every difference."""

    preset: str
    label: str
    hours: int
    total_equal: int
    within_one: int
    component_equal: dict[str, int]
    sepsis3: dict[str, int]
    causes: list[Cause]
    residue_hours: int
    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    suspected_infection: tuple[int, int, int] | None = None

    def pct(self, n: int) -> float:
        """``n`` as a percentage of the compared hours."""
        return 100.0 * n / self.hours if self.hours else 0.0


# --------------------------------------------------------------------------------------------------------------
# Running the engine for one set of choices
# --------------------------------------------------------------------------------------------------------------


def _convert(data_dir: Path, profile: str, out: Path) -> Path:
    if profile == "ricu":
        from immunoguide.cohort.sources.mimic3_ricu import convert_mimic3_ricu

        convert_mimic3_ricu(data_dir, out)
    else:
        from immunoguide.cohort.sources.mimic3 import convert_mimic3

        convert_mimic3(data_dir, out)
    return out


def _run(con: Any, timeline: Path, sofa: Mapping[str, str], s3: Mapping[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hourly SOFA (every row, with ``first``) and Sepsis-3 for one set of resolved policies."""
    import ibis

    from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr, sepsis3_expr

    tabs = TimelineTables.from_parquet(con, str(timeline))
    allr = hourly_sofa_expr(tabs, policies=sofa, rows_from="all")
    hourly = con.execute(allr)
    t = con.create_table(f"ig_val_{abs(hash((str(timeline), tuple(sorted(sofa.items())))))}", hourly, overwrite=True)
    start = ibis.coalesce(t.first_datum, t.first) if s3["sofa_rows_from"] == "first_sofa_datum" else t.first
    s3rows = t.filter(t.hour_end >= start).select("stay_id", "hour_end", *COMPONENTS, "total", "n_imputed")
    s3df = con.execute(sepsis3_expr(tabs, s3rows, policies=s3))
    return hourly, s3df


def _align(hourly: pd.DataFrame, stays: pd.DataFrame, ref: RicuReference, grid: str) -> pd.DataFrame:
    """ricu's in-stay hours with this run's components (``NaN`` where the run has no row)."""
    st = stays[["stay_id", "intime", "outtime"]].copy()
    st["los_h"] = (st.outtime - st.intime).dt.total_seconds() / 3600
    h = hourly.merge(st[["stay_id", "intime"]], on="stay_id")
    h = h[h.hour_end >= h["first"]]
    mid = h.hour_end - (pd.Timedelta(hours=1) if grid == "icu_admission_hours" else pd.Timedelta(minutes=30))
    h = h.assign(k=np.floor((mid - h.intime).dt.total_seconds() / 3600).astype("int64"))
    h = h.drop_duplicates(["stay_id", "k"], keep="last")
    r = ref.sofa.rename(columns={"icustay_id": "stay_id", "charttime": "k"}).merge(st[["stay_id", "los_h"]], on="stay_id")
    r = r[(r.k >= 0) & (r.k < r.los_h)]
    j = r.merge(h[["stay_id", "k", *COMPONENTS, "total"]], on=["stay_id", "k"], how="left")
    for c, rc in RICU_COMPONENTS.items():
        j[f"eq_{c}"] = j[rc].fillna(0).to_numpy() == j[c].fillna(-1).to_numpy()
    j["eq_total"] = j["sofa"].to_numpy() == j["total"].fillna(-1).to_numpy()
    j["within_one"] = (j["sofa"] - j["total"]).abs() <= 1
    return j.reset_index(drop=True)


def _sepsis3_agreement(s3: pd.DataFrame, stays: pd.DataFrame, ref: RicuReference, grid: str) -> pd.DataFrame:
    """Per stay: ricu onset hour, ours (hour index as ricu counts it), and whether they agree."""
    on = s3[s3.status == "onset"].merge(stays[["stay_id", "intime"]], on="stay_id")
    mid = on.onset_time - (pd.Timedelta(hours=1) if grid == "icu_admission_hours" else pd.Timedelta(minutes=30))
    ours = on.assign(k=np.floor((mid - on.intime).dt.total_seconds() / 3600).astype("int64"))[["stay_id", "k"]]
    theirs = ref.sep3.rename(columns={"icustay_id": "stay_id", "charttime": "k_ricu"})[["stay_id", "k_ricu"]]
    j = stays[["stay_id"]].merge(theirs, on="stay_id", how="left").merge(ours, on="stay_id", how="left")
    j["agree"] = (j.k_ricu.isna() & j.k.isna()) | (j.k_ricu == j.k)
    return j


# --------------------------------------------------------------------------------------------------------------
# Validation with attribution
# --------------------------------------------------------------------------------------------------------------


def validate_against_ricu(
    mimic3_dir: str | Path,
    reference_dir: str | Path,
    presets: Sequence[str] = ("ricu", "immunoguide", "mimic-code"),
    *,
    workdir: str | Path | None = None,
) -> list[PresetValidation]:
    """Compare each preset with ricu's output on ``mimic3_dir`` and attribute every difference (module docstring)."""
    import ibis

    from immunoguide.criteria import load_criteria
    from immunoguide.criteria.presets import load_preset
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    ref = RicuReference.read(reference_dir)
    tmp = tempfile.TemporaryDirectory(prefix="ig-validation-") if workdir is None else None
    work = Path(workdir or tmp.name)  # type: ignore[union-attr]
    con = ibis.duckdb.connect()
    sofa_crit, s3_crit = load_criteria("sofa1"), load_sepsis3_criteria()
    base = load_preset("ricu")
    timelines: dict[str, Path] = {}

    def timeline(profile: str) -> Path:
        if profile not in timelines:
            timelines[profile] = _convert(Path(mimic3_dir), profile, work / f"timeline-{profile}")
        return timelines[profile]

    stays = pd.read_parquet(timeline("ricu") / "stays.parquet")
    out: list[PresetValidation] = []
    for pid in presets:
        p = load_preset(pid)
        steps: list[tuple[str, dict[str, str], dict[str, str], str]] = []
        sofa, s3, prof = dict(base.sofa_policies), dict(base.sepsis3_policies), base.source_profile("mimic3")
        steps.append(("start", dict(sofa), dict(s3), prof))
        for name in SOFA_PATH:
            if p.sofa_policies[name] != sofa[name]:
                sofa[name] = p.sofa_policies[name]
                steps.append((f"sofa1.{name}", dict(sofa), dict(s3), prof))
        if p.source_profile("mimic3") != prof:
            prof = p.source_profile("mimic3")
            steps.append((_PROFILE_STEP, dict(sofa), dict(s3), prof))
        for name in SEPSIS3_PATH:
            if p.sepsis3_policies[name] != s3[name]:
                s3[name] = p.sepsis3_policies[name]
                steps.append((f"sepsis3.{name}", dict(sofa), dict(s3), prof))
        states = []
        for label, so, se, pr in steps:
            rs, r3 = sofa_crit.resolve_policies(so), s3_crit.resolve_policies(se)
            hourly, s3df = _run(con, timeline(pr), rs, r3)
            states.append((label, _align(hourly, stays, ref, rs["hourly_grid"]), _sepsis3_agreement(s3df, stays, ref, rs["hourly_grid"])))
        out.append(_attribute(p, states, timeline(steps[-1][3])))
        if pid == "ricu":
            out[-1].inputs = _inputs_agreement(con, timeline("ricu"), ref, stays)
            out[-1].suspected_infection = _si_agreement(con, timeline("ricu"), ref, s3_crit.resolve_policies(dict(base.sepsis3_policies)))
    if tmp is not None:
        tmp.cleanup()
    return out


def _attribute(p: Any, states: list[tuple[str, pd.DataFrame, pd.DataFrame]], final_timeline: Path) -> PresetValidation:
    """Attribute the final state's disagreements to the step after which each last began (module docstring)."""
    final_h, final_s = states[-1][1], states[-1][2]
    keys = ["total", *COMPONENTS]
    causes: dict[str, Cause] = {}
    # the step index after which each (hour, key) last turned from agree to disagree
    last_turn = {k: np.zeros(len(final_h), dtype=int) for k in keys}
    s3_turn = np.zeros(len(final_s), dtype=int)
    prev_h, prev_s = states[0][1], states[0][2]
    for i, (_label, h, s) in enumerate(states[1:], start=1):
        for k in keys:
            turned = prev_h[f"eq_{k}"].to_numpy() & ~h[f"eq_{k}"].to_numpy()
            last_turn[k][turned] = i
        s3_turn[prev_s["agree"].to_numpy() & ~s["agree"].to_numpy()] = i
        prev_h, prev_s = h, s
    residue_mask = ~states[0][1]["eq_total"].to_numpy() & ~final_h["eq_total"].to_numpy()
    for i, (label, _h, _s) in enumerate(states):
        if i == 0:
            cat, expl = "residue", "disagrees already under the ricu preset"
        else:
            cat, expl = _explain(label, p)
        c = Cause(step=label, category=cat, explanation=expl)
        dis_total = ~final_h["eq_total"].to_numpy() & (last_turn["total"] == i)
        if i == 0:
            dis_total = residue_mask
        c.hours = int(dis_total.sum())
        for k in COMPONENTS:
            mask = ~final_h[f"eq_{k}"].to_numpy() & (last_turn[k] == i)
            if i == 0:
                mask = ~states[0][1][f"eq_{k}"].to_numpy() & ~final_h[f"eq_{k}"].to_numpy()
            c.per_component[k] = int(mask.sum())
        s_mask = ~final_s["agree"].to_numpy() & (s3_turn == i)
        if i == 0:
            s_mask = ~states[0][2]["agree"].to_numpy() & ~final_s["agree"].to_numpy()
        c.stays_sepsis3 = int(s_mask.sum())
        rows = final_h[dis_total]
        if len(rows):
            r = rows.iloc[0]
            c.example = (
                f"stay {int(r.stay_id)}, hour {int(r.k)}: ricu {int(r.sofa)} "
                f"({', '.join(f'{k[:4]} {int(r[v]) if pd.notna(r[v]) else 0}' for k, v in RICU_COMPONENTS.items())}), "
                f"ours {int(r.total) if pd.notna(r.total) else '-'} "
                f"({', '.join(f'{k[:4]} {int(r[k]) if pd.notna(r[k]) else 0}' for k in COMPONENTS)})"
            )
        elif s_mask.any():
            srow = final_s[s_mask].iloc[0]
            c.example = f"stay {int(srow.stay_id)}: ricu onset {_fmt(srow.k_ricu)}, ours {_fmt(srow.k)}"
        if c.hours or c.stays_sepsis3 or any(c.per_component.values()):
            causes[label] = c
    s = final_s
    on_ricu, on_ours = s.k_ricu.notna(), s.k.notna()
    return PresetValidation(
        preset=p.id,
        label=p.label,
        hours=len(final_h),
        total_equal=int(final_h["eq_total"].sum()),
        within_one=int(final_h["within_one"].sum()),
        component_equal={k: int(final_h[f"eq_{k}"].sum()) for k in COMPONENTS},
        sepsis3={
            "ricu_onsets": int(on_ricu.sum()),
            "our_onsets": int(on_ours.sum()),
            "both": int((on_ricu & on_ours).sum()),
            "same_hour": int((on_ricu & on_ours & (s.k == s.k_ricu)).sum()),
            "agree": int(s["agree"].sum()),
            "stays": len(s),
        },
        causes=list(causes.values()),
        residue_hours=int(residue_mask.sum()),
    )


def _fmt(x: Any) -> str:
    return "none" if pd.isna(x) else str(int(x))


def _explain(label: str, p: Any) -> tuple[str, str]:
    """Category and wording of an attribution step."""
    from immunoguide.criteria import load_criteria
    from immunoguide.criteria.presets import load_preset
    from immunoguide.rules.sepsis3 import load_sepsis3_criteria

    if label == _PROFILE_STEP:
        ours = p.source_profile("mimic3")
        return (
            "data the reference reads differently",
            f"MIMIC-III read with the {ours!r} source profile instead of ricu's (items, bounds, attachment to the stay, "
            "rate units, ventilation and antibiotic definitions: cohort/sources/mimic3_items.toml vs ricu_items.toml)",
        )
    scope, name = label.split(".", 1)
    spec = (load_criteria("sofa1") if scope == "sofa1" else load_sepsis3_criteria()).policies[name]
    mine = (p.sofa_policies if scope == "sofa1" else p.sepsis3_policies)[name]
    theirs = (load_preset("ricu").sofa_policies if scope == "sofa1" else load_preset("ricu").sepsis3_policies)[name]
    return "documented choice", f"`{name}` = `{mine}` ({spec.options[mine]}) instead of ricu's `{theirs}`"


def _inputs_agreement(con: Any, timeline: Path, ref: RicuReference, stays: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Hourly inputs of the ricu profile's timeline against ricu's input file (same aggregation as that file)."""
    from immunoguide.cohort.engine import TimelineTables, hour_inputs_expr
    from immunoguide.criteria.presets import load_preset
    from immunoguide.rules.hourly import Grid

    obs = pd.read_parquet(timeline / "observations.parquet").merge(stays[["stay_id", "intime"]], on="stay_id")
    obs["k"] = np.floor((obs.time - obs.intime).dt.total_seconds() / 3600).astype("int64")
    los = stays.assign(los_h=(stays.outtime - stays.intime).dt.total_seconds() / 3600)[["stay_id", "los_h"]]
    r = ref.inputs.rename(columns={"icustay_id": "stay_id", "charttime": "k"}).merge(los, on="stay_id")
    r = r[(r.k >= 0) & (r.k < r.los_h)].drop(columns="los_h")  # the hours compared for SOFA: inside the stay
    out: dict[str, tuple[int, int]] = {}
    # ricu loads these concepts on their own with its default aggregation (the median of the hour)
    for col, concept in (("plt", "platelets_10e3_per_ul"), ("bili", "bilirubin_mg_per_dl"),
                         ("crea", "creatinine_mg_per_dl"), ("map", "map_mmhg")):  # fmt: skip
        ours = obs[obs.concept == concept].groupby(["stay_id", "k"]).value.median().rename("ours").reset_index()
        out[col] = _match(r[["stay_id", "k", col]].dropna(), ours, col, los)
    tabs = TimelineTables.from_parquet(con, str(timeline))
    res = dict(load_preset("ricu").sofa_policies)
    from immunoguide.criteria import load_criteria

    hi = con.execute(hour_inputs_expr(tabs, policies=load_criteria("sofa1").resolve_policies(res), urine_windows_h=(SOFA_DEFINITIONS.ricu_window_rows,)))
    hi = hi.merge(stays[["stay_id", "intime"]], on="stay_id")
    hi["k"] = np.round((hi.hour_end - hi.intime).dt.total_seconds() / 3600).astype("int64") - 1
    pf = hi[hi.pf.notna()].assign(ours=lambda d: d.pf)[["stay_id", "k", "ours"]]
    out["pafi"] = _match(r[["stay_id", "k", "pafi"]].dropna(), pf, "pafi", los, tol=1e-4)
    g = hi[hi.gcs_any.notna()].assign(ours=lambda d: np.where(d.gcs_sed.notna() & d.gcs_unsed.isna(), float(SOFA_DEFINITIONS.normal_gcs), d.gcs_unsed))
    out["gcs"] = _match(r[["stay_id", "k", "gcs"]].dropna(), g[["stay_id", "k", "ours"]], "gcs", los)
    vent = pd.read_parquet(timeline / "ventilation.parquet").merge(stays[["stay_id", "intime"]], on="stay_id")
    rows: set[tuple[int, int]] = set()
    for v in vent.itertuples(index=False):
        grid = Grid("icu_admission_hours", v.intime.to_pydatetime())
        a, b = grid.index(grid.row_end(v.start.to_pydatetime())), grid.index(grid.row_end(v.stop.to_pydatetime()))
        rows.update((int(v.stay_id), k) for k in range(a, b + 1))
    ours_v = pd.DataFrame(sorted(rows), columns=["stay_id", "k"]).assign(ours=1.0)
    rv = r[["stay_id", "k", "vent_ind"]].dropna().assign(vent_ind=1.0)
    out["vent_ind"] = _match(rv, ours_v, "vent_ind", los)
    return out


def _match(theirs: pd.DataFrame, ours: pd.DataFrame, col: str, los: pd.DataFrame, tol: float = 1e-6) -> tuple[int, int]:
    """(hours equal, hours in either) of one input concept, over the hours inside the stay."""
    ours = ours.merge(los, on="stay_id")
    ours = ours[(ours.k >= 0) & (ours.k < ours.los_h)].drop(columns="los_h")
    j = theirs.merge(ours, on=["stay_id", "k"], how="outer")
    eq = (j[col] - j["ours"]).abs() <= tol * np.maximum(1.0, j[col].abs())
    return int(eq.sum()), len(j)


def _si_agreement(con: Any, timeline: Path, ref: RicuReference, s3: Mapping[str, str]) -> tuple[int, int, int]:
    """(ricu suspected infections, ours, equal in hour, sample hour and antibiotic hour)."""
    from immunoguide.cohort.engine import TimelineTables, suspected_infection_expr

    tabs = TimelineTables.from_parquet(con, str(timeline))
    si = con.execute(suspected_infection_expr(tabs, policies=s3))
    st = pd.read_parquet(timeline / "stays.parquet")[["stay_id", "intime"]]
    si = si.merge(st, on="stay_id")
    for c in ("si_time", "antibiotic_time", "culture_time"):
        si[c + "_k"] = np.floor((si[c] - si.intime).dt.total_seconds() / 3600).astype("int64")
    r = ref.susp_inf.rename(columns={"icustay_id": "stay_id", "chartdate": "si_time_k"})
    j = r.merge(si, on=["stay_id", "si_time_k"], how="inner")
    same = int(((j.samp_time == j.culture_time_k) & (j.abx_time == j.antibiotic_time_k)).sum())
    return len(r), len(si), same


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------


def validation_markdown(results: Sequence[PresetValidation], *, data: str, reference: str) -> str:
    """``docs/validation.md`` from :func:`validate_against_ricu` results."""
    n = results[0].hours if results else 0
    out = [
        "# Validation against ricu 0.6.3 on the MIMIC-III demo",
        "",
        "Generated by `immunoguide docs validation --mimic3 ../shared/data/mimic-iii-demo --reference "
        "tests/reference/ricu-0.6.3-mimic-iii-demo` (do not edit by hand; `tests/test_validation.py` regenerates it "
        "and compares). Method: `immunoguide.cohort.validation` (module docstring).",
        "",
        f"* Data: {data} (MIMIC-III Clinical Database Demo v1.4, ODbL; 136 ICU stays).",
        f"* Reference: {reference} — ricu 0.6.3's own output on the same data (eth-mds/ricu @ c0efac7).",
        f"* Compared: the {n:,} hours inside the ICU stays (ricu row `k`, `0 <= k < length of stay`), each SOFA "
        "component and the total; Sepsis-3 onset (stay and hour) for the 136 stays.",
        "",
        "## Agreement per preset",
        "",
        "| preset | total SOFA equal | within 1 point | " + " | ".join(COMPONENTS) + " | Sepsis-3 onsets (ours / ricu / both) | same onset hour | stays agreeing |",
        "|---|---:|---:|" + "---:|" * len(COMPONENTS) + "---:|---:|---:|",
    ]
    for r in results:
        s = r.sepsis3
        comps = " | ".join(f"{r.pct(r.component_equal[c]):.2f} %" for c in COMPONENTS)
        out.append(
            f"| `{r.preset}` | {r.total_equal:,} ({r.pct(r.total_equal):.2f} %) | {r.pct(r.within_one):.2f} % | {comps} | "
            f"{s['our_onsets']} / {s['ricu_onsets']} / {s['both']} | {s['same_hour']} of {s['both']} | {s['agree']} of {s['stays']} |"
        )
    out.append("")
    for r in results:
        out += [f"## `{r.preset}` (`{r.label}`)", ""]
        if r.inputs:
            out += ["Inputs first (ricu's hourly input file: `plt`, `bili`, `crea`, `map` as ricu loads them alone — "
                    "the median of the hour —; `pafi`, `gcs` and `vent_ind` as SOFA reads them):", "",
                    "| input | hours equal | hours in either |", "|---|---:|---:|"]  # fmt: skip
            for name, (eq, tot) in r.inputs.items():
                out.append(f"| `{name}` | {eq:,} | {tot:,} |")
            out.append("")
        if r.suspected_infection is not None:
            n_r, n_o, same = r.suspected_infection
            out += [f"Suspected infections: ricu {n_r}, ours {n_o}; same hour, sample hour and antibiotic hour: {same}.", ""]
        if r.preset == "ricu":
            from immunoguide.criteria.presets import load_preset

            p = load_preset("ricu")
            out += ["Reference quirks this preset reproduces (named in `criteria/presets/ricu.toml`):", ""]
            out += [f"* {q['name']} — {q['where']} ({q['citation']})." for q in p.quirks]
            out += ["", "Known differences kept:", ""]
            out += [f"* {d['name']}: ours — {d['ours']}; ricu — {d['theirs']}." for d in p.differences]
            out.append("")
        if not r.causes:
            out += ["Every compared hour and every stay's Sepsis-3 onset agree: nothing to explain.", ""]
            continue
        out += [
            f"{r.hours - r.total_equal:,} hours differ in the total; each is explained by the choice after which it "
            f"last began to differ (unexplained residue: {r.residue_hours} hours, {r.pct(r.residue_hours):.2f} %).",
            "",
            "| cause | kind | hours (total) | " + " | ".join(COMPONENTS) + " | Sepsis-3 stays | example |",
            "|---|---|---:|" + "---:|" * len(COMPONENTS) + "---:|---|",
        ]
        for c in r.causes:
            comps = " | ".join(str(c.per_component.get(k, 0)) for k in COMPONENTS)
            out.append(
                f"| {c.explanation.replace('|', '/')} | {c.category} | {c.hours:,} | {comps} | {c.stays_sepsis3} | {c.example} |"
            )
        out.append("")
    return "\n".join(out) + "\n"
