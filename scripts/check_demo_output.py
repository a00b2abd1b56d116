"""Check a finished `immunoguide demo`: report + plots exist, and the printed summary matches the report."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

out, printed = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
for rel in ("report/report.html", "report/report.pdf", "report_dsmb/report_dsmb.html", "report_dsmb/report_dsmb.pdf"):
    f = out / rel
    if not f.exists() or f.stat().st_size < 10_000:
        raise SystemExit(f"missing or empty {f}")
expected = {"report": ("consort", "km", "sofa_trajectory"), "report_dsmb": ("consort", "forest", "km", "sofa_trajectory")}
figs = []
for folder, names in expected.items():
    for name in names:
        f = out / folder / "figures" / f"{name}.png"
        if not f.exists() or f.stat().st_size < 2_000:
            raise SystemExit(f"missing plot {f}")
        figs.append(f)
rep = json.loads((out / "report_dsmb" / "report_dsmb_summary.json").read_text())["primary"]
for arm in ("precision", "placebo"):
    want = f"{rep['responders'][arm]}/{rep['n'][arm]}"
    if not re.search(rf"responders, {arm}\s*[│|]\s*{re.escape(want)}", printed):
        raise SystemExit(f"printed summary does not show {arm} responders {want} of the report")
print(f"newcomer check passed: {len(figs)} plots; primary {rep['responders']} of {rep['n']} as printed")
