"""A host app built only with ``JobQueue`` (tests/drivers/host_app.py) gets everything started.

Two processes of the host app share one database (PostgreSQL; on SQLite, where one process
serves a database file, both "processes" are the same one): a claim waiting on one is
woken by a submit to the other, and the sweeper removes a silent worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SECRET, database_url, free_port  # type: ignore[import-not-found]

DRIVERS = Path(__file__).parent / "drivers"


class HostProcess:
    """tests/drivers/host_app.py served by uvicorn in its own process."""

    def __init__(self, url: str, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {
            **os.environ,
            "ZNDRAW_JOBLIB_DATABASE_URL": url,
            "ZNDRAW_AUTH_SECRET_KEY": SECRET,
            **env,
        }
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--app-dir", str(DRIVERS), "host_app:app"),
                *("--port", str(self.port), "--log-level", "warning"),
            ],
            env=full_env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"host app exited: {log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/v1/joblib/workers", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"host app did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the process (SIGTERM: the lifespan stops the queue)."""
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def token(self, email: str) -> str:
        """Register ``email`` and log in."""
        creds = {"email": email, "password": "password123"}
        httpx.post(f"{self.url}/auth/register", json=creds, timeout=10)
        resp = httpx.post(
            f"{self.url}/auth/jwt/login",
            data={"username": email, "password": "password123"},
            timeout=10,
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])


@pytest.fixture
def hosts(backend: str, tmp_path: Path) -> Iterator[Callable[[dict[str, str]], list[Any]]]:
    """``hosts(env)``: two host-app processes on one fresh database (one on SQLite)."""
    started: list[HostProcess] = []

    def start(env: dict[str, str]) -> list[Any]:
        url = database_url(backend, tmp_path)
        first = HostProcess(url, tmp_path / "host0.log", env)
        started.append(first)
        if backend == "sqlite":
            return [first, first]
        second = HostProcess(url, tmp_path / "host1.log", env)
        started.append(second)
        return [first, second]

    yield start
    for host in started:
        host.stop()


def test_a_submit_wakes_a_claim_waiting_in_the_other_process(hosts: Any) -> None:
    # The fallback re-check is far beyond the claim's wait: only a wake-up answers it
    # with the task (without LISTEN started, the claim answers empty after 20 s).
    a, b = hosts({"ZNDRAW_JOBLIB_CLAIM_POLL_INTERVAL_SECONDS": "600"})
    token = a.token("host@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=a.url, headers=headers, timeout=60) as http_a,
        httpx.Client(base_url=b.url, headers=headers, timeout=60) as http_b,
    ):
        job = http_a.put(
            "/v1/joblib/rooms/lab/jobs",
            json={"category": "modifiers", "name": "Wake", "schema": {}},
        )
        assert job.status_code in (200, 201), job.text
        result: dict[str, Any] = {}

        def claim() -> None:
            resp = http_a.post(
                "/v1/joblib/tasks/claim",
                json={"worker_id": job.json()["worker_id"]},
                headers={"Prefer": "wait=20"},
            )
            result["task"] = resp.json()["task"]

        waiter = threading.Thread(target=claim)
        waiter.start()
        time.sleep(1.0)  # let the claim reach its wait
        submitted = http_b.post("/v1/joblib/rooms/lab/tasks/lab:modifiers:Wake", json={})
        assert submitted.status_code == 202, submitted.text
        waiter.join(40)
        assert result["task"] is not None, "the waiting claim was never woken"
        assert result["task"]["id"] == submitted.json()["id"]


def test_the_sweeper_runs_in_a_host_app(hosts: Any) -> None:
    a, _ = hosts(
        {
            "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "1",
            "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": "0.3",
        }
    )
    token = a.token("sweep@example.com")
    with httpx.Client(
        base_url=a.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        worker = http.post("/v1/joblib/workers")
        assert worker.status_code == 201, worker.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            items = http.get("/v1/joblib/workers").json()["items"]
            if all(w["id"] != worker.json()["id"] for w in items):
                return
            time.sleep(0.3)
        pytest.fail("the sweeper never removed the silent worker")
