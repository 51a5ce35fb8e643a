"""@internal jobs over real HTTP: the reference server registers the host's extensions.

They run in the server process (its in-process executor) and in separate
``zndraw-joblib worker --internal`` processes, with one lifecycle: retries, cancel, timeouts
and a SIGKILLed worker recovered like any task. Per-task tokens work for exactly the task's
run. Nobody registers @internal jobs over HTTP; a job no executor serves answers 503.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (  # type: ignore[import-not-found]
    DRIVERS,
    SHORT_LEASE_ENV,
    LiveServer,
    WorkerFactory,
    database_url,
)

P = "/v1/joblib"
EXTENSIONS = ["Double", "Flaky", "Sleepy", "CallBack"]
SERVICE = "svc@example.com"


def _server_env(
    markers: Path, threads: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {
        "PYTHONPATH": os.pathsep.join([str(DRIVERS), os.environ.get("PYTHONPATH", "")]),
        "JOBLIB_TEST_MARKERS": str(markers),
        "ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS": json.dumps(
            [f"internal_extensions:{name}" for name in EXTENSIONS]
        ),
        "ZNDRAW_JOBLIB_INTERNAL_EXECUTOR_THREADS": str(threads),
        "ZNDRAW_JOBLIB_INTERNAL_WORKER_EMAILS": json.dumps([SERVICE]),
    }
    env.update(extra or {})
    return env


@pytest.fixture
def start_server(backend: str, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start the reference server with the internal extensions (stopped at the end)."""
    started: list[LiveServer] = []

    def start(threads: int, extra: dict[str, str] | None = None) -> LiveServer:
        markers = tmp_path / "markers"
        markers.mkdir(exist_ok=True)
        live = LiveServer(
            database_url(backend, tmp_path),
            tmp_path / "server.log",
            extra_env=_server_env(markers, threads, extra),
        )
        started.append(live)
        live.start()
        return live

    yield start
    for live in started:
        live.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _submit(server: LiveServer, token: str, room: str, job: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}{P}/rooms/{room}/tasks/@internal:{job}",
        json=body,
        headers=_auth(token),
        timeout=10,
    )


