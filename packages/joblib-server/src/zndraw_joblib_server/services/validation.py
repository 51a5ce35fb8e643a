"""Validating payloads against job schemas without stalling the server.

Validation runs in native code (``jsonschema-rs``) that holds the GIL, so a thread would not
keep the event loop free, and a schema with recursive references can make evaluation take
exponential time. Two paths therefore:

* A payload whose cost has a static bound below ``validation_inline_cost`` (the schema has
  no recursive reference; its expanded size times the payload's bytes bounds the work, and
  patterns match in linear time) is validated inline: this is the common, fast case.
* Any other payload goes to a separate process under ``validation_timeout_seconds``. A
  process can be killed, a thread cannot: on timeout the process pool is replaced, so a
  runaway validation never piles up, and at most ``validation_processes`` run at once.

Compiled validators are cached by schema text with a memory budget estimated from the
schemas' sizes (``schema_cache_bytes``), in the queue's own caches (one per app).

The validation processes are one pool per process, shared by the apps in it: they hold no
state of an app (each call sends the schema text and the payloads; the per-process validator
cache there is keyed by that text alone), and processes are costly to start. The pool only
grows to the largest ``validation_processes`` asked for, so apps with different settings do
not replace each other's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.pool import Pool
from typing import Any, cast

from zndraw_joblib_core import InvalidPayload, ServiceUnavailable
from zndraw_joblib_server.services.common import check_size
from zndraw_joblib_server.services.schemas import SchemaInfo, compile_schema, inspect_schema
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage.caches import SizedCache

__all__ = [
    "Compiled",
    "Failure",
    "cached_bytes",
    "check_schema",
    "compiled_for",
    "first_refused",
    "payload_errors",
    "validate_isolated",
]

_BYTES_PER_SCHEMA_BYTE = 8
"""A compiled validator plus its inspection take about 7.5x the schema's JSON text."""
_MAX_MESSAGE_CHARS = 500
"""One error message's length in a 422 (a message can quote a whole payload value)."""

_START_SECONDS = 60.0
"""How long a new validation process may take to start (imports on a busy machine)."""

Failure = tuple[int, list[dict[str, str]], int]
"""A refused payload: its index, the errors listed, and how many errors there were."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """A job schema ready for payloads.

    Attributes:
        text: The schema's JSON text (the cache key, and what the validation process gets).
        validator: The compiled validator.
        info: The schema's measured cost.
    """

    text: str
    validator: Any
    info: SchemaInfo

    def inline(self, payload_bytes: int, settings: JobLibSettings) -> bool:
        """Whether payloads of this total size may be validated in the request itself."""
        expanded = self.info.expanded
        return expanded is not None and expanded * payload_bytes <= settings.validation_inline_cost


def cached_bytes(cache: SizedCache) -> int:
    """Estimated memory held by a queue's compiled schemas (within ``schema_cache_bytes``)."""
    return cache.bytes


async def check_schema(
    schema: dict[str, Any], settings: JobLibSettings, cache: SizedCache | None = None
) -> None:
    """Check a schema for registration: its size, then the rest off the event loop.

    The limits are those of :func:`~.common.check_size` and :mod:`.schemas`.

    Args:
        schema: The job schema.
        settings: The queue's settings (the schema limits).
        cache: The queue's compiled schemas (``QueueCaches.schemas``), kept for its
            payloads; without it the schema is checked and nothing is kept.

    Raises:
        PayloadTooLarge: The schema is larger than ``max_schema_bytes``.
        RequestValidationFailed: It nests deeper than ``max_json_depth``, or holds what JSON
            or the databases cannot.
        InvalidSchema: The schema is refused.
    """
    check_size("schema", schema, settings.max_schema_bytes, settings.max_json_depth)
    await compiled_for(schema, settings, cache)


async def compiled_for(
    schema: dict[str, Any], settings: JobLibSettings, cache: SizedCache | None = None
) -> Compiled:
    """The compiled validator of a job's schema (compiled off the event loop).

    Args:
        schema: The job schema.
        settings: The queue's settings.
        cache: The queue's compiled schemas (``QueueCaches.schemas``) to look in and fill;
            without it the schema is compiled for this call only.

    Raises:
        InvalidSchema: The stored schema is refused (registered before the current limits).
    """
    text = json.dumps(schema, separators=(",", ":"))
    found: Compiled | None = None if cache is None else cache.get(text)
    if found is None:
        found = await asyncio.to_thread(_compile, schema, text, settings)
        if cache is not None:
            cost = len(text) * _BYTES_PER_SCHEMA_BYTE
            cache.put(text, found, cost, settings.schema_cache_bytes)
    return found


def _compile(schema: dict[str, Any], text: str, settings: JobLibSettings) -> Compiled:
    info = inspect_schema(schema, settings)
    return Compiled(text=text, validator=compile_schema(schema), info=info)


