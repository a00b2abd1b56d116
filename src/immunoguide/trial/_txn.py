"""A value kept for the rest of a store transaction (in ``Session.info``, next to the transaction it belongs to).

The store configuration, the trial start and the arms opened from sealed slots are read many times within one
transaction (a course of doses, a day of follow-up) and cannot change inside it except through the calls that drop
them; the next transaction reads them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

__all__ = ["per_transaction"]

T = TypeVar("T")


def per_transaction(session: Session, key: str, compute: Callable[[], T]) -> T:
    """``compute()``, kept under ``key`` for the rest of the session's current transaction (computed again in the
    next one; not kept outside a transaction). ``session.info.pop(key)`` drops it earlier."""
    txn = session.get_transaction()
    cached: tuple[Any, T] | None = session.info.get(key)
    if cached is not None and cached[0] is txn:
        return cached[1]
    value = compute()
    if txn is not None:
        session.info[key] = (txn, value)
    return value
