"""SQLAlchemy 2.0 models of the job queue, in ``zndraw_auth.Base``'s metadata.

Tables are prefixed ``joblib_`` so they never clash with a host's own tables (zndraw-auth's
metadata is shared process-wide with every SQLModel table). The classes live in a class
registry of their own, so a host's models named ``Job`` or ``Task`` (or the predecessor's,
whose relationships refer to ``"Task"`` by name) resolve without ambiguity. Timestamps are
timezone-aware UTC on every database; ids are UUIDs (native on PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from fastapi_users_db_sqlalchemy.generics import GUID
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from zndraw_auth import Base

from zndraw_joblib_core import TaskStatus, build_job_name
from zndraw_joblib_server.domain.rules import CLAIM_ORDER

__all__ = [
    "Job",
    "JoblibBase",
    "Provider",
    "ProviderRead",
    "ProviderResult",
    "Task",
    "UTCDateTime",
    "Worker",
    "WorkerJobLink",
    "new_task_row",
    "status_is",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC, timezone-aware (a naive value is taken as UTC); None stays None."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite has no time zones: values are stored as naive UTC text (which sorts correctly) and
    re-attached to UTC on load. PostgreSQL uses ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC (naive values are taken as UTC)."""
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if utc is not None and dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to values read back."""
        return as_utc(value)


class JoblibBase(DeclarativeBase):
    """Declarative base of the queue's models: zndraw-auth's metadata, its own class registry.

    Sharing the metadata keeps the foreign keys to zndraw-auth's ``user`` table and lets one
    ``create_all`` make every table; the separate registry keeps class names out of the
    registry string lookups of other models (``relationship("Task")``).
    """

    metadata = Base.metadata
    __table__: ClassVar[Table]  # every model here maps a table (typed for update()/insert())


_PENDING = "status = 'pending'"
_ACTIVE = "status IN ('claimed', 'running')"
_FINISHED = "status IN ('completed', 'failed', 'cancelled')"
_USER_PENDING = f"{_PENDING} AND created_by_id IS NOT NULL"


def _partial(name: str, *columns: Any, where: str) -> Index:
    """An index of the tasks with the statuses ``where`` names (partial on both databases)."""
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


class _Named:
    """The id, the name ``room:category:name`` and the schema of a job or a provider."""

    # sort_order: these columns come first in the tables, before the classes' own.
    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid.uuid4, sort_order=-1
    )
    room_id: Mapped[str] = mapped_column(String(255), sort_order=-1)
    category: Mapped[str] = mapped_column(String(64), sort_order=-1)
    name: Mapped[str] = mapped_column(String(255), sort_order=-1)
    schema_: Mapped[dict[str, Any]] = mapped_column("schema", JSON, default=dict, sort_order=-1)

    @property
    def full_name(self) -> str:
        """``{room_id}:{category}:{name}``."""
        return build_job_name(self.room_id, self.category, self.name)


class Job(_Named, JoblibBase):
    """A registered job: a typed extension that workers serve, named room:category:name."""

    __tablename__ = "joblib_job"
    __table_args__ = (
        UniqueConstraint("room_id", "category", "name", name="uq_joblib_job_name"),
        Index("ix_joblib_job_room_listing", "room_id", "deleted", "created_at"),
    )

    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="SET NULL"), nullable=True, default=None
    )
    """Who registered the job first (None: registered before jobs had owners, or the owner
    was deleted). By default only the owner's and superusers' workers may serve it."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Worker(JoblibBase):
    """A remote worker process, owned by one user."""

    __tablename__ = "joblib_worker"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class WorkerJobLink(JoblibBase):
    """Which worker serves which job."""

    __tablename__ = "joblib_worker_job_link"

    worker_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("joblib_worker.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("joblib_job.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Task(JoblibBase):
    """One submitted unit of work for a job.

    ``worker_id`` has no foreign key on purpose: a task keeps the attribution of the worker
    that last held it after that worker is gone. ``run_after`` is the time the task becomes
    claimable (the submit time unless given, pushed back by retry backoff). ``version`` grows
    with every change and lets long-polls wake on any change.
    """

    __tablename__ = "joblib_task"
    __table_args__ = (
        _partial(
            "ix_joblib_task_claim",
            "job_id",
            *(text(f"{name} DESC") if desc else name for name, desc in CLAIM_ORDER),
            where=_PENDING,
        ),
        Index("ix_joblib_task_room", "room_id", "created_at"),
        Index("ix_joblib_task_room_status", "room_id", "status", "created_at"),
        Index("ix_joblib_task_job_room", "job_id", "room_id", "created_at"),
        _partial("ix_joblib_task_worker_active", "worker_id", where=_ACTIVE),
        _partial("ix_joblib_task_lease", "lease_expires_at", where=_ACTIVE),
        _partial("ix_joblib_task_deadline", "deadline_at", where=_ACTIVE),
        # "created_by_id IS NOT NULL": only a query naming a user (quotas) may use it. With
        # the status alone in its condition, PostgreSQL's generic plan of a submit's queue
        # position read it whole instead of a range of the claim index (revision 0003).
        _partial("ix_joblib_task_user_pending", "created_by_id", where=_USER_PENDING),
        _partial("ix_joblib_task_finished", "completed_at", where=_FINISHED),
        UniqueConstraint("job_id", "room_id", "idempotency_key", name="uq_joblib_task_idem"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("joblib_job.id"))
    room_id: Mapped[str] = mapped_column(String(255))
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="SET NULL"), index=True
    )
    worker_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[TaskStatus] = mapped_column(
        Enum(
            TaskStatus,
            native_enum=False,
            length=16,
            values_callable=lambda members: [m.value for m in members],
        ),
        default=TaskStatus.PENDING,
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    lease_seconds: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer, default=0)