def _until(server: LiveServer, token: str, task_id: str, *states: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = httpx.get(
            f"{server.url}{P}/tasks/{task_id}",
            params={"wait_for": "change"},
            headers={**_auth(token), "Prefer": "wait=2"},
            timeout=10,
        ).json()
        if task["status"] in states:
            return task
    raise AssertionError(
        f"task never reached {states}: {task}\n{server.log_path.read_text()[-3000:]}"
    )


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _served(server: LiveServer, token: str, job: str) -> bool:
    resp = httpx.get(
        f"{server.url}{P}/rooms/r1/jobs/@internal:{job}", headers=_auth(token), timeout=10
    )
    return bool(resp.json()["workers"])


def test_in_process(start_server) -> None:
    server = start_server(threads=2)
    alice, bob = server.token("alice@example.com"), server.token("bob@example.com")
    names = {
        j["full_name"]
        for j in httpx.get(f"{server.url}{P}/rooms/r1/jobs", headers=_auth(alice)).json()["items"]
    }
    assert {"@internal:modifiers:Double", "@internal:analysis:Sleepy"} <= names
    # nobody registers over HTTP, not even with the same schema
    body = {"category": "modifiers", "name": "Double", "schema": {}}
    for token in (alice, server.admin_token()):
        resp = httpx.put(f"{server.url}{P}/rooms/@internal/jobs", json=body, headers=_auth(token))
        assert resp.status_code in (403, 409), resp.text
    assert (
        httpx.put(f"{server.url}{P}/rooms/@internal/jobs", json=body, headers=_auth(alice))
        .json()["type"]
        .endswith("/forbidden")
    )
    # two rooms, run in the server process
    a = _submit(server, alice, "r1", "modifiers:Double", payload={"x": 2}).json()
    b = _submit(server, bob, "r2", "modifiers:Double", payload={"x": 4}).json()
    done_a = _until(server, alice, a["id"], "completed", "failed")
    done_b = _until(server, bob, b["id"], "completed", "failed")
    assert done_a["result"]["y"] == 4, done_a
    assert done_a["result"]["room"] == "r1"
    assert done_b["result"]["room"] == "r2"
    assert done_a["result"]["pid"] == server.process.pid  # type: ignore[union-attr]
    # retry
    flaky = _submit(server, alice, "r1", "analysis:Flaky", max_attempts=2).json()
    assert _until(server, alice, flaky["id"], "completed", "failed")["result"] == {"attempt": 2}
    # cancel
    slow = _submit(server, alice, "r1", "analysis:Sleepy", payload={"seconds": 60}).json()
    _until(server, alice, slow["id"], "running")
    httpx.post(f"{server.url}{P}/tasks/{slow['id']}/cancel", headers=_auth(alice))
    assert _until(server, alice, slow["id"], "cancelled", "failed", "completed")["status"] == (
        "cancelled"
    )
    # timeout
    late = _submit(
        server,
        alice,
        "r1",
        "analysis:Sleepy",
        payload={"seconds": 5},
        timeout_seconds=0.5,
        max_attempts=1,
    ).json()
    timed_out = _until(server, alice, late["id"], "failed", "completed", "cancelled")
    assert timed_out["status"] == "failed", timed_out
    assert "time" in (timed_out["error"] or "").lower()


def test_task_token_lives_exactly_as_long_as_the_task(start_server, tmp_path) -> None:
    server = start_server(threads=1)
    alice = server.token("alice@example.com")
    task = _submit(server, alice, "r1", "selections:CallBack", payload={"url": server.url})
    done = _until(server, alice, task.json()["id"], "completed", "failed")
    assert done["result"] == {"status_code": 200, "seen": "running"}, done
    token = (tmp_path / "markers" / f"{done['id']}.token").read_text()
    after = httpx.get(f"{server.url}{P}/tasks/{done['id']}", headers=_auth(token))
    assert after.status_code == 401, after.text
    assert after.json()["type"].endswith("/unauthorized")


def test_external_internal_worker(start_server, worker_procs: WorkerFactory) -> None:
    server = start_server(threads=0, extra=dict(SHORT_LEASE_ENV))
    alice = server.token("alice@example.com")
    # registered by the host, served by nobody yet: 503
    refused = _submit(server, alice, "r1", "modifiers:Double", payload={"x": 1})
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith("/internal-job-not-configured")
    # an account without the right may not serve it
    outsider = worker_procs.cli(
        server.url, alice, "--internal", str(DRIVERS / "internal_extensions.py:Double")
    )
    assert outsider.wait_exit() != 0
    svc = server.token(SERVICE)
    specs = [str(DRIVERS / f"internal_extensions.py:{name}") for name in EXTENSIONS[:3]]
    args = ["--internal", "--heartbeat", "0.5", "--claim-wait", "2", *specs]
    first = worker_procs.cli(server.url, svc, *args)
    _wait_for(lambda: _served(server, alice, "analysis:Sleepy"), "the internal worker")
    a = _submit(server, alice, "r1", "modifiers:Double", payload={"x": 3}).json()
    b = _submit(server, alice, "r2", "modifiers:Double", payload={"x": 5}).json()
    assert _until(server, alice, a["id"], "completed")["result"]["room"] == "r1"
    done_b = _until(server, alice, b["id"], "completed")
    assert done_b["result"]["pid"] == first.process.pid
    flaky = _submit(server, alice, "r1", "analysis:Flaky", max_attempts=2).json()
    assert _until(server, alice, flaky["id"], "completed")["result"] == {"attempt": 2}
    # the executor process dies mid-task: the task is recovered like any other
    slow = _submit(server, alice, "r1", "analysis:Sleepy", max_attempts=3).json()
    _wait_for(lambda: _until(server, alice, slow["id"], "running") is not None, "start")
    first.process.kill()
    first.process.wait(10)
    second = worker_procs.cli(server.url, svc, *args)
    done = _until(server, alice, slow["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["result"]["attempt"] == 2
    assert done["result"]["pid"] == second.process.pid
    # cancel, delivered to the external worker by its heartbeat
    stuck = _submit(server, alice, "r1", "analysis:Sleepy", payload={"seconds": 60}).json()
    _until(server, alice, stuck["id"], "running")
    httpx.post(f"{server.url}{P}/tasks/{stuck['id']}/cancel", headers=_auth(alice))
    assert _until(server, alice, stuck["id"], "cancelled", "failed", "completed")["status"] == (
        "cancelled"
    )


def test_serve_ships_the_demo(backend: str, tmp_path: Path) -> None:
    live = LiveServer(database_url(backend, tmp_path), tmp_path / "demo.log")
    env = live.env()
    env.pop("ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS")  # as an operator starts it: the default
    live.env = lambda: env  # type: ignore[method-assign]
    live.start()
    try:
        alice = live.token("alice@example.com")
        jobs = httpx.get(f"{live.url}{P}/rooms/any/jobs", headers=_auth(alice)).json()["items"]
        assert [j["full_name"] for j in jobs] == ["@internal:analysis:Checksum"]
        task = _submit(live, alice, "any", "analysis:Checksum", payload={"text": "abc"}).json()
        done = _until(live, alice, task["id"], "completed", "failed")
        assert done["result"]["hexdigest"] == hashlib.sha256(b"abc").hexdigest()
    finally:
        live.stop()
