"""Pure clinical rules: typed inputs in, frozen results out; no files, clocks, databases or randomness.

Each rule that reads a criteria file declares the policies (and options) it implements in
``IMPLEMENTED_POLICIES``; the criteria loader checks the file against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["implemented_policies"]

#: Rule → (module, key of its ``IMPLEMENTED_POLICIES`` registry; None when the registry is the rule's own table).
_RULE_MODULES: Mapping[str, tuple[str, str | None]] = {
    "sofa1": ("immunoguide.rules.sofa", "sofa1"),
    "sofa2": ("immunoguide.rules.sofa2", "sofa2"),
    "sepsis3": ("immunoguide.rules.sepsis3", None),
}


def implemented_policies(rule: str) -> Mapping[str, frozenset[str]] | None:
    """The policies and options the rule ``rule`` implements (None for a rule without a registry).

    The rule modules are imported by statement, not by name, so that the import tools see the dependency (the
    criteria loader calls this function, and these rule modules load their criteria: a cycle recorded as debt in
    ``.importlinter``).
    """
    entry = _RULE_MODULES.get(rule)
    if entry is None:
        return None
    mod, key = entry
    registry: Mapping[str, Any]
    if mod == "immunoguide.rules.sofa":
        from immunoguide.rules.sofa import IMPLEMENTED_POLICIES as registry
    elif mod == "immunoguide.rules.sofa2":
        from immunoguide.rules.sofa2 import IMPLEMENTED_POLICIES as registry
    else:
        from immunoguide.rules.sepsis3 import IMPLEMENTED_POLICIES as registry
    found: Mapping[str, frozenset[str]] = registry if key is None else registry[key]
    return found
