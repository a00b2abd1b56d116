"""The EHRs this service trusts: their configuration (:class:`EhrSettings`, read by :func:`load_ehr_settings`).

The TOML layout and what each setting means for the checks of a CDS Hooks JWT are described in
:mod:`immunoguide.service.cds_security`, which verifies the tokens and re-exports these names; the configuration
lives here, below both the service's shared context (:mod:`immunoguide.service._context`, whose settings carry it)
and the verifier.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from immunoguide.errors import CriteriaError

__all__ = ["EhrIssuer", "EhrSettings", "ehr_settings_from_dict", "load_ehr_settings"]

_DEFAULT_ALGORITHMS = ("RS384", "ES384")


def _base(url: str) -> str:
    return url.rstrip("/")


@dataclass(frozen=True)
class EhrIssuer:
    """One trusted EHR.

    Attributes
    ----------
    iss : str
        The EHR's JWT issuer.
    name : str
        Display name.
    jwks_url : str or None
        URL of the EHR's JWK Set (fetched and cached).
    jwks : mapping or None
        An inline JWK Set (``{"keys": [...]}``), instead of or besides ``jwks_url``.
    jku_allowed : tuple of str
        ``jku`` header URLs this EHR may point at (``jwks_url`` is always allowed).
    subjects : tuple of str
        Allowed ``sub`` values (the EHR's client ids); empty: any.
    fhir_servers : tuple of str
        FHIR base URLs the EHR may send as ``fhirServer`` (and as the ``iss`` of a SMART launch).
    smart_client_id : str or None
        The dashboard's OAuth client id at this EHR's authorization server.
    users : mapping of str to str
        ``fhirUser`` (``Practitioner/123``) of a SMART launch → immunoguide user name.
    """

    iss: str
    name: str = ""
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    jku_allowed: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()
    smart_client_id: str | None = None
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def trusts_fhir_server(self, url: str | None) -> bool:
        """Whether ``url`` is one of this EHR's FHIR bases (trailing slashes ignored)."""
        return url is not None and _base(url) in {_base(u) for u in self.fhir_servers}


@dataclass(frozen=True)
class EhrSettings:
    """The EHRs this service trusts and how their tokens are checked (see the module docstring)."""

    service_url: str
    issuers: tuple[EhrIssuer, ...] = ()
    algorithms: tuple[str, ...] = _DEFAULT_ALGORITHMS
    leeway_s: float = 60.0
    max_lifetime_s: float = 300.0
    jwks_cache_s: float = 300.0
    jwks_min_refresh_s: float = 10.0
    http_timeout_s: float = 5.0

    def audience(self, path: str) -> str:
        """The ``aud`` an EHR must put in a token for the endpoint at ``path``."""
        return _base(self.service_url) + "/" + path.lstrip("/")

    def issuer(self, iss: str | None) -> EhrIssuer | None:
        """The configured EHR with this ``iss`` (None: not trusted)."""
        return next((i for i in self.issuers if iss is not None and i.iss == iss), None)

    def issuer_for_fhir_server(self, url: str | None) -> EhrIssuer | None:
        """The configured EHR whose FHIR bases include ``url`` (the ``iss`` of a SMART launch)."""
        return next((i for i in self.issuers if i.trusts_fhir_server(url)), None)


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise CriteriaError(expected="a list of non-empty strings", got=raw, where=where, todo="fix the EHR configuration")
    return tuple(raw)


def ehr_settings_from_dict(doc: Mapping[str, Any], *, where: str = "EHR configuration") -> EhrSettings:
    """Build :class:`EhrSettings` from a parsed configuration (the TOML layout of the module docstring).

    Raises
    ------
    CriteriaError
        Missing ``service_url`` or ``iss``, an issuer without keys, an unknown key, a duplicate ``iss``.
    """
    known_top = {"service_url", "ehr", "algorithms", "leeway_s", "max_lifetime_s", "jwks_cache_s",
                 "jwks_min_refresh_s", "http_timeout_s"}
    known_ehr = {"iss", "name", "jwks_url", "jwks", "jku_allowed", "subjects", "fhir_servers", "smart_client_id", "users"}
    extra = sorted(set(doc) - known_top)
    if extra:
        raise CriteriaError(expected=f"keys among {sorted(known_top)}", got=extra, where=where, todo="remove or fix the keys")
    url = doc.get("service_url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise CriteriaError(expected="service_url: the public http(s) base URL of this service", got=url, where=where,
                            todo="set service_url (the aud of EHR tokens is service_url + /cds-services/<id>)")
    issuers: list[EhrIssuer] = []
    for i, e in enumerate(doc.get("ehr") or []):
        at = f"{where}, ehr[{i}]"
        if not isinstance(e, Mapping):
            raise CriteriaError(expected="an [[ehr]] table", got=e, where=at, todo="fix the EHR configuration")
        bad = sorted(set(e) - known_ehr)
        if bad:
            raise CriteriaError(expected=f"keys among {sorted(known_ehr)}", got=bad, where=at, todo="remove or fix the keys")
        iss = e.get("iss")
        if not isinstance(iss, str) or not iss:
            raise CriteriaError(expected="iss: the EHR's JWT issuer", got=iss, where=at, todo="set iss")
        if any(x.iss == iss for x in issuers):
            raise CriteriaError(expected="each iss once", got=iss, where=at, todo="merge the two [[ehr]] tables")
        jwks = e.get("jwks")
        if e.get("jwks_url") is None and jwks is None:
            raise CriteriaError(expected="jwks_url or an inline jwks for the EHR's public keys", got=None, where=at,
                                todo="give the URL of the EHR's JWK Set")
        users = e.get("users") or {}
        if not isinstance(users, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
            raise CriteriaError(expected="users: fhirUser = immunoguide user name", got=users, where=at,
                                todo='write e.g. "Practitioner/123" = "inv-ath"')
        issuers.append(EhrIssuer(
            iss=iss, name=str(e.get("name") or iss), jwks_url=e.get("jwks_url"),
            jwks=MappingProxyType(dict(jwks)) if jwks is not None else None,
            jku_allowed=_strings(e.get("jku_allowed"), f"{at}.jku_allowed"),
            subjects=_strings(e.get("subjects"), f"{at}.subjects"),
            fhir_servers=_strings(e.get("fhir_servers"), f"{at}.fhir_servers"),
            smart_client_id=e.get("smart_client_id"), users=MappingProxyType(dict(users))))
    kw: dict[str, Any] = {k: float(doc[k]) for k in ("leeway_s", "max_lifetime_s", "jwks_cache_s",
                                                      "jwks_min_refresh_s", "http_timeout_s") if k in doc}
    if "algorithms" in doc:
        kw["algorithms"] = _strings(doc["algorithms"], f"{where}.algorithms")
    return EhrSettings(service_url=url, issuers=tuple(issuers), **kw)


def load_ehr_settings(path: str | Path) -> EhrSettings:
    """Read an EHR configuration TOML file (see the module docstring)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CriteriaError(expected="a readable EHR configuration (TOML)", got=str(p), where=str(p),
                            todo=f"fix the file ({exc})") from None
    return ehr_settings_from_dict(doc, where=str(p))
