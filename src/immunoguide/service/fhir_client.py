"""Fetch what a CDS Hooks call's prefetch lacks from the EHR's FHIR server (``fhirServer`` + ``fhirAuthorization``).

CDS Hooks 2.0: a CDS Client may leave prefetch templates unfilled and send ``fhirServer`` (its FHIR base URL) and
``fhirAuthorization`` (an OAuth 2.0 bearer token for that server) so that the service can query what it needs. A
prefetch key that is **absent** is fetched here; a key sent as ``null`` means "no such data" and is not fetched
(the specification's rule).

Trust: the service sends the EHR's access token only to a FHIR base that the calling EHR's configuration lists
(:attr:`~immunoguide.service.cds_security.EhrIssuer.fhir_servers`), and only for calls authenticated by that EHR's
signed JWT. A call by an immunoguide user, or naming another ``fhirServer``, is answered from the prefetch alone
(the missing keys stay missing and say so).

Interactions used (the discovery document's prefetch templates with ``{{context.patientId}}`` filled in):
``GET [base]/Patient/[id]`` (read) and ``GET [base]/Observation?patient=…&code=…``, ``GET [base]/Condition?patient=…``,
``GET [base]/Encounter?patient=…&status=…`` (search; a searchset Bundle, whose ``next`` links on the same server
are followed up to :data:`MAX_PAGES` pages). A read answered 404/410 is "no data" (``null``); any other failure is
:class:`~immunoguide.errors.UpstreamError` (HTTP 502). The resources are validated afterwards exactly like a sent
prefetch (``fhir.resources`` R4B).

Examples
--------
>>> render_template("Observation?patient={{context.patientId}}&code=http://loinc.org|2276-4", {"patientId": "p 1"})
'Observation?patient=p%201&code=http://loinc.org|2276-4'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from immunoguide.errors import InputError, UpstreamError
from immunoguide.service.cds_security import CdsCaller

__all__ = ["MAX_PAGES", "FetchResult", "fetch_missing_prefetch", "render_template"]

#: Bundle pages followed per search (``link[relation=next]``).
MAX_PAGES = 20
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Fill ``{{context.<name>}}`` tokens of a prefetch template (values URL-encoded).

    Raises InputError when the context lacks a value the template needs.
    """
    def sub(m: re.Match[str]) -> str:
        v = context.get(m.group(1))
        if v is None or not str(v):
            raise InputError(expected=f"context.{m.group(1)} (needed by the prefetch template)", got=None,
                             where=f"context.{m.group(1)}", todo="send the hook's context", field=f"context.{m.group(1)}")
        return quote(str(v), safe="")

    return _TOKEN.sub(sub, template)


class FetchResult:
    """What was fetched: the completed prefetch and the keys that came from the FHIR server."""

    def __init__(self, prefetch: dict[str, Any], fetched: list[str], skipped_reason: str | None = None) -> None:
        self.prefetch = prefetch
        self.fetched = fetched
        self.skipped_reason = skipped_reason


def _same_server(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc) and a.path.startswith(b.path.rstrip("/"))


