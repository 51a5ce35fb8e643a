"""What ``zndraw-joblib-server db ...`` does (the CLI parses, this runs and prints)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from zndraw_joblib_server.migrations import (
    current,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from zndraw_joblib_server.migrations.predecessor import import_predecessor
from zndraw_joblib_server.storage import create_engine

__all__ = ["run_current", "run_downgrade", "run_import", "run_upgrade"]


def _show(revision: str | None) -> str:
    return revision or "none"


@asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, sqlite_inline=False)
    try:
        yield engine
    finally:
        await engine.dispose()


async def run_upgrade(url: str, revision: str) -> list[str]:
    """Upgrade the database at ``url`` to ``revision``; the lines to print."""
    async with _engine(url) as engine:
        before, after = await upgrade(engine, revision)
    if before == after:
        return [f"database schema already at revision {_show(after)}"]
    return [f"database schema upgraded from revision {_show(before)} to {_show(after)}"]


async def run_downgrade(url: str, revision: str) -> list[str]:
    """Downgrade the database at ``url`` to ``revision``; the lines to print."""
    async with _engine(url) as engine:
        before, after = await downgrade(engine, revision)
    return [f"database schema downgraded from revision {_show(before)} to {_show(after)}"]


async def run_current(url: str) -> list[str]:
    """The database's revision and the code's, as lines to print."""
    async with _engine(url) as engine:
        revision = await current(engine)
    head = head_revision()
    if revision == head:
        state = "up to date"
    elif revision is None:
        state = "not set up, or made before migrations (the next start or upgrade adopts it)"
    else:
        state = "behind: run 'zndraw-joblib-server db upgrade'"
    return [f"database: {_show(revision)}", f"code (head): {head}", state]


async def run_import(url: str, source_url: str, *, dry_run: bool) -> list[str]:
    """Import a zndraw-joblib 0.1.7 database into the one at ``url``; lines to print.

    The target is set up first if it has none of the queue's tables; one behind the code's
    revision is refused (upgrade it first).
    """
    async with _engine(url) as target, _engine(source_url) as source:
        await ensure_schema(target)
        report = await import_predecessor(source, target, dry_run=dry_run)
    head = "dry run, nothing written; would copy:" if dry_run else "copied:"
    return [head, *(f"  {line}" for line in report.lines())]
