"""Print the README's set-up command NAME (`demo` or `test`): the fenced block after `<!-- command:NAME -->`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

name = sys.argv[1]
text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
m = re.search(rf"<!-- command:{name} -->\s*```bash\n(.*?)```", text, re.S)
if not m:
    raise SystemExit(f"README.md has no <!-- command:{name} --> block")
lines = [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
if len(lines) != 1:
    raise SystemExit(f"README command {name} must be exactly one line, found {len(lines)}")
print(lines[0])
