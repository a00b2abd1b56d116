"""Pure clinical rules: typed inputs in, frozen results out; no files, clocks, databases or randomness.

Each rule that reads a criteria file declares the policies (and options) it implements in
``IMPLEMENTED_POLICIES``; the criteria loader checks the file against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module

__all__ = ["implemented_policies"]

_RULE_MODULES = {"sofa1": "immunoguide.rules.sofa", "sofa2": "immunoguide.rules.sofa2"}


def implemented_policies(rule: str) -> Mapping[str, frozenset[str]] | None:
    """The policies and options the rule ``rule`` implements (None for a rule without a registry)."""
    mod = _RULE_MODULES.get(rule)
    if mod is None:
        return None
    registry: Mapping[str, Mapping[str, frozenset[str]]] = import_module(mod).IMPLEMENTED_POLICIES
    return registry[rule]
