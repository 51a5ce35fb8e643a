"""Worker liveness in job answers: live_workers counts, the ?live filter, refused submits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import event

P = "/v1/joblib"
SHORT = {"worker_timeout_seconds": 1.0}


async def _job(client: httpx.AsyncClient, full_name: str, room: str = "lab") -> dict[str, Any]:
    resp = await client.get(f"{P}/rooms/{room}/jobs/{full_name}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _listing(client: httpx.AsyncClient, room: str = "lab", **params: Any) -> dict[str, Any]:
    resp = await client.get(f"{P}/rooms/{room}/jobs", params=params)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _live_in_listing(client: httpx.AsyncClient, full_name: str) -> int:
    items = (await _listing(client))["items"]
    return int(next(j["live_workers"] for j in items if j["full_name"] == full_name))


async def _lapsed(client: httpx.AsyncClient, full_name: str) -> None:
    """Poll (with a deadline) until no worker of the job is live any more."""
    deadline = time.monotonic() + 15
    while (await _job(client, full_name))["live_workers"]:
        assert time.monotonic() < deadline, "the worker never stopped counting as live"
        await asyncio.sleep(0.1)


async def test_counts_follow_registration_and_removal(as_alice, flow) -> None:
    job = await flow.job(as_alice)
    name = job["full_name"]
    assert job["live_workers"] == 1
    assert (await _job(as_alice, name))["live_workers"] == 1
    assert await _live_in_listing(as_alice, name) == 1

    second = await flow.worker(as_alice)
    again = await flow.job(as_alice, worker_id=second)
    assert again["live_workers"] == 2
    assert (await _job(as_alice, name))["live_workers"] == 2
    assert await _live_in_listing(as_alice, name) == 2

    # a pending task keeps the job listed once its last worker is gone
    await flow.submit(as_alice, name)
    assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
    shown = await _job(as_alice, name)
    assert (shown["live_workers"], shown["workers"]) == (1, [second])
    assert await _live_in_listing(as_alice, name) == 1
    assert (await as_alice.delete(f"{P}/workers/{second}")).status_code == 204
    shown = await _job(as_alice, name)
    assert (shown["live_workers"], shown["workers"]) == (0, [])
    assert await _live_in_listing(as_alice, name) == 0


async def test_filter_by_live_workers(as_alice, flow) -> None:
    served = (await flow.job(as_alice, name="Served"))["full_name"]
    left = await flow.job(as_alice, name="Left")
    await flow.submit(as_alice, left["full_name"])  # keeps the job once its worker is gone
    assert (await as_alice.delete(f"{P}/workers/{left['worker_id']}")).status_code == 204

    everything = await _listing(as_alice)
    assert everything["total"] == 2
    live = await _listing(as_alice, live="true")
    assert [j["full_name"] for j in live["items"]] == [served]
    assert live["total"] == 1
    idle = await _listing(as_alice, live="false")
    assert [j["full_name"] for j in idle["items"]] == [left["full_name"]]
    assert idle["total"] == 1
    assert (await _listing(as_alice, live="true", limit=0))["total"] == 1


async def test_bad_filter_is_a_problem(as_alice, flow, problem) -> None:
    await flow.job(as_alice)
    resp = await as_alice.get(f"{P}/rooms/lab/jobs", params={"live": "sometimes"})
    problem(resp, 422, "validation-error")


class TestStatements:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # users stay cached: an expiring cache entry would add a lookup to one listing
        return {"user_cache_seconds": 3600}

    async def test_listing_reads_a_fixed_number_of_statements(self, app, as_alice, flow) -> None:
        """The counts come with the page: not one query per job."""
        engine = app.state.engine.sync_engine
        seen: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        async def statements() -> int:
            await _listing(as_alice)  # warm: a cached user lookup expiring is not the listing's
            seen.clear()
            event.listen(engine, "before_cursor_execute", record)
            try:
                await _listing(as_alice)
            finally:
                event.remove(engine, "before_cursor_execute", record)
            return len(seen)

        await flow.job(as_alice, name="First")
        one = await statements()
        for i in range(5):
            await flow.job(as_alice, name=f"More{i}")
        assert (await _listing(as_alice))["total"] == 6
        assert await statements() == one


class TestHeartbeatLapse:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return SHORT

    async def test_lapsed_worker_is_not_live_until_it_reports_again(self, as_alice, flow) -> None:
        job = await flow.job(as_alice)
        name = job["full_name"]
        await _lapsed(as_alice, name)
        # still linked (the sweeper has not run), just not live
        shown = await _job(as_alice, name)
        assert shown["workers"] == [job["worker_id"]]
        assert await _live_in_listing(as_alice, name) == 0
        assert (await _listing(as_alice, live="true"))["total"] == 0
        assert (await _listing(as_alice, live="false"))["total"] == 1
        assert (await as_alice.patch(f"{P}/workers/{job['worker_id']}")).status_code == 200
        assert (await _job(as_alice, name))["live_workers"] == 1
        assert (await _listing(as_alice, live="true"))["total"] == 1

    async def test_setting_off_still_accepts_submits(self, as_alice, flow) -> None:
        job = await flow.job(as_alice)
        await _lapsed(as_alice, job["full_name"])
        await flow.submit(as_alice, job["full_name"])


class TestRefuseWithoutWorkers:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {**SHORT, "refuse_submit_without_workers": True}

    async def test_submits_refused_while_no_worker_is_live(self, as_alice, flow, problem) -> None:
        job = await flow.job(as_alice)
        name = job["full_name"]
        assert (await as_alice.patch(f"{P}/workers/{job['worker_id']}")).status_code == 200
        await flow.submit(as_alice, name, headers={"Idempotency-Key": "first"})
        await _lapsed(as_alice, name)

        single = await as_alice.post(f"{P}/rooms/lab/tasks/{name}", json={"payload": {}})
        body = problem(single, 409, "no-workers-available")
        assert "worker" in body["detail"]
        batch = await as_alice.post(
            f"{P}/rooms/lab/jobs/{name}/tasks", json={"items": [{"payload": {}}] * 2}
        )
        problem(batch, 409, "no-workers-available")
        assert (await flow.room_tasks(as_alice))["total"] == 1  # nothing was created

        # the repeat of an accepted submit is still answered with its task
        repeat = await as_alice.post(
            f"{P}/rooms/lab/tasks/{name}",
            json={"payload": {}},
            headers={"Idempotency-Key": "first"},
        )
        assert repeat.status_code == 200, repeat.text

        # a worker that reports again makes the job submittable
        assert (await as_alice.patch(f"{P}/workers/{job['worker_id']}")).status_code == 200
        await flow.submit(as_alice, name)
        assert (await flow.room_tasks(as_alice))["total"] == 2

    async def test_a_job_without_workers_is_refused(self, as_alice, flow, problem) -> None:
        job = await flow.job(as_alice)
        name = job["full_name"]
        await flow.submit(as_alice, name)  # keeps the job once its worker is gone
        assert (await as_alice.delete(f"{P}/workers/{job['worker_id']}")).status_code == 204
        resp = await as_alice.post(f"{P}/rooms/lab/tasks/{name}", json={"payload": {}})
        problem(resp, 409, "no-workers-available")
