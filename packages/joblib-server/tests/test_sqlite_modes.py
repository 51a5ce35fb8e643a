"""SQLite through aiosqlite's thread (``sqlite_inline=false``), and the inline driver itself."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_server.storage.sqlite_inline import INLINE_DRIVER

P = "/v1/joblib"


pytestmark = pytest.mark.backends("sqlite")  # these are its two drivers


@pytest.mark.parametrize("settings_overrides", [{"sqlite_inline": False}])
async def test_a_task_lifecycle_without_the_inline_driver(app, as_alice, flow) -> None:
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    first = await flow.submit(as_alice, job["full_name"])
    second = await flow.submit(as_alice, job["full_name"])
    assert second["queue_position"] == 2
    task = await flow.claim(as_alice, worker)
    assert task is not None
    assert task["id"] == first["id"]
    await flow.move(as_alice, task["id"], "running", worker_id=worker)
    done = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result={"x": 1})
    assert done["status"] == "completed"
    assert done["result"] == {"x": 1}
    resp = await as_alice.patch(f"{P}/workers/{worker}")
    assert resp.status_code == 200, resp.text
    assert (await flow.task(as_alice, second["id"]))["status"] == "pending"
    assert app.state.joblib_settings.sqlite_inline is False


async def test_inline_connections_serve_the_async_api_and_plain_sqlite3(app) -> None:
    """The inline engine's connections are ``sqlite3``'s own, usable through SQLAlchemy's
    asyncio session (results, transactions) and reachable as the documented driver
    connection."""
    engine = app.state.engine
    assert engine.dialect.driver == INLINE_DRIVER
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite3.Connection)
        answer = await conn.run_sync(lambda sync: sync.execute(text("SELECT 41 + 1")).scalar())
        assert answer == 42
    async with AsyncSession(engine) as session:
        assert (await session.execute(text("SELECT 'ok'"))).scalar_one() == "ok"
        await session.execute(text("CREATE TABLE t (x INTEGER)"))
        await session.rollback()
        names = await session.execute(text("SELECT name FROM sqlite_master WHERE name = 't'"))
        assert names.all() == []


async def test_a_write_opens_a_new_inline_connection_when_none_is_pooled(
    app, as_alice, flow
) -> None:
    """Writes check pooled inline connections out without greenlets; when the pool has none
    idle, a new one is opened, and the write succeeds."""
    job = await flow.job(as_alice)
    await flow.submit(as_alice, job["full_name"])  # the app now knows its engine is inline
    engine = app.state.engine
    held = [await engine.connect() for _ in range(engine.pool.size() + 1)]
    try:
        assert engine.pool.checkedin() == 0
        task = await flow.submit(as_alice, job["full_name"])
        assert task["queue_position"] == 2
    finally:
        for conn in held:
            await conn.close()
