"""Base classes of the wire models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def _as_utc(value: datetime) -> datetime:
    """Treat naive datetimes as UTC and convert aware ones to UTC.

    Raises:
        ValueError: The time in UTC falls outside years 1 to 9999 (pydantic reports it as a
            validation error).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time in UTC is outside the supported years 1 to 9999") from None


UTCDateTime = Annotated[datetime, AfterValidator(_as_utc)]
"""A datetime normalised to timezone-aware UTC (naive input is read as UTC)."""


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseModel(BaseModel):
    """Base of response bodies: unknown fields are tolerated, so old clients keep working."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
