"""@internal jobs in the server process: registration, visibility, execution, credentials."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from zndraw_joblib_core import Retry
from zndraw_joblib_server import JobLibSettings, create_app, testing
from zndraw_joblib_server.storage.database import release_waiters

P = "/v1/joblib"


class Double(BaseModel):
    """Doubles x (sync: runs in the executor's threads)."""

    category: ClassVar[str] = "modifiers"
    x: int = 1

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, Any]:
        return {"y": 2 * self.x, "room": task.room_id}


class Flaky(BaseModel):
    """Asks for a retry on its first attempt (async)."""

    category: ClassVar[str] = "analysis"

    async def run(self, task: Any = None, **kwargs: Any) -> dict[str, int]:
        if task.attempt < 2:
            raise Retry("not yet")
        return {"attempt": task.attempt}


class Forever(BaseModel):
    """Runs until cancelled (async)."""

    category: ClassVar[str] = "analysis"

    async def run(self, task: Any = None, **kwargs: Any) -> None:
        await asyncio.sleep(3600)


HELD: dict[str, str | None] = {}
RELEASE = threading.Event()


class Hold(BaseModel):
    """Publishes its token, then waits for the test to release it (sync)."""

    category: ClassVar[str] = "selections"

    def run(self, task: Any = None, **kwargs: Any) -> str:
        HELD[str(task.task_id)] = task.token()
        RELEASE.wait(30)
        return "released"


EXTENSIONS = [Double, Flaky, Forever, Hold]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # a requeued task is due after its backoff; the parked claim looks again this often
    # (and the executor heartbeats, which delivers cancel requests, every lease / 3). The
    # lease is long enough that a stall of the machine does not lose it: these apps run no
    # sweeper, so a lost lease would leave its task running for good.
    return {
        "retry_backoff_seconds": 0.05,
        "claim_poll_interval_seconds": 0.2,
        "lease_seconds": 6.0,
    }


@pytest.fixture
async def app(settings: JobLibSettings) -> AsyncIterator[FastAPI]:
    """The reference app with four internal jobs and its in-process executor."""
    application = create_app(
        settings, testing.test_auth_settings(), sweeper=False, internal=EXTENSIONS
    )
    async with testing.running(application):
        yield application


