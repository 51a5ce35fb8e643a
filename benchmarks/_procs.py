"""Run load-generator functions in child processes that start together."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from _api import BenchError

__all__ = ["CTX", "Group", "run_group"]

CTX = mp.get_context("fork")
"""Fork: the load generators start in milliseconds, which keeps --quick quick."""


def _entry(
    fn: Callable[..., dict[str, Any]],
    index: int,
    ready: Any,
    go: Any,
    out: Any,
    args: tuple[Any, ...],
) -> None:
    try:
        result = fn(lambda: (ready.put(index), go.wait(120)), *args)
    except BaseException:  # report everything: the parent decides
        result = {"error": traceback.format_exc(limit=5)}
    out.put((index, result))


class Group:
    """Child processes running ``fn(start, *args)``; ``start()`` blocks until all are ready.

    Each function prepares (connects, warms up), then calls ``start()``; the parent's
    :meth:`go` releases all of them at once and returns the release time.
    """

    def __init__(self, fn: Callable[..., dict[str, Any]], arglist: Sequence[tuple[Any, ...]]):
        self._ready: Any = CTX.Queue()
        self._go = CTX.Event()
        self._out: Any = CTX.Queue()
        self._procs = [
            CTX.Process(
                target=_entry,
                args=(fn, i, self._ready, self._go, self._out, tuple(args)),
                daemon=True,
            )
            for i, args in enumerate(arglist)
        ]
        for proc in self._procs:
            proc.start()

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [p.pid for p in self._procs if p.pid is not None]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every child called ``start()``."""
        deadline = time.monotonic() + timeout
        for _ in self._procs:
            try:
                self._ready.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                raise BenchError("load generators did not get ready in time") from None

    def go(self) -> float:
        """Release every child; returns ``time.monotonic()`` of the release."""
        t0 = time.monotonic()
        self._go.set()
        return t0

    def results(self, timeout: float) -> list[dict[str, Any]]:
        """Collect each child's result (in child order); raise if one failed or hung."""
        deadline = time.monotonic() + timeout
        found: dict[int, dict[str, Any]] = {}
        try:
            while len(found) < len(self._procs):
                try:
                    index, result = self._out.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    raise BenchError(
                        f"{len(self._procs) - len(found)} load generator(s) did not finish "
                        f"within {timeout:.0f} s"
                    ) from None
                found[index] = result
        finally:
            self.kill()
        errors = [r["error"] for r in found.values() if "error" in r]
        if errors:
            raise BenchError("load generator failed:\n" + errors[0])
        return [found[i] for i in range(len(self._procs))]

    def kill(self) -> None:
        """Join the children, killing any that are still running."""
        for proc in self._procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)


def run_group(
    fn: Callable[..., dict[str, Any]], arglist: Sequence[tuple[Any, ...]], timeout: float
) -> tuple[float, list[dict[str, Any]]]:
    """Start ``fn`` in one process per argument tuple, release them together, collect.

    Returns:
        The release time (``time.monotonic()``) and each child's result dict.
    """
    group = Group(fn, arglist)
    try:
        group.wait_ready()
        t0 = group.go()
        return t0, group.results(timeout)
    finally:
        group.kill()
