"""The dashboard as a SMART on FHIR app: EHR launch with PKCE (SMART App Launch 2.0), opened from a card's link.

A CDS card's ``smart`` link points at ``/dashboard/smart/launch`` (:mod:`immunoguide.service.cds_cards`). When the
clinician clicks it, the EHR opens that URL with ``iss`` (its FHIR base) and ``launch`` (an opaque launch id):

1. ``GET /dashboard/smart/launch?iss=…&launch=…`` — ``iss`` must be a FHIR base of a configured EHR
   (:attr:`~immunoguide.service.cds_security.EhrIssuer.fhir_servers`) with a ``smart_client_id``. The app reads the
   EHR's ``.well-known/smart-configuration``, refuses an EHR that does not offer PKCE ``S256``, makes a fresh code
   verifier (RFC 7636, 86 characters) and ``state``, keeps them server-side for ten minutes bound to the browser
   by an HttpOnly cookie, and redirects to the authorization endpoint with ``response_type=code``, ``client_id``,
   ``redirect_uri`` (``<service_url>/dashboard/smart/callback``), ``launch``, ``scope`` (:data:`SCOPE`), ``state``,
   ``aud`` = ``iss``, ``code_challenge`` and ``code_challenge_method=S256``.
2. ``GET /dashboard/smart/callback?code=…&state=…`` — the state must match the cookie and a pending launch (used
   once); the code is exchanged at the token endpoint with the ``code_verifier`` (public client, no secret).
   The token response's OpenID ``id_token`` is verified against the EHR's JWK Set (RS256/RS384/ES256/ES384,
   ``aud`` = client id, ``iss`` = the EHR, not expired) and its ``fhirUser`` is looked up in the EHR's
   :attr:`~immunoguide.service.cds_security.EhrIssuer.users`: a linked immunoguide user is signed in to the
   dashboard (a new dashboard token, the same cookie as the login form) through the account model
   (:meth:`~immunoguide.service.auth.UserStore.issue_token`: the account must be active and equal its audited
   image, as at a password login, and the sign-in is an audit entry with the EHR's issuer and ``fhirUser``). Without a link, a dashboard session the
   browser already has is used; otherwise the login page says which EHR user has no account. The patient comes
   from ``appContext`` (the card's study code) or, failing that, from the launch's ``patient`` read on the EHR's
   FHIR server with the access token (its study-code identifier). The browser then opens
   ``/dashboard/patients/<code>`` (or the site page) through a small page that refreshes to it, so that the
   SameSite=Strict dashboard cookie is sent.

Trial roles, site restriction and blinding stay immunoguide's: the EHR's token gives FHIR access and the launch
context, never a trial role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from immunoguide.errors import ImmunoguideError, InputError, NotAuthenticated, NotAuthorized, UpstreamError
from immunoguide.service._context import service_state
from immunoguide.service.cds_cards import study_code
from immunoguide.service.cds_security import EhrIssuer, EhrSettings, verifier_for
from immunoguide.service.errors import status_for

__all__ = ["CALLBACK_PATH", "LAUNCH_PATH", "SCOPE", "pkce_challenge", "router"]

LAUNCH_PATH = "/dashboard/smart/launch"
CALLBACK_PATH = "/dashboard/smart/callback"
#: Scopes asked for (SMART v2): the EHR launch context, the user's identity and read access to the patient's data.
SCOPE = "launch openid fhirUser patient/Patient.rs patient/Observation.rs"
_STATE_COOKIE = "ig_smart_state"
_DASHBOARD_COOKIE = "ig_dashboard"  # the dashboard's session cookie (immunoguide.service.dashboard.COOKIE)
_PENDING_S = 600.0
_ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]
_HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'none'; "
                                       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

router = APIRouter(prefix="/dashboard/smart", include_in_schema=False)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE code verifier (RFC 7636: base64url of SHA-256, no padding).

    >>> pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")  # RFC 7636 appendix B
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
    """
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class _Pending:
    issuer: EhrIssuer
    iss: str
    verifier: str
    token_endpoint: str
    redirect_uri: str
    created: float


_LOCK = threading.Lock()


def _pending(app: Any) -> dict[str, _Pending]:
    with _LOCK:
        store = getattr(app.state, "smart_pending", None)
        if store is None:
            store = {}
            app.state.smart_pending = store
        now = time.monotonic()
        for k in [k for k, v in store.items() if now - v.created > _PENDING_S]:
            del store[k]
        return store


def _page(title: str, body: str, status: int = 200, *, refresh: str | None = None) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="0;url={escape(refresh)}">' if refresh else ""
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}<title>{escape(title)}</title>"
            f'<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head><body><main>'
            f"<h1>{escape(title)}</h1>{body}</main></body></html>")
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _error(exc: ImmunoguideError) -> HTMLResponse:
    return _page("SMART launch refused", f"<p class=error>{escape(exc.message)}</p>", status_for(exc))


