"""pydantic's structure errors of a protocol file said as :class:`~immunoguide.errors.CriteriaError`: where in the
file (with the ids of list items), in terms of a criterion's kind and its keys, and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from immunoguide.errors import CriteriaError
from immunoguide.protocols._schema import (
    COMMON_CRITERION_KEYS,
    CRITERION_TYPES,
)


def _where_of(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = raw
    for p in loc:
        if isinstance(p, int):
            label = f"[{p}]"
            try:
                item = node[p]
                node = item
                if isinstance(item, Mapping):
                    ident = item.get("id") or item.get("name") or item.get("code") or item.get("analyte")
                    if ident:
                        label = f"[{p}] ({ident})"
            except (IndexError, KeyError, TypeError):
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(p))
            node = node.get(p) if isinstance(node, Mapping) else None
    return "".join(parts)


def _criterion_loc(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> tuple[tuple[Any, ...], str | None]:
    """``loc`` without the ``kind`` tag pydantic puts after a criterion's index, and that kind (None elsewhere).

    ``("exclusion", 4, "threshold", "comparator")`` → ``(("exclusion", 4, "comparator"), "threshold")``.
    """
    if len(loc) >= 3 and loc[0] in ("inclusion", "exclusion") and isinstance(loc[1], int):
        items = raw.get(loc[0])
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        kind = item.get("kind") if isinstance(item, Mapping) else None
        if isinstance(kind, str) and kind in CRITERION_TYPES and loc[2] == kind:
            return (loc[0], loc[1], *loc[3:]), kind
    return loc, None


def _criterion_keys_error(
    errs: list[Any], loc: tuple[Any, ...], kind: str, raw: Mapping[str, Any], where: str
) -> CriteriaError | None:
    """Missing or foreign top-level keys of one criterion, said in terms of its kind's keys (None otherwise)."""
    err_type = errs[0]["type"]
    if len(loc) != 3 or err_type not in ("missing", "extra_forbidden") or loc[2] in COMMON_CRITERION_KEYS:
        return None
    model = CRITERION_TYPES[kind]
    own = {n: f for n, f in model.model_fields.items() if n not in COMMON_CRITERION_KEYS}
    same = [_criterion_loc(tuple(e["loc"]), raw)[0] for e in errs if e["type"] == err_type]
    keys = sorted(str(x[2]) for x in same if len(x) == 3 and x[:2] == loc[:2] and x[2] not in COMMON_CRITERION_KEYS)
    item = raw[loc[0]][loc[1]]
    more = len(errs) - len(keys)
    at = f"{where} [{loc[0]} {item.get('id') or f'[{loc[1]}]'}]" + (f" (+{more} more)" if more > 0 else "")
    if err_type == "missing":
        return CriteriaError(
            expected=f"the keys kind {kind!r} needs: {sorted(n for n, f in own.items() if f.is_required())}",
            got=sorted(set(item) - COMMON_CRITERION_KEYS),
            where=at,
            todo=f"add {keys}",
        )
    other_kinds = {n for m in CRITERION_TYPES.values() for n in m.model_fields} - COMMON_CRITERION_KEYS
    if set(keys) <= other_kinds:
        return CriteriaError(
            expected=f"only the keys kind {kind!r} uses: {sorted(own)}",
            got=keys,
            where=at,
            todo="remove them or change the kind",
        )
    return CriteriaError(
        expected=f"only the keys the protocol format defines (kind {kind!r} uses: {sorted(own)})",
        got=keys,
        where=at,
        todo="remove or rename the key (a misspelt key would otherwise be ignored)",
    )


def _structure_error(exc: ValidationError, raw: Mapping[str, Any], where: str) -> CriteriaError:
    errs = exc.errors()
    err = errs[0]
    loc, criterion_kind = _criterion_loc(tuple(err["loc"]), raw)
    if criterion_kind is not None:
        keys_error = _criterion_keys_error(errs, loc, criterion_kind, raw, where)
        if keys_error is not None:
            return keys_error
    at = _where_of(loc, raw)
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    kind = err["type"]
    if kind == "union_tag_not_found":
        return CriteriaError(
            expected=f"the required key 'kind', one of {list(CRITERION_TYPES)}",
            got="absent",
            where=f"{where} [{at}.kind]{more}",
            todo="add 'kind' (a rule the sources do not give is kind = \"unknown\" with its setting)",
        )
    if kind == "union_tag_invalid":
        return CriteriaError(
            expected=f"a criterion kind from the closed set {list(CRITERION_TYPES)}",
            got=err.get("ctx", {}).get("tag"),
            where=f"{where} [{at}.kind]{more}",
            todo="set kind to one of these (a rule the sources do not give is kind = \"unknown\" with its setting)",
        )
    if kind == "extra_forbidden":
        return CriteriaError(
            expected="only the keys the protocol format defines",
            got=str(loc[-1]),
            where=f"{where} [{at}]{more}",
            todo="remove or rename the key (a misspelt key would otherwise be ignored)",
        )
    if kind == "missing":
        return CriteriaError(
            expected=f"the required key {loc[-1]!r}",
            got="absent",
            where=f"{where} [{at}]{more}",
            todo=f"add {loc[-1]!r}",
        )
    return CriteriaError(
        expected=str(err["msg"]).replace("Input should be", "a value that is"),
        got=err.get("input"),
        where=f"{where} [{at}]{more}",
        todo="fix the value (comparators: > >= < <=; confidence: confirmed, likely, unknown)",
    )