def payload_errors(
    validator: Any, payload: Any, max_errors: int
) -> tuple[list[dict[str, str]], int] | None:
    """The first ``max_errors`` errors (path and message) and their count; None when valid."""
    if validator.is_valid(payload):
        return None
    errors = validator.evaluate(payload).errors()
    listed = [
        {"path": e["instanceLocation"] or "/", "message": _clip(e["error"])}
        for e in errors[:max_errors]
    ]
    return listed, len(errors)


def _clip(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 1] + "…"


@lru_cache(maxsize=8)
def _worker_validator(text: str) -> Any:
    return compile_schema(json.loads(text))


def first_refused(validator: Any, payloads: Sequence[Any], max_errors: int) -> Failure | None:
    """The first payload ``validator`` refuses (index, errors listed, count), or None."""
    for index, payload in enumerate(payloads):
        found = payload_errors(validator, payload, max_errors)
        if found is not None:
            return index, *found
    return None


def _validate_in_worker(text: str, payloads: list[Any], max_errors: int) -> Failure | None:
    """Run in the validation process: the first refused payload, or None."""
    return first_refused(_worker_validator(text), payloads, max_errors)


def _ready() -> None:
    """Run in a new validation process: it has started and imported this module."""


class _PoolLost(Exception):
    """The pool was replaced (another request's overrun) while a validation waited in it."""


class _Pool:
    """The validation processes, replaced as a whole when one overruns its budget.

    ``multiprocessing.Pool`` rather than ``concurrent.futures``: its ``terminate()`` kills
    the processes, and a runaway validation cannot be interrupted any other way.
    """

    def __init__(self) -> None:
        self.pool: Pool | None = None
        self.ready: asyncio.Future[Any] | None = None
        self.size = 0
        self.waiting: set[asyncio.Future[Any]] = set()

    def get(self, size: int) -> tuple[Pool, asyncio.Future[Any]]:
        if self.pool is None or size > self.size:
            self.kill()
            # spawn: forking a process that runs an event loop and threads is unsafe.
            self.size = max(size, self.size)
            self.pool = multiprocessing.get_context("spawn").Pool(processes=self.size)
        if self.ready is None or self.ready.get_loop() is not asyncio.get_running_loop():
            # Started by a new pool (its processes import this module), or asked again
            # from another event loop (a future belongs to one loop).
            self.ready = self.run(self.pool, _ready)
        return self.pool, self.ready

    def run(self, pool: Pool, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``func(*args)`` in a validation process; a future of the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.add(future)
        future.add_done_callback(self.waiting.discard)

        def settle(value: Any = None, error: BaseException | None = None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

        def deliver(value: Any = None, error: BaseException | None = None) -> None:
            # Runs in the pool's result thread, which must not die of a closed loop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, error)

        pool.apply_async(
            func, args, callback=deliver, error_callback=lambda error: deliver(None, error)
        )
        return future

    def kill(self) -> None:
        pool, self.pool, self.ready = self.pool, None, None
        if pool is None:
            return
        for future in list(self.waiting):
            if not future.done():
                future.set_exception(_PoolLost())
        # terminate() joins the pool's threads: not on the event loop.
        threading.Thread(target=pool.terminate, daemon=True).start()


_POOL = _Pool()


async def validate_isolated(
    compiled: Compiled, payloads: Sequence[Any], settings: JobLibSettings
) -> Failure | None:
    """Validate payloads in the validation process within the time budget.

    Returns:
        The first refused payload, or None when all are valid.

    Raises:
        InvalidPayload: The budget ran out (the process is replaced).
        ServiceUnavailable: The validation process could not be started twice in a row.
    """
    for _attempt in range(2):
        pool, ready = _POOL.get(settings.validation_processes)
        try:  # a new process's start-up is not part of the budget
            await asyncio.wait_for(asyncio.shield(ready), _START_SECONDS)
        except (TimeoutError, _PoolLost):
            if _POOL.pool is pool:
                _POOL.kill()
            continue
        future = _POOL.run(
            pool, _validate_in_worker, compiled.text, list(payloads), settings.max_payload_errors
        )
        try:
            return cast(
                Failure | None, await asyncio.wait_for(future, settings.validation_timeout_seconds)
            )
        except TimeoutError:
            if _POOL.pool is pool:
                _POOL.kill()
                _POOL.get(settings.validation_processes)  # the next submit finds it started
            raise InvalidPayload(
                "Validating the payload against the job's schema took longer than "
                f"{settings.validation_timeout_seconds:g} s; the payload is refused.",
                errors=[],
                error_count=0,
            ) from None
        except _PoolLost:  # killed for another request's overrun: retry
            continue
    raise ServiceUnavailable(
        "Payload validation is unavailable; retry.", headers={"Retry-After": "1"}
    )
