"""The SQL encodings of the queue's rules agree with the pure rules (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, Float, Integer, bindparam, literal, select, union_all, update

from zndraw_joblib_server.domain.rules import CLAIM_ORDER, claim_key, lease_seconds
from zndraw_joblib_server.models import Task
from zndraw_joblib_server.services.rules_sql import claim_order_by, lease_seconds_sql

T = TypeVar("T")

BASE = datetime(2026, 1, 1)

leases = st.tuples(
    st.one_of(st.none(), st.just(0.0), st.floats(0.001, 1e6)), st.floats(0.001, 1e6)
)
tasks = st.lists(
    st.tuples(
        st.integers(-3, 3),  # priority: few values, so ties reach the later columns
        st.integers(0, 3),  # run_after, in minutes
        st.integers(0, 10_000),  # created_at, in milliseconds
    ),
    min_size=1,
    max_size=12,
)


def examples(strategy: st.SearchStrategy[T], count: int = 60) -> list[T]:
    """Values Hypothesis generates for ``strategy`` (its edge cases first).

    The comparisons run against the app's database in the test's own event loop, which
    Hypothesis' per-example runner does not provide; so the examples are drawn first.
    """
    found: list[T] = []

    @settings(max_examples=count, database=None, deadline=None)
    @given(strategy)
    def collect(value: T) -> None:
        found.append(value)

    collect()
    return found


async def test_lease_sql_is_the_lease_rule(app) -> None:
    async with app.state.joblib_queue.database.read() as conn:
        for own, default in examples(leases):
            stmt = select(
                lease_seconds_sql(bindparam("own", own, Float), bindparam("d", default, Float))
            )
            found = (await conn.execute(stmt)).scalar_one()
            assert found == lease_seconds(own, default), (own, default)


async def test_claim_order_sql_is_the_claim_rule(app) -> None:
    async with app.state.joblib_queue.database.read() as conn:
        for rows in examples(tasks):
            as_tasks = [
                SimpleNamespace(
                    priority=p,
                    run_after=BASE + timedelta(minutes=r),
                    created_at=BASE + timedelta(milliseconds=c),
                )
                for p, r, c in rows
            ]
            table = union_all(
                *(
                    select(
                        literal(i, Integer).label("i"),
                        literal(t.priority, Integer).label("priority"),
                        literal(t.run_after, DateTime).label("run_after"),
                        literal(t.created_at, DateTime).label("created_at"),
                    )
                    for i, t in enumerate(as_tasks)
                )
            ).subquery("t")
            stmt = select(table.c.i).order_by(*claim_order_by(table.c))
            order = list((await conn.execute(stmt)).scalars())
            got = [claim_key(as_tasks[i]) for i in order]
            assert got == sorted(map(claim_key, as_tasks)), rows


def test_the_claim_index_follows_the_claim_order() -> None:
    (index,) = [i for i in Task.__table__.indexes if i.name == "ix_joblib_task_claim"]
    expressions = [getattr(e, "name", str(e)) for e in index.expressions][1:]  # after job_id
    assert expressions == [f"{n} DESC" if d else n for n, d in CLAIM_ORDER]


async def test_a_stored_zero_lease_counts_as_unset_on_every_path(app, as_alice, flow) -> None:
    """A lease of 0 (refused by the API, stored by other means) is the default lease.

    Before the lease rule was written once, a claim and a heartbeat gave such a task a lease
    that was already lost, while an update to running gave it the default.
    """
    job = await flow.job(as_alice)
    task = await flow.submit(as_alice, job["full_name"])
    async with app.state.joblib_queue.database.write() as uow:
        await uow.session.execute(
            update(Task).where(Task.id == uuid.UUID(task["id"])).values(lease_seconds=0.0)
        )
    floor = timedelta(seconds=30)  # the default lease is 60 s
    before = datetime.now(UTC)
    claimed = await flow.claim(as_alice, job["worker_id"])
    assert ts(claimed["lease_expires_at"]) - before > floor
    beat = await as_alice.patch(f"/v1/joblib/workers/{job['worker_id']}")
    assert beat.status_code == 200
    after_beat = await flow.task(as_alice, task["id"])
    assert ts(after_beat["lease_expires_at"]) - datetime.now(UTC) > floor
    started = await flow.patch(as_alice, task["id"], status="running", worker_id=job["worker_id"])
    assert started.status_code == 200
    body = started.json()
    assert ts(body["lease_expires_at"]) - datetime.now(UTC) > floor


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)
