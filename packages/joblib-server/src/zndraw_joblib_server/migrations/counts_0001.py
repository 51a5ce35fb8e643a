"""The kept pending counts' DDL as revision 0001 created it, frozen.

``storage.pending`` and ``storage.pending_pg`` hold the living version (run after
``create_all``, which tests use); a later change there needs a new revision, so this copy
stays what revision 0001 installed. Every list is safe to run again (``IF NOT EXISTS``,
``CREATE OR REPLACE``) and ends with a recount from the tasks.
"""

# ruff: noqa: E501  (DDL kept verbatim)

from __future__ import annotations

__all__ = ["DROP", "POSTGRESQL", "SQLITE"]

SQLITE: list[str] = [
    "CREATE TABLE IF NOT EXISTS joblib_job_pending (job_id CHAR(32) PRIMARY KEY NOT NULL, pending INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS joblib_task_pending_insert AFTER INSERT ON joblib_task WHEN NEW.status = 'pending' BEGIN INSERT INTO joblib_job_pending (job_id, pending) SELECT NEW.job_id, 1 WHERE 1 ON CONFLICT (job_id) DO UPDATE SET pending = pending + 1; END",
    "CREATE TRIGGER IF NOT EXISTS joblib_task_pending_delete AFTER DELETE ON joblib_task WHEN OLD.status = 'pending' BEGIN UPDATE joblib_job_pending SET pending = pending - 1 WHERE job_id = OLD.job_id AND 1; END",
    "CREATE TRIGGER IF NOT EXISTS joblib_task_pending_update AFTER UPDATE OF status, job_id ON joblib_task WHEN (OLD.status = 'pending') != (NEW.status = 'pending') OR (OLD.job_id != NEW.job_id AND NEW.status = 'pending') BEGIN UPDATE joblib_job_pending SET pending = pending - 1 WHERE job_id = OLD.job_id AND OLD.status = 'pending'; INSERT INTO joblib_job_pending (job_id, pending) SELECT NEW.job_id, 1 WHERE NEW.status = 'pending' ON CONFLICT (job_id) DO UPDATE SET pending = pending + 1; END",
    "DELETE FROM joblib_job_pending",
    "INSERT INTO joblib_job_pending (job_id, pending) SELECT job_id, count(*) FROM joblib_task WHERE status = 'pending' GROUP BY job_id",
]
"""SQLite: the counts' table and triggers, and a recount."""

