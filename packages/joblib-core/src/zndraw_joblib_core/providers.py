"""Providers: named, schema-described data sources served by connected clients.

A client registers a provider in a room; readers ask for it with query parameters, the server
hands the read to the provider's worker through the worker's claim long-poll, caches the
answer by a hash of the parameters and long-polls the readers until it arrives.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from zndraw_joblib_core._base import RequestModel, ResponseModel

__all__ = [
    "REQUEST_HASH_HEADER",
    "RESULT_STATUS_HEADER",
    "ProviderReadRequest",
    "ProviderRegisterRequest",
    "ProviderResponse",
    "decoded_params",
    "request_hash",
]

REQUEST_HASH_HEADER = "X-Request-Hash"
"""Header of a result upload naming the read it answers."""

RESULT_STATUS_HEADER = "X-Result-Status"
"""Header of a result upload: ``error`` when the body is a problem (the read failed)."""


def decoded_params(params: dict[str, str]) -> dict[str, Any]:
    """Query parameters with each value read as JSON where it parses (``"5"`` -> 5).

    The server validates a read's parameters as sent or, failing that, decoded like this;
    the SDK builds the provider's model the same way.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def request_hash(params: dict[str, Any]) -> str:
    """The SHA-256 hex digest of ``params`` as canonical JSON (sorted keys, compact).

    Readers, the server and the provider's client agree on it: it names one read.
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ProviderRegisterRequest(RequestModel):
    """Body of ``PUT /rooms/{room_id}/providers``: register or update a provider.

    Attributes:
        category: The provider's category (e.g. ``filesystem``).
        name: The provider's name within room and category.
        schema_: JSON Schema of the read parameters (wire name ``schema``).
        content_type: Media type of the provider's results (``application/json`` or binary).
        worker_id: The caller's worker serving the reads; one is created when absent.
    """

    category: str
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    content_type: str = "application/json"
    worker_id: UUID | None = None


class ProviderResponse(ResponseModel):
    """A provider as answered by register, list and info.

    Attributes:
        id: The provider's id.
        room_id: Its room (``@global``, ``@internal`` or a room id).
        category: Its category.
        name: Its name.
        full_name: ``{room_id}:{category}:{name}``.
        schema_: JSON Schema of the read parameters (wire name ``schema``).
        content_type: Media type of its results.
        worker_id: The worker serving it (null for ``@internal`` providers).
        created_at: When it was first registered.
    """

    id: UUID
    room_id: str
    category: str
    name: str
    full_name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    content_type: str = "application/json"
    worker_id: UUID | None = None
    created_at: datetime


class ProviderReadRequest(ResponseModel):
    """A read the server hands to the provider's worker in a claim answer.

    The worker answers it with ``POST /providers/{provider_id}/results`` and the header
    ``X-Request-Hash: {request_hash}``.

    Attributes:
        provider_id: The provider to read.
        provider_name: Its full name.
        request_hash: The hash of ``params`` (see :func:`request_hash`).
        params: The reader's query parameters (strings, as sent).
    """

    provider_id: UUID
    provider_name: str
    request_hash: str
    params: dict[str, str] = Field(default_factory=dict)
