"""PostgreSQL: a worker's report and its next claim go to the database as one statement."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.backends("postgres")

P = "/v1/joblib"


async def _complete(as_alice, task_id: str, worker: str) -> dict:
    resp = await as_alice.patch(
        f"{P}/tasks/{task_id}",
        json={
            "status": "completed",
            "worker_id": worker,
            "result": {"done": task_id},
            "claim_next": {"worker_id": worker, "start": True},
        },
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_worker_drains_its_queue_one_statement_per_task(
    as_alice, flow, statements
) -> None:
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    submitted = [await flow.submit(as_alice, job["full_name"]) for _ in range(3)]
    first = await flow.claim(as_alice, worker, start=True)
    assert first is not None
    assert first["id"] == submitted[0]["id"]
    current = first
    for expected in submitted[1:]:
        statements.clear()
        answer = await _complete(as_alice, current["id"], worker)
        assert statements.on() == ["WITH"], statements  # report and claim together
        assert answer["status"] == "completed"
        assert answer["result"] == {"done": current["id"]}
        current = answer["claimed"]["task"]
        assert current["id"] == expected["id"]
        assert current["status"] == "running"
        assert current["worker_id"] == worker
    answer = await _complete(as_alice, current["id"], worker)  # the queue is empty now
    assert answer["claimed"]["tasks"] == []
    done = await as_alice.get(f"{P}/rooms/lab/tasks", params={"status": "completed"})
    assert sorted(t["id"] for t in done.json()["items"]) == sorted(t["id"] for t in submitted)
