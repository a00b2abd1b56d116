"""CDS Hooks 2.0 security: JWTs signed by trusted EHRs, verified against their JWK Sets.

An EHR (a *CDS Client*) calls a CDS service with ``Authorization: Bearer <JWT>``, a JWT it signs with its own
private key (HL7 CDS Hooks 2.0, "Trusting CDS Clients"). This module verifies that token:

* **Issuer allow-list.** ``iss`` must be one of the configured EHRs (:class:`EhrIssuer`); anything else is refused
  before any key is fetched. ``sub`` (the EHR's client id) is checked when the issuer lists allowed subjects.
* **Keys.** The header names the key (``kid``, required) and the algorithm (``alg``: ``RS384`` and ``ES384`` by
  default, :attr:`EhrSettings.algorithms`). The public key comes from the issuer's JWK Set: an inline set, the
  configured ``jwks_url``, or the header's ``jku`` — a ``jku`` is fetched only when the issuer's configuration
  lists that exact URL (the specification asks services to allow-list ``iss``, ``jku`` and ``sub``).
* **JWK Set cache and key rotation.** A fetched set is kept for :attr:`EhrSettings.jwks_cache_s` seconds; a
  ``kid`` not in the cached set triggers one re-fetch (an EHR that rotated its keys), at most once per
  :attr:`EhrSettings.jwks_min_refresh_s` seconds per URL, so unknown ``kid`` values cannot make the service hammer
  the EHR.
* **Claims.** ``aud`` must be this CDS service's URL (:attr:`EhrSettings.service_url` + the endpoint path, e.g.
  ``https://immunoguide.example.org/cds-services/immunoguide-patient-view``); ``exp`` and ``iat`` are required and
  checked against the service clock with :attr:`EhrSettings.leeway_s` seconds of clock skew; a token may live at
  most :attr:`EhrSettings.max_lifetime_s` seconds (``exp - iat``; the specification recommends five minutes);
  ``jti`` is required and each ``(iss, jti)`` is accepted once until the token expires (replay protection).
  The replay memory lives in the process: run one worker per service URL, or put a shared replay store in front.

Every refusal is :class:`~immunoguide.errors.NotAuthenticated` (HTTP 401) naming what was wrong; an unreachable or
broken JWK Set URL is :class:`~immunoguide.errors.UpstreamError` (HTTP 502).

Configuration is a TOML file (:func:`load_ehr_settings`, ``$IMMUNOGUIDE_EHR_CONFIG`` for ``immunoguide serve``)::

    service_url = "https://immunoguide.example.org"      # public base URL of this service (the JWT aud prefix)

    [[ehr]]
    name = "General Hospital EHR"
    iss = "https://ehr.example.org"                      # JWT iss of the EHR's CDS calls
    jwks_url = "https://ehr.example.org/.well-known/jwks.json"
    subjects = ["ehr-cds-client"]                        # allowed sub (client ids); empty: any
    fhir_servers = ["https://ehr.example.org/fhir"]      # FHIR bases this EHR may send as fhirServer / SMART iss
    smart_client_id = "immunoguide-dashboard"            # the dashboard's client id at this EHR (SMART launch)
    [ehr.users]                                          # fhirUser of a SMART launch -> immunoguide user name
    "Practitioner/123" = "inv-ath"

Examples
--------
>>> s = ehr_settings_from_dict({"service_url": "https://ig.example.org/", "ehr": [
...     {"iss": "https://ehr.example.org", "jwks_url": "https://ehr.example.org/jwks.json"}]})
>>> s.audience("/cds-services/immunoguide-patient-view")
'https://ig.example.org/cds-services/immunoguide-patient-view'
>>> s.algorithms, s.issuer("https://other.example.org") is None
(('RS384', 'ES384'), True)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from immunoguide.errors import NotAuthenticated, UpstreamError
from immunoguide.service._context import bearer_scheme, current_principal, service_state
from immunoguide.service.ehr_settings import EhrIssuer, EhrSettings, ehr_settings_from_dict, load_ehr_settings

__all__ = [
    "CdsCaller",
    "CdsCallerDep",
    "EhrIssuer",
    "EhrPrincipal",
    "EhrSettings",
    "JwksCache",
    "CdsJwtVerifier",
    "cds_caller",
    "ehr_settings_from_dict",
    "load_ehr_settings",
    "looks_like_jwt",
    "verifier_for",
]

def looks_like_jwt(token: str | None) -> bool:
    """Whether a bearer token has the three dot-separated parts of a JWS (immunoguide's own tokens have no dot; an
    unsigned JWT with an empty third part still counts, so that it is refused as a JWT).

    >>> looks_like_jwt("eyJhbGciOi.eyJpc3Mi.c2ln"), looks_like_jwt("eyJhbGciOi.eyJpc3Mi."), looks_like_jwt("Xk2-tok")
    (True, True, False)
    """
    if not token or token.count(".") != 2:
        return False
    header, payload, _ = token.split(".")
    return bool(header and payload)


@dataclass(frozen=True)
class EhrPrincipal:
    """A verified EHR call: the issuer's configuration and the token's claims."""

    issuer: EhrIssuer
    subject: str | None
    jti: str
    expires_at: float
    tenant: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class JwksCache:
    """JWK Sets by URL with a time-to-live and a rate-limited re-fetch for unknown ``kid`` values."""

    def __init__(self, settings: EhrSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 monotonic: Any = time.monotonic) -> None:
        self.settings = settings
        self._transport = transport
        self._clock = monotonic
        self._sets: dict[str, tuple[jwt.PyJWKSet, float]] = {}
        self._last_fetch: dict[str, float] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    async def _fetch(self, url: str) -> jwt.PyJWKSet:
        try:
            async with httpx.AsyncClient(timeout=self.settings.http_timeout_s, transport=self._transport,
                                         follow_redirects=False) as client:
                r = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise UpstreamError(expected="the EHR's JWK Set", got=type(exc).__name__, where=url,
                                todo="check that the EHR's jwks_url is reachable from the service") from None
        if r.status_code != 200:
            raise UpstreamError(expected="HTTP 200 with the EHR's JWK Set", got=r.status_code, where=url,
                                todo="check the EHR's jwks_url")
        try:
            keys = jwt.PyJWKSet.from_dict(r.json())
        except (ValueError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
            raise UpstreamError(expected="a JWK Set ({'keys': [...]}) with usable public keys", got=str(exc)[:200],
                                where=url, todo="fix the EHR's published keys") from None
        self.fetches += 1
        return keys

    async def key(self, url: str, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` of the set at ``url`` (fetched, cached; re-fetched once when ``kid`` is unknown)."""
        now = self._clock()
        with self._lock:
            hit = self._sets.get(url)
        if hit is not None and now - hit[1] < self.settings.jwks_cache_s:
            found = _find(hit[0], kid)
            if found is not None:
                return found
            with self._lock:
                recent = now - self._last_fetch.get(url, -1e18) < self.settings.jwks_min_refresh_s
            if recent:
                return None
        with self._lock:
            self._last_fetch[url] = now
        keys = await self._fetch(url)
        with self._lock:
            self._sets[url] = (keys, now)
        return _find(keys, kid)


