"""Benchmark of the zndraw-joblib reference server over HTTP.

Usage::

    uv run python benchmarks/bench.py [--database-url URL] [--quick] [--scenario NAME ...]
                                      [--runs N] [--compare celery]

Each scenario starts the server (uvicorn, ``zndraw-joblib-server serve``) in its own process
on a fresh database, drives it from separate client processes over 127.0.0.1 and prints one
JSON line to stdout. Without ``--quick`` a table comparing the figures with the targets
listed in docs/performance.md follows on stderr (and as a last JSON line,
``"scenario": "summary"``).
The exit status is non-zero only when something is broken (errors, lost or duplicate tasks),
never because a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _compare import compare_celery
from _context import Context
from _e2e import e2e_batched, e2e_unbatched, memory, trivial
from _hostile import hostile
from _latency import claim_latency, idle_queries, wakeup_latency
from _server import database_version
from _summary import summary_rows, summary_table

SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "trivial": trivial,
    "e2e_unbatched": e2e_unbatched,
    "e2e_batched": e2e_batched,
    "claim_latency": claim_latency,
    "wakeup_latency": wakeup_latency,
    "idle_queries": idle_queries,
    "memory": memory,
    "hostile": hostile,
    "compare_celery": compare_celery,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="postgresql+asyncpg://... database to use and WIPE (default: a fresh SQLite "
        "file per scenario in a temporary directory).",
    )
    parser.add_argument("--quick", action="store_true", help="Small sizes (smoke test, <60 s).")
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=list(SCENARIOS),
        default=None,
        help="Scenarios to run (default: all).",
    )
    parser.add_argument(
        "--compare",
        choices=["celery"],
        default=None,
        help="Run only the comparison with Celery 5 on the local Redis (installs Celery into "
        "a cache directory on first use; skipped without Redis).",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="Repetitions per scenario (default 3; 1 quick)."
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="Factor on the task counts of e2e_unbatched (10k), e2e_batched (20k) and "
        "memory (100k), to cap full runs while the server is slow (default 1).",
    )
    return parser


def _versions(url: str | None) -> dict[str, Any]:
    pkgs = ("zndraw-joblib-server", "fastapi", "uvicorn", "sqlalchemy", "httpx")
    return {
        "python": platform.python_version(),
        "database_version": database_version(url or "sqlite+aiosqlite://"),
        **{p: version(p) for p in pkgs},
        "cpus": os.cpu_count(),
    }


def _raise_on_sigterm(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; the exit status (0: nothing broken)."""
    args = _parser().parse_args(argv)
    if args.database_url and not args.database_url.startswith("postgresql+asyncpg://"):
        _parser().error("--database-url must be a postgresql+asyncpg:// URL")
    runs = args.runs or (1 if args.quick else 3)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    broken = False
    lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="joblib-bench-") as tmp:
        ctx = Context(
            args.database_url, Path(tmp), args.quick, runs, scale=args.scale, shared=args.quick
        )
        common = {
            "database": ctx.kind,
            **_versions(args.database_url),
            "quick": args.quick,
            "scale": args.scale,
        }
        try:
            default = [] if args.compare else [n for n in SCENARIOS if n != "compare_celery"]
            chosen = args.scenario or default
            for name in [*chosen, *(["compare_celery"] if args.compare else [])]:
                t0 = time.monotonic()
                load = os.getloadavg()[0]
                try:
                    result = SCENARIOS[name](ctx)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    traceback.print_exc()
                    result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
                line = {
                    "scenario": name,
                    **common,
                    "runs_requested": runs,
                    "loadavg_1m_before": round(load, 2),
                    **result,
                    "scenario_seconds": round(time.monotonic() - t0, 1),
                }
                broken |= not line.get("ok", False)
                lines.append(line)
                print(json.dumps(line), flush=True)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            ctx.stop_all()
    if not args.quick:
        rows = summary_rows(lines)
        print(json.dumps({"scenario": "summary", **common, "rows": rows}), flush=True)
        print(summary_table(rows), file=sys.stderr)
    if broken:
        print(
            "BROKEN: at least one scenario reported errors, lost or duplicate tasks",
            file=sys.stderr,
        )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
