"""The ``zndraw-joblib`` command against a live server with a worker process serving jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _cli(
    server: Any, token: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("ZNDRAW_JOBLIB_EMAIL", None)
    env.pop("ZNDRAW_JOBLIB_PASSWORD", None)
    env.update({"ZNDRAW_JOBLIB_URL": server.url, "ZNDRAW_JOBLIB_TOKEN": token})
    return subprocess.run(
        [sys.executable, "-m", "zndraw_joblib_client.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_cli_submit_wait_inspect_and_errors(server: Any, worker_procs: Any) -> None:
    worker_token = server.token("alice@example.com")
    worker_id = worker_procs.sdk(server.url, worker_token, "lab", "Double,Boom").wait_ready()
    token = server.token("bob@x.org")

    submitted = _cli(
        server, token, "submit", "lab:modifiers:Double", "--room", "lab",
        "--payload", '{"value": 7}', "--wait", "60",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stdout.splitlines()
    assert lines[0].startswith("submitted ")
    assert "status   completed" in lines
    result_line = next(line for line in lines if line.startswith("result "))
    assert json.loads(result_line.removeprefix("result").strip())["doubled"] == 14

    task = _json(
        _cli(
            server, token, "submit", "lab:modifiers:Double", "--room", "lab",
            "--payload", '{"value": 8}', "--wait", "--json",
        )
    )  # fmt: skip
    assert task["status"] == "completed"
    assert task["result"]["doubled"] == 16
    assert task["worker_id"] == worker_id

    failed = _cli(
        server, token, "submit", "lab:analysis:Boom", "--room", "lab", "--wait", "--json"
    )
    assert failed.returncode == 1  # a waited-for task that did not complete
    failed_task = json.loads(failed.stdout)
    assert failed_task["status"] == "failed"
    assert "ValueError: exploded: boom" in failed_task["error"]

    shown = _json(_cli(server, token, "task", task["id"], "--json"))
    assert shown["id"] == task["id"]
    assert shown["status"] == "completed"
    assert shown["result"] == task["result"]

    jobs = _json(_cli(server, token, "jobs", "--room", "lab", "--json"))
    names = {job["full_name"]: job for job in jobs["items"]}
    assert set(names) == {"lab:modifiers:Double", "lab:analysis:Boom"}
    assert names["lab:modifiers:Double"]["workers"] == [worker_id]

    tasks = _json(_cli(server, token, "tasks", "--room", "lab", "--json"))
    assert tasks["total"] == 3
    completed = _json(
        _cli(server, token, "tasks", "--room", "lab", "--status", "completed", "--json")
    )
    assert {t["id"] for t in completed["items"]} >= {task["id"]}
    assert all(t["status"] == "completed" for t in completed["items"])
    assert completed["total"] == 2
    of_job = _json(
        _cli(server, token, "tasks", "--room", "lab", "--job", "lab:analysis:Boom", "--json")
    )
    assert [t["id"] for t in of_job["items"]] == [failed_task["id"]]

    in_room = _json(_cli(server, token, "workers", "--room", "lab", "--json"))
    assert [(w["id"], w["job_count"]) for w in in_room["items"]] == [(worker_id, 2)]

    table = _cli(server, token, "jobs", "--room", "lab")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["FULL_NAME", "CATEGORY", "NAME", "WORKERS"]
    assert "lab:modifiers:Double" in table.stdout

    # problems answered by the server: exit code 1 and a message on stderr
    missing = _cli(server, token, "submit", "lab:modifiers:Nope", "--room", "lab", "--json")
    assert missing.returncode == 1
    assert "error:" in missing.stderr
    assert "not found" in missing.stderr.lower()
    unknown = _cli(server, token, "task", "00000000-0000-4000-8000-000000000000")
    assert unknown.returncode == 1
    assert "error:" in unknown.stderr
    refused = _cli(server, "not-a-token", "workers")
    assert refused.returncode == 1
    assert "401" in refused.stderr
