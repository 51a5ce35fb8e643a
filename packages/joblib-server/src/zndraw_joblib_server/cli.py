"""The ``zndraw-joblib-server`` command."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
from collections.abc import Sequence

__all__ = ["main"]

_MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) accepted."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zndraw-joblib-server", description="Run the zndraw-joblib reference server."
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
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``zndraw-joblib-server``."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        import uvicorn

        if args.database_url:
            os.environ["ZNDRAW_JOBLIB_DATABASE_URL"] = args.database_url
        logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
        import zndraw_joblib_server.app  # noqa: F401  (import everything before freezing)
        from zndraw_joblib_server.serving import Server, guarded_protocol
        from zndraw_joblib_server.settings import JobLibSettings

        settings = JobLibSettings()
        # What is loaded now lives as long as the process: keep it out of the cyclic
        # collector's work, which shortens collection pauses under load.
        gc.freeze()
        config = uvicorn.Config(
            "zndraw_joblib_server.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=not args.no_access_log,
            timeout_graceful_shutdown=args.graceful_timeout,
            http=guarded_protocol(
                settings.header_timeout_seconds, settings.body_timeout_seconds, _MAX_HEAD_BYTES
            ),
        )
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
            Server(config).run()


if __name__ == "__main__":  # pragma: no cover
    main()