POSTGRESQL: list[str] = [
    "SELECT pg_advisory_xact_lock(117026625186146)",
    "CREATE TABLE IF NOT EXISTS joblib_job_pending_pg (job_id UUID NOT NULL, shard INTEGER NOT NULL, pending BIGINT NOT NULL, PRIMARY KEY (job_id, shard))",
    "CREATE OR REPLACE FUNCTION joblib_pending_insert() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN INSERT INTO joblib_job_pending_pg AS c (job_id, shard, pending) SELECT job_id, pg_backend_pid(), delta FROM (SELECT job_id, count(*) AS delta FROM new_rows WHERE status = 'pending' GROUP BY job_id) AS d WHERE delta <> 0 ORDER BY job_id ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending; RETURN NULL; END $body$",
    "CREATE OR REPLACE FUNCTION joblib_pending_delete() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN INSERT INTO joblib_job_pending_pg AS c (job_id, shard, pending) SELECT job_id, pg_backend_pid(), delta FROM (SELECT job_id, -count(*) AS delta FROM old_rows WHERE status = 'pending' GROUP BY job_id) AS d WHERE delta <> 0 ORDER BY job_id ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending; RETURN NULL; END $body$",
    "CREATE OR REPLACE FUNCTION joblib_pending_update() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN IF NOT EXISTS (SELECT FROM old_rows WHERE status = 'pending') AND NOT EXISTS (SELECT FROM new_rows WHERE status = 'pending') THEN RETURN NULL; END IF; INSERT INTO joblib_job_pending_pg AS c (job_id, shard, pending) SELECT job_id, pg_backend_pid(), delta FROM (SELECT job_id, sum(d) AS delta FROM (SELECT job_id, 1 AS d FROM new_rows WHERE status = 'pending' UNION ALL SELECT job_id, -1 AS d FROM old_rows WHERE status = 'pending') AS m GROUP BY job_id) AS d WHERE delta <> 0 ORDER BY job_id ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending; RETURN NULL; END $body$",
    "CREATE OR REPLACE FUNCTION joblib_pending_truncate() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN DELETE FROM joblib_job_pending_pg; RETURN NULL; END $body$",
    "CREATE OR REPLACE FUNCTION joblib_pending_fold() RETURNS integer LANGUAGE plpgsql AS $body$ DECLARE jobs uuid[]; shards integer[]; folded integer; BEGIN SELECT array_agg(job_id), array_agg(shard) INTO jobs, shards FROM (SELECT job_id, shard FROM joblib_job_pending_pg WHERE shard <> 0 ORDER BY job_id, shard FOR UPDATE SKIP LOCKED) AS t; WITH moved AS (DELETE FROM joblib_job_pending_pg AS c USING unnest(jobs, shards) AS t (job_id, shard) WHERE c.job_id = t.job_id AND c.shard = t.shard RETURNING c.job_id, c.pending) INSERT INTO joblib_job_pending_pg AS c (job_id, shard, pending) SELECT job_id, 0, sum(pending) FROM moved GROUP BY job_id ORDER BY job_id ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending; GET DIAGNOSTICS folded = ROW_COUNT; DELETE FROM joblib_job_pending_pg WHERE (job_id, shard) IN (SELECT b.job_id, b.shard FROM joblib_job_pending_pg AS b WHERE b.shard = 0 AND b.pending = 0 AND NOT EXISTS (SELECT FROM joblib_job_pending_pg AS o WHERE o.job_id = b.job_id AND o.shard <> 0) FOR UPDATE SKIP LOCKED); RETURN folded; END $body$",
    "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'joblib_task'::regclass AND tgname = 'joblib_task_pending_insert') THEN CREATE TRIGGER joblib_task_pending_insert AFTER INSERT ON joblib_task REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION joblib_pending_insert(); END IF; END $do$",
    "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'joblib_task'::regclass AND tgname = 'joblib_task_pending_delete') THEN CREATE TRIGGER joblib_task_pending_delete AFTER DELETE ON joblib_task REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION joblib_pending_delete(); END IF; END $do$",
    "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'joblib_task'::regclass AND tgname = 'joblib_task_pending_update') THEN CREATE TRIGGER joblib_task_pending_update AFTER UPDATE ON joblib_task REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION joblib_pending_update(); END IF; END $do$",
    "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'joblib_task'::regclass AND tgname = 'joblib_task_pending_truncate') THEN CREATE TRIGGER joblib_task_pending_truncate AFTER TRUNCATE ON joblib_task  FOR EACH STATEMENT EXECUTE FUNCTION joblib_pending_truncate(); END IF; END $do$",
    "LOCK TABLE joblib_job_pending_pg IN EXCLUSIVE MODE",
    "DELETE FROM joblib_job_pending_pg",
    "INSERT INTO joblib_job_pending_pg (job_id, shard, pending) SELECT job_id, 0, count(*) FROM joblib_task WHERE status = 'pending' GROUP BY job_id",
]
"""PostgreSQL: the sharded counts' table, functions and triggers, and a recount."""

DROP = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS joblib_task_pending_insert",
        "DROP TRIGGER IF EXISTS joblib_task_pending_delete",
        "DROP TRIGGER IF EXISTS joblib_task_pending_update",
        "DROP TABLE IF EXISTS joblib_job_pending",
    ],
    "postgresql": [
        *(
            f"DROP TRIGGER IF EXISTS joblib_task_pending_{name} ON joblib_task"
            for name in ("insert", "delete", "update", "truncate")
        ),
        *(
            f"DROP FUNCTION IF EXISTS joblib_pending_{name}()"
            for name in ("insert", "delete", "update", "truncate", "fold")
        ),
        "DROP TABLE IF EXISTS joblib_job_pending_pg",
    ],
}
"""Per dialect: removing the counts again (before the tasks table is dropped)."""
