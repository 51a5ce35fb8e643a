"""``task_status_event.queue_position`` as a real Socket.IO client in the room receives it.

uvicorn serves a python-socketio server wrapping the app (over TCP, in this process); the
queue's :class:`SocketIOEvents` sink emits through it; a ``socketio.AsyncClient`` joins
``room:lab``. A submit's events carry the positions its answer carries; other changes
carry none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

socketio = pytest.importorskip("socketio")
pytest.importorskip("aiohttp")
uvicorn = pytest.importorskip("uvicorn")

from zndraw_joblib_server.socketio_events import (  # noqa: E402
    SocketIOEvents,
    room_of,
    socketio_server,
)

P = "/v1/joblib"
Check = Callable[[str, dict[str, Any]], bool]


class Listener:
    """A Socket.IO client in one room, keeping what it received."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

        @self.client.on("*")
        async def _any(event: str, data: Any) -> None:
            self.received.append((event, data))
            self.arrived.set()

    async def wait_for(self, check: Check, what: str) -> dict[str, Any]:
        """The first received event ``check`` accepts, waiting up to 30 s for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            for event, data in self.received:
                if check(event, data):
                    return data
            remaining = deadline - loop.time()
            assert remaining > 0, f"no {what}; received {self.received}"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def status(self, task_id: str, status: str) -> dict[str, Any]:
        """The ``task_status_event`` of ``task_id`` in ``status``."""
        return await self.wait_for(
            lambda e, d: e == "task_status_event" and d["id"] == task_id and d["status"] == status,
            f"{status} event of {task_id}",
        )


@pytest.fixture
async def listener(app: FastAPI) -> AsyncIterator[Listener]:
    """The app behind a real Socket.IO server (uvicorn, TCP) and a client in ``room:lab``."""
    sio = socketio_server()

    @sio.event
    async def join(sid: str, data: dict[str, Any]) -> bool:
        await sio.enter_room(sid, room_of(str(data["room"])))
        return True

    sink = SocketIOEvents(sio)
    app.state.joblib_event_sink = sink
    config = uvicorn.Config(
        socketio.ASGIApp(sio, other_asgi_app=app),
        host="127.0.0.1",
        port=0,
        lifespan="off",  # the app fixture runs the app's lifespan
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 30
    while not server.started:
        assert not serving.done(), "uvicorn stopped"
        assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    found = Listener()
    await found.client.connect(f"http://127.0.0.1:{port}")
    try:
        assert await found.client.call("join", {"room": "lab"}, timeout=10) is True
        yield found
    finally:
        await found.client.disconnect()
        await sink.close()
        server.should_exit = True
        await serving


async def test_submit_events_carry_the_answered_queue_positions(
    listener: Listener, as_alice: httpx.AsyncClient
) -> None:
    resp = await as_alice.put(
        f"{P}/rooms/lab/jobs", json={"category": "modifiers", "name": "Scale", "schema": {}}
    )
    assert resp.status_code == 201, resp.text
    worker = resp.json()["worker_id"]
    url = f"{P}/rooms/lab/tasks/lab:modifiers:Scale"

    first = (await as_alice.post(url, json={"payload": {}})).json()
    urgent = (await as_alice.post(url, json={"payload": {}, "priority": 5})).json()
    batch = await as_alice.post(
        f"{P}/rooms/lab/jobs/lab:modifiers:Scale/tasks",
        json={"items": [{"payload": {}}, {"payload": {}}]},
    )
    assert batch.status_code == 202, batch.text
    later = batch.json()["items"]
    # each submit's answer: the first was alone, the urgent one went ahead of it
    answered = [t["queue_position"] for t in (first, urgent, *later)]
    assert answered == [1, 1, 3, 4]
    for task in (first, urgent, *later):
        event = await listener.status(task["id"], "pending")
        assert event["queue_position"] == task["queue_position"]

    # a change other than a submit carries no position (even for the tasks still pending)
    claim = await as_alice.post(f"{P}/tasks/claim", json={"worker_id": worker})
    assert claim.json()["task"]["id"] == urgent["id"]
    claimed = await listener.status(urgent["id"], "claimed")
    assert claimed["queue_position"] is None
