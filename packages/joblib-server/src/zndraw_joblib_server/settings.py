"""Server settings, read from ``ZNDRAW_JOBLIB_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from limits import parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "JobLibSettings"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./zndraw-joblib.db"
"""Embedded SQLite file in the working directory."""


class JobLibSettings(BaseSettings):
    """Settings of the job queue.

    Every field can be set through the environment with the prefix ``ZNDRAW_JOBLIB_``, e.g.
    ``ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS=120``; lists are given as JSON
    (``ZNDRAW_JOBLIB_ALLOWED_CATEGORIES='["modifiers","custom"]'``). A host may also build an
    instance in code and store it as ``app.state.joblib_settings``.
    """

    model_config = SettingsConfigDict(env_prefix="ZNDRAW_JOBLIB_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="Database of the reference app (SQLite file or postgresql+asyncpg URL).",
    )
    migrate: bool = Field(
        default=False,
        description="At start, upgrade a database whose schema is behind this version's "
        "(`serve --migrate` sets it). Off, the server refuses to start on such a database and "
        "names the command to run. A database without the queue's tables is always set up.",
    )
    allowed_categories: list[str] = Field(
        default_factory=lambda: ["modifiers", "selections", "analysis"],
        description="Job categories that may be registered.",
    )
    internal_worker_emails: list[str] = Field(
        default_factory=list,
        description="Accounts (besides superusers) whose workers may serve `@internal` jobs "
        "(`zndraw-joblib worker --internal`): service accounts without superuser rights.",
    )
    internal_executor_threads: int = Field(
        default=4,
        ge=0,
        description="Tasks of `@internal` jobs the queue runs at once inside the server "
        "process (synchronous `run()` in threads, `async` ones on the event loop); 0: no "
        "in-process executor (separate internal workers serve them).",
    )
    internal_extensions: list[str] = Field(
        default_factory=list,
        description="Reference app: the `module:Class` extensions it registers as `@internal` "
        "jobs. Unset, `serve` registers the demo "
        "`zndraw_joblib_server.internal.demo:Checksum`.",
    )
    worker_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A worker silent for longer (no heartbeat, no claim) is removed by the "
        "sweeper. Its tasks do not wait for this: they are released when their lease ends.",
    )
    refuse_submit_without_workers: bool = Field(
        default=False,
        description="Submits (single and batch) to a job that no live worker serves answer "
        "409 no-workers-available and create nothing, instead of waiting for a worker. Live: "
        "a heartbeat or claim within the worker timeout. Jobs in `@internal` (run by the "
        "host) are never refused.",
    )
    sweeper_interval_seconds: float = Field(
        default=10.0, gt=0, description="Pause between two sweeper passes."
    )
    long_poll_max_wait_seconds: float = Field(
        default=60.0, ge=0, description="Cap on `Prefer: wait=N` for task reads and claims."
    )
    claim_handoff: bool = Field(
        default=True,
        description="A submit claims its new tasks for claims waiting in the same process, "
        "inside its own transaction, so they answer without a claim transaction of their own "
        "(on PostgreSQL batch submits only: a single submit wakes the waiting claims).",
    )
    claim_poll_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A waiting claim re-checks the database at least this often, so a lost "
        "wake-up only delays work.",
    )
    lease_seconds: float = Field(
        default=60.0, gt=0, description="Lease granted by a claim and renewed by heartbeats."
    )
    default_max_attempts: int = Field(
        default=3, ge=1, description="How many claims a task gets when the submit names none."
    )
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="Backoff before the 2nd attempt; doubles each attempt."
    )
    retry_backoff_max_seconds: float = Field(
        default=300.0, ge=0, description="Upper bound of the retry backoff."
    )
    cancel_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="A worker that does not acknowledge a cancel request within this time has "
        "its task cancelled by the sweeper.",
    )
    max_body_bytes: int = Field(
        default=2_097_152,
        gt=0,
        description="Largest request body of any route of the reference app (the auth routes "
        "too), declared or streamed; larger ones are answered 413.",
    )
    max_payload_bytes: int = Field(default=262_144, gt=0, description="Largest task payload.")
    max_result_bytes: int = Field(default=1_048_576, gt=0, description="Largest task result.")
    max_schema_bytes: int = Field(default=262_144, gt=0, description="Largest job schema.")
    schema_max_depth: int = Field(
        default=64,
        ge=1,
        description="Deepest nesting (objects and arrays) a job schema may have.",
    )
    schema_max_nodes: int = Field(
        default=20_000,
        ge=1,
        description="Most JSON values (subschemas, keywords, enum entries...) in a job schema.",
    )
    schema_max_enum: int = Field(
        default=1_000, ge=1, description="Most values one `enum` of a job schema may list."
    )
    schema_max_expanded_nodes: int = Field(
        default=200_000,
        ge=1,
        description="Most JSON values a job schema may have with its non-recursive `$ref`s "
        "written out (refuses schemas whose references multiply their size).",
    )
    schema_cache_bytes: int = Field(
        default=67_108_864,
        ge=0,
        description="Memory budget (estimated from the schemas' sizes) of the compiled "
        "validators kept for submits; the least recently used are dropped first.",
    )
    validation_inline_cost: int = Field(
        default=4_000_000,
        ge=0,
        description="A payload whose validation costs at most this (the schema's expanded "
        "size times the payload's size in bytes) against a schema without recursive `$ref`s "
        "is validated in the request itself; costlier or recursive ones in a separate "
        "process under `validation_timeout_seconds`.",
    )
    validation_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Budget for validating the payloads of one submit in the validation "
        "process; a submit that exceeds it is refused (422) and the process is replaced.",
    )
    validation_processes: int = Field(
        default=1,
        ge=1,
        description="Processes validating costly payloads (started on first use).",
    )
    max_payload_errors: int = Field(
        default=50,
        ge=1,
        description="Most schema errors a 422 lists (the problem's `error_count` has them all).",
    )
    max_error_chars: int = Field(default=65_536, gt=0, description="Longest error text.")
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="`serve`: a client must send a request's head (request line and headers) "
        "within this time of opening the connection or starting the request; otherwise it "
        "is answered 408 and disconnected.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="`serve`: a request's body must arrive completely within this time of "
        "its head; a stalled body is answered 408 and the connection closed.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=1,
        le=200,
        description="Deepest nesting of arrays and objects accepted in a stored JSON value "
        "(task payload, result, job schema); deeper input is refused with 422.",
    )
    max_message_chars: int = Field(default=1_024, gt=0, description="Longest progress message.")
    max_workers_per_user: int = Field(
        default=100,
        ge=0,
        description="How many workers one user may have at once; creating more answers 429 "
        "quota-exceeded until some are removed (or time out). Superusers are exempt; 0: no cap.",
    )
    max_pending_tasks_per_user: int = Field(
        default=10_000,
        ge=0,
        description="How many pending (not yet claimed) tasks one user may have submitted; a "
        "submit that would exceed it answers 429 quota-exceeded and creates nothing. "
        "Superusers are exempt; 0: no cap.",
    )
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="The sweeper deletes finished tasks (completed, failed, cancelled) that "
        "finished longer ago than this, a bounded number per pass; 0 keeps them forever.",
    )
    enable_db_lock: bool | None = Field(
        default=None,
        description="Serialise writes inside the process; None: on for SQLite, off otherwise.",
    )
    db_lock_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Waiting longer for the write lock answers 503."
    )
    sqlite_inline: bool = Field(
        default=True,
        description="Run SQLite statements in the event loop's thread (fast; one server process "
        "per database file) instead of aiosqlite's worker thread.",
    )
    fast_lane: bool = Field(
        default=True,
        description="The reference app serves the hot endpoints (submit, claim, update, "
        "heartbeat, task read) through the fast lane (zndraw_joblib_server.lane) instead of "
        "FastAPI's generic routing and dependency resolution; the answers are the same.",
    )
    user_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a looked-up user (active and superuser flags) is reused by "
        "later requests with a valid token; 0 looks the user up on every request.",
    )
    db_ping_idle_seconds: float = Field(
        default=2.0,
        ge=0,
        description="PostgreSQL: a pooled connection idle for longer than this is pinged "
        "before reuse (and replaced if dead); busy connections are not (a ping costs a round "
        "trip per transaction). 0 pings on every checkout.",
    )
    vacuum_after_claims: int = Field(
        default=2_000,
        ge=0,
        description="PostgreSQL: after this many tasks claimed in this process, vacuum the "
        "tasks table in the background (VACUUM SKIP_LOCKED), so claims stop walking past the "
        "index entries of tasks claimed before; 0 leaves it to autovacuum.",
    )
    sqlite_synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="SQLite durability (PRAGMA synchronous): 'full' syncs every commit to disk "
        "before the server answers, so an acknowledged write survives a power failure or OS "
        "crash; 'normal' syncs only at WAL checkpoints: faster, never corrupts the database, "
        "but a power failure may lose the last acknowledged writes (a crash of the server "
        "process alone loses nothing either way).",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=5_000, ge=0, description="SQLite busy timeout for writers of other processes."
    )
    allow_registration: bool = Field(
        default=True,
        description="The reference app serves `POST /auth/register`: anybody who can reach the "
        "server may create an account (in development mode, a superuser). false: accounts are "
        "created by a superuser or the host only (the route answers 404).",
    )
    min_password_length: int = Field(
        default=10,
        ge=1,
        le=1024,
        description="Shortest password accepted when registering or changing a password "
        "(shorter: 422 validation-error problem).",
    )
    login_rate_limit: str = Field(
        default="10/minute",
        description="Logins (`POST /auth/jwt/login`) allowed per client IP, in the notation of "
        "the `limits` library (e.g. `10/minute;100/hour`); beyond: 429 with Retry-After.",
    )
    register_rate_limit: str = Field(
        default="5/minute",
        description="Registrations (`POST /auth/register`) allowed per client IP (notation as "
        "LOGIN_RATE_LIMIT).",
    )
    rate_limit_storage_uri: str = Field(
        default="memory://",
        description="Where the rate-limit counters live (a `limits` storage URI; the default "
        "counts per server process; e.g. `redis://host:6379` to share them, which needs the "
        "`limits[redis]` extra).",
    )
    password_hash_threads: int = Field(
        default=1,
        ge=1,
        description="Password hashes (argon2, about 0.3 s of CPU each) computed at once, in "
        "worker threads off the event loop; more wait their turn.",
    )
    dev_secret_file: str | None = Field(
        default=None,
        description="Development mode without ZNDRAW_AUTH_SECRET_KEY: the file keeping the "
        "generated token secret (default: `<SQLite file>.secret`, or `zndraw-joblib.secret` "
        "in the working directory for other databases).",
    )
    metrics: bool = Field(
        default=True,
        description="The reference app serves Prometheus metrics at `GET /metrics` (a host "
        "mounts them itself with `QueueMetrics`).",
    )
    metrics_token: str | None = Field(
        default=None,
        description="When set, `GET /metrics` requires `Authorization: Bearer <token>` (401 "
        "otherwise); unset, the metrics are open to anybody who reaches the server.",
    )
    dashboard: bool = Field(
        default=True,
        description="The reference app serves the web dashboard at `/joblib/` (login with an "
        "account of the server).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`serve`: log lines as plain text, or one JSON object per line with the "
        "request id (`json`).",
    )

    allowed_provider_categories: list[str] | None = Field(
        default=None,
        description="Provider categories that may be registered (unset: any category).",
    )
    provider_cache: Literal["database", "memory"] = Field(
        default="database",
        description="Where provider results and reads in flight are kept: the database "
        "(shared by every server process) or this process's memory (one process only). A "
        "host may pass its own backend to `JobQueue(provider_cache=...)`.",
    )
    provider_result_ttl_seconds: float = Field(
        default=300.0, gt=0, description="How long a provider's answer (or error) is cached."
    )
    provider_cache_max_entries: int = Field(
        default=10_000,
        ge=1,
        description="Cached provider answers kept at most; the sweeper drops the oldest beyond.",
    )
    provider_inflight_ttl_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A dispatched provider read without an answer is sent again to the "
        "provider's worker after this long (by the next reader).",
    )
    provider_long_poll_default_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a provider read waits for the answer without `Prefer: wait=N`.",
    )
    provider_long_poll_max_seconds: float = Field(
        default=30.0, ge=0, description="Cap on `Prefer: wait=N` for provider reads."
    )
    provider_max_result_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Largest provider answer a worker may upload (413 beyond; also bounded "
        "by `max_body_bytes`).",
    )
    provider_max_params_bytes: int = Field(
        default=8_192, gt=0, description="Largest read parameters (as canonical JSON)."
    )
    provider_max_reads_in_flight: int = Field(
        default=64,
        ge=1,
        description="Reads of one provider waiting for its worker at once; more are "
        "answered 429 with `Retry-After`.",
    )
    provider_internal_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest run of an `@internal` provider's read before it is answered "
        "as failed.",
    )

    @field_validator("login_rate_limit", "register_rate_limit")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_many(value)  # raises ValueError on a malformed rate
        return value
