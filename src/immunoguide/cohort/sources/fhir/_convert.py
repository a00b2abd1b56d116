"""The entry point :func:`convert_fhir`: read, map, write, report."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from immunoguide.cohort.sources.fhir._codes import load_codes
from immunoguide.cohort.sources.fhir._mapping import _Converter
from immunoguide.cohort.sources.fhir._read import _flatten, _Item, _load
from immunoguide.cohort.sources.fhir._report import FhirReport
from immunoguide.cohort.sources.fhir._write import timeline_tables, write_timeline


def convert_fhir(
    path_or_bundles: str | os.PathLike[str] | Mapping[str, Any] | Iterable[Any], out_dir: str | os.PathLike[str]
) -> FhirReport:
    """Convert FHIR R4B Bundles into the timeline schema (one Parquet file per table in ``out_dir``).

    Parameters
    ----------
    path_or_bundles : path, dict, fhir.resources model, or iterable of dicts / models
        A ``.json`` file (one Bundle or resource), a ``.ndjson`` file (one resource or Bundle per line), a directory
        of such files, or Bundles already in memory.
    out_dir : path
        Output folder; ``<table>.parquet`` for every table of :data:`~immunoguide.cohort.schema.SCHEMAS`, written
        only after the whole input was converted (each file replaced atomically).

    Returns
    -------
    FhirReport
        Rows per table, every data-quality issue, the id map of hashed ids and the named choices.

    Raises
    ------
    InputError
        Only when the input is not JSON or not FHIR at all (no resource could be read); bad resources never raise.
    """
    codes = load_codes()
    values, load_issues = _load(path_or_bundles)
    conv = _Converter(codes)
    conv.issues.extend(load_issues)
    items: list[_Item] = []
    for v, where in values:
        _flatten(v, where, items, conv.full_urls, conv.issues)
    conv.run(items)
    issues = sorted(
        conv.issues, key=lambda i: (i.stay_id is None, i.stay_id or 0, i.source, i.item, i.issue, i.example)
    )

    out = Path(out_dir)
    tables = timeline_tables(conv.rows, issues)
    write_timeline(tables, out)
    return FhirReport(
        dataset="fhir",
        codes_version=str(codes["version"]),
        out_dir=str(out),
        resources_read=len(items),
        rows={t: tbl.num_rows for t, tbl in tables.items()},
        issues=tuple(issues),
        id_map=dict(sorted(conv.id_map.items())),
        choices={
            "fhir_version": codes["fhir_version"],
            "attach_window_pre_stay_h": int(codes["attachment"]["pre_stay_h"]),
            "attach_rule": "encounter reference, else every stay of the subject with time in [intime - 24 h, outtime]",
            "date_only_hour": int(codes["attachment"]["date_only_hour"]),
            "timezone": "date-times converted to UTC and stored naive",
            "stay_id": "numeric Encounter.id as is, else 63-bit SHA-256 hash of 'Encounter/<id>' (see id_map)",
            "admission_source_missing": "NULL (unknown), not inpatient",
            "parent_encounter": "an accepted encounter that other accepted encounters are partOf is the admission",
            "preliminary_results": "used",
            "icd_code_format": "without the dot",
            "rate_without_kg": "divided by the stay's first charted body weight",
            "weight_kg": "first body weight (LOINC 29463-7) of the stay",
            "culture_coded_result": "any coded organism is positive; SNOMED no growth / negative / not detected is not",
        },
    )
