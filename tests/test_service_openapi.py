"""The API contract: the service's OpenAPI document equals the reviewed golden file ``tests/golden/openapi.json``.

Any change to a route, a request or response model, a status code or a description changes the document and fails
this test until the golden file is regenerated and the diff reviewed::

    .venv/bin/python tests/test_service_openapi.py --regenerate

(FastAPI's own docs pin ``/openapi.json`` the same way: ``test_openapi_schema`` in its tutorial tests.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden" / "openapi.json"


def current_openapi() -> dict[str, Any]:
    """The OpenAPI document as the running service serves it at /openapi.json."""
    from fastapi.testclient import TestClient

    from immunoguide.service import ServiceSettings, create_app
    from immunoguide.trial import TrialStore
    from immunoguide.trial.keys import TrialKey

    app = create_app(store=TrialStore("sqlite://", key=TrialKey.generate()), settings=ServiceSettings(auto_upgrade=True))
    with TestClient(app) as c:
        r = c.get("/openapi.json")
        r.raise_for_status()
        return r.json()


def test_openapi_document_equals_the_golden_file() -> None:
    """The served OpenAPI document is exactly the golden file (the API contract)."""
    assert current_openapi() == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_every_operation_documents_its_error_body() -> None:
    """Protected operations document 401, and operations with input document 422, with the shared ErrorBody (not
    FastAPI's default validation schema, which this service never returns)."""
    doc = current_openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    public = {("/health", "get"), ("/cds-services", "get"), ("/auth/token", "post")}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            wanted = []
            if (path, method) not in public:
                wanted.append("401")
            if op.get("parameters") or op.get("requestBody"):
                wanted.append("422")
            for status in wanted:
                ref = op["responses"].get(status, {}).get("content", {}).get("application/json", {}).get("schema", {})
                assert ref.get("$ref") == "#/components/schemas/ErrorBody", f"{method.upper()} {path} {status}"


def test_bearer_security_scheme_is_declared_on_protected_operations() -> None:
    """Operations that need a login declare the HTTP bearer scheme; health and discovery do not."""
    doc = current_openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" in doc["paths"]["/trial/patients"]["get"]
    assert "security" not in doc["paths"]["/health"]["get"]
    assert "security" not in doc["paths"]["/cds-services"]["get"]


def regenerate() -> None:
    """Rewrite the golden file from the current code."""
    GOLDEN.write_text(json.dumps(current_openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
    else:
        print(__doc__)


def test_dashboard_router_is_included_when_its_module_exists(tmp_path: Path, monkeypatch: Any) -> None:
    """A module at DASHBOARD_MODULE with an APIRouter ``router`` gets its routes mounted; none is mounted otherwise."""
    from immunoguide.service import app as app_module

    (tmp_path / "ig_fake_dashboard.py").write_text(
        "from fastapi import APIRouter\nrouter = APIRouter()\n\n@router.get('/dashboard/ping')\n"
        "def ping() -> dict[str, str]:\n    return {'pong': 'yes'}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(app_module, "DASHBOARD_MODULE", "ig_fake_dashboard")
    assert "/dashboard/ping" in app_module.create_app("sqlite://").openapi()["paths"]
    monkeypatch.setattr(app_module, "DASHBOARD_MODULE", "ig_no_such_dashboard_module")
    assert "/dashboard/ping" not in app_module.create_app("sqlite://").openapi()["paths"]


def test_an_import_error_inside_the_dashboard_is_not_hidden(tmp_path: Path, monkeypatch: Any) -> None:
    """A dashboard module that exists but fails to import stops create_app with that error."""
    import pytest

    from immunoguide.service import app as app_module

    (tmp_path / "ig_broken_dashboard.py").write_text("import ig_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(app_module, "DASHBOARD_MODULE", "ig_broken_dashboard")
    with pytest.raises(ModuleNotFoundError):
        app_module.create_app("sqlite://")
