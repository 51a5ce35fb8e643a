"""Create or drop a throwaway PostgreSQL database for a test session (see ``noxfile.py``).

Run it with a python that has asyncpg (the ``server`` and ``contract`` nox sessions)::

    python scripts/scratch_postgres.py create zndraw_joblib_nox_1a2b --host 127.0.0.1
    python scripts/scratch_postgres.py drop zndraw_joblib_nox_1a2b --host 127.0.0.1

It connects to the maintenance database ``postgres`` as user ``postgres`` (no password:
a local server with trust authentication, as in CI) and prints ``ok``, or one line saying
why not. It exits 0 either way: the caller decides what a refusal means.
"""

from __future__ import annotations

import argparse
import asyncio
import re

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def _run(action: str, name: str, host: str, port: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=host, port=port, user="postgres", database="postgres", timeout=5
    )
    try:
        if action == "create":
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            # FORCE: connections a failed test left open do not keep the database alive.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main() -> None:
    """Parse the arguments, create or drop the database, print the outcome."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["create", "drop"])
    parser.add_argument("name", help="database name: lower-case letters, digits, underscores")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    args = parser.parse_args()
    if not _NAME.match(args.name):
        parser.error(f"not a plain database name: {args.name!r}")
    try:
        asyncio.run(_run(args.action, args.name, args.host, args.port))
    except Exception as exc:  # reported, not raised: the caller decides
        print(f"{type(exc).__name__}: {exc}".splitlines()[0])
        return
    print("ok")


if __name__ == "__main__":
    main()
