"""The queue's migrations: every revision leads to the models' schema; start-up and ``db``.

The comparison is the CI check of issue 23: a database migrated from the first revision
through every later one has what ``create_all`` of the current models makes (Alembic's
autogenerate comparison finds no difference; indexes, triggers and functions, which it
does not compare, are compared by name).
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from zndraw_joblib_server import JobLibSettings, JobQueue, create_app, create_tables
from zndraw_joblib_server.cli import main
from zndraw_joblib_server.migrations import (
    SchemaNotCurrent,
    current,
    ensure_schema,
    head_revision,
    runner,
    upgrade,
)
from zndraw_joblib_server.migrations.scope import include_name, include_object
from zndraw_joblib_server.models import Base
from zndraw_joblib_server.testing import running
from zndraw_joblib_server.testing import test_auth_settings as auth_settings

LATER = '''"""A later revision, for tests: one more index.

Revision ID: {later}
Revises: {head}
"""

from alembic import op

revision = "{later}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_joblib_task_later", "joblib_task", ["priority"])


def downgrade() -> None:
    op.drop_index("ix_joblib_task_later", table_name="joblib_task")
'''


def _objects(conn: Connection) -> set[tuple[str, str]]:
    """The queue's schema objects by kind and name (tables, indexes, triggers, functions)."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(
            text(
                "SELECT type, name FROM sqlite_master WHERE (name LIKE 'joblib%' "
                "OR name LIKE 'ix_joblib%' OR tbl_name LIKE 'joblib%') "
                "AND name NOT LIKE 'sqlite_autoindex%'"
            )
        )
    else:
        rows = conn.execute(
            text(
                "SELECT 'table', tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE 'joblib%' UNION ALL "
                "SELECT 'index', indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename LIKE 'joblib%' AND tablename <> 'joblib_alembic_version' UNION ALL "
                "SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid = to_regclass('joblib_task') UNION ALL "
                "SELECT 'function', proname FROM pg_proc WHERE proname LIKE 'joblib%'"
            )
        )
    return {(str(kind), str(name)) for kind, name in rows} - {("table", "joblib_alembic_version")}


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "include_name": include_name,
            "include_object": include_object,
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def _second_database(database_url: str, backend: str, tmp_path: Path) -> str:
    """Another empty database of the same kind (for ``create_all``)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'created_all.db'}"
    url = make_url(database_url)
    name = f"{url.database}_created_all"
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


async def test_every_revision_leads_to_the_models(database_url, backend, tmp_path) -> None:
    """First revision, then each later one in turn: no difference to ``create_all``."""
    script = ScriptDirectory.from_config(runner.alembic_config())
    revisions = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert revisions[-1] == head_revision()
    engine = create_async_engine(database_url)
    other = create_async_engine(await _second_database(database_url, backend, tmp_path))
    try:
        for revision in revisions:
            await upgrade(engine, revision)
            assert await current(engine) == revision
        await create_tables(other)
        async with engine.connect() as conn, other.connect() as made:
            assert await conn.run_sync(_differences) == []
            assert await made.run_sync(_differences) == []
            migrated, created = await conn.run_sync(_objects), await made.run_sync(_objects)
        assert migrated == created
        assert ("trigger", "joblib_task_pending_insert") in migrated
        # Down to nothing and up again.
        await main_async(["db", "downgrade", "base", "--database-url", database_url])
        async with engine.connect() as conn:
            assert await conn.run_sync(_objects) == set()
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_objects) == migrated
    finally:
        await engine.dispose()
        await other.dispose()


async def main_async(argv: list[str]) -> None:
    """The CLI in a thread (it runs its own event loop)."""
    await asyncio.to_thread(main, argv)


@pytest.fixture(autouse=True)
def _cli_environment(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """The CLI exports what it uses (the URL, migrating, ``serve``'s demo internal job) and
    ``serve`` wants a secret: keep them all per test."""
    monkeypatch.setenv("ZNDRAW_JOBLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("ZNDRAW_AUTH_SECRET_KEY", "x" * 40)
    monkeypatch.delenv("ZNDRAW_JOBLIB_MIGRATE", raising=False)
    monkeypatch.setenv("ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS", "[]")


@pytest.fixture
def later_head(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, str]:
    """The code as a later version: its migrations have one more revision.

    Returns this version's head and the later one.
    """
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(runner.__file__).parent, scripts, ignore=shutil.ignore_patterns("__py*"))
    head = head_revision()
    later = f"{int(head) + 1:04d}"
    (scripts / "versions" / f"{later}_later.py").write_text(LATER.format(head=head, later=later))
    monkeypatch.setattr(runner, "_HERE", scripts)
    return head, later


async def test_a_database_behind_is_refused_until_migrated(
    database_url, later_head, capsys, monkeypatch
) -> None:
    head, later = later_head
    await main_async(["db", "upgrade", head, "--database-url", database_url])
    assert f"from revision none to {head}" in capsys.readouterr().out

    with pytest.raises(SystemExit) as refused:
        await main_async(["serve", "--database-url", database_url])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"revision {head}" in err
    assert f"needs {later}" in err
    assert "zndraw-joblib-server db upgrade" in err

    settings = JobLibSettings(database_url=database_url)
    app = create_app(settings, auth_settings(), sweeper=False)
    with pytest.raises(SchemaNotCurrent, match="db upgrade"):
        async with running(app):
            pass
    queue = JobQueue(settings, sweeper=False, migrate=False)
    with pytest.raises(SchemaNotCurrent):
        await queue.start()
    await queue.stop()
    engine = create_async_engine(database_url)
    try:
        assert await current(engine) == head  # refusing changed nothing
    finally:
        await engine.dispose()

    queue = JobQueue(settings, sweeper=False, migrate=True)
    await queue.start()
    await queue.stop()
    await main_async(["db", "current", "--database-url", database_url])
    assert f"database: {later}" in capsys.readouterr().out

    await main_async(["db", "downgrade", head, "--database-url", database_url])
    assert f"from revision {later} to {head}" in capsys.readouterr().out
    # serve --migrate upgrades first (uvicorn itself is not started here).
    from zndraw_joblib_server import serving

    monkeypatch.setattr(serving.Server, "run", lambda self, *a, **k: None)
    try:
        await main_async(["serve", "--migrate", "--database-url", database_url])
    finally:
        gc.unfreeze()
    await main_async(["db", "current", "--database-url", database_url])
    assert f"database: {later}" in capsys.readouterr().out


async def test_a_database_of_a_newer_version_is_refused(database_url) -> None:
    settings = JobLibSettings(database_url=database_url)
    engine = create_async_engine(database_url)
    try:
        await ensure_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE joblib_alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaNotCurrent, match="does not know"):
            await ensure_schema(engine, migrate=True)
    finally:
        await engine.dispose()
    assert settings.migrate is False


async def test_a_fresh_database_is_set_up_at_start(database_url, capsys) -> None:
    """No configuration, no command: the README's first start keeps working."""
    app = create_app(JobLibSettings(database_url=database_url), auth_settings(), sweeper=False)
    async with running(app):
        pass
    await main_async(["db", "current", "--database-url", database_url])
    out = capsys.readouterr().out
    assert f"database: {head_revision()}" in out
    assert "up to date" in out


def test_processes_starting_together_migrate_once(database_url, tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "zndraw_joblib_server.cli",
        "db",
        "upgrade",
        "--database-url",
        database_url,
    ]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    said = sorted(out.strip() for out, _ in outputs)
    assert said == [
        f"database schema already at revision {head_revision()}",
        f"database schema already at revision {head_revision()}",
        f"database schema upgraded from revision none to {head_revision()}",
    ]
