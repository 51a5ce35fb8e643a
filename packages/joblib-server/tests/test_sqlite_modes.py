"""SQLite through aiosqlite's thread (``sqlite_inline=false``), and the inline runner itself."""

from __future__ import annotations

import asyncio

import pytest

from zndraw_joblib_server.storage.sqlite_inline import run_now

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


def test_run_now_finishes_what_does_not_suspend() -> None:
    async def answer() -> int:
        return 42

    assert run_now(answer()) == 42


def test_run_now_refuses_what_suspends() -> None:
    async def sleeps() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="suspended"):
        run_now(sleeps())


def test_run_now_reads_a_resolved_future() -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.set_result("done")
        assert run_now(future) == "done"
    finally:
        loop.close()


async def test_a_write_opens_a_new_inline_connection_when_none_is_pooled(
    app, as_alice, flow
) -> None:
    """Writes check pooled inline connections out without greenlets; when the pool has none
    idle, opening one needs the greenlet bridge, and the write still succeeds."""
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
