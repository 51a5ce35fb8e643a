"""Who is acting, and the room access policy hosts can replace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from zndraw_joblib_core import Forbidden

__all__ = ["Actor", "AllowAuthenticated", "RoomAccess", "check_room"]


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


class RoomAccess(Protocol):
    """Decides who may read or write a room (override ``get_room_access`` to change it)."""

    async def can_read(self, actor: Actor, room_id: str) -> bool:
        """Whether ``actor`` may see the room's jobs, workers and tasks."""
        ...

    async def can_write(self, actor: Actor, room_id: str) -> bool:
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


async def check_room(access: RoomAccess, actor: Actor, room_id: str, *, write: bool) -> None:
    """Raise :class:`Forbidden` unless the policy lets ``actor`` read (or write) the room."""
    allowed = (
        await access.can_write(actor, room_id) if write else await access.can_read(actor, room_id)
    )
    if not allowed:
        verb = "write to" if write else "read"
        raise Forbidden(f"You may not {verb} room '{room_id}'.")
