"""The SQLite write gate: a busy gate answers 503, and nothing ever leaks it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from zndraw_joblib_server.storage import get_database

P = "/v1/joblib"


pytestmark = pytest.mark.backends("sqlite")  # the gate is on for SQLite only


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"db_lock_timeout_seconds": 0.3}


async def test_busy_gate_is_503_then_usable_again(
    app: FastAPI, as_alice: httpx.AsyncClient, flow, problem
) -> None:
    job = await flow.job(as_alice, "lab", "Gate")
    db = get_database(app.state.session_maker, app.state.joblib_settings)
    assert db.gate is not None
    await db.gate.acquire()
    try:
        resp = await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={})
        problem(resp, 503, "service-unavailable")
        assert resp.headers["retry-after"] == "1"
        waiting = asyncio.create_task(
            as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={})
        )
        await asyncio.sleep(0.1)
        waiting.cancel()  # a client that goes away while waiting for the gate
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        db.gate.release()
    assert not db.gate.locked()
    ok = await as_alice.post(f"{P}/rooms/lab/tasks/{job['full_name']}", json={})
    assert ok.status_code == 202
    assert not db.gate.locked()
    assert (await flow.room_tasks(as_alice))["total"] == 1
