"""In-process wake-ups for long-polling requests.

Waiters subscribe to string keys (``task:{id}``, ``job:{id}``) *before* they read the
database, so a change committed between their read and their wait still wakes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress

__all__ = ["Notifier", "Subscription"]


class Subscription:
    """One waiter's interest in a set of keys."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys
        self._event = asyncio.Event()

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
        """
        if seconds > 0 and not self._event.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        fired = self._event.is_set()
        if consume:
            self.clear()
        return fired

    def clear(self) -> None:
        """Re-arm: the next notification of one of the keys may wake this waiter."""
        self._event.clear()


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

    @asynccontextmanager
    async def subscribe(self, keys: Iterable[str]) -> AsyncIterator[Subscription]:
        """Register interest in ``keys`` for the duration of the block."""
        sub = Subscription(frozenset(keys))
        for key in sub.keys:
            self._waiters.setdefault(key, []).append(sub)
        try:
            yield sub
        finally:
            for key in sub.keys:
                subs = self._waiters.get(key)
                if subs is None:
                    continue
                if sub in subs:
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
            if limit is not None and sub.fired:
                continue
            sub._fire()
            woken += 1
        return woken
