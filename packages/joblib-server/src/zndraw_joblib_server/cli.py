"""The ``zndraw-joblib-server`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, NoReturn

import uvicorn
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from uvicorn.config import LOGGING_CONFIG
from zndraw_auth import AuthSettings

from zndraw_joblib_server.logging_setup import configure_json_logging, uvicorn_config
from zndraw_joblib_server.migrations import SchemaNotCurrent, commands, ensure_schema
from zndraw_joblib_server.migrations.predecessor import PredecessorMissing
from zndraw_joblib_server.serving import Server, guarded_protocol
from zndraw_joblib_server.settings import JobLibSettings
from zndraw_joblib_server.startup import StartupRefused, ensure_admin, resolve_secret
from zndraw_joblib_server.storage import create_engine
from zndraw_joblib_server.storage.preflight import DatabaseUnusable, check_database

__all__ = ["main"]

_MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) accepted."""


DEMO_INTERNAL = "zndraw_joblib_server.internal.demo:Checksum"
"""The demo ``@internal`` job ``serve`` registers unless
``ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS`` is set."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zndraw-joblib-server", description="Run the zndraw-joblib reference server."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('zndraw-joblib-server')}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Start the server with uvicorn.")
    serve.add_argument("--host", default="127.0.0.1", help="Interface (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    serve.add_argument(
        "--database-url",
        default=None,
        help="Database URL (default: $ZNDRAW_JOBLIB_DATABASE_URL, else "
        "sqlite+aiosqlite:///./zndraw-joblib.db).",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument("--no-access-log", action="store_true", help="Do not log every request.")
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=3.0,
        help="Seconds to let in-flight requests (e.g. long-polls) finish on shutdown "
        "(default 3); waiting clients simply retry.",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="Upgrade the database schema first if it is behind this version's.",
    )
    _db_parser(sub)
    return parser


def _db_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="Database schema: upgrade, current, downgrade, import.")
    commands = db.add_subparsers(dest="db_command", required=True)
    url_help = "Database URL (default: $ZNDRAW_JOBLIB_DATABASE_URL, else the default file)."
    upgrade = commands.add_parser("upgrade", help="Upgrade the schema (default: to the newest).")
    upgrade.add_argument("revision", nargs="?", default="head", help="Target (default head).")
    current = commands.add_parser("current", help="Show the database's and the code's revision.")
    downgrade = commands.add_parser("downgrade", help="Downgrade the schema to REVISION.")
    downgrade.add_argument("revision", help="Target revision ('base' drops the queue's tables).")
    importer = commands.add_parser(
        "import-predecessor",
        help="Copy the jobs, workers and tasks of a zndraw-joblib 0.1.7 database.",
    )
    importer.add_argument(
        "--from", dest="source", required=True, help="URL of the 0.1.7 database (may be the same)."
    )
    importer.add_argument("--dry-run", action="store_true", help="Count only, write nothing.")
    for command in (upgrade, current, downgrade, importer):
        command.add_argument("--database-url", default=None, help=url_help)


async def _preflight() -> None:
    """Check the configuration and the default admin before uvicorn starts.

    Raises:
        StartupRefused: The configuration is unsafe (see :mod:`zndraw_joblib_server.startup`).
    """
    settings = JobLibSettings()
    auth_settings = resolve_secret(settings, AuthSettings())
    engine = create_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    try:
        await ensure_schema(engine, migrate=settings.migrate)
        await ensure_admin(async_sessionmaker(engine, expire_on_commit=False), auth_settings)
    finally:
        await engine.dispose()


def _check_startup() -> None:
    try:
        asyncio.run(_preflight())
    except (StartupRefused, SchemaNotCurrent) as exc:
        _fail(f"refusing to start: {exc}")
    except ValidationError as exc:  # zndraw-auth's settings (ours were checked before)
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        _fail(f"invalid setting {exc.title}.{where}: {first['msg']}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``zndraw-joblib-server``."""
    args = _parser().parse_args(argv)
    if args.command == "db":
        _run_db(args)
    elif args.command == "serve":
        json_logs = _log_format() == "json"
        if json_logs:
            configure_json_logging(args.log_level)
        else:
            logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
        _check_database(args.database_url)
        if args.migrate:
            os.environ["ZNDRAW_JOBLIB_MIGRATE"] = "true"  # the app's own start reads it too
        # out of the box, one harmless @internal job shows what server-side jobs look like
        os.environ.setdefault("ZNDRAW_JOBLIB_INTERNAL_EXTENSIONS", json.dumps([DEMO_INTERNAL]))
        _check_startup()
        settings = JobLibSettings()
        # Everything is imported now (the package imports the app) and lives as long as the
        # process: keep it out of the cyclic collector's work, which shortens collection
        # pauses under load.
        gc.freeze()
        config = uvicorn.Config(
            "zndraw_joblib_server.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            # JSON: the app logs each request itself (with its id, without the query string).
            access_log=not args.no_access_log and not json_logs,
            log_config=uvicorn_config(args.log_level) if json_logs else LOGGING_CONFIG,
            timeout_graceful_shutdown=args.graceful_timeout,
            http=guarded_protocol(
                settings.header_timeout_seconds, settings.body_timeout_seconds, _MAX_HEAD_BYTES
            ),
        )
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
            Server(config).run()


def _run_db(args: argparse.Namespace) -> None:
    """Run a ``db`` subcommand; its errors end in one line and exit code 2."""
    logging.basicConfig(level="WARNING", format="%(levelname)s: %(message)s")
    _check_database(args.database_url)
    url = JobLibSettings().database_url
    work: Any
    if args.db_command == "upgrade":
        work = commands.run_upgrade(url, args.revision)
    elif args.db_command == "downgrade":
        work = commands.run_downgrade(url, args.revision)
    elif args.db_command == "current":
        work = commands.run_current(url)
    else:
        try:
            source = check_database(args.source)
        except DatabaseUnusable as error:
            _fail(f"{error} (from --from)")
        work = commands.run_import(url, source, dry_run=args.dry_run)
    try:
        lines = asyncio.run(work)
    except (SchemaNotCurrent, PredecessorMissing, CommandError) as error:  # CommandError: e.g.
        _fail(str(error))  # an unknown revision
    print("\n".join(lines))


def _log_format() -> str:
    """``ZNDRAW_JOBLIB_LOG_FORMAT``, read early (before logging is set up); text if invalid."""
    try:
        return JobLibSettings().log_format
    except ValidationError:
        return "text"  # the settings' own check reports the problem later


def _check_database(cli_url: str | None) -> None:
    """Exit with code 2 and one line when the database cannot be used, else export its URL."""
    if cli_url:
        os.environ["ZNDRAW_JOBLIB_DATABASE_URL"] = cli_url
    try:
        url = JobLibSettings().database_url
    except ValidationError as error:
        first = error.errors()[0]
        where = "ZNDRAW_JOBLIB_" + "_".join(str(p) for p in first["loc"]).upper()
        _fail(f"{where}: {first['msg']}")
    try:
        checked = check_database(url)
    except DatabaseUnusable as error:
        _fail(f"{error} (from --database-url or ZNDRAW_JOBLIB_DATABASE_URL)")
    if checked != url:
        logging.getLogger("zndraw_joblib_server").info(
            "database URL names no driver; using %s", checked.partition("://")[0]
        )
    os.environ["ZNDRAW_JOBLIB_DATABASE_URL"] = checked


def _fail(message: str) -> NoReturn:
    print(f"zndraw-joblib-server: error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
