"""The performance targets (docs/performance.md), compared with what a run measured."""

from __future__ import annotations

from typing import Any

__all__ = ["TARGETS", "summary_rows", "summary_table"]

# (label, scenario, key, comparison, SQLite target, PostgreSQL target); None: no target.
TARGETS: list[tuple[str, str, str, str, float | None, float | None]] = [
    (
        "E2E unbatched, tasks/s (submit+claim+start+complete)",
        "e2e_unbatched",
        "pipeline_tasks_per_s",
        ">=",
        250,
        200,
    ),
    ("  ratio (tasks/s x 4) / trivial req/s", "e2e_unbatched", "ratio_to_trivial", ">=", 0.5, 0.5),
    (
        "  10x predecessor: drain tasks/s (0.1.7: 25 / 43)",
        "e2e_unbatched",
        "drain_tasks_per_s",
        ">=",
        250,
        430,
    ),
    ("  10x predecessor: submits/s (0.1.7: 70)", "e2e_unbatched", "submits_per_s", ">=", 700, 700),
    (
        "E2E batched (batch submit, claim 100, batch PATCH), tasks/s",
        "e2e_batched",
        "pipeline_tasks_per_s",
        ">=",
        3000,
        2500,
    ),
    (
        "  drain tasks/s (claim+start+complete)",
        "e2e_batched",
        "drain_tasks_per_s",
        ">=",
        None,
        None,
    ),
    ("Claim p99 ms, 100k pending + 1M finished", "claim_latency", "p99_ms", "<=", 10, 15),
    (
        "  same, 8 claimers at once (queueing included)",
        "claim_latency",
        "loaded_p99_ms",
        "<=",
        None,
        None,
    ),
    (
        "  claim p99 big table / 1k-row table",
        "claim_latency",
        "p99_ratio_big_to_small",
        "<=",
        2,
        2,
    ),
    ("Wake-up p99 ms, one server", "wakeup_latency", "p99_ms", "<=", 10, 10),
    (
        "Wake-up p99 ms, two server processes",
        "wakeup_latency",
        "two_servers_p99_ms",
        "<=",
        None,
        50,
    ),
    ("DB queries/s, 100 idle long-polls", "idle_queries", "queries_per_s", "<=", 5, 5),
    (
        "/health/live p99 ms while hostile payloads are validated",
        "hostile",
        "p99_ms",
        "<=",
        50,
        50,
    ),
    ("Server memory growth %, 100k tasks", "memory", "growth_pct", "<=", 10, 10),
    (
        "  same, from server start (warm-up included)",
        "memory",
        "growth_from_start_pct",
        "<=",
        None,
        None,
    ),
]


def summary_rows(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target: measured median, target and met / not met / not measured."""
    by_name = {line["scenario"]: line for line in lines}
    rows = []
    for label, scenario, key, op, sqlite_target, pg_target in TARGETS:
        line = by_name.get(scenario)
        if line is None:
            continue
        target = pg_target if line["database"] == "postgresql" else sqlite_target
        value = line.get(key)
        if target is None:
            verdict = "no target"
        elif not isinstance(value, int | float):
            verdict = "not measured"
        elif (value >= target) if op == ">=" else (value <= target):
            verdict = "met"
        else:
            verdict = "NOT MET"
        rows.append(
            {"figure": label, "value": value, "target": f"{op} {target}", "verdict": verdict}
        )
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`summary_rows`."""
    width = max((len(r["figure"]) for r in rows), default=10)
    out = [f"{'figure':<{width}}  {'median':>10}  {'target':>10}  verdict"]
    for r in rows:
        value = r["value"]
        shown = f"{value:.4g}" if isinstance(value, int | float) else "-"
        out.append(f"{r['figure']:<{width}}  {shown:>10}  {r['target']:>10}  {r['verdict']}")
    return "\n".join(out)
