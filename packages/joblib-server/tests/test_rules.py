"""The SQL encodings of the queue's rules agree with the pure rules (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    bindparam,
    insert,
    literal,
    select,
    union_all,
    update,
)

from zndraw_joblib_core import CLIENT_TRANSITIONS, ProblemError, TaskStatus, TaskUpdateRequest
from zndraw_joblib_server import sweep_once
from zndraw_joblib_server import sweeper as sweeper_module
from zndraw_joblib_server.dependencies import get_room_access
from zndraw_joblib_server.domain.rules import (
    CLAIM_ORDER,
    TRANSITIONS,
    By,
    claim_key,
    lease_expired,
    lease_seconds,
    lease_until,
)
from zndraw_joblib_server.models import Task
from zndraw_joblib_server.services import reports as reports_module
from zndraw_joblib_server.services import updates as updates_module
from zndraw_joblib_server.services import workers as workers_module
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.claim import claim_tasks
from zndraw_joblib_server.services.reports import check_limits, report
from zndraw_joblib_server.services.updates import _update_one, update_task
from zndraw_joblib_server.services.workers import heartbeat
from zndraw_joblib_server.storage.records import TaskRecord
from zndraw_joblib_server.storage.rules_sql import claim_order_by, lease_seconds_sql

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


# --- Every encoding against the pure rules, through the services -----------------------

HOLDERS = ("mine", "mine_too", "theirs", "gone", None)
"""Whose worker holds a task (or is named by a report): the caller's, another of the
caller's, another user's, a deleted one's, nobody's."""

lease_ends = st.sampled_from([None, -1_000_000, -1, 0, 1, 1_000_000])
"""A task's lease end relative to the frozen now, in microseconds (the boundaries exactly)."""
own_leases = st.one_of(st.sampled_from([None, 0.0]), st.floats(1e-6, 1e5))

states = st.fixed_dictionaries(
    {
        "status": st.sampled_from(list(TaskStatus)),
        "attempt": st.integers(0, 3),
        "max_attempts": st.integers(1, 3),
        "lease": lease_ends,
        "holder": st.sampled_from(HOLDERS),
        "cancel_requested": st.booleans(),
        "lease_seconds": own_leases,
        "timeout_seconds": st.sampled_from([None, 2.5]),
        "deadline": st.sampled_from([None, 100]),
        "error": st.sampled_from([None, "earlier"]),
        "progress": st.sampled_from([None, 0.25]),
        "mine": st.booleans(),  # whether the caller submitted it
    }
)
bodies = st.fixed_dictionaries(
    {
        "status": st.sampled_from([None, *TaskStatus]),
        "worker": st.sampled_from(HOLDERS),
        "progress": st.sampled_from([None, 0.5]),
        "message": st.sampled_from([None, "halfway"]),
        "error": st.sampled_from([None, "boom"]),
        "result": st.sampled_from([None, {"answer": 42}]),
        "retry": st.booleans(),
        "superuser": st.booleans(),
    }
)
usual = st.tuples(  # a worker reporting on the task it holds: what the one statement takes
    states.map(lambda s: s | {"holder": "mine"}),
    bodies.map(lambda b: b | {"worker": "mine", "superuser": False}),
    st.sampled_from([TaskStatus.CLAIMED, TaskStatus.RUNNING]),
    st.sampled_from([TaskStatus.RUNNING, TaskStatus.COMPLETED]),
).map(lambda t: (t[0] | {"status": t[2]}, t[1] | {"status": t[3]}))
reports = st.one_of(usual, st.tuples(states, bodies))
_PENDING = {
    "status": TaskStatus.PENDING,
    "attempt": 0,
    "max_attempts": 1,
    "lease": None,
    "holder": None,
    "cancel_requested": False,
    "lease_seconds": None,
    "timeout_seconds": None,
    "deadline": None,
    "error": None,
    "progress": None,
    "mine": True,
}


