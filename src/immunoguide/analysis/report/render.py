"""Rendering the report: the HTML (Jinja2 template ``analysis/templates/report.html.j2``, figures embedded), the PDF
of the same HTML (WeasyPrint) and the traceability and per-patient CSV files."""

from __future__ import annotations

import base64
import csv
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from immunoguide.analysis.dataset import GROUP_LABEL, Patient
from immunoguide.analysis.report.fmt import _fmt_ci, _fmt_p
from immunoguide.errors import InputError


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


def _weasyprint() -> Any:
    """The WeasyPrint module (imported with its HarfBuzz-Subset warning silenced), or InputError when it cannot load."""
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
    return weasyprint


def _write_pdf(html: str, pdf_path: Path, base: Path) -> int:
    doc = _weasyprint().HTML(string=html, base_url=str(base)).render()
    # Fixed metadata and identifier so that the same input renders the same bytes.
    doc.metadata.created = doc.metadata.modified = None
    doc.write_pdf(pdf_path)
    return len(doc.pages)


def _write_trace_csv(path: Path, patients: list[Patient], unblinded: bool) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "stratum", "group", "endpoint", "evaluable", "reason", "baseline_sofa", "baseline_row",
                    "day", "sofa", "flag", "source_day", "source_row", "mean_sofa", "delta", "responder", "sap",
                    "policies"])
        for p in patients:
            grp = GROUP_LABEL.get(p.group or "", "") if unblinded else ""
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


def _write_patient_csv(path: Path, patients: list[Patient], unblinded: bool) -> None:
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
                p.code, p.site, p.stratum, GROUP_LABEL.get(p.group or "", "") if unblinded else "",
                "" if p.baseline_sofa is None else p.baseline_sofa,
                p.primary.baseline_row_id if p.primary is not None and p.primary.baseline_row_id else "",
                "" if p.died_on_day is None else p.died_on_day, p.sources.get("death", ""),
                "" if p.last_alive_day is None else p.last_alive_day, p.sources.get("last_alive", ""),
                dead[28], dead[90], p.infection or "", p.sources.get("infection", ""),
                "" if rev is None else rev.evaluable, "" if rev is None or rev.reversed is None else rev.reversed,
                "" if rev is None or rev.reversal_day is None else rev.reversal_day, rev_rows,
                ";".join(f"adverse_events/{int(a['id'])}" for a in p.aes), " | ".join(p.notes),
            ])
