"""PostgreSQL-only behaviour: LISTEN/NOTIFY reconnects, concurrent sweepers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from zndraw_joblib_server import JobLibSettings, sweep_once
from zndraw_joblib_server.storage import get_database

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"lease_seconds": 0.2, "claim_poll_interval_seconds": 30}


async def _claim_wait(client: httpx.AsyncClient, worker: str, wait: int) -> dict:
    resp = await client.post(
        "/v1/joblib/tasks/claim", json={"worker_id": worker}, headers={"Prefer": f"wait={wait}"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_listener_reconnects_after_its_connection_is_killed(
    app: FastAPI, as_alice: httpx.AsyncClient, register
) -> None:
    """Killing the LISTEN connection (as a database restart does) does not lose wake-ups."""
    db = get_database(app.state.session_maker, app.state.joblib_settings)
    assert db.pubsub is not None
    assert db.pubsub.connected
    job = await register(room="lab", name="Listen", client=as_alice)
    async with app.state.session_maker() as session:
        killed = await session.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": db.pubsub.backend_pid}
        )
        assert killed.scalar() is True
    for _ in range(300):
        await asyncio.sleep(0.05)
        if db.pubsub.connected and db.pubsub.generation > 1:
            break
    assert db.pubsub.generation > 1, "the listener did not reconnect"
    waiter = asyncio.create_task(_claim_wait(as_alice, job["worker_id"], 20))
    await asyncio.sleep(0.3)
    sub = await as_alice.post(f"/v1/joblib/rooms/lab/tasks/{job['full_name']}", json={})
    claimed = await asyncio.wait_for(waiter, 15)
    assert claimed["task"]["id"] == sub.json()["id"]


async def test_notification_from_another_process_wakes_a_waiting_claim(
    app: FastAPI, as_alice: httpx.AsyncClient, register, settings: JobLibSettings
) -> None:
    """A NOTIFY sent by another connection (as another server process does) wakes the claim."""
    job = await register(room="lab", name="Remote", client=as_alice)
    waiter = asyncio.create_task(_claim_wait(as_alice, job["worker_id"], 20))
    await asyncio.sleep(0.3)
    # insert a task behind the app's back, then notify like another process would
    from sqlalchemy.ext.asyncio import create_async_engine

    other = create_async_engine(settings.database_url)
    async with other.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO joblib_task (id, job_id, room_id, status, payload, priority, "
                "run_after, created_at, attempt, max_attempts, cancel_requested, version) "
                "VALUES (gen_random_uuid(), :job, 'lab', 'pending', '{}', 0, now(), now(), 0, 1, "
                "false, 0)"
            ),
            {"job": job["id"]},
        )
        await conn.execute(
            text("SELECT pg_notify('zndraw_joblib', :key)"), {"key": f"job:{job['id']} 1"}
        )
    await other.dispose()
    claimed = await asyncio.wait_for(waiter, 15)
    assert claimed["task"] is not None


async def test_own_notifications_do_not_wake_this_process_twice(
    app: FastAPI, settings: JobLibSettings
) -> None:
    """Keys this process publishes wake its own waiters once, when queued: the copy
    PostgreSQL sends back to its listener wakes nobody (a waiting claim would otherwise go
    to the database again for nothing), while the same keys from another connection do."""
    from sqlalchemy.ext.asyncio import create_async_engine

    db = get_database(app.state.session_maker, app.state.joblib_settings)
    assert db.pubsub is not None
    assert db.pubsub.connected
    async with db.notifier.subscribe({"probe:own"}) as first:
        db.announce({"probe:own": None})
        assert await first.wait(0.5)
    async with db.notifier.subscribe({"probe:own"}) as second:
        assert not await second.wait(1.5), "the process's own notification woke it again"
        other = create_async_engine(settings.database_url)
        async with other.begin() as conn:
            await conn.execute(text("SELECT pg_notify('zndraw_joblib', 'probe:own *')"))
        await other.dispose()
        assert await second.wait(10), "a notification from elsewhere did not arrive"


async def test_submits_through_another_app_wake_every_waiting_claim(
    app: FastAPI, alice, register, settings: JobLibSettings
) -> None:
    """Three claims wait in one app; three submits through a second app (another process's
    engine, listener and publisher) wake all three, well before the 30 s poll interval."""
    from zndraw_joblib_server import create_app
    from zndraw_joblib_server.testing import api_client, running
    from zndraw_joblib_server.testing import test_auth_settings as auth_settings

    other = create_app(settings, auth_settings(), sweeper=False)
    async with running(other), api_client(app, alice) as here, api_client(other, alice) as there:
        job = await register(room="lab", name="Spread", client=here)
        workers = [job["worker_id"]]
        for _ in range(2):
            worker = (await here.post("/v1/joblib/workers")).json()["id"]
            body = {"category": "modifiers", "name": "Spread", "schema": {}, "worker_id": worker}
            resp = await here.put("/v1/joblib/rooms/lab/jobs", json=body)
            assert resp.status_code in (200, 201), resp.text
            workers.append(worker)
        waiters = [asyncio.create_task(_claim_wait(here, w, 20)) for w in workers]
        await asyncio.sleep(0.3)
        submitted = set()
        for _ in range(3):
            resp = await there.post(f"/v1/joblib/rooms/lab/tasks/{job['full_name']}", json={})
            assert resp.status_code == 202, resp.text
            submitted.add(resp.json()["id"])
        claimed = await asyncio.wait_for(asyncio.gather(*waiters), 15)
    assert {c["task"]["id"] for c in claimed} == submitted


async def test_two_sweepers_release_each_task_once(
    app: FastAPI, as_alice: httpx.AsyncClient, register, settings: JobLibSettings
) -> None:
    """Sweepers of two processes running at once: every stale worker and task handled once."""
    workers = []
    for i in range(6):
        job = await register(room="lab", name=f"Sweep{i}", client=as_alice)
        workers.append(job["worker_id"])
        for _ in range(3):
            await as_alice.post(f"/v1/joblib/rooms/lab/tasks/{job['full_name']}", json={})
        claimed = await as_alice.post(
            "/v1/joblib/tasks/claim", json={"worker_id": job["worker_id"], "max_tasks": 3}
        )
        assert len(claimed.json()["tasks"]) == 3
    await asyncio.sleep(0.4)  # workers go stale, leases run out
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    other_engine = create_async_engine(settings.database_url)
    other = async_sessionmaker(other_engine, expire_on_commit=False)
    stale = settings.model_copy(update={"worker_timeout_seconds": 0.2})
    try:
        reports = await asyncio.gather(
            sweep_once(app.state.session_maker, stale),
            sweep_once(other, stale),
            sweep_once(app.state.session_maker, stale),
        )
    finally:
        await other_engine.dispose()
    assert sum(r.workers_removed for r in reports) == 6
    assert sum(r.tasks_released for r in reports) == 18
    tasks = (await as_alice.get("/v1/joblib/rooms/lab/tasks", params={"limit": 100})).json()
    assert tasks["total"] == 18
    assert {t["status"] for t in tasks["items"]} == {"pending"}
    assert {t["attempt"] for t in tasks["items"]} == {1}
