"""@internal jobs through a host's own JobQueue: concurrent starts, events, a host executor."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import func, select

from zndraw_joblib_core import Event, TaskStatus, TaskStatusChanged
from zndraw_joblib_server import JobLibSettings, JobQueue, testing
from zndraw_joblib_server.internal import InProcessExecutor, InternalRuntime, TaskCredentialDep
from zndraw_joblib_server.models import Job

P = "/v1/joblib"


class Square(BaseModel):
    """Squares n."""

    category: ClassVar[str] = "analysis"
    n: int = 0

    def run(self, task: Any = None, **kwargs: Any) -> int:
        return self.n * self.n


TOKENS: dict[str, str] = {}
GO = threading.Event()


class Wait(BaseModel):
    """Hands its token to the test, then waits for it."""

    category: ClassVar[str] = "selections"

    def run(self, task: Any = None, **kwargs: Any) -> str:
        TOKENS[str(task.task_id)] = task.token()
        GO.wait(30)
        return "done"


class Inline:
    """A host's own executor: claims through the runtime and runs the task right there."""

    def __init__(self) -> None:
        self.loop: asyncio.Task[None] | None = None
        self.ran: list[uuid.UUID] = []

    async def start(self, runtime: InternalRuntime) -> None:
        worker = await runtime.register_worker()

        async def serve() -> None:
            while True:
                for task in await runtime.claim(worker, 1, 1.0):
                    await runtime.update(worker, task.id, status=TaskStatus.RUNNING)
                    cls = runtime.extensions[task.job_name]
                    value = cls.model_validate(task.payload).run(None)
                    await runtime.update(worker, task.id, status="completed", result=value)
                    self.ran.append(task.id)

        self.loop = asyncio.create_task(serve())

    async def stop(self) -> None:
        if self.loop is not None:
            self.loop.cancel()


def _host(
    settings: JobLibSettings, internal: list[type[Any]] | None = None, **queue_args: Any
) -> tuple[FastAPI, JobQueue]:
    queue = JobQueue(settings, internal=internal or [Square], **queue_args)
    app = FastAPI(lifespan=queue.lifespan)
    app.state.auth_settings = testing.test_auth_settings()
    queue.include_in(app)
    return app, queue


async def _finished(client: Any, task_id: str) -> dict[str, Any]:
    for _ in range(50):
        resp = await client.get(f"{P}/tasks/{task_id}", headers={"Prefer": "wait=2"})
        if resp.json()["status"] in ("completed", "failed", "cancelled"):
            return dict(resp.json())
    raise AssertionError(resp.text)


async def test_processes_starting_together_write_each_job_once(settings: JobLibSettings) -> None:
    first = JobQueue(settings, internal=[Square], internal_executor=None, sweeper=False)
    second = JobQueue(settings, internal=[Square], internal_executor=None, sweeper=False)
    try:
        await asyncio.gather(first.start(), second.start())
        await first.stop()
        await first.start()  # again: idempotent
        async with first.database.read() as session:
            count = (
                await session.execute(
                    select(func.count()).select_from(Job).where(Job.room_id == "@internal")
                )
            ).scalar()
        assert count == 1
    finally:
        await first.stop()
        await second.stop()


async def test_events_and_a_host_executor(settings: JobLibSettings) -> None:
    events: list[Event] = []

    async def sink(batch: Sequence[Event]) -> None:
        events.extend(batch)

    executor = Inline()
    app, _ = _host(settings, event_sink=sink, internal_executor=executor)
    async with testing.running(app):
        alice = await testing.create_user(app, "alice@example.com")
        async with testing.api_client(app, alice) as client:
            resp = await client.post(
                f"{P}/rooms/lab/tasks/@internal:analysis:Square", json={"payload": {"n": 7}}
            )
            assert resp.status_code == 202, resp.text
            done = await _finished(client, resp.json()["id"])
    assert done["result"] == 49
    assert executor.ran == [uuid.UUID(done["id"])]
    statuses = [
        e.status
        for e in events
        if isinstance(e, TaskStatusChanged) and str(e.task_id) == done["id"]
    ]
    assert statuses[0] == TaskStatus.PENDING
    assert TaskStatus.RUNNING in statuses
    assert statuses[-1] == TaskStatus.COMPLETED
    assert all(
        e.job_name == "@internal:analysis:Square"
        for e in events
        if isinstance(e, TaskStatusChanged)
    )


async def test_task_credential_on_a_host_route(settings: JobLibSettings) -> None:
    app, _ = _host(settings, [Wait])

    @app.post("/rooms/{room_id}/edit")
    async def edit(room_id: str, credential: TaskCredentialDep) -> dict[str, str]:
        return {
            "task": str(credential.task_id),
            "room": credential.room_id,
            "user": str(credential.user_id),
            "job": credential.job_name,
        }

    GO.clear()
    async with testing.running(app):
        alice = await testing.create_user(app, "alice@example.com")
        async with testing.api_client(app, alice) as client, testing.api_client(app) as anon:
            # a login token is not a task token
            assert (await client.post("/rooms/lab/edit")).status_code == 401
            resp = await client.post(
                f"{P}/rooms/lab/tasks/@internal:selections:Wait", json={"payload": {}}
            )
            task_id = resp.json()["id"]
            for _ in range(500):
                if task_id in TOKENS:
                    break
                await asyncio.sleep(0.02)
            auth = {"Authorization": f"Bearer {TOKENS[task_id]}"}
            during = await anon.post("/rooms/lab/edit", headers=auth)
            assert during.status_code == 200, during.text
            assert during.json() == {
                "task": task_id,
                "room": "lab",
                "user": str(alice.id),
                "job": "@internal:selections:Wait",
            }
            GO.set()
            assert (await _finished(client, task_id))["status"] == "completed"
            after = await anon.post("/rooms/lab/edit", headers=auth)
            assert after.status_code == 401
            assert after.headers["content-type"].startswith("application/problem+json")


STARTED: list[str] = []
OPEN = threading.Event()


class Gate(BaseModel):
    """Waits until the test opens the gate."""

    category: ClassVar[str] = "modifiers"

    def run(self, task: Any = None, **kwargs: Any) -> str:
        STARTED.append(str(task.task_id))
        OPEN.wait(30)
        return "through"


async def test_the_pool_is_bounded(settings: JobLibSettings) -> None:
    app, _ = _host(settings, [Gate], internal_executor=InProcessExecutor(2))
    OPEN.clear()
    STARTED.clear()
    async with testing.running(app):
        alice = await testing.create_user(app, "alice@example.com")
        async with testing.api_client(app, alice) as client:
            url = f"{P}/rooms/lab/jobs/@internal:modifiers:Gate/tasks"
            resp = await client.post(url, json={"items": [{"payload": {}}] * 5})
            ids = [t["id"] for t in resp.json()["items"]]
            for _ in range(500):
                if len(STARTED) >= 2:
                    break
                await asyncio.sleep(0.02)
            listed = (await client.get(f"{P}/rooms/lab/tasks")).json()["items"]
            states = sorted(t["status"] for t in listed)
            assert states == ["pending"] * 3 + ["running"] * 2, states
            OPEN.set()
            for task_id in ids:
                assert (await _finished(client, task_id))["result"] == "through"
