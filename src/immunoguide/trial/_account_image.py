"""What the audit trail records of an account (``service_users``): the image of a row (not public).

Below both :mod:`immunoguide.trial.audit` (which replays and compares the images) and
:mod:`immunoguide.trial.accounts` (which writes accounts through the audit trail and re-exports these names).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from immunoguide.trial.models import ServiceUser

__all__ = ["ACCOUNT_TABLE", "account_image", "account_images", "users_table"]

ACCOUNT_TABLE = "service_users"
users_table: Table = ServiceUser.__table__  # type: ignore[assignment]


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def account_image(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the audit trail records of an account (a digest of the password hash, never the hash)."""
    return {
        "username": row["username"],
        "role": row["role"],
        "site": row["site"],
        "demo": bool(row["demo"]),
        "active": bool(row["active"]),
        "created_at": _iso(row["created_at"]),
        "password_sha256": hashlib.sha256(str(row["password_hash"]).encode()).hexdigest(),
    }


def account_images(session: Session) -> dict[str, dict[str, Any]]:
    """Every account's image, by user name."""
    rows = session.execute(select(users_table)).mappings().all()
    return {r["username"]: account_image(dict(r)) for r in rows}