async def _get(client: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    try:
        return await client.get(url)
    except httpx.HTTPError as exc:
        raise UpstreamError(expected=f"the FHIR server's answer for prefetch.{key}", got=type(exc).__name__,
                            where=url.split("?")[0], todo="check that the EHR's FHIR server is reachable") from None


def _json(r: httpx.Response, key: str) -> Any:
    try:
        return r.json()
    except ValueError:
        raise UpstreamError(expected=f"FHIR JSON for prefetch.{key}", got=r.headers.get("content-type"),
                            where=str(r.url).split("?")[0], todo="the FHIR server must answer application/fhir+json") from None


async def _fetch_one(client: httpx.AsyncClient, base: str, key: str, query: str) -> Any:
    url = f"{base.rstrip('/')}/{query}"
    r = await _get(client, url, key)
    is_read = "?" not in query
    if is_read and r.status_code in (404, 410):
        return None
    if r.status_code != 200:
        raise UpstreamError(expected=f"HTTP 200 from the FHIR server for prefetch.{key}", got=r.status_code,
                            where=url.split("?")[0], todo="check the fhirAuthorization token's scopes and the server")
    doc = _json(r, key)
    if is_read or not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return doc
    entries = list(doc.get("entry") or [])
    pages = 1
    nxt = next((lk.get("url") for lk in doc.get("link") or [] if isinstance(lk, dict) and lk.get("relation") == "next"), None)
    while nxt and pages < MAX_PAGES:
        if not _same_server(nxt, base):
            raise UpstreamError(expected="next-page links on the same FHIR server", got=nxt.split("?")[0],
                                where=url.split("?")[0], todo="the FHIR server's paging links must stay on its base")
        page = _json(await _get(client, nxt, key), key)
        entries.extend(page.get("entry") or [])
        pages += 1
        nxt = next((lk.get("url") for lk in page.get("link") or [] if isinstance(lk, dict) and lk.get("relation") == "next"), None)
    merged = {k: v for k, v in doc.items() if k not in ("entry", "link")}
    merged["entry"] = entries
    merged["total"] = len(entries)
    return merged


async def fetch_missing_prefetch(
    prefetch: Mapping[str, Any] | None,
    templates: Mapping[str, str],
    *,
    context: Mapping[str, Any],
    fhir_server: str | None,
    fhir_authorization: Mapping[str, Any] | None,
    caller: CdsCaller,
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FetchResult:
    """The prefetch with every absent template key fetched from ``fhir_server`` (when the caller's EHR trusts it).

    Parameters
    ----------
    prefetch : mapping or None
        The prefetch as sent (keys with ``null`` mean "no data" and are kept).
    templates : mapping
        The discovery document's prefetch templates of the service.
    context : mapping
        The hook's ``context`` (``patientId`` …).
    fhir_server, fhir_authorization
        The call's ``fhirServer`` and ``fhirAuthorization`` (``access_token``, ``token_type`` Bearer).
    caller : CdsCaller
        Who called (only an EHR whose configuration lists ``fhir_server`` gets it queried).

    Returns
    -------
    FetchResult
        ``prefetch`` completed, ``fetched`` the keys read from the server, ``skipped_reason`` when nothing could
        be fetched although keys were missing.

    Raises
    ------
    UpstreamError
        The FHIR server is unreachable or answered an error.
    InputError
        ``fhirAuthorization`` without an access token, or of another token type than Bearer.
    """
    out = dict(prefetch or {})
    missing = [k for k in templates if k not in out]
    if not missing:
        return FetchResult(out, [])
    if fhir_server is None:
        return FetchResult(out, [], "no fhirServer in the call")
    if caller.ehr is None or not caller.ehr.issuer.trusts_fhir_server(fhir_server):
        return FetchResult(out, [], f"fhirServer {fhir_server} is not a FHIR server of the calling EHR "
                                    "(only EHRs authenticated by a signed JWT get their configured server queried)")
    headers = {"Accept": "application/fhir+json"}
    if fhir_authorization is not None:
        token, kind = fhir_authorization.get("access_token"), str(fhir_authorization.get("token_type", "Bearer"))
        if not isinstance(token, str) or not token or kind.lower() != "bearer":
            raise InputError(expected="fhirAuthorization with an access_token of token_type Bearer",
                             got={"token_type": kind, "access_token": "…" if token else None},
                             where="fhirAuthorization", todo="send the OAuth 2.0 bearer token for the FHIR server",
                             field="fhirAuthorization")
        headers["Authorization"] = f"Bearer {token}"
    fetched: list[str] = []
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers, transport=transport,
                                 follow_redirects=False) as client:
        for key in missing:
            out[key] = await _fetch_one(client, fhir_server, key, render_template(templates[key], context))
            fetched.append(key)
    return FetchResult(out, fetched)
