"""Pure clinical rules: typed inputs in, frozen results out; no files, clocks, databases or randomness.

Each rule that reads a criteria file declares the policies (and options) it implements in
``IMPLEMENTED_POLICIES``; the criteria loader checks the file against it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["implemented_policies"]

_RULE_MODULES = {"sofa1": "immunoguide.rules.sofa", "sofa2": "immunoguide.rules.sofa2"}


def implemented_policies(rule: str) -> Mapping[str, frozenset[str]] | None:
    """The policies and options the rule ``rule`` implements (None for a rule without a registry).

    Imported here by name so that the import tools see the dependency (the criteria loader calls this function, and
    these rule modules load their criteria: a cycle recorded as debt in ``.importlinter``).
    """
    mod = _RULE_MODULES.get(rule)
    if mod is None:
        return None
    if mod == "immunoguide.rules.sofa":
        from immunoguide.rules.sofa import IMPLEMENTED_POLICIES
    else:
        from immunoguide.rules.sofa2 import IMPLEMENTED_POLICIES
    registry: Mapping[str, Mapping[str, frozenset[str]]] = IMPLEMENTED_POLICIES
    return registry[rule]
