"""Schemathesis drives the API from its own OpenAPI document: no 5xx, and every 4xx carries a stable error code.

Operations are called as a site coordinator and as an administrator over a seeded store copy (two sites,
randomised patients). Schemathesis generates conforming and non-conforming requests from each operation's schema;
the invariant checked is the issue's: no server error, every rejection a clear 4xx with an ``IG-E…`` code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service_support import copy_store, login, seed_store

CODE_RE = re.compile(r"^IG-E\d{3}$")
_state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app over a seeded store, with bearer headers of two roles."""
    from fastapi.testclient import TestClient

    from immunoguide.service import ServiceSettings, create_app
    from service_support import NOW

    d = tmp_path_factory.mktemp("schemathesis")
    seed_store(d / "template.db")
    db = copy_store(d / "template.db", d)
    app = create_app(f"sqlite:///{db}", settings=ServiceSettings(clock=lambda: NOW))
    with TestClient(app, raise_server_exceptions=False) as c:
        _state["headers"] = {"coord": login(c, "coord-ath"), "admin": login(c, "admin")}
        _state["client"] = c
        yield app


def _schema() -> Any:
    from immunoguide.service import create_app

    return schemathesis.openapi.from_dict(create_app("sqlite://").openapi())


schema = _schema()


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@pytest.mark.parametrize("who", ["coord", "admin"])
def test_no_operation_answers_5xx_and_every_rejection_has_an_error_code(case: Any, who: str, api: Any) -> None:
    """Every generated request gets < 500, and a 4xx body with an IG-E… code (pydantic-style detail included)."""
    client = _state["client"]
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {**(kwargs.get("headers") or {}), **_state["headers"][who]}
    r = client.request(kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params"),
                       content=kwargs.get("content"), json=kwargs.get("json"))
    _state.setdefault("seen", []).append((case.method, case.path, r.status_code))
    assert r.status_code < 500, f"{case.method} {case.path}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        body = r.json()
        assert CODE_RE.match(str(body.get("code"))), f"{case.method} {case.path}: {r.status_code} {body}"


def test_the_fuzzing_reached_the_operations(api: Any) -> None:
    """Sanity check of the run above: many operations answered, with successes as well as rejections."""
    seen = _state.get("seen", [])
    assert len({(m, p) for m, p, _ in seen}) >= 20
    codes = {s for _, _, s in seen}
    assert any(200 <= s < 300 for s in codes) and any(400 <= s < 500 for s in codes)
