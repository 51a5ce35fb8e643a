"""PostgreSQL: vacuum the tasks table after many claims, so claims stay cheap.

A claim walks the claim index (pending tasks of a job, in claim order) from its start. A
claimed task leaves its entry there until the table is vacuumed, pointing at the task's old
row version, and every later claim steps over it and visits that row. Autovacuum looks at a
table at most once a minute (``autovacuum_naptime``) and waits for a fifth of the table to
change, so on a busy queue a claim may visit thousands of such rows, and draining a backlog
slows down markedly (see docs/performance.md for the current figures).

:class:`ClaimUpkeep` counts the tasks claimed in its process and, every
``vacuum_after_claims`` of them, runs ``VACUUM (SKIP_LOCKED) joblib_task`` in the
background: it blocks no reads or writes of the table, one runs at a time per process, and
a process whose vacuum would wait for another one's skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ClaimUpkeep"]

logger = logging.getLogger("zndraw_joblib_server")

VACUUM = "VACUUM (SKIP_LOCKED) joblib_task"


class ClaimUpkeep:
    """Vacuums the tasks table after every ``every`` claims (PostgreSQL; 0: never)."""

    def __init__(self, engine: AsyncEngine | None, every: int) -> None:
        self._engine = engine if engine is not None and every > 0 else None
        self._every = every
        self._since = 0
        self._task: asyncio.Task[None] | None = None
        self.vacuums = 0
        """Vacuums run to the end by this process (for tests and metrics)."""

    def claimed(self, count: int) -> None:
        """Count ``count`` claimed tasks; start a vacuum when enough were claimed."""
        if self._engine is None or count <= 0:
            return
        self._since += count
        if self._since < self._every or (self._task is not None and not self._task.done()):
            return
        self._since = 0
        self._task = asyncio.get_running_loop().create_task(self._vacuum(self._engine))

    async def _vacuum(self, engine: AsyncEngine) -> None:
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql(VACUUM)
            self.vacuums += 1
        except Exception:  # a failed vacuum only costs speed: the next one may succeed
            logger.warning("vacuuming the tasks table failed", exc_info=True)

    async def stop(self) -> None:
        """Cancel a vacuum in progress (the server is stopping)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
