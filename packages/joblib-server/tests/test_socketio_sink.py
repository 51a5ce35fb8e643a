"""The Socket.IO event sink: the predecessor's names, rooms and fields; one emit per task and
room per commit; emits in the background, so a slow Socket.IO server never holds a request.

A recording stand-in plays the Socket.IO server here (python-socketio is an optional extra);
tests/test_host_app.py and test_socketio_live.py use a real one.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from zndraw_joblib_core import JobsChanged, TaskAvailable, TaskStatus, TaskStatusChanged
from zndraw_joblib_server.socketio_events import SocketIOEvents

P = "/v1/joblib"


class Recorder:
    """Records emits; while ``gate`` is clear, every emit waits for it."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any], str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def emit(self, event: str, data: Any = None, *, room: str | None = None) -> None:
        await self.gate.wait()
        self.emitted.append((event, data, room or ""))


def _status(task_id: uuid.UUID, status: TaskStatus, room: str = "lab") -> TaskStatusChanged:
    now = datetime.now(UTC)
    return TaskStatusChanged(
        task_id=task_id,
        job_name=f"{room}:modifiers:Scale",
        room_id=room,
        status=status,
        at=now,
        created_at=now,
    )


async def test_one_emit_per_task_and_room_per_commit() -> None:
    server = Recorder()
    sink = SocketIOEvents(server)
    first, second = uuid.uuid4(), uuid.uuid4()
    await sink(
        [
            JobsChanged(room_id="lab"),
            _status(first, TaskStatus.PENDING),
            TaskAvailable(task_id=first, job_name="lab:modifiers:Scale", room_id="lab"),
            _status(second, TaskStatus.PENDING, room="@global"),
            _status(first, TaskStatus.CLAIMED),
            JobsChanged(room_id="lab"),
        ]
    )
    await sink.drain()
    names = [(event, room) for event, _, room in server.emitted]
    assert names == [
        ("jobs_invalidate", "room:lab"),
        ("task_status_event", "room:lab"),
        ("task_available", "jobs:lab:modifiers:Scale"),
        ("task_status_event", "room:@global"),
    ]
    data = server.emitted[1][1]
    assert set(data) == {
        "id",
        "name",
        "room_id",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "queue_position",
        "worker_id",
        "error",
    }
    assert (data["id"], data["status"], data["name"]) == (
        str(first),
        "claimed",
        "lab:modifiers:Scale",
    )
    assert server.emitted[0][1] == {}
    await sink.close()


async def test_provider_events_have_the_predecessors_names_and_rooms() -> None:
    server = Recorder()
    sink = SocketIOEvents(server)
    await sink.providers_invalidate("lab")
    await sink.provider_result_ready("lab", "lab:filesystem:Files", "abc")
    await sink.drain()
    assert server.emitted == [
        ("providers_invalidate", {}, "room:lab"),
        (
            "provider_result_ready",
            {"provider_name": "lab:filesystem:Files", "request_hash": "abc"},
            "room:lab",
        ),
    ]
    await sink.close()


@pytest.fixture(params=[True, False], ids=["lane", "no-lane"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"fast_lane": request.param}


async def test_a_stalled_socketio_server_does_not_hold_the_answer(
    app: FastAPI, as_alice: httpx.AsyncClient
) -> None:
    server = Recorder()
    server.gate.clear()  # every emit hangs until released
    sink = SocketIOEvents(server)
    app.state.joblib_event_sink = sink
    # An emit made inside the request would hang it: wait_for turns that into a failure.
    job = await asyncio.wait_for(
        as_alice.put(
            f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "Scale", "schema": {}}
        ),
        30,
    )
    assert job.status_code == 201, job.text
    submit = await asyncio.wait_for(
        as_alice.post(f"{P}/rooms/lab/tasks/lab:modifiers:Scale", json={}), 30
    )
    assert submit.status_code == 202, submit.text
    assert server.emitted == []  # both requests were answered while the emits hang
    server.gate.set()
    await sink.drain()
    events = [(event, data.get("id"), room) for event, data, room in server.emitted]
    assert ("jobs_invalidate", None, "room:lab") in events
    assert ("task_status_event", submit.json()["id"], "room:lab") in events
    task_event = next(d for e, d, _ in server.emitted if e == "task_status_event")
    assert task_event["status"] == "pending"
    assert task_event["created_at"] is not None
    await sink.close()


async def test_a_failing_socketio_server_is_logged_and_the_next_emits_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Recorder):
        async def emit(self, event: str, data: Any = None, *, room: str | None = None) -> None:
            if event == "jobs_invalidate":
                raise ConnectionError("redis is gone")
            await super().emit(event, data, room=room)

    server = Broken()
    sink = SocketIOEvents(server)
    await sink([JobsChanged(room_id="lab"), _status(uuid.uuid4(), TaskStatus.PENDING)])
    await sink.drain()
    assert [e for e, _, _ in server.emitted] == ["task_status_event"]
    assert "redis is gone" in caplog.text
    await sink.close()
