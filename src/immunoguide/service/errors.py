"""The only place that maps :mod:`immunoguide.errors` to HTTP status codes.

Every error the service returns has the same JSON body (the shape of
:meth:`immunoguide.errors.ImmunoguideError.to_dict`, plus a link to the docs)::

    {"code": "IG-E406", "error": "UnknownPatient", "message": "[IG-E406] expected …; got …; in …; what to do: …",
     "expected": "…", "got": "…", "where": "…", "field": null, "todo": "…",
     "docs_url": "https://immunoguide.readthedocs.io/errors#IG-E406"}

Request bodies that FastAPI/pydantic reject also get this body (code ``IG-E100``, error ``RequestValidationError``)
with the pydantic error list under ``errors`` (``type``, ``loc``, ``msg``, ``input``, ``url``: the shape of the
pydantic error-handling docs, style guide §2.2). Unknown routes, wrong methods and other HTTP-level refusals get
code ``IG-E100`` too (the request itself is wrong); a missing or invalid token ``IG-E418`` (401).

Status codes (first matching class wins; :data:`STATUS_BY_ERROR`):

========================================================================= ======
LoginThrottled (too many failed logins; ``Retry-After`` header)          429
NotAuthenticated                                                          401
NotAuthorized (role, or another site's patient)                           403
UnknownPatient, UnknownRecord                                             404
AlreadyRandomized, DuplicateConsent, DuplicateRecord                      409
AllocationListMismatch, AuditChainBroken (integrity: stop and resolve)    409
RandomizationWindowMissed, NotRandomized, WrongStratum, NotEligible,
ConsentMissing, AllocationListUnavailable, PatientWithdrawn (state)       409
NotAVisitDay, ImplausibleTime (a time refused: clock, trial dates, visit day,
late entry without a reason)                                              422
StoreError (store not initialised / outdated), TrialKeyError (the service
has no trial key, or not the store's: a configuration fault)              503
other TrialError                                                          400
InputError (and subclasses), PolicyError, UnknownCriteriaError,
StatisticsError                                                           422
CriteriaError (a shipped data file is invalid: a server fault)            500
UpstreamError (the EHR's FHIR server or JWK Set failed)                   502
any other ImmunoguideError                                                400
========================================================================= ======

Any other exception is logged and answered 500 with code ``IG-E000`` and no internal detail.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from immunoguide.errors import (
    DOCS_URL,
    AllocationListMismatch,
    AllocationListUnavailable,
    AlreadyRandomized,
    AuditChainBroken,
    ConsentMissing,
    CriteriaError,
    DuplicateConsent,
    DuplicateRecord,
    ImmunoguideError,
    ImplausibleTime,
    InputError,
    LoginThrottled,
    NotAuthenticated,
    NotAuthorized,
    NotAVisitDay,
    NotEligible,
    NotRandomized,
    PatientWithdrawn,
    PolicyError,
    RandomizationWindowMissed,
    StatisticsError,
    StoreError,
    TrialError,
    TrialKeyError,
    UnknownCriteriaError,
    UnknownPatient,
    UnknownRecord,
    UpstreamError,
    WrongStratum,
)

__all__ = ["STATUS_BY_ERROR", "error_body", "install_error_handlers", "status_for"]

log = logging.getLogger("immunoguide.service")

#: Error class → HTTP status, most specific first (the first ``isinstance`` match wins).
STATUS_BY_ERROR: tuple[tuple[type[ImmunoguideError], int], ...] = (
    (LoginThrottled, 429),
    (NotAuthenticated, 401),
    (NotAuthorized, 403),
    (UnknownPatient, 404),
    (UnknownRecord, 404),
    (AlreadyRandomized, 409),
    (DuplicateConsent, 409),
    (DuplicateRecord, 409),
    (AllocationListMismatch, 409),
    (AuditChainBroken, 409),
    (RandomizationWindowMissed, 409),
    (NotRandomized, 409),
    (WrongStratum, 409),
    (NotEligible, 409),
    (ConsentMissing, 409),
    (AllocationListUnavailable, 409),
    (PatientWithdrawn, 409),
    (NotAVisitDay, 422),
    (ImplausibleTime, 422),
    (StoreError, 503),
    (TrialKeyError, 503),
    (TrialError, 400),
    (InputError, 422),
    (PolicyError, 422),
    (UnknownCriteriaError, 422),
    (StatisticsError, 422),
    (CriteriaError, 500),
    (UpstreamError, 502),
    (ImmunoguideError, 400),
)

_MAX_GOT = 300


def status_for(exc: ImmunoguideError) -> int:
    """The HTTP status for an immunoguide error (see the module table).

    >>> from immunoguide.errors import UnknownPatient, AlreadyRandomized, ImplausibleValueError
    >>> [status_for(e(expected="x", got=1)) for e in (UnknownPatient, AlreadyRandomized, ImplausibleValueError)]
    [404, 409, 422]
    """
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400  # pragma: no cover - ImmunoguideError is the last entry


def _safe(value: Any) -> Any:
    """A JSON-safe, bounded rendering of an offending value."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value if len(value) <= _MAX_GOT else value[: _MAX_GOT - 3] + "..."
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_GOT else text[: _MAX_GOT - 3] + "..."


