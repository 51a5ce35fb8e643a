"""PostgreSQL: a worker's ``running`` / ``completed`` report written by one statement.

The statement checks what the general path checks and writes what it writes; anything out of
order (lost lease, stranger's worker, repeated report) writes nothing and the general path
answers as it always did.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"lease_seconds": 45}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _row(app: FastAPI, task_id: str) -> dict[str, Any]:
    async with app.state.session_maker() as session:
        found = await session.execute(
            text("SELECT * FROM joblib_task WHERE id = CAST(:id AS uuid)"), {"id": task_id}
        )
        return dict(found.mappings().one())


async def test_start_and_finish_set_what_the_general_path_sets(
    app: FastAPI, flow, as_alice, statements: list[str]
) -> None:
    """Own lease and timeout, progress and message kept, result stored, one statement each."""
    _job, worker, task = await flow.claimed(as_alice, lease_seconds=120, timeout_seconds=30)
    before = await _row(app, task["id"])
    statements.clear()
    started = await flow.move(
        as_alice, task["id"], "running", worker_id=worker, progress=0.25, message="go"
    )
    writes = [s for s in statements if "joblib_task" in s]
    assert [w.split(" SET ")[0] for w in writes] == ["UPDATE joblib_task"], statements
    row = await _row(app, task["id"])
    assert row["version"] == before["version"] + 1
    assert row["status"] == "running"
    assert started["status"] == "running"
    assert row["lease_expires_at"] == row["started_at"] + timedelta(seconds=120)
    assert row["deadline_at"] == row["started_at"] + timedelta(seconds=30)
    assert (row["progress"], row["message"]) == (0.25, "go")
    assert _at(started["started_at"]) == row["started_at"]

    statements.clear()
    done = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=[1, "a"])
    writes = [s for s in statements if "joblib_task" in s]
    assert [w.split(" SET ")[0] for w in writes] == ["UPDATE joblib_task"], statements
    row = await _row(app, task["id"])
    assert row["version"] == before["version"] + 2
    assert (row["status"], row["result"], row["error"]) == ("completed", [1, "a"], None)
    assert row["lease_expires_at"] is None
    assert row["deadline_at"] is None
    assert (row["progress"], row["message"]) == (0.25, "go")  # not given: kept
    assert done["result"] == [1, "a"]
    assert _at(done["completed_at"]) == row["completed_at"]


async def test_the_lease_setting_applies_without_a_lease_of_its_own(
    app: FastAPI, flow, as_alice
) -> None:
    """No own lease and no timeout: the setting's lease, no deadline."""
    _job, worker, task = await flow.claimed(as_alice)
    await flow.move(as_alice, task["id"], "running", worker_id=worker)
    row = await _row(app, task["id"])
    assert row["lease_expires_at"] == row["started_at"] + timedelta(seconds=45)
    assert row["deadline_at"] is None


async def test_out_of_order_reports_answer_as_the_general_path(
    app: FastAPI, flow, as_alice, as_bob, problem
) -> None:
    """Expired lease: 409; a stranger's worker: 403; wrong step: 409; a repeat: 200."""
    _job, worker, task = await flow.claimed(as_alice, running=True)
    async with app.state.session_maker() as session:
        await session.execute(
            text(
                "UPDATE joblib_task SET lease_expires_at = now() - interval '1 second' "
                "WHERE id = CAST(:id AS uuid)"
            ),
            {"id": task["id"]},
        )
        await session.commit()
    resp = await flow.patch(as_alice, task["id"], status="completed", worker_id=worker)
    problem(resp, 409, "lease-lost")
    assert (await _row(app, task["id"]))["status"] == "running"

    _job, worker, task = await flow.claimed(as_alice, room="lab2")
    resp = await flow.patch(as_bob, task["id"], status="running", worker_id=worker)
    problem(resp, 403)
    resp = await flow.patch(as_alice, task["id"], status="completed", worker_id=worker)
    problem(resp, 409, "invalid-task-transition")
    assert (await _row(app, task["id"]))["status"] == "claimed"

    await flow.move(as_alice, task["id"], "running", worker_id=worker)
    first = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=1)
    again = await flow.move(as_alice, task["id"], "completed", worker_id=worker, result=1)
    assert again["status"] == "completed"
    assert again["completed_at"] == first["completed_at"]
