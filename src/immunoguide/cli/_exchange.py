"""Commands at the standards borders: CDISC exports (``trial export --format adam|sdtm``) and REDCap import/export
(``immunoguide redcap …``). Heavy imports (pandas, pyreadstat) stay inside the functions (CLI start-up is lazy)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any


def cdisc_export(session: Any, out: Path, *, standard: str, actor: Any, now: datetime) -> dict[str, Any]:
    """ADaM or SDTM datasets of the trial as ``actor`` may see them (see :mod:`immunoguide.analysis.cdisc`)."""
    from immunoguide.analysis.cdisc import write_cdisc

    return write_cdisc(session, out, standard=standard, actor=actor, now=now)  # type: ignore[arg-type]
