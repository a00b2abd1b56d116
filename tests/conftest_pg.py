"""PostgreSQL for the trial-store tests: a throw-away cluster on loopback, and a fresh database per test.

Import the fixtures from a test module (``from conftest_pg import *``) or register this file as a plugin in
``tests/conftest.py`` (``pytest_plugins = ["conftest_pg"]``).

Where the server comes from:

1. ``IMMUNOGUIDE_PG_URL`` (``postgresql+psycopg://user@host:port/db``): an existing server whose user may
   ``CREATE DATABASE``;
2. else, when a PostgreSQL ``initdb`` is installed (``/usr/lib/postgresql/<version>/bin``), a cluster started
   for the test session in a temporary directory, on 127.0.0.1 and a free port, with ``fsync=off`` (stack.md §5
   recipe A; as user ``postgres`` through ``su`` when run as root, since initdb refuses root), stopped at the end;
3. else the ``pg`` tests **fail** with a clear message when ``IMMUNOGUIDE_REQUIRE_PG=1`` (CI sets it) and are
   skipped otherwise.

Each test that uses :func:`pg_url` gets its own database, cloned from a template migrated once per session
(``CREATE DATABASE … TEMPLATE …``), and dropped afterwards. The templates are **simulation** stores initialised
with the test session's trial key (``tests/conftest.py``): tests act at fixed times with ``now=…``; the tests of
real stores (system clock, accounts) make their own.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["pg_blank_databases", "pg_databases", "pg_server", "pg_url", "sqlite_template", "store_url"]

_COUNTER = itertools.count(1)


def _initdb() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cluster:
    """A throw-away PostgreSQL cluster (started once per test process)."""

    def __init__(self, initdb: str, *, max_connections: int = 200) -> None:
        self.max_connections = max_connections
        self.bindir = str(Path(initdb).parent)
        self.root = Path(tempfile.mkdtemp(prefix="igpg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            os.chmod(self.root, 0o755)
            for p in (self.root, self.sock):
                shutil.chown(p, "postgres", "postgres")
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._started = False

    def _run(self, cmd: list[str], timeout: float = 60) -> None:
        line = " ".join(shlex.quote(c) for c in cmd)
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", line] if self.as_root else ["sh", "-c", line]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            log = (self.root / "server.log")
            raise RuntimeError(f"{line} failed ({res.returncode}): {res.stdout}\n{res.stderr}\n"
                               f"{log.read_text() if log.exists() else ''}")

    def start(self) -> None:
        self._run([f"{self.bindir}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                   "--no-sync"])
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={self.max_connections}")
        for attempt in range(3):
            try:
                self._run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                           "-t", "60", "-o", opts, "start"])
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = _free_port()
                self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
                opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off "
                        f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={self.max_connections}")
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                self._run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


_CLUSTER: _Cluster | None = None
_TEMPLATE: dict[str, str] = {}


def _admin_url(server: str, db: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server).set(database=db).render_as_string(hide_password=False)


def _exec_autocommit(server: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.execute(text(sql))
    finally:
        eng.dispose()


def pg_unavailable(reason: str) -> None:
    """Fail (``IMMUNOGUIDE_REQUIRE_PG=1``, as in CI) or skip the test that needs PostgreSQL."""
    msg = f"PostgreSQL is not available: {reason}"
    if os.environ.get("IMMUNOGUIDE_REQUIRE_PG") == "1":
        pytest.fail(msg + " (IMMUNOGUIDE_REQUIRE_PG=1 makes this a failure)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """URL of a PostgreSQL server usable for CREATE DATABASE (see the module docstring)."""
    global _CLUSTER
    url = os.environ.get("IMMUNOGUIDE_PG_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    if _CLUSTER is None:
        initdb = _initdb()
        if initdb is None:
            pg_unavailable("IMMUNOGUIDE_PG_URL is unset and no initdb under /usr/lib/postgresql/*/bin "
                           "(install the Debian package 'postgresql')")
        cluster = _Cluster(str(initdb))
        try:
            cluster.start()
        except Exception as exc:  # noqa: BLE001 - report any start failure the same way
            cluster.stop()
            pg_unavailable(f"could not start a throw-away PostgreSQL cluster: {exc}")
        _CLUSTER = cluster
        atexit.register(cluster.stop)
    return _CLUSTER.url


def _drop_quietly(server: str, name: str) -> None:
    try:
        _exec_autocommit(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except Exception:  # noqa: BLE001 - best effort at exit
        pass


def _pg_template(server: str) -> str:
    if server not in _TEMPLATE:
        from immunoguide.trial.store import TrialStore

        name = f"ig_tmpl_{os.getpid()}"
        _exec_autocommit(server, f"DROP DATABASE IF EXISTS {name}")
        _exec_autocommit(server, f"CREATE DATABASE {name}")
        st = TrialStore(_admin_url(server, name))
        st.initialise(simulation=True)
        st.dispose()
        _TEMPLATE[server] = name
        atexit.register(_drop_quietly, server, name)  # runs before the cluster stops (atexit is LIFO)
    return _TEMPLATE[server]


@pytest.fixture
def pg_databases(pg_server: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, migrated PostgreSQL databases (each dropped after the test)."""
    tmpl = _pg_template(pg_server)
    names: list[str] = []

    def new() -> str:
        name = f"ig_t_{os.getpid()}_{next(_COUNTER)}"
        _exec_autocommit(pg_server, f"CREATE DATABASE {name} TEMPLATE {tmpl}")
        names.append(name)
        return _admin_url(pg_server, name)

    yield new
    for name in names:
        _exec_autocommit(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_blank_databases(pg_server: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases (no schema; each dropped after the test)."""
    names: list[str] = []

    def new() -> str:
        name = f"ig_b_{os.getpid()}_{next(_COUNTER)}"
        _exec_autocommit(pg_server, f"CREATE DATABASE {name}")
        names.append(name)
        return _admin_url(pg_server, name)

    yield new
    for name in names:
        _exec_autocommit(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_databases: Callable[[], str]) -> str:
    """A fresh, migrated PostgreSQL database for one test (dropped afterwards)."""
    return pg_databases()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite trial store migrated once per session (copied per test)."""
    from immunoguide.trial.store import TrialStore

    path = tmp_path_factory.mktemp("sqlite_tmpl") / "template.db"
    st = TrialStore(f"sqlite:///{path}")
    st.initialise(simulation=True)
    st.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh, migrated trial store on each backend: SQLite (a file) and PostgreSQL (marked ``pg``)."""
    if request.param == "sqlite":
        db = tmp_path / "trial.db"
        shutil.copyfile(sqlite_template, db)
        return f"sqlite:///{db}"
    return request.getfixturevalue("pg_url")
