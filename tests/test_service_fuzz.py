"""Fuzzing the API from its own OpenAPI document, and the CDS hook with malformed FHIR bundles.

Alongside schemathesis (tests/test_service_schemathesis.py), this module fuzzes with Hypothesis directly: for every
operation of ``/openapi.json`` it builds request bodies, path and query parameters from the operation's JSON schema
(``$ref``, objects, arrays, strings with patterns and lengths, numbers, enums, ``anyOf``), plus malformed variants
(the body replaced by any JSON value or by bytes that are not JSON, a required property dropped, an unknown
property added, a property of the wrong type, non-finite numbers). Invariant for every request: **no 5xx**, and
every 4xx answer carries an ``IG-E…`` error code. The same invariant holds for CDS Hooks calls whose FHIR prefetch
was mutated at a random place.

The store is a seeded copy (two sites, randomised patients), so trial operations run their real checks; requests
are made as a site coordinator or an administrator. Examples are derandomised (reproducible in CI).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoguide.rules.eligibility import PatientRecord
from immunoguide.rules.sofa import SofaInputs
from immunoguide.service import create_app
from service_support import PATIENTS, client_for, copy_store, login, patient_view_request, seed_store

FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
CODE_RE = re.compile(r"^IG-E\d{3}$")

#: Field names that steer random objects into the rules' real checks.
HINT_KEYS = sorted(
    set(SofaInputs.model_fields) | set(PatientRecord.model_fields)
    | {"ferritin", "ferritin_unit", "ferritin_ng_per_ml", "ferritin_method", "ferritin_sample_time", "hla_dr",
       "hla_dr_unit", "hla_dr_per_monocyte", "hla_dr_method", "hla_dr_sample_time", "anchor_time", "at", "id",
       "fio2_percent", "bilirubin_umol_per_l", "missing_component", "gcs_when_sedated"}
)


def _openapi() -> dict[str, Any]:
    return create_app("sqlite://").openapi()


OPENAPI = _openapi()
OPERATIONS = sorted((m.upper(), p) for p, ops in OPENAPI["paths"].items() for m in ops)


# ---------------------------------------------------------------------------------------------------------------
# JSON schema → strategies


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = OPENAPI["components"]["schemas"][name]
    return schema


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                          st.dictionaries(st.text(max_size=8), c, max_size=4)),
                          max_leaves=12)
timestamp = st.one_of(
    st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2026, 1, 1),
                 timezones=st.sampled_from([dt.UTC, None])).map(lambda d: d.isoformat()),
    st.text(max_size=25),
)


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that (mostly) conform to ``schema``; free-form objects get the rules' field names as keys."""
    schema = _resolve(schema)
    if "anyOf" in schema:
        return st.one_of(*(from_schema(s, depth) for s in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    t = schema.get("type")
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        return st.integers(schema.get("minimum", -10**6), schema.get("maximum", 10**6))
    if t == "number":
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if t == "string":
        if schema.get("format") == "date-time":
            return timestamp
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema.get("maxLength", 10**6))
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 30), 30))
    if t == "array":
        return st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=3)
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not props:
            if depth > 1:
                return st.dictionaries(st.text(max_size=8), json_leaf, max_size=3)
            return st.dictionaries(st.sampled_from(HINT_KEYS) | st.text(max_size=10),
                                   json_leaf | timestamp, max_size=6)
        fields = {k: from_schema(v, depth + 1) for k, v in props.items()}
        return st.fixed_dictionaries({k: s for k, s in fields.items() if k in required},
                                     optional={k: s for k, s in fields.items() if k not in required})
    return json_value


