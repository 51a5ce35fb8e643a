"""Races between workers, submitters and the sweeper (run many rounds, check invariants)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

P = "/v1/joblib"
ROUNDS = 8


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"lease_seconds": 0.3, "retry_backoff_seconds": 0, "default_max_attempts": 5}


async def test_heartbeat_racing_lease_expiry_never_revives_a_lost_lease(
    as_alice: httpx.AsyncClient, flow, sweep
) -> None:
    for i in range(ROUNDS):
        _job, worker, task = await flow.claimed(as_alice, name=f"Beat{i}", running=True)
        await asyncio.sleep(0.25 + (i % 4) * 0.03)  # around the end of the 0.3 s lease
        beat, _report = await asyncio.gather(as_alice.patch(f"{P}/workers/{worker}"), sweep())
        assert beat.status_code == 200
        after = await flow.task(as_alice, task["id"])
        update = await flow.patch(as_alice, task["id"], progress=0.5, worker_id=worker)
        if after["status"] == "pending":  # the sweeper released it: the old lease is dead
            assert after["attempt"] == 1
            assert update.status_code == 409
            assert update.json()["type"] == "/v1/problems/lease-lost"
        else:  # the heartbeat won: the lease was renewed and the worker may go on
            assert after["status"] == "running"
            assert update.status_code in (200, 409)
            if update.status_code == 409:  # expired between the sweep and the update
                assert update.json()["type"] == "/v1/problems/lease-lost"


async def test_completion_racing_cancel_records_one_outcome(
    app, as_alice: httpx.AsyncClient, flow
) -> None:
    # This race is about cancel against completion, not about leases: a normal lease, so a
    # slow machine cannot turn the completion into a lost lease.
    app.state.joblib_settings = app.state.joblib_settings.model_copy(update={"lease_seconds": 60})
    for i in range(ROUNDS):
        _job, worker, task = await flow.claimed(as_alice, name=f"Race{i}", running=True)
        done, cancel = await asyncio.gather(
            flow.patch(
                as_alice, task["id"], status="completed", worker_id=worker, result={"i": i}
            ),
            as_alice.post(f"{P}/tasks/{task['id']}/cancel"),
        )
        assert done.status_code == 200, done.text
        assert cancel.status_code in (200, 409), cancel.text
        final = await flow.task(as_alice, task["id"])
        assert final["status"] == "completed"
        assert final["result"] == {"i": i}
        again = await flow.patch(as_alice, task["id"], status="cancelled", worker_id=worker)
        assert again.status_code == 409


async def test_claim_racing_cancel_of_a_pending_task(as_alice: httpx.AsyncClient, flow) -> None:
    for i in range(ROUNDS):
        job = await flow.job(as_alice, "lab", f"Pend{i}")
        task = await flow.submit(as_alice, job["full_name"])
        claim, cancel = await asyncio.gather(
            flow.claim(as_alice, job["worker_id"]),
            as_alice.post(f"{P}/tasks/{task['id']}/cancel"),
        )
        final = await flow.task(as_alice, task["id"])
        if claim is None:  # the cancel came first
            assert final["status"] == "cancelled"
        else:  # the claim came first: the cancel is a request to the worker
            assert final["status"] == "claimed"
            assert final["cancel_requested"] is True
        assert cancel.status_code == 200


async def test_two_workers_race_for_a_requeued_task(
    app, as_alice: httpx.AsyncClient, flow, sweep
) -> None:
    for i in range(ROUNDS):
        job = await flow.job(as_alice, "lab", f"Requeue{i}")
        second = await flow.job(as_alice, "lab", f"Requeue{i}")  # another worker, same job
        task = await flow.submit(as_alice, job["full_name"])
        first_claim = await flow.claim(as_alice, job["worker_id"])
        assert first_claim["id"] == task["id"]
        await asyncio.sleep(0.35)
        await sweep()
        assert (await flow.task(as_alice, task["id"]))["status"] == "pending"
        a, b = await asyncio.gather(
            flow.claim(as_alice, job["worker_id"]), flow.claim(as_alice, second["worker_id"])
        )
        winners = [t for t in (a, b) if t is not None]
        assert len(winners) == 1
        assert winners[0]["id"] == task["id"]
        assert winners[0]["attempt"] == 2
