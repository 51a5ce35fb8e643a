"""An unmodified zndraw-joblib 0.1.7 JobManager against our server.

The predecessor's client runs in its own process (it registers SQL tables of its own on
import, which must not meet ours), driven by a small script below.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

# Only look for it: importing it here would register its own ORM classes (``Task``, ``Job``)
# on zndraw-auth's shared declarative base, next to ours, in this test process.
if importlib.util.find_spec("zndraw_joblib") is None:
    pytest.skip("zndraw-joblib==0.1.7 is in the dev group", allow_module_level=True)

API = textwrap.dedent(
    """
    import json, sys
    import httpx
    from zndraw_joblib.client import Category, Extension, JobManager

    url, token = sys.argv[1], sys.argv[2]

    class Api:
        def __init__(self):
            self.http = httpx.Client(timeout=10)
        def get_headers(self):
            return {"Authorization": f"Bearer {token}"}
        @property
        def base_url(self):
            return url
        def raise_for_status(self, response):
            if response.status_code == 404:
                raise KeyError(response.text)
            if response.status_code in (401, 403):
                raise PermissionError(response.text)
            if response.status_code in (409, 422):
                raise ValueError(response.text)
            response.raise_for_status()

    """
)
"""The 0.1.7 client's ``api=`` object (used by test_compat_017_internal.py too)."""

DRIVER = API + textwrap.dedent(
    """
    class Rotate(Extension):
        category = Category.MODIFIER
        angle: float = 0.0
        def run(self, vis, **kwargs):
            return None

    out = {}
    manager = JobManager(Api())
    manager.register(Rotate, room="lab")
    manager.register(Rotate, room="lab")  # again: 200, same worker
    out["worker_id"] = str(manager.worker_id)
    first = manager.submit(Rotate(angle=1.5), "lab", job_room="lab")
    second = manager.submit(Rotate(angle=2.5), "lab", job_room="lab")
    third = manager.submit(Rotate(angle=3.5), "lab", job_room="lab")
    out["submitted"] = [first, second, third]
    task = manager.claim()
    out["claimed"] = [task.task_id, task.job_name, task.extension.angle]
    manager.start(task)
    manager.complete(task)
    task = manager.claim()
    manager.start(task)
    manager.fail(task, "boom")
    task = manager.claim()
    manager.fail_by_id(task.task_id, "gave up before starting")
    out["after"] = manager.claim()
    manager.heartbeat()
    fourth = manager.submit(Rotate(angle=4.5), "lab", job_room="lab")
    task = manager.claim()
    manager.cancel(task)
    out["fourth"] = fourth
    manager.disconnect()
    print(json.dumps(out))
    """
)


def test_017_job_manager_round_trip(server: Any) -> None:
    token = server.token("legacy@example.com")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, server.url, token],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    first, second, third = out["submitted"]
    assert out["claimed"] == [first, "lab:modifiers:Rotate", 1.5]
    assert out["after"] is None

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        tasks = {t["id"]: t for t in http.get("/v1/joblib/rooms/lab/tasks").json()["items"]}
        assert tasks[first]["status"] == "completed"
        assert tasks[second]["status"] == "failed"
        assert tasks[second]["error"] == "boom"
        assert tasks[third]["status"] == "failed"
        assert tasks[out["fourth"]]["status"] == "cancelled"
        # one worker for both registrations, deleted by disconnect()
        assert http.get("/v1/joblib/workers").json()["total"] == 0
