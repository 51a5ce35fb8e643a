"""The pending count per job (``storage.pending``) and the queue position of new tasks.

A submit answers its tasks' positions from the count; a read counts the tasks ahead. The
two must agree whatever happened to the queue before, on both databases.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from zndraw_auth import Base, User

from zndraw_joblib_server import create_app, create_tables
from zndraw_joblib_server.testing import api_client, create_user, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

P = "/v1/joblib"


def at(delta: timedelta) -> str:
    """An ISO timestamp ``delta`` from now."""
    return (datetime.now(UTC) + delta).isoformat()


async def test_submit_positions_agree_with_reads(app, as_alice, flow, sweep, db, queue) -> None:
    """Priorities, due times, batches, claims, cancels, requeues and completions."""
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    q = queue(as_alice, job)
    other = queue(as_alice, await flow.job(as_alice, name="Scale"))
    assert [await q.submit() for _ in range(3)] == [1, 2, 3]
    assert await other.submit() == 1
    assert await q.submit(priority=5) == 1
    assert await q.submit(priority=-2) == 5
    assert await q.submit(priority=5) == 2
    assert await q.submit(run_after=at(timedelta(hours=1))) == 6  # before priority -2 only
    assert await q.submit(run_after=at(-timedelta(hours=1))) == 6  # due now: at the back
    assert await q.submit(priority=5, run_after=at(timedelta(hours=2))) == 3
    assert await q.submit(headers={"Idempotency-Key": "k1"}, priority=1) == 4
    batch = [{}, {"priority": 5}, {"priority": -2}, {}, {"priority": 5}]
    assert await q.batch(*batch, {"run_after": at(-timedelta(hours=1))}) == [11, 3, 16, 12, 4, 13]
    assert await q.batch({"priority": 1, "run_after": at(timedelta(minutes=5))}, {}) == [7, 15]
    await db.counts()

    claimed = [await flow.claim(as_alice, worker) for _ in range(3)]
    assert all(task is not None for task in claimed)
    assert await q.submit() == 13
    assert await q.submit(priority=5) == 2
    pending = (await as_alice.get(f"{P}/rooms/lab/tasks", params={"status": "pending"})).json()
    for task in pending["items"][:3]:
        resp = await as_alice.post(f"{P}/tasks/{task['id']}/cancel")
        assert resp.status_code == 200, resp.text
    await q.submit()
    await q.submit(priority=-2)
    await db.counts()

    # The claimed tasks go back to the queue (with a backoff) when their worker is deleted.
    assert (await as_alice.delete(f"{P}/workers/{worker}")).status_code == 204
    assert {(await flow.task(as_alice, t["id"]))["status"] for t in claimed} == {"pending"}
    worker = str((await flow.job(as_alice))["worker_id"])
    await q.submit()
    await q.submit(priority=5)
    # A lease that runs out puts its task back too (the sweeper).
    leased = await q.submit(priority=9, lease_seconds=0.05)
    assert leased == 1
    assert (await flow.claim(as_alice, worker))["priority"] == 9
    await asyncio.sleep(0.1)
    assert (await sweep()).tasks_released == 1
    assert await q.submit(priority=9) == 1  # the requeued one waits out its backoff
    done = await flow.claim(as_alice, worker)
    await flow.move(as_alice, done["id"], "running", worker_id=worker)
    await flow.move(as_alice, done["id"], "completed", worker_id=worker)
    await q.submit()
    pending_now = (await db.counts())[uuid.UUID(job["id"])]
    assert await q.listed_positions() == list(range(1, pending_now + 1))
    await sweep()  # PostgreSQL folds the counts: the positions stay right
    assert await q.submit(priority=-3) == pending_now + 1
    assert await q.batch({"priority": 9}, {"priority": -3}) == [1, pending_now + 3]
    await db.counts()


async def test_counts_follow_job_deletion_and_hand_edits(app, as_alice, flow, db, queue) -> None:
    """A job deleted with its last worker, and pending rows deleted or moved by hand."""
    job = await flow.job(as_alice, name="Scale")
    worker = str(job["worker_id"])
    q = queue(as_alice, job)
    await q.submit()
    task = await flow.claim(as_alice, worker)
    await flow.move(as_alice, task["id"], "running", worker_id=worker)
    await flow.move(as_alice, task["id"], "completed", worker_id=worker)
    assert (await as_alice.delete(f"{P}/workers/{worker}")).status_code == 204
    assert (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).status_code == 404
    assert await db.counts() == {}
    again = await flow.job(as_alice, name="Scale")
    assert again["id"] == job["id"]
    assert [await q.submit(), await q.submit(), await q.submit()] == [1, 2, 3]
    rows = await db.sql("SELECT id, job_id FROM joblib_task WHERE status = 'pending'")
    await db.sql("DELETE FROM joblib_task WHERE id = :id", id=rows[0][0])
    job_id = uuid.UUID(job["id"])
    assert await db.counts() == {job_id: 2}
    assert await q.submit() == 3
    # A pending task moved to another job by hand (and a finished one, which counts nowhere).
    other = await flow.job(as_alice, name="Rotate")
    other_id = uuid.UUID(other["id"])
    await db.sql(
        "UPDATE joblib_task SET job_id = :job WHERE id = :id", job=other_id, id=rows[1][0]
    )
    assert await db.counts() == {job_id: 2, other_id: 1}
    assert await queue(as_alice, other).submit() == 2
    assert await q.submit(priority=1) == 1
    await db.sql("UPDATE joblib_task SET status = 'completed' WHERE id = :id", id=rows[1][0])
    assert await db.counts() == {job_id: 3, other_id: 1}


@pytest.mark.parametrize("how", ["emptied", "wrong", "dropped"])
async def test_an_app_start_recounts(settings, db, queue, filled, how: str) -> None:
    """A database whose counts are missing or wrong is recounted when the app starts."""
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        alice = await create_user(app, "alice@example.com")
        async with api_client(app, alice) as client:
            jobs = await filled(client)
    await db.damage(how)
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        assert sorted((await db.counts()).values()) == [2, 4]
        async with api_client(app, alice) as client:
            first, second = queue(client, jobs[0]), queue(client, jobs[1])
            assert await first.submit() == 4  # behind the two at 0 but before -1
            assert await first.submit(priority=-1) == 6
            assert await second.submit() == 2
            assert await first.batch({"priority": 3}, {}) == [1, 6]
        assert sorted((await db.counts()).values()) == [3, 8]


@pytest.mark.parametrize("how", ["emptied", "wrong", "dropped"])
async def test_create_tables_recounts(app, as_alice, db, queue, filled, how: str) -> None:
    """``create_tables`` on a running app's engine recounts too."""
    first, second = (queue(as_alice, job) for job in await filled(as_alice))
    await db.damage(how)
    await create_tables(app.state.engine)
    assert sorted((await db.counts()).values()) == [2, 4]
    assert await first.submit(priority=3) == 1
    assert await second.submit(run_after=at(timedelta(minutes=1))) == 2
    assert sorted((await db.counts()).values()) == [3, 5]


