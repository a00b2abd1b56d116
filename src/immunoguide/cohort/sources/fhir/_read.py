"""Reading and validation: files, directories, NDJSON or in-memory Bundles → one validated ``fhir.resources.R4B``
model per resource (nested Bundles opened), each validated on its own so one bad resource never hides the others.

Input that is not JSON or not FHIR at all raises :class:`~immunoguide.errors.InputError`; an invalid resource becomes
an ``invalid_resource`` :class:`~immunoguide.cohort.sources.fhir.FhirIssue`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from immunoguide.cohort.sources.fhir._report import FhirIssue
from immunoguide.errors import InputError


@dataclass
class _Item:
    rtype: str
    raw: dict[str, Any]
    key: str | None  # "Type/id" (or the fullUrl when the resource has no id)
    label: str  # fhir:Type/id
    model: Any = None


def _is_fhir_object(x: Any) -> bool:
    if not isinstance(x, dict) or not isinstance(x.get("resourceType"), str):
        return False
    try:
        get_fhir_model_class(x["resourceType"])
    except (ValueError, KeyError, TypeError):
        return False
    return True


def _not_fhir(where: str, got: str) -> InputError:
    return InputError(
        expected="a FHIR R4B resource or Bundle (a JSON object with a known resourceType), or NDJSON of them",
        got=got,
        where=where,
        todo="export the EHR data as FHIR R4B JSON (Bundle, resource or NDJSON)",
    )


def _to_plain(x: Any) -> Any:
    if hasattr(x, "model_dump_json") and hasattr(x, "get_resource_type"):
        return json.loads(x.model_dump_json())
    return x


def _load(path_or_bundles: Any) -> tuple[list[tuple[Any, str]], list[FhirIssue]]:
    """Top-level JSON values with where they came from; InputError when the input is not JSON/FHIR at all."""
    issues: list[FhirIssue] = []
    if isinstance(path_or_bundles, (str, os.PathLike)):
        p = Path(path_or_bundles)
        if p.is_dir():
            files = sorted([*p.glob("*.json"), *p.glob("*.ndjson"), *p.glob("*.jsonl")])
            if not files:
                raise _not_fhir(str(p), "a directory without *.json or *.ndjson files")
            out: list[tuple[Any, str]] = []
            for f in files:
                o, i = _load_file(f)
                out += o
                issues += i
            return out, issues
        if not p.is_file():
            raise InputError(
                expected="an existing file or directory", got=str(p), where="convert_fhir", todo="check the path"
            )
        return _load_file(p)
    if isinstance(path_or_bundles, Mapping) or hasattr(path_or_bundles, "model_dump_json"):
        values = [path_or_bundles]
    elif isinstance(path_or_bundles, Iterable) and not isinstance(path_or_bundles, (bytes, bytearray)):
        values = list(path_or_bundles)
    else:
        raise _not_fhir("convert_fhir", type(path_or_bundles).__name__)
    plain = [_to_plain(v) for v in values]
    if not plain or not all(_is_fhir_object(v) for v in plain):
        raise _not_fhir("in-memory input", "no FHIR object" if not plain else "a value that is not a FHIR object")
    return [(v, f"input[{i}]") for i, v in enumerate(plain)], issues


def _load_file(p: Path) -> tuple[list[tuple[Any, str]], list[FhirIssue]]:
    try:
        text = p.read_text("utf-8")
    except UnicodeDecodeError:
        raise _not_fhir(str(p), "a file that is not UTF-8 text") from None
    if p.suffix in (".ndjson", ".jsonl"):
        out, issues = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                v = json.loads(line)
            except json.JSONDecodeError as exc:
                issues.append(FhirIssue(f"fhir:{p.name}:{n}", "line", "invalid_json", str(exc)[:200]))
                continue
            if not _is_fhir_object(v):
                issues.append(
                    FhirIssue(
                        f"fhir:{p.name}:{n}", "resourceType", "invalid_resource", "not a FHIR resource: " + _short(v)
                    )
                )
                continue
            out.append((v, f"{p.name}:{n}"))
        if not out:
            raise _not_fhir(str(p), "no line holds a FHIR resource")
        return out, issues
    try:
        v = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _not_fhir(str(p), f"invalid JSON ({exc})") from None
    if not _is_fhir_object(v):
        raise _not_fhir(str(p), _short(v))
    return [(v, p.name)], []


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 120 else s[:117] + "..."


def _flatten(
    value: dict[str, Any], where: str, items: list[_Item], full_urls: dict[str, str], issues: list[FhirIssue]
) -> None:
    """Open Bundles (recursively) into resource items; broken entries become issues."""
    rtype = value.get("resourceType")
    if rtype != "Bundle":
        rid = value.get("id") if isinstance(value.get("id"), str) else None
        key = f"{rtype}/{rid}" if rid else None
        items.append(_Item(str(rtype), value, key, f"fhir:{rtype}/{rid}" if rid else f"fhir:{rtype}@{where}"))
        return
    bid = value.get("id") if isinstance(value.get("id"), str) else where
    shell = {k: v for k, v in value.items() if k != "entry"}
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        loc, msg, _ = _first_error(exc)
        issues.append(FhirIssue(f"fhir:Bundle/{bid}", loc, "invalid_resource", msg))
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        issues.append(
            FhirIssue(f"fhir:Bundle/{bid}", "entry", "invalid_resource", "entry is not a list: " + _short(entries))
        )
        return
    for i, e in enumerate(entries):
        res = e.get("resource") if isinstance(e, dict) else None
        if not _is_fhir_object(res):
            issues.append(
                FhirIssue(
                    f"fhir:Bundle/{bid}",
                    f"entry[{i}]",
                    "invalid_resource",
                    "entry without a FHIR resource: " + _short(e),
                )
            )
            continue
        assert isinstance(res, dict)
        before = len(items)
        _flatten(res, f"{where}#entry[{i}]", items, full_urls, issues)
        url = e.get("fullUrl")
        if isinstance(url, str) and len(items) > before and res.get("resourceType") != "Bundle":
            it = items[-1]
            if it.key is None:
                it.key = url
                it.label = f"fhir:{it.rtype}/{url}"
            full_urls[url] = it.key


def _first_error(exc: ValidationError) -> tuple[str, str, Any]:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "(resource)"
    return loc, f"{loc}: {err.get('msg', '')}"[:300], err.get("input")
