"""Provider reads: cache, dispatch once per parameter hash, long-poll; result uploads.

A read that misses the cache marks itself in flight (once per provider and hash, however
many readers wait) and wakes the provider's worker's claim long-poll (key
``provider-reads:{worker}``), whose answer lists the read. Readers sleep on the notifier
(key ``provider-result:{provider}:{hash}``; PostgreSQL ``NOTIFY`` carries it across
processes) until the worker uploads the answer, the provider goes away
(``provider:{provider}``), or the wait ends (504 ``provider-timeout``).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from zndraw_joblib_core import (
    Forbidden,
    InvalidPayload,
    PayloadTooLarge,
    ProblemDetail,
    ProviderNotFound,
    ProviderReadFailed,
    ProviderResultReady,
    ProviderTimeout,
    RequestValidationFailed,
    TooManyRequests,
    decoded_params,
    request_hash,
)
from zndraw_joblib_server.models import Provider
from zndraw_joblib_server.services.access import Actor
from zndraw_joblib_server.services.common import check_size
from zndraw_joblib_server.services.internal_providers import InternalProviders
from zndraw_joblib_server.services.providers import Target, gone_key, resolve
from zndraw_joblib_server.services.validation import compiled_for, payload_errors
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage import Database, EventSink, deliver
from zndraw_joblib_server.storage.caches import SizedCache
from zndraw_joblib_server.storage.provider_cache import (
    CachedResult,
    PendingRead,
    internal_cache_of,
    provider_cache_of,
    reads_key,
)

__all__ = ["read_provider", "result_key", "upload_result"]

PROBLEM_JSON = "application/problem+json"
_HASH = re.compile(r"^[0-9a-f]{64}$")


def result_key(provider_id: uuid.UUID, rhash: str) -> str:
    """Wake-up key of the readers of one read."""
    return f"provider-result:{provider_id}:{rhash}"


async def _check_params(
    params: dict[str, str], schema: dict[str, Any], settings: JobLibSettings, cache: SizedCache
) -> None:
    """Refuse parameters that are too large or match the schema neither as text nor as JSON.

    Raises:
        PayloadTooLarge: Larger than ``provider_max_params_bytes``.
        InvalidPayload: They do not match the provider's schema (422).
    """
    check_size("parameters", params, settings.provider_max_params_bytes, 4)
    if not schema:
        return
    compiled = await compiled_for(schema, settings, cache)
    most = settings.max_payload_errors
    found = payload_errors(compiled.validator, params, most)
    if found is None or payload_errors(compiled.validator, decoded_params(params), most) is None:
        return
    listed, count = found
    raise InvalidPayload(
        f"The parameters do not match the provider's schema ({count} error(s)).",
        errors=listed,
        error_count=count,
    )


async def read_provider(
    db: Database,
    room_id: str,
    full_name: str,
    params: dict[str, str],
    wait: float,
    settings: JobLibSettings,
    internal: InternalProviders,
) -> tuple[CachedResult, bool]:
    """Answer a read: from the cache, from an ``@internal`` provider, or via the worker.

    Returns:
        The answer, and whether the request waited for it (False: it was cached).

    Raises:
        ProviderNotFound: No such provider, or it went away while the read waited.
        InvalidPayload: The parameters do not match its schema.
        TooManyRequests: Too many reads of the provider are in flight.
        ProviderTimeout: No answer within ``wait`` seconds (504, ``Retry-After``).
    """
    async with db.read() as session:
        target = await resolve(session, room_id, full_name, internal)
    await _check_params(params, target.schema, settings, db.caches.schemas)
    rhash = request_hash(params)
    cache = provider_cache_of(db) if target.internal is None else internal_cache_of(db)
    hit = await cache.get(target.id, rhash)
    if hit is not None:
        return hit, False
    if target.internal is not None:
        return await _run_internal(db, target, params, rhash, settings), False
    keys = [result_key(target.id, rhash), gone_key(target.id)]
    async with db.notifier.subscribe(keys) as sub:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        current: Target | None = target
        while current is not None:
            # Looked up after subscribing: an answer stored meanwhile is not missed.
            hit = await cache.get(target.id, rhash)
            if hit is not None:
                return hit, True
            await _dispatch(db, current, params, rhash, settings)
            remaining = deadline - loop.time()
            if remaining <= 0 or not await sub.wait(remaining):
                break
            current = await _still_there(db, target)
        if current is None:
            raise ProviderNotFound(
                f"Provider '{full_name[:300]}' went away while the read waited (its worker "
                "stopped or it was deleted)."
            )
    hit = await cache.get(target.id, rhash)
    if hit is not None:
        return hit, True
    raise ProviderTimeout(
        f"Provider '{full_name[:300]}' did not answer within {wait:g} s; retry.",
        headers={"Retry-After": "2"},
    )


async def _still_there(db: Database, target: Target) -> Target | None:
    """The provider as registered now (its worker may have changed), or None when gone."""
    async with db.read() as session:
        row = await session.get(Provider, target.id)
    return None if row is None else Target.of(row)


async def _dispatch(
    db: Database, target: Target, params: dict[str, str], rhash: str, settings: JobLibSettings
) -> None:
    """Mark the read in flight unless it is, and wake the worker when it is new."""
    assert target.worker_id is not None
    read = PendingRead(target.id, target.full_name, rhash, dict(params))
    begun = await provider_cache_of(db).begin(
        read,
        target.worker_id,
        settings.provider_inflight_ttl_seconds,
        settings.provider_max_reads_in_flight,
    )
    if begun == "full":
        raise TooManyRequests(
            f"Provider '{target.full_name[:300]}' has too many reads in flight; retry.",
            headers={"Retry-After": "1"},
        )
    if begun == "dispatch":
        db.announce({reads_key(target.worker_id): None})


async def _run_internal(
    db: Database, target: Target, params: dict[str, str], rhash: str, settings: JobLibSettings
) -> CachedResult:
    """Run an ``@internal`` read once however many readers of this process ask."""
    key, cache = (target.id, rhash), internal_cache_of(db)  # the app's, not the process's
    running = cache.running.get(key)
    if running is not None:
        return await asyncio.shield(running)
    future: asyncio.Future[CachedResult] = asyncio.get_running_loop().create_future()
    cache.running[key] = future
    try:
        result = await _internal_result(target, params, settings)
        await cache.put(target.id, rhash, result, settings.provider_result_ttl_seconds)
        future.set_result(result)
        return result
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning without other readers
        raise
    finally:
        del cache.running[key]


async def _internal_result(
    target: Target, params: dict[str, str], settings: JobLibSettings
) -> CachedResult:
    assert target.internal is not None
    try:
        async with asyncio.timeout(settings.provider_internal_timeout_seconds):
            data = await target.internal.run(params)
    except TimeoutError:
        seconds = settings.provider_internal_timeout_seconds
        return failure_result(f"the read took longer than {seconds:g} s")
    except Exception as exc:  # the provider's failure is the read's answer
        return failure_result(f"{type(exc).__name__}: {exc}"[:2000])
    if isinstance(data, bytes | bytearray | memoryview):
        return CachedResult(200, target.content_type, bytes(data))
    return CachedResult(200, target.content_type, json.dumps(data).encode())


def failure_result(detail: str) -> CachedResult:
    """A failed read's answer: a ``provider-read-failed`` problem."""
    problem = ProviderReadFailed(detail).to_problem()
    return CachedResult(problem.status, PROBLEM_JSON, problem.model_dump_json().encode())


