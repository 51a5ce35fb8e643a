"""The predecessor's @internal wire, driven by an unmodified zndraw-joblib 0.1.7 JobManager.

What its tests for internal jobs check, minus taskiq: a non-superuser's registration in
``@internal`` is refused; ``@internal`` jobs are listed from a room and a submit from the
room is dispatched (here to the reference server's in-process executor running the demo
``Checksum`` job) and listed with the room's tasks; a job no executor serves answers 503
``internal-job-not-configured``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import database_url  # type: ignore[import-not-found]
from test_compat_017 import API  # type: ignore[import-not-found]

if importlib.util.find_spec("zndraw_joblib") is None:
    pytest.skip("zndraw-joblib==0.1.7 is in the dev group", allow_module_level=True)

DRIVER = API + textwrap.dedent(
    """
    class Checksum(Extension):
        category = Category.ANALYSIS
        text: str = ""
        def run(self, vis, **kwargs):
            return None

    out = {}
    manager = JobManager(Api())
    try:
        manager.register(Checksum, room="@internal")
        out["register"] = "accepted"
    except PermissionError:
        out["register"] = "refused"
    try:
        out["task"] = manager.submit(Checksum(text="zndraw"), "lab", job_room="@internal")
    except Exception as exc:
        out["task"] = type(exc).__name__ + ": " + str(exc)
    print(json.dumps(out))
    """
)

DEMO = json.dumps(["zndraw_joblib_server.internal.demo:Checksum"])


def _drive(url: str, token: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, url, token],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("threads", [1, 0], ids=["served", "unserved"])
def test_017_internal(backend: str, tmp_path: Path, server_factory: Any, threads: int) -> None:
    env = {
        "ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS": DEMO,
        "ZNDRAW_JOBLIB_INTERNAL_EXECUTOR_THREADS": str(threads),
    }
    server = server_factory(database_url(backend, tmp_path), env)
    token = server.token("legacy@example.com")
    out = _drive(server.url, token)
    assert out["register"] == "refused"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        names = [j["full_name"] for j in http.get("/v1/joblib/rooms/lab/jobs").json()["items"]]
        assert "@internal:analysis:Checksum" in names
        if not threads:
            # the 0.1.7 client raises its raise_for_status error for the 503
            assert "503" in out["task"] or "Service Unavailable" in out["task"], out
            return
        task_id = out["task"]
        deadline = time.monotonic() + 60
        task: dict[str, Any] = {}
        while time.monotonic() < deadline:
            task = http.get(f"/v1/joblib/tasks/{task_id}", headers={"Prefer": "wait=2"}).json()
            if task["status"] in ("completed", "failed"):
                break
        assert task["status"] == "completed", task
        assert task["result"]["hexdigest"] == hashlib.sha256(b"zndraw").hexdigest()
        listed = http.get("/v1/joblib/rooms/lab/tasks").json()["items"]
        assert [t["id"] for t in listed] == [task_id]