async def _submit(client: httpx.AsyncClient, room: str, job: str, payload: Any = None) -> Any:
    resp = await client.post(
        f"{P}/rooms/{room}/tasks/@internal:{job}", json={"payload": payload or {}}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


async def _until(client: httpx.AsyncClient, task_id: str, *states: str) -> dict[str, Any]:
    for _ in range(100):
        resp = await client.get(
            f"{P}/tasks/{task_id}", params={"wait_for": "change"}, headers={"Prefer": "wait=2"}
        )
        body = dict(resp.json())
        if body["status"] in states:
            return body
    raise AssertionError(f"task {task_id} never reached {states}: {body}")


async def test_listed_in_every_room_not_in_global(as_alice) -> None:
    names = {j["full_name"] for j in (await as_alice.get(f"{P}/rooms/r1/jobs")).json()["items"]}
    assert "@internal:modifiers:Double" in names
    assert "@internal:selections:Hold" in names
    only = (await as_alice.get(f"{P}/rooms/@internal/jobs")).json()["items"]
    assert {j["room_id"] for j in only} == {"@internal"}
    glob = (await as_alice.get(f"{P}/rooms/@global/jobs")).json()["items"]
    assert not [j for j in glob if j["room_id"] == "@internal"]


async def test_http_registration_refused(as_alice, as_admin, problem) -> None:
    body = {"category": "modifiers", "name": "Double", "schema": Double.model_json_schema()}
    problem(await as_alice.put(f"{P}/rooms/@internal/jobs", json=body), 403, "forbidden")
    new = {"category": "modifiers", "name": "Sneaky", "schema": {}}
    problem(await as_admin.put(f"{P}/rooms/@internal/jobs", json=new), 403, "forbidden")
    # a superuser may serve (link a worker to) the host's job, never change it
    changed = {**body, "schema": {"type": "object"}}
    problem(await as_admin.put(f"{P}/rooms/@internal/jobs", json=changed), 409)
    linked = await as_admin.put(f"{P}/rooms/@internal/jobs", json=body)
    assert linked.status_code == 200, linked.text


async def test_runs_in_process_from_two_rooms(as_alice, as_bob) -> None:
    a = await _submit(as_alice, "r1", "modifiers:Double", {"x": 3})
    b = await _submit(as_bob, "r2", "modifiers:Double", {"x": 5})
    done_a = await _until(as_alice, a["id"], "completed", "failed")
    done_b = await _until(as_bob, b["id"], "completed", "failed")
    assert done_a["result"] == {"y": 6, "room": "r1"}, done_a
    assert done_b["result"] == {"y": 10, "room": "r2"}, done_b
    assert done_a["worker_id"] is not None
    listed = (await as_alice.get(f"{P}/rooms/r1/tasks")).json()["items"]
    assert [t["id"] for t in listed] == [a["id"]]


async def test_bad_payload_refused(as_alice, problem) -> None:
    resp = await as_alice.post(
        f"{P}/rooms/r1/tasks/@internal:modifiers:Double", json={"payload": {"x": "a"}}
    )
    problem(resp, 422)


async def test_retry_and_cancel(as_alice) -> None:
    flaky = await _submit(as_alice, "r1", "analysis:Flaky")
    done = await _until(as_alice, flaky["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["result"] == {"attempt": 2}
    forever = await _submit(as_alice, "r1", "analysis:Forever")
    await _until(as_alice, forever["id"], "running")
    resp = await as_alice.post(f"{P}/tasks/{forever['id']}/cancel")
    assert resp.status_code == 200
    cancelled = await _until(as_alice, forever["id"], "cancelled", "failed", "completed")
    assert cancelled["status"] == "cancelled", cancelled


async def test_task_token_valid_only_while_running(app, as_alice, alice) -> None:
    RELEASE.clear()
    task = await _submit(as_alice, "r1", "selections:Hold")
    await _until(as_alice, task["id"], "running")
    for _ in range(200):
        if task["id"] in HELD:
            break
        await asyncio.sleep(0.02)
    token = HELD[task["id"]]
    assert token
    async with testing.api_client(app) as anon:
        auth = {"Authorization": f"Bearer {token}"}
        seen = await anon.get(f"{P}/tasks/{task['id']}", headers=auth)
        assert seen.status_code == 200, seen.text
        # it carries the submitter's rights: alice's own room listing
        assert (await anon.get(f"{P}/rooms/r1/tasks", headers=auth)).status_code == 200
        RELEASE.set()
        await _until(as_alice, task["id"], "completed")
        after = await anon.get(f"{P}/tasks/{task['id']}", headers=auth)
        assert after.status_code == 401, after.text


async def test_task_token_refused_once_the_task_timed_out(app, as_alice, sweep) -> None:
    RELEASE.clear()
    task = await _submit_with(as_alice, {"timeout_seconds": 0.2, "max_attempts": 1})
    await _until(as_alice, task["id"], "running")
    for _ in range(200):
        if task["id"] in HELD:
            break
        await asyncio.sleep(0.02)
    auth = {"Authorization": f"Bearer {HELD[task['id']]}"}
    async with testing.api_client(app) as anon:
        assert (await anon.get(f"{P}/tasks/{task['id']}", headers=auth)).status_code == 200
        await asyncio.sleep(0.3)
        await sweep()  # the deadline passed: the task fails, its lease is gone
        failed = await _until(as_alice, task["id"], "failed")
        assert "time" in failed["error"].lower()
        assert (await anon.get(f"{P}/tasks/{task['id']}", headers=auth)).status_code == 401
    RELEASE.set()


async def _submit_with(client: httpx.AsyncClient, options: dict[str, Any]) -> Any:
    url = f"{P}/rooms/r1/tasks/@internal:selections:Hold"
    resp = await client.post(url, json={"payload": {}, **options})
    assert resp.status_code == 202, resp.text
    return resp.json()


async def test_token_endpoint_needs_the_lease_holder(as_alice, as_admin, problem) -> None:
    task = await _submit(as_alice, "r1", "modifiers:Double")
    body = {"worker_id": task["id"]}
    resp = await as_admin.post(f"{P}/tasks/{task['id']}/token", json=body)
    problem(resp, 404, "worker-not-found")


async def test_never_swept_as_orphan(sweep, as_alice) -> None:
    await sweep()
    names = {j["full_name"] for j in (await as_alice.get(f"{P}/rooms/r9/jobs")).json()["items"]}
    assert "@internal:modifiers:Double" in names


class TestUnserved:
    """The host registered the jobs but runs no executor: 503 until a worker serves them."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"internal_executor_threads": 0}

    async def test_503_then_served_by_a_linked_worker(
        self, sweep, as_alice, as_admin, problem
    ) -> None:
        url = f"{P}/rooms/r1/tasks/@internal:modifiers:Double"
        body = problem(
            await as_alice.post(url, json={"payload": {"x": 1}}),
            503,
            "internal-job-not-configured",
        )
        assert "Double" in body["detail"]
        await sweep()
        assert (await as_alice.get(f"{P}/rooms/r1/jobs/@internal:modifiers:Double")).is_success
        body = {"category": "modifiers", "name": "Double", "schema": Double.model_json_schema()}
        linked = (await as_admin.put(f"{P}/rooms/@internal/jobs", json=body)).json()
        task = await _submit(as_alice, "r1", "modifiers:Double", {"x": 2})
        claim = await as_admin.post(f"{P}/tasks/claim", json={"worker_id": linked["worker_id"]})
        assert claim.json()["task"]["id"] == task["id"]


async def test_a_shutdown_releasing_the_executors_wait_logs_no_error(
    caplog, until_waiting
) -> None:
    """``release_waiters`` (a shutdown signal) refuses the executor's waiting claim too."""
    await until_waiting(1)  # the executor's claim parks as soon as the app runs
    with caplog.at_level(logging.INFO, logger="zndraw_joblib_server.internal"):
        assert release_waiters() >= 1
        for _ in range(500):
            if any("claim refused" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
    refused = [r for r in caplog.records if "claim refused" in r.getMessage()]
    assert refused, "the executor never saw the refusal"
    assert "shutting down" in refused[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
