"""The conformance suite's probe: in every mode the app really takes the mode's paths.

A mode that silently fell back (the lane not answering, aiosqlite's thread where inline
SQLite was asked for, a hand-off that did not happen or happened when switched off) would
pass the behaviour tests unnoticed; this test fails instead. (Every conformance test also
checks, when its app stops, that the lane, the write gate and the SQLite driver are as set:
``check_mode`` in conftest.py.)
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from zndraw_joblib_server import JobLibSettings
from zndraw_joblib_server.testing import fast_lane_of

pytestmark = pytest.mark.conformance

P = "/v1/joblib"


async def test_the_app_takes_the_paths_of_its_mode(
    app,
    settings: JobLibSettings,
    as_alice: httpx.AsyncClient,
    flow,
    backend: str,
    handed_off,
    deliveries,
) -> None:
    job = await flow.job(as_alice)
    served = lane.served if (lane := fast_lane_of(app)) is not None else 0
    poll = asyncio.create_task(
        as_alice.post(
            f"{P}/tasks/claim",
            json={"worker_id": job["worker_id"]},
            headers={"Prefer": "wait=10"},
        )
    )
    await asyncio.sleep(0.3)  # the claim waits
    # A batch submit hands its tasks to waiting claims on both databases.
    resp = await as_alice.post(
        f"{P}/rooms/lab/jobs/{job['full_name']}/tasks", json={"items": [{"payload": {}}]}
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["items"][0]["id"]
    answer = await asyncio.wait_for(poll, 7)
    assert answer.json()["task"]["id"] == task_id
    assert (await flow.task(as_alice, task_id))["status"] == "claimed"

    assert handed_off(deliveries, task_id) is settings.claim_handoff
    lane = fast_lane_of(app)
    if settings.fast_lane:  # the claim and the task read at least went through the lane
        assert lane is not None
        assert lane.served >= served + 2
    else:
        assert lane is None
    db = app.state.joblib_queue.database
    if backend == "sqlite":
        assert db.inline is settings.sqlite_inline  # learnt from the connections used
        assert db.gate is not None
    else:
        assert (db.gate is not None) is bool(settings.enable_db_lock)