IN_ORDER = (
    _PENDING | {"status": TaskStatus.RUNNING, "attempt": 1, "holder": "mine"},
    {
        "status": TaskStatus.COMPLETED,
        "worker": "mine",
        "progress": None,
        "message": None,
        "error": None,
        "result": {"answer": 42},
        "retry": False,
        "superuser": False,
    },
)
"""A completion entirely in order (every store writes it in one statement), always tried."""


class Scene:
    """A job, the caller's two workers, another user's worker, and rows made from states."""

    def __init__(self, app: Any, alice: Any, admin: Any, bob: Any) -> None:
        self.db = app.state.joblib_queue.database
        self.settings = app.state.joblib_settings
        self.alice, self.admin, self.bob = alice, admin, bob
        self.workers: dict[str | None, uuid.UUID | None] = {None: None, "gone": uuid.uuid4()}
        self.owners: dict[uuid.UUID, uuid.UUID] = {}

    async def build(self, flow: Any, as_alice: Any, as_bob: Any) -> None:
        job = await flow.job(as_alice)
        self.job_id = uuid.UUID(job["id"])
        self.workers["mine"] = uuid.UUID(job["worker_id"])  # serves the job
        self.owners[uuid.UUID(job["worker_id"])] = self.alice.id
        for name, client, user in (
            ("mine_too", as_alice, self.alice),
            ("theirs", as_bob, self.bob),
        ):
            worker = uuid.UUID(await flow.worker(client))
            self.workers[name] = worker
            self.owners[worker] = user.id

    def row(self, state: dict[str, Any], now: datetime) -> dict[str, Any]:
        lease = state["lease"]
        return {
            "id": uuid.uuid4(),
            "job_id": self.job_id,
            "room_id": "lab",
            "created_by_id": (self.alice if state["mine"] else self.bob).id,
            "worker_id": self.workers[state["holder"]],
            "status": state["status"],
            "payload": {},
            "result": None,
            "error": state["error"],
            "message": None,
            "progress": state["progress"],
            "priority": 0,
            "run_after": now - timedelta(minutes=5),
            "created_at": now - timedelta(minutes=5),
            "claimed_at": now - timedelta(minutes=1),
            "started_at": None,
            "completed_at": None,
            "lease_expires_at": None if lease is None else now + timedelta(microseconds=lease),
            "deadline_at": None if state["deadline"] is None else now + timedelta(seconds=100),
            "attempt": state["attempt"],
            "max_attempts": state["max_attempts"],
            "timeout_seconds": state["timeout_seconds"],
            "lease_seconds": state["lease_seconds"],
            "cancel_requested": state["cancel_requested"],
            "cancel_requested_at": now if state["cancel_requested"] else None,
            "idempotency_key": None,
            "version": 3,
        }

    def body(self, body: dict[str, Any]) -> TaskUpdateRequest:
        fields = {k: v for k, v in body.items() if k not in ("worker", "superuser")}
        return TaskUpdateRequest(**fields, worker_id=self.workers[body["worker"]])

    def actor(self, body: dict[str, Any]) -> Actor:
        user = self.admin if body["superuser"] else self.alice
        return Actor(id=user.id, is_superuser=user.is_superuser)

    async def insert(self, row: dict[str, Any]) -> None:
        async with self.db.write() as uow:
            await uow.session.execute(insert(Task).values(**row))

    async def load(self, task_id: uuid.UUID) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = (await conn.execute(select(Task.__table__).where(Task.id == task_id))).one()
        return dict(row._mapping)


def _columns(values: Any) -> dict[str, Any]:
    """The task's columns but its id (rows of one state differ only there)."""
    return {c.name: getattr(values, c.name) for c in Task.__table__.c if c.name != "id"}


async def _pure(
    scene: Scene, row: dict[str, Any], body: TaskUpdateRequest, actor: Actor, now: datetime
) -> tuple[dict[str, Any], type[ProblemError] | None]:
    """The row after the update by the rules alone (no database): ``(columns, refusal)``."""
    record = TaskRecord(row)
    access = await get_room_access()
    try:
        await _update_one(
            actor, access, record, row["id"], body, scene.owners, now, scene.settings
        )
    except ProblemError as exc:
        return _columns(TaskRecord(row)), type(exc)
    return _columns(record), None


