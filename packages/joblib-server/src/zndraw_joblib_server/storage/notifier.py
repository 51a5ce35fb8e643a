"""In-process wake-ups for long-polling requests.

Waiters subscribe to string keys (``task:{id}``, ``job:{id}``) *before* they read the
database, so a change committed between their read and their wait still wakes them.

A waiting claim may also subscribe with an *offer* (what a submit needs to claim for it;
opaque here): a submit in the same process then reserves it (:meth:`Notifier.reserve`),
claims the new task for it inside the submit's own transaction, and hands the claimed tasks
over after commit (:meth:`Subscription.settle`), so the waiting claim answers without a
transaction of its own.

Across processes on PostgreSQL, :class:`PostgresPubSub` carries wake-ups through
LISTEN/NOTIFY. Each server process keeps one dedicated connection that LISTENs on one
channel, and one that publishes. After a write transaction commits, its wake-up keys are
queued; the publisher sends everything queued meanwhile with ``pg_notify`` in one
statement, off the request's path (a request no longer pays a round trip for its
notification, and under load the keys of many requests travel together). Every process
relays what it hears to its local :class:`Notifier`, except what its own publisher sent
(those keys woke the local waiters when they were queued). When a connection drops it is
re-opened with backoff; waiting claims re-check the database periodically, so a
notification lost (say, with a process that died just after committing) only delays work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from zndraw_joblib_core import ServiceUnavailable

__all__ = ["CHANNEL", "Notifier", "PostgresPubSub", "Subscription"]


class Subscription:
    """One waiter's interest in a set of keys (and, for a claim, its hand-off state)."""

    def __init__(self, keys: frozenset[str], offer: object | None = None) -> None:
        self.keys = keys
        self.offer = offer
        self.parked = False
        """True only while the waiter sleeps in :meth:`wait` (it may then be reserved)."""
        self.reserved = False
        """A submit is claiming for this waiter; :meth:`settle` ends the reservation."""
        self.handed: list[Any] = []
        """What a settled reservation claimed for the waiter (empty: nothing)."""
        self._event = asyncio.Event()
        self._settled = asyncio.Event()
        self.closing = False
        """The server is shutting down: :meth:`wait` refuses with 503."""

    def _fire(self) -> None:
        self._event.set()

    @property
    def fired(self) -> bool:
        """Whether a wake-up arrived since the last :meth:`wait` returned."""
        return self._event.is_set()

    async def wait(self, seconds: float, *, consume: bool = True) -> bool:
        """Wait until one of the keys is notified or ``seconds`` pass.

        Args:
            seconds: The longest wait.
            consume: Re-arm at once. With False the subscription stays *fired* (busy: a
                wake-one notification passes it by for another waiter) until :meth:`clear`.

        Returns:
            True when woken by a notification, False on timeout.

        Raises:
            ServiceUnavailable: The server is shutting down (and no submit is handing this
                waiter tasks): the request answers 503 with ``Retry-After`` at once.
        """
        self._refuse_when_closing()
        if seconds > 0 and not self._event.is_set():
            self.parked = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), seconds)
            finally:
                self.parked = False
        self._refuse_when_closing()
        fired = self._event.is_set()
        if consume:
            self.clear()
        return fired

    def _refuse_when_closing(self) -> None:
        if self.closing and not self.reserved and not self.handed:
            raise ServiceUnavailable(
                "The server is shutting down; retry in a moment.", headers={"Retry-After": "1"}
            )

    def clear(self) -> None:
        """Re-arm: the next notification of one of the keys may wake this waiter."""
        self._event.clear()

    def settle(self, tasks: list[Any]) -> None:
        """End a reservation: hand ``tasks`` over (empty: nothing was claimed) and wake."""
        self.handed = list(tasks)
        self.reserved = False
        self._settled.set()
        self._fire()

    async def take_handed(self) -> list[Any]:
        """What a submit claimed for this waiter; waits while a reservation is open."""
        if self.reserved:
            await self._settled.wait()
        handed, self.handed = self.handed, []
        self._settled.clear()
        return handed


