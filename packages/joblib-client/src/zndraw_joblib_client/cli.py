"""The ``zndraw-joblib`` command: run a worker, submit and inspect tasks, jobs and workers.

Exit codes: 0 success, 1 an error answered by the server (or a task that did not complete,
or a server that cannot be reached), 2 wrong usage. The ``worker`` command also exits with
75 (``EX_TEMPFAIL``) when the server cannot be reached at start or stayed unreachable for
``--max-unreachable-seconds``, and with 77 (``EX_NOPERM``) when the server refuses the
worker in a way retrying cannot fix (401, 403, or 404 for its own endpoints).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, TextIO

from pydantic import BaseModel

from zndraw_joblib_client._http import RetryPolicy
from zndraw_joblib_client._loading import load_extensions
from zndraw_joblib_client.errors import (
    ClientError,
    ConnectionFailed,
    ExtensionError,
    LoginFailed,
    ServerUnreachable,
)
from zndraw_joblib_client.extension import category_value
from zndraw_joblib_client.manager import JobManager
from zndraw_joblib_core import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    Forbidden,
    JobResponse,
    NotFound,
    ProblemDetail,
    ProblemError,
    TaskResponse,
    TaskStatus,
    Unauthorized,
)

__all__ = ["EXIT_REFUSED", "EXIT_UNREACHABLE", "build_parser", "main"]

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_UNREACHABLE = 75
"""``worker``: the server could not be reached (at start, or for --max-unreachable-seconds)."""
EXIT_REFUSED = 77
"""``worker``: the server refused the worker for good (401, 403, 404 of its own endpoints)."""
MAX_SHOWN_ERRORS = 10
"""How many of a problem's ``errors`` are printed."""
# One-shot commands give up on an unreachable server sooner than the SDK's default policy.
_COMMAND_RETRY = RetryPolicy(attempts=3)
_CREDENTIALS_HINT = (
    "set ZNDRAW_JOBLIB_TOKEN (a token from `zndraw-joblib login`), or ZNDRAW_JOBLIB_EMAIL "
    "and ZNDRAW_JOBLIB_PASSWORD (or pass --token, or --email and --password)"
)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--url", help=f"server URL (env ZNDRAW_JOBLIB_URL; {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (env ZNDRAW_JOBLIB_TOKEN)")
    common.add_argument("--email", help="log in with this e-mail (env ZNDRAW_JOBLIB_EMAIL)")
    common.add_argument("--password", help="password (env ZNDRAW_JOBLIB_PASSWORD)")
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return common


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``zndraw-joblib``."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="zndraw-joblib", description="zndraw-joblib client", parents=[common]
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('zndraw-joblib-client')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser("worker", parents=[common], help="register extensions and serve")
    worker.add_argument("extensions", nargs="+", metavar="module:Extension")
    worker.add_argument("--room", default=GLOBAL_ROOM, help="room of the jobs (@global)")
    worker.add_argument(
        "--internal",
        action="store_true",
        help="serve the host's @internal jobs (same as --room @internal; needs a superuser "
        "or an account the server lists in internal_worker_emails)",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="tasks run at once")
    worker.add_argument("--claim-wait", type=float, default=55.0, help="claim long-poll (s)")
    worker.add_argument("--heartbeat", type=float, default=10.0, help="heartbeat interval (s)")
    worker.add_argument(
        "--register", action="store_true", help="create the account if logging in fails"
    )
    worker.add_argument(
        "--max-unreachable-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"exit ({EXIT_UNREACHABLE}) once the server was unreachable this long "
        "(default: retry for ever)",
    )

    submit = sub.add_parser("submit", parents=[common], help="submit a task")
    submit.add_argument("job", metavar="JOB_FULL_NAME")
    submit.add_argument("--room", required=True, help="room the task is submitted from")
    submit.add_argument("--payload", default="{}", help="JSON object of parameters")
    submit.add_argument("--priority", type=int, default=None)
    submit.add_argument("--max-attempts", type=int, default=None)
    submit.add_argument("--timeout", type=float, default=None, help="task timeout (s)")
    submit.add_argument("--idempotency-key", default=None)
    _wait_option(submit)

    jobs = sub.add_parser(
        "jobs",
        parents=[common],
        help="list the jobs visible from a room (or show one: jobs show NAME)",
    )
    jobs.add_argument("--room", default=GLOBAL_ROOM, help="room looking at the jobs (@global)")
    _page_options(jobs)
    jobs.add_argument(
        "--live", action="store_true", help="only jobs that a live worker serves right now"
    )
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="show")
    show = jobs_sub.add_parser(
        "show", parents=[common], help="show a job: workers and the JSON schema of its payload"
    )
    show.add_argument("name", metavar="JOB_FULL_NAME")
    # SUPPRESS: keep a --room given before "show" (jobs --room r show NAME)
    show.add_argument("--room", default=argparse.SUPPRESS, help="room looking at the job")

    tasks = sub.add_parser("tasks", parents=[common], help="list the tasks of a room")
    tasks.add_argument("--room", required=True)
    tasks.add_argument("--job", default=None, help="only this job (full name)")
    tasks.add_argument("--status", default=None, choices=[s.value for s in TaskStatus])
    _page_options(tasks)

    workers = sub.add_parser("workers", parents=[common], help="list workers")
    workers.add_argument("--room", default=None)
    _page_options(workers)

    task = sub.add_parser("task", parents=[common], help="show a task")
    task.add_argument("task_id")
    _wait_option(task)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a task")
    cancel.add_argument("task_id")

    login = sub.add_parser("login", parents=[common], help="log in and print a token")
    login.add_argument("--register", action="store_true", help="create the account if needed")
    return parser


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=-1.0,
        default=None,
        metavar="SECONDS",
        help="wait for the task to finish (optionally at most SECONDS)",
    )


