"""What every scenario gets: database choice, sizes, a fresh server."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _api import Api, login
from _server import Server, database_kind, reset_postgres

__all__ = ["Context", "Session"]

_counter = itertools.count(1)


@dataclass
class Session:
    """A running server with a logged-in superuser (dev mode)."""

    server: Server
    token: str
    api: Api

    @property
    def base(self) -> str:
        """Base URL of the server."""
        return self.server.base_url


@dataclass
class Context:
    """Options of this invocation.

    Args:
        database_url: PostgreSQL URL to use (and wipe), or None for a fresh SQLite file per
            server.
        workdir: Temporary directory for SQLite files and server logs.
        quick: Small sizes (smoke test).
        runs: Repetitions per scenario.
        scale: Factor on the task counts of the throughput and memory scenarios.
        shared: Reuse one server for every scenario (``--quick``: saves start-ups).
    """

    database_url: str | None
    workdir: Path
    quick: bool
    runs: int
    scale: float = 1.0
    shared: bool = False
    servers: list[Server] = field(default_factory=list)
    _session: Session | None = None

    def tasks(self, quick: int, full: int) -> int:
        """A task count: ``quick`` with --quick, else ``full`` times ``scale``."""
        return quick if self.quick else max(int(full * self.scale), 100)

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return database_kind(self.database_url) if self.database_url else "sqlite"

    def fresh_database(self) -> str:
        """A new SQLite file URL, or the PostgreSQL URL after wiping that database."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{self.workdir / f'bench-{next(_counter)}.db'}"
        reset_postgres(self.database_url)
        return self.database_url

    def start_server(self, url: str) -> Server:
        """Start one more server on ``url``; it is stopped by :meth:`session`'s exit."""
        server = Server(url, self.workdir)
        self.servers.append(server)
        return server.start()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A fresh database, a server on it and a user; everything stopped on exit.

        With ``shared`` the first session's server stays up for the next scenarios (each
        scenario still uses jobs and rooms of its own); extra servers are stopped.
        """
        keep = len(self.servers)
        try:
            if self._session is None:
                server = self.start_server(self.fresh_database())
                token = login(server.base_url)
                self._session = Session(server, token, Api(server.base_url, token))
                if self.shared:
                    keep = len(self.servers)
            yield self._session
        finally:
            if not self.shared:
                self._close_session()
            while len(self.servers) > keep:
                self.servers.pop().stop()

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.api.close()
            self._session = None

    def stop_all(self) -> None:
        """Stop every server this context started."""
        self._close_session()
        while self.servers:
            self.servers.pop().stop()
