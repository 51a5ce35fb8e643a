"""In-process wake-ups for long-polling requests.

Waiters subscribe to string keys (``task:{id}``, ``job:{id}``) *before* they read the
database, so a change committed between their read and their wait still wakes them.

A waiting claim may also subscribe with an *offer* (what a submit needs to claim for it;
opaque here): a submit in the same process then reserves it (:meth:`Notifier.reserve`),
claims the new task for it inside the submit's own transaction, and hands the claimed tasks
over after commit (:meth:`Subscription.settle`), so the waiting claim answers without a
transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

from zndraw_joblib_core import ServiceUnavailable

__all__ = ["Notifier", "Subscription"]


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
                with suppress(TimeoutError):
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
            for key in sub.keys:
                subs = self._waiters.get(key, [])
                if sub in subs:
                    subs.remove(sub)
                if not subs:
                    self._waiters.pop(key, None)

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
