"""The tables the generator writes: Arrow schemas (MIMIC-IV v2.2 column names, the PostgreSQL build's types) and
directories, the column set of each MIMIC-IV release, turning numpy columns into sorted Arrow tables, and the rows of
the two dictionaries (``d_items``, ``d_labitems``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# the one import of the MIMIC-IV catalogue the reader uses too (layouts, releases, columns and types per table)
from immunoguide.cohort.sources.mimic4_tables import DUCKDB_SCHEMAS as DUCKDB_SCHEMAS
from immunoguide.cohort.sources.mimic4_tables import LAYOUTS as LAYOUTS
from immunoguide.cohort.sources.mimic4_tables import MIMIC4_VERSIONS as MIMIC4_VERSIONS
from immunoguide.cohort.sources.mimic4_tables import mimic4_columns
from immunoguide.synth._catalogue import (
    _CHART_ITEMS,
    _INPUT_ITEMS,
    _LAB_ITEMS,
    _NAT,
    _OUTPUT_ITEMS,
    _PROC_ITEMS,
    BAD_ROW_KINDS,
)

# --------------------------------------------------------------------------------------------------------------
# Schemas (MIMIC-IV v2.2 column names; types follow the MIMIC-IV PostgreSQL build)
# --------------------------------------------------------------------------------------------------------------

_i16, _i32, _i64, _f64, _str = pa.int16(), pa.int32(), pa.int64(), pa.float64(), pa.string()
_ts = pa.timestamp("us")


def _schema(*cols: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in cols])


SCHEMAS: Mapping[str, pa.Schema] = MappingProxyType(
    {
        "patients": _schema(
            ("subject_id", _i32),
            ("gender", _str),
            ("anchor_age", _i16),
            ("anchor_year", _i16),
            ("anchor_year_group", _str),
            ("dod", pa.date32()),
        ),
        "admissions": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("admittime", _ts),
            ("dischtime", _ts),
            ("deathtime", _ts),
            ("admission_type", _str),
            ("admit_provider_id", _str),
            ("admission_location", _str),
            ("discharge_location", _str),
            ("insurance", _str),
            ("language", _str),
            ("marital_status", _str),
            ("race", _str),
            ("edregtime", _ts),
            ("edouttime", _ts),
            ("hospital_expire_flag", _i16),
        ),
        "diagnoses_icd": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("seq_num", _i32),
            ("icd_code", _str),
            ("icd_version", _i32),
        ),
        "labevents": _schema(
            ("labevent_id", _i64),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("specimen_id", _i64),
            ("itemid", _i32),
            ("order_provider_id", _str),
            ("charttime", _ts),
            ("storetime", _ts),
            ("value", _str),
            ("valuenum", _f64),
            ("valueuom", _str),
            ("ref_range_lower", _f64),
            ("ref_range_upper", _f64),
            ("flag", _str),
            ("priority", _str),
            ("comments", _str),
        ),
        "microbiologyevents": _schema(
            ("microevent_id", _i64),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("micro_specimen_id", _i64),
            ("order_provider_id", _str),
            ("chartdate", _ts),
            ("charttime", _ts),
            ("spec_itemid", _i32),
            ("spec_type_desc", _str),
            ("test_seq", _i32),
            ("storedate", _ts),
            ("storetime", _ts),
            ("test_itemid", _i32),
            ("test_name", _str),
            ("org_itemid", _i32),
            ("org_name", _str),
            ("isolate_num", _i16),
            ("quantity", _str),
            ("ab_itemid", _i32),
            ("ab_name", _str),
            ("dilution_text", _str),
            ("dilution_comparison", _str),
            ("dilution_value", _f64),
            ("interpretation", _str),
            ("comments", _str),
        ),
        "prescriptions": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("pharmacy_id", _i64),
            ("poe_id", _str),
            ("poe_seq", _i32),
            ("order_provider_id", _str),
            ("starttime", _ts),
            ("stoptime", _ts),
            ("drug_type", _str),
            ("drug", _str),
            ("formulary_drug_cd", _str),
            ("gsn", _str),
            ("ndc", _str),
            ("prod_strength", _str),
            ("form_rx", _str),
            ("dose_val_rx", _str),
            ("dose_unit_rx", _str),
            ("form_val_disp", _str),
            ("form_unit_disp", _str),
            ("doses_per_24_hrs", _f64),
            ("route", _str),
        ),
        "icustays": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("first_careunit", _str),
            ("last_careunit", _str),
            ("intime", _ts),
            ("outtime", _ts),
            ("los", _f64),
        ),
        "chartevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("charttime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("value", _str),
            ("valuenum", _f64),
            ("valueuom", _str),
            ("warning", _i16),
        ),
        "inputevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("starttime", _ts),
            ("endtime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("amount", _f64),
            ("amountuom", _str),
            ("rate", _f64),
            ("rateuom", _str),
            ("orderid", _i64),
            ("linkorderid", _i64),
            ("ordercategoryname", _str),
            ("secondaryordercategoryname", _str),
            ("ordercomponenttypedescription", _str),
            ("ordercategorydescription", _str),
            ("patientweight", _f64),
            ("totalamount", _f64),
            ("totalamountuom", _str),
            ("isopenbag", _i16),
            ("continueinnextdept", _i16),
            ("statusdescription", _str),
            ("originalamount", _f64),
            ("originalrate", _f64),
        ),
        "outputevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("charttime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("value", _f64),
            ("valueuom", _str),
        ),
        "procedureevents": _schema(
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("caregiver_id", _i32),
            ("starttime", _ts),
            ("endtime", _ts),
            ("storetime", _ts),
            ("itemid", _i32),
            ("value", _f64),
            ("valueuom", _str),
            ("location", _str),
            ("locationcategory", _str),
            ("orderid", _i64),
            ("linkorderid", _i64),
            ("ordercategoryname", _str),
            ("ordercategorydescription", _str),
            ("patientweight", _f64),
            ("isopenbag", _i16),
            ("continueinnextdept", _i16),
            ("statusdescription", _str),
            ("originalamount", _f64),
            ("originalrate", _f64),
        ),
        "d_items": _schema(
            ("itemid", _i32),
            ("label", _str),
            ("abbreviation", _str),
            ("linksto", _str),
            ("category", _str),
            ("unitname", _str),
            ("param_type", _str),
            ("lownormalvalue", _f64),
            ("highnormalvalue", _f64),
        ),
        "d_labitems": _schema(("itemid", _i32), ("label", _str), ("fluid", _str), ("category", _str)),
        "_truth/stays": _schema(
            ("stay_id", _i32),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("seed", _i64),
            ("infected", pa.bool_()),
            ("source", _str),
            ("onset_kind", _str),
            ("infection_onset", _ts),
            ("severity", _f64),
            ("ventilated", pa.bool_()),
            ("vasopressors", pa.bool_()),
            ("died", pa.bool_()),
            ("screened", pa.bool_()),
            ("screen_time", _ts),
            ("ferritin_true_ng_per_ml", _f64),
            ("ferritin_censored", pa.bool_()),
            ("hla_dr_true_ab_per_cell", _f64),
            ("hla_dr_reported", pa.bool_()),
            ("endotype_true", _str),
            ("endotype_observable", _str),
            ("bad_rows_total", _i32),
            *[(f"bad_{k}", _i32) for k in BAD_ROW_KINDS],
        ),
        "_truth/bad_rows": _schema(
            ("table", _str),
            ("kind", _str),
            ("subject_id", _i32),
            ("hadm_id", _i32),
            ("stay_id", _i32),
            ("itemid", _i32),
            ("time", _ts),
            ("row_id", _i64),
        ),
    }
)

#: Directory of each table relative to the output directory.
TABLE_DIRS: Mapping[str, str] = MappingProxyType(
    {
        "patients": "hosp/patients",
        "admissions": "hosp/admissions",
        "diagnoses_icd": "hosp/diagnoses_icd",
        "labevents": "hosp/labevents",
        "microbiologyevents": "hosp/microbiologyevents",
        "prescriptions": "hosp/prescriptions",
        "d_labitems": "hosp/d_labitems",
        "icustays": "icu/icustays",
        "chartevents": "icu/chartevents",
        "inputevents": "icu/inputevents",
        "outputevents": "icu/outputevents",
        "procedureevents": "icu/procedureevents",
        "d_items": "icu/d_items",
        "_truth/stays": "_truth/stays",
        "_truth/bad_rows": "_truth/bad_rows",
    }
)

EVENT_TABLES = (
    "chartevents",
    "labevents",
    "inputevents",
    "outputevents",
    "procedureevents",
    "microbiologyevents",
    "prescriptions",
)
_CHUNKED = tuple(t for t in TABLE_DIRS if t not in ("d_items", "d_labitems"))
#: The MIMIC-IV tables (every table but the truth).
_MIMIC_TABLES = tuple(t for t in TABLE_DIRS if not t.startswith("_"))
#: File name of the ``duckdb`` layout (mimic-code's default output name).
DUCKDB_FILE = "mimic4.db"


def _schemas_for(version: str) -> dict[str, pa.Schema]:
    """:data:`SCHEMAS` with each MIMIC-IV table cut to the columns of ``version`` (the truth tables unchanged)."""
    out = dict(SCHEMAS)
    for t in _MIMIC_TABLES:
        keep = [c for c, _ in mimic4_columns(t, version)]
        out[t] = pa.schema([SCHEMAS[t].field(c) for c in keep])
    return out


# --------------------------------------------------------------------------------------------------------------
# Building Arrow tables from numpy columns
# --------------------------------------------------------------------------------------------------------------


def _cat(pool: Any, idx: np.ndarray) -> pa.Array:
    """Strings ``pool[idx]``; ``idx < 0`` → NULL."""
    arr = pool if isinstance(pool, pa.Array) else pa.array(list(pool), type=pa.string())
    return pc.take(arr, pa.array(idx.astype(np.int32), mask=idx < 0))


def _numtext(num: np.ndarray, text_idx: np.ndarray, texts: pa.Array) -> pa.Array:
    """``value`` column: ``texts[text_idx]`` where given, else the number formatted; NULL when neither."""
    as_text = pc.take(texts, pa.array(np.where(text_idx >= 0, text_idx, 0).astype(np.int32)))
    as_num = pc.cast(pa.array(np.where(np.isnan(num), 0.0, num)), pa.string())
    out = pc.if_else(pa.array(text_idx >= 0), as_text, as_num)
    null = (text_idx < 0) & np.isnan(num)
    if null.any():
        out = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), out)
    return out


def _to_arrow(values: Any, typ: pa.DataType) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == typ else values.cast(typ)
    v = np.asarray(values)
    if pa.types.is_timestamp(typ):
        mask = v == _NAT
        return pa.array(np.where(mask, 0, v) * 1_000_000, type=typ, mask=mask)
    if pa.types.is_date32(typ):
        mask = v == _NAT
        return pa.array(np.where(mask, 0, v).astype(np.int32), type=typ, mask=mask)
    if pa.types.is_floating(typ):
        return pa.array(v.astype(np.float64), type=typ, from_pandas=True)
    if pa.types.is_boolean(typ):
        return pa.array(v.astype(bool), type=typ)
    if pa.types.is_integer(typ):
        mask = v < 0
        return pa.array(np.where(mask, 0, v).astype(typ.to_pandas_dtype()), type=typ, mask=mask)
    raise TypeError(f"no numpy conversion for {typ}")  # pragma: no cover - programming error


def _finish(
    name: str, cols: dict[str, Any], s: np.ndarray, t: np.ndarray, g0: int, perm: np.ndarray | None = None
) -> pa.Table:
    """Sort rows by (stay, time), build the Arrow table with the table's schema plus the hidden ``_g`` column."""
    schema = SCHEMAS[name]
    if perm is None:
        perm = _sort_perm(s, t)
    arrays = []
    for f in schema:
        v = cols[f.name]
        if callable(v):
            arrays.append(_to_arrow(v(perm), f.type))
        elif isinstance(v, (pa.Array, pa.ChunkedArray)):
            arrays.append(_to_arrow(pc.take(v, pa.array(perm)), f.type))
        else:
            arrays.append(_to_arrow(np.asarray(v)[perm], f.type))
    arrays.append(pa.array((g0 + s[perm]).astype(np.int64)))
    return pa.Table.from_arrays(arrays, schema=schema.append(pa.field("_g", pa.int64())))


