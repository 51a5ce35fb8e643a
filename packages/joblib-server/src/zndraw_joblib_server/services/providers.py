"""The provider registry: register, list, show and delete providers; drop a worker's.

A provider belongs to the worker that registered it and goes with it. ``@internal``
providers live in code (:mod:`.internal_providers`), never in the table.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    MAX_CATEGORY_LENGTH,
    Forbidden,
    InvalidCategory,
    InvalidJobName,
    Page,
    ProviderNotFound,
    ProviderRegisterRequest,
    ProviderResponse,
    ProvidersChanged,
    RequestValidationFailed,
    is_valid_job_part,
    visible_rooms,
)
from zndraw_joblib_server.models import Provider
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import (
    count_rows,
    find_or_insert,
    page_of,
    validate_room,
)
from zndraw_joblib_server.services.internal_providers import InternalProvider, InternalProviders
from zndraw_joblib_server.services.jobs import _worker_for
from zndraw_joblib_server.services.validation import check_schema
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import UnitOfWork
from zndraw_joblib_server.storage.caches import SizedCache

__all__ = [
    "Target",
    "check_registration",
    "delete_provider",
    "drop_worker_providers",
    "gone_key",
    "list_providers",
    "provider_info",
    "register_provider",
    "resolve",
]

_MEDIA_TYPE = re.compile(r"^[\w.+-]{1,127}/[\w.+-]{1,127}(\s*;[ -~]{0,200})?$")


def gone_key(provider_id: uuid.UUID) -> str:
    """Wake-up key of a provider's waiting readers when it is deleted or replaced."""
    return f"provider:{provider_id}"


@dataclass(frozen=True, slots=True)
class Target:
    """A provider a read goes to: a registered one, or an ``@internal`` one."""

    id: uuid.UUID
    full_name: str
    room_id: str
    schema: dict[str, Any]
    content_type: str
    worker_id: uuid.UUID | None
    user_id: uuid.UUID | None
    internal: InternalProvider | None = None

    @classmethod
    def of(cls, row: Provider) -> Target:
        """A registered provider's row as a read target."""
        return cls(
            row.id,
            row.full_name,
            row.room_id,
            row.schema_,
            row.content_type,
            row.worker_id,
            row.user_id,
        )


def _response(p: Provider) -> ProviderResponse:
    return ProviderResponse(
        **{field: getattr(p, field) for field in ProviderResponse.model_fields}
    )


async def check_registration(
    actor: Actor,
    room_id: str,
    body: ProviderRegisterRequest,
    settings: JobLibSettings,
    cache: SizedCache | None = None,
) -> None:
    """Check a registration before any database work (the schema off the event loop).

    Raises:
        ProblemError: The room, category, name, media type or schema is refused, or the
            caller may not register here.
    """
    validate_room(room_id)
    if room_id == GLOBAL_ROOM and not actor.is_superuser:
        raise Forbidden("Only a superuser may register @global providers.")
    if room_id == INTERNAL_ROOM:
        raise Forbidden("@internal providers are registered by the host in code, not over HTTP.")
    allowed = settings.allowed_provider_categories
    if allowed is not None and body.category not in allowed:
        raise InvalidCategory(
            f"Provider category {body.category!r} is not allowed; allowed: "
            f"{', '.join(allowed) or 'none'}."
        )
    if not (
        is_valid_job_part(body.category, MAX_CATEGORY_LENGTH) and is_valid_job_part(body.name)
    ):
        raise InvalidJobName(
            f"Invalid provider name {body.name!r} or category {body.category!r}: 1 to 255 "
            "characters (categories 64) without ':', '/', control characters or "
            "surrounding spaces."
        )
    if not _MEDIA_TYPE.match(body.content_type):
        raise RequestValidationFailed(f"Invalid content_type {body.content_type[:100]!r}.")
    await check_schema(body.schema_, settings, cache)


async def _find(
    session: AsyncSession, room_id: str, category: str, name: str, *, lock: bool = True
) -> Provider | None:
    stmt = select(Provider).where(
        Provider.room_id == room_id, Provider.category == category, Provider.name == name
    )
    return (await session.execute(stmt.with_for_update() if lock else stmt)).scalar_one_or_none()


