"""Who is acting, and the room access policy hosts can replace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from zndraw_joblib_core import Forbidden, ProblemDetail, ProblemError

if TYPE_CHECKING:
    from zndraw_joblib_server.models import Job

__all__ = [
    "Actor",
    "AllowAuthenticated",
    "HostProblem",
    "JobAccess",
    "OwnerOrSuperuser",
    "RoomAccess",
    "Verdict",
    "check_room",
    "check_serve",
    "may_read",
]


@dataclass(frozen=True)
class Actor:
    """The authenticated caller.

    Attributes:
        id: The user's id.
        is_superuser: Whether the user may act on everybody's workers and tasks.
        user: The host's user object (handed to the room access policy).
    """

    id: uuid.UUID
    is_superuser: bool = False
    user: Any = None

    @classmethod
    def from_user(cls, user: Any) -> Actor:
        """Build an actor from a zndraw-auth (fastapi-users) user."""
        return cls(id=user.id, is_superuser=bool(user.is_superuser), user=user)


Verdict = bool | ProblemError | ProblemDetail
"""What a room access hook answers: allowed (True), refused (False: 403 ``forbidden``), or
refused with the host's own problem (answered as is, e.g. 423 for a locked room)."""


class RoomAccess(Protocol):
    """Decides who may read or write a room (override ``get_room_access`` to change it).

    A refusal is ``False`` (answered 403 ``forbidden``), or a problem of the host's own: the
    hook may raise a :class:`~zndraw_joblib_core.ProblemError` subclass, or return one (or
    a :class:`~zndraw_joblib_core.ProblemDetail`), and the request is answered with it.
    """

    async def can_read(self, actor: Actor, room_id: str) -> Verdict:
        """Whether ``actor`` may see the room's jobs, workers and tasks."""
        ...

    async def can_write(self, actor: Actor, room_id: str) -> Verdict:
        """Whether ``actor`` may register jobs in, or submit tasks from, the room."""
        ...


class AllowAuthenticated:
    """The default policy: every authenticated user may read and write every room."""

    async def can_read(self, actor: Actor, room_id: str) -> bool:
        """Always True."""
        return True

    async def can_write(self, actor: Actor, room_id: str) -> bool:
        """Always True."""
        return True


class HostProblem(ProblemError):
    """A host's problem body, returned by its room access hook, raised as it is."""

    def __init__(self, body: ProblemDetail) -> None:
        super().__init__(body.detail, instance=body.instance)
        self.body = body

    @property
    def http_status(self) -> int:
        """The body's status."""
        return self.body.status

    def to_problem(self) -> ProblemDetail:
        """The body, unchanged."""
        return self.body.model_copy()


async def may_read(access: RoomAccess, actor: Actor, room_id: str) -> bool:
    """Whether the policy lets ``actor`` read the room (a returned problem is a refusal)."""
    verdict = await access.can_read(actor, room_id)
    return not isinstance(verdict, ProblemError | ProblemDetail) and bool(verdict)


async def check_room(access: RoomAccess, actor: Actor, room_id: str, *, write: bool) -> None:
    """Raise unless the policy lets ``actor`` read (or write) the room.

    Raises:
        Forbidden: The policy answered ``False``.
        ProblemError: The policy's own problem (raised by it, or returned).
    """
    hook = access.can_write if write else access.can_read
    allowed = await hook(actor, room_id)
    if isinstance(allowed, ProblemError):
        raise allowed
    if isinstance(allowed, ProblemDetail):
        raise HostProblem(allowed)
    if not allowed:
        verb = "write to" if write else "read"
        raise Forbidden(f"You may not {verb} room '{room_id}'.")


class JobAccess(Protocol):
    """Decides whose workers may serve a job (override ``get_job_access`` to change it).

    Serving means linking a worker to the job (``PUT /rooms/{room}/jobs``), and through that
    link receiving its tasks' payloads and reporting their results: claims only ever hand
    out tasks of the jobs a worker is linked to, so the rule is checked when the link is
    made. A link made while the policy allowed it stays until the worker is removed.
    """

    async def can_serve(self, actor: Actor, job: Job) -> bool:
        """Whether ``actor``'s workers may serve ``job`` (its ``owner_id`` may be None)."""
        ...


class OwnerOrSuperuser:
    """The default job policy: the job's owner (who registered it first) and superusers.

    A job without an owner (registered before jobs had owners, or whose owner was deleted)
    is served by superusers only, until it is soft-deleted (no workers, no unfinished tasks):
    whoever registers it then becomes its owner.
    """

    async def can_serve(self, actor: Actor, job: Job) -> bool:
        """True for superusers and for the job's owner."""
        return actor.is_superuser or (job.owner_id is not None and job.owner_id == actor.id)


async def check_serve(access: JobAccess, actor: Actor, job: Job) -> None:
    """Raise :class:`Forbidden` unless the policy lets ``actor``'s workers serve ``job``."""
    if not await access.can_serve(actor, job):
        raise Forbidden(
            f"Job '{job.full_name}' belongs to another user: only its owner's (or a "
            "superuser's) workers may serve it. Register the job under another name."
        )