def _sort_perm(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row order by (stay, time); ties keep generation order (stable), so the order is reproducible."""
    tt = np.where(t == _NAT, 0, t)
    key = s.astype(np.int64) * (1 << 34) + (tt - (tt.min() if len(tt) else 0))
    return np.argsort(key, kind="stable")


# --------------------------------------------------------------------------------------------------------------
# Dictionaries
# --------------------------------------------------------------------------------------------------------------


def _d_items() -> dict[str, list[Any]]:
    rows: list[tuple[Any, ...]] = []
    for itemid, (label, abbr, cat, unit, ptype) in _CHART_ITEMS.items():
        rows.append((itemid, label, abbr, "chartevents", cat, unit, ptype, None, None))
    for itemid, (label, cat, unit) in _INPUT_ITEMS.items():
        rows.append((itemid, label, label, "inputevents", cat, unit, "Solution", None, None))
    for itemid, label in _OUTPUT_ITEMS.items():
        rows.append((itemid, label, label, "outputevents", "Output", "mL", "Numeric", None, None))
    for itemid, label in _PROC_ITEMS.items():
        rows.append((itemid, label, label, "procedureevents", "Ventilation", None, "Process", None, None))
    rows.sort()
    names = SCHEMAS["d_items"].names
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


def _d_labitems() -> dict[str, list[Any]]:
    rows = sorted((itemid, v[0], v[1], v[2]) for itemid, v in _LAB_ITEMS.items())
    return {name: [r[i] for r in rows] for i, name in enumerate(SCHEMAS["d_labitems"].names)}