@st.composite
def malformed(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A body that breaks the schema in one way (or is not JSON at all: returned as bytes)."""
    schema = _resolve(schema)
    kind = draw(st.sampled_from(["any_json", "not_json", "drop_required", "extra_key", "wrong_type", "non_finite"]))
    if kind == "any_json":
        return draw(json_value)
    if kind == "not_json":
        return draw(st.binary(max_size=40)) + b"{"
    base = draw(from_schema(schema))
    if not isinstance(base, dict):
        return draw(json_value)
    props = list(schema.get("properties", {}))
    if kind == "drop_required" and schema.get("required"):
        base.pop(draw(st.sampled_from(schema["required"])), None)
    elif kind == "extra_key":
        base[draw(st.text(min_size=1, max_size=10))] = draw(json_leaf)
    elif kind == "wrong_type" and props:
        base[draw(st.sampled_from(props))] = draw(json_value)
    elif kind == "non_finite":
        target = next((k for k in props if isinstance(base.get(k), dict)), None)
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        if target is not None:
            base[target][draw(st.sampled_from(HINT_KEYS))] = value
        elif props:
            base[props[0]] = value
    return base


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, dict[str, str]]]]:
    """A client over a seeded store copy, with tokens of a site coordinator and an administrator."""
    d = tmp_path_factory.mktemp("fuzz")
    seed_store(d / "template.db")
    db = copy_store(d / "template.db", d)
    with client_for(db) as c:
        yield c, {"coord": login(c, "coord-ath"), "admin": login(c, "admin")}


def _check(r: Any, what: str) -> None:
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        body = r.json()
        assert CODE_RE.match(str(body.get("code"))), f"{what}: {r.status_code} without an error code: {body}"


def _send(client: Any, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
    if isinstance(body, bytes):
        return client.request(method, url, content=body, headers={**headers, "Content-Type": "application/json"})
    if body is None:
        return client.request(method, url, headers=headers)
    return client.request(method, url, content=json.dumps(body, allow_nan=True).encode(),
                          headers={**headers, "Content-Type": "application/json"})


@st.composite
def requests_for(draw: st.DrawFn, method: str, path: str) -> tuple[str, Any]:
    """(url, body) for one operation: schema-conforming or malformed."""
    op = OPENAPI["paths"][path][method.lower()]
    url = path
    query: list[str] = []
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        if p["in"] == "path":
            if p["name"] == "code":
                value = draw(st.sampled_from(list(PATIENTS)) | st.text(min_size=1, max_size=70))
            else:
                value = draw(from_schema(schema) | st.integers() | st.text(min_size=1, max_size=5))
            url = url.replace("{" + p["name"] + "}", quote(str(value), safe="") or "x")
        elif p["in"] == "query" and draw(st.booleans()):
            value = draw(from_schema(schema) | st.text(max_size=8))
            query.append(f"{p['name']}={quote(str(value), safe='')}")
    if query:
        url += "?" + "&".join(query)
    body: Any = None
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None:
        body = draw(st.one_of(from_schema(content["schema"]), malformed(content["schema"])))
    return url, body


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_never_fails_with_a_server_error(fuzz_client: Any, method: str, path: str) -> None:
    """Random and malformed requests built from the operation's schema get no 5xx; every 4xx has an error code."""
    client, tokens = fuzz_client

    @FUZZ
    @given(req=requests_for(method, path), who=st.sampled_from(["coord", "admin"]))
    def run(req: tuple[str, Any], who: str) -> None:
        url, body = req
        headers = tokens[who]
        if path == "/auth/logout":
            headers = login(client, "coord-ath" if who == "coord" else "admin")
        _check(_send(client, method, url, body, headers), f"{method} {url} body={str(body)[:200]}")

    run()


# ---------------------------------------------------------------------------------------------------------------
# malformed FHIR


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


BASE_CALL = patient_view_request("immunoparalysis")
PREFETCH_PATHS = [p for p in _paths(BASE_CALL) if p[:1] == ("prefetch",) and len(p) > 1]


@st.composite
def mutated_call(draw: st.DrawFn) -> dict[str, Any]:
    """The immunoparalysis call with 1-3 places of its FHIR prefetch replaced, deleted or wrapped."""
    call = copy.deepcopy(BASE_CALL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PREFETCH_PATHS))
        parent: Any = call
        try:
            for k in path[:-1]:
                parent = parent[k]
            key = path[-1]
            current = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "delete", "wrap", "stringify"]))
        if action == "replace":
            parent[key] = draw(json_value)
        elif action == "delete":
            del parent[key]
        elif action == "wrap":
            parent[key] = [current]
        else:
            parent[key] = json.dumps(current)
    return call


@FUZZ
@given(call=mutated_call())
def test_malformed_fhir_prefetch_is_a_clear_4xx(fuzz_client: Any, call: dict[str, Any]) -> None:
    """A CDS call with a randomly damaged FHIR prefetch is answered 200 or 4xx with a code, never 5xx."""
    client, tokens = fuzz_client
    r = _send(client, "POST", "/cds-services/immunoguide-patient-view", call, tokens["coord"])
    _check(r, f"CDS call {json.dumps(call)[:300]}")
    if r.status_code == 200:
        for card in r.json()["cards"]:
            assert len(card["summary"]) <= 140


def test_fuzzer_covers_every_operation_of_the_openapi_document() -> None:
    """Every operation of the served document is fuzzed (the parametrisation is taken from it)."""
    served = {(m.upper(), p) for p, ops in create_app("sqlite://").openapi()["paths"].items() for m in ops}
    assert served == set(OPERATIONS) and len(OPERATIONS) >= 30


def test_schema_strategy_produces_valid_screen_requests() -> None:
    """The schema walker yields bodies the ScreenRequest model accepts (so fuzzing reaches the trial code)."""
    from hypothesis import find

    from immunoguide.service.schemas import ScreenRequest

    schema = OPENAPI["paths"]["/trial/patients"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = find(from_schema(schema), lambda b: isinstance(b, dict) and "code" in b,
                settings=settings(database=None, derandomize=True))
    ScreenRequest.model_validate(body)
