"""Load a protocol file, check it against itself, the concepts and the patient record, and build :class:`Protocol`.

Structure (keys, types, closed vocabularies such as comparators and confidence tags) is checked by the pydantic
models of :mod:`._schema`; everything that needs more than one table is checked here, and every failure is a
:class:`~immunoguide.errors.CriteriaError` saying what was expected, what was found, where, and what to do.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from immunoguide.criteria import parse_toml
from immunoguide.errors import CriteriaError, UnknownCriteriaError
from immunoguide.protocols._checks import _Checker
from immunoguide.protocols._errors import _structure_error
from immunoguide.protocols._protocol import NOT_APPLIED, Protocol, SettingWarning, ThresholdRef, compare
from immunoguide.protocols._schema import (
    ProtocolDocument,
)

__all__ = [
    "NOT_APPLIED",
    "Protocol",
    "SettingWarning",
    "ThresholdRef",
    "available_protocols",
    "compare",
    "load_protocol",
    "load_protocol_text",
    "validate_protocol",
]


def load_protocol_text(text: str, *, where: str = "<text>") -> Protocol:
    """Parse and validate protocol TOML text (user files, tests); raises :class:`CriteriaError` when invalid."""
    raw = parse_toml(text, where)
    try:
        doc = ProtocolDocument.model_validate(raw)
    except ValidationError as exc:
        raise _structure_error(exc, raw, where) from None
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return _Checker(doc, where).build(where, sha)


@cache
def _shipped() -> dict[str, str]:
    """Shipped protocol id → file name (the package's files do not change while it runs; listed once)."""
    root = resources.files("immunoguide.protocols")
    return {p.name.removesuffix(".toml"): p.name for p in root.iterdir() if p.name.endswith(".toml")}


def available_protocols() -> list[str]:
    """Ids of the protocol files shipped with immunoguide.

    >>> available_protocols()
    ['gm-csf-meisel-2009', 'immunosep-2025', 'save-more-2021']
    """
    return sorted(_shipped())


@cache
def _load_shipped(protocol_id: str) -> Protocol:
    fname = _shipped()[protocol_id]
    text = resources.files("immunoguide.protocols").joinpath(fname).read_text("utf-8")
    p = load_protocol_text(text, where=fname)
    if p.id != protocol_id:
        raise CriteriaError(
            expected=f"[protocol].id {protocol_id!r} (the file name)",
            got=p.id,
            where=fname,
            todo="name the file after the protocol id",
        )
    return p


def load_protocol(id_or_path: str | Path) -> Protocol:
    """Load a shipped protocol by id (optionally pinned, ``"immunosep-2025@1.0.0"``) or a protocol file by path.

    Shipped protocols are validated once and cached; files are read and validated on every call.

    >>> p = load_protocol("immunosep-2025")
    >>> p.label, [c.id for c in p.inclusion][:3], p.classification.endotypes[0].name
    ('immunosep-2025@1.0.0', ['I1', 'I2', 'I3'], 'MALS')
    """
    if isinstance(id_or_path, str) and not id_or_path.endswith(".toml"):
        pid, _, version = id_or_path.partition("@")
        if pid in _shipped():
            p = _load_shipped(pid)
            if version and version != p.version:
                raise UnknownCriteriaError(
                    expected=f"{pid} version {p.version} (the shipped version)",
                    got=version,
                    where="protocol id",
                    todo="load the pinned version from its file path, or pin the shipped version",
                )
            return p
        if not Path(id_or_path).exists():
            raise UnknownCriteriaError(
                expected=f"a shipped protocol id {available_protocols()} or a protocol file path",
                got=id_or_path,
                where="protocol id",
                todo="pick a shipped id (immunoguide protocol show ID) or give the path to a .toml file",
            )
    return validate_protocol(id_or_path)


def validate_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file; returns the :class:`Protocol` or raises :class:`CriteriaError`."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise UnknownCriteriaError(
            expected="a readable protocol file",
            got=str(path),
            where="protocol path",
            todo=f"check the path ({exc.strerror})",
        ) from None
    return load_protocol_text(text, where=str(p))
