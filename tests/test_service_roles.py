"""Every route of the service, called by every role: blinded roles never receive an arm, a kit content or an
unblinded statistic, and site users never receive another site's patients.

The seeded store (``service_support.seed_store``) has two sites (ATH, MIL), allocation lists for both strata,
randomised patients with kits, a dose, a serious AE and a follow-up day. Each role walks every route of
``app.routes`` (flattened with ``fastapi.routing.iter_route_contexts``) on its own copy of the store, in route order, with write requests that succeed for the roles that
may write (so randomisation, kit and dosing responses are exercised) and requests on the other site's patients;
emergency unblinding and logout are called last. The leak detector is checked against positive controls: the
unblinded roles must see arms through the same walk, or the test fails.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts

from immunoguide.protocols import load_protocol
from immunoguide.trial.access import UNBLINDED_ROLES
from service_support import (
    NOW,
    PATIENTS,
    USERS,
    client_for,
    copy_store,
    lab_record,
    login,
    patient_view_request,
    screening_record,
    seed_store,
)

PROTOCOL = load_protocol("immunosep-2025")
ARM_CODES = {a.code: frozenset(a.endotypes) for a in PROTOCOL.arms}
STRATUM_ARMS = {e: {a.code for a in PROTOCOL.arms if e in a.endotypes} for e in PROTOCOL.endotype_names}
ARM_LABELS = {a.label for a in PROTOCOL.arms}
REGIMEN_IDS = set(PROTOCOL.regimens)
#: Keys that only unblinded roles may receive.
BLIND_KEYS = {"arm", "arm_label", "arm_role", "regimen", "content", "is_placebo", "prescribed"}
DEFERRED = [("POST", "/trial/patients/{code}/unblind"), ("POST", "/auth/logout")]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One seeded store file (copied per role)."""
    d = tmp_path_factory.mktemp("roles")
    info = seed_store(d / "template.db")
    return d / "template.db", info


