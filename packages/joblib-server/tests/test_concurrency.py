"""Concurrent requests against one in-process app: no double claims, no 500, no lock errors."""

from __future__ import annotations

import asyncio
from collections import Counter

from zndraw_joblib_server.testing import create_user

P = "/v1/joblib"
WORKERS = 8
TASKS = 200
CHUNK = 10  # concurrent requests per burst (below the connection pool size; see below)


async def test_many_workers_claim_each_task_exactly_once(as_alice, as_bob, as_admin, flow) -> None:
    job = await flow.job(as_alice)
    workers = [(job["worker_id"], as_alice)]
    for i in range(WORKERS - 1):
        client = as_admin if i % 2 else as_alice  # the owner's and a superuser's workers
        workers.append(((await flow.job(client))["worker_id"], client))
    results = []
    for start in range(0, TASKS, CHUNK):
        results += await asyncio.gather(
            *(
                (as_alice if i % 2 else as_bob).post(
                    f"{P}/rooms/lab/tasks/{job['full_name']}", json={"payload": {"i": i}}
                )
                for i in range(start, start + CHUNK)
            )
        )
    assert [r.status_code for r in results] == [202] * TASKS
    submitted = {r.json()["id"] for r in results}
    assert len(submitted) == TASKS

    claimed: list[tuple[str, str]] = []

    async def work(worker: str, client) -> None:
        idle = 0
        while len(claimed) < TASKS and idle < 20:
            resp = await client.post(
                f"{P}/tasks/claim", json={"worker_id": worker, "max_tasks": 1 + len(claimed) % 3}
            )
            assert resp.status_code == 200, resp.text
            tasks = resp.json()["tasks"]
            if not tasks:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for task in tasks:
                assert task["worker_id"] == worker
                assert task["attempt"] == 1
                claimed.append((task["id"], worker))
                resp = await client.patch(
                    f"{P}/tasks/{task['id']}",
                    json={"status": "running", "worker_id": worker},
                )
                assert resp.status_code == 200, resp.text

    await asyncio.gather(*(work(w, c) for w, c in workers))
    counts = Counter(tid for tid, _ in claimed)
    assert set(counts) == submitted
    assert max(counts.values()) == 1
    page = (await as_alice.get(f"{P}/rooms/lab/tasks", params={"limit": 0})).json()
    assert page["total"] == TASKS
    running = (
        await as_alice.get(f"{P}/rooms/lab/tasks", params={"limit": 0, "status": "running"})
    ).json()
    assert running["total"] == TASKS
    # the recorded worker of each task is the one that claimed it
    owners = dict(claimed)
    page = (await as_alice.get(f"{P}/rooms/lab/tasks", params={"limit": 500})).json()
    assert all(t["worker_id"] == owners[t["id"]] for t in page["items"])


async def test_concurrent_submits_from_several_users(app, as_admin, flow) -> None:
    job = await flow.job(as_admin, "@global")
    users = [await create_user(app, f"user{i}@example.com") for i in range(4)]
    from zndraw_joblib_server.testing import api_client

    async def submit_many(user, room: str) -> list[int]:
        async with api_client(app, user) as client:
            results = await asyncio.gather(
                *(
                    client.post(f"{P}/rooms/{room}/tasks/{job['full_name']}", json={})
                    for _ in range(3)
                )
            )
        return [r.status_code for r in results]

    codes = await asyncio.gather(*(submit_many(u, f"room{i % 2}") for i, u in enumerate(users)))
    assert all(c == 202 for batch in codes for c in batch)
    for room in ("room0", "room1"):
        page = (await as_admin.get(f"{P}/rooms/{room}/tasks", params={"limit": 0})).json()
        assert page["total"] == 6
    pending = (await as_admin.get(f"{P}/rooms/room0/tasks", params={"limit": 50})).json()
    positions = [t["queue_position"] for t in pending["items"]]
    assert len(set(positions)) == len(positions)