def error_body(exc: ImmunoguideError) -> dict[str, Any]:
    """The JSON body of an error response: :meth:`~immunoguide.errors.ImmunoguideError.to_dict` + ``docs_url``."""
    d = exc.to_dict()
    return {
        "code": d["code"],
        "error": d["error"],
        "message": d["message"],
        "expected": d["expected"],
        "got": _safe(d["got"]),
        "where": d["where"],
        "field": d["field"],
        "todo": d["todo"],
        "docs_url": DOCS_URL + d["code"],
    }


def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=dict(body), headers=dict(headers) if headers else None)


def _pydantic_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({
            "type": e.get("type"),
            "loc": [x if isinstance(x, (str, int)) else str(x) for x in e.get("loc", ())],
            "msg": e.get("msg"),
            "input": _safe(e.get("input")),
            "url": e.get("url") or f"https://errors.pydantic.dev/latest/v/{e.get('type')}",
        })
    return out


def validation_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The error body for a request that FastAPI/pydantic rejected (first error in the top-level fields)."""
    items = _pydantic_errors(errors)
    first = items[0] if items else {"loc": [], "msg": "invalid request", "input": None}
    loc = [str(x) for x in first["loc"]]
    section = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "request"
    field = ".".join(loc[1:] if section != "request" else loc) or None
    where = f"request {section}" + (f", field {field}" if field else "")
    exc = InputError(
        expected=str(first["msg"]),
        got=first["input"],
        where=where,
        todo="fix the value or type of the field (see errors[] and the OpenAPI document at /openapi.json)",
        field=field,
    )
    body = error_body(exc)
    body["error"] = "RequestValidationError"
    body["errors"] = items
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the error body above."""

    @app.exception_handler(ImmunoguideError)
    async def _domain(_request: Request, exc: ImmunoguideError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("server-side data error: %s", exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 429:
            headers = {"Retry-After": str(getattr(exc, "retry_after_s", 60))}
        return _json(status, error_body(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, validation_body(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        err: ImmunoguideError
        if exc.status_code == 401:
            err = NotAuthenticated(expected="a valid bearer token", got=None, where=request.url.path,
                                   todo="log in at POST /auth/token and send 'Authorization: Bearer <token>'")
        else:
            err = InputError(
                expected={404: "a route of this service", 405: "a method this route accepts"}.get(
                    exc.status_code, "a request this service accepts"),
                got=f"{request.method} {request.url.path}",
                where="request",
                todo=f"{detail}; see the OpenAPI document at /openapi.json",
            )
        body = error_body(err)
        return _json(exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - defensive
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _json(500, {
            "code": "IG-E000", "error": "InternalError",
            "message": "[IG-E000] the service failed unexpectedly; the error was logged",
            "expected": "a request the service can answer", "got": None, "where": request.url.path, "field": None,
            "todo": "report the time and request to the administrator", "docs_url": DOCS_URL + "IG-E000",
        })