def _settings(request: Request) -> EhrSettings:
    ehr = service_state(request).settings.ehr
    if ehr is None:
        raise NotAuthorized(expected="a service configured for EHR launches (IMMUNOGUIDE_EHR_CONFIG)", got=None,
                            where=LAUNCH_PATH, todo="configure the EHR (iss, JWK Set, FHIR base, smart_client_id)")
    return ehr


async def _get_json(url: str, *, timeout: float, headers: dict[str, str] | None = None) -> Any:
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            r = await client.get(url, headers={"Accept": "application/json", **(headers or {})})
    except httpx.HTTPError as exc:
        raise UpstreamError(expected="an answer from the EHR", got=type(exc).__name__, where=url.split("?")[0],
                            todo="check that the EHR is reachable") from None
    if r.status_code != 200:
        raise UpstreamError(expected="HTTP 200 from the EHR", got=r.status_code, where=url.split("?")[0],
                            todo="check the EHR's configuration")
    try:
        return r.json()
    except ValueError:
        raise UpstreamError(expected="JSON from the EHR", got=r.headers.get("content-type"), where=url.split("?")[0],
                            todo="check the EHR's configuration") from None


@router.get("/launch")
async def launch(request: Request, iss: str | None = None, launch: str | None = None) -> Response:
    """EHR launch: discover the EHR's endpoints and redirect to its authorization endpoint with PKCE S256."""
    try:
        ehr = _settings(request)
        issuer = ehr.issuer_for_fhir_server(iss)
        if issuer is None or not issuer.smart_client_id:
            raise NotAuthorized(expected="iss = the FHIR base of a configured EHR with a smart_client_id", got=iss,
                                where=LAUNCH_PATH, todo="register the EHR's FHIR server and the dashboard's client id")
        if not launch:
            raise InputError(expected="a launch parameter (EHR launch)", got=None, where=LAUNCH_PATH,
                             todo="open the dashboard from the EHR (the card's link)", field="launch")
        assert iss is not None
        cfg = await _get_json(iss.rstrip("/") + "/.well-known/smart-configuration", timeout=ehr.http_timeout_s)
        if "S256" not in (cfg.get("code_challenge_methods_supported") or []):
            raise UpstreamError(expected="an EHR offering PKCE with S256 (SMART App Launch 2.0)",
                                got=cfg.get("code_challenge_methods_supported"), where=iss,
                                todo="the dashboard launches only with PKCE S256")
        auth_ep, token_ep = cfg.get("authorization_endpoint"), cfg.get("token_endpoint")
        if not isinstance(auth_ep, str) or not isinstance(token_ep, str):
            raise UpstreamError(expected="authorization_endpoint and token_endpoint", got=sorted(cfg), where=iss,
                                todo="fix the EHR's smart-configuration")
    except ImmunoguideError as exc:
        return _error(exc)
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-] (RFC 7636: 43-128)
    state = secrets.token_urlsafe(32)
    redirect_uri = ehr.service_url.rstrip("/") + CALLBACK_PATH
    store = _pending(request.app)
    with _LOCK:
        store[state] = _Pending(issuer, iss, verifier, token_ep, redirect_uri, time.monotonic())
    params = {"response_type": "code", "client_id": issuer.smart_client_id, "redirect_uri": redirect_uri,
              "launch": launch, "scope": SCOPE, "state": state, "aud": iss,
              "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    resp = RedirectResponse(f"{auth_ep}?{urlencode(params)}", status_code=302)
    resp.set_cookie(_STATE_COOKIE, state, max_age=int(_PENDING_S), path="/dashboard/smart", httponly=True,
                    samesite="lax", secure=request.url.scheme == "https")
    return resp


async def _exchange(p: _Pending, code: str, timeout: float) -> dict[str, Any]:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": p.redirect_uri,
            "client_id": p.issuer.smart_client_id or "", "code_verifier": p.verifier}
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            r = await client.post(p.token_endpoint, data=data, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise UpstreamError(expected="the EHR's token endpoint", got=type(exc).__name__, where=p.token_endpoint,
                            todo="check that the EHR is reachable") from None
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code != 200 or not isinstance(body.get("access_token"), str):
        raise UpstreamError(expected="an access token from the EHR", got=body.get("error") or r.status_code,
                            where=p.token_endpoint, todo=str(body.get("error_description") or "launch again"))
    return body


async def _fhir_user(request: Request, ehr: EhrSettings, p: _Pending, id_token: str, now: float) -> str | None:
    verifier = verifier_for(request.app, ehr)
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as exc:
        raise NotAuthenticated(expected="an OpenID id_token", got=str(exc)[:80], where=CALLBACK_PATH,
                               todo="launch again") from None
    url = p.issuer.jwks_url
    key = await verifier.jwks.key(url, str(header.get("kid"))) if url else None
    if key is None:
        raise NotAuthenticated(expected="an id_token signed with a key of the EHR's JWK Set", got=header.get("kid"),
                               where=CALLBACK_PATH, todo="check the EHR's keys")
    try:
        claims = jwt.decode(id_token, key=key, algorithms=_ID_TOKEN_ALGORITHMS, audience=p.issuer.smart_client_id,
                            issuer=p.issuer.iss, options={"verify_exp": False, "verify_iat": False})
    except jwt.PyJWTError as exc:
        raise NotAuthenticated(expected="a valid id_token of the EHR for this app", got=str(exc)[:120],
                               where=CALLBACK_PATH, todo="launch again") from None
    if not isinstance(claims.get("exp"), (int, float)) or now > claims["exp"] + ehr.leeway_s:
        raise NotAuthenticated(expected="an unexpired id_token", got=claims.get("exp"), where=CALLBACK_PATH,
                               todo="launch again")
    fhir_user = claims.get("fhirUser")
    return fhir_user if isinstance(fhir_user, str) else None


def _linked_user(issuer: EhrIssuer, fhir_user: str | None) -> str | None:
    """The immunoguide user linked to ``fhirUser`` (matched in full or by its ``Type/id`` tail)."""
    if not fhir_user:
        return None
    if fhir_user in issuer.users:
        return issuer.users[fhir_user]
    tail = "/".join(fhir_user.rstrip("/").split("/")[-2:])
    return issuer.users.get(tail)


async def _patient_code(tok: dict[str, Any], p: _Pending, timeout: float) -> str | None:
    ctx = tok.get("appContext")
    if isinstance(ctx, str) and ctx:
        try:
            doc = json.loads(ctx)
        except ValueError:
            doc = {}
        if isinstance(doc, dict) and isinstance(doc.get("patient_code"), str):
            return str(doc["patient_code"])
    pid = tok.get("patient")
    if isinstance(pid, str) and pid:
        patient = await _get_json(f"{p.iss.rstrip('/')}/Patient/{quote(pid, safe='')}", timeout=timeout,
                                  headers={"Authorization": f"Bearer {tok['access_token']}",
                                           "Accept": "application/fhir+json"})
        return study_code(patient)
    return None


@router.get("/callback")
async def callback(request: Request, code: str | None = None, state: str | None = None, error: str | None = None,
                   error_description: str | None = None) -> Response:
    """Authorization response: check the state, exchange the code with the PKCE verifier, sign in, open the patient."""
    st = service_state(request)
    cookie = request.cookies.get(_STATE_COOKIE) or ""
    pending = None
    if state and cookie and hmac.compare_digest(state, cookie):
        store = _pending(request.app)
        with _LOCK:
            pending = store.pop(state, None)
    try:
        ehr = _settings(request)
        if error:
            raise NotAuthorized(expected="the EHR's authorization", got=error, where=CALLBACK_PATH,
                                todo=error_description or "ask the EHR administrator")
        if pending is None or not code:
            raise NotAuthenticated(expected="a SMART launch started in this browser in the last 10 minutes",
                                   got="unknown, used or expired state", where=CALLBACK_PATH,
                                   todo="open the dashboard again from the EHR")
        tok = await _exchange(pending, code, ehr.http_timeout_s)
        now = st.now()
        fhir_user = None
        if isinstance(tok.get("id_token"), str):
            fhir_user = await _fhir_user(request, ehr, pending, tok["id_token"], now.timestamp())
        code_ = await _patient_code(tok, pending, ehr.http_timeout_s)
    except ImmunoguideError as exc:
        return _error(exc)
    target = f"/dashboard/patients/{quote(code_, safe='')}" if code_ else "/dashboard/site"
    username = _linked_user(pending.issuer, fhir_user)
    if username is None:
        existing = request.cookies.get(_DASHBOARD_COOKIE)
        try:
            if existing is None:
                raise NotAuthenticated(expected="a dashboard login", got=None, where=CALLBACK_PATH, todo="log in")
            await run_in_threadpool(st.users.authenticate, existing, now=now)
        except NotAuthenticated:
            who = escape(fhir_user or "the EHR user")
            return _page("Log in to immunoguide",
                         f"<p>No immunoguide account is linked to {who} at {escape(pending.issuer.name)}. "
                         f'<a href="/dashboard/login">Log in</a>, then open <a href="{escape(target)}">'
                         f"{escape(code_ or 'the site page')}</a>.</p>", 401)
        resp = _page("Opening immunoguide", f'<p><a href="{escape(target)}">Continue</a></p>', refresh=target)
    else:
        # The linked account is checked as at a password login (active, equal to its audited image) and the
        # sign-in is an audit entry naming the EHR and its user (UserStore.issue_token).
        detail = {"iss": pending.issuer.iss, "ehr": pending.issuer.name, "fhir_user": fhir_user}
        try:
            token, principal = await run_in_threadpool(
                lambda: st.users.issue_token(username, now=now, channel="smart", detail=detail))
        except ImmunoguideError as exc:
            return _error(exc)
        resp = _page("Opening immunoguide", f'<p>Signed in as {escape(username)}. <a href="{escape(target)}">'
                                            "Continue</a></p>", refresh=target)
        resp.set_cookie(_DASHBOARD_COOKIE, token, max_age=max(1, int((principal.expires_at - now).total_seconds())),
                        path="/dashboard", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    resp.delete_cookie(_STATE_COOKIE, path="/dashboard/smart")
    return resp
