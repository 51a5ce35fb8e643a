"""``zndraw-joblib-server serve`` refuses unsafe configurations (exit code 2, one line) and
keeps a generated secret in development mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import (  # type: ignore[import-not-found]
    BACKENDS,
    SECRET,
    LiveServer,
    database_url,
)

ADMIN = "boss@example.com"
ADMIN_PASSWORD = "boss-password-123"


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZNDRAW_")}
    env["ZNDRAW_JOBLIB_DATABASE_URL"] = url
    env.update(extra)
    return env


def _serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zndraw_joblib_server.cli", "serve", "--port", "1"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


class _Server(LiveServer):
    """A live server with exactly the given environment (no test secret or admin)."""

    def __init__(self, url: str, log: Path, env: dict[str, str], cwd: Path) -> None:
        super().__init__(url, log)
        self._env = env
        self._cwd = cwd

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def start(self) -> None:
        old = Path.cwd()
        os.chdir(self._cwd)
        try:
            super().start()
        finally:
            os.chdir(old)


def test_production_without_secret_refused(tmp_path: Path) -> None:
    env = _env(
        f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL=ADMIN,
        ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    _refused(_serve(env, tmp_path), "ZNDRAW_AUTH_SECRET_KEY")
    assert not list(tmp_path.glob("*.secret"))


@pytest.mark.parametrize("admin", [True, False], ids=["production", "development"])
def test_short_secret_refused(tmp_path: Path, admin: bool) -> None:
    extra = {"ZNDRAW_AUTH_SECRET_KEY": "x" * 31}
    if admin:
        extra |= {
            "ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL": ADMIN,
            "ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
    env = _env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", **extra)
    _refused(_serve(env, tmp_path), "ZNDRAW_AUTH_SECRET_KEY", "32")


def test_app_factory_refuses_too(tmp_path: Path) -> None:
    from zndraw_auth import AuthSettings

    from zndraw_joblib_server import JobLibSettings, create_app
    from zndraw_joblib_server.app import StartupRefused

    settings = JobLibSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    auth = AuthSettings(default_admin_email=ADMIN, default_admin_password=ADMIN_PASSWORD)
    with pytest.raises(StartupRefused):
        create_app(settings, auth.model_copy(update={"secret_key": AuthSettings().secret_key}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dev_mode_generates_a_kept_secret(tmp_path: Path, backend: str) -> None:
    url = database_url(backend, tmp_path)
    env = _env(url)
    live = _Server(url, tmp_path / "server.log", env, tmp_path)
    live.start()
    try:
        token = live.token("dev@example.com", "dev-password-1")
    finally:
        live.stop()
    secret_file = (
        tmp_path / "server.db.secret" if backend == "sqlite" else tmp_path / "zndraw-joblib.secret"
    )
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert secret not in (SECRET, "zndraw-joblib-development-secret-change-me-in-production")
    live.start()  # a restart keeps issued tokens valid
    try:
        me = httpx.get(f"{live.url}/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
    finally:
        live.stop()
    # another deployment does not accept that token
    other = tmp_path / "other"
    other.mkdir()
    url2 = f"sqlite+aiosqlite:///{other / 'server.db'}" if backend == "sqlite" else url
    live2 = _Server(url2, other / "server.log", _env(url2), other)
    live2.start()
    try:
        me = httpx.get(f"{live2.url}/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401
    finally:
        live2.stop()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spelling", [ADMIN, ADMIN.upper()], ids=["same", "upper-case"])
def test_admin_email_registered_first_refuses_start(
    tmp_path: Path, backend: str, spelling: str
) -> None:
    url = database_url(backend, tmp_path)
    live = _Server(
        url, tmp_path / "server.log", _env(url, ZNDRAW_AUTH_SECRET_KEY=SECRET), tmp_path
    )
    live.start()  # development mode: the attacker registers the future admin's e-mail
    try:
        live.token(spelling, "attacker-password")
    finally:
        live.stop()
    admin_env = _env(
        url,
        ZNDRAW_AUTH_SECRET_KEY=SECRET,
        ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL=ADMIN,
        ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    _refused(_serve(admin_env, tmp_path), "did not create")


@pytest.mark.parametrize("backend", BACKENDS)
def test_configured_admin_survives_restarts(tmp_path: Path, backend: str) -> None:
    url = database_url(backend, tmp_path)
    env = _env(
        url,
        ZNDRAW_AUTH_SECRET_KEY=SECRET,
        ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL=ADMIN,
        ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    live = _Server(url, tmp_path / "server.log", env, tmp_path)
    for _ in range(2):
        live.start()
        try:
            token = live.token(ADMIN, ADMIN_PASSWORD)
            me = httpx.get(f"{live.url}/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["is_superuser"] is True
        finally:
            live.stop()
