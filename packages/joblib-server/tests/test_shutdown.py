"""A shutdown answers waiting long-polls 503 with Retry-After at once (lane on and off)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zndraw_joblib_server.storage.database import release_waiters

P = "/v1/joblib"


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The fast lane on and off."""
    return {"fast_lane": request.param, "long_poll_max_wait_seconds": 30}


async def test_waiting_claim_and_read_answer_503(as_admin, flow, problem, until_waiting) -> None:
    job = await flow.job(as_admin)
    task = await flow.submit(as_admin, job["full_name"])
    assert await flow.claim(as_admin, job["worker_id"]) is not None
    wait = {"Prefer": "wait=30"}
    claim = asyncio.create_task(
        as_admin.post(f"{P}/tasks/claim", json={"worker_id": job["worker_id"]}, headers=wait)
    )
    read = asyncio.create_task(as_admin.get(f"{P}/tasks/{task['id']}", headers=wait))
    await until_waiting(2)
    assert release_waiters() >= 2
    for resp in await asyncio.gather(claim, read):
        problem(resp, 503, "service-unavailable")
        assert resp.headers["retry-after"] == "1"
    late = await as_admin.post(
        f"{P}/tasks/claim", json={"worker_id": job["worker_id"]}, headers=wait
    )
    problem(late, 503, "service-unavailable")
    # Requests that do not wait are still served until the server stops.
    assert (await flow.task(as_admin, task["id"]))["status"] == "claimed"
