"""@internal extensions of the contract tests: the server registers them, workers serve them.

They subclass the client's Extension (the server accepts any such pydantic class) and leave
markers in ``$JOBLIB_TEST_MARKERS``: ``{task}.{attempt}.{pid}.start`` when a run begins.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from zndraw_joblib_client import Extension, Retry


def _mark(task: Any, event: str) -> None:
    markers = os.environ.get("JOBLIB_TEST_MARKERS")
    if markers:
        name = f"{task.task_id}.{task.attempt}.{os.getpid()}.{event}"
        Path(markers, name).touch()


class Double(Extension):
    """Double ``x``; says which room and process ran it."""

    category = "modifiers"
    x: int = 1

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, Any]:
        return {"y": 2 * self.x, "room": task.room_id, "pid": os.getpid()}


class Flaky(Extension):
    """Asks for a retry on its first attempt."""

    category = "analysis"

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, int]:
        if task.attempt < 2:
            raise Retry("first attempt")
        return {"attempt": task.attempt}


class Sleepy(Extension):
    """Sleeps (checking for cancellation) on its first attempt, returns at once later."""

    category = "analysis"
    seconds: float = 30.0

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, int]:
        _mark(task, "start")
        if task.attempt == 1:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                task.check_cancelled()
                time.sleep(0.05)
        return {"attempt": task.attempt, "pid": os.getpid()}


class CallBack(Extension):
    """Reads its own task back from the server with its per-task token."""

    category = "selections"
    url: str

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, Any]:
        token = task.token()
        markers = os.environ.get("JOBLIB_TEST_MARKERS")
        if markers:
            Path(markers, f"{task.task_id}.token").write_text(token)
        resp = httpx.get(
            f"{self.url}/v1/joblib/tasks/{task.task_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        return {"status_code": resp.status_code, "seen": resp.json().get("status")}
