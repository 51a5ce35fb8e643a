"""examples/host_app.py, a ZnDraw-shaped host, driven over real HTTP and Socket.IO.

uvicorn serves the example (Socket.IO wrapping the FastAPI app); a worker of the SDK serves a
job, REST calls submit tasks, and a python-socketio client that joined the room receives the
queue's events. On PostgreSQL two processes serve one database and Redis carries the emits:
the Socket.IO client is connected to the other process than the one that changed the task.
The host's own 422 and 500 answers, its 423 room lock and its wrapped session maker are
exercised on the way, as are its ``@internal`` job (run inside the server, calling the host
back with its per-task token), its ``@internal`` provider and a provider of the SDK's worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SECRET, database_url, free_port  # type: ignore[import-not-found]

socketio = pytest.importorskip("socketio")
pytest.importorskip("aiohttp")

from zndraw_joblib_client import Extension, JobManager, Provider  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REDIS_URL = os.environ.get("ZNDRAW_JOBLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PROBLEM_JSON = "application/problem+json"


class Scale(Extension):
    """Scale a number."""

    category = "modifiers"
    factor: float = 1.0

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, float]:
        return {"scaled": 2 * self.factor}


class Listing(Provider):
    """The entries of a directory of the worker's machine (a dict here)."""

    category = "filesystem"
    path: str = "."

    def read(self, handler: Any) -> Any:
        return {"path": self.path, "entries": handler[self.path]}


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except Exception:
        return False


