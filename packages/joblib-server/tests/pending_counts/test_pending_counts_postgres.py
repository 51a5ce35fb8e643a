"""PostgreSQL's sharded pending counts: one row per backend and job, folded by the sweeper."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from zndraw_joblib_server import create_tables

pytestmark = pytest.mark.backends("postgres")

P = "/v1/joblib"


async def test_rows_per_backend_are_folded(app, as_alice, flow, sweep, db, queue) -> None:
    """Changes land in their backend's row; a sweep folds them into the base row."""
    job, scale = await flow.job(as_alice), await flow.job(as_alice, name="Scale")
    job_id, worker = uuid.UUID(job["id"]), str(job["worker_id"])
    q = queue(as_alice, job)
    ids = [(await q.post())["id"] for _ in range(6)]
    await queue(as_alice, scale).submit()
    for task_id in ids[:3]:  # each by a connection of its own: three more backends
        await db.sql("UPDATE joblib_task SET status = 'cancelled' WHERE id = :id", id=task_id)
    rows = await db.rows()
    assert len([shard for job, shard, _ in rows if job == job_id]) >= 4
    assert all(shard != 0 for _, shard, _ in rows)
    assert await db.counts() == {job_id: 3, uuid.UUID(scale["id"]): 1}
    assert await flow.claim(as_alice, str(scale["worker_id"])) is not None

    await sweep()
    assert await db.rows() == [(job_id, 0, 3)]  # the other job, at 0, has no rows left
    assert [await q.read(task_id) for task_id in ids[3:]] == [1, 2, 3]
    assert await q.submit() == 4
    assert await q.submit(priority=1) == 1
    # Updates that leave pending tasks alone change no count (the trigger returns early).
    task = await flow.claim(as_alice, worker)
    await sweep()
    before = await db.rows()
    await flow.move(as_alice, task["id"], "running", worker_id=worker)
    assert (await flow.patch(as_alice, task["id"], progress=0.5)).status_code == 200
    assert await db.rows() == before == [(job_id, 0, 4)]


async def test_the_fold_skips_rows_in_use(app, as_alice, flow, sweep, db, queue, settings) -> None:
    """A backend's row held by its open transaction is left for a later fold, unwaited."""
    job = await flow.job(as_alice)
    job_id = uuid.UUID(job["id"])
    q = queue(as_alice, job)
    ids = [(await q.post())["id"] for _ in range(4)]
    await sweep()
    engine = create_async_engine(settings.database_url)
    cancel = text("UPDATE joblib_task SET status = 'cancelled' WHERE id = :id")
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.execute(cancel, {"id": ids[0]})
            await conn.commit()
            await conn.execute(cancel, {"id": ids[1]})  # holds the row until commit
            await asyncio.wait_for(sweep(), 5)
            assert await db.rows() == [(job_id, 0, 4), (job_id, pid, -1)]
            assert await db.counts() == {job_id: 3}  # the open cancel is not seen yet
            assert await asyncio.wait_for(q.submit(), 5) == 4  # nothing waits on the row
            await conn.commit()
        assert await db.counts() == {job_id: 3}
        await sweep()
        assert [(job, shard) for job, shard, _ in await db.rows()] == [(job_id, 0)]
        assert await q.submit(priority=-1) == 4
    finally:
        await engine.dispose()


async def test_concurrent_submits_claims_and_cancels(
    app, as_alice, as_bob, flow, sweep, db, queue
) -> None:
    """Submitters, claimers, cancellers and sweeps at once on one job: counts stay exact."""
    job = await flow.job(as_alice)
    workers = [str(job["worker_id"])] + [
        str((await flow.job(as_alice))["worker_id"]) for _ in range(2)
    ]
    queues = [queue(as_alice, job), queue(as_bob, job)]
    rng = random.Random(7)
    submitted: list[tuple[Any, str]] = []  # (the submitter's client, the task's id)
    finished = asyncio.Event()

    async def submit(n: int) -> None:
        q = queues[n % 2]
        for i in range(20):
            if i % 5 == 4:
                resp = await q.client.post(
                    f"{P}/rooms/lab/jobs/{q.name}/tasks",
                    json={"items": [{"payload": {}, "priority": rng.randint(-2, 2)}] * 3},
                )
                assert resp.status_code == 202, resp.text
                tasks = resp.json()["items"]
            else:
                tasks = [await q.post(priority=rng.randint(-2, 2))]
            assert all(t["queue_position"] >= 1 for t in tasks)
            submitted.extend((q.client, t["id"]) for t in tasks)

    async def claim(worker: str) -> None:
        while not finished.is_set():
            resp = await as_alice.post(
                f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 2}
            )
            assert resp.status_code == 200, resp.text
            await asyncio.sleep(0.01)

    async def cancel() -> None:
        while not finished.is_set():
            if submitted:
                client, task_id = rng.choice(submitted)
                resp = await client.post(f"{P}/tasks/{task_id}/cancel")
                assert resp.status_code in (200, 409), resp.text
            await asyncio.sleep(0.005)

    async def sweeps() -> None:
        while not finished.is_set():
            await sweep()
            await asyncio.sleep(0.02)

    async def submitters() -> None:
        await asyncio.gather(*(submit(n) for n in range(4)))
        finished.set()

    await asyncio.gather(submitters(), cancel(), sweeps(), *(claim(w) for w in workers))
    assert len(submitted) == 4 * (16 + 4 * 3)
    counted = await db.counts()
    statuses: dict[str, Any] = {}
    for status in ("pending", "claimed", "cancelled"):
        page = await flow.room_tasks(as_alice, status=status, limit=0)
        statuses[status] = page["total"]
    assert sum(statuses.values()) == len(submitted)
    assert counted.get(uuid.UUID(job["id"]), 0) == statuses["pending"]
    assert await queues[0].listed_positions() == list(range(1, statuses["pending"] + 1))
    await sweep()
    assert await db.counts() == counted


async def test_create_tables_racing_traffic(app, as_alice, flow, db, queue, settings) -> None:
    """Two processes starting (``create_tables``) while tasks come and go: exact counts."""
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    q = queue(as_alice, job)
    engines = [create_async_engine(settings.database_url) for _ in range(2)]

    async def traffic() -> None:
        for i in range(30):
            await q.post(priority=i % 3)
            if i % 3 == 0:
                assert await flow.claim(as_alice, worker) is not None

    try:
        await asyncio.gather(traffic(), *(create_tables(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert await db.counts() == {uuid.UUID(job["id"]): 20}
    assert await q.submit(priority=-1) == 21


async def test_truncate_clears_the_counts(app, as_alice, db, queue, filled) -> None:
    """Emptying the tasks table at once (``TRUNCATE``) empties the counts with it."""
    first = queue(as_alice, (await filled(as_alice))[0])
    assert sorted((await db.counts()).values()) == [2, 4]
    await db.sql("TRUNCATE joblib_task")
    assert await db.rows() == []
    assert await first.submit() == 1
