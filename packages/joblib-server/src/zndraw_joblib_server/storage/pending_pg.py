"""PostgreSQL: pending tasks per job, in counter rows sharded per backend (see ``pending``).

``joblib_job_pending_pg(job_id, shard, pending)``: a job's pending count is the sum of its
rows. Statement-level triggers on ``joblib_task`` (with transition tables, so one upsert per
statement and job, however many rows it changed) add each statement's change to the row of
the backend running it (``shard = pg_backend_pid()``); :data:`FOLD` moves those rows into
the job's base row (``shard = 0``) now and then, so the table stays a few rows per job.

:data:`STATEMENTS` run after every ``Base.metadata.create_all`` when the tasks table exists
(registered by ``storage.pending``): they replace the functions, create the table and the
triggers when missing, and recount the base rows from the tasks.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Uuid, text

__all__ = ["FOLD", "INSTALLED", "PENDING_PG", "SCHEMA_LOCK_KEY", "STATEMENTS"]

SCHEMA_LOCK_KEY = 0x6A6F626C6962  # "joblib"
"""The advisory lock serialising concurrent ``create_all`` (the tables, and this DDL)."""

PENDING_PG = Table(
    "joblib_job_pending_pg",
    MetaData(),  # not Base.metadata: created by the DDL below, on PostgreSQL only
    Column("job_id", Uuid, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("pending", BigInteger, nullable=False),
)
"""The counts (PostgreSQL only): ``job_id``, ``shard`` (a backend's pid, 0: base), ``pending``."""

_PENDING = "status = 'pending'"  # the enum is stored as its value (a VARCHAR, not native)

_UPSERT = (
    "INSERT INTO joblib_job_pending_pg AS c (job_id, shard, pending) "
    "SELECT job_id, pg_backend_pid(), delta FROM ({deltas}) AS d "
    "WHERE delta <> 0 ORDER BY job_id "  # a deterministic lock order
    "ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending"
)

_ON_CHANGE = {
    "insert": (
        "",
        f"SELECT job_id, count(*) AS delta FROM new_rows WHERE {_PENDING} GROUP BY job_id",
    ),
    "delete": (
        "",
        f"SELECT job_id, -count(*) AS delta FROM old_rows WHERE {_PENDING} GROUP BY job_id",
    ),
    "update": (
        # Most updates (progress, completion, heartbeats) touch no pending task.
        f"IF NOT EXISTS (SELECT FROM old_rows WHERE {_PENDING}) "
        f"AND NOT EXISTS (SELECT FROM new_rows WHERE {_PENDING}) THEN RETURN NULL; END IF; ",
        "SELECT job_id, sum(d) AS delta FROM ("
        f"SELECT job_id, 1 AS d FROM new_rows WHERE {_PENDING} UNION ALL "
        f"SELECT job_id, -1 AS d FROM old_rows WHERE {_PENDING}) AS m GROUP BY job_id",
    ),
}
"""Per event: an early exit, and the change of each job's pending count."""


def _function(name: str, body: str, returns: str = "trigger") -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS {returns} LANGUAGE plpgsql AS "
        f"$body$ {body} $body$"
    )


def _trigger(name: str, when: str, referencing: str) -> str:
    """Create a trigger unless it exists (no ``DROP TRIGGER``: that would lock the tasks)."""
    create = (
        f"CREATE TRIGGER joblib_task_pending_{name} {when} ON joblib_task {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION joblib_pending_{name}()"
    )
    return (
        "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = "
        f"'joblib_task'::regclass AND tgname = 'joblib_task_pending_{name}') THEN {create}; "
        "END IF; END $do$"
    )


