"""Extension classes the contract-test worker processes serve.

Loaded by ``sdk_worker.py`` and by the ``zndraw-joblib worker drivers/extensions.py:Name``
command. When ``JOBLIB_TEST_MARKERS`` names a directory, every run drops empty files
``{task_id}.{attempt}.{pid}.start`` and ``....done`` there so that tests can count executions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from zndraw_joblib_client import ClaimedTask, Extension, Retry


def _mark(task: ClaimedTask[Any] | None, event: str) -> None:
    directory = os.environ.get("JOBLIB_TEST_MARKERS")
    if not directory or task is None:
        return
    Path(directory, f"{task.task_id}.{task.attempt}.{os.getpid()}.{event}").touch()


def _who(task: ClaimedTask[Any] | None) -> dict[str, Any]:
    if task is None:
        return {}
    return {"attempt": task.attempt, "worker_id": str(task.worker_id), "pid": os.getpid()}


class Double(Extension):
    """Returns twice its value."""

    category = "modifiers"
    value: int = 0

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        _mark(task, "start")
        result = {"doubled": self.value * 2, **_who(task)}
        _mark(task, "done")
        return result


class Slow(Extension):
    """Sleeps ``seconds`` (``retry_seconds`` on later attempts, when set), then returns."""

    category = "modifiers"
    seconds: float = 3.0
    retry_seconds: float | None = None

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        _mark(task, "start")
        seconds = self.seconds
        if task is not None and task.attempt > 1 and self.retry_seconds is not None:
            seconds = self.retry_seconds
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        _mark(task, "done")
        return {"slept": seconds, **_who(task)}


class Boom(Extension):
    """Raises an error from a nested call (the failure's traceback names both functions)."""

    category = "analysis"
    text: str = "boom"

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        _explode(self.text)


def _explode(text: str) -> None:
    raise ValueError(f"exploded: {text}")


class Flaky(Extension):
    """Asks for a retry on its first ``fail_attempts`` attempts, then succeeds."""

    category = "modifiers"
    fail_attempts: int = 1

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        _mark(task, "start")
        assert task is not None
        if task.attempt <= self.fail_attempts:
            raise Retry(f"transient trouble on attempt {task.attempt}")
        _mark(task, "done")
        return {"ok": True, **_who(task)}


class Steps(Extension):
    """Reports progress ``steps`` times with a message, pausing ``pause`` seconds each."""

    category = "analysis"
    steps: int = 4
    pause: float = 0.3

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        assert task is not None
        for i in range(1, self.steps + 1):
            time.sleep(self.pause)
            task.progress(i / self.steps, f"step {i} of {self.steps}")
        return {"steps": self.steps}


class Spin(Extension):
    """Runs until cancelled (it only ever looks at ``check_cancelled``), at most ``limit`` s."""

    category = "selections"
    limit: float = 60.0

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        assert task is not None
        _mark(task, "start")
        deadline = time.monotonic() + self.limit
        while time.monotonic() < deadline:
            task.check_cancelled()
            time.sleep(0.05)
        return {"cancelled": False}
