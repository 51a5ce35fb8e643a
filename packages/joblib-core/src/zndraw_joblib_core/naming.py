"""Job naming rules: ``{room_id}:{category}:{name}`` and room ids."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "GLOBAL_ROOM",
    "INTERNAL_ROOM",
    "MAX_CATEGORY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_ROOM_ID_LENGTH",
    "JobName",
    "build_job_name",
    "is_valid_job_part",
    "is_valid_room_id",
    "parse_job_name",
    "visible_rooms",
]

GLOBAL_ROOM = "@global"
"""The room of jobs visible from every room."""

INTERNAL_ROOM = "@internal"
"""The room of the host's server-side jobs: registered by the host in code, visible from
every room, never registered over HTTP."""

MAX_ROOM_ID_LENGTH = 255
"""Longest accepted room id."""

MAX_CATEGORY_LENGTH = 64
"""Longest accepted category."""

MAX_NAME_LENGTH = 255
"""Longest accepted job name (the last part of the full name)."""

# Control characters (Unicode category Cc: C0, DEL and C1), '/', ':' and '@' never appear
# in room ids; names and categories may not contain control characters, '/' or ':' either
# (they would make the full name and the URL ambiguous). Unpaired UTF-16 surrogates (a
# decoded string holds no paired ones) are not text: UTF-8 and the databases refuse them.
_FORBIDDEN_IN_ROOM = re.compile(r"[@:/\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FORBIDDEN_IN_PART = re.compile(r"[:/\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class JobName(NamedTuple):
    """The three parts of a job's full name."""

    room_id: str
    category: str
    name: str

    @property
    def full_name(self) -> str:
        """The joined ``{room_id}:{category}:{name}`` form."""
        return build_job_name(self.room_id, self.category, self.name)


def is_valid_room_id(room_id: str) -> bool:
    """Return whether ``room_id`` may name a room.

    A room id is ``@global``, ``@internal`` or a non-empty string of at most 255 characters without
    ``@``, ``:``, ``/``, surrounding white space, control characters or unpaired surrogates.
    """
    if room_id in (GLOBAL_ROOM, INTERNAL_ROOM):
        return True
    return (
        0 < len(room_id) <= MAX_ROOM_ID_LENGTH
        and room_id.strip() == room_id
        and _FORBIDDEN_IN_ROOM.search(room_id) is None
    )


def is_valid_job_part(value: str, max_length: int = MAX_NAME_LENGTH) -> bool:
    """Return whether ``value`` may be a job category or name.

    It must be non-empty, at most ``max_length`` characters, free of surrounding white space,
    and contain neither ``:``, ``/``, control characters nor unpaired surrogates.
    """
    return (
        0 < len(value) <= max_length
        and value.strip() == value
        and _FORBIDDEN_IN_PART.search(value) is None
    )


def build_job_name(room_id: str, category: str, name: str) -> str:
    """Join the parts of a job name into ``{room_id}:{category}:{name}``."""
    return f"{room_id}:{category}:{name}"


def parse_job_name(full_name: str) -> JobName | None:
    """Split a full job name into its parts.

    Args:
        full_name: A string of the form ``{room_id}:{category}:{name}``.

    Returns:
        The parts, or None when the string does not have that form or a part breaks the
        naming rules.
    """
    parts = full_name.split(":")
    if len(parts) != 3:
        return None
    room_id, category, name = parts
    if not (
        is_valid_room_id(room_id)
        and is_valid_job_part(category, MAX_CATEGORY_LENGTH)
        and is_valid_job_part(name)
    ):
        return None
    return JobName(room_id, category, name)


def visible_rooms(room_id: str) -> tuple[str, ...]:
    """Return the job rooms visible from ``room_id``: its own, ``@global`` and ``@internal``.

    ``@global`` and ``@internal`` see only their own jobs.
    """
    if room_id in (GLOBAL_ROOM, INTERNAL_ROOM):
        return (room_id,)
    return (room_id, GLOBAL_ROOM, INTERNAL_ROOM)
