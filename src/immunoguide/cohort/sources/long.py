"""A documented long format for any hospital → the timeline schema.

One row per fact, CSV or Parquet, with the columns

=============  ========  ==================================================================================
column         required  meaning
=============  ========  ==================================================================================
stay_id        yes       integer ICU stay id
time           yes       ISO date-time of the fact (start time for intervals)
concept        yes       what the row is (see below)
value          no        number (in ``unit``); empty for text-only facts
unit           no        the value's unit; converted once to the concept's canonical unit
end_time       no        end of an interval (infusions, ventilation)
text           no        text payload (antibiotic name, culture specimen, ventilation kind, censored result)
method         no        assay method tag (``quantibrite_abc``, ``mfi``) for biomarkers
=============  ========  ==================================================================================

Concepts: every measurement concept of ``criteria/concepts.toml`` (``platelets_10e3_per_ul``, ``ferritin_ng_per_ml``
… — value + unit, censored text allowed for biomarkers), ``urine_output_ml`` (mL), ``gcs_sedated`` (flag),
the infusion drugs ``dopamine | dobutamine | epinephrine | norepinephrine`` (rate + unit + end_time),
``antibiotic`` (text = name), ``culture`` (text = specimen, value 1 positive / 0 negative / empty unknown),
``ventilation`` (text = kind, end_time), ``diagnosis`` (text = ICD code, value = ICD version), and the stay facts
``icu_intime``, ``icu_outtime``, ``admission_source`` (text), ``age_years`` (value), ``weight_kg`` (value),
``admit_time``, ``death_time``.

Rows that break the contract are not loaded: each is reported with its row number (1-based, header excluded),
column and what was expected, in ``data_quality`` and in the returned :class:`LongFormatReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow

from immunoguide.cohort.schema import SCHEMAS, write_table
from immunoguide.criteria.definitions import SOFA_DEFINITIONS
from immunoguide.errors import InputError
from immunoguide.units import concepts, normalise_unit

__all__ = ["LONG_SCHEMA", "LongFormatReport", "RowError", "convert_long"]

DRUGS = SOFA_DEFINITIONS.catecholamines
VENT_KINDS = SOFA_DEFINITIONS.ventilation_kinds
STAY_FACTS = ("icu_intime", "icu_outtime", "admission_source", "age_years", "weight_kg", "admit_time", "death_time")
EVENT_CONCEPTS = (*DRUGS, "antibiotic", "culture", "ventilation", "diagnosis", "urine_output_ml", "gcs_sedated")

#: The column contract (pandera): types and required columns; row-level semantics are checked in convert_long.
LONG_SCHEMA = pa.DataFrameSchema(
    {
        "stay_id": pa.Column("Int64", nullable=False, coerce=True),
        "time": pa.Column("datetime64[ns]", nullable=False, coerce=True),
        "concept": pa.Column(str, nullable=False),
        "value": pa.Column(float, nullable=True, coerce=True, required=False),
        "unit": pa.Column(str, nullable=True, required=False),
        "end_time": pa.Column("datetime64[ns]", nullable=True, coerce=True, required=False),
        "text": pa.Column(str, nullable=True, required=False),
        "method": pa.Column(str, nullable=True, required=False),
    },
    strict=True,
)


@dataclass(frozen=True)
class RowError:
    """One rejected row: 1-based data row number, column, what was expected and what came."""

    row: int
    column: str
    expected: str
    got: str
    stay_id: int | None = None


@dataclass(frozen=True)
class LongFormatReport:
    rows_read: int
    rows_loaded: int
    errors: tuple[RowError, ...]
    rows: dict[str, int] = field(default_factory=dict)


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def convert_long(path: str | Path, out_dir: str | Path) -> LongFormatReport:
    """Validate a long-format file and write the timeline schema (Parquet) to ``out_dir``.

    Raises :class:`~immunoguide.errors.InputError` only when the file as a whole is unusable (missing required
    columns, unknown columns); bad rows are reported and skipped, never silently dropped.
    """
    path, out = Path(path), Path(out_dir)
    raw = _read(path)
    missing = [c for c in ("stay_id", "time", "concept") if c not in raw.columns]
    unknown = [c for c in raw.columns if c not in LONG_SCHEMA.columns]
    if missing or unknown:
        raise InputError(
            expected="columns stay_id, time, concept (+ optional value, unit, end_time, text, method)",
            got=f"missing {missing}, unknown {unknown}",
            where=str(path),
            todo="rename the columns to the documented long format",
        )
    for col in ("value", "unit", "end_time", "text", "method"):
        if col not in raw.columns:
            raw[col] = None
    errors: list[RowError] = []
    bad: set[int] = set()

    seen: set[tuple[int, str]] = set()

    def reject(i: int, col: str, expected: str, got: Any) -> None:
        bad.add(i)
        if (i, col) in seen:
            return
        seen.add((i, col))
        sid = raw.at[i, "stay_id"]
        try:
            sid_int = int(sid)
        except (TypeError, ValueError):
            sid_int = None
        errors.append(RowError(row=i + 1, column=col, expected=expected, got=str(got), stay_id=sid_int))

    # Type contract via pandera (lazy: collect every failure with its row index).
    typed = raw.copy()
    try:
        typed = LONG_SCHEMA.validate(raw, lazy=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        for _, f in fc.iterrows():
            idx = f.get("index")
            if idx is None or pd.isna(idx):
                continue
            reject(int(idx), str(f["column"]), _expected_for(str(f["column"])), f["failure_case"])
        typed = raw.copy()
        typed["stay_id"] = pd.to_numeric(typed["stay_id"], errors="coerce").astype("Int64")
        typed["time"] = pd.to_datetime(typed["time"], errors="coerce")
        typed["end_time"] = pd.to_datetime(typed["end_time"], errors="coerce")
        typed["value"] = pd.to_numeric(typed["value"], errors="coerce")

    known = set(concepts()) | set(EVENT_CONCEPTS) | set(STAY_FACTS)
    cmap = concepts()
    out_rows: dict[str, list[dict[str, Any]]] = {k: [] for k in SCHEMAS}
    stays: dict[int, dict[str, Any]] = {}
    for i, r in typed.iterrows():
        i = int(i)
        if i in bad:
            continue
        c = str(r["concept"])
        sid, t = int(r["stay_id"]), r["time"].to_pydatetime()
        val = None if pd.isna(r["value"]) else float(r["value"])
        unit = None if pd.isna(r["unit"]) else str(r["unit"])
        text = None if pd.isna(r["text"]) else str(r["text"])
        end = None if pd.isna(r["end_time"]) else r["end_time"].to_pydatetime()
        st = stays.setdefault(sid, {"stay_id": sid})
        if c not in known:
            reject(i, "concept", "a documented concept (see immunoguide.cohort.sources.long)", c)
            continue
        if c in STAY_FACTS:
            key = {"icu_intime": "intime", "icu_outtime": "outtime", "admit_time": "admittime", "death_time": "deathtime"}.get(c, c)
            if c in ("age_years", "weight_kg"):
                if val is None or not (cmap[c].min <= val <= cmap[c].max):
                    reject(i, "value", f"{c} between {cmap[c].min:g} and {cmap[c].max:g}", r["value"])
                    continue
                st[key] = val
            elif c == "admission_source":
                if text not in ("emergency_department", "inpatient"):
                    reject(i, "text", "emergency_department or inpatient", text)
                    continue
                st[key] = text
            else:
                st[key] = t
            continue
        if c in DRUGS:
            if end is None or end <= t:
                reject(i, "end_time", "an end_time after time for an infusion", r["end_time"])
                continue
            try:
                from immunoguide.units import to_canonical

                rate = to_canonical(f"{c}_ug_kg_min", val if val is not None else float("nan"), unit or "")
            except InputError as exc:
                reject(i, "unit" if "unit" in exc.expected or exc.code == "IG-E101" else "value", exc.expected, exc.got)
                continue
            out_rows["infusions"].append({"stay_id": sid, "drug": c, "start": t, "stop": end, "rate_ug_kg_min": rate, "source": f"long:{i + 1}"})
        elif c == "antibiotic":
            if not text:
                reject(i, "text", "the antibiotic name", text)
                continue
            out_rows["antibiotics"].append({"stay_id": sid, "time": t, "name": text, "route": unit, "time_is_date_only": False})
        elif c == "culture":
            if not text:
                reject(i, "text", "the culture specimen", text)
                continue
            pos = None if val is None else bool(val)
            out_rows["cultures"].append({"stay_id": sid, "time": t, "specimen": text, "positive": pos, "time_is_date_only": False})
        elif c == "ventilation":
            if text not in VENT_KINDS:
                reject(i, "text", f"a ventilation kind in {VENT_KINDS}", text)
                continue
            if end is None or end < t:
                reject(i, "end_time", "an end_time at or after time for ventilation", r["end_time"])
                continue
            out_rows["ventilation"].append({"stay_id": sid, "start": t, "stop": end, "kind": text})
        elif c == "diagnosis":
            if not text:
                reject(i, "text", "an ICD code", text)
                continue
            out_rows["diagnoses"].append({"stay_id": sid, "code": text, "version": int(val) if val is not None else 10})
        elif c in ("urine_output_ml", "gcs_sedated"):
            if val is None:
                reject(i, "value", f"a number for {c}", r["value"])
                continue
            out_rows["observations"].append(
                {"stay_id": sid, "time": t, "concept": c, "value": val, "value_text": None, "unit": unit, "method": None, "source": f"long:{i + 1}"}
            )
        else:  # measurement concept
            from immunoguide.units import to_canonical

            canonical = None
            if val is not None:
                try:
                    canonical = to_canonical(c, val, unit or cmap[c].unit)
                except InputError as exc:
                    col = "unit" if exc.code == "IG-E101" else "value"
                    reject(i, col, exc.expected, exc.got)
                    continue
            elif not text:
                reject(i, "value", f"a number (or a censored text such as '>2000') for {c}", r["value"])
                continue
            elif unit is not None and normalise_unit(unit) not in cmap[c].units:
                reject(i, "unit", f"{c} in one of {sorted(cmap[c].units)}", unit)
                continue
            out_rows["observations"].append(
                {"stay_id": sid, "time": t, "concept": c, "value": canonical, "value_text": text, "unit": unit,
                 "method": None if pd.isna(r["method"]) else str(r["method"]), "source": f"long:{i + 1}"}
            )
    for st in stays.values():
        out_rows["stays"].append({**{f.name: None for f in SCHEMAS["stays"]}, **st, "dataset": "long"})
    for e in errors:
        out_rows["data_quality"].append(
            {"stay_id": e.stay_id, "source": path.name, "item": e.column, "issue": f"row {e.row}: expected {e.expected}", "n": 1, "example": e.got}
        )
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for table, schema in SCHEMAS.items():
        tbl = pyarrow.Table.from_pylist(out_rows[table], schema=schema)
        write_table(tbl, out / f"{table}.parquet", table)
        counts[table] = tbl.num_rows
    return LongFormatReport(rows_read=len(raw), rows_loaded=len(raw) - len(bad), errors=tuple(sorted(errors, key=lambda e: e.row)), rows=counts)


def _expected_for(col: str) -> str:
    return {
        "stay_id": "an integer stay id",
        "time": "an ISO date-time",
        "end_time": "an ISO date-time or empty",
        "value": "a number or empty",
        "concept": "a concept name",
    }.get(col, f"a valid {col}")