async def _through(
    scene: Scene, row: dict[str, Any], body: TaskUpdateRequest, actor: Actor, autocommit: bool
) -> tuple[dict[str, Any], type[ProblemError] | None]:
    """The row after the update through the service and the database."""
    await scene.insert(row)
    refusal: type[ProblemError] | None = None
    try:
        async with scene.db.write(standalone=autocommit) as uow:
            access = await get_room_access()
            await update_task(uow, actor, access, row["id"], body, scene.settings)
    except ProblemError as exc:
        refusal = type(exc)
    return _columns(SimpleNamespace(**await scene.load(row["id"]))), refusal


@pytest.fixture
async def scene(app, alice, admin, bob, flow, as_alice, as_bob) -> Scene:
    built = Scene(app, alice, admin, bob)
    await built.build(flow, as_alice, as_bob)
    return built


def _frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Freeze the services' clock (each test's rows are placed around that instant)."""
    now = datetime.now(UTC)
    for module in (updates_module, reports_module, sweeper_module):
        monkeypatch.setattr(module, "utcnow", lambda: now)
    return now


_REPORTED = {
    "postgres": (TaskStatus.RUNNING, TaskStatus.COMPLETED),
    "sqlite": (TaskStatus.COMPLETED,),  # a start's lease needs interval arithmetic
}
"""The reports each database's store writes in one statement."""


async def test_every_update_path_is_the_transition_rule(scene, monkeypatch, backend) -> None:
    """Random task states and reports: the row after each SQL path is the rules' row.

    Paths: the service outside a transaction (PostgreSQL: the one-statement report first,
    then the version-guarded general path), inside one (the locked general path; SQLite: a
    completion's one-statement report first), and the one-statement report on its own
    (starts and completions on PostgreSQL, completions on SQLite). The pure side is
    ``_update_one`` on a record, which consults the transition table.
    """
    now = _frozen(monkeypatch)
    reported = 0
    for state, raw in [*examples(reports, 80), IN_ORDER]:
        row = scene.row(state, now)
        try:
            body = scene.body(raw)
        except ValueError:
            continue  # a body the API refuses (422) before any rule
        actor = scene.actor(raw)
        expected, refusal = await _pure(scene, row, body, actor, now)
        for autocommit in (False, True):
            got, got_refusal = await _through(
                scene, row | {"id": uuid.uuid4()}, body, actor, autocommit
            )
            assert (got_refusal, got) == (refusal, expected), (state, raw, autocommit)
        reported += await _one_statement(
            scene, row, body, actor, (expected, refusal), _REPORTED[backend]
        )
    assert reported > 0  # the one statement did run (at least for IN_ORDER)


async def _one_statement(
    scene: Scene,
    row: dict[str, Any],
    body: TaskUpdateRequest,
    actor: Actor,
    rule: tuple[dict[str, Any], type[ProblemError] | None],
    statuses: tuple[TaskStatus, ...],
) -> int:
    """Run ``report`` alone on a row of the state; 1 when it wrote (equal to the rule).

    Only for bodies within the limits (its caller checks them first, as ``update_task`` does).
    ``rule``: the row and refusal of the rule; ``statuses``: the reports the store writes so.
    """
    expected, refusal = rule
    try:
        check_limits(body, scene.settings)
    except ProblemError:
        return 0
    row = row | {"id": uuid.uuid4()}
    await scene.insert(row)
    async with scene.db.write(standalone=True) as uow:
        answer = await report(uow, actor, row["id"], body, scene.settings)
    got = _columns(SimpleNamespace(**await scene.load(row["id"])))
    if answer is None:
        assert got == _columns(SimpleNamespace(**row)), "declined, yet wrote"
        usual = (  # the statement is for a worker's report on its own task (worker named)
            refusal is None
            and body.status in statuses
            and body.worker_id is not None
            and not actor.is_superuser
            and got != expected
        )
        assert not usual, "declined a report it is for"
        return 0
    assert (refusal, got) == (None, expected)
    return 1


