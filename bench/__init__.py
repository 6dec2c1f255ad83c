"""Benchmarks: `make bench` prints one JSON line per measurement."""

from __future__ import annotations

import statistics
from typing import Any


def runs_record(metric: str, seconds: list[float], **more: Any) -> dict[str, Any]:
    """The record of a benchmark's timed runs: their count, median, max and every run's
    seconds (to the hundredth), and `more` about how they ran."""
    return {
        "metric": metric,
        "runs": len(seconds),
        "median": round(statistics.median(seconds), 2),
        "max": round(max(seconds), 2),
        "all": [round(s, 2) for s in seconds],
        **more,
    }
