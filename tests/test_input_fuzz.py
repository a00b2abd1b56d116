"""Property tests over the input schemas (hypothesis): whatever JSON-like value arrives at an input edge — the
classification record, the SOFA inputs, the screening record, a safety-lab record, a JSON line of the CLI — the
answer is a result or an immunoguide error with a code, never another exception; a boolean is never taken for a
number; a duplicate key is never resolved silently."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoguide.cli._common import run_jsonl
from immunoguide.errors import ImmunoguideError
from immunoguide.jsonsafe import loads_strict
from immunoguide.protocols import load_protocol
from immunoguide.rules.eligibility import PatientRecord
from immunoguide.rules.endotype import classify_endotype, pending_from_record, results_from_record
from immunoguide.rules.sofa import SofaInputs, score_sofa
from immunoguide.trial.access import Actor
from immunoguide.trial.safety_labs import _fields as safety_fields
from immunoguide.trial.safety_labs import _rows as safety_rows

SPEC = load_protocol("immunosep-2025").classification
NOW = datetime(2025, 3, 5, tzinfo=UTC)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=10**300, max_value=10**310),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "820", ">2000", "<15", "GREATER THAN 2000", "DONE", "2,5", "1e400", "ng/mL", "pmol/L", "AB/c",
                     "g/dL", "10^9/L", "quantibrite_abc", "2025-03-01T08:00:00+00:00", "0001-01-01T00:00:00+00:00",
                     "2025-03-01T08:00:00", "not a time"]),
    st.text(max_size=12),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)


def _record(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), json_values, max_size=6)


CLASSIFY_KEYS = ["ferritin", "ferritin_unit", "ferritin_ng_per_ml", "ferritin_method", "ferritin_sample_time",
                 "ferritin_result_time", "ferritin_source", "hla_dr", "hla_dr_unit", "hla_dr_per_monocyte",
                 "hla_dr_method", "hla_dr_sample_time", "hla_dr_result_time", "anchor_time", "at", "id"]
SOFA_KEYS = list(SofaInputs.model_fields) + ["fio2_percent", "bilirubin_umol_per_l", "creatinine_umol_per_l"]
RECORD_KEYS = list(PatientRecord.model_fields)
SAFETY_KEYS = sorted(safety_fields())
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _numeric_bool(model: Any, record: dict[str, Any]) -> bool:
    """Whether the record holds a boolean in a field the model types as a number."""
    from immunoguide.jsonsafe import _kinds

    for k, v in record.items():
        f = getattr(model, "model_fields", {}).get(k)
        if f is not None and isinstance(v, bool) and "boolean" not in _kinds(f.annotation) and "other" not in _kinds(
                f.annotation):
            return True
    return False


@FUZZ
@given(_record(CLASSIFY_KEYS))
def test_classification_record_gives_a_result_or_a_coded_error(record: dict[str, Any]) -> None:
    """Any classification record classifies or raises an immunoguide error (never another exception)."""
    try:
        results, anchor, at = results_from_record(record, SPEC)
        pending_from_record(record, SPEC)
        res = classify_endotype(SPEC, results, anchor_time=anchor, at=at, protocol_label="immunosep-2025")
    except ImmunoguideError as exc:
        assert exc.code.startswith("IG-E")
        return
    assert res.endotype
    for k in ("ferritin", "hla_dr", "ferritin_ng_per_ml", "hla_dr_per_monocyte"):
        assert not isinstance(record.get(k), bool), "a boolean was taken for a result"


@FUZZ
@given(_record(SOFA_KEYS))
def test_sofa_inputs_score_or_raise_a_coded_error_and_never_take_booleans_for_numbers(record: dict[str, Any]) -> None:
    """Any SOFA input record scores or raises an immunoguide error; a boolean in a numeric field always raises."""
    try:
        score_sofa(SofaInputs.from_record(record))
    except ImmunoguideError:
        return
    assert not _numeric_bool(SofaInputs, record)


@FUZZ
@given(_record(RECORD_KEYS))
def test_screening_record_validates_or_raises_and_never_takes_booleans_for_numbers(record: dict[str, Any]) -> None:
    """Any screening record validates or raises (pydantic's own error is allowed only as the domain's wrapper)."""
    from pydantic import ValidationError

    try:
        PatientRecord.model_validate(record)
    except (ImmunoguideError, ValidationError):
        return
    assert not _numeric_bool(PatientRecord, record)


@FUZZ
@given(_record(SAFETY_KEYS))
def test_safety_lab_record_grades_or_raises_a_coded_error(record: dict[str, Any]) -> None:
    """Any safety-lab record gives graded rows or an immunoguide error; no boolean is ever stored as a value."""
    patient = SimpleNamespace(id=1, code="P1")
    try:
        rows = safety_rows(patient, record, Actor("u", "site_coordinator", "ATH"), NOW,  # type: ignore[arg-type]
                           datetime(2025, 3, 4, tzinfo=UTC), None)
    except ImmunoguideError:
        return
    for r in rows:
        assert not isinstance(record.get(r.analyte), bool) and math.isfinite(r.value)


@FUZZ
@given(st.lists(st.one_of(json_values.map(json.dumps), st.text(max_size=40),
                          st.just('{"ferritin": 100, "ferritin": 6100}'), st.just("[" * 200 + "]" * 200),
                          st.just('{"ferritin": ' + "9" * 4400 + "}")), min_size=1, max_size=5))
def test_every_json_line_gets_exactly_one_answer_line(lines: list[str]) -> None:
    """Each non-blank input line gets one output line (a result or a coded error); the batch never stops."""
    from immunoguide.cli._classify import record_handler

    lines = [x.replace("\n", " ").replace("\r", " ") for x in lines]
    out = io.StringIO()
    run_jsonl(io.StringIO("\n".join(lines) + "\n"), out, record_handler(SPEC, "immunosep-2025"))
    answers = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(answers) == sum(1 for x in lines if x.strip())
    for a in answers:
        assert "error" not in a or a["error"]["code"].startswith("IG-E")


@FUZZ
@given(st.dictionaries(st.text(max_size=4), scalars, min_size=1, max_size=4), st.data())
def test_a_duplicated_key_is_always_refused(obj: dict[str, Any], data: st.DataObject) -> None:
    """Repeating any key of a JSON object makes the decoder refuse it (IG-E110) instead of keeping the last value."""
    text = json.dumps(obj, allow_nan=True)
    key = data.draw(st.sampled_from(sorted(obj)))
    dup = text[:-1] + ", " + json.dumps(key) + ": 1}"
    try:
        loads_strict(dup)
    except ImmunoguideError as exc:
        assert exc.code in ("IG-E110", "IG-E100", "IG-E112")  # NaN/huge numbers may be refused first
        return
    raise AssertionError("a duplicate key was accepted")