async def test_submits_answer_from_the_counts(app, as_alice, db, queue, filled) -> None:
    """A submit reads the kept count (not the queue); an impossible count is not trusted."""
    first = queue(as_alice, (await filled(as_alice))[0])
    await db.damage("wrong")
    answered = await first.post()
    assert answered["queue_position"] >= await first.read(answered["id"]) + 40
    # Counts missing, or below the tasks queued behind the new one: the queue is counted.
    await db.damage("emptied")
    assert await first.submit(priority=5) == 1
    assert await first.batch({"priority": 6}, {"priority": 5}) == [1, 3]
    await create_tables(app.state.engine)
    assert await first.submit() == 8


async def test_create_all_of_other_tables_only(database_url, backend, db) -> None:
    """A host creating only its own tables gets no counts and no error."""
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: Base.metadata.create_all(sync, tables=[User.__table__]))
        assert not await conn.run_sync(lambda sync: inspect(sync).has_table("joblib_task"))
    assert await db.tables() == set()
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()
    suffix = "_pg" if backend == "postgres" else ""
    assert await db.tables() == {f"joblib_job_pending{suffix}"}


async def test_a_schema_without_counts(settings, db, queue, sweep_with) -> None:
    """A database without the counts (a schema made by migrations): positions are counted."""
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        await db.damage("dropped")  # before the first submit looks for them
        alice = await create_user(app, "alice@example.com")
        async with api_client(app, alice) as client:
            body = {"category": "modifiers", "name": "Rotate", "schema": {}}
            q = queue(client, (await client.put(f"{P}/rooms/lab/jobs", json=body)).json())
            assert [await q.submit() for _ in range(3)] == [1, 2, 3]
            assert await q.submit(priority=1) == 1
            assert await q.batch({}, {"priority": 2}) == [6, 1]
            await sweep_with(app)  # nothing to fold, and no error
            assert await q.submit(headers={"Idempotency-Key": "k"}) == 7
        assert await db.tables() == set()
