"""Nox sessions: lint, types, import contracts, one isolated test run per package, wheels.

Run everything with ``uv run nox`` (what CI runs); one session with ``uv run nox -s core``.

* ``lint``, ``typecheck``, ``imports``, ``contract`` use the whole locked workspace
  (``uv sync --locked`` into the session's venv).
* ``core``, ``client``, ``server`` each get a fresh venv holding only that package, the
  packages it declares, and the test runner. Before testing, ``scripts/check_isolation.py``
  proves the forbidden stack is absent and that every module of the package imports without it.
* ``wheels`` builds the three wheels, checks their metadata with ``scripts/check_wheels.py``
  and installs only the core and client wheels into a fresh venv to import the client.
* ``conformance`` runs the server's conformance suite (tests marked ``conformance``) in the
  modes of ``--modes=pairwise`` other than today's defaults (``server`` runs those), on both
  databases: fast lane, claim hand-off, inline SQLite / write gate on and off (see
  docs/development.md, "Testing").
* ``bench`` runs ``benchmarks/bench.py --quick`` as a smoke test (it must work; the figures
  are not judged).

Third-party versions in the isolated sessions are constrained to ``uv.lock``. pytest always
runs from the repository root with the root ``pyproject.toml`` as its configuration.

PostgreSQL: with ``ZNDRAW_JOBLIB_TEST_POSTGRES_URL`` unset, the ``server``, ``conformance``
and ``contract`` sessions look for a server on 127.0.0.1:5432 (user ``postgres``, no
password) and, when one answers, run their tests on a throwaway database they create and
drop (``_local_postgres``).
A URL that is set (``.ci/run`` sets one) is used as it is.

The output is kept short: installs are silent unless they fail, pytest runs with ``-q`` and
lists only failures and errors, and each test session ends with one line
``nox > tests: N passed, N failed, N skipped`` (read from pytest's JUnit XML), which
``.ci/run`` adds up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "imports",
    "core",
    "client",
    "server",
    "contract",
    "conformance",
    "wheels",
    "bench",
]

ROOT = Path(__file__).parent
UV = os.environ.get("UV", "uv")  # `uv run` exports the path of its own binary here

CORE = "packages/joblib-core"
CLIENT = "packages/joblib-client"
SERVER = "packages/joblib-server"
SRC_DIRS = [f"{CORE}/src", f"{CLIENT}/src", f"{SERVER}/src"]

# The test runner. pytest-asyncio and pytest-timeout are here in every session because the
# root pytest configuration sets their options (asyncio_mode, timeout).
PYTEST_DEPS = ["pytest", "pytest-asyncio", "pytest-timeout"]
# -q and -rfE: dots and the failures, not a line per skipped test.
PYTEST_ARGS = ["-c", "pyproject.toml", "--rootdir", ".", "-p", "no:cacheprovider", "-q", "-rfE"]

SERVER_STACK = ["fastapi", "starlette", "sqlalchemy", "zndraw_auth"]

POSTGRES_URL_VAR = "ZNDRAW_JOBLIB_TEST_POSTGRES_URL"
LOCAL_POSTGRES = ("127.0.0.1", 5432)


def _sync_workspace(session: nox.Session, *args: str) -> None:
    """Install the locked workspace (or part of it) into the session's venv."""
    session.run_install(
        UV,
        "sync",
        "--locked",
        "--quiet",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": str(session.virtualenv.location)},
        external=True,
        silent=True,
    )


def _constraints(session: nox.Session) -> str:
    """Write the locked third-party versions as a pip constraints file; return its path."""
    path = Path(session.create_tmp()) / "constraints.txt"
    session.run_install(
        UV,
        "export",
        "--locked",
        "--quiet",
        "--no-hashes",
        "--no-emit-workspace",
        "--all-groups",
        "--all-extras",
        "--output-file",
        str(path),
        external=True,
        silent=True,
    )
    return str(path)


def _isolated_install(session: nox.Session, *requirements: str) -> None:
    """Install only ``requirements`` (local paths or names), at the locked versions."""
    session.install("-c", _constraints(session), *requirements, silent=True)


def _check_isolation(session: nox.Session, package: str, forbidden: list[str]) -> None:
    session.run("python", "scripts/check_isolation.py", package, "--forbid", *forbidden)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _postgres_admin(session: nox.Session, action: str, name: str) -> str:
    """Create or drop database ``name`` with the session's python; "ok" or why not."""
    host, port = LOCAL_POSTGRES
    out = session.run(
        "python",
        "scripts/scratch_postgres.py",
        *(action, name, "--host", host, "--port", str(port)),
        silent=True,
    )
    return str(out or "").strip()


@contextlib.contextmanager
def _local_postgres(session: nox.Session) -> Iterator[None]:
    """Point the PostgreSQL tests at a throwaway database on 127.0.0.1:5432, if one answers.

    Does nothing when ``ZNDRAW_JOBLIB_TEST_POSTGRES_URL`` is set (CI sets it) or nothing
    listens there; a server that refuses (a password needed, say) is logged and its tests
    are skipped as without one. The database is dropped afterwards, tests failed or not.
    """
    host, port = LOCAL_POSTGRES
    if os.environ.get(POSTGRES_URL_VAR) or not _port_open(host, port):
        yield
        return
    name = f"zndraw_joblib_nox_{uuid.uuid4().hex[:12]}"
    answer = _postgres_admin(session, "create", name)
    if answer != "ok":
        session.log(f"PostgreSQL on {host}:{port} not usable ({answer}): its tests are skipped")
        yield
        return
    session.log(f"PostgreSQL tests on {host}:{port}, throwaway database {name}")
    session.env[POSTGRES_URL_VAR] = f"postgresql+asyncpg://postgres@{host}:{port}/{name}"
    try:
        yield
    finally:
        answer = _postgres_admin(session, "drop", name)
        if answer != "ok":
            session.log(f"could not drop database {name}: {answer}")


