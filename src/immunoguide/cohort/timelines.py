"""Timeline tables (Parquet, :mod:`immunoguide.cohort.schema`) → one :class:`PatientTimeline` per stay.

This is the single-patient path over the same data the set-based engine reads; the differential test compares the
two on every stay of the MIMIC-III demo. Observations without a numeric value (censored biomarker text such as
"GREATER THAN 2000") are not SOFA inputs and are left to the endotype rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from immunoguide.rules.timeline import (
    AntibioticAdministration,
    CultureSample,
    Infusion,
    Observation,
    PatientTimeline,
    VentilationEpisode,
)

__all__ = ["SOFA_OBSERVATION_CONCEPTS", "iter_timelines", "load_timeline"]

#: Observation concepts that feed SOFA-1 and Sepsis-3 (biomarkers stay with the endotype rules).
SOFA_OBSERVATION_CONCEPTS = frozenset(
    {
        "pao2_mmhg", "fio2_fraction", "platelets_10e3_per_ul", "bilirubin_mg_per_dl", "map_mmhg", "sbp_mmhg",
        "dbp_mmhg", "gcs", "gcs_sedated", "creatinine_mg_per_dl", "urine_output_ml",
        # charted GCS components, read by gcs_assembly = ricu_hourly_components
        "gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total_charted",
    }
)


def _rows(path: Path, stay_ids: set[int] | None) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not path.exists():
        return out
    filters = [("stay_id", "in", sorted(stay_ids))] if stay_ids else None
    tbl = pq.read_table(path, filters=filters)
    # each stay's rows in time order whatever the file's order (observations are written clustered by concept)
    for r in tbl.sort_by([(c, "ascending") for c in tbl.column_names]).to_pylist():
        out[r["stay_id"]].append(r)
    return out


def iter_timelines(timeline_dir: str | Path, stay_ids: set[int] | None = None) -> Iterator[PatientTimeline]:
    """Yield the timeline of every stay (or of ``stay_ids``) in a timeline-schema folder, ordered by stay id."""
    d = Path(timeline_dir)
    stays = _rows(d / "stays.parquet", stay_ids)
    obs = _rows(d / "observations.parquet", stay_ids)
    inf = _rows(d / "infusions.parquet", stay_ids)
    abx = _rows(d / "antibiotics.parquet", stay_ids)
    cx = _rows(d / "cultures.parquet", stay_ids)
    vent = _rows(d / "ventilation.parquet", stay_ids)
    for sid in sorted(stays):
        (s,) = stays[sid]
        yield PatientTimeline(
            stay_id=sid,
            icu_intime=s["intime"],
            icu_outtime=s["outtime"],
            admission_time=s["admittime"],
            admission_source=s["admission_source"],
            weight_kg=s["weight_kg"],
            observations=[
                Observation(time=o["time"], concept=o["concept"], value=True if o["concept"] == "gcs_sedated" else o["value"])
                for o in obs.get(sid, [])
                if o["concept"] in SOFA_OBSERVATION_CONCEPTS and o["value"] is not None
            ],
            infusions=[
                Infusion(drug=i["drug"], start=i["start"], stop=i["stop"], rate_ug_kg_min=i["rate_ug_kg_min"])
                for i in inf.get(sid, [])
            ],
            antibiotics=[AntibioticAdministration(time=a["time"], name=a["name"], route=a["route"]) for a in abx.get(sid, [])],
            cultures=[CultureSample(time=c["time"], specimen=c["specimen"] or "unknown", positive=c["positive"]) for c in cx.get(sid, [])],
            ventilation=[VentilationEpisode(start=v["start"], end=v["stop"], kind=v["kind"]) for v in vent.get(sid, [])],
        )


def load_timeline(timeline_dir: str | Path, stay_id: int) -> PatientTimeline:
    """The timeline of one stay."""
    (tl,) = list(iter_timelines(timeline_dir, {stay_id}))
    return tl
