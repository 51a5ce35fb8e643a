"""Per-task credentials: short-lived bearer tokens valid only while their task holds its lease.

The code of an ``@internal`` task may call back into the host's API (and the queue's). It gets
a token minted for that task (:func:`mint_task_token`): a JWT signed with zndraw-auth's secret
under its own audience, naming the task, the worker and the attempt that holds it, and the
user whose rights it carries (the task's submitter, or a service identity). Every time it is
presented, :func:`verify_task_token` checks the signature and then the task's row: the task
must be claimed or running, held by that worker in that attempt, with an unexpired lease. So
the token is refused as soon as the task completes, fails, is cancelled, times out or loses
its lease, whatever its ``exp`` says (which only bounds a token whose row check cannot run).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from zndraw_joblib_core import ACTIVE_STATUSES, Unauthorized
from zndraw_joblib_server.domain.rules import lease_expired
from zndraw_joblib_server.models import Job, Task, utcnow

__all__ = [
    "TASK_TOKEN_AUDIENCE",
    "TaskCredential",
    "is_task_token",
    "lease_row",
    "mint_task_token",
    "verify_task_token",
]

TASK_TOKEN_AUDIENCE = "zndraw-joblib:task"
"""The ``aud`` claim of per-task tokens (zndraw-auth's login tokens carry another)."""

_ALGORITHM = "HS256"
_MAX_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class TaskCredential:
    """Who a valid per-task token speaks for.

    Attributes:
        task_id: The task the token was minted for.
        worker_id: The worker holding the task.
        attempt: The attempt (claim) the token belongs to.
        user_id: The user whose rights the token carries.
        room_id: The room the task was submitted from.
        job_name: The task's job, ``{room}:{category}:{name}``.
    """

    task_id: uuid.UUID
    worker_id: uuid.UUID
    attempt: int
    user_id: uuid.UUID
    room_id: str
    job_name: str


def _secret(auth_settings: Any) -> str:
    return str(auth_settings.secret_key.get_secret_value())


def mint_task_token(
    auth_settings: Any,
    *,
    task_id: uuid.UUID,
    worker_id: uuid.UUID,
    attempt: int,
    user_id: uuid.UUID,
) -> str:
    """A token for the task held by ``worker_id`` in ``attempt``, with ``user_id``'s rights."""
    claims = {
        "sub": str(user_id),
        "aud": TASK_TOKEN_AUDIENCE,
        "tid": str(task_id),
        "wid": str(worker_id),
        "att": attempt,
        "exp": utcnow() + _MAX_LIFETIME,
    }
    return jwt.encode(claims, _secret(auth_settings), algorithm=_ALGORITHM)


def _claims(token: str, auth_settings: Any) -> dict[str, Any]:
    try:
        data: dict[str, Any] = jwt.decode(
            token,
            _secret(auth_settings),
            audience=TASK_TOKEN_AUDIENCE,
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "sub", "tid", "wid", "att"]},
        )
        for claim in ("sub", "tid", "wid"):
            uuid.UUID(str(data[claim]))
        int(data["att"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        raise Unauthorized("The bearer token is invalid or expired.") from None
    return data


def is_task_token(token: str, auth_settings: Any) -> bool:
    """Whether ``token`` is a well-signed per-task token (its task is not looked at)."""
    try:
        _claims(token, auth_settings)
    except Unauthorized:
        return False
    return True


async def lease_row(session: AsyncSession, task_id: uuid.UUID) -> Any:
    """What decides whether a task is held: status, worker, attempt, lease; None if no task.

    Also its room, submitter and job (``job_room``, ``category``, ``name``).
    """
    return (
        await session.execute(
            select(
                Task.status,
                Task.worker_id,
                Task.attempt,
                Task.lease_expires_at,
                Task.room_id,
                Task.created_by_id,
                Job.room_id.label("job_room"),
                Job.category,
                Job.name,
            )
            .join(Job, Job.id == Task.job_id)
            .where(Task.id == task_id)
        )
    ).first()


async def verify_task_token(
    token: str | None,
    auth_settings: Any,
    session_maker: async_sessionmaker[AsyncSession],
) -> TaskCredential:
    """The credential of a per-task token whose task still holds its lease under that claim.

    Raises:
        Unauthorized: No token, a bad or expired one, or its task is no longer claimed or
            running by the token's worker and attempt (completed, failed, cancelled,
            released, timed out, or its lease ran out).
    """
    if not token:
        raise Unauthorized("Not authenticated: send 'Authorization: Bearer <token>'.")
    data = _claims(token, auth_settings)
    task_id = uuid.UUID(str(data["tid"]))
    async with session_maker() as session:
        row = await lease_row(session, task_id)
    worker_id = uuid.UUID(str(data["wid"]))
    attempt = int(data["att"])
    if (
        row is None
        or row.status not in ACTIVE_STATUSES
        or row.worker_id != worker_id
        or row.attempt != attempt
        or lease_expired(row.lease_expires_at, utcnow())
    ):
        raise Unauthorized("The task token's task is no longer running under this claim.")
    return TaskCredential(
        task_id=task_id,
        worker_id=worker_id,
        attempt=attempt,
        user_id=uuid.UUID(str(data["sub"])),
        room_id=row.room_id,
        job_name=f"{row.job_room}:{row.category}:{row.name}",
    )
