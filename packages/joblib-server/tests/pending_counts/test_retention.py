"""Retention: the sweeper deletes old finished tasks in bounded batches (issue 17 #10).

Pending tasks are never deleted, and the kept per-job pending counts (triggers on both
databases) stay equal to the pending tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from zndraw_joblib_server import sweeper

P = "/v1/joblib"
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


async def _finish(client, flow, worker: str, status: str, n: int, job: dict[str, Any]) -> list:
    ids = []
    for _ in range(n):
        task = await flow.submit(client, job["full_name"])
        if status == "cancelled":
            assert (await client.post(f"{P}/tasks/{task['id']}/cancel")).status_code == 200
        else:
            claimed = await flow.claim(client, worker)
            assert claimed["id"] == task["id"]
            await flow.move(client, task["id"], "running", worker_id=worker)
            extra = {"error": "boom"} if status == "failed" else {}
            await flow.move(client, task["id"], status, worker_id=worker, **extra)
        ids.append(task["id"])
    return ids


async def _age(db, ids: list[str]) -> None:
    """Make tasks look finished long ago."""
    when: Any = LONG_AGO if db.backend == "postgres" else "2000-01-01 00:00:00.000000"
    for task_id in ids:
        key = task_id if db.backend == "postgres" else task_id.replace("-", "")
        await db.sql(
            "UPDATE joblib_task SET completed_at = :when WHERE CAST(id AS TEXT) = :id",
            when=when,
            id=key,
        )


async def test_old_finished_tasks_are_purged_in_bounded_batches(
    as_alice, flow, db, sweep, monkeypatch
) -> None:
    monkeypatch.setattr(sweeper, "RETENTION_BATCH", 2)
    monkeypatch.setattr(sweeper, "RETENTION_BATCHES_PER_PASS", 2)
    job = await flow.job(as_alice)
    worker = job["worker_id"]
    old = await _finish(as_alice, flow, worker, "completed", 3, job)
    old += await _finish(as_alice, flow, worker, "failed", 1, job)
    old += await _finish(as_alice, flow, worker, "cancelled", 1, job)
    recent = await _finish(as_alice, flow, worker, "completed", 1, job)
    pending = [(await flow.submit(as_alice, job["full_name"]))["id"] for _ in range(3)]
    await _age(db, old)
    await db.sql(  # pending tasks are never purged, however old
        "UPDATE joblib_task SET created_at = :when WHERE status = 'pending'",
        when=LONG_AGO if db.backend == "postgres" else "2000-01-01 00:00:00.000000",
    )
    counts = await db.counts()

    assert (await sweep()).tasks_purged == 4  # two batches of two, then the pass stops
    assert (await sweep()).tasks_purged == 1
    assert (await sweep()).tasks_purged == 0
    for task_id in old:
        assert (await as_alice.get(f"{P}/tasks/{task_id}")).status_code == 404
    for task_id in recent + pending:
        assert (await as_alice.get(f"{P}/tasks/{task_id}")).status_code == 200
    assert await db.counts() == counts  # the kept pending counts still match
    new = await flow.submit(as_alice, job["full_name"])
    assert new["queue_position"] == len(pending) + 1


class TestKeepForever:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"retention_days": 0}

    async def test_zero_keeps_finished_tasks(self, as_alice, flow, db, sweep) -> None:
        job = await flow.job(as_alice)
        old = await _finish(as_alice, flow, job["worker_id"], "completed", 2, job)
        await _age(db, old)
        assert (await sweep()).tasks_purged == 0
        for task_id in old:
            assert (await as_alice.get(f"{P}/tasks/{task_id}")).status_code == 200