@pytest.fixture(scope="module")
def allocation_upload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A valid new allocation list (site ZRH) as the upload body."""
    from immunoguide.trial import generate_allocation_list

    d = tmp_path_factory.mktemp("zrh")
    f = generate_allocation_list("ZRH", "MALS", 4, out_dir=d)
    stem = f.csv.name.removesuffix(".csv")
    return {"name": stem, "csv": f.csv.read_text(), "meta_json": f.meta.read_text(),
            "sha256": (d / f"{stem}.sha256").read_text()}


# ---------------------------------------------------------------------------------------------------------------
# request plan


def _iso(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def _bodies(user: str, site: str | None, upload: dict[str, str]) -> dict[tuple[str, str], Callable[[str], Any]]:
    """(method, path) → body factory (given the patient code of the request)."""
    return {
        ("POST", "/auth/token"): lambda _c: None,  # sent by login()
        ("POST", "/rules/sofa"): lambda _c: {"inputs": {"platelets_10e3_per_ul": 90, "gcs": 14}},
        ("POST", "/rules/classify"): lambda _c: {"record": {"ferritin": 820, "ferritin_unit": "ng/mL",
                                                            "hla_dr_per_monocyte": 3100,
                                                            "hla_dr_method": "quantibrite_abc"}},
        ("POST", "/rules/eligibility"): lambda _c: {"patient": {**screening_record(), "endotype": "MALS"}},
        ("POST", "/trial/patients"): lambda c: {"code": c, "site": c.split("-")[0], "record": screening_record()},
        ("POST", "/trial/patients/{code}/consent"): lambda _c: {"given_by": "patient", "signed_at": _iso(1)},
        ("POST", "/trial/patients/{code}/labs"): lambda c: {"record": lab_record(
            *(PATIENTS[c][1:3] if c in PATIENTS else (820, 3100)), NOW - timedelta(hours=1))},
        ("POST", "/trial/patients/{code}/randomize"): lambda _c: {},
        ("POST", "/trial/patients/{code}/unblind"): lambda _c: {"reason": "suspected anaphylaxis, needs the drug"},
        ("POST", "/trial/patients/{code}/doses"): lambda _c: {"kit": "IV", "given_at": _iso(0)},
        ("POST", "/trial/patients/{code}/followup"): lambda _c: {"day": 2, "sofa_total": 7},
        ("POST", "/trial/patients/{code}/adverse-events"): lambda _c: {
            "term": "Gastric hemorrhage", "onset_at": _iso(3), "grade": 2, "serious": True, "relatedness": "possible",
            "outcome": "recovering"},
        ("POST", "/trial/patients/{code}/adverse-events/{ae_id}/reports"): lambda _c: {
            "kind": "initial", "reported_at": _iso(1)},
        ("POST", "/trial/patients/{code}/withdraw"): lambda _c: {"reason": "consent withdrawn", "remove_data": False},
        ("POST", "/trial/allocation-lists"): lambda _c: upload,
        ("POST", "/cds-services/immunoguide-patient-view"): lambda _c: patient_view_request("immunoparalysis"),
        ("POST", "/auth/logout"): lambda _c: None,
    }


def _codes(method: str, path: str, user: str, site: str | None) -> list[str]:
    own = site or "ATH"
    other = "MIL" if own == "ATH" else "ATH"
    new = f"{own}-NEW-{user}"
    if path == "/trial/patients" and method == "POST":
        return [new, f"{other}-NEW-{user}"]
    if "{code}" not in path:
        return [""]
    if path.endswith("/withdraw"):
        return [new, f"{other}-001"]
    if path.endswith("/unblind"):
        return [f"{other}-001", f"{own}-001"]
    if method == "POST":
        return [new, f"{own}-001", f"{other}-001"]
    return [new, *PATIENTS]


def _plan(app: Any, user: str, site: str | None, upload: dict[str, str]) -> Iterator[tuple[str, str, Any]]:
    bodies = _bodies(user, site, upload)
    routes: list[tuple[str, str]] = []
    # FastAPI 0.165 keeps included routers as lazy entries of app.routes; iter_route_contexts flattens them
    for r in iter_route_contexts(app.routes):
        # Dashboard pages (HTML, cookie login) are walked with every role by tests/test_dashboard_pages.py.
        if r.path is None or r.path.startswith("/dashboard"):
            continue
        for m in sorted(r.methods or {"GET"}):
            if m not in ("HEAD", "OPTIONS"):
                routes.append((m, r.path))
    routes = [k for k in routes if k not in DEFERRED] + [k for k in DEFERRED if k in routes]
    for method, path in routes:
        if method != "GET" and (method, path) not in bodies:
            pytest.fail(f"no request spec for {method} {path}: add one to test_service_roles._bodies")
        if (method, path) == ("POST", "/auth/token"):
            continue
        for code in _codes(method, path, user, site):
            url = path.replace("{code}", code).replace("{ae_id}", "1")
            for name in [p for p in url.split("/") if p.startswith("{")]:
                url = url.replace(name, "x")  # other path parameters of routes added later (e.g. a dashboard)
            body = bodies[(method, path)](code) if method != "GET" else None
            yield method, url, body


# ---------------------------------------------------------------------------------------------------------------
# leak detection


def _arm_container_ok(items: list[str]) -> bool:
    """Arm codes may appear only as a whole stratum's arm set (e.g. allowed_arms), which reveals no allocation."""
    arms = [i for i in items if i in ARM_CODES]
    if not arms:
        return True
    for code in arms:
        if not any(STRATUM_ARMS[e] <= set(items) for e in ARM_CODES[code]):
            return False
    return True


def blinding_leaks(obj: Any, path: str = "$", *, keys: bool = True) -> list[str]:
    """Places in a JSON value where a blinded user would learn an allocation, a kit content or an arm statistic.

    ``keys=False`` skips the blinded-key check (for the OpenAPI document, whose ``content`` keys are schema words).
    """
    out: list[str] = []
    if isinstance(obj, dict):
        names = [str(k) for k in obj]
        if not _arm_container_ok(names):
            out.append(f"{path}: arm codes as keys {names}")
        for k, v in obj.items():
            ks = str(k)
            if keys and (ks in BLIND_KEYS or "by_arm" in ks):
                out.append(f"{path}.{ks}: blinded key")
            out.extend(blinding_leaks(v, f"{path}.{ks}", keys=keys))
    elif isinstance(obj, list):
        strings = [x for x in obj if isinstance(x, str)]
        if strings and not _arm_container_ok(strings):
            out.append(f"{path}: arm codes {strings}")
        for i, v in enumerate(obj):
            if isinstance(v, str) and v in ARM_CODES:
                continue  # judged as a set above
            out.extend(blinding_leaks(v, f"{path}[{i}]", keys=keys))
    elif isinstance(obj, str):
        for s in [*ARM_CODES, *REGIMEN_IDS, *ARM_LABELS]:
            if s in obj:
                out.append(f"{path}: {s!r} in {obj[:120]!r}")
    return out


def site_leaks(text: str, other_site: str) -> list[str]:
    """The other site's patient codes found in a response text."""
    return [c for c in PATIENTS if c.startswith(other_site) and c in text]


