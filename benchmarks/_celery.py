"""Celery 5 on the local Redis for ``bench.py --compare celery``: its environment and runs.

Celery is not a dependency of the project: the benchmark installs it with uv into a virtual
environment of its own in a cache directory (once), and runs the worker and the producers
with that environment's Python (``_celery_side.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["CeleryLoad", "celery_python", "redis_pid_names", "redis_up"]

HERE = Path(__file__).resolve().parent
REDIS = ("127.0.0.1", 6379)
DB = 13
URL = f"redis://{REDIS[0]}:{REDIS[1]}/{DB}"
SPEC = "celery[redis]>=5.3,<6"
redis_pid_names = ("redis-server",)


def redis_up() -> bool:
    """Whether a Redis answers on 127.0.0.1:6379."""
    try:
        return _Redis().cmd("PING") == "PONG"
    except OSError:
        return False


def celery_python(cache: Path | None = None) -> Path:
    """The Python of the benchmark's Celery environment, created with uv on first use."""
    root = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = root / "zndraw-joblib-bench" / "celery"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import celery, redis"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run(["uv", "venv", "-q", str(venv)], check=True)
    subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), SPEC], check=True)
    return python


class _Redis:
    """Just enough of the Redis protocol for counting (no client library in this env)."""

    def __init__(self) -> None:
        self.sock = socket.create_connection(REDIS, timeout=5)
        self.file = self.sock.makefile("rb")
        self.cmd("SELECT", str(DB))

    def cmd(self, *args: str) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            out.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
        self.sock.sendall(b"".join(out))
        line = self.file.readline().decode().rstrip("\r\n")
        kind, rest = line[:1], line[1:]
        if kind == "-":
            raise OSError(rest)
        return int(rest) if kind == ":" else rest

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class CeleryLoad:
    """The comparison's workload through Celery: ``celery worker -c 8`` (prefork, acks_late).

    Args:
        python: The Celery environment's Python.
        workdir: Where the worker's log goes.
        slots: Worker concurrency.
    """

    name = "celery"

    def __init__(self, python: Path, workdir: Path, slots: int = 8) -> None:
        self.python = python
        self.workdir = workdir
        self.slots = slots
        self.worker: subprocess.Popen[bytes] | None = None
        self.redis = _Redis()
        self.env = {**os.environ, "PYTHONPATH": str(HERE), "BENCH_REDIS_URL": URL}
        self.n = 0

    def reset(self, n: int) -> None:
        """Empty the Redis database the runs use."""
        self.n = n
        self.redis.cmd("FLUSHDB")

    def producers(self, n: int, count: int) -> list[subprocess.Popen[bytes]]:
        """``count`` producer processes sending ``n`` tasks in all, ready and waiting."""
        procs = []
        shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
        for share in shares:
            proc = subprocess.Popen(
                [str(self.python), str(HERE / "_celery_side.py"), "produce", str(share)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a Celery producer did not start")
        return procs

    @staticmethod
    def release(procs: list[subprocess.Popen[bytes]]) -> None:
        """Let the producers send."""
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()

    @staticmethod
    def collect(procs: list[subprocess.Popen[bytes]]) -> float:
        """Wait for the producers; their CPU seconds while sending."""
        cpu = 0.0
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            cpu += json.loads(out.decode().strip().splitlines()[-1])["cpu_s"]
        return cpu

    def start_workers(self) -> list[int]:
        """Start ``celery worker``; the pid of its main process."""
        log = open(self.workdir / "celery-worker.log", "wb")  # noqa: SIM115 - the worker's
        self.worker = subprocess.Popen(
            [
                str(self.python),
                "-m",
                "celery",
                "-A",
                "_celery_side",
                "worker",
                "-c",
                str(self.slots),
                "-P",
                "prefork",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=HERE,
        )
        return [self.worker.pid]

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the worker says it is ready."""
        deadline = time.monotonic() + timeout
        path = self.workdir / "celery-worker.log"
        while b"ready." not in path.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError("celery worker did not get ready:\n" + path.read_text()[-2000:])
            time.sleep(0.05)

    def remaining(self) -> int:
        """Tasks not yet acknowledged (queued, or taken and not finished)."""
        return int(self.redis.cmd("LLEN", "celery")) + int(self.redis.cmd("HLEN", "unacked"))

    def stop_workers(self) -> None:
        """Stop the worker (warm shutdown)."""
        if self.worker is None:
            return
        self.worker.terminate()
        try:
            self.worker.wait(30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()
        self.worker = None

    def verify(self) -> dict[str, Any]:
        """How many results were stored (one per task that ran)."""
        out = subprocess.run(
            [str(self.python), str(HERE / "_celery_side.py"), "done"],
            capture_output=True,
            env=self.env,
            check=True,
        )
        found = json.loads(out.stdout)
        return {"ok": found["count"] == self.n, "results": found["count"]}

    def close(self) -> None:
        """Stop everything."""
        self.stop_workers()
        self.redis.close()
