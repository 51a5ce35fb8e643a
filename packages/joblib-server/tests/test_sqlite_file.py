"""The SQLite file: durable commits by default, and a deleted or read-only file noticed."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text

P = "/v1/joblib"


pytestmark = pytest.mark.backends("sqlite")  # PostgreSQL has neither a file nor this pragma


@pytest.fixture(
    params=[
        {"sqlite_inline": True, "fast_lane": True},
        {"sqlite_inline": True, "fast_lane": False},
        {"sqlite_inline": False, "fast_lane": True},
        {"sqlite_inline": False, "fast_lane": False},
    ],
    ids=["inline-lane", "inline", "aiosqlite-lane", "aiosqlite"],
)
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Both SQLite drivers, the fast lane on and off."""
    return dict(request.param)


def _file(app: Any) -> Path:
    return Path(make_url(app.state.joblib_settings.database_url).database or "")


async def _synchronous(app: Any) -> int:
    async with app.state.session_maker() as session:
        return int((await session.execute(text("PRAGMA synchronous"))).scalar_one())


async def test_commits_are_durable_by_default(app) -> None:
    assert await _synchronous(app) == 2  # FULL


@pytest.mark.parametrize("settings_overrides", [{"sqlite_synchronous": "normal"}])
async def test_normal_synchronous_is_a_setting(app) -> None:
    assert await _synchronous(app) == 1  # NORMAL


async def _healthy(client: Any) -> None:
    resp = await client.get("/health")
    assert resp.status_code == 200, resp.text


async def test_deleted_file_fails_health_and_writes(app, as_admin, flow, problem) -> None:
    job = await flow.job(as_admin)
    await _healthy(as_admin)
    path = _file(app)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    body = problem(await as_admin.get("/health"), 503, "service-unavailable")
    assert "deleted" in body["detail"]
    resp = await as_admin.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {}})
    problem(resp, 503, "service-unavailable")
    assert resp.headers["retry-after"]
    resp = await as_admin.post(f"{P}/tasks/claim", json={"worker_id": job["worker_id"]})
    problem(resp, 503, "service-unavailable")


async def test_replaced_file_fails_health(app, as_admin, problem) -> None:
    await _healthy(as_admin)
    path = _file(app)
    path.rename(path.with_suffix(".old"))
    path.write_bytes(b"")
    body = problem(await as_admin.get("/health"), 503, "service-unavailable")
    assert "replaced" in body["detail"]


async def test_read_only_file_fails_health_and_writes(app, as_admin, flow, problem) -> None:
    job = await flow.job(as_admin)
    path = _file(app)
    mode = path.stat().st_mode
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        body = problem(await as_admin.get("/health"), 503, "service-unavailable")
        assert "read-only" in body["detail"]
        resp = await as_admin.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {}})
        problem(resp, 503, "service-unavailable")
    finally:
        path.chmod(mode)
    await _healthy(as_admin)
    await flow.submit(as_admin, job["full_name"])
