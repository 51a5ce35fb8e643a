"""Cross-process wake-ups on PostgreSQL through LISTEN/NOTIFY.

Each server process keeps one dedicated connection that LISTENs on one channel, and one
that publishes. After a write transaction commits, its wake-up keys are queued; the publisher
sends everything queued meanwhile with ``pg_notify`` in one statement, off the request's path
(a request no longer pays a round trip for its notification, and under load the keys of many
requests travel together). Every process relays what it hears to its local
:class:`Notifier`. When a connection drops it is re-opened with backoff; waiting claims
re-check the database periodically, so a notification lost (say, with a process that died
just after committing) only delays work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from zndraw_joblib_server.storage.notifier import Notifier

__all__ = ["CHANNEL", "PostgresPubSub"]

CHANNEL = "zndraw_joblib"
"""The LISTEN/NOTIFY channel."""

logger = logging.getLogger("zndraw_joblib_server")

_SEP = "\n"
_MAX_PAYLOAD = 7_900
"""Bytes per notification, under PostgreSQL's limit of 8000."""


def _payloads(lines: Iterable[str]) -> Iterator[str]:
    """Join ``lines`` into payloads of at most ``_MAX_PAYLOAD`` bytes."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if chunk and size + length > _MAX_PAYLOAD:
            yield _SEP.join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        yield _SEP.join(chunk)


class PostgresPubSub:
    """LISTEN and NOTIFY on dedicated connections; relay notifications to a :class:`Notifier`."""

    def __init__(self, engine: Any, notifier: Notifier) -> None:
        self._engine: AsyncEngine = engine
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._pending: dict[str, int | None] = {}
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued, nothing being sent
        self._idle.set()
        self._connected = asyncio.Event()
        self.generation = 0
        """How many times the listening connection has been (re)opened."""
        self.backend_pid: int | None = None
        """The PostgreSQL backend process of the listening connection."""

    @property
    def connected(self) -> bool:
        """Whether the listening connection is up."""
        return self._connected.is_set()

    async def start(self) -> None:
        """Start listening (idempotent); waits briefly for the first connection."""
        if self._task is None or self._task.done():
            listen = self._dedicated("LISTEN", self._listen)
            self._task = asyncio.create_task(listen, name="zndraw-joblib-listen")
        if self._publisher is None or self._publisher.done():
            publish = self._dedicated("NOTIFY", self._send_queued)
            self._publisher = asyncio.create_task(publish, name="zndraw-joblib-notify")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5)

    async def stop(self) -> None:
        """Send what is still queued (briefly), stop listening and close the connections."""
        if self._publisher is not None and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 2)
        for task in (self._publisher, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._publisher = self._task = None

    def queue(self, wake: dict[str, int | None]) -> None:
        """Queue wake-up keys of a committed transaction for the other processes.

        Keys queued before the publisher's next statement are merged (counts add up; "all"
        stays all) and sent together.
        """
        pending = self._pending
        for key, count in wake.items():
            known = pending.get(key, 0)
            pending[key] = None if known is None or count is None else known + count
        self._idle.clear()
        self._queued.set()

    async def _send_queued(self, driver: Any) -> None:
        """Send what is queued, whenever something is, until the connection fails."""
        while True:
            await self._queued.wait()
            self._queued.clear()
            wake, self._pending = self._pending, {}
            try:
                await self._send(driver, wake)
            finally:
                if not self._pending:
                    self._idle.set()

    @staticmethod
    async def _send(driver: Any, wake: dict[str, int | None]) -> None:
        """Send ``wake`` in as few notifications as fit PostgreSQL's 8000-byte payloads."""
        lines = (f"{key} {'*' if n is None else n}" for key, n in wake.items())
        payloads = list(_payloads(lines))
        if not payloads:
            return
        calls = ", ".join(f"pg_notify($1, ${i + 2})" for i in range(len(payloads)))
        await driver.execute(f"SELECT {calls}", CHANNEL, *payloads)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for line in payload.split(_SEP):
            key, _, count = line.rpartition(" ")
            if key:
                self._notifier.notify(key, None if count == "*" else int(count))

    async def _dedicated(self, purpose: str, use: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``use`` with the driver connection of a connection of its own, for ever.

        When the connection fails it is invalidated (kept out of the pool the requests use)
        and a new one is opened, after a pause that doubles from 0.1 s up to 5 s while
        connecting keeps failing.
        """
        delay = 0.1
        while True:
            try:
                async with self._engine.connect() as conn:
                    try:
                        raw = await conn.get_raw_connection()
                        driver = raw.driver_connection
                        if driver is None:  # pragma: no cover - asyncpg always has one
                            raise RuntimeError("no driver connection")
                        delay = 0.1
                        await use(driver)
                    except Exception:
                        with contextlib.suppress(Exception):
                            await conn.invalidate()
                        raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("%s connection lost (%s); reconnecting", purpose, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen(self, driver: Any) -> None:
        await driver.add_listener(CHANNEL, self._on_notify)
        try:
            self.generation += 1
            self.backend_pid = driver.get_server_pid()
            self._connected.set()
            # Anything missed while disconnected: wake every local waiter so it re-checks.
            for key in list(self._notifier.keys()):
                self._notifier.notify(key)
            lost = asyncio.Event()
            driver.add_termination_listener(lambda _conn: lost.set())
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), 5)
                if lost.is_set():
                    raise ConnectionError("the LISTEN connection was closed")
                await driver.execute("SELECT 1")  # notices a silently dead connection
        finally:
            self._connected.clear()
            with contextlib.suppress(Exception):
                await driver.remove_listener(CHANNEL, self._on_notify)
