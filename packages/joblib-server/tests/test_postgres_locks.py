"""PostgreSQL row locks: requests that meet another transaction's locks neither hang nor 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

pytestmark = pytest.mark.backends("postgres")

P = "/v1/joblib"
_LOCK_TASK = text("SELECT id FROM joblib_task WHERE id = :id FOR UPDATE")
_BEAT = text("UPDATE joblib_worker SET last_heartbeat = now() WHERE id = :id")


_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


async def _until_a_lock_is_waited_for(app: FastAPI) -> None:
    for _ in range(400):
        async with app.state.session_maker() as session:
            if (await session.execute(_WAITING)).scalar_one():
                return
        await asyncio.sleep(0.025)
    raise AssertionError("no request waited for a lock")


async def test_a_heartbeat_leaves_a_task_another_transaction_holds(
    app: FastAPI, as_alice: httpx.AsyncClient, flow
) -> None:
    """A task held by a transaction (a completion in flight) is not waited for, nor renewed.

    That transaction may beat the worker next (a completion carrying ``claim_next``): a
    heartbeat holding the worker's row while waiting for the task would deadlock with it.
    """
    _job, worker, task = await flow.claimed(as_alice, name="Held", running=True)
    async with app.state.session_maker() as session, session.begin():
        await session.execute(_LOCK_TASK, {"id": task["id"]})
        beat = await asyncio.wait_for(as_alice.patch(f"{P}/workers/{worker}"), 10)
        assert beat.status_code == 200, beat.text
        assert beat.json()["lease_expires_at"] is None  # nothing renewed
        await asyncio.wait_for(session.execute(_BEAT, {"id": worker}), 10)  # the row is free
    held = await flow.task(as_alice, task["id"])
    assert held["lease_expires_at"] == task["lease_expires_at"]
    beat = await as_alice.patch(f"{P}/workers/{worker}")  # free again: renewed
    assert beat.status_code == 200
    renewed = await flow.task(as_alice, task["id"])
    assert renewed["lease_expires_at"] > task["lease_expires_at"]
    assert beat.json()["lease_expires_at"] == renewed["lease_expires_at"]


async def test_a_deadlocks_victim_answers_503_and_changes_nothing(
    app: FastAPI, as_alice: httpx.AsyncClient, flow
) -> None:
    """``DELETE /workers`` locks the worker, then its tasks; a transaction holding one of its
    tasks then beats the worker: PostgreSQL ends one of the two (here the request, whose
    deadlock check comes first). The request answers 503 with ``Retry-After`` and wrote
    nothing; sent again, it succeeds."""
    _job, worker, task = await flow.claimed(as_alice, name="Knot", running=True)
    async with app.state.session_maker() as session, session.begin():
        await session.execute(text("SET LOCAL deadlock_timeout = '30s'"))
        await session.execute(_LOCK_TASK, {"id": task["id"]})
        delete = asyncio.create_task(as_alice.delete(f"{P}/workers/{worker}"))
        await _until_a_lock_is_waited_for(app)  # the delete holds the worker, waits for the task
        await asyncio.wait_for(session.execute(_BEAT, {"id": worker}), 20)
        answer = await asyncio.wait_for(delete, 20)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["type"] == "/v1/problems/service-unavailable"
    assert (await flow.task(as_alice, task["id"]))["status"] == "running"
    again = await as_alice.delete(f"{P}/workers/{worker}")
    assert again.status_code == 204, again.text
    assert (await flow.task(as_alice, task["id"]))["status"] == "pending"
