"""The code maps the adapter acts on (``fhir_codes.toml``, checked when loaded), the resource types it reads, the
vasopressors and ventilation kinds it knows, and the deterministic ids of non-numeric FHIR ids (:func:`stable_id`).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import CriteriaError
from immunoguide.units import concepts, normalise_unit

DRUGS = SOFA_DEFINITIONS.catecholamines
VENT_KINDS = SOFA_DEFINITIONS.ventilation_kinds
#: Resource types the adapter reads; any other type is counted once per type (``resource_type_not_used``).
USED_TYPES = (
    "Patient",
    "Encounter",
    "Observation",
    "MedicationAdministration",
    "Procedure",
    "Condition",
    "Medication",
    "Specimen",
)
_MAX_INT64 = 2**63 - 1
_CENSORED = re.compile(r"^\s*(<=|>=|<|>|≤|≥|greater than|less than)\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.IGNORECASE)
_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


@cache
def load_codes(name: str = "fhir_codes.toml") -> Mapping[str, Any]:
    """The FHIR code map shipped next to the adapter, checked against ``concepts.toml`` and the schema literals."""
    raw = tomllib.loads(resources.files("immunoguide.cohort.sources").joinpath(name).read_text("utf-8"))
    known = set(concepts()) | set(raw["local_concepts"]["extra"])
    where = f"cohort/sources/{name}"
    for code, spec in raw["loinc"].items():
        if spec.get("kind") == "culture":
            continue
        if spec.get("concept") not in known:
            raise CriteriaError(
                expected="a concept of criteria/concepts.toml",
                got=spec.get("concept"),
                where=f"{where} [loinc.{code}]",
                todo="fix the concept name",
            )
        for key in ("text_unit", "dimensionless_unit"):
            if key in spec and normalise_unit(spec[key]) not in concepts()[spec["concept"]].units:
                raise CriteriaError(
                    expected=f"{key} accepted by {spec['concept']}",
                    got=spec[key],
                    where=f"{where} [loinc.{code}]",
                    todo="use a unit listed in concepts.toml",
                )
    bad_kinds = {k: v for k, v in raw["procedure"]["ventilation"].items() if v not in VENT_KINDS}
    bad_drugs = [d for d in raw["medication"]["vasopressors"] if d not in DRUGS and d != "excluded_words"]
    if bad_kinds or bad_drugs:
        raise CriteriaError(
            expected=f"ventilation kinds in {VENT_KINDS} and drugs in {DRUGS}",
            got={"kinds": bad_kinds, "drugs": bad_drugs},
            where=where,
            todo="fix the mapping",
        )
    return raw


def stable_id(resource_type: str, fhir_id: str) -> int:
    """The integer id of a FHIR resource: a numeric id as is, otherwise a deterministic 63-bit hash.

    The hash is the first 8 bytes of SHA-256 of ``"<ResourceType>/<id>"``, shifted right by one bit (so it fits a
    signed 64-bit integer); it does not depend on the run, the machine or the Python hash seed.

    >>> stable_id("Encounter", "30001")
    30001
    >>> h = stable_id("Encounter", "icu-stay-7")
    >>> h == stable_id("Encounter", "icu-stay-7") and 0 <= h < 2**63 and h != stable_id("Patient", "icu-stay-7")
    True
    >>> stable_id("Encounter", "007") == 7  # leading zeros are not a plain number: hashed, so '7' and '007' differ
    False
    """
    if re.fullmatch(r"0|[1-9][0-9]{0,18}", fhir_id) and int(fhir_id) <= _MAX_INT64:
        return int(fhir_id)
    digest = hashlib.sha256(f"{resource_type}/{fhir_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
