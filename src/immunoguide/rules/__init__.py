"""Pure clinical rules: typed inputs in, frozen results out; no files, clocks, databases or randomness.

Each rule that reads a criteria file implements the policies (and options) listed for it in
:mod:`immunoguide.criteria.implemented` and re-exports that table as ``IMPLEMENTED_POLICIES``; the criteria loader
checks every file against the same table.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["implemented_policies"]


def implemented_policies(rule: str) -> Mapping[str, frozenset[str]] | None:
    """The policies and options the rule ``rule`` implements (None for a rule without a registry).

    >>> sorted(implemented_policies("sepsis3"))[:2]
    ['baseline', 'si_window']
    """
    from immunoguide.criteria.implemented import IMPLEMENTED

    return IMPLEMENTED.get(rule)
