"""The compiled-schema cache stays within its memory budget, however many schemas arrive."""

from __future__ import annotations

from zndraw_joblib_server.services.validation import cached_bytes, compiled_for
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.storage.caches import QueueCaches


async def test_cache_is_bounded_by_bytes_not_entries() -> None:
    settings = JobLibSettings(schema_cache_bytes=2_000_000)
    cache = QueueCaches().schemas
    for i in range(40):  # 40 distinct ~25 KB schemas: about 8 MB if all were kept
        schema = {"type": "object", "description": f"{i}" + "x" * 25_000}
        compiled = await compiled_for(schema, settings, cache)
        assert compiled.validator.is_valid({})
        assert cached_bytes(cache) <= settings.schema_cache_bytes
    assert cached_bytes(cache) > settings.schema_cache_bytes // 2