async def register_provider(
    uow: UnitOfWork,
    actor: Actor,
    room_id: str,
    body: ProviderRegisterRequest,
    settings: JobLibSettings,
) -> tuple[ProviderResponse, bool]:
    """Register a provider (created: True) or update the caller's own (False).

    An update replaces schema, media type and worker, and drops what was cached for the
    old registration (its waiting readers are asked again through the new worker).

    Raises:
        Forbidden: The provider exists and belongs to somebody else (superusers pass).
        WorkerNotFound: ``worker_id`` is not one of the caller's workers.
    """
    session = uow.session
    worker = await _worker_for(uow, actor, body.worker_id, settings)
    found, created = await find_or_insert(
        session,
        lambda: _find(session, room_id, body.category, body.name),
        lambda: Provider(
            room_id=room_id,
            category=body.category,
            name=body.name,
            schema_=body.schema_,
            content_type=body.content_type,
            worker_id=worker.id,
            user_id=actor.id,
        ),
    )
    if not created:
        if found.user_id != actor.id and not actor.is_superuser:
            raise Forbidden(f"Provider '{found.full_name}' belongs to another user.")
        found.schema_, found.content_type = body.schema_, body.content_type
        found.worker_id, found.user_id = worker.id, actor.id  # served by the new worker
        await session.flush()
        uow.wake_all(gone_key(found.id))
    uow.events.append(ProvidersChanged(room_id=room_id))
    return _response(found), created


async def resolve(
    session: AsyncSession, room_id: str, full_name: str, internal: InternalProviders
) -> Target:
    """The provider ``full_name`` as seen from ``room_id`` (its own, ``@global``, ``@internal``).

    Raises:
        ProviderNotFound: No such provider, or not visible from the room.
    """
    parts = full_name.split(":")
    if len(parts) != 3:
        raise ProviderNotFound(f"Invalid provider name {full_name[:300]!r}.")
    owner, category, name = parts
    if owner == INTERNAL_ROOM:
        found = internal.get(full_name)
        if found is None:
            raise ProviderNotFound(f"Provider '{full_name[:300]}' not found.")
        return Target(
            found.id, full_name, owner, found.schema, found.content_type, None, None, found
        )
    if owner not in visible_rooms(room_id):
        raise ProviderNotFound(f"Provider '{full_name[:300]}' not found in room '{room_id}'.")
    row = await _find(session, owner, category, name, lock=False)
    if row is None:
        raise ProviderNotFound(f"Provider '{full_name[:300]}' not found.")
    return Target.of(row)


async def provider_info(
    session: AsyncSession, room_id: str, full_name: str, internal: InternalProviders
) -> ProviderResponse:
    """``GET .../providers/{full_name}/info``."""
    target = await resolve(session, room_id, full_name, internal)
    if target.internal is not None:
        return target.internal.response()
    row = await session.get(Provider, target.id)
    if row is None:  # pragma: no cover - deleted between the two reads
        raise ProviderNotFound(f"Provider '{full_name[:300]}' not found.")
    return _response(row)


async def list_providers(
    session: AsyncSession, room_id: str, internal: InternalProviders, limit: int, offset: int
) -> Page[ProviderResponse]:
    """The providers visible from ``room_id``: ``@internal`` ones first, then newest first."""
    inner = [p.response() for p in internal.all()]
    where = [Provider.room_id.in_(visible_rooms(room_id))]
    total = await count_rows(session, Provider, where)
    items = inner[offset : offset + limit]
    rest = limit - len(items)
    if rest > 0:
        page = page_of(select(Provider).where(*where), Provider, rest, max(offset - len(inner), 0))
        items += [_response(p) for p in await session.scalars(page)]
    return Page[ProviderResponse](
        items=items, total=total + len(inner), limit=limit, offset=offset
    )


async def delete_provider(uow: UnitOfWork, actor: Actor, provider_id: uuid.UUID) -> None:
    """``DELETE /providers/{id}``: the owner or a superuser removes a provider.

    Raises:
        ProviderNotFound: No such provider.
        Forbidden: It belongs to somebody else.
    """
    found = await uow.session.get(Provider, provider_id, with_for_update=True)
    if found is None:
        raise ProviderNotFound(f"Provider {provider_id} not found.")
    if found.user_id != actor.id and not actor.is_superuser:
        raise Forbidden("This provider belongs to a different user.")
    await _drop(uow, [found])


async def drop_worker_providers(uow: UnitOfWork, worker_ids: list[uuid.UUID]) -> int:
    """Delete the providers of workers about to be removed; how many there were."""
    stmt = select(Provider).where(Provider.worker_id.in_(worker_ids))
    rows = list(await uow.session.scalars(stmt))
    await _drop(uow, rows)
    return len(rows)


async def _drop(uow: UnitOfWork, providers: list[Provider]) -> None:
    """Delete ``providers`` (their cached answers and marks go by cascade); wake readers."""
    for provider in providers:
        await uow.session.delete(provider)
        uow.wake_all(gone_key(provider.id))
    for room in sorted({p.room_id for p in providers}):
        uow.events.append(ProvidersChanged(room_id=room))
    if providers:
        await uow.session.flush()