def _has_tests(directory: str) -> bool:
    path = ROOT / directory
    return path.is_dir() and any(
        p.is_file() for pattern in ("test_*.py", "*_test.py") for p in path.rglob(pattern)
    )


def _pytest(session: nox.Session, directory: str, *args: str) -> None:
    """Run pytest on ``directory`` (with ``args``); skip the session while it has no tests."""
    if not _has_tests(directory):
        session.skip(f"no test files in {directory} yet")
    junit = Path(session.create_tmp()) / "junit.xml"
    junit.unlink(missing_ok=True)
    try:
        session.run(
            "pytest", *PYTEST_ARGS, f"--junitxml={junit}", directory, *args, *session.posargs
        )
    finally:
        session.log(f"tests: {_counts(junit)}")


def _counts(junit: Path) -> str:
    """``N passed, N failed, N skipped`` from pytest's JUnit XML (errors count as failed)."""
    if not junit.is_file():
        return "0 passed, 1 failed, 0 skipped (pytest wrote no report)"
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
    failed = totals["failures"] + totals["errors"]
    passed = totals["tests"] - failed - totals["skipped"]
    return f"{passed} passed, {failed} failed, {totals['skipped']} skipped"


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
    _sync_workspace(session, "--only-group", "dev")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Mypy over the three src trees (configuration in the root pyproject.toml)."""
    _sync_workspace(session)
    session.run("mypy", *SRC_DIRS)


@nox.session
def imports(session: nox.Session) -> None:
    """Import-linter contracts from the root pyproject.toml (the dependency direction)."""
    _sync_workspace(session)
    session.run("lint-imports")


@nox.session(reuse_venv=False)
def core(session: nox.Session) -> None:
    """Core alone: pydantic and nothing of the server or HTTP stack."""
    _isolated_install(session, "-e", CORE, "hypothesis", *PYTEST_DEPS)
    _check_isolation(session, "zndraw_joblib_core", [*SERVER_STACK, "httpx"])
    _pytest(session, f"{CORE}/tests")


@nox.session(reuse_venv=False)
def client(session: nox.Session) -> None:
    """Core and client alone (httpx, no FastAPI, Starlette, SQLAlchemy or zndraw-auth)."""
    _isolated_install(session, "-e", CORE, "-e", CLIENT, "hypothesis", *PYTEST_DEPS)
    _check_isolation(session, "zndraw_joblib_client", [*SERVER_STACK, "zndraw_joblib_server"])
    _pytest(session, f"{CLIENT}/tests")


def _server_install(session: nox.Session) -> None:
    """Core and server (with the PostgreSQL extra) and the server tests' needs, no client."""
    # Test dependencies only: httpx drives the ASGI app in the server's HTTP tests, and the
    # predecessor (zndraw-joblib 0.1.7) fills a database for the import test.
    _isolated_install(
        session,
        "-e",
        CORE,
        "-e",
        f"{SERVER}[postgres]",
        "httpx",
        "hypothesis",
        "zndraw-joblib",
        *PYTEST_DEPS,
    )
    _check_isolation(session, "zndraw_joblib_server", ["zndraw_joblib_client"])


@nox.session(reuse_venv=False)
def server(session: nox.Session) -> None:
    """Core and server (with the PostgreSQL extra), never the client."""
    _server_install(session)
    with _local_postgres(session):
        _pytest(session, f"{SERVER}/tests")


@nox.session(reuse_venv=False)
def conformance(session: nox.Session) -> None:
    """The server's conformance suite in every mode but the defaults, on both databases."""
    _server_install(session)
    with _local_postgres(session):
        _pytest(
            session,
            f"{SERVER}/tests",
            "-m",
            "conformance",
            "--modes=pairwise",
            "--skip-default-mode",
        )


@nox.session
def contract(session: nox.Session) -> None:
    """The real client against the real server: the whole locked workspace, tests/."""
    _sync_workspace(session)
    with _local_postgres(session):
        _pytest(session, "tests")


@nox.session(reuse_venv=False)
def wheels(session: nox.Session) -> None:
    """Build the wheels, check their metadata, install core + client wheels alone."""
    dist = Path(session.create_tmp()) / "dist"
    if dist.exists():
        for old in dist.iterdir():
            old.unlink()
    session.run(
        UV,
        "build",
        "--all-packages",
        "--wheel",
        "--out-dir",
        str(dist),
        "--quiet",
        external=True,
    )
    session.run("python", "scripts/check_wheels.py", str(dist))

    def wheel(name: str) -> str:
        (found,) = dist.glob(f"{name}-*.whl")
        return str(found)

    # The session venv is fresh and holds nothing but what is installed here.
    session.install(
        "-c",
        _constraints(session),
        wheel("zndraw_joblib_core"),
        wheel("zndraw_joblib_client"),
        silent=True,
    )
    _check_isolation(
        session, "zndraw_joblib_client", [*SERVER_STACK, "zndraw_joblib_server", "uvicorn"]
    )
    session.run(
        "python",
        "-c",
        "import zndraw_joblib_client, zndraw_joblib_core; "
        "assert '/site-packages/' in zndraw_joblib_client.__file__.replace('\\\\', '/'), "
        "zndraw_joblib_client.__file__; print('client wheel imports from', "
        "zndraw_joblib_client.__file__)",
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark's quick mode as a smoke test: it must work, not meet the targets."""
    _sync_workspace(session)
    session.run("python", "benchmarks/bench.py", "--quick")
