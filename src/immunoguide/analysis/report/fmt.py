"""Formatting helpers of the report (also its Jinja filters) and the labels of criteria and arms.

Examples
--------
>>> _fmt_ci(0.172, 0.068, 0.272, pct=True)
'17.2 (6.8 to 27.2)'
>>> _fmt_p(0.0015), _fmt_p(0.00001), _fmt_p(None)
('0.002', '< 0.001', '–')
"""

from __future__ import annotations

import math

from immunoguide.analysis.dataset import SAP_ENDOTYPE
from immunoguide.errors import ImmunoguideError
from immunoguide.protocols import Protocol


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
    stratum = SAP_ENDOTYPE.get(arm.endotypes[0], arm.endotypes[0]) if arm.endotypes else ""
    return f"{stratum} {' + '.join(drugs) if drugs else 'placebo'}".strip()


def _wrap(text: str, width: int, indent: str = "   ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, subsequent_indent=indent) or [text]