def _find(keys: jwt.PyJWKSet, kid: str) -> jwt.PyJWK | None:
    return next((k for k in keys.keys if k.key_id == kid), None)


def _refuse(expected: str, got: Any, todo: str) -> NotAuthenticated:
    return NotAuthenticated(expected=expected, got=got, where="Authorization: Bearer <JWT> (CDS Hooks)", todo=todo)


class CdsJwtVerifier:
    """Verifies CDS Hooks JWTs of the configured EHRs (keys cached, replays refused); one per service instance."""

    def __init__(self, settings: EhrSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 monotonic: Any = time.monotonic) -> None:
        self.settings = settings
        self.jwks = JwksCache(settings, transport=transport, monotonic=monotonic)
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    async def _key(self, issuer: EhrIssuer, header: Mapping[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("a JWT header with kid (the signing key's id)", header.get("kid"),
                          "the EHR must name its key in the JWT header")
        if issuer.jwks is not None:
            try:
                inline = jwt.PyJWKSet.from_dict(dict(issuer.jwks))
            except (jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
                raise _refuse("a usable inline JWK Set for the issuer", str(exc)[:120],
                              "fix the EHR configuration's jwks") from None
            found = _find(inline, kid)
            if found is not None:
                return found
        jku = header.get("jku")
        if jku is not None:
            allowed = set(issuer.jku_allowed) | ({issuer.jwks_url} if issuer.jwks_url else set())
            if jku not in allowed:
                raise _refuse(f"a jku allowed for issuer {issuer.iss}", jku,
                              "add the URL to the EHR's jku_allowed (only allow-listed key URLs are fetched)")
            url = str(jku)
        elif issuer.jwks_url is not None:
            url = issuer.jwks_url
        else:
            raise _refuse(f"a key {kid!r} in the issuer's inline JWK Set", kid, "check the EHR's keys")
        key = await self.jwks.key(url, kid)
        if key is None:
            raise _refuse(f"a key {kid!r} in the JWK Set at {url}", kid,
                          "the EHR signed with a key it does not publish (or rotated it very recently: retry)")
        return key

    async def verify(self, token: str, *, audience: str, now: datetime) -> EhrPrincipal:
        """Verify a CDS Hooks JWT for the endpoint whose URL is ``audience``, at the service time ``now``.

        Raises
        ------
        NotAuthenticated
            Unknown issuer or subject, missing/unknown key, algorithm not allowed, bad signature, wrong ``aud``,
            expired or not yet valid, too long-lived, ``jti`` missing or replayed.
        UpstreamError
            The JWK Set URL cannot be fetched.
        """
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _refuse("a JWT (JWS compact serialisation)", str(exc)[:120], "send a signed JWT") from None
        iss = unverified.get("iss")
        issuer = s.issuer(iss if isinstance(iss, str) else None)
        if issuer is None:
            raise _refuse(f"a trusted EHR issuer {[i.iss for i in s.issuers]}", iss,
                          "register the EHR (iss, JWK Set) in the service's EHR configuration")
        alg = header.get("alg")
        if alg not in s.algorithms:
            raise _refuse(f"a JWT signed with one of {list(s.algorithms)}", alg, "sign with ES384 or RS384")
        key = await self._key(issuer, header)
        if key.algorithm_name and key.algorithm_name != alg and (key.algorithm_name in s.algorithms):
            raise _refuse(f"alg {key.algorithm_name} (the key's algorithm)", alg, "sign with the key's algorithm")
        try:
            claims = jwt.decode(token, key=key, algorithms=[alg], audience=audience, issuer=issuer.iss,
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                         "require": ["iss", "aud", "exp", "iat", "jti"]})
        except jwt.InvalidAudienceError:
            raise _refuse(f"aud = {audience} (this CDS service's URL)", unverified.get("aud"),
                          "the EHR must address the token to the service endpoint it calls") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refuse("the claims iss, aud, exp, iat and jti", f"no {exc.claim}",
                          "the EHR's JWT lacks a claim CDS Hooks requires") from None
        except jwt.InvalidSignatureError:
            raise _refuse("a valid signature by the issuer's key", f"kid {header.get('kid')}",
                          "the token was altered or signed with another key") from None
        except jwt.PyJWTError as exc:
            raise _refuse("a valid JWT", str(exc)[:160], "check the token") from None
        t = now.timestamp()
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise _refuse("numeric exp and iat (seconds since the epoch)", (exp, iat), "fix the token's times")
        if t > exp + s.leeway_s:
            raise _refuse(f"an unexpired token (leeway {s.leeway_s:g} s)",
                          f"expired {t - exp:.0f} s ago", "the EHR must send a fresh token with every call")
        if iat > t + s.leeway_s or ("nbf" in claims and isinstance(claims["nbf"], (int, float))
                                    and claims["nbf"] > t + s.leeway_s):
            raise _refuse(f"iat/nbf not in the future (leeway {s.leeway_s:g} s)", f"iat {iat - t:.0f} s ahead",
                          "check the EHR's clock")
        if exp - iat > s.max_lifetime_s:
            raise _refuse(f"a token living at most {s.max_lifetime_s:g} s (exp - iat)", f"{exp - iat:.0f} s",
                          "the EHR should issue short-lived tokens (five minutes)")
        sub = claims.get("sub")
        if issuer.subjects and sub not in issuer.subjects:
            raise _refuse(f"sub among {list(issuer.subjects)}", sub, "register the EHR's client id (subjects)")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise _refuse("a jti (a unique id of the token)", jti, "the EHR must send a new jti with every call")
        self._remember(issuer.iss, jti, float(exp) + s.leeway_s, t)
        return EhrPrincipal(issuer=issuer, subject=sub if isinstance(sub, str) else None, jti=jti,
                            expires_at=float(exp), tenant=claims.get("tenant"), claims=MappingProxyType(claims))

    def _remember(self, iss: str, jti: str, until: float, t: float) -> None:
        with self._lock:
            if len(self._seen) > 50_000:
                self._seen = {k: v for k, v in self._seen.items() if v >= t}
            prev = self._seen.get((iss, jti))
            if prev is not None and prev >= t:
                raise _refuse("a jti not used before (replay protection)", jti,
                              "the EHR must send a new token (new jti) with every call")
            self._seen[(iss, jti)] = until



# ---------------------------------------------------------------------------------------------------------------
# the CDS route's caller: an EHR (JWT) or an immunoguide user (bearer token)


@dataclass(frozen=True)
class CdsCaller:
    """Who calls a CDS service: a verified EHR (``ehr``) or an immunoguide user (``user``, non-EHR clients)."""

    ehr: EhrPrincipal | None = None
    user: Any = None

    def describe(self) -> str:
        """``EHR https://ehr.example.org`` or ``user inv-ath``."""
        return f"EHR {self.ehr.issuer.iss}" if self.ehr is not None else f"user {self.user.actor.user}"


_VERIFIER_LOCK = threading.Lock()


def verifier_for(app: Any, settings: EhrSettings) -> CdsJwtVerifier:
    """The app's verifier for ``settings`` (created once; its JWK Set cache and replay memory live with the app)."""
    with _VERIFIER_LOCK:
        v = getattr(app.state, "cds_jwt_verifier", None)
        if v is None or v.settings is not settings:
            v = CdsJwtVerifier(settings)
            app.state.cds_jwt_verifier = v
        return v


async def cds_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> CdsCaller:
    """Authenticate a CDS call: a JWT goes to the EHR verifier, any other bearer token to the user store."""
    st = service_state(request)
    token = credentials.credentials if credentials is not None else None
    if token is not None and looks_like_jwt(token):
        ehr = st.settings.ehr
        if ehr is None:
            raise NotAuthenticated(expected="an immunoguide bearer token (this service trusts no EHR issuer)",
                                   got="a JWT", where="Authorization header",
                                   todo="configure the EHR (IMMUNOGUIDE_EHR_CONFIG) or log in at POST /auth/token")
        verifier = verifier_for(request.app, ehr)
        principal = await verifier.verify(token, audience=ehr.audience(request.url.path), now=st.now())
        return CdsCaller(ehr=principal)
    return CdsCaller(user=await current_principal(request, credentials))


CdsCallerDep = Annotated[CdsCaller, Depends(cds_caller)]