class Notifier:
    """Keyed wake-ups within one process (one event loop)."""

    _MAX_TRACKED = 50_000
    UNTRACKED_PREFIXES = ("task:",)
    """Keys whose history :meth:`notified_since` never needs: their waiters (task reads)
    subscribe before they read, so there is one key per task and nothing to remember."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[Subscription]] = {}
        self.seq = 0
        """Counts notifications; read it before a check to ask :meth:`notified_since` later."""
        self._last: dict[str, int] = {}
        self._floor = 0
        self.closing = False
        """Set by :meth:`close`: every wait, current and future, answers 503."""

    def close(self) -> int:
        """Shut down: wake every waiter so it answers 503 (see :meth:`Subscription.wait`).

        Returns:
            How many waiters were woken.
        """
        self.closing = True
        subs = {id(s): s for subs in self._waiters.values() for s in subs}
        for sub in subs.values():
            sub.closing = True
            sub._fire()
        return len(subs)

    def notified_since(self, keys: Iterable[str], seq: int) -> bool:
        """Whether any of ``keys`` was notified after the notification counter was ``seq``.

        (Conservatively True when the history that old was pruned; keys under
        :attr:`UNTRACKED_PREFIXES` are not remembered.)
        """
        if seq < self._floor:
            return True
        return any(self._last.get(key, -1) > seq for key in keys)

    @property
    def waiting(self) -> int:
        """How many subscriptions are registered (for tests and metrics)."""
        return len({id(s) for subs in self._waiters.values() for s in subs})

    def keys(self) -> list[str]:
        """The keys that have subscribers now."""
        return list(self._waiters)

    def reserve(self, key: str) -> Subscription | None:
        """Reserve the longest-waiting claim on ``key`` that offers hand-offs, if any.

        Only a waiter asleep in :meth:`Subscription.wait` and not already woken qualifies.
        The caller must :meth:`Subscription.settle` it whatever happens.
        """
        for sub in self._waiters.get(key, ()):
            if sub.offer is not None and sub.parked and not sub.reserved and not sub.fired:
                sub.reserved = True
                return sub
        return None

    @asynccontextmanager
    async def subscribe(
        self, keys: Iterable[str], offer: object | None = None
    ) -> AsyncIterator[Subscription]:
        """Register interest in ``keys`` for the duration of the block.

        Args:
            keys: The keys to wake on.
            offer: For a waiting claim: lets a submit claim for it (see :meth:`reserve`).
        """
        sub = Subscription(frozenset(keys), offer)
        sub.closing = self.closing
        for key in sub.keys:
            self._waiters.setdefault(key, []).append(sub)
        try:
            yield sub
        finally:
            for key in sub.keys:  # each key's list holds ``sub`` (only this removes it)
                subs = self._waiters[key]
                subs.remove(sub)
                if not subs:
                    del self._waiters[key]

    def notify(self, key: str, limit: int | None = None) -> int:
        """Wake the subscribers of ``key``.

        Args:
            key: The key that changed.
            limit: Wake at most this many subscribers that are not already awake (oldest
                first); None wakes all of them.

        Returns:
            How many subscribers were woken.
        """
        self.seq += 1
        if not key.startswith(self.UNTRACKED_PREFIXES):
            if len(self._last) >= self._MAX_TRACKED:
                self._last.clear()
                self._floor = self.seq
            self._last[key] = self.seq
        woken = 0
        for sub in list(self._waiters.get(key, ())):
            if limit is not None and woken >= limit:
                break
            if limit is not None and (sub.fired or sub.reserved):
                continue
            sub._fire()
            woken += 1
        return woken


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
        self._publisher_pid: int | None = None

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
        self._publisher_pid = driver.get_server_pid()
        while True:
            await self._queued.wait()
            self._queued.clear()
            wake, self._pending = self._pending, {}
            # In as few notifications as fit PostgreSQL's 8000-byte payloads.
            lines = (f"{key} {'*' if n is None else n}" for key, n in wake.items())
            try:
                payloads = list(_payloads(lines))
                if payloads:
                    calls = ", ".join(f"pg_notify($1, ${i + 2})" for i in range(len(payloads)))
                    await driver.execute(f"SELECT {calls}", CHANNEL, *payloads)
            finally:
                if not self._pending:
                    self._idle.set()

    def _on_notify(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid == self._publisher_pid:
            # Our own keys, back from PostgreSQL: they woke this process's waiters when
            # queued; waking them again would send idle claims to the database for nothing.
            return
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
            except Exception as exc:  # not a cancellation (a BaseException): it ends the loop
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