def new_task_row(**values: Any) -> dict[str, Any]:
    """Every column of a new task row: the table's defaults, then ``values``.

    Columns without a default are None. Writers of new rows name only what they decide, so
    a new column needs no edit in each of them.
    """
    row: dict[str, Any] = {}
    for column in Task.__table__.columns:
        # ColumnDefault.arg: the value, or the callable SQLAlchemy calls with its context.
        arg = None if column.key in values else getattr(column.default, "arg", None)
        row[column.key] = arg(None) if callable(arg) else arg
    unknown = values.keys() - row.keys()
    if unknown:
        raise TypeError(f"not columns of joblib_task: {sorted(unknown)}")
    row.update(values)
    return row


class Provider(_Named, JoblibBase):
    """A provider registered by a worker: a data source read through that worker.

    It belongs to its worker and goes with it (deleted with the worker, by the sweeper or
    ``DELETE /workers``).
    """

    __tablename__ = "joblib_provider"
    __table_args__ = (
        UniqueConstraint("room_id", "category", "name", name="uq_joblib_provider_name"),
        Index("ix_joblib_provider_room", "room_id", "created_at"),
    )

    content_type: Mapped[str] = mapped_column(String(255), default="application/json")
    worker_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("joblib_worker.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class _PerRead:
    """The key of a row per read: the provider and the hash of the request."""

    provider_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("joblib_provider.id", ondelete="CASCADE"), primary_key=True, sort_order=-1
    )
    request_hash: Mapped[str] = mapped_column(String(64), primary_key=True, sort_order=-1)


class ProviderResult(_PerRead, JoblibBase):
    """A cached answer to one read (the database result cache), kept until ``expires_at``."""

    __tablename__ = "joblib_provider_result"

    status: Mapped[int] = mapped_column(Integer, default=200)
    content_type: Mapped[str] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ProviderRead(_PerRead, JoblibBase):
    """A read in flight (the database in-flight mark): dispatched once, answered once.

    ``dispatched_at`` is set when a claim of the provider's worker took it.
    """

    __tablename__ = "joblib_provider_read"
    __table_args__ = (Index("ix_joblib_provider_read_worker", "worker_id", "dispatched_at"),)

    worker_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    provider_name: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def status_is(*statuses: TaskStatus) -> ColumnElement[bool]:
    """SQL: the task's status is one of ``statuses``, written into the statement as constants.

    The partial indexes (claim order of pending tasks; leases, deadlines and workers of
    active ones) apply only where the query names their status values. PostgreSQL plans a
    prepared statement for any parameter value after a few runs (a generic plan), and such a
    plan cannot use them for ``status = $1``: a claim or a submit's position count would then
    scan every task of the job. Constants keep the indexes usable; the values are our own
    enum's, never input.
    """
    values = [literal_column(f"'{s.value}'", type_=Task.status.type) for s in statuses]
    if len(values) == 1:
        return Task.status == values[0]
    return Task.status.in_(values)
