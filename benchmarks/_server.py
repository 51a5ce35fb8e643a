"""Start, watch and stop the reference server in its own process; prepare its database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = [
    "Server",
    "database_kind",
    "database_version",
    "free_port",
    "reset_postgres",
    "run_sql",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    return "postgresql" if url.startswith("postgresql") else "sqlite"


async def _run_sql(url: str, statements: list[str]) -> list[object]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        out: list[object] = []
        async with engine.begin() as conn:
            for stmt in statements:
                result = await conn.execute(text(stmt))
                out.append(result.scalar() if result.returns_rows else None)
        return out
    finally:
        await engine.dispose()


def run_sql(url: str, *statements: str) -> list[object]:
    """Run statements in one transaction; return the first column of each one's first row."""
    return asyncio.run(_run_sql(url, list(statements)))


def reset_postgres(url: str) -> None:
    """Wipe a PostgreSQL benchmark database (every table of the public schema), then settle.

    After a scenario that wrote a lot (the claim-latency preload writes 1.1M rows), the
    checkpoint that follows would write those pages out during the next scenario: its
    commits then wait for the disk, and the latencies measured would be the disk's. A
    ``CHECKPOINT`` now does that work before anything is measured; it needs superuser (or
    ``pg_checkpoint``) rights and is skipped without them.
    """
    run_sql(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    asyncio.run(_checkpoint(url))


async def _checkpoint(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass
    finally:
        await conn.close()


def database_version(url: str) -> str:
    """The database engine's version string."""
    if database_kind(url) == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    return str(run_sql(url, "SHOW server_version")[0])


class Server:
    """The reference server (``zndraw-joblib-server serve``) in a child process.

    Args:
        database_url: Database the server uses (it creates its tables itself).
        workdir: Directory for the log file (and the working directory of the process).
        env: Extra environment variables (``ZNDRAW_JOBLIB_*``, ``ZNDRAW_AUTH_*``).
    """

    def __init__(self, database_url: str, workdir: Path, env: dict[str, str] | None = None):
        self.database_url = database_url
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id of the server (uvicorn runs in this very process)."""
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 60.0) -> Server:
        """Start the process and wait until ``GET /health`` answers 200."""
        env = {**os.environ, **self._env}
        cmd = [
            sys.executable,
            "-m",
            "zndraw_joblib_server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            "--log-level",
            "warning",
            "--no-access-log",
            "--graceful-timeout",
            "1",
        ]
        with self.log_path.open("wb") as log:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the server.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def rss_kib(self) -> int:
        """Resident set size of the server process (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS not found")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
