"""Helpers shared by benchmark runners: timing, the results folder, the machine header."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bambo.benchmarks.environment import machine_header

__all__ = ["RESULTS", "best_time", "machine_header"]

RESULTS = Path(__file__).parent / "results"


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
