"""What a host application needs from the client SDK, against the reference server over HTTP.

Per-registration ``run`` keyword arguments, extra headers on every request (a host's lock
token) with a ready ``httpx.Client``, and a worker that outlives a server outage for a while,
then gives up with a distinct exit code; errors retrying cannot fix stop it at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port  # type: ignore[import-not-found]

from zndraw_joblib_client import (
    ClaimedTask,
    Extension,
    JobManager,
    JobNotFound,
    RetryPolicy,
    ServerUnreachable,
    TaskStatus,
)
from zndraw_joblib_client.cli import EXIT_REFUSED, EXIT_UNREACHABLE

WAIT = 60.0
EXTENSIONS = Path(__file__).resolve().parent / "drivers" / "extensions.py"
MODEL = object()  # stands in for a loaded model: passed by identity, never serialised


class Predict(Extension):
    """Reports which ``run`` keyword arguments it was given."""

    category = "analysis"
    x: int = 0

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        return {
            "model_is_the_object": kwargs.get("model") is MODEL,
            "scale": kwargs.get("scale"),
            "keys": sorted(kwargs),
        }


class Plain(Extension):
    """Registered without ``run_kwargs``."""

    category = "analysis"

    def run(self, task: ClaimedTask[Any] | None = None, **kwargs: Any) -> Any:
        return {"keys": sorted(kwargs)}


def _result(manager: JobManager, job: str, room: str) -> Any:
    task = manager.submit(job, room, payload={})
    done = manager.wait(task.id, timeout=WAIT)
    assert done.status is TaskStatus.COMPLETED, done.error
    return done.result


def test_register_run_kwargs_reach_run_and_survive_worker_recovery(server: Any) -> None:
    token = server.token("host@example.com")
    with JobManager(server.url, token=token) as manager:
        manager.register(Predict, room="lab", run_kwargs={"model": MODEL, "scale": 3})
        manager.register(Plain, room="lab")
        manager.start(
            run_kwargs={"scale": 1, "device": "cpu"}, claim_wait=1, install_signal_handlers=False
        )
        first = _result(manager, "lab:analysis:Predict", "lab")
        # the job's own run_kwargs win over the loop's, and objects pass by identity
        assert first == {
            "model_is_the_object": True,
            "scale": 3,
            "keys": ["device", "model", "scale"],
        }
        assert _result(manager, "lab:analysis:Plain", "lab") == {"keys": ["device", "scale"]}

        # the server loses the worker: the replacement registers the jobs with their kwargs
        lost = manager.worker_id
        gone = httpx.delete(
            f"{server.url}/v1/joblib/workers/{lost}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert gone.status_code == 204, gone.text
        deadline = time.monotonic() + WAIT
        while manager.worker_id in (None, lost) or not _served(server, token, "Predict"):
            # the new worker's id shows before it has registered the jobs again
            assert time.monotonic() < deadline, "the worker was never replaced"
            time.sleep(0.1)
        assert _result(manager, "lab:analysis:Predict", "lab")["model_is_the_object"] is True


def _served(server: Any, token: str, name: str) -> bool:
    """Whether room lab lists the job ``name`` with a worker."""
    jobs = httpx.get(
        f"{server.url}/v1/joblib/rooms/lab/jobs", headers={"Authorization": f"Bearer {token}"}
    ).json()["items"]
    return any(job["name"] == name and job.get("workers") for job in jobs)


def test_execute_callable_sees_the_registered_run_kwargs(server: Any) -> None:
    def execute(task: ClaimedTask[Any]) -> Any:
        return {"keys": sorted(task.run_kwargs), "model": task.run_kwargs["model"] is MODEL}

    with JobManager(server.url, token=server.token("exec@example.com")) as manager:
        manager.register(Predict, room="lab", run_kwargs={"model": MODEL})
        manager.start(execute=execute, claim_wait=1, install_signal_handlers=False)
        assert _result(manager, "lab:analysis:Predict", "lab") == {
            "keys": ["model"],
            "model": True,
        }


def test_headers_hook_is_asked_before_every_request_of_a_ready_client(server: Any) -> None:
    token = server.token("lock@example.com")
    sent: list[httpx.Request] = []
    counter = itertools.count(1)
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token}"},  # the host's authenticated client
        event_hooks={"request": [sent.append]},
    )
    hook = lambda: {"Lock-Token": str(next(counter))}  # noqa: E731 - the host's callable
    with client, JobManager(client=client, headers=hook) as m:
        m.register(Plain, room="lab")
        task = m.submit("lab:analysis:Plain", "lab", payload={})
        assert m.get_task(task.id).id == task.id
        with pytest.raises(JobNotFound):  # errors still map to the problem classes
            m.submit("lab:analysis:Missing", "lab", payload={})
    joblib = [r for r in sent if r.url.path.startswith("/v1/joblib/")]
    assert len(joblib) >= 5  # worker, job, submit, read, refused submit, worker delete
    tokens = [r.headers.get("Lock-Token") for r in joblib]
    assert None not in tokens
    assert len(set(tokens)) == len(tokens), tokens  # a fresh value per request
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in joblib)


def test_headers_mapping_goes_with_every_request(server: Any) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(base_url=server.url, event_hooks={"request": [sent.append]})
    token = server.token("fixed@example.com")
    with client, JobManager(client=client, token=token, headers={"X-Host": "zndraw"}) as m:
        assert m.list_jobs("lab").total == 0
    assert [r.headers.get("X-Host") for r in sent] == ["zndraw"]


# -- outages and refusals ---------------------------------------------------------------------


def test_backoff_has_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    for failure in (1, 2, 3, 6, 7, 100, 10_000):
        ceiling = min(30.0, 0.5 * 2 ** min(failure - 1, 64))
        draws = [policy.backoff(failure) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert min(draws) < ceiling / 2  # full jitter: anywhere from 0, not a narrow band


def test_serve_gives_up_after_max_unreachable_seconds_with_a_countdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = RetryPolicy(attempts=1, base_delay=0.05, max_delay=0.2)
    caplog.set_level(logging.INFO, logger="zndraw_joblib_client")
    manager = JobManager(nowhere, token="t", retry=policy)
    with manager, pytest.raises(ServerUnreachable) as raised:
        manager.serve(max_unreachable_seconds=1.0, install_signal_handlers=False)
    assert raised.value.down_for >= 1.0
    countdown = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert countdown, caplog.text
    assert all("server unreachable (" in m and "(down for " in m for m in countdown)
    assert any("worker stopped: server unreachable for" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)  # no tracebacks


def _cli(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zndraw_joblib_client.cli", "worker", *args, "--url", url],
        env={**os.environ, "ZNDRAW_JOBLIB_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def _wait_served(url: str, token: str, proc: Any) -> None:
    with JobManager(url, token=token) as client:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert proc.process.poll() is None, proc.log()
            try:
                if client.get_job("lab", "lab:modifiers:Double").workers:
                    return
            except JobNotFound:
                pass
            time.sleep(0.1)
    raise AssertionError(f"the worker never served its job:\n{proc.log()}")


def test_cli_worker_exits_75_once_the_server_stayed_away(server: Any, worker_procs: Any) -> None:
    token = server.token("outage@example.com")
    proc = worker_procs.cli(
        server.url,
        token,
        f"{EXTENSIONS}:Double",
        "--room",
        "lab",
        "--claim-wait",
        "1",
        "--max-unreachable-seconds",
        "3",
    )
    _wait_served(server.url, token, proc)
    server.stop(signal.SIGKILL)
    assert proc.wait_exit(WAIT) == EXIT_UNREACHABLE, proc.log()
    log = proc.log()
    assert "Traceback" not in log, log
    assert "server unreachable (" in log, log
    assert "(down for " in log, log
    assert "worker stopped: server unreachable for" in log, log


def test_cli_worker_rides_out_a_short_outage_without_the_limit(
    server: Any, worker_procs: Any
) -> None:
    token = server.token("patient@example.com")
    proc = worker_procs.cli(
        server.url, token, f"{EXTENSIONS}:Double", "--room", "lab", "--claim-wait", "1"
    )
    _wait_served(server.url, token, proc)
    server.stop(signal.SIGKILL)
    time.sleep(4)
    server.start()  # same port, same database
    with JobManager(server.url, token=token) as client:
        task = client.submit("lab:modifiers:Double", "lab", payload={"value": 4})
        done = client.wait(task.id, timeout=WAIT)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert proc.process.poll() is None
    log = proc.log()
    assert "Traceback" not in log, log
    assert "(down for " in log, log
    assert "server reachable again" in log, log


def test_cli_worker_exits_75_when_the_server_is_not_there_at_start() -> None:
    done = _cli(f"http://127.0.0.1:{free_port()}", "t", f"{EXTENSIONS}:Double")
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: cannot reach the server" in done.stderr


def test_cli_worker_exits_77_with_one_line_for_a_refused_token(server: Any) -> None:
    done = _cli(server.url, "not-a-token", f"{EXTENSIONS}:Double", "--room", "lab")
    assert done.returncode == EXIT_REFUSED, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_cli_worker_exits_77_when_its_worker_endpoints_are_missing(server: Any) -> None:
    token = server.token("lost@example.com")
    done = _cli(f"{server.url}/wrong-prefix", token, f"{EXTENSIONS}:Double", "--room", "lab")
    assert done.returncode == EXIT_REFUSED, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "404" in lines[0], lines
    assert "--url" in lines[0], lines


def test_cli_worker_stops_at_once_when_its_user_is_deactivated(
    server: Any, worker_procs: Any
) -> None:
    token = server.token("fired@example.com")
    proc = worker_procs.cli(
        server.url, token, f"{EXTENSIONS}:Double", "--room", "lab", "--claim-wait", "1"
    )
    _wait_served(server.url, token, proc)
    me = httpx.get(f"{server.url}/users/me", headers={"Authorization": f"Bearer {token}"})
    admin = {"Authorization": f"Bearer {server.admin_token()}"}
    off = httpx.patch(
        f"{server.url}/users/{me.json()['id']}", json={"is_active": False}, headers=admin
    )
    assert off.status_code == 200, off.text
    assert proc.wait_exit(WAIT) == EXIT_REFUSED, proc.log()
    log = proc.log()
    assert "Traceback" not in log, log
    stopped = [line for line in log.splitlines() if "worker stopped:" in line]
    assert len(stopped) == 1, log
    assert "401" in stopped[0], log
