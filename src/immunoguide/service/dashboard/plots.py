"""The dashboard's plots as inline SVG (matplotlib, object API, one figure at a time): SOFA trajectory by
component, biomarker timeline with the protocol's cut-offs, recruitment by month and site."""

from __future__ import annotations

import io
import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup

from immunoguide.protocols import Protocol

#: Display names of the biomarker concepts (presentation only; thresholds come from the protocol).
_CONCEPT_NAMES = {"ferritin_ng_per_ml": "Ferritin", "hla_dr_per_monocyte": "mHLA-DR"}
#: SOFA components in the order they are stacked.
_SOFA_COMPONENTS = ("respiration", "coagulation", "liver", "cardiovascular", "cns", "renal")
_SOFA_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2")
_PLOT_LOCK = threading.Lock()
_CMP = {"<=": "≤", ">=": "≥"}


def _svg(fig: Any, salt: str) -> Markup:
    """A matplotlib figure as an inline ``<svg>`` element (text kept as text, ids unique per ``salt``)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "immunoguide"})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib numbers its element ids per figure (figure_1, axes_1 …): prefix them so that several inline SVGs
    # on one page keep unique ids and their references (clip paths, markers) resolve inside their own SVG
    text = re.sub(r'(\sid=")', rf"\g<1>{salt}-", text)
    text = text.replace("url(#", f"url(#{salt}-").replace('href="#', f'href="#{salt}-')
    return Markup(text.replace("<svg ", '<svg role="img" focusable="false" ', 1))


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _style_axes(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.tick_params(labelsize=8)


def sofa_plot(days: list[Mapping[str, Any]], *, salt: str = "sofa") -> Markup | None:
    """SOFA trajectory over study days: components stacked (days entered as inputs) and the total of every
    recorded day (entered totals included). None when no SOFA is recorded.

    Parameters
    ----------
    days : list of dict
        ``followup_view(...)["days"]`` (``day``, ``sofa_total``, ``sofa_components``).
    """
    scored = [d for d in days if d.get("sofa_total") is not None]
    if not scored:
        return None
    with _PLOT_LOCK:
        fig = _figure(10.0, 3.4)
        ax = fig.add_subplot()
        comp_days = [d for d in scored if d.get("sofa_components")]
        if comp_days:
            xs = [d["day"] for d in comp_days]
            ys = [[(d["sofa_components"] or {}).get(c) or 0 for d in comp_days] for c in _SOFA_COMPONENTS]
            ax.stackplot(xs, ys, labels=[c.capitalize() if c != "cns" else "CNS" for c in _SOFA_COMPONENTS],
                         colors=_SOFA_COLOURS, alpha=0.85, step=None)
        ax.plot([d["day"] for d in scored], [d["sofa_total"] for d in scored], color="#222222", marker="o",
                markersize=4, linewidth=1.4, label="Total SOFA")
        for d in scored:
            ax.annotate(str(d["sofa_total"]), (d["day"], d["sofa_total"]), textcoords="offset points",
                        xytext=(0, 5), ha="center", fontsize=7)
        top = max(d["sofa_total"] for d in scored)
        ax.set_ylim(0, min(24, max(6, top + 3)))
        lo, hi = min(d["day"] for d in scored), max(d["day"] for d in scored)
        ax.set_xlim(lo - 0.5, max(hi + 0.5, lo + 2))
        ax.set_xlabel("Study day (day 0 = first 24 h after randomisation)", fontsize=8)
        ax.set_ylabel("SOFA points", fontsize=8)
        ax.set_title("SOFA trajectory by component", fontsize=9, loc="left")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style_axes(ax)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _svg(fig, salt)


def _cutoffs(proto: Protocol) -> dict[str, list[tuple[float, str, str]]]:
    """Concept → [(threshold, unit, label)] from the protocol's classification and reversal rules."""
    spec = proto.classification
    found: dict[str, dict[float, tuple[str, list[str]]]] = defaultdict(dict)
    if spec is None:
        return {}
    for rule in spec.endotypes:
        for c in rule.all_of:
            found[c.concept].setdefault(c.threshold, (c.unit, []))[1].append(
                f"{rule.name} if {_CMP.get(c.comparator, c.comparator)}")
    for rev in spec.reversals:
        for c in rev.all_of:
            found[c.concept].setdefault(c.threshold, (c.unit, []))[1].append(
                f"{rev.endotype} reversal if {_CMP.get(c.comparator, c.comparator)}")
    return {concept: [(t, unit, f"{t:g} {unit}: " + "; ".join(names)) for t, (unit, names) in sorted(ts.items())]
            for concept, ts in found.items()}


