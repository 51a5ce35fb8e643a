"""``@internal`` providers: registered in code by the host, served inside the server.

They need no worker and never expire. A read runs ``read(params)`` in this process (a plain
function in a thread, a coroutine function on the event loop) and its answer is cached like
a worker's.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zndraw_joblib_core import (
    INTERNAL_ROOM,
    MAX_CATEGORY_LENGTH,
    InvalidJobName,
    ProviderResponse,
    build_job_name,
    is_valid_job_part,
)
from zndraw_joblib_server.models import utcnow

__all__ = ["InternalProvider", "InternalProviders"]

_NAMESPACE = uuid.UUID("6f1c3a52-4d0e-4c55-9c1e-7a6f0b2d9e11")

ReadFunction = Callable[[dict[str, str]], Any | Awaitable[Any]]
"""What an internal provider runs: parameters in; JSON-able data or bytes out."""


@dataclass
class InternalProvider:
    """A server-side provider in the ``@internal`` room.

    Args:
        category: Its category (e.g. ``filesystem``).
        name: Its name; the full name is ``@internal:{category}:{name}``.
        read: Called with the read's query parameters; returns JSON-able data, or bytes
            for a binary ``content_type``. It may be a coroutine function. An exception is
            answered (and cached) as a ``provider-read-failed`` problem.
        schema: JSON Schema of the parameters (validated before ``read`` runs).
        content_type: Media type of the answers.
    """

    category: str
    name: str
    read: ReadFunction
    schema: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not (
            is_valid_job_part(self.category, MAX_CATEGORY_LENGTH) and is_valid_job_part(self.name)
        ):
            raise InvalidJobName(f"Invalid internal provider name {self.full_name!r}.")

    @property
    def full_name(self) -> str:
        """``@internal:{category}:{name}``."""
        return build_job_name(INTERNAL_ROOM, self.category, self.name)

    @property
    def id(self) -> uuid.UUID:
        """A stable id derived from the full name (the same in every process)."""
        return uuid.uuid5(_NAMESPACE, self.full_name)

    def response(self) -> ProviderResponse:
        """The provider as listings show it."""
        return ProviderResponse(
            id=self.id,
            room_id=INTERNAL_ROOM,
            category=self.category,
            name=self.name,
            full_name=self.full_name,
            schema=self.schema,
            content_type=self.content_type,
            worker_id=None,
            created_at=self.created_at,
        )

    async def run(self, params: dict[str, str]) -> Any:
        """Run ``read`` (a plain function runs in a thread, off the event loop)."""
        if inspect.iscoroutinefunction(self.read):
            return await self.read(params)
        result = await asyncio.to_thread(self.read, params)
        if inspect.isawaitable(result):
            result = await result
        return result


class InternalProviders:
    """The ``@internal`` providers of one app, by full name."""

    def __init__(self, providers: Iterable[InternalProvider] = ()) -> None:
        self._by_name = {provider.full_name: provider for provider in providers}

    def add(self, provider: InternalProvider) -> None:
        """Register (or replace) a provider."""
        self._by_name[provider.full_name] = provider

    def get(self, full_name: str) -> InternalProvider | None:
        """The provider of that full name, if registered."""
        return self._by_name.get(full_name)

    def all(self) -> list[InternalProvider]:
        """Every provider, by full name."""
        return [self._by_name[name] for name in sorted(self._by_name)]