class Host:
    """examples/host_app.py served by uvicorn in its own process."""

    def __init__(self, url: str, log: Path, channel: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {
            **os.environ,
            "ZNDRAW_JOBLIB_DATABASE_URL": url,
            "ZNDRAW_AUTH_SECRET_KEY": SECRET,
            "HOST_REDIS_URL": REDIS_URL,
            "HOST_REDIS_CHANNEL": channel,
            "HOST_URL": self.url,  # where the example's @internal job calls it back
        }
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "host_app:app"),
                *("--port", str(self.port), "--log-level", "warning"),
            ],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, f"host exited: {log.read_text()[-3000:]}"
            try:
                httpx.get(f"{self.url}/docs", timeout=1)
                return
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "host did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    """Two processes of the example on one database (one process on SQLite)."""
    if not _redis_up():
        if os.environ.get("ZNDRAW_JOBLIB_REQUIRE_REDIS") == "1":  # CI starts Redis
            pytest.fail(f"ZNDRAW_JOBLIB_REQUIRE_REDIS=1 but no Redis at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL} (set ZNDRAW_JOBLIB_TEST_REDIS_URL)")
    url = database_url(request.param, tmp_path)
    channel = f"zndraw-joblib-test-{uuid.uuid4().hex}"
    first = Host(url, tmp_path / "host0.log", channel)
    started = [first]
    try:
        if request.param == "sqlite":
            yield first, first
        else:
            started.append(Host(url, tmp_path / "host1.log", channel))
            yield first, started[1]
    finally:
        for host in started:
            host.stop()


def _token(base: str) -> str:
    creds = {"email": "host@example.com", "password": "password123"}
    httpx.post(f"{base}/auth/register", json=creds, timeout=10).raise_for_status()
    login = httpx.post(
        f"{base}/auth/jwt/login",
        data={"username": creds["email"], "password": creds["password"]},
        timeout=10,
    )
    login.raise_for_status()
    return str(login.json()["access_token"])


async def test_the_example_host_with_a_worker_rest_and_socketio(
    hosts: tuple[Host, Host],
) -> None:
    rest, push = hosts  # REST calls and the worker go to one process, Socket.IO to the other
    token = await asyncio.to_thread(_token, rest.url)
    headers = {"Authorization": f"Bearer {token}"}

    received: list[tuple[str, dict[str, Any]]] = []
    arrived = asyncio.Event()
    client = socketio.AsyncClient()

    @client.on("*")
    async def any_event(event: str, data: Any) -> None:
        received.append((event, data))
        arrived.set()

    async def wait_for(check: Any, what: str) -> tuple[str, dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            for item in received:
                if check(*item):
                    return item
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"no {what}; received {received}"
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), remaining)

    await client.connect(push.url)
    manager = JobManager(rest.url, token=token)
    try:
        assert await client.call("join", {"room": "lab"}, timeout=10) is True
        async with httpx.AsyncClient(base_url=rest.url, headers=headers, timeout=30) as http:
            # The host's own routes keep the host's own error format.
            invalid = await http.get("/rooms/lab/size", params={"frames": "many"})
            assert invalid.status_code == 422
            assert invalid.json() == {"ok": False, "reason": "invalid input"}
            # (its own connection: uvicorn closes one whose app raised, as Starlette re-raises
            # after the host's 500 handler answered)
            async with httpx.AsyncClient(base_url=rest.url, timeout=30) as once:
                crash = await once.get("/crash")
            assert (crash.status_code, crash.json()) == (
                500,
                {"ok": False, "reason": "server error"},
            )
            # The queue's routes answer problem+json.
            bad = await http.put("/v1/joblib/rooms/lab/jobs", json={"name": 1})
            assert bad.status_code == 422
            assert bad.headers["content-type"].startswith(PROBLEM_JSON)
            assert bad.json()["type"].endswith("/validation-error")

            # A worker serves the job and a provider: the room's lists changed.
            await asyncio.to_thread(manager.register, Scale, room="lab")
            files = await asyncio.to_thread(
                manager.register_provider,
                Listing,
                name="files",
                handler={"docs": ["index.md", "sdk.md"]},
                room="lab",
            )
            await asyncio.to_thread(manager.start, concurrency=2)  # a spare slot for reads
            await wait_for(lambda e, d: e == "jobs_invalidate", "jobs_invalidate")
            await wait_for(lambda e, d: e == "providers_invalidate", "providers_invalidate")
            read = await http.get(
                f"/v1/joblib/rooms/lab/providers/{files.full_name}", params={"path": "docs"}
            )
            assert read.status_code == 200, read.text
            assert read.json() == {"path": "docs", "entries": ["index.md", "sdk.md"]}

            submit = await http.post(
                "/v1/joblib/rooms/lab/tasks/lab:modifiers:Scale", json={"payload": {"factor": 3}}
            )
            assert submit.status_code == 202, submit.text
            task_id = submit.json()["id"]
            done = await http.get(
                f"/v1/joblib/tasks/{task_id}", headers={"Prefer": "wait=20"}, params={}
            )
            assert done.status_code == 200
            _, event = await wait_for(
                lambda e, d: (
                    e == "task_status_event" and d["id"] == task_id and d["status"] == "completed"
                ),
                "completed task_status_event",
            )
            assert event["name"] == "lab:modifiers:Scale"
            assert event["room_id"] == "lab"
            assert None not in (event["created_at"], event["started_at"], event["completed_at"])
            assert event["worker_id"] is not None
            assert event["error"] is None
            statuses = [
                d["status"] for e, d in received if e == "task_status_event" and d["id"] == task_id
            ]
            # In lifecycle order, each state once (a submit handed straight to a waiting
            # claim commits pending and claimed together: one event, the last state).
            lifecycle = ["pending", "claimed", "running", "completed"]
            assert statuses == sorted(set(statuses), key=lifecycle.index), statuses
            result = await http.get(f"/v1/joblib/tasks/{task_id}")
            assert result.json()["result"] == {"scaled": 6.0}

            await _internal_job_and_provider(http, wait_for, received)

            # The host locks the room: writes answer the host's 423 problem, as is.
            assert (await http.put("/rooms/lab/lock")).status_code == 200
            locked = await http.post(
                "/v1/joblib/rooms/lab/tasks/lab:modifiers:Scale", json={"payload": {}}
            )
            assert locked.status_code == 423, locked.text
            assert locked.headers["content-type"].startswith(PROBLEM_JSON)
            assert locked.json()["type"].endswith("/room-locked")
            assert (await http.delete("/rooms/lab/lock")).status_code == 200
            again = await http.post(
                "/v1/joblib/rooms/lab/tasks/lab:modifiers:Scale", json={"payload": {}}
            )
            assert again.status_code == 202, again.text
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
        await client.disconnect()


async def _internal_job_and_provider(
    http: httpx.AsyncClient, wait_for: Any, received: list[tuple[str, dict[str, Any]]]
) -> None:
    """AddFrames edits the host's table through its per-task token; the listing reads it."""
    job = "@internal:modifiers:AddFrames"
    jobs = (await http.get("/v1/joblib/rooms/lab/jobs")).json()["items"]
    assert job in [j["full_name"] for j in jobs]
    # The host route takes only a running task's token, not a login token.
    refused = await http.post("/rooms/lab/frames", params={"count": 1})
    assert refused.status_code == 401, refused.text

    async def add(count: int) -> None:
        submit = await http.post(
            f"/v1/joblib/rooms/lab/tasks/{job}", json={"payload": {"count": count}}
        )
        assert submit.status_code == 202, submit.text
        task_id = submit.json()["id"]
        done = await http.get(f"/v1/joblib/tasks/{task_id}", headers={"Prefer": "wait=20"})
        assert done.json()["status"] == "completed", done.text
        _, event = await wait_for(
            lambda e, d: (
                e == "task_status_event" and d["id"] == task_id and d["status"] == "completed"
            ),
            "completed task_status_event of the internal task",
        )
        assert (event["name"], event["room_id"]) == (job, "lab")
        seen = [
            d["status"] for e, d in received if e == "task_status_event" and d["id"] == task_id
        ]
        lifecycle = ["pending", "claimed", "running", "completed"]
        assert seen == sorted(set(seen), key=lifecycle.index), seen

    await add(3)
    assert (await http.get("/rooms/lab/frames")).json() == {"room": "lab", "frames": 3}
    assert (await http.get("/rooms/other/frames")).json() == {"room": "other", "frames": 0}

    listing = "/v1/joblib/rooms/lab/providers/@internal:frames:listing"
    first = await http.get(listing, params={"room": "lab"})
    assert first.status_code == 200, first.text
    assert first.json() == {"room": "lab", "frames": 3}
    # More frames: the host's table shows them, the provider's cached answer does not yet.
    await add(2)
    assert (await http.get("/rooms/lab/frames")).json()["frames"] == 5
    assert (await http.get(listing, params={"room": "lab"})).json() == first.json()
    bad = await http.get(listing)  # the schema requires `room`
    assert bad.status_code == 422, bad.text
    assert bad.headers["content-type"].startswith(PROBLEM_JSON)
