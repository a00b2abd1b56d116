"""The report's figures (matplotlib, object API: no global pyplot state): CONSORT flow, forest plot, Kaplan-Meier
curves and SOFA trajectories, each saved as SVG (text kept as text, reproducible bytes) and PNG."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from immunoguide.analysis.dataset import GROUPS, STRATUM_LABEL, Patient, km_times, value_or_none
from immunoguide.analysis.estimators import kaplan_meier
from immunoguide.analysis.report.fmt import _arm_short, _criterion_label, _fmt_p, _wrap
from immunoguide.protocols import Protocol

_COLORS = {"precision": "#1f5fa8", "placebo": "#c0504d", "all": "#2b6e4f", "MALS": "#7a4fa0",
           "immunoparalysis": "#d08a1c"}


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


def _consort_figure(c: Mapping[str, Any], protocol: Protocol, unblinded: bool, fig_dir: Path,
                    figures: dict[str, Path], *, primary: tuple[dict[str, int], int] | None = None,
                    flow: Mapping[str, Mapping[str, Any]] | None = None,
                    patients: list[Patient] | None = None) -> None:
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
    members: dict[str, list[Patient]] = {}
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
            alloc = [f"Stratum {STRATUM_LABEL[stratum]}", f"randomised n = {strata.get(stratum, 0)}",
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


def _km_figure(groups: list[tuple[str, str, list[Patient]]], fig_dir: Path, figures: dict[str, Path]) -> dict[str, Any]:
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
        t, e = km_times(ps)
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


def _sofa_traj(groups: list[tuple[str, str, list[Patient]]], fig_dir: Path, figures: dict[str, Path]) -> list[dict[str, Any]]:
    from scipy import stats as st

    fig = _figure(7.0, 3.6)
    ax = fig.add_axes((0.09, 0.14, 0.88, 0.8))
    table = []
    for i, (key, label, ps) in enumerate(groups):
        xs, ms, los, his = [], [], [], []
        for day in range(1, 16):
            v = [float(r["sofa_total"]) for p in ps for r in p.rows
                 if int(r["day"]) + p.sap_offset == day and value_or_none(r.get("sofa_total")) is not None]
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
