"""The ``zndraw-joblib-server`` command: a bad database ends in one line and exit code 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from zndraw_joblib_server.testing import TEST_SECRET, postgres_skip_message, postgres_url

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ZNDRAW_JOBLIB_DATABASE_URL", None)
    env.update(
        {
            "ZNDRAW_AUTH_SECRET_KEY": TEST_SECRET,
            "ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL": "admin@example.com",
            "ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD": "admin-password",
        }
    )
    return env


def _serve_argv(url: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "zndraw_joblib_server.cli", "serve",
        "--port", str(port), "--database-url", url, "--log-level", "warning",
    ]  # fmt: skip


def _refused(url: str) -> str:
    """Run ``serve`` with ``url``; assert exit code 2 and one line; return that line."""
    done = subprocess.run(
        _serve_argv(url, _free_port()),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("zndraw-joblib-server: error: ")
    return lines[0]


def _pg_url() -> str:
    url = postgres_url()
    if url is None:
        pytest.skip(postgres_skip_message())
    return url


def test_sqlite_file_in_a_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"
    line = _refused(f"sqlite+aiosqlite:///{folder / 'x.db'}")
    assert f"folder {folder}" in line
    assert "does not exist" in line
    assert not folder.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://user@127.0.0.1/db", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://user@127.0.0.1/db", "use postgresql+asyncpg://"),
        ("sqlite+pysqlite:///x.db", "use sqlite+aiosqlite://"),
        ("not a url", "cannot read the database URL"),
    ],
)
def test_unusable_urls(url: str, expected: str) -> None:
    assert expected in _refused(url)


@pytest.mark.postgres
def test_postgres_database_missing() -> None:
    url = make_url(_pg_url()).set(database="does_not_exist_xyz")
    line = _refused(url.render_as_string(hide_password=False))
    assert 'database "does_not_exist_xyz" does not exist' in line
    assert "createdb" in line


@pytest.mark.postgres
def test_postgres_down() -> None:
    url = make_url(_pg_url()).set(host="127.0.0.1", port=1)
    line = _refused(url.render_as_string(hide_password=False))
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in line
    assert "is it running" in line


def test_url_without_driver_is_served_with_the_async_driver(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'plain.db'}"
    else:
        url = "postgresql://" + _pg_url().partition("://")[2]
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_serve_argv(url, port)[:-1], "info"], env=_env(), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx.HTTPError:
                health = None
            if health is not None and health.status_code == 200:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)
    assert health.json()["database"] == ("sqlite" if backend == "sqlite" else "postgresql")
    expected = "sqlite+aiosqlite" if backend == "sqlite" else "postgresql+asyncpg"
    assert f"database URL names no driver; using {expected}" in log.read_text()


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zndraw_joblib_server.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip().startswith("zndraw-joblib-server 0.")
