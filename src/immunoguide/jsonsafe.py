"""The input edge: strict JSON decoding and JSON-type checks shared by the CLI, the REST service and the store.

Python's :func:`json.loads` silently keeps the *last* of two equal keys (``{"ferritin": 100, "ferritin": 6100}`` is
MALS), accepts ``NaN``/``Infinity``, turns a 400-digit integer into a number that overflows later, refuses a
4 301-digit one only with a ``ValueError`` and crashes with a ``RecursionError`` on arrays nested 100 000 deep;
pydantic's lax mode turns ``false`` into ``0.0`` (a platelet count of 0 scores coagulation 4). Every input edge
of immunoguide therefore decodes with :func:`loads_strict` and checks the JSON types of a record against its model
with :func:`refuse_json_type_mismatch`. Each refusal is an :class:`~immunoguide.errors.InputError` with its own
stable code, naming the place, so a batch can report it for its line and go on:

* ``IG-E110`` (:class:`~immunoguide.errors.DuplicateFieldError`) — a key given twice in one object;
* ``IG-E111`` (:class:`~immunoguide.errors.WrongTypeError`) — a boolean for a number or a number for a yes/no;
* ``IG-E112`` (:class:`~immunoguide.errors.InputTooLargeError`) — nesting deeper than :data:`MAX_DEPTH`, an integer
  with more than :data:`MAX_INT_DIGITS` digits, a number with more than :data:`MAX_NUMBER_CHARS` characters, a
  text longer than the caller's limit;
* ``IG-E100`` — not JSON, ``NaN``/``Infinity``, a number that overflows to infinity (``1e400``).

Limits are platform choices, not clinical facts: no clinical value needs more than 18 integer digits or a number
written with more than 40 characters, and no immunoguide record nests deeper than 32 levels.

Examples
--------
>>> loads_strict('{"ferritin": 820, "ferritin_unit": "ng/mL"}')
{'ferritin': 820, 'ferritin_unit': 'ng/mL'}
>>> loads_strict('{"ferritin": 100, "ferritin": 6100}')
Traceback (most recent call last):
...
immunoguide.errors.DuplicateFieldError: [IG-E110] expected each field once per JSON object; got 'ferritin'; in JSON object at $; what to do: send the field once (a JSON parser would silently keep the last value)
>>> loads_strict("[" * 100 + "]" * 100)
Traceback (most recent call last):
...
immunoguide.errors.InputTooLargeError: [IG-E112] expected JSON nested at most 32 levels deep; got 'deeper than 32 levels'; in JSON object; what to do: send a flat record (immunoguide records nest 2-3 levels)
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from immunoguide.errors import DuplicateFieldError, InputError, InputTooLargeError, WrongTypeError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_NUMBER_CHARS",
    "check_depth",
    "loads_strict",
    "refuse_json_type_mismatch",
]

#: Deepest nesting of arrays/objects accepted (immunoguide records nest 2-3 levels; FHIR bundles about 8).
MAX_DEPTH = 32
#: Longest integer accepted, in digits (int64 has 19; no clinical value needs more than 18).
MAX_INT_DIGITS = 18
#: Longest number literal accepted (a double needs at most 17 significant digits plus sign, point and exponent).
MAX_NUMBER_CHARS = 40


def check_depth(text: str, *, where: str = "JSON text", limit: int = MAX_DEPTH) -> None:
    """Raise :class:`~immunoguide.errors.InputTooLargeError` when arrays/objects nest deeper than ``limit``.

    A linear scan that skips strings (so ``"[[["`` inside a text does not count); run before decoding, so the
    decoder never recurses deeply.

    >>> check_depth('{"a": "[[[[[[[["}', limit=2)
    """
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise InputTooLargeError(
                    expected=f"JSON nested at most {limit} levels deep", got=f"deeper than {limit} levels",
                    where=where, todo="send a flat record (immunoguide records nest 2-3 levels)",
                )
        elif ch in "]}":
            depth -= 1


def _pairs(where: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise DuplicateFieldError(
                    expected="each field once per JSON object", got=k, where=f"{where} at $",
                    todo="send the field once (a JSON parser would silently keep the last value)", field=k,
                )
            out[k] = v
        return out

    return hook


def _parse_int(where: str) -> Any:
    def parse(text: str) -> int:
        digits = len(text.lstrip("+-"))
        if digits > MAX_INT_DIGITS:
            raise InputTooLargeError(
                expected=f"an integer of at most {MAX_INT_DIGITS} digits", got=f"{digits} digits ({text[:20]}…)",
                where=where, todo="send the value in a unit where it is a plausible number",
            )
        return int(text)

    return parse


def _parse_float(where: str) -> Any:
    def parse(text: str) -> float:
        if len(text) > MAX_NUMBER_CHARS:
            raise InputTooLargeError(
                expected=f"a number written with at most {MAX_NUMBER_CHARS} characters",
                got=f"{len(text)} characters ({text[:20]}…)", where=where, todo="round the value at the source",
            )
        v = float(text)
        if not math.isfinite(v):
            raise InputError(expected="a finite number", got=text, where=where,
                             todo="send a plausible value (this one overflows a double)")
        return v

    return parse


def _parse_constant(where: str) -> Any:
    def parse(name: str) -> float:
        raise InputError(expected="a JSON number (JSON has no NaN or Infinity)", got=name, where=where,
                         todo="leave the field out (or null) when the value is missing")

    return parse


def loads_strict(text: str | bytes, *, where: str = "JSON object", max_chars: int | None = None) -> Any:
    """Decode JSON, refusing duplicate keys, NaN/Infinity, overflowing or over-long numbers and deep nesting.

    Parameters
    ----------
    text : str or bytes
        The JSON text (bytes are decoded as UTF-8).
    where : str
        Place for error messages (``"line 3"``, ``"request body"``).
    max_chars : int, optional
        Refuse longer texts (``IG-E112``) before decoding.

    Raises
    ------
    InputError
        ``IG-E100`` not JSON / NaN / infinite; ``IG-E110`` duplicate key; ``IG-E112`` too large or too deep.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(expected="UTF-8 JSON text", got=f"undecodable byte at {exc.start}", where=where,
                             todo="send UTF-8") from None
    if max_chars is not None and len(text) > max_chars:
        raise InputTooLargeError(expected=f"at most {max_chars} characters", got=f"{len(text)} characters",
                                 where=where, todo="send a smaller record")
    check_depth(text, where=where)
    try:
        return json.loads(text, object_pairs_hook=_pairs(where), parse_int=_parse_int(where),
                          parse_float=_parse_float(where), parse_constant=_parse_constant(where))
    except json.JSONDecodeError as exc:
        raise InputError(expected="valid JSON", got=text.strip()[:80], where=where,
                         todo=f"fix the JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:  # pragma: no cover - check_depth stops this first
        raise InputTooLargeError(expected=f"JSON nested at most {MAX_DEPTH} levels deep", got="too deep",
                                 where=where, todo="send a flat record") from None


# ---------------------------------------------------------------------------------------------------------------
# JSON types against a pydantic model's field types


def _kinds(annotation: Any) -> set[str]:
    """The JSON kinds an annotation admits: ``number``, ``integer``, ``boolean``, ``other``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: set[str] = set()
        for a in typing.get_args(annotation):
            if a is not type(None):
                out |= _kinds(a)
        return out
    if annotation is bool:
        return {"boolean"}
    if annotation is int:
        return {"integer"}
    if annotation is float:
        return {"number"}
    return {"other"}


def _mapping_value_kinds(annotation: Any) -> set[str] | None:
    """For ``dict[str, X]`` (optionally Optional) the kinds of X; None for anything else."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(annotation):
            if a is not type(None):
                found = _mapping_value_kinds(a)
                if found is not None:
                    return found
        return None
    if origin is dict:
        args = typing.get_args(annotation)
        return _kinds(args[1]) if len(args) == 2 else None
    return None


def _check_value(value: Any, kinds: frozenset[str], field: str, where: str) -> None:
    if value is None or "other" in kinds:
        return
    if isinstance(value, bool):
        if "boolean" not in kinds:
            raise WrongTypeError(
                expected=f"a number for {field} (JSON true/false is not a number)", got=value,
                where=f"{where}, field {field}", field=field,
                todo="send the measured number, or leave the field out when it was not measured",
            )
        return
    if isinstance(value, (int, float)) and "boolean" in kinds and not kinds & {"number", "integer"}:
        raise WrongTypeError(
            expected=f"true or false for {field}", got=value, where=f"{where}, field {field}", field=field,
            todo="send a JSON boolean (true/false), not a number",
        )


def refuse_json_type_mismatch(model: Any, data: Any, *, where: str = "record") -> None:
    """Raise :class:`~immunoguide.errors.WrongTypeError` where ``data`` holds a boolean for a numeric field of
    ``model`` (a pydantic model class), or a number for a yes/no field; also inside ``dict[str, float]`` fields.

    >>> from pydantic import BaseModel
    >>> class M(BaseModel):
    ...     platelets_10e3_per_ul: float | None = None
    >>> refuse_json_type_mismatch(M, {"platelets_10e3_per_ul": False})
    Traceback (most recent call last):
    ...
    immunoguide.errors.WrongTypeError: [IG-E111] expected a number for platelets_10e3_per_ul (JSON true/false is not a number); got False; in record, field platelets_10e3_per_ul; what to do: send the measured number, or leave the field out when it was not measured
    """
    if not isinstance(data, Mapping):
        return
    kinds = _field_kinds(model)
    for key, value in data.items():
        found = kinds.get(key)
        if found is None:
            continue
        outer, inner = found
        _check_value(value, outer, str(key), where)
        if inner is not None and isinstance(value, Mapping):
            for k2, v2 in value.items():
                _check_value(v2, inner, f"{key}.{k2}", where)


@functools.cache
def _field_kinds(model: Any) -> Mapping[str, tuple[frozenset[str], frozenset[str] | None]]:
    """Per field of ``model``: the JSON kinds of its value and, for ``dict[str, X]``, of X.

    A model's annotations are fixed when its class is built, and every record of a batch (a cohort screens one per
    stay) is checked against the same model, so the annotations are read once per model rather than per record.
    """
    out: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {}
    for name, f in getattr(model, "model_fields", {}).items():
        inner = _mapping_value_kinds(f.annotation)
        out[name] = (frozenset(_kinds(f.annotation)), None if inner is None else frozenset(inner))
    return types.MappingProxyType(out)
