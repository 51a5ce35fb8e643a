"""Provider routes: register, list, show, read (long-poll), delete; upload a result."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from zndraw_joblib_core import Page, ProviderRegisterRequest, ProviderResponse
from zndraw_joblib_server.dependencies import (
    ActorDep,
    DatabaseDep,
    EventSinkDep,
    ReadableRoom,
    SettingsDep,
    WritableRoom,
)
from zndraw_joblib_server.routes._common import (
    DEFAULT_LIMIT,
    JobLibRoute,
    Limit,
    Offset,
    PreferHeader,
    problems,
    wait_seconds,
)
from zndraw_joblib_server.services import provider_reads
from zndraw_joblib_server.services import providers as provider_service
from zndraw_joblib_server.services.common import written
from zndraw_joblib_server.services.internal_providers import InternalProviders

__all__ = ["internal_providers_of", "router"]

router = APIRouter(route_class=JobLibRoute, tags=["providers"], redirect_slashes=False)

_NO_PROVIDERS = InternalProviders()
_ASKS_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=")


def internal_providers_of(request: Request) -> InternalProviders:
    """The app's ``@internal`` providers (``app.state.joblib_internal_providers``)."""
    found = getattr(request.app.state, "joblib_internal_providers", None)
    return found if isinstance(found, InternalProviders) else _NO_PROVIDERS


@router.put(
    "/rooms/{room_id}/providers",
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 403, 404, 413, 429)
    | {200: {"model": ProviderResponse, "description": "Updated"}},
)
async def register_provider(
    room_id: WritableRoom,
    body: ProviderRegisterRequest,
    response: Response,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
) -> ProviderResponse:
    """Register a provider (201) or update the caller's own (200).

    Idempotent on room, category and name. `@global` needs a superuser; only the owner
    (or a superuser) may update a provider. Without `worker_id` a worker is created.
    """
    await provider_service.check_registration(actor, room_id, body, settings, db.caches.schemas)
    provider, created = await written(
        db, sink, provider_service.register_provider, actor, room_id, body, settings
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return provider


@router.get(
    "/rooms/{room_id}/providers",
    responses=problems(400, 403),
)
async def list_providers(
    room_id: ReadableRoom,
    request: Request,
    db: DatabaseDep,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> Page[ProviderResponse]:
    """Providers visible from the room: `@internal` ones, then the room's and `@global`."""
    async with db.read() as session:
        return await provider_service.list_providers(
            session, room_id, internal_providers_of(request), limit, offset
        )


@router.get(
    "/rooms/{room_id}/providers/{full_name:path}/info",
    responses=problems(400, 403, 404),
)
async def provider_info(
    room_id: ReadableRoom, full_name: str, request: Request, db: DatabaseDep
) -> ProviderResponse:
    """One provider by its full name `{room_id}:{category}:{name}`, as seen from the room."""
    async with db.read() as session:
        return await provider_service.provider_info(
            session, room_id, full_name, internal_providers_of(request)
        )


@router.get(
    "/rooms/{room_id}/providers/{full_name:path}",
    response_class=Response,
    responses=problems(400, 403, 404, 413, 429, 502, 504)
    | {200: {"description": "The provider's answer, in its `content_type`"}},
)
async def read_provider(
    room_id: ReadableRoom,
    full_name: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    prefer: PreferHeader = None,
) -> Response:
    """Read a provider; the query parameters are the read's parameters.

    A cached answer is returned at once. Otherwise the read goes to the provider's worker
    (once per parameter hash, however many readers wait) and the request waits up to
    `Prefer: wait=N` seconds (capped; a default without the header) for the answer
    (then `Preference-Applied`): 504 `provider-timeout` with `Retry-After` if none came.
    A failed read is answered with its problem (cached as well).
    """
    asked = prefer is not None and _ASKS_WAIT.search(prefer) is not None
    cap = settings.provider_long_poll_max_seconds
    default = min(settings.provider_long_poll_default_seconds, cap)
    wait = (wait_seconds(prefer, cap) or 0.0) if asked else default
    result, waited = await provider_reads.read_provider(
        db,
        room_id,
        full_name,
        dict(request.query_params),
        wait,
        settings,
        internal_providers_of(request),
    )
    headers = {"Preference-Applied": f"wait={wait:g}"} if asked and waited else None
    return Response(
        result.body, status_code=result.status, media_type=result.content_type, headers=headers
    )


@router.delete(
    "/providers/{provider_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(403, 404),
)
async def delete_provider(
    provider_id: uuid.UUID, actor: ActorDep, db: DatabaseDep, sink: EventSinkDep
) -> Response:
    """Remove a provider (owner or superuser); readers waiting on it are answered 404."""
    await written(db, sink, provider_service.delete_provider, actor, provider_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/providers/{provider_id}/results",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(403, 404, 413),
)
async def upload_result(
    provider_id: uuid.UUID,
    request: Request,
    actor: ActorDep,
    db: DatabaseDep,
    settings: SettingsDep,
    sink: EventSinkDep,
    x_request_hash: Annotated[
        str, Header(description="The hash of the read answered (from the claim answer).")
    ],
    x_result_status: Annotated[
        str | None,
        Header(description="`error`: the body is a problem (the read failed); cached too."),
    ] = None,
) -> Response:
    """Upload the answer to a read (the provider's owner); wakes the waiting readers.

    The body is the answer in the provider's `content_type` (raw bytes). With
    `X-Result-Status: error` it is an RFC 9457 problem, answered to readers with its status.
    """
    body = await request.body()
    error = (x_result_status or "").strip().lower() == "error"
    await provider_reads.upload_result(
        db, sink, actor, provider_id, x_request_hash, body, error, settings
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
