"""SQLite's pending count per job (``storage.pending``) and the queue position of new tasks.

A submit answers its tasks' positions from the count; a read counts the tasks ahead. The
two must agree whatever happened to the queue before.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect, make_url
from zndraw_auth import Base, User

from zndraw_joblib_server import JobLibSettings, create_app, create_tables
from zndraw_joblib_server.testing import api_client, create_user, running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

P = "/v1/joblib"
TRIGGERS = ("insert", "delete", "update")


@pytest.fixture
def backend() -> str:
    """SQLite only: PostgreSQL keeps no counts."""
    return "sqlite"


def path_of(settings: JobLibSettings) -> str:
    """The SQLite file of the app."""
    return str(make_url(settings.database_url).database)


def sql(path: str, *statements: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run statements with the stdlib driver (committed); the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            rows = conn.execute(statement, params if "?" in statement else ()).fetchall()
    return rows


def assert_counts(path: str) -> dict[str, int]:
    """The kept counts are the pending tasks per job (a job at 0 may keep its row)."""
    kept = dict(sql(path, "SELECT job_id, pending FROM joblib_job_pending"))
    counted = dict(
        sql(
            path,
            "SELECT job_id, count(*) FROM joblib_task WHERE status = 'pending' GROUP BY job_id",
        )
    )
    assert all(n >= 0 for n in kept.values()), kept
    assert {job: n for job, n in kept.items() if n} == counted
    return counted


def at(delta: timedelta) -> str:
    """An ISO timestamp ``delta`` from now."""
    return (datetime.now(UTC) + delta).isoformat()


class Queue:
    """Submits to one job that check every answered position against a read right after."""

    def __init__(self, client: httpx.AsyncClient, job: dict[str, Any]) -> None:
        self.client = client
        self.name = job["full_name"]

    async def submit(self, headers: dict[str, str] | None = None, **body: Any) -> int:
        resp = await self.client.post(
            f"{P}/rooms/lab/tasks/{self.name}", json={"payload": {}, **body}, headers=headers
        )
        assert resp.status_code == 202, resp.text
        return await self.same_as_read(resp.json())

    async def batch(self, *items: dict[str, Any]) -> list[int]:
        resp = await self.client.post(
            f"{P}/rooms/lab/jobs/{self.name}/tasks",
            json={"items": [{"payload": {}, **item} for item in items]},
        )
        assert resp.status_code == 202, resp.text
        return [await self.same_as_read(task) for task in resp.json()["items"]]

    async def same_as_read(self, task: dict[str, Any]) -> int:
        resp = await self.client.get(f"{P}/tasks/{task['id']}")
        assert resp.status_code == 200, resp.text
        position = task["queue_position"]
        assert isinstance(position, int), task
        assert position >= 1
        assert position == resp.json()["queue_position"], (task, resp.json())
        return int(position)

    async def listed_positions(self) -> list[int]:
        params = {"status": "pending", "limit": 500}
        resp = await self.client.get(f"{P}/rooms/lab/jobs/{self.name}/tasks", params=params)
        assert resp.status_code == 200, resp.text
        return sorted(task["queue_position"] for task in resp.json()["items"])


async def test_submit_positions_agree_with_reads(app, as_alice, flow, sweep) -> None:
    """Priorities, due times, batches, claims, cancels, requeues and completions."""
    path = path_of(app.state.joblib_settings)
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    q = Queue(as_alice, job)
    other = Queue(as_alice, await flow.job(as_alice, name="Scale"))
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
    assert_counts(path)

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
    assert_counts(path)

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
    pending_now = assert_counts(path)[uuid.UUID(job["id"]).hex]
    assert await q.listed_positions() == list(range(1, pending_now + 1))


async def test_counts_follow_job_deletion_and_deleted_rows(app, as_alice, flow) -> None:
    """A job deleted with its last worker, and a pending row deleted by hand, keep counting."""
    path = path_of(app.state.joblib_settings)
    job = await flow.job(as_alice, name="Scale")
    worker = str(job["worker_id"])
    q = Queue(as_alice, job)
    await q.submit()
    task = await flow.claim(as_alice, worker)
    await flow.move(as_alice, task["id"], "running", worker_id=worker)
    await flow.move(as_alice, task["id"], "completed", worker_id=worker)
    assert (await as_alice.delete(f"{P}/workers/{worker}")).status_code == 204
    assert (await as_alice.get(f"{P}/rooms/lab/jobs/{job['full_name']}")).status_code == 404
    assert assert_counts(path) == {}
    again = await flow.job(as_alice, name="Scale")
    assert again["id"] == job["id"]
    assert [await q.submit(), await q.submit(), await q.submit()] == [1, 2, 3]
    rows = sql(path, "SELECT id, job_id FROM joblib_task WHERE status = 'pending'")
    sql(path, "DELETE FROM joblib_task WHERE id = ?", params=(rows[0][0],))
    assert assert_counts(path) == {rows[0][1]: 2}
    assert await q.submit() == 3


DAMAGE = {
    "emptied": ["DELETE FROM joblib_job_pending"],
    "wrong": ["UPDATE joblib_job_pending SET pending = pending + 40"],
    "dropped": [  # as a database of a version before the counts
        *(f"DROP TRIGGER joblib_task_pending_{name}" for name in TRIGGERS),
        "DROP TABLE joblib_job_pending",
    ],
}
"""Ways the counts can be missing or wrong (an older version's database, a hand edit)."""


async def fill(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Two jobs: five tasks submitted to the first (one claimed), two to the second."""
    jobs = []
    for name in ("Rotate", "Scale"):
        body = {"category": "modifiers", "name": name, "schema": {}}
        resp = await client.put(f"{P}/rooms/lab/jobs", json=body)
        assert resp.status_code == 201, resp.text
        jobs.append(resp.json())
    first, second = Queue(client, jobs[0]), Queue(client, jobs[1])
    for priority in (0, 3, 0, -1, 0):
        await first.submit(priority=priority)
    await second.submit()
    await second.submit(run_after=at(timedelta(hours=1)))
    resp = await client.post(f"{P}/tasks/claim", json={"worker_id": jobs[0]["worker_id"]})
    assert resp.json()["task"]["priority"] == 3
    return jobs


@pytest.mark.parametrize("how", ["emptied", "wrong", "dropped"])
async def test_an_app_start_recounts(settings, how: str) -> None:
    """A database whose counts are missing or wrong is recounted when the app starts."""
    path = path_of(settings)
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        alice = await create_user(app, "alice@example.com")
        async with api_client(app, alice) as client:
            jobs = await fill(client)
    sql(path, *DAMAGE[how])
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        assert sorted(assert_counts(path).values()) == [2, 4]
        async with api_client(app, alice) as client:
            first, second = Queue(client, jobs[0]), Queue(client, jobs[1])
            assert await first.submit() == 4  # behind the two at 0 but before -1
            assert await first.submit(priority=-1) == 6
            assert await second.submit() == 2
            assert await first.batch({"priority": 3}, {}) == [1, 6]
        assert sorted(assert_counts(path).values()) == [3, 8]


@pytest.mark.parametrize("how", list(DAMAGE))
async def test_create_tables_recounts(app, as_alice, how: str) -> None:
    """``create_tables`` on a running app's engine recounts too."""
    path = path_of(app.state.joblib_settings)
    first, second = (Queue(as_alice, job) for job in await fill(as_alice))
    sql(path, *DAMAGE[how])
    await create_tables(app.state.engine)
    assert sorted(assert_counts(path).values()) == [2, 4]
    assert await first.submit(priority=3) == 1
    assert await second.submit(run_after=at(timedelta(minutes=1))) == 2
    assert sorted(assert_counts(path).values()) == [3, 5]


def test_create_all_of_other_tables_only() -> None:
    """A host creating only its own tables on SQLite gets no counts and no error."""
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        Base.metadata.create_all(conn, tables=[User.__table__])
        assert not inspect(conn).has_table("joblib_job_pending")
        Base.metadata.create_all(conn)
        assert inspect(conn).has_table("joblib_job_pending")
    engine.dispose()


async def test_a_schema_without_counts(settings) -> None:
    """A database without the counts (a schema made by migrations): positions are counted."""
    path = path_of(settings)
    app = create_app(settings, auth_settings(), sweeper=False)
    async with running(app):
        sql(path, *DAMAGE["dropped"])  # before the first submit looks for them
        alice = await create_user(app, "alice@example.com")
        async with api_client(app, alice) as client:
            body = {"category": "modifiers", "name": "Rotate", "schema": {}}
            queue = Queue(client, (await client.put(f"{P}/rooms/lab/jobs", json=body)).json())
            assert [await queue.submit() for _ in range(3)] == [1, 2, 3]
            assert await queue.submit(priority=1) == 1
            assert await queue.batch({}, {"priority": 2}) == [6, 1]
        assert not sql(path, "SELECT 1 FROM sqlite_master WHERE name = 'joblib_job_pending'")
