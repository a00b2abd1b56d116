"""What the FHIR adapter returns: :class:`FhirReport` (rows per table, issues, id map, named choices) and
:class:`FhirIssue` (one ``data_quality`` row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FhirIssue:
    """One resource (or component) the adapter could not use, or used with a caveat.

    ``source`` is ``fhir:<ResourceType>/<id>``; ``item`` the code or field; ``issue`` the reason; ``example`` what
    came; ``stay_id`` the stay it belongs to when known.
    """

    source: str
    item: str
    issue: str
    example: str
    stay_id: int | None = None
    n: int = 1


@dataclass(frozen=True)
class FhirReport:
    """What the FHIR adapter read and wrote.

    Attributes
    ----------
    dataset : str
        ``"fhir"``.
    codes_version : str
        Version of ``fhir_codes.toml``.
    out_dir : str
        Where the Parquet files are.
    resources_read : int
        Resources found (Bundles excluded, contained resources not counted).
    rows : dict
        Rows written per schema table.
    issues : tuple of FhirIssue
        Everything written to ``data_quality``, in the same order (by stay, source, item, issue).
    id_map : dict
        ``"Encounter/<id>"`` / ``"Patient/<id>"`` → the 63-bit integer id used, for every non-numeric FHIR id.
    choices : dict
        The named choices the conversion applied.
    """

    dataset: str
    codes_version: str
    out_dir: str
    resources_read: int
    rows: dict[str, int]
    issues: tuple[FhirIssue, ...]
    id_map: dict[str, int] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
