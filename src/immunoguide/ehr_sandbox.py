"""A minimal EHR to try the standards borders against, in tests and in the guides (not a FHIR server; never for
patient data).

It plays the three EHR roles the CDS service and the dashboard meet:

* **CDS Client**: signs CDS Hooks 2.0 JWTs (:meth:`EhrSandbox.sign_cds_jwt`, RS384 by default, ``kid`` in the
  header) with keys it publishes as a JWK Set at ``/.well-known/jwks.json``; :meth:`EhrSandbox.rotate_key` adds a
  new signing key (the old one stays published until :meth:`EhrSandbox.retire_key`).
* **FHIR REST double** (``/fhir``), limited to the interactions the CDS service uses: ``read`` of a Patient and
  ``search`` of Observation (``patient``, ``code`` as a comma list of ``system|code``, ``system|`` or ``code``),
  Condition (``patient``) and Encounter (``patient``, ``status``). Every resource is validated with
  ``fhir.resources`` R4B when added, and so is every Bundle returned. Any other parameter or type is answered
  400 with an OperationOutcome, so a client asking for more than the double knows fails loudly. Requests need a
  bearer token the sandbox issued (:meth:`EhrSandbox.issue_fhir_token` or the SMART token endpoint).
* **SMART App Launch authorization server** (EHR launch with PKCE): ``/fhir/.well-known/smart-configuration``,
  ``/authorize`` (``response_type=code``, registered ``client_id`` and ``redirect_uri``, a ``launch`` it issued,
  ``aud`` = its FHIR base, ``code_challenge_method=S256`` required) and ``/token`` (``authorization_code`` grant; the
  ``code_verifier`` must hash to the challenge; answers ``access_token``, ``patient``, ``appContext`` and an OpenID
  ``id_token`` with ``fhirUser``, signed RS256). ``/ehr/launch`` is what the EHR does when a clinician clicks a
  ``smart`` link on a card: it records the launch context and redirects to the app with ``iss`` and ``launch``.

:func:`serve_in_thread` runs any ASGI app (the sandbox, or immunoguide itself) with uvicorn on a free loopback port.

Examples
--------
>>> ehr = EhrSandbox("http://127.0.0.1:9")
>>> ehr.add({"resourceType": "Patient", "id": "p1", "gender": "female"})
>>> sorted(ehr.jwks()["keys"][0])[:3], ehr.fhir_base
(['alg', 'e', 'kid'], 'http://127.0.0.1:9/fhir')
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fhir.resources.R4B import get_fhir_model_class

from immunoguide.service.smart import pkce_challenge

__all__ = ["EhrSandbox", "pkce_challenge", "serve_in_thread"]

_SEARCH_PARAMS = {"Observation": {"patient", "code"}, "Condition": {"patient"}, "Encounter": {"patient", "status"}}


@dataclass
class _Key:
    kid: str
    alg: str
    private: Any


@dataclass
class _Launch:
    patient: str | None
    user: str | None
    app_context: str | None
    created: float = field(default_factory=time.monotonic)


def _outcome(status: int, text: str) -> JSONResponse:
    return JSONResponse({"resourceType": "OperationOutcome",
                         "issue": [{"severity": "error", "code": "not-supported" if status == 400 else "security",
                                    "diagnostics": text}]}, status_code=status,
                        media_type="application/fhir+json")


def _token_matches(token: str, coding: Mapping[str, Any]) -> bool:
    """FHIR token search: ``system|code``, ``system|`` (any code of the system), ``|code`` or ``code``."""
    if "|" not in token:
        return coding.get("code") == token
    system, _, code = token.partition("|")
    if system and coding.get("system") != system:
        return False
    return not code or coding.get("code") == code


def _validate(resource: Mapping[str, Any]) -> None:
    get_fhir_model_class(str(resource["resourceType"])).model_validate(dict(resource))


class EhrSandbox:
    """The sandbox EHR (see the module docstring).

    Parameters
    ----------
    base_url : str
        Where the sandbox is served (its JWT ``iss``; the FHIR base is ``base_url + "/fhir"``).
    client_id : str
        The SMART client id registered for the dashboard.
    redirect_uris : list of str
        Registered redirect URIs of that client.
    cds_client_id : str
        ``sub`` of the CDS JWTs.
    clock : callable, optional
        Returns the current time for the id_tokens it signs (default: the real clock).
    """

    def __init__(self, base_url: str, *, client_id: str = "immunoguide-dashboard", redirect_uris: list[str] | None = None,
                 cds_client_id: str = "sandbox-cds-client", clock: Any = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock  # returns the current datetime (id_token times); None: the real clock
        self.authorize_requests: list[dict[str, str]] = []
        self.client_id = client_id
        self.redirect_uris = list(redirect_uris or [])
        self.cds_client_id = cds_client_id
        self.keys: list[_Key] = []
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.fhir_tokens: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, str]] = []
        self._launches: dict[str, _Launch] = {}
        self._codes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.rotate_key()
        # the OpenID Connect key of the authorization server (SMART id_tokens are RS256)
        self.oidc_key = _Key(f"sandbox-oidc-{secrets.token_hex(4)}", "RS256",
                             rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.app = self._build_app()

    # -- keys and JWTs --------------------------------------------------------------------------------------------

    @property
    def fhir_base(self) -> str:
        """The FHIR base URL (also the ``iss`` of a SMART launch)."""
        return self.base_url + "/fhir"

    @property
    def jwks_url(self) -> str:
        """Where the JWK Set is published."""
        return self.base_url + "/.well-known/jwks.json"

    def rotate_key(self, alg: str = "RS384") -> str:
        """Add a new signing key (RS384/RS256 RSA-2048, or ES384 P-384); later JWTs use it. Returns its kid."""
        private = ec.generate_private_key(ec.SECP384R1()) if alg.startswith("ES") else rsa.generate_private_key(
            public_exponent=65537, key_size=2048)
        key = _Key(kid=f"sandbox-{len(self.keys) + 1}-{secrets.token_hex(4)}", alg=alg, private=private)
        self.keys.append(key)
        return key.kid

    def retire_key(self, kid: str) -> None:
        """Stop publishing (and using) a key."""
        self.keys = [k for k in self.keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set."""
        out = []
        for k in [*self.keys, self.oidc_key]:
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[k.alg].to_jwk(k.private.public_key()))
            jwk.pop("key_ops", None)  # RFC 7517: "use" and "key_ops" should not both be present
            jwk.update({"kid": k.kid, "alg": k.alg, "use": "sig"})
            out.append(jwk)
        return {"keys": out}

    def sign_cds_jwt(self, aud: str, *, now: datetime, lifetime_s: float = 300, iss: str | None = None,
                     jti: str | None = None, kid: str | None = None, jku: str | None = None,
                     claims: Mapping[str, Any] | None = None) -> str:
        """A CDS Hooks JWT for the service endpoint ``aud``, issued at ``now`` (the latest key unless ``kid``)."""
        key = next(k for k in self.keys if k.kid == kid) if kid else self.keys[-1]
        t = int(now.timestamp())
        payload: dict[str, Any] = {"iss": iss or self.base_url, "sub": self.cds_client_id, "aud": aud,
                                   "exp": t + int(lifetime_s), "iat": t, "jti": jti or str(uuid.uuid4())}
        payload.update(claims or {})
        headers: dict[str, Any] = {"kid": key.kid, "typ": "JWT"}
        if jku:
            headers["jku"] = jku
        return jwt.encode(payload, key.private, algorithm=key.alg, headers=headers)

    def _id_token(self, *, user: str | None, nonce_sub: str) -> str:
        key = self.oidc_key
        t = int(self.clock().timestamp()) if self.clock is not None else int(time.time())
        claims = {"iss": self.base_url, "sub": nonce_sub, "aud": self.client_id, "iat": t, "exp": t + 300}
        if user:
            claims["fhirUser"] = f"{self.fhir_base}/{user}"
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    # -- FHIR data ------------------------------------------------------------------------------------------------

    def add(self, *resources: Mapping[str, Any]) -> None:
        """Store resources (validated as FHIR R4B)."""
        for r in resources:
            _validate(r)
            self.resources[(str(r["resourceType"]), str(r["id"]))] = dict(r)

    def issue_fhir_token(self) -> str:
        """A bearer token accepted by the FHIR double (what an EHR sends as ``fhirAuthorization``)."""
        tok = secrets.token_urlsafe(24)
        self.fhir_tokens.add(tok)
        return tok

    def _search(self, rtype: str, params: Mapping[str, str]) -> dict[str, Any] | JSONResponse:
        allowed = _SEARCH_PARAMS.get(rtype)
        if allowed is None:
            return _outcome(400, f"search of {rtype} is not supported by this double")
        unknown = sorted(set(params) - allowed)
        if unknown:
            return _outcome(400, f"search parameters {unknown} are not supported for {rtype}")
        pid = params.get("patient", "").removeprefix("Patient/")
        tokens = [t for t in params.get("code", "").split(",") if t] if "code" in params else None
        hits = []
        for (t, _), r in sorted(self.resources.items()):
            if t != rtype:
                continue
            subj = (r.get("subject") or {}).get("reference", "")
            if pid and subj.removeprefix(self.fhir_base + "/") != f"Patient/{pid}":
                continue
            if "status" in params and r.get("status") not in params["status"].split(","):
                continue
            if tokens is not None and not any(_token_matches(tok, c) for tok in tokens
                                              for c in (r.get("code") or {}).get("coding") or []):
                continue
            hits.append(r)
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(hits),
                  "link": [{"relation": "self", "url": f"{self.fhir_base}/{rtype}?{urlencode(params)}"}],
                  "entry": [{"fullUrl": f"{self.fhir_base}/{r['resourceType']}/{r['id']}", "resource": r,
                             "search": {"mode": "match"}} for r in hits]}
        _validate(bundle)
        return bundle

    # -- the app --------------------------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.fhir_tokens

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="immunoguide EHR sandbox", openapi_url=None, docs_url=None, redoc_url=None)
        sb = self

        @app.get("/.well-known/jwks.json")
        async def jwks() -> dict[str, Any]:
            return sb.jwks()

        @app.get("/fhir/.well-known/smart-configuration")
        async def smart_configuration() -> dict[str, Any]:
            return {"issuer": sb.base_url, "jwks_uri": sb.jwks_url,
                    "authorization_endpoint": f"{sb.base_url}/authorize", "token_endpoint": f"{sb.base_url}/token",
                    "grant_types_supported": ["authorization_code"], "code_challenge_methods_supported": ["S256"],
                    "response_types_supported": ["code"], "token_endpoint_auth_methods_supported": ["none"],
                    "scopes_supported": ["openid", "fhirUser", "launch", "patient/*.rs"],
                    "capabilities": ["launch-ehr", "client-public", "context-ehr-patient", "sso-openid-connect",
                                     "permission-v2"]}

        @app.get("/fhir/{rtype}/{rid}")
        async def read(rtype: str, rid: str, request: Request) -> Response:
            sb.requests.append({"interaction": "read", "type": rtype, "id": rid,
                                "authorization": request.headers.get("authorization")})
            if not sb._authorised(request):
                return _outcome(401, "a bearer token issued by this EHR is required")
            r = sb.resources.get((rtype, rid))
            if r is None:
                return _outcome(404, f"{rtype}/{rid} not found")
            return JSONResponse(r, media_type="application/fhir+json")

        @app.get("/fhir/{rtype}")
        async def search(rtype: str, request: Request) -> Response:
            params = dict(request.query_params)
            sb.requests.append({"interaction": "search", "type": rtype, "params": params,
                                "authorization": request.headers.get("authorization")})
            if not sb._authorised(request):
                return _outcome(401, "a bearer token issued by this EHR is required")
            out = sb._search(rtype, params)
            return out if isinstance(out, Response) else JSONResponse(out, media_type="application/fhir+json")

        @app.get("/ehr/launch")
        async def ehr_launch(app_url: str, patient: str | None = None, user: str | None = None,
                             appContext: str | None = None) -> Response:
            """What the EHR does when a clinician clicks a card's smart link."""
            launch = secrets.token_urlsafe(16)
            with sb._lock:
                sb._launches[launch] = _Launch(patient, user, appContext)
            sep = "&" if "?" in app_url else "?"
            return RedirectResponse(f"{app_url}{sep}{urlencode({'iss': sb.fhir_base, 'launch': launch})}", 302)

        @app.get("/ehr/chart", response_class=HTMLResponse)
        async def chart(cards: str, patient: str, user: str = "Practitioner/1") -> HTMLResponse:
            """A chart page showing the cards' smart links (``cards``: the CDS response JSON)."""
            items = []
            for card in json.loads(cards).get("cards", []):
                for link in card.get("links") or []:
                    q = urlencode({"app_url": link["url"], "patient": patient, "user": user,
                                   "appContext": link.get("appContext") or ""})
                    items.append(f'<li><a href="/ehr/launch?{q}">{_esc(link["label"])}</a> '
                                 f'<span>{_esc(card["summary"])}</span></li>')
            return HTMLResponse(f"<!doctype html><title>EHR chart</title><h1>Sandbox EHR: {_esc(patient)}</h1>"
                                f"<ul>{''.join(items)}</ul>")

        @app.get("/authorize")
        async def authorize(request: Request) -> Response:
            q = dict(request.query_params)
            sb.authorize_requests.append(q)
            problems = []
            if q.get("response_type") != "code":
                problems.append("response_type must be code")
            if q.get("client_id") != sb.client_id:
                problems.append("unknown client_id")
            if q.get("redirect_uri") not in sb.redirect_uris:
                problems.append("redirect_uri not registered")
            if q.get("aud") != sb.fhir_base:
                problems.append("aud must be the FHIR base URL")
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                problems.append("PKCE with code_challenge_method S256 is required")
            launch = sb._launches.pop(q.get("launch", ""), None)
            if launch is None:
                problems.append("unknown or used launch")
            if not q.get("state"):
                problems.append("state is required")
            if problems:
                return JSONResponse({"error": "invalid_request", "error_description": "; ".join(problems)}, 400)
            code = secrets.token_urlsafe(24)
            with sb._lock:
                sb._codes[code] = {"challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"],
                                   "launch": launch, "scope": q.get("scope", ""), "created": time.monotonic()}
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 302)

        @app.post("/token")
        async def token(request: Request) -> Response:
            form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8")).items()}
            sb.token_requests.append(form)
            with sb._lock:
                grant = sb._codes.pop(form.get("code", ""), None)
            err = None
            if form.get("grant_type") != "authorization_code":
                err = "unsupported grant_type"
            elif grant is None or time.monotonic() - grant["created"] > 120:
                err = "unknown, used or expired code"
            elif form.get("client_id") != sb.client_id or form.get("redirect_uri") != grant["redirect_uri"]:
                err = "client_id or redirect_uri differ from the authorization request"
            elif pkce_challenge(form.get("code_verifier", "")) != grant["challenge"]:
                err = "code_verifier does not match the code_challenge (PKCE S256)"
            if err is not None:
                return JSONResponse({"error": "invalid_grant", "error_description": err}, 400)
            assert grant is not None
            launch: _Launch = grant["launch"]
            access = sb.issue_fhir_token()
            body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 3600,
                                    "scope": grant["scope"], "need_patient_banner": False}
            if launch.patient:
                body["patient"] = launch.patient
            if launch.app_context:
                body["appContext"] = launch.app_context
            if "openid" in grant["scope"].split():
                body["id_token"] = sb._id_token(user=launch.user, nonce_sub=launch.user or "anonymous")
            return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

        return app


def _esc(text: Any) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def free_port() -> socket.socket:
    """A socket bound to a free loopback port (pass it to :func:`serve_in_thread` to keep the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_in_thread(app: Any, sock: socket.socket | None = None, *, timeout_s: float = 15.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a daemon thread; yields its base URL; stops on exit."""
    import uvicorn

    sock = sock or free_port()
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + timeout_s
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        th.join(timeout=10)
        sock.close()

