"""Small statistics helpers: percentiles, medians over runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["latency_summary", "median_of_runs", "percentile", "split"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and count of latencies (ms), rounded to 0.01 ms."""
    return {
        "p50_ms": round(percentile(values_ms, 50), 2),
        "p99_ms": round(percentile(values_ms, 99), 2),
        "max_ms": round(max(values_ms), 2) if values_ms else math.nan,
        "samples": len(values_ms),
    }


def median_of_runs(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """For each key, the median of the runs' numeric values (rounded) and the raw list."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if not values:
            continue
        med = statistics.median(values)
        out[key] = round(med, 3) if isinstance(med, float) else med
        out[f"{key}_runs"] = [round(v, 3) if isinstance(v, float) else v for v in values]
    return out


def split(total: int, parts: int) -> list[int]:
    """``total`` divided into ``parts`` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
