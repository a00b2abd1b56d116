"""Authentication: hashed passwords, bearer tokens (hashed at rest, expiring, revocable), the ``users`` CLI, and
``immunoguide serve`` refusing demo accounts outside ``--demo`` on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from immunoguide.cli._serve import serve, users_app
from immunoguide.service import ServiceSettings, create_app
from immunoguide.service.auth import (
    UserStore,
    demo_accounts,
    ensure_demo_users,
    hash_password,
    verify_password,
)
from immunoguide.trial.accounts import tokens_table, users_table
from immunoguide.trial.store import TrialStore
from service_support import NOW, PASSWORD


class Clock:
    """A settable clock for the service."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """An initialised SQLite store file (simulation: the service runs on the tests' fixed clock)."""
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    st = TrialStore(url)
    st.initialise(simulation=True)
    st.dispose()
    return url


@pytest.fixture
def clocked(store_url: str) -> Iterator[tuple[TestClient, Clock]]:
    """A client whose clock the test moves; token cache off so every request reads the token row."""
    clock = Clock(NOW)
    app = create_app(store_url, settings=ServiceSettings(clock=clock, token_ttl=timedelta(hours=1), token_cache_s=0))
    with TestClient(app) as c:
        app.state.service.users.create_user("inv", PASSWORD, "investigator", "ATH")
        yield c, clock


def test_password_is_stored_as_salted_scrypt_never_in_clear(store_url: str) -> None:
    """The users table holds an scrypt hash with a per-user salt; the same password hashes differently twice."""
    st = TrialStore(store_url)
    users = UserStore(st.engine)
    users.create_user("a", PASSWORD, "statistician")
    users.create_user("b", PASSWORD, "statistician")
    with st.engine.begin() as conn:
        hashes = list(conn.execute(select(users_table.c.password_hash).order_by(users_table.c.username)).scalars())
    st.dispose()
    assert all(h.startswith("scrypt$") and PASSWORD not in h for h in hashes)
    assert hashes[0] != hashes[1]
    assert verify_password(PASSWORD, hashes[0]) and not verify_password(PASSWORD + "x", hashes[0])


def test_corrupt_hash_never_verifies() -> None:
    """A malformed stored hash is a failed login, not an exception."""
    assert not verify_password("x", "scrypt$bad")
    assert not verify_password("x", "md5$1$2$3$4$5")
    assert verify_password("x", hash_password("x"))


def test_short_password_and_unknown_role_are_refused(store_url: str) -> None:
    """create_user refuses passwords under 12 characters (IG-E100) and roles outside the trial roles (IG-E408)."""
    from immunoguide.errors import InputError, NotAuthorized

    st = TrialStore(store_url)
    users = UserStore(st.engine)
    with pytest.raises(InputError):
        users.create_user("x", "short", "statistician")
    with pytest.raises(NotAuthorized):
        users.create_user("x", PASSWORD, "superuser")
    with pytest.raises(NotAuthorized):
        users.create_user("x", PASSWORD, "site_coordinator")  # a site role needs a site
    st.dispose()


def test_login_gives_a_token_stored_only_as_a_digest(clocked: tuple[TestClient, Clock], store_url: str) -> None:
    """The token is returned once; the tokens table holds its HMAC-SHA-256, not the token."""
    c, _ = clocked
    r = c.post("/auth/token", json={"username": "inv", "password": PASSWORD})
    assert r.status_code == 200
    token = r.json()["access_token"]
    assert r.json()["role"] == "investigator" and r.json()["blinded"] is True
    st = TrialStore(store_url)
    with st.engine.begin() as conn:
        stored = list(conn.execute(select(tokens_table.c.token_hmac)).scalars())
    st.dispose()
    assert token not in stored and len(stored) == 1 and len(stored[0]) == 64


def test_wrong_password_and_unknown_user_get_the_same_answer(clocked: tuple[TestClient, Clock]) -> None:
    """Both are 401 IG-E418 with the same expected/todo text (user names are not revealed)."""
    c, _ = clocked
    a = c.post("/auth/token", json={"username": "inv", "password": "wrong-password!"}).json()
    b = c.post("/auth/token", json={"username": "nobody", "password": "wrong-password!"}).json()
    assert a["code"] == b["code"] == "IG-E418"
    assert (a["expected"], a["todo"]) == (b["expected"], b["todo"])


def test_token_expires_after_its_lifetime(clocked: tuple[TestClient, Clock]) -> None:
    """A token works until its expiry (1 h here) and is refused after it."""
    c, clock = clocked
    token = c.post("/auth/token", json={"username": "inv", "password": PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    clock.t = NOW + timedelta(minutes=59)
    assert c.get("/auth/me", headers=h).status_code == 200
    clock.t = NOW + timedelta(hours=1, seconds=1)
    r = c.get("/auth/me", headers=h)
    assert (r.status_code, r.json()["code"], r.json()["got"]) == (401, "IG-E418", "expired token")


def test_logout_revokes_the_token(clocked: tuple[TestClient, Clock]) -> None:
    """After POST /auth/logout the same token is refused."""
    c, _ = clocked
    token = c.post("/auth/token", json={"username": "inv", "password": PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    assert c.post("/auth/logout", headers=h).status_code == 204
    assert c.get("/auth/me", headers=h).status_code == 401


def test_forged_token_is_refused(clocked: tuple[TestClient, Clock]) -> None:
    """A random string is not a token."""
    c, _ = clocked
    r = c.get("/trial/patients", headers={"Authorization": "Bearer " + "A" * 43})
    assert (r.status_code, r.json()["code"]) == (401, "IG-E418")


def test_tokens_survive_a_restart_only_with_the_same_secret(store_url: str) -> None:
    """A token issued under one secret is valid for another app instance with that secret, not with another."""
    def app(secret: str) -> TestClient:
        return TestClient(create_app(store_url, secret=secret, settings=ServiceSettings(clock=lambda: NOW)))

    with app("s1") as c:
        c.app.state.service.users.create_user("stat", PASSWORD, "statistician")
        token = c.post("/auth/token", json={"username": "stat", "password": PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    with app("s1") as c:
        assert c.get("/auth/me", headers=h).status_code == 200
    with app("s2") as c:
        assert c.get("/auth/me", headers=h).status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_create_user_cli_stores_a_user_who_can_log_in(store_url: str) -> None:
    """`users create-user` with --password-stdin creates the account; the password then logs in."""
    runner = CliRunner()
    res = runner.invoke(users_app, ["create-user", "rivera", "--role", "site_coordinator", "--site", "ATH",
                                    "--db", store_url, "--password-stdin"], input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert "rivera (site_coordinator, site ATH)" in res.output
    with TestClient(create_app(store_url, settings=ServiceSettings(clock=lambda: NOW))) as c:
        assert c.post("/auth/token", json={"username": "rivera", "password": PASSWORD}).status_code == 200
    listed = runner.invoke(users_app, ["list", "--db", store_url])
    assert "rivera\tsite_coordinator\tATH" in listed.output


def test_create_user_cli_refuses_a_short_password(store_url: str) -> None:
    """A password under 12 characters exits 2 with the IG-E100 message."""
    res = CliRunner().invoke(users_app, ["create-user", "x", "--role", "statistician", "--db", store_url,
                                         "--password-stdin"], input="short\n")
    assert res.exit_code == 2
    assert "IG-E100" in res.output


def test_serve_refuses_to_start_while_demo_accounts_exist(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --demo, a store holding demo accounts is refused (exit 1, IG-E416) before uvicorn starts."""
    import typer

    st = TrialStore(store_url)
    users = UserStore(st)
    ensure_demo_users(users)
    st.dispose()
    started: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append((a, k)))
    app = typer.Typer()
    app.command()(serve)
    res = CliRunner().invoke(app, ["--db", store_url])
    assert res.exit_code == 1 and not started
    assert "IG-E416" in res.output and "demo account" in res.output


def test_serve_with_demo_on_loopback_creates_demo_accounts_and_starts(store_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--demo on 127.0.0.1 creates every demo account and starts uvicorn on loopback."""
    import typer

    started: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(k))
    app = typer.Typer()
    app.command()(serve)
    res = CliRunner().invoke(app, ["--db", store_url, "--demo", "--port", "8765"])
    assert res.exit_code == 0, res.output
    assert started and started[0]["host"] == "127.0.0.1" and started[0]["port"] == 8765
    st = TrialStore(store_url)
    assert UserStore(st).demo_users() == sorted(u for u, _, _ in demo_accounts())
    st.dispose()


def test_serve_refuses_demo_on_a_public_address(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--demo with --host 0.0.0.0 exits 2: well-known passwords are never served beyond loopback."""
    import typer

    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("must not start"))
    app = typer.Typer()
    app.command()(serve)
    res = CliRunner().invoke(app, ["--db", store_url, "--demo", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "loopback" in res.output


def test_serve_refuses_an_uninitialised_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty database is refused (IG-E416, run trial init or --init), not silently created."""
    import typer

    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("must not start"))
    app = typer.Typer()
    app.command()(serve)
    res = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert res.exit_code == 1 and "IG-E416" in res.output


def test_delete_demo_removes_every_demo_account(store_url: str) -> None:
    """`users delete-demo` removes the demo accounts; other users stay."""
    st = TrialStore(store_url)
    users = UserStore(st)
    ensure_demo_users(users)
    users.create_user("keep", PASSWORD, "administrator")
    st.dispose()
    assert CliRunner().invoke(users_app, ["delete-demo", "--db", store_url]).exit_code == 1  # needs a login
    res = CliRunner().invoke(users_app, ["delete-demo", "--db", store_url],
                             env={"IMMUNOGUIDE_USER": "keep", "IMMUNOGUIDE_PASSWORD": PASSWORD})
    assert res.exit_code == 0 and f"removed {len(demo_accounts())}" in res.output
    st = TrialStore(store_url)
    assert [u["username"] for u in UserStore(st).list_users()] == ["keep"]
    st.dispose()


def test_start_up_reports_a_store_whose_allocation_list_was_edited_and_starts(tmp_path: Path) -> None:
    """The lifespan runs the allocation-list verification and reports an edited slot (IG-RAND-E001 for its list)
    instead of refusing to start; the verify route shows it to an authenticated user."""
    from sqlalchemy import text

    from service_support import login, seed_store

    seed_store(tmp_path / "t.db")
    st = TrialStore(f"sqlite:///{tmp_path / 't.db'}")
    with st.engine.begin() as conn:
        conn.execute(text("UPDATE allocation_slots SET arm_mac = :m WHERE seq = 2 AND list_id = 1"), {"m": "0" * 64})
    st.dispose()
    app = create_app(f"sqlite:///{tmp_path / 't.db'}", settings=ServiceSettings(clock=lambda: NOW))
    with TestClient(app) as c:
        assert [x["id"] for x in app.state.service.allocation_checks if x["level"] == "error"] == ["IG-RAND-E001"]
        v = c.get("/trial/allocation-lists/verify", headers=login(c, "stat")).json()
        assert v["ok"] is False and {x["id"] for x in v["checks"] if x["level"] == "error"} == {"IG-RAND-E001"}
