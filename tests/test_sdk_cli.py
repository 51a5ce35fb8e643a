"""The ``zndraw-joblib`` command against a live server with a worker process serving jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ConfigDict

from zndraw_joblib_client import Extension, ExtensionError, InvalidPayload, JobManager

pytestmark = pytest.mark.slow


def _cli(
    server: Any, token: str | None, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("EMAIL", "PASSWORD", "TOKEN"):
        env.pop(f"ZNDRAW_JOBLIB_{name}", None)
    env["ZNDRAW_JOBLIB_URL"] = server.url
    if token is not None:
        env["ZNDRAW_JOBLIB_TOKEN"] = token
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
    assert table.stdout.splitlines()[0].split() == [
        "FULL_NAME",
        "CATEGORY",
        "NAME",
        "WORKERS",
        "LIVE_WORKERS",
    ]
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


def _one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cli_names_the_failing_payload_fields(server: Any, worker_procs: Any) -> None:
    worker_procs.sdk(server.url, server.token("alice@example.com"), "lab", "Double").wait_ready()
    token = server.token("bob@x.org")
    submit = ("submit", "lab:modifiers:Double", "--room", "lab", "--payload")

    wrong_type = _cli(server, token, *submit, '{"value": "seven"}')
    assert wrong_type.returncode == 1
    assert '  /value: "seven" is not of type "integer"' in wrong_type.stderr.splitlines()

    # a misspelled field is refused (it used to run with the default value)
    misspelled = _cli(server, token, *submit, '{"vlaue": 7}')
    assert misspelled.returncode == 1, misspelled.stdout
    assert "('vlaue' was unexpected)" in misspelled.stderr
    assert "  /: Additional properties are not allowed" in misspelled.stderr


def test_cli_jobs_show_prints_workers_and_schema(server: Any, worker_procs: Any) -> None:
    worker_procs.sdk(server.url, server.token("alice@example.com"), "lab", "Double").wait_ready()
    token = server.token("bob@x.org")

    shown = _cli(server, token, "jobs", "show", "lab:modifiers:Double", "--room", "lab")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:3] == ["job      lab:modifiers:Double", "workers  1 (1 live)", "schema"]
    schema = json.loads("\n".join(lines[3:]))
    assert schema["properties"]["value"]["type"] == "integer"
    assert schema["additionalProperties"] is False

    as_json = _json(
        _cli(server, token, "jobs", "--room", "lab", "show", "lab:modifiers:Double", "--json")
    )
    assert as_json["full_name"] == "lab:modifiers:Double"
    assert as_json["schema"] == schema
    missing = _cli(server, token, "jobs", "show", "lab:modifiers:Nope", "--room", "lab")
    assert missing.returncode == 1
    assert "not found" in missing.stderr.lower()


def test_cli_shows_progress_rounded(server: Any, worker_procs: Any) -> None:
    worker_procs.sdk(server.url, server.token("alice@example.com"), "lab", "Steps").wait_ready()
    token = server.token("bob@x.org")
    done = _cli(
        server, token, "submit", "lab:analysis:Steps", "--room", "lab",
        "--payload", '{"steps": 3, "pause": 0.05}', "--wait", "60",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stdout.splitlines() if line.startswith("progress")]
    assert progress, done.stdout
    assert all(re.fullmatch(r"progress +\d{1,3}(\.\d)?%", line) for line in progress), progress


def test_cli_without_credentials_or_server_says_what_to_set(server: Any) -> None:
    line = _one_line_error(_cli(server, None, "workers"), 1)
    assert line.startswith("error: not logged in (401)")
    assert "ZNDRAW_JOBLIB_TOKEN" in line
    assert "ZNDRAW_JOBLIB_EMAIL" in line

    refused = _one_line_error(_cli(server, "not-a-token", "workers"), 1)
    assert "zndraw-joblib login" in refused

    unreachable = "http://127.0.0.1:1"
    line = _one_line_error(_cli(server, None, "workers", "--url", unreachable), 1)
    assert line.startswith(f"error: cannot reach the server at {unreachable}: ")
    assert "is it running? set ZNDRAW_JOBLIB_URL" in line

    version = _cli(server, None, "--version")
    assert version.returncode == 0
    assert re.fullmatch(r"zndraw-joblib \d+\.\d+\.\d+\S*", version.stdout.strip())


NO_CATEGORY = """
from zndraw_joblib_client import Extension


class NoCategory(Extension):
    value: int = 0

    def run(self, task=None, **kwargs):
        return self.value
"""


def test_extension_without_category(server: Any, tmp_path: Path) -> None:
    source = tmp_path / "no_category.py"
    source.write_text(textwrap.dedent(NO_CATEGORY))
    token = server.token("alice@example.com")
    line = _one_line_error(_cli(server, token, "worker", f"{source}:NoCategory"), 2)
    assert "NoCategory sets no category" in line

    class NoCategory(Extension):
        def run(self, task: Any = None, **kwargs: Any) -> Any:
            return None

    with JobManager(server.url, token=token) as manager:
        with pytest.raises(ExtensionError, match="sets no category"):
            manager.register(NoCategory, room="lab")
        assert manager.list_workers().total == 0  # refused before creating a worker


class _Strict(Extension):
    category = "modifiers"
    name: str = "world"

    def run(self, task: Any = None, **kwargs: Any) -> Any:
        return None


class _Loose(_Strict):
    model_config = ConfigDict(extra="ignore")


def test_unknown_payload_fields_are_refused_unless_the_extension_opts_out(server: Any) -> None:
    with JobManager(server.url, token=server.token("alice@example.com")) as manager:
        manager.register(_Strict, room="lab")
        manager.register(_Loose, room="lab")
        with pytest.raises(InvalidPayload) as refused:
            manager.submit("lab:modifiers:_Strict", "lab", payload={"nme": "Ada"})
        assert refused.value.extras["errors"][0]["path"] == "/"
        assert "'nme' was unexpected" in refused.value.extras["errors"][0]["message"]
        task = manager.submit("lab:modifiers:_Loose", "lab", payload={"nme": "Ada"})
        assert task.status.value == "pending"
