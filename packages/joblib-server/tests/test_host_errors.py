"""A host app with error handlers of its own: the queue answers its own errors, and only those.

The host formats its 422 and 500 answers its own way; ``JobQueue.include_in`` must leave
them alone on the host's routes, while the queue's routes still answer problem+json (on the
fast lane and off it). A room access hook may refuse a write with the host's own problem.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from zndraw_joblib_core import ProblemDetail, ProblemError
from zndraw_joblib_server import Actor, JobLibSettings, JobQueue, get_room_access
from zndraw_joblib_server.testing import running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

P = "/v1/joblib"


class RoomLocked(ProblemError):
    """The host's own problem: the room is locked for editing."""

    slug = "room-locked"
    title = "Room Locked"
    status = 423


class LockHook:
    """Room 'locked' raises the host's 423; room 'frozen' returns it; others are open."""

    async def can_read(self, actor: Actor, room_id: str) -> Any:
        return room_id != "hidden" or ProblemDetail(title="Hidden", status=423, detail="hidden")

    async def can_write(self, actor: Actor, room_id: str) -> Any:
        if room_id == "locked":
            raise RoomLocked(f"Room '{room_id}' is locked.", holder="someone")
        if room_id == "frozen":
            return ProblemDetail(
                type="https://host.example/problems/room-locked",
                title="Room Locked",
                status=423,
                detail="frozen",
            )
        return True


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def fast_lane(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def app(settings: JobLibSettings, fast_lane: bool) -> AsyncIterator[FastAPI]:
    """A host app: its own 422 and 500 handlers and routes, the queue mounted beside them."""
    queue = JobQueue(settings, sweeper=False)
    host = FastAPI(lifespan=queue.lifespan)

    @host.exception_handler(RequestValidationError)
    async def host_422(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"host": "invalid"}, status_code=422)

    @host.exception_handler(Exception)
    async def host_500(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"host": "broken"}, status_code=500)

    @host.get("/items/{number}")
    async def item(number: int) -> dict[str, int]:
        return {"number": number}

    @host.get("/boom")
    async def boom() -> None:
        raise RuntimeError("host bug")

    host.state.auth_settings = auth_settings()
    queue.include_in(host, fast_lane=fast_lane)
    async with running(host):
        yield host


async def test_the_hosts_routes_keep_the_hosts_handlers(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        invalid = await http.get("/items/not-a-number")
        assert (invalid.status_code, invalid.json()) == (422, {"host": "invalid"})
        broken = await http.get("/boom")
        assert (broken.status_code, broken.json()) == (500, {"host": "broken"})


async def test_the_queues_routes_answer_problems_without_app_wide_handlers(
    as_alice: httpx.AsyncClient, anonymous: httpx.AsyncClient, problem
) -> None:
    body = problem(await as_alice.put(f"{P}/rooms/lab/jobs", json={"name": 5}), 422)
    assert body["type"].endswith("/validation-error")
    problem(await as_alice.get(f"{P}/tasks/not-a-uuid"), 422, "validation-error")
    problem(await as_alice.get(f"{P}/tasks/{uuid.uuid4()}"), 404, "task-not-found")
    bad_json = await as_alice.post(
        f"{P}/rooms/lab/tasks/lab:modifiers:Nope",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    problem(bad_json, 422, "validation-error")
    problem(await anonymous.get(f"{P}/rooms/lab/jobs"), 401, "unauthorized")


@pytest.mark.parametrize("room", ["locked", "frozen"])
async def test_a_refusal_by_the_access_hook_carries_the_hosts_problem(
    app: FastAPI, as_alice: httpx.AsyncClient, problem, room: str
) -> None:
    ok = await as_alice.put(
        f"{P}/rooms/{room}/jobs", json={"category": "modifiers", "name": "Edit", "schema": {}}
    )
    assert ok.status_code == 201, ok.text
    app.dependency_overrides[get_room_access] = LockHook
    register = await as_alice.put(
        f"{P}/rooms/{room}/jobs", json={"category": "modifiers", "name": "Other", "schema": {}}
    )
    body = problem(register, 423)
    submit = await as_alice.post(f"{P}/rooms/{room}/tasks/{room}:modifiers:Edit", json={})
    assert problem(submit, 423) == body | {"instance": submit.json().get("instance")}
    if room == "locked":
        assert body["type"].endswith("/room-locked")
        assert body["holder"] == "someone"
    else:
        assert body["type"] == "https://host.example/problems/room-locked"
        assert body["detail"] == "frozen"
    # nothing was written
    tasks = await as_alice.get(f"{P}/rooms/{room}/tasks", params={"limit": 0})
    assert tasks.json()["total"] == 0
    jobs = await as_alice.get(f"{P}/rooms/{room}/jobs")
    assert [j["name"] for j in jobs.json()["items"]] == ["Edit"]


async def test_a_problem_returned_for_reads_hides_the_task(
    app: FastAPI, as_alice: httpx.AsyncClient, problem
) -> None:
    job = await as_alice.put(
        f"{P}/rooms/hidden/jobs", json={"category": "modifiers", "name": "Edit", "schema": {}}
    )
    assert job.status_code == 201, job.text
    task = await as_alice.post(f"{P}/rooms/hidden/tasks/hidden:modifiers:Edit", json={})
    assert task.status_code == 202, task.text
    app.dependency_overrides[get_room_access] = LockHook
    problem(await as_alice.get(f"{P}/tasks/{task.json()['id']}"), 404, "task-not-found")
    problem(await as_alice.get(f"{P}/rooms/hidden/tasks"), 423)
