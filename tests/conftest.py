"""Contract-test fixtures: the reference server started with uvicorn in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from zndraw_joblib_server.testing import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TEST_SECRET,
    database_url_for,
    postgres_skip_message,
    reset_postgres,
)

SECRET = TEST_SECRET
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url(backend: str, tmp_path: Path) -> str:
    """A fresh database of ``backend`` (skips PostgreSQL when it is not configured).

    Synchronous (a server process is started on it next): PostgreSQL is wiped in an event
    loop of its own.
    """
    url = database_url_for(backend, tmp_path, filename="server.db")
    if url is None:
        pytest.skip(postgres_skip_message())
    if backend == "postgres":
        asyncio.run(reset_postgres(url))
    return url


@dataclass
class LiveServer:
    """A reference server process serving on 127.0.0.1."""

    database_url: str
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The server's environment."""
        env = dict(os.environ)
        env.update(
            {
                "ZNDRAW_JOBLIB_DATABASE_URL": self.database_url,
                "ZNDRAW_AUTH_SECRET_KEY": SECRET,
                "ZNDRAW_AUTH_DEFAULT_ADMIN_EMAIL": ADMIN_EMAIL,
                "ZNDRAW_AUTH_DEFAULT_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": "0.5",
                # the tests log in as many machines would, all from 127.0.0.1
                "ZNDRAW_JOBLIB_LOGIN_RATE_LIMIT": "10000/minute",
                "ZNDRAW_JOBLIB_REGISTER_RATE_LIMIT": "10000/minute",
                # no demo @internal job: tests count the jobs and workers they make
                "ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS": "[]",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the server and wait until it answers ``/health``."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zndraw_joblib_server.cli",
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # Generous: a busy 2-core machine has taken over 30 s to import and check everything.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGKILL to simulate a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def token(self, email: str, password: str = "password123") -> str:
        """Register ``email`` (if new) and return a bearer token for it."""
        httpx.post(
            f"{self.url}/auth/register", json={"email": email, "password": password}, timeout=10
        )
        resp = httpx.post(
            f"{self.url}/auth/jwt/login",
            data={"username": email, "password": password},
            timeout=10,
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    def admin_token(self) -> str:
        """A token of the configured superuser."""
        return self.token(ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend (contract tests run on both)."""
    return str(request.param)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``server_factory(database_url, extra_env)`` starts another server; all are stopped at
    the end."""
    started: list[LiveServer] = []

    def factory(url: str, extra_env: dict[str, str] | None = None) -> LiveServer:
        live = LiveServer(url, tmp_path / f"server{len(started)}.log", extra_env=extra_env or {})
        started.append(live)
        live.start()
        return live

    yield factory
    for live in started:
        live.stop()


@pytest.fixture
def postgres_url(tmp_path: Path) -> str:
    """A fresh PostgreSQL database (skips, or fails in CI, when none is configured)."""
    return database_url("postgres", tmp_path)


@pytest.fixture
def server(backend: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A running reference server on a fresh database."""
    live = LiveServer(database_url(backend, tmp_path), tmp_path / "server.log")
    live.start()
    try:
        yield live
    finally:
        live.stop()


# -- added for the SDK contract tests (test_sdk_*.py) ----------------------------------------

DRIVERS = Path(__file__).resolve().parent / "drivers"
SHORT_LEASE_ENV = {
    "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3",
    "ZNDRAW_JOBLIB_LEASE_SECONDS": "3",
    "ZNDRAW_JOBLIB_RETRY_BACKOFF_SECONDS": "0.2",
}


@pytest.fixture
def short_lease_server(backend: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A running reference server whose workers time out and leases expire after 3 s."""
    live = LiveServer(
        database_url(backend, tmp_path), tmp_path / "server.log", extra_env=dict(SHORT_LEASE_ENV)
    )
    live.start()
    try:
        yield live
    finally:
        live.stop()


@dataclass
class WorkerProcess:
    """A worker started by a contract test in its own Python process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: Path | None = None

    def log(self) -> str:
        """The tail of the process's output."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 60) -> str:
        """Wait until the worker registered its jobs; return its worker id."""
        assert self.ready_path is not None, "started without a ready file"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                return self.ready_path.read_text().strip()
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the process to end; return its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"worker still running after {timeout}s:\n{self.log()}") from exc


class WorkerFactory:
    """Starts worker processes (``sdk_worker.py`` or the ``zndraw-joblib worker`` command)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.markers = tmp_path / "markers"
        self.markers.mkdir(exist_ok=True)
        self.started: list[WorkerProcess] = []

    def _spawn(self, argv: list[str], token: str, ready: Path | None) -> WorkerProcess:
        n = len(self.started)
        log_path = self.tmp_path / f"worker{n}.log"
        env = dict(os.environ)
        env.update({"ZNDRAW_JOBLIB_TOKEN": token, "JOBLIB_TEST_MARKERS": str(self.markers)})
        with log_path.open("ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, log_path, ready)
        self.started.append(worker)
        return worker

    def sdk(
        self,
        url: str,
        token: str,
        room: str,
        extensions: str,
        *,
        heartbeat: float = 0.5,
        claim_wait: float = 2.0,
        concurrency: int = 1,
    ) -> WorkerProcess:
        """Start ``drivers/sdk_worker.py`` serving ``extensions`` (comma separated) in ``room``."""
        ready = self.tmp_path / f"ready{len(self.started)}"
        argv = [
            sys.executable,
            str(DRIVERS / "sdk_worker.py"),
            url,
            room,
            extensions,
            "--ready",
            str(ready),
            "--heartbeat",
            str(heartbeat),
            "--claim-wait",
            str(claim_wait),
            "--concurrency",
            str(concurrency),
        ]
        return self._spawn(argv, token, ready)

    def cli(self, url: str, token: str, *args: str) -> WorkerProcess:
        """Start ``python -m zndraw_joblib_client.cli worker ARGS --url URL``."""
        argv = [sys.executable, "-m", "zndraw_joblib_client.cli", "worker", *args, "--url", url]
        return self._spawn(argv, token, None)

    def executions(self, event: str = "done") -> list[tuple[str, int, int]]:
        """``(task_id, attempt, pid)`` of every run that reached ``event`` (start or done)."""
        runs = []
        for path in self.markers.glob(f"*.{event}"):
            task_id, attempt, pid, _ = path.name.split(".")
            runs.append((task_id, int(attempt), int(pid)))
        return runs

    def stop_all(self) -> None:
        """Kill what is still running."""
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(10)


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts worker processes for a test; kills those still running at the end."""
    factory = WorkerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