def _page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--offset", type=int, default=0)


def _option(args: argparse.Namespace, name: str) -> str | None:
    value = getattr(args, name, None) or os.environ.get(f"ZNDRAW_JOBLIB_{name.upper()}")
    return value or None


def _server_url(args: argparse.Namespace) -> str:
    return _option(args, "url") or DEFAULT_URL


def _has_credentials(args: argparse.Namespace) -> bool:
    return any(_option(args, name) for name in ("token", "email", "password"))


def _manager(args: argparse.Namespace, *, register: bool = False) -> JobManager:
    options: dict[str, Any] = {}
    if args.command != "worker":  # a worker rides out server restarts; a command reports
        options["retry"] = _COMMAND_RETRY
    return JobManager(
        _server_url(args),
        token=_option(args, "token"),
        email=_option(args, "email"),
        password=_option(args, "password"),
        register=register,
        **options,
    )


class _Output:
    def __init__(self, as_json: bool, stream: TextIO) -> None:
        self.as_json = as_json
        self.stream = stream

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def model(self, value: BaseModel) -> None:
        self.line(value.model_dump_json(indent=2, by_alias=True))

    def table(self, rows: list[dict[str, Any]], columns: Sequence[str], total: int) -> None:
        cells = [[_cell(row.get(c)) for c in columns] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
        self.line(header.rstrip())
        for r in cells:
            self.line("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        self.line(f"({len(rows)} of {total})")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _percent(fraction: float) -> str:
    """``0.30000000000000004`` -> ``30%``, ``0.125`` -> ``12.5%``."""
    return f"{fraction * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _show_job(out: _Output, job: JobResponse) -> None:
    if out.as_json:
        out.model(job)
        return
    out.line(f"job      {job.full_name}")
    out.line(f"workers  {len(job.workers)} ({job.live_workers} live)")
    out.line("schema")
    out.line(json.dumps(job.schema_, indent=2))


def _show_task(out: _Output, task: TaskResponse) -> None:
    if out.as_json:
        out.model(task)
        return
    out.line(f"task     {task.id}")
    out.line(f"job      {task.job_name}")
    out.line(f"room     {task.room_id}")
    out.line(f"status   {task.status.value}")
    for label, value in (
        ("attempt", task.attempt or None),
        ("progress", None if task.progress is None else _percent(task.progress)),
        ("message", task.message),
        ("error", task.error),
    ):
        if value is not None:
            out.line(f"{label:<8} {value}")
    if task.result is not None:
        out.line(f"result   {json.dumps(task.result)}")


def _follow(out: _Output, manager: JobManager, task: TaskResponse, limit: float) -> int:
    deadline = None if limit < 0 else time.monotonic() + limit
    while not task.status.is_terminal:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        task = manager.wait(task.id, left, wait_for="change", since=task)
        if not out.as_json and not task.status.is_terminal:
            progress = "" if task.progress is None else f" {_percent(task.progress)}"
            out.line(f"... {task.status.value}{progress} {task.message or ''}".rstrip())
    _show_task(out, task)
    if not task.status.is_terminal:
        print("error: timed out waiting for the task", file=sys.stderr)
    return 0 if task.status is TaskStatus.COMPLETED else 1


def _run(args: argparse.Namespace, out: _Output) -> int:
    command = args.command
    if command == "worker":
        classes = [cls for spec in args.extensions for cls in load_extensions(spec)]
        for cls in classes:
            category_value(cls)  # a class without a category: say so before connecting
        if args.max_unreachable_seconds is not None and args.max_unreachable_seconds < 0:
            raise _Usage("--max-unreachable-seconds must not be negative")
        room = INTERNAL_ROOM if args.internal else args.room
        with _manager(args, register=args.register) as manager:
            try:
                for cls in classes:
                    job = manager.register(cls, room=room)
                    out.line(f"registered {job.full_name}")
            except (Unauthorized, Forbidden, NotFound, LoginFailed) as exc:
                print(f"error: {_worker_refusal(exc, args)}", file=sys.stderr)
                return EXIT_REFUSED
            except ConnectionFailed as exc:
                print(_unreachable_line(exc, args), file=sys.stderr)
                return EXIT_UNREACHABLE
            try:
                manager.serve(
                    concurrency=args.concurrency,
                    claim_wait=args.claim_wait,
                    heartbeat_interval=args.heartbeat,
                    max_unreachable_seconds=args.max_unreachable_seconds,
                )
            # the loop already logged why it stopped, in one line
            except ServerUnreachable:
                return EXIT_UNREACHABLE
            except (Unauthorized, Forbidden, NotFound, LoginFailed):
                return EXIT_REFUSED
        return 0
    if command == "login":
        if not (_option(args, "email") and _option(args, "password")):
            raise _Usage(
                "login needs --email and --password (or ZNDRAW_JOBLIB_EMAIL and "
                "ZNDRAW_JOBLIB_PASSWORD)"
            )
        manager = _manager(args, register=args.register)
        token = manager.login()
        out.line(json.dumps({"access_token": token}) if out.as_json else token)
        return 0
    manager = _manager(args)
    try:
        if command == "submit":
            try:
                payload = json.loads(args.payload)
            except json.JSONDecodeError as exc:
                raise _Usage(f"--payload is not JSON: {exc}") from exc
            if not isinstance(payload, dict):
                raise _Usage("--payload must be a JSON object")
            task = manager.submit(
                args.job,
                args.room,
                payload=payload,
                priority=args.priority,
                max_attempts=args.max_attempts,
                timeout_seconds=args.timeout,
                idempotency_key=args.idempotency_key,
            )
            if args.wait is None:
                _show_task(out, task)
                return 0
            if not out.as_json:
                out.line(f"submitted {task.id} ({task.status.value})")
            return _follow(out, manager, task, args.wait)
        if command == "task":
            task = manager.get_task(args.task_id)
            if args.wait is None:
                _show_task(out, task)
                return 0
            return _follow(out, manager, task, args.wait)
        if command == "cancel":
            _show_task(out, manager.cancel(args.task_id))
            return 0
        if command == "jobs" and args.jobs_command == "show":
            _show_job(out, manager.get_job(args.room, args.name))
            return 0
        if command == "jobs":
            page: Any = manager.list_jobs(
                args.room, limit=args.limit, offset=args.offset, live=args.live or None
            )
            columns: Sequence[str] = ("full_name", "category", "name", "workers", "live_workers")
        elif command == "workers":
            page = manager.list_workers(args.room, limit=args.limit, offset=args.offset)
            columns = ("id", "last_heartbeat", "job_count")
        else:
            page = manager.list_tasks(
                args.room,
                job_name=args.job,
                status=args.status,
                limit=args.limit,
                offset=args.offset,
            )
            columns = ("id", "job_name", "status", "attempt", "progress", "created_at")
        if out.as_json:
            out.model(page)
        else:
            rows = [item.model_dump(mode="json") for item in page.items]
            out.table(rows, columns, page.total)
        return 0
    finally:
        manager.close()


class _Usage(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zndraw-joblib`` command.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 server problem or unfinished task, 2 usage error; for
        ``worker`` also 75 (server unreachable) and 77 (worker refused for good).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    verbose = getattr(args, "verbose", False)
    quiet = logging.INFO if args.command == "worker" else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command != "worker" and not verbose:
        # retries are announced as warnings; a command reports the outcome in one line
        logging.getLogger("zndraw_joblib_client").setLevel(logging.ERROR)
    out = _Output(getattr(args, "json", False), sys.stdout)
    try:
        return _run(args, out)
    except _Usage as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, ExtensionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProblemError as exc:
        for line in _problem_lines(exc, has_credentials=_has_credentials(args)):
            print(line, file=sys.stderr)
        return 1
    except ConnectionFailed as exc:
        print(_unreachable_line(exc, args), file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _unreachable_line(exc: ConnectionFailed, args: argparse.Namespace) -> str:
    reason = exc.__cause__ or exc
    return (
        f"error: cannot reach the server at {_server_url(args)}: "
        f"{type(reason).__name__}: {reason}; is it running? "
        "set ZNDRAW_JOBLIB_URL (or pass --url)"
    )


def _worker_refusal(exc: Exception, args: argparse.Namespace) -> str:
    """Why the server refused the worker, and what to do about it, in one line."""
    if isinstance(exc, NotFound):
        return (
            f"the server at {_server_url(args)} has no joblib worker endpoints "
            f"({type(exc).__name__}, 404): check --url / ZNDRAW_JOBLIB_URL"
        )
    if isinstance(exc, ProblemError):
        return _problem_lines(exc, has_credentials=_has_credentials(args))[0].removeprefix(
            "error: "
        )
    return f"login refused: {exc}"


def _problem_lines(exc: ProblemError, *, has_credentials: bool) -> list[str]:
    """The error line of a server problem, then where each of its ``errors`` lies."""
    problem = exc.to_problem()
    detail = f": {problem.detail}" if problem.detail else ""
    first = f"error: {problem.title} ({problem.status}){detail}"
    if isinstance(exc, Unauthorized):
        if has_credentials:
            first += "; the token or password was refused: log in again (`zndraw-joblib login`)"
        else:
            first = f"error: not logged in ({problem.status}): {_CREDENTIALS_HINT}"
    return [first, *_error_lines(problem)]


def _error_lines(problem: ProblemDetail) -> list[str]:
    errors = (problem.model_extra or {}).get("errors")
    if not isinstance(errors, list):
        return []
    lines = []
    for error in errors[:MAX_SHOWN_ERRORS]:
        if not isinstance(error, dict):
            lines.append(f"  {error}")
            continue
        where = error.get("path") or ".".join(str(p) for p in error.get("loc") or ()) or "/"
        message = error.get("message") or error.get("msg") or ""
        lines.append(f"  {where}: {message}")
    if len(errors) > MAX_SHOWN_ERRORS:
        lines.append(f"  ... and {len(errors) - MAX_SHOWN_ERRORS} more")
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