async def test_claims_come_out_in_the_claim_order(scene, backend) -> None:
    """Random pending tasks (ties on every column) claimed through the service, one at a
    time and several at a time, outside and inside a transaction: CLAIM_ORDER's order."""
    actor = Actor(id=scene.alice.id)
    worker = scene.workers["mine"]
    assert worker is not None
    now = datetime.now(UTC)
    for rows in examples(tasks, 40):
        made = []
        for p, r, c in rows:
            row = scene.row(_PENDING, now) | {
                "priority": p,
                "run_after": now - timedelta(minutes=10 - r),
                "created_at": now - timedelta(minutes=10, milliseconds=c),
                "worker_id": None,
            }
            await scene.insert(row)
            made.append(SimpleNamespace(**row))
        expected = sorted(map(claim_key, made))
        claimed: list[tuple[Any, ...]] = []
        batch = len(rows) % 3 + 1  # 1, 2 or 3 at a time
        while True:
            async with scene.db.write(standalone=len(claimed) % 2 == 0) as uow:
                got, _ = await claim_tasks(uow, actor, worker, batch, scene.settings)
            if not got:
                break
            claimed += [claim_key(_as_row(t)) for t in got]
        assert claimed == expected, rows


def _as_row(task: Any) -> SimpleNamespace:
    """A claimed task's claim-order columns (the answer carries them all)."""
    return SimpleNamespace(
        priority=task.priority, run_after=task.run_after, created_at=task.created_at
    )


leases_held = st.lists(st.tuples(lease_ends, own_leases), min_size=1, max_size=6)


async def test_lease_expiry_sql_is_the_lease_rule(app, scene, monkeypatch) -> None:
    """Leases ending just before, exactly at and just after now (and none): the sweeper
    releases exactly the ones the rule says are lost, then a heartbeat renews exactly the
    ones it says are held (to the rule's length; a stored 0 is the default)."""
    now = _frozen(monkeypatch)
    monkeypatch.setattr(workers_module, "utcnow", lambda: now)
    actor = Actor(id=scene.alice.id)
    worker = scene.workers["mine"]
    assert worker is not None
    default = scene.settings.lease_seconds
    for leases in examples(leases_held, 40):
        rows = []
        for end, own in leases:
            state = _PENDING | {"status": TaskStatus.RUNNING, "lease": end, "holder": "mine"}
            row = scene.row(state, now) | {"lease_seconds": own}
            await scene.insert(row)
            rows.append(row)
        await sweep_once(app.state.session_maker, scene.settings)
        for row in rows:
            status = (await scene.load(row["id"]))["status"]
            lost = lease_expired(row["lease_expires_at"], now)
            assert (status != TaskStatus.RUNNING) == lost, (leases, row)
        async with scene.db.write() as uow:
            await heartbeat(uow, actor, worker, scene.settings)
        for row in rows:
            end = row["lease_expires_at"]
            if lease_expired(end, now):
                continue  # released above
            got = (await scene.load(row["id"]))["lease_expires_at"]
            wanted = None if end is None else lease_until(now, row["lease_seconds"], default)
            assert got == wanted, (leases, row)


def test_the_patch_moves_of_the_table_are_the_core_transitions() -> None:
    """What ``PATCH`` accepts (a worker or a superuser) is the core's transition table."""
    patch = {By.WORKER, By.SUPERUSER}
    moves = {
        (source, row.target)
        for row in TRANSITIONS
        if row.target is not None and row.by & patch
        for source in row.source
    }
    assert moves == {(s, t) for s, targets in CLIENT_TRANSITIONS.items() for t in targets}
    assert all(not s.is_terminal for row in TRANSITIONS for s in row.source)
