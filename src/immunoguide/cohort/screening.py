"""Endotype screening and protocol eligibility per stay, from the cohort tables.

For each stay with a Sepsis-3 onset, the biomarker results of the timeline (ferritin with its censored text,
mHLA-DR with its assay method) are classified by the protocol's classification rules with the onset as anchor,
at the close of the protocol's window after the anchor (or ICU discharge, whichever is first). Eligibility is then
evaluated with what the data hold; what they cannot tell (consent, pregnancy, DNR, stage IV malignancy …) stays
*unknown*, so a stay is ``eligible`` only when nothing is unknown — a cohort is usually ``undetermined`` for
consent-type criteria, and the screening table says which criteria block or remain open for each stay.

Biomarkers are sparse (a few rows per stay), so this step runs per stay in Python over the same rule functions
the single-patient path uses; the heavy hourly work stays in the set-based engine.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from immunoguide.errors import InputError

__all__ = ["SCREENING_SCHEMA", "SOURCE_TO_PROTOCOL", "ScreeningTable", "biomarker_rows", "screen_cohort"]

SCREENING_SCHEMA = pa.schema(
    [
        ("stay_id", pa.int64()),
        ("sepsis3_onset_time", pa.timestamp("us")),
        ("infection_source", pa.string()),
        ("endotype", pa.string()),
        ("endotype_reasons", pa.string()),
        ("ferritin_available", pa.bool_()),
        ("ferritin_censored", pa.bool_()),
        ("hla_dr_available", pa.bool_()),
        ("missing_for_classification", pa.string()),
        ("eligible", pa.bool_()),
        ("eligible_status", pa.string()),
        ("reasons", pa.string()),
        ("protocol", pa.string()),
    ]
)

#: Infection sources of the cohort engine → the ImmunoSep protocol's vocabulary (others are unknown to it).
SOURCE_TO_PROTOCOL = {"CAP": "CAP", "HAP": "HAP", "VAP": "VAP", "bacteremia": "primary_BSI"}
_BIOMARKERS = ("ferritin_ng_per_ml", "hla_dr_per_monocyte")


@dataclass(frozen=True)
class ScreeningTable:
    """Rows of the screening table (one per stay) in :data:`SCREENING_SCHEMA`."""

    rows: tuple[dict[str, Any], ...]

    def write(self, path: str | Path) -> None:
        from immunoguide.cohort.schema import table_from_rows  # its buffers path imports no pandas

        pq.write_table(table_from_rows(self.rows, SCREENING_SCHEMA), str(path))


def biomarker_rows(timeline_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Ferritin and mHLA-DR observation rows of a timeline folder (value, censored text, unit, method), by stay."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    from immunoguide.cohort.schema import read_rows

    tbl = read_rows(timeline_dir / "observations.parquet", column="concept", values=_BIOMARKERS)
    for r in tbl.to_pylist():
        out[r["stay_id"]].append(r)
    return out


def screen_cohort(
    timeline_dir: str | Path,
    sepsis3_path: str | Path,
    *,
    protocol: str = "immunosep-2025",
    refused: Mapping[int, str] | None = None,
) -> ScreeningTable:
    """Classify the endotype and evaluate eligibility for every stay of a cohort run.

    ``refused``: stays whose timeline the engine refused (stay id → why); they are neither classified nor judged
    eligible, and say why (``eligible_status`` undetermined)."""
    from immunoguide.protocols import load_protocol
    from immunoguide.rules.eligibility import PatientRecord, eligibility_verdict
    from immunoguide.rules.endotype import BiomarkerResult, classify_endotype

    tdir = Path(timeline_dir)
    proto = load_protocol(protocol)
    spec = proto.classification
    if spec is None:
        raise InputError(
            expected="a protocol with a [classification] section", got=proto.label, where="cohort screening",
            todo="pick a protocol that classifies an endotype, or run with --protocol none",
        )
    after = spec.timing.window_after_anchor_h
    from immunoguide.cohort.schema import read_rows

    stays = {r["stay_id"]: r for r in read_rows(tdir / "stays.parquet").to_pylist()}
    s3 = {r["stay_id"]: r for r in read_rows(sepsis3_path).to_pylist()}
    markers = biomarker_rows(tdir)
    rows: list[dict[str, Any]] = []
    declared = {e.name for e in spec.endotypes} | {spec.otherwise}
    for sid in sorted(stays):
        if refused and sid in refused:
            rows.append(_refused_row(sid, refused[sid], proto.label))
            continue
        st, sep = stays[sid], s3.get(sid, {})
        onset = sep.get("onset_time")
        obs = markers.get(sid, [])
        ferr = [o for o in obs if o["concept"] == "ferritin_ng_per_ml"]
        hla = [o for o in obs if o["concept"] == "hla_dr_per_monocyte"]
        censored = any(o["value"] is None and o["value_text"] for o in ferr)
        endotype: str | None = None
        reasons_e: list[str] = []
        missing: list[str] = []
        if onset is None:
            reasons_e.append("no Sepsis-3 onset: not screened")
        else:
            results, bad = [], []
            for o in obs:
                raw = o["value"] if o["value"] is not None else o["value_text"]
                try:
                    results.append(
                        BiomarkerResult.measured(
                            o["concept"], raw, o["unit"] or "", method=o["method"], sample_time=o["time"],
                            source=o["source"], where=f"stay {sid}",
                        )
                    )
                except InputError as exc:
                    bad.append(f"{o['concept']} {raw!r} unusable: {exc.expected}")
            at = onset + timedelta(hours=after) if after is not None else onset
            if st.get("outtime") is not None and st["outtime"] < at:
                at = st["outtime"]
            res = classify_endotype(spec, results, anchor_time=onset, at=at, protocol_label=proto.label)
            endotype = res.endotype
            reasons_e = [getattr(r, "text", str(r)) for r in res.reasons] + bad
            if not ferr:
                missing.append("ferritin")
            if not hla:
                missing.append("mHLA-DR")
        record = PatientRecord(
            patient_id=str(sid),
            source="cohort",
            age_years=st.get("age_years"),
            sex={"F": "female", "M": "male"}.get(st.get("sex") or ""),
            admission_source={"emergency_department": "emergency_department", "inpatient": "hospitalised"}.get(
                st.get("admission_source") or ""
            ),
            infection_source=SOURCE_TO_PROTOCOL.get(sep.get("infection_source") or ""),
            sofa_total=sep.get("sofa_at_onset"),
            sepsis_onset_time=onset,
            hospital_admission_time=st.get("admittime"),
            icu_admission_time=st.get("intime"),
            endotype=endotype if endotype in declared else None,
            weight_kg=st.get("weight_kg"),
        )
        eligible, blocking, undetermined = eligibility_verdict(proto, record, at=onset)
        status = {True: "eligible", False: "not_eligible", None: "undetermined"}[eligible]
        rows.append(
            {
                "stay_id": sid,
                "sepsis3_onset_time": onset,
                "infection_source": sep.get("infection_source"),
                "endotype": endotype,
                "endotype_reasons": json.dumps(reasons_e),
                "ferritin_available": bool(ferr),
                "ferritin_censored": censored,
                "hla_dr_available": bool(hla),
                "missing_for_classification": ", ".join(missing) or None,
                "eligible": eligible,
                "eligible_status": status,
                "reasons": json.dumps({"blocking": list(blocking), "undetermined": list(undetermined)}),
                "protocol": proto.label,
            }
        )
    return ScreeningTable(tuple(rows))


def _refused_row(sid: int, why: str, protocol: str) -> dict[str, Any]:
    reason = f"timeline refused, stay not scored: {why} (see data_quality)"
    return {
        "stay_id": sid, "sepsis3_onset_time": None, "infection_source": None, "endotype": None,
        "endotype_reasons": json.dumps([reason]), "ferritin_available": None, "ferritin_censored": None,
        "hla_dr_available": None, "missing_for_classification": None, "eligible": None,
        "eligible_status": "undetermined", "reasons": json.dumps({"blocking": [], "undetermined": [reason]}),
        "protocol": protocol,
    }
