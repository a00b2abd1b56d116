"""The dashboard's Jinja2 environment (templates in ``service/templates``), its filters and the HTML response with
the security headers every page carries."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi.responses import HTMLResponse

PREFIX = "/dashboard"
DEFAULT_PROTOCOL = "immunosep-2025"
_DOSE_STATUS_TEXT = {"on_time": "given", "early": "given early", "late": "given late", "missed": "missed",
                     "pending": "pending"}


def _fmt_time(value: Any) -> str:
    """ISO time (or datetime) → ``2025-03-03 10:00 UTC``; None → an em dash."""
    if value is None or value == "":
        return "—"
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        return t.strftime("%Y-%m-%d %H:%M")
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_hm(value: Any) -> str:
    """ISO time → ``14:30`` (UTC)."""
    return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%H:%M")


def _fmt_eligible(value: Any) -> str:
    return {True: "eligible", False: "not eligible"}.get(value, "undetermined")


def _fmt_num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("immunoguide.service", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = _fmt_time
    env.filters["hm"] = _fmt_hm
    env.filters["eligible"] = _fmt_eligible
    env.filters["num"] = _fmt_num
    env.filters["seg"] = lambda s: quote(str(s), safe="")
    env.globals["prefix"] = PREFIX
    env.globals["dose_status_text"] = _DOSE_STATUS_TEXT
    return env


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _env().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)