def _export_documents(content: bytes) -> Iterator[tuple[str, Any]]:
    """Each exported file as JSON-like values: CSV rows as dicts (JSON cells parsed), JSON files parsed."""
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        for name in zf.namelist():
            text = zf.read(name).decode("utf-8")
            if name.endswith(".csv"):
                rows = list(csv.DictReader(io.StringIO(text)))
                parsed = []
                for row in rows:
                    cells: dict[str, Any] = {}
                    for k, v in row.items():
                        try:
                            cells[k] = json.loads(v) if v and v[0] in "[{" else v
                        except ValueError:
                            cells[k] = v
                    parsed.append(cells)
                yield name, {"columns": list(rows[0]) if rows else [], "rows": parsed}
            elif name.endswith(".json"):
                yield name, json.loads(text)


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user,role,site", USERS, ids=[u for u, _, _ in USERS])
def test_every_route_keeps_blinding_and_site_restriction_for_role(
    user: str, role: str, site: str | None, seeded: tuple[Path, dict[str, Any]], allocation_upload: dict[str, str],
    tmp_path: Path,
) -> None:
    """Walking every route, a blinded role sees no arm, kit content or arm statistic and a site user no patient of
    the other site; no request fails with a 5xx and every refusal carries an error code."""
    template, info = seeded
    db = copy_store(template, tmp_path)
    blinded = role not in UNBLINDED_ROLES
    other = None if site is None else ("MIL" if site == "ATH" else "ATH")
    problems: list[str] = []
    seen_arm = False
    statuses: dict[str, int] = {}
    with client_for(db) as client:
        headers = login(client, user)
        for method, url, body in _plan(client.app, user, site, allocation_upload):
            r = client.request(method, url, json=body, headers=headers)
            statuses[f"{method} {url}"] = r.status_code
            if r.status_code >= 500:
                problems.append(f"{method} {url}: {r.status_code} {r.text[:200]}")
                continue
            ctype = r.headers.get("content-type", "")
            if r.status_code >= 400:
                if "json" not in ctype or "code" not in r.json():
                    problems.append(f"{method} {url}: {r.status_code} without an error code")
            docs: list[tuple[str, Any]]
            if not r.content:
                docs, text = [], ""
            elif "application/zip" in ctype:
                docs = list(_export_documents(r.content))
                text = json.dumps([d for _, d in docs])
            elif "json" in ctype:
                docs, text = [(url, r.json())], r.text
            else:
                docs, text = [(url, r.text)], r.text
            is_unblinding = url.endswith("/unblind") and r.status_code == 200
            for where, doc in docs:
                leaks = blinding_leaks(doc, keys=url != "/openapi.json")
                seen_arm = seen_arm or bool(leaks)
                if blinded and leaks and not is_unblinding:
                    problems.extend(f"{method} {url} [{where}] {x}" for x in leaks[:3])
            if other is not None:
                # a code the request itself names is echoed back ("no such patient"), which tells nothing
                problems.extend(f"{method} {url}: other site's patient {c}" for c in site_leaks(text, other)
                                if f"/{c}" not in url)
                if f"/patients/{other}-" in url and r.status_code != 404:
                    problems.append(f"{method} {url}: {r.status_code} for another site's patient (expected 404, "
                                    "the answer for a code that does not exist)")
            if is_unblinding:
                assert role == "investigator" and url.startswith(f"/trial/patients/{site}-")
                assert r.json()["arm"] == info["arms"][url.split("/")[3]]
    assert not problems, "\n".join(problems[:40])
    # positive controls: the walk did exercise the data the detectors look for
    if role in UNBLINDED_ROLES or role == "investigator":
        assert seen_arm, f"{role} never saw an arm: the leak detector or the walk is broken"
    assert statuses["POST /trial/patients/{}-001/randomize".format(site or "ATH")] in (403, 409)
    if role == "site_coordinator":
        assert statuses[f"POST /trial/patients/{site}-NEW-{user}/randomize"] == 200
    if role == "dsmb":
        assert statuses["GET /trial/safety/signals"] == 200


def test_leak_detector_flags_an_allocated_arm_but_not_a_whole_stratum_arm_set() -> None:
    """The detector reports a single arm code, an arm key or a regimen, and accepts a list of all arms of a stratum."""
    assert blinding_leaks({"allowed_arms": ["sii_ifng", "sii_placebo"]}) == []
    assert blinding_leaks({"allowed_arms": ["sii_ifng"]})
    assert blinding_leaks({"arm": "x"})
    assert blinding_leaks({"note": "kit holds anakinra_iv"})
    assert blinding_leaks({"randomised_by_arm": {}})
    assert site_leaks("patient MIL-001 at MIL", "MIL") == ["MIL-001"]
