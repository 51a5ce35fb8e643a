"""The zndraw-joblib command, with JobManager bound to the fake server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from zndraw_joblib_client import JobManager, cli

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hello_worker.py"
GREET = "@global:modifiers:Greet"

EXT_SOURCE = """
from zndraw_joblib_client import Extension


class Hello(Extension):
    category = "modifiers"
    who: str = "you"

    def run(self, task=None, **kwargs):
        return {"hi": self.who}
"""


@pytest.fixture
def made(server, monkeypatch):
    """Patch cli.JobManager so that the command talks to the fake server."""
    calls: list[dict] = []

    def factory(url, **kwargs):
        calls.append({"url": url, **kwargs})
        client = httpx.Client(transport=httpx.MockTransport(server.handle), base_url=url)
        return JobManager(client=client, **kwargs)

    monkeypatch.setattr(cli, "JobManager", factory)
    monkeypatch.setenv("ZNDRAW_JOBLIB_TOKEN", "good-token")
    monkeypatch.delenv("ZNDRAW_JOBLIB_URL", raising=False)
    return calls


@pytest.fixture
def ext_file(tmp_path):
    path = tmp_path / "hello_ext.py"
    path.write_text(EXT_SOURCE)
    return path


def register_greet(server):
    server.jobs[GREET] = {
        "id": "00000000-0000-0000-0000-000000000001",
        "room_id": "@global",
        "category": "modifiers",
        "name": "Greet",
        "full_name": GREET,
        "schema": {},
        "workers": [],
    }


def test_usage_errors_exit_2(made, capsys):
    assert cli.main([]) == 2
    assert cli.main(["tasks"]) == 2
    assert cli.main(["nope"]) == 2
    assert cli.main(["submit", GREET, "--room", "r", "--payload", "[1]"]) == 2
    assert cli.main(["worker", "no_such_module_xyz:Thing"]) == 2


def test_options_from_env_and_after_the_subcommand(made, server, monkeypatch, capsys):
    monkeypatch.setenv("ZNDRAW_JOBLIB_URL", "http://from-env")
    assert cli.main(["workers"]) == 0
    assert made[-1]["url"] == "http://from-env"
    assert made[-1]["token"] == "good-token"
    assert cli.main(["workers", "--url", "http://flag", "--token", "other"]) == 1
    assert made[-1]["url"] == "http://flag"
    assert made[-1]["token"] == "other"
    assert "Unauthorized (401)" in capsys.readouterr().err


def test_default_url(made, capsys):
    cli.main(["workers"])
    assert made[-1]["url"] == "http://127.0.0.1:8000"


def test_jobs_table_and_json(made, server, capsys):
    register_greet(server)
    assert cli.main(["jobs", "--room", "room1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["FULL_NAME", "CATEGORY", "NAME", "WORKERS", "LIVE_WORKERS"]
    assert lines[1].split() == [GREET, "modifiers", "Greet", "0", "0"]
    assert lines[-1] == "(1 of 1)"
    assert cli.main(["--json", "jobs", "--room", "room1"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["total"] == 1
    assert page["items"][0]["full_name"] == GREET
    (listed, _) = server.seen("GET", r"/v1/joblib/rooms/room1/jobs")
    assert "live" not in listed.params


def test_jobs_live_asks_for_jobs_with_live_workers(made, server, capsys):
    register_greet(server)
    assert cli.main(["jobs", "--room", "room1", "--live"]) == 0
    (listed,) = server.seen("GET", r"/v1/joblib/rooms/room1/jobs")
    assert listed.params["live"] == ["true"]


def test_submit_prints_the_task(made, server, capsys):
    register_greet(server)
    code = cli.main(
        ["submit", GREET, "--room", "room1", "--payload", '{"name": "Ada"}', "--priority", "3"]
    )
    assert code == 0
    out = capsys.readouterr().out
    (task_id,) = server.tasks
    assert f"task     {task_id}" in out
    assert "status   pending" in out
    (sent,) = server.seen("POST", r"/v1/joblib/rooms/room1/tasks/.*")
    assert sent.body == {"payload": {"name": "Ada"}, "priority": 3}


def test_submit_wait_follows_changes_until_the_result(made, server, capsys):
    register_greet(server)
    states = iter(
        [
            {"status": "running", "progress": 0.5, "message": "half"},
            {"status": "completed", "result": {"greeting": "Hello, Ada!"}},
        ]
    )
    server.on_get_task = lambda task: task.update(next(states))
    assert cli.main(["submit", GREET, "--room", "room1", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "... running 50% half" in out
    assert "status   completed" in out
    assert 'result   {"greeting": "Hello, Ada!"}' in out


def test_task_wait_on_failed_task_exits_1(made, server, capsys):
    register_greet(server)
    task_id = server.add_task(GREET, {})
    server.tasks[task_id].update(status="failed", error="boom")
    assert cli.main(["task", task_id, "--wait", "5"]) == 1
    assert "error    boom" in capsys.readouterr().out


def test_server_problem_exits_1_with_title_and_detail(made, server, capsys):
    assert cli.main(["task", "00000000-0000-0000-0000-00000000000f"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Not Found (404)")
    assert cli.main(["submit", "r:modifiers:Missing", "--room", "r"]) == 1
    assert "no job r:modifiers:Missing" in capsys.readouterr().err


def test_tasks_and_cancel(made, server, capsys):
    register_greet(server)
    task_id = server.add_task(GREET, {})
    assert cli.main(["tasks", "--room", "room1", "--status", "pending"]) == 0
    assert task_id in capsys.readouterr().out
    assert cli.main(["--json", "cancel", task_id]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"


def test_login_prints_a_token(made, server, capsys):
    code = cli.main(["login", "--email", "x@y.z", "--password", "pw", "--register"])
    assert code == 0
    assert capsys.readouterr().out.strip() == "token-x@y.z"
    assert made[-1]["register"] is True
    assert cli.main(["login", "--email", "x@y.z", "--password", "wrong"]) == 1


def test_worker_registers_then_serves(made, server, ext_file, monkeypatch, capsys):
    served = {}

    def fake_serve(self, **options):
        served.update(options)
        served["worker_id"] = self.worker_id

    monkeypatch.setattr(JobManager, "serve", fake_serve)
    code = cli.main(["worker", f"{ext_file}:Hello", "--room", "demo", "--concurrency", "2"])
    assert code == 0
    assert "registered demo:modifiers:Hello" in capsys.readouterr().out
    assert served["concurrency"] == 2
    assert served["worker_id"] is not None
    assert server.workers == {}


def test_worker_runs_tasks_until_stopped(made, server, ext_file, monkeypatch, until):
    def serve_until_done(self, **options):
        task_id = server.add_task("demo:modifiers:Hello", {"who": "Bo"})
        self.start(**{**options, "heartbeat_interval": 0.01, "poll_interval": 0.01})
        until(lambda: server.tasks[task_id]["status"] == "completed")
        self.stop(timeout=5)

    monkeypatch.setattr(JobManager, "serve", serve_until_done)
    assert cli.main(["worker", str(ext_file), "--room", "demo"]) == 0
    (task,) = server.tasks.values()
    assert task["result"] == {"hi": "Bo"}
    assert server.workers == {}


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ not present")
def test_example_extension_loads_and_runs():
    from zndraw_joblib_client._loading import load_extensions

    (greet,) = load_extensions(f"{EXAMPLE}:Greet")
    assert greet.job_full_name("demo") == "demo:modifiers:Greet"
    assert greet(name="Ada").run() == {"greeting": "Hello, Ada!"}


def test_jobs_show_counts_live_workers(made, server, capsys):
    register_greet(server)
    server.jobs[GREET].update(workers=[str(uuid.uuid4()), str(uuid.uuid4())], live_workers=1)
    assert cli.main(["jobs", "--room", "room1", "show", GREET]) == 0
    assert "workers  2 (1 live)" in capsys.readouterr().out
