"""PostgreSQL: concurrent runs of one statement share one round trip and one commit.

A statement marked with ``rows_of`` (see :func:`~.prebuilt.prebuilt`: a worker's report,
its claim, its report with the next claim, a submit's insert) that runs outside a
transaction goes to PostgreSQL at once when no run of it is in flight. Runs that arrive
meanwhile queue; when the run in flight returns, the first of them sends them all in one
pipelined ``fetchmany`` (asyncpg's public API): one round trip, one implicit transaction
and so one commit, where each run stays a statement of its own that sees the runs before
it (two claims never take the same task). Every row such a statement answers names its
run (a worker's rows carry the worker of parameter ``b_worker`` in ``worker_id``; an
insert answers its new row's ``id``), which is how rows are handed back; two runs with
the same value never share a batch. Nothing waits for company: a lone run goes alone, and
a batch holds what queued while the previous one was in flight.

Only one run or batch of a statement is in flight per database handle (so per process):
measured, a second one in flight did worse than letting the queue grow (more sends, more
commits, fewer runs per batch).

A failed batch wrote nothing (an error ends the implicit transaction), so each run then
goes again alone, on its own connection, and one run's error stays its own. A batch takes
row locks for its runs together: a run that waits for a lock another transaction holds
makes the whole batch wait, and a deadlock PostgreSQL breaks ends the batch, whose runs then
go alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from zndraw_joblib_server.storage.direct import Bound, Plan
from zndraw_joblib_server.storage.direct_pg import asyncpg_outside_transaction, run_direct_pg
from zndraw_joblib_server.storage.direct_result import DirectResult

__all__ = ["SharedRuns"]

logger = logging.getLogger("zndraw_joblib_server")

_ALONE: Any = object()
"""A queued run's outcome when its batch failed: run again on your own."""


class _Run:
    """One queued run: its values, whose rows it gets, and where its outcome goes."""

    __slots__ = ("answer", "future", "owner", "values")

    def __init__(self, values: Any, owner: Any, future: asyncio.Future[Any]) -> None:
        self.values = values
        self.owner = owner
        """The value of the plan's ``rows_of`` parameter: the rows with it are this run's."""
        self.future = future
        """Resolved with the run's rows, :data:`_ALONE`, or (to lead it) the next batch."""
        self.answer: DirectResult | None = None


class _Queue:
    """The runs of one statement waiting for the one in flight."""

    __slots__ = ("busy", "waiting")

    def __init__(self) -> None:
        self.busy = False
        self.waiting: list[_Run] = []

    def next_batch(self) -> None:
        """Hand the waiting runs (one per owner) to the first of them, or go idle."""
        batch: list[_Run] = []
        kept: list[_Run] = []
        owners: set[Any] = set()
        for run in self.waiting:
            if run.future.done():  # its request was cancelled while it waited
                continue
            (kept if run.owner in owners else batch).append(run)
            owners.add(run.owner)
        self.waiting = kept
        if batch:
            batch[0].future.set_result(batch)
        else:
            self.busy = False


class SharedRuns:
    """The queues of one database's statements with ``rows_of`` (see the module's text)."""

    __slots__ = ("_queues", "shared")

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self.shared = 0
        """Runs that went to the database in a batch of two or more (for ``GET /health``)."""

    def waiting(self) -> int:
        """How many runs are queued now (for diagnostics and tests)."""
        return sum(not run.future.done() for q in self._queues.values() for run in q.waiting)

    async def run(
        self, conn: AsyncConnection, plan: Plan, bound: Bound, params: Any
    ) -> DirectResult | None:
        """Run ``bound`` like :func:`~.direct_pg.run_direct_pg`, sharing a round trip if it can.

        None, having done nothing, where that returns None (``conn`` is in a transaction,
        or not asyncpg's).
        """
        driver = asyncpg_outside_transaction(conn)
        if driver is None:
            return None
        if plan.rows_of is None:  # nothing tells its rows from another run's
            return await run_direct_pg(conn, plan, bound, params)
        parameter, column = plan.rows_of
        queue = self._queues.get(bound[0])  # by SQL: a plan's lists make several shapes
        if queue is None:
            queue = self._queues[bound[0]] = _Queue()
        if not queue.busy:
            queue.busy = True
            try:
                return await run_direct_pg(conn, plan, bound, params)
            finally:
                queue.next_batch()
        run = _Run(bound[1], params[parameter], asyncio.get_running_loop().create_future())
        queue.waiting.append(run)
        try:
            outcome = await run.future
        except asyncio.CancelledError:
            if run.future.done() and not run.future.cancelled():  # it was to lead a batch
                _alone(run.future.result()[1:])
                queue.next_batch()
            raise
        if isinstance(outcome, list):
            try:
                found = await self._lead(driver, plan, column, bound[0], outcome)
            finally:
                queue.next_batch()
            if found is not None:
                return found
        elif outcome is not _ALONE:
            return outcome  # type: ignore[no-any-return]
        return await run_direct_pg(conn, plan, bound, params)

    async def _lead(
        self, driver: Any, plan: Plan, column: str, sql: str, batch: list[_Run]
    ) -> DirectResult | None:
        """Send ``batch`` of ``sql`` on the leader's asyncpg connection; the leader's rows.

        ``column`` names each row's run. None when the first run is to go alone: the batch
        failed, or it has no company, or the statement's columns are not known yet (its
        first run learns them).
        """
        if len(batch) == 1 or not plan.learned:
            _alone(batch[1:])
            return None
        sent = asyncio.ensure_future(driver.fetchmany(sql, [run.values for run in batch]))
        sent.add_done_callback(lambda done: self._hand_back(plan, column, batch, done))
        try:
            await asyncio.wait([sent])  # its error, if any, is each run's to meet alone
        except asyncio.CancelledError:
            # Only this request was cancelled: the batch, on its connection, ends first.
            await asyncio.wait([sent])
            raise
        return batch[0].answer

    def _hand_back(
        self, plan: Plan, column: str, batch: list[_Run], done: asyncio.Future[Any]
    ) -> None:
        """Give each run of ``batch`` its rows (or, if the batch failed, its own go)."""
        if done.cancelled() or done.exception() is not None:
            _alone(batch[1:])
            return
        result = plan.result(done.result(), -1)
        keys = result.keys()
        at = keys.index(column)
        rows: dict[Any, list[tuple[Any, ...]]] = {run.owner: [] for run in batch}
        for row in result:
            mine = rows.get(row[at])
            if mine is None:  # pragma: no cover - a marked statement answers its runs' rows
                logger.error("a shared statement answered a row of no run")
                continue
            mine.append(row)
        self.shared += len(batch)
        for run in batch:
            mine = rows[run.owner]
            run.answer = DirectResult(keys, mine, len(mine))
            if not run.future.done():
                run.future.set_result(run.answer)


def _alone(runs: list[_Run]) -> None:
    """Tell ``runs`` to go again on their own."""
    for run in runs:
        if not run.future.done():
            run.future.set_result(_ALONE)