_FOLD_BODY = (
    "DECLARE jobs uuid[]; shards integer[]; folded integer; BEGIN "
    # Lock the backends' rows not in use (never waiting), then move them in a later
    # statement, whose snapshot holds their last values.
    "SELECT array_agg(job_id), array_agg(shard) INTO jobs, shards FROM ("
    "SELECT job_id, shard FROM joblib_job_pending_pg WHERE shard <> 0 "
    "ORDER BY job_id, shard FOR UPDATE SKIP LOCKED) AS t; "
    "WITH moved AS (DELETE FROM joblib_job_pending_pg AS c "
    "USING unnest(jobs, shards) AS t (job_id, shard) "
    "WHERE c.job_id = t.job_id AND c.shard = t.shard RETURNING c.job_id, c.pending) "
    "INSERT INTO joblib_job_pending_pg AS c (job_id, shard, pending) "
    "SELECT job_id, 0, sum(pending) FROM moved GROUP BY job_id ORDER BY job_id "
    "ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending; "
    "GET DIAGNOSTICS folded = ROW_COUNT; "
    "DELETE FROM joblib_job_pending_pg WHERE (job_id, shard) IN ("
    "SELECT b.job_id, b.shard FROM joblib_job_pending_pg AS b "
    "WHERE b.shard = 0 AND b.pending = 0 AND NOT EXISTS (SELECT FROM joblib_job_pending_pg "
    "AS o WHERE o.job_id = b.job_id AND o.shard <> 0) FOR UPDATE SKIP LOCKED); "
    "RETURN folded; END"
)

STATEMENTS = [
    # Two processes starting at once: the second waits (create_tables holds it already).
    f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})",
    "CREATE TABLE IF NOT EXISTS joblib_job_pending_pg (job_id UUID NOT NULL, "
    "shard INTEGER NOT NULL, pending BIGINT NOT NULL, PRIMARY KEY (job_id, shard))",
    *(
        _function(
            f"joblib_pending_{name}",
            f"BEGIN {guard}{_UPSERT.format(deltas=deltas)}; RETURN NULL; END",
        )
        for name, (guard, deltas) in _ON_CHANGE.items()
    ),
    _function(
        "joblib_pending_truncate", "BEGIN DELETE FROM joblib_job_pending_pg; RETURN NULL; END"
    ),
    _function("joblib_pending_fold", _FOLD_BODY, returns="integer"),
    _trigger("insert", "AFTER INSERT", "REFERENCING NEW TABLE AS new_rows"),
    _trigger("delete", "AFTER DELETE", "REFERENCING OLD TABLE AS old_rows"),
    # No column list (UPDATE OF status, job_id): PostgreSQL refuses it with transition tables.
    _trigger("update", "AFTER UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    _trigger("truncate", "AFTER TRUNCATE", ""),
    # Recount. The lock waits for the transactions that changed counts and holds off new
    # changes until commit, so the tasks counted and the rows replaced agree.
    "LOCK TABLE joblib_job_pending_pg IN EXCLUSIVE MODE",
    "DELETE FROM joblib_job_pending_pg",
    "INSERT INTO joblib_job_pending_pg (job_id, shard, pending) SELECT job_id, 0, count(*) "
    f"FROM joblib_task WHERE {_PENDING} GROUP BY job_id",
]
"""The DDL run after ``create_all`` when the tasks table exists (``storage.pending``)."""


_TRIGGERS = ", ".join(f"'joblib_task_pending_{n}'" for n in (*_ON_CHANGE, "truncate"))

INSTALLED = text(
    "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('joblib_task') "
    f"AND tgname IN ({_TRIGGERS}) AND tgenabled <> 'D') "
    "+ CAST(to_regclass('joblib_job_pending_pg') IS NOT NULL AS integer) "
    "+ CAST(to_regprocedure('joblib_pending_fold()') IS NOT NULL AS integer) = 6"
)
"""Whether the counts are kept: the table, the fold and the four enabled triggers exist."""

FOLD = text("SELECT joblib_pending_fold()")
"""Fold the backends' unlocked rows into their jobs' base rows; drop empty base rows.

Returns the number of jobs whose base row took counts. It never waits for a row a
transaction holds (that row is left for a later fold), and only folds touch base rows, so
it cannot deadlock with the triggers.
"""
