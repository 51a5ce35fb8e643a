"""The predecessor's models (zndraw-joblib 0.1.7) and ours load in one process, either order.

A host migrating from the predecessor keeps its models while it mounts this queue; both sets
share zndraw-auth's metadata, and the predecessor's ``relationship("Task")`` must still find
its own ``Task``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import {first}, {second}
from sqlalchemy.orm import configure_mappers
configure_mappers()
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink
import zndraw_joblib.models as old
assert Task.__tablename__ == "joblib_task" and old.Task.__tablename__ == "task"
assert {{"joblib_task", "task", "user"}} <= set(Task.metadata.tables)
print("both loaded")
"""


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("zndraw_joblib.models", "zndraw_joblib_server.models"),
        ("zndraw_joblib_server.models", "zndraw_joblib.models"),
    ],
)
def test_the_predecessors_models_and_ours_configure_together(first: str, second: str) -> None:
    code = CHECK.format(first=first, second=second)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "both loaded" in done.stdout
