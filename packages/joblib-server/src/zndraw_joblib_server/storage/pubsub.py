"""Cross-process wake-ups on PostgreSQL through LISTEN/NOTIFY.

Each server process keeps one dedicated connection that LISTENs on one channel. A write
transaction sends its wake-up keys with ``pg_notify`` (delivered at commit); every process
relays them to its local :class:`Notifier`. When the connection drops it is re-opened with
backoff; waiting claims re-check the database periodically, so a lost notification only
delays work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

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
    """LISTEN on a dedicated connection and relay notifications to a :class:`Notifier`."""

    def __init__(self, engine: Any, notifier: Notifier) -> None:
        self._engine: AsyncEngine = engine
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
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
            self._task = asyncio.create_task(self._run(), name="zndraw-joblib-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5)

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(self, session: AsyncSession, wake: dict[str, int | None]) -> None:
        """Queue wake-up keys on the transaction (sent when it commits).

        Keys go in as few notifications as fit PostgreSQL's payload limit (8000 bytes).
        """
        for payload in _payloads(f"{key} {'*' if n is None else n}" for key, n in wake.items()):
            await session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": payload},
            )

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for line in payload.split(_SEP):
            key, _, count = line.rpartition(" ")
            if key:
                self._notifier.notify(key, None if count == "*" else int(count))

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self._engine.connect() as conn:
                    try:
                        await self._listen(conn)
                    except Exception:
                        # Lost: keep the dead connection out of the pool for the requests.
                        with contextlib.suppress(Exception):
                            await conn.invalidate()
                        raise
                    delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self._connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen(self, conn: AsyncConnection) -> None:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if driver is None:  # pragma: no cover - asyncpg always has one
            raise RuntimeError("no driver connection")
        await driver.add_listener(CHANNEL, self._on_notify)
        self.generation += 1
        self.backend_pid = driver.get_server_pid()
        self._connected.set()
        # Anything missed while disconnected: wake every local waiter so it re-checks.
        for key in list(self._notifier.keys()):
            self._notifier.notify(key)
        lost = asyncio.Event()
        driver.add_termination_listener(lambda _conn: lost.set())
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), 5)
                if lost.is_set():
                    raise ConnectionError("the LISTEN connection was closed")
                await driver.execute("SELECT 1")  # notices a silently dead connection
        finally:
            with contextlib.suppress(Exception):
                await driver.remove_listener(CHANNEL, self._on_notify)
