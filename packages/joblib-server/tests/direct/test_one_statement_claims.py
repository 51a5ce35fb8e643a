"""A worker serving one job claims in one statement once its claims find work.

The one-statement claim looks the worker's job up itself and checks its owner; when it
claims nothing (no task, several jobs, a stranger, no such worker) the general claim
answers, exactly as before. On PostgreSQL the statement also beats the worker; on SQLite a
separate beat follows it when one is due, which the counts here leave aside.
"""

from __future__ import annotations

import asyncio

import httpx

P = "/v1/joblib"
GENERAL = {"postgres": (2, 3, 2), "sqlite": (3, 4, 3)}
"""Statements of the general claim: a first claim, an empty one after the one-statement
claim found nothing, an idle one (PostgreSQL outside a transaction reads the worker's jobs
and beats in the claim, or alone when there is nothing; SQLite beats, reads, claims)."""


async def _claim(client: httpx.AsyncClient, worker: str) -> httpx.Response:
    return await client.post(f"{P}/tasks/claim", json={"worker_id": worker})


async def test_a_busy_single_job_worker_claims_in_one_statement(
    flow, as_alice, statements, backend: str
) -> None:
    first_claim, empty, idle = GENERAL[backend]
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    ids = [(await flow.submit(as_alice, job["full_name"]))["id"] for _ in range(4)]
    statements.clear()
    first = await flow.claim(as_alice, worker)
    assert first is not None
    assert len(statements.on()) == first_claim
    claimed = [first["id"]]
    for _ in range(3):
        statements.clear()
        task = await flow.claim(as_alice, worker)
        assert task is not None
        assert task["status"] == "claimed"
        assert task["worker_id"] == worker
        assert statements.on(beats=False) == ["WITH"], statements
        claimed.append(task["id"])
    assert claimed == ids  # in order, each once
    statements.clear()
    assert await flow.claim(as_alice, worker) is None  # empty: asked again the general way
    assert len(statements.on()) == empty
    statements.clear()
    assert await flow.claim(as_alice, worker) is None  # and stays general while idle
    assert len(statements.on()) == idle


async def test_a_second_job_is_served_in_priority_order(flow, as_alice) -> None:
    """A worker that took on another job meanwhile gets the most urgent task of both."""
    job = await flow.job(as_alice, name="First")
    worker = str(job["worker_id"])
    for _ in range(3):
        await flow.submit(as_alice, job["full_name"])
    assert await flow.claim(as_alice, worker) is not None
    assert await flow.claim(as_alice, worker) is not None  # one statement now
    other = await flow.job(as_alice, name="Second", worker_id=worker)
    urgent = await flow.submit(as_alice, other["full_name"], priority=5)
    task = await flow.claim(as_alice, worker)
    assert task is not None
    assert task["id"] == urgent["id"]


async def test_a_stranger_or_a_removed_worker_claims_nothing(
    flow, as_alice, as_bob, problem
) -> None:
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    for _ in range(4):
        await flow.submit(as_alice, job["full_name"])
    assert await flow.claim(as_alice, worker) is not None
    assert await flow.claim(as_alice, worker) is not None
    problem(await _claim(as_bob, worker), 403)
    resp = await as_alice.delete(f"{P}/workers/{worker}")
    assert resp.status_code in (200, 204), resp.text
    problem(await _claim(as_alice, worker), 404, "worker-not-found")
    pending = (await flow.room_tasks(as_alice, status="pending"))["total"]
    assert pending == 4  # the two claimed were released with the worker; none taken since


async def test_a_woken_waiting_claim_claims_in_one_statement(flow, as_alice, statements) -> None:
    """A claim waiting for work, woken by a submit, tries the one-statement claim first."""
    job = await flow.job(as_alice)
    worker = str(job["worker_id"])
    assert await flow.claim(as_alice, worker) is None  # the worker serves one job
    waiter = asyncio.create_task(
        as_alice.post(
            f"{P}/tasks/claim", json={"worker_id": worker}, headers={"Prefer": "wait=10"}
        )
    )
    await asyncio.sleep(0.3)
    statements.clear()
    submitted = await flow.submit(as_alice, job["full_name"])
    answer = await asyncio.wait_for(waiter, 10)
    assert answer.json()["task"]["id"] == submitted["id"]
    assert statements.on(("joblib_worker",), beats=False) == ["WITH"], statements
