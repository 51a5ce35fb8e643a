"""The server killed with SIGKILL under load, then restarted: nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

EXTENSION = Path(__file__).parent / "drivers" / "echo_extension.py"
WORKERS = 3


def _submit_until(
    url: str, token: str, stop: threading.Event, answered: dict[str, int], start: int
) -> None:
    """Submit tasks until ``stop``; record the ids the server answered 202."""
    headers = {"Authorization": f"Bearer {token}"}
    i = start
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        while not stop.is_set():
            key = str(uuid.uuid4())
            try:
                resp = http.post(
                    "/v1/joblib/rooms/lab/tasks/lab:modifiers:Echo",
                    json={"payload": {"i": i, "pause": 0.01}},
                    headers={"Idempotency-Key": key},
                )
            except httpx.HTTPError:
                time.sleep(0.05)  # the server is down: the submit was not acknowledged
                continue
            if resp.status_code == 202:
                answered[resp.json()["id"]] = i
                i += 1


def _start_worker(server: Any, email: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "ZNDRAW_JOBLIB_URL": server.url,
            "ZNDRAW_JOBLIB_EMAIL": email,
            "ZNDRAW_JOBLIB_PASSWORD": "password123",
        }
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zndraw_joblib_client.cli",
            "worker",
            f"{EXTENSION}:Echo",
            "--room",
            "lab",
            "--claim-wait",
            "2",
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_server_sigkill_under_load_loses_nothing(server: Any, tmp_path: Path) -> None:
    server.extra_env["ZNDRAW_JOBLIB_LEASE_SECONDS"] = "2"
    server.stop()
    server.start()
    email = "crash@example.com"
    token = server.token(email)
    workers = [_start_worker(server, email, tmp_path / f"worker{i}.log") for i in range(WORKERS)]
    answered: dict[str, int] = {}
    stop = threading.Event()
    feeder = threading.Thread(target=_submit_until, args=(server.url, token, stop, answered, 0))
    try:
        deadline = time.monotonic() + 30
        while len(answered) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until the workers have registered and the job exists
            if len(answered) == 0 and not feeder.is_alive():
                feeder.start()
        assert answered, "no task was accepted before the crash"
        server.stop(signal.SIGKILL)  # crash in the middle of submits, claims and updates
        time.sleep(0.5)
        server.start()
        more = len(answered) + 40
        deadline = time.monotonic() + 60
        while len(answered) < more and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        feeder.join(10)
        states = _wait_until_terminal(server.url, token, set(answered), timeout=120)
    finally:
        stop.set()
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    missing = set(answered) - set(states)
    assert not missing, f"{len(missing)} acknowledged task(s) lost"
    not_done = {tid: s for tid, s in states.items() if s["status"] != "completed"}
    assert not not_done, f"tasks not completed: {list(not_done.values())[:5]}"
    for task_id, i in answered.items():
        assert states[task_id]["result"] == {"i": i}
    retried = sum(1 for s in states.values() if s["attempt"] > 1)
    print(
        f"{len(answered)} tasks acknowledged, all completed; {retried} ran again after the crash"
    )


def _wait_until_terminal(
    url: str, token: str, ids: set[str], timeout: float
) -> dict[str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    states: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        while time.monotonic() < deadline:
            states = {}
            offset = 0
            while True:
                page = http.get(
                    "/v1/joblib/rooms/lab/tasks", params={"limit": 500, "offset": offset}
                ).json()
                states.update({t["id"]: t for t in page["items"] if t["id"] in ids})
                offset += 500
                if offset >= page["total"]:
                    break
            if len(states) == len(ids) and all(
                s["status"] in {"completed", "failed", "cancelled"} for s in states.values()
            ):
                break
            time.sleep(0.5)
    return states