def biomarker_plot(labs: list[Mapping[str, Any]], proto: Protocol, anchor: datetime, anchor_name: str, *,
                   salt: str = "bio") -> Markup | None:
    """Ferritin and mHLA-DR over time (days from ``anchor``) with the protocol's cut-offs as labelled lines.

    A censored result (``<2000``, ``>15000``) is drawn at its bound with a triangle pointing to the open side.
    None when there is no result.
    """
    cut = _cutoffs(proto)
    concepts = [c for c in _CONCEPT_NAMES if c in cut or any(r["concept"] == c for r in labs)]
    if not labs or not concepts:
        return None
    with _PLOT_LOCK:
        fig = _figure(10.0, 1.0 + 2.0 * len(concepts))
        axes = fig.subplots(len(concepts), 1, sharex=True, squeeze=False)[:, 0]
        xs_all: list[float] = []
        for ax, concept in zip(axes, concepts, strict=True):
            rows = sorted((r for r in labs if r["concept"] == concept and r["sample_time"] is not None),
                          key=lambda r: r["sample_time"])
            pts = []
            for r in rows:
                x = (r["sample_time"] - anchor) / timedelta(days=1)
                if r["lower"] is not None and r["upper"] is not None:
                    pts.append((x, (r["lower"] + r["upper"]) / 2, "o"))
                elif r["upper"] is not None:
                    pts.append((x, r["upper"], "v"))
                else:
                    pts.append((x, r["lower"], "^"))
            xs_all.extend(p[0] for p in pts)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#1f4e79", linewidth=1.2)
                for marker in ("o", "v", "^"):
                    sel = [p for p in pts if p[2] == marker]
                    if sel:
                        ax.plot([p[0] for p in sel], [p[1] for p in sel], linestyle="none", marker=marker,
                                color="#1f4e79", markersize=5)
            unit = "ng/mL" if concept == "ferritin_ng_per_ml" else "AB/c"
            values = [p[1] for p in pts]
            for i, (t, u, label) in enumerate(cut.get(concept, [])):
                unit = u
                values.append(t)
                colour = ("#c0392b", "#8e44ad", "#d35400")[i % 3]
                ax.axhline(t, color=colour, linestyle="--", linewidth=1.1, label=label.replace(": ", "\n", 1)
                           .replace("; ", "\n"))
            if values:
                ax.set_ylim(0, max(values) * 1.25)
            ax.set_ylabel(f"{_CONCEPT_NAMES[concept]} ({unit})", fontsize=8)
            if not pts:
                ax.text(0.5, 0.5, "no result yet", transform=ax.transAxes, ha="center", fontsize=8, color="#777777")
            _style_axes(ax)
            if cut.get(concept):
                ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=2.2,
                          title="cut-offs", title_fontsize=7.5, alignment="left")
        if xs_all:
            lo, hi = min(xs_all), max(xs_all)
            pad = max(0.3, (hi - lo) * 0.08)
            axes[-1].set_xlim(min(lo - pad, -0.2), max(hi + pad, 1.0))
        axes[-1].set_xlabel(f"Days from {anchor_name}", fontsize=8)
        axes[0].set_title("Biomarker timeline with the protocol's cut-offs", fontsize=9, loc="left")
        return _svg(fig, salt)


def recruitment_plot(table: list[dict[str, Any]], sites: list[str], *, salt: str = "recruit") -> Markup | None:
    """Randomised patients per month, stacked by site (screened patients as an outline bar)."""
    if not table:
        return None
    with _PLOT_LOCK:
        fig = _figure(6.4, 3.0)
        ax = fig.add_subplot()
        months = [r["month"] for r in table]
        x = list(range(len(months)))
        ax.bar(x, [r["screened"] for r in table], width=0.7, fill=False, edgecolor="#888888", label="Screened")
        bottom = [0] * len(months)
        for i, site in enumerate(sites):
            vals = [r["randomised_by_site"].get(site, 0) for r in table]
            ax.bar(x, vals, width=0.5, bottom=bottom, color=_SOFA_COLOURS[i % len(_SOFA_COLOURS)],
                   label=f"Randomised {site}")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        step = max(1, -(-len(months) // 8))  # at most ~8 month labels, so they never overlap
        ax.set_xticks(x[::step], months[::step])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(-0.75, max(len(months), 4) - 0.25)  # keep bars narrow while there are few months
        ax.set_ylim(0, max(r["screened"] for r in table) * 1.15 + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("Patients", fontsize=8)
        ax.set_title("Recruitment by month and site", fontsize=9, loc="left")
        _style_axes(ax)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _svg(fig, salt)