async def test_concurrent_idempotent_submits_create_one_task(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    results = await asyncio.gather(
        *(
            as_alice.post(
                f"{P}/rooms/lab/tasks/{job['full_name']}",
                json={},
                headers={"Idempotency-Key": "once"},
            )
            for i in range(12)
        )
    )
    codes = Counter(r.status_code for r in results)
    assert codes[202] == 1
    assert codes[200] == 11
    assert len({r.json()["id"] for r in results}) == 1
    assert (await as_alice.get(f"{P}/rooms/lab/tasks")).json()["total"] == 1


async def test_concurrent_registrations_of_a_new_job(app, as_alice, as_bob, flow) -> None:
    """One registration creates the job and its user owns it; that user's others link
    workers (200), the other user's are refused (403), however the race went."""
    body = {"category": "modifiers", "name": "Fresh", "schema": {"type": "object"}}
    clients = [as_alice if i % 2 else as_bob for i in range(10)]
    results = await asyncio.gather(*(c.put(f"{P}/rooms/lab/jobs", json=body) for c in clients))
    codes = Counter(r.status_code for r in results)
    assert codes[201] == 1, codes
    winner = clients[[r.status_code for r in results].index(201)]
    for client, resp in zip(clients, results, strict=True):
        assert resp.status_code in ((200, 201) if client is winner else (403,)), resp.text
    served = [r for r in results if r.status_code != 403]
    assert len(served) == 5
    assert len({r.json()["id"] for r in served}) == 1
    job = (await as_alice.get(f"{P}/rooms/lab/jobs/lab:modifiers:Fresh")).json()
    assert sorted(job["workers"]) == sorted(r.json()["worker_id"] for r in served)
    assert (await as_alice.get(f"{P}/rooms/lab/jobs")).json()["total"] == 1


async def test_concurrent_registrations_with_the_same_worker(as_alice, flow) -> None:
    worker = await flow.worker(as_alice)
    body = {"category": "modifiers", "name": "Same", "worker_id": worker}
    results = await asyncio.gather(
        *(as_alice.put(f"{P}/rooms/lab/jobs", json=body) for _ in range(6))
    )
    assert sorted(r.status_code for r in results) == [200] * 5 + [201]
    job = (await as_alice.get(f"{P}/rooms/lab/jobs/lab:modifiers:Same")).json()
    assert job["workers"] == [worker]


async def test_claim_racing_worker_delete(as_alice, flow, monkeypatch) -> None:
    """DELETE /workers while a claim for that worker is in flight: the task must not stay
    claimed by the deleted worker (it is released, or never claimed)."""
    from zndraw_joblib_server.services import claim as claim_module

    real = claim_module.announce
    started = asyncio.Event()

    async def slow_announce(*args, **kwargs):
        started.set()
        await asyncio.sleep(0.3)  # inside the claim transaction, after the UPDATE
        return await real(*args, **kwargs)

    monkeypatch.setattr(claim_module, "announce", slow_announce)
    job = await flow.job(as_alice)
    t = await flow.submit(as_alice, job["full_name"], max_attempts=5)
    worker = job["worker_id"]

    async def claim() -> int:
        resp = await as_alice.post(f"{P}/tasks/claim", json={"worker_id": worker})
        return resp.status_code

    async def delete() -> int:
        await started.wait()
        await asyncio.sleep(0.05)
        return (await as_alice.delete(f"{P}/workers/{worker}")).status_code

    codes = await asyncio.gather(claim(), delete())
    assert codes[1] == 204
    got = await flow.task(as_alice, t["id"])
    assert got["status"] == "pending", got
    assert got["worker_id"] is None


async def _burst(client, url: str, n: int) -> list[int]:
    results = await asyncio.wait_for(
        asyncio.gather(*(client.post(url, json={}) for _ in range(n))), 10
    )
    return [r.status_code for r in results]


async def test_burst_beyond_connection_pool(as_alice, flow, backend) -> None:
    job = await flow.job(as_alice)
    n = 20 if backend == "sqlite" else 40  # pool: 5+10 (SQLite), 10+20 (PostgreSQL)
    codes = await _burst(as_alice, f"{P}/rooms/lab/tasks/{job['full_name']}", n)
    assert codes == [202] * n