def _error_result(body: bytes) -> CachedResult:
    """An uploaded error: the worker's problem with its own status, else wrapped."""
    try:
        problem = ProblemDetail.model_validate_json(body)
    except ValueError:
        return failure_result(body.decode(errors="replace")[:2000] or "the read failed")
    if not 400 <= problem.status <= 599:
        problem.status = ProviderReadFailed.status
    return CachedResult(problem.status, PROBLEM_JSON, problem.model_dump_json().encode())


async def upload_result(
    db: Database,
    sink: EventSink | None,
    actor: Actor,
    provider_id: uuid.UUID,
    rhash: str,
    body: bytes,
    error: bool,
    settings: JobLibSettings,
) -> None:
    """``POST /providers/{id}/results``: cache the worker's answer and wake its readers.

    Raises:
        ProviderNotFound: No such provider.
        Forbidden: The caller does not own it.
        RequestValidationFailed: The request hash is malformed, or a JSON answer is not JSON.
        PayloadTooLarge: The answer exceeds ``provider_max_result_bytes``.
    """
    async with db.read() as session:
        provider = await session.get(Provider, provider_id)
    if provider is None:
        raise ProviderNotFound(f"Provider {provider_id} not found.")
    if provider.user_id != actor.id:
        raise Forbidden("Only the provider's owner may upload its results.")
    if not _HASH.match(rhash):
        raise RequestValidationFailed("X-Request-Hash must be 64 lowercase hex digits.")
    limit = settings.provider_max_result_bytes
    if len(body) > limit:
        raise PayloadTooLarge(
            f"The result is {len(body)} bytes; the limit is {limit}.", limit=limit
        )
    if error:
        result = _error_result(body)
    else:
        if provider.content_type.split(";")[0].strip().endswith("json"):
            try:
                json.loads(body)
            except ValueError:
                raise RequestValidationFailed(
                    f"The provider answers {provider.content_type}, but the body is not JSON."
                ) from None
        result = CachedResult(200, provider.content_type, body)
    await provider_cache_of(db).put(
        provider_id, rhash, result, settings.provider_result_ttl_seconds
    )
    db.announce({result_key(provider_id, rhash): None})
    if sink is not None:
        event = ProviderResultReady(
            room_id=provider.room_id, provider_name=provider.full_name, request_hash=rhash
        )
        await deliver(sink, [event])
