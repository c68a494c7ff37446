"""Helpers shared by benchmark runners: timing (wall and CPU), the results folder, the machine header."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bambo.benchmarks.environment import machine_header

__all__ = ["RESULTS", "Clock", "Timing", "best_time", "best_times", "machine_header"]

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Timing:
    """Seconds of one timed piece of work.

    Attributes:
        wall: Wall-clock seconds (``time.perf_counter``).
        cpu: CPU seconds of this process, all threads (``time.process_time``); child
            processes are not counted.
    """

    wall: float
    cpu: float

    def text(self, digits: int = 0) -> str:
        """``"wall W s, CPU C s"`` with ``digits`` decimals."""
        return f"wall {self.wall:.{digits}f} s, CPU {self.cpu:.{digits}f} s"


@dataclass
class Clock:
    """Wall and CPU seconds since the clock was made (or last :meth:`restart`)."""

    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)

    def restart(self) -> None:
        """Start counting again from now."""
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def elapsed(self) -> Timing:
        """Wall and CPU seconds since the start."""
        return Timing(time.perf_counter() - self.wall0, time.process_time() - self.cpu0)


def best_times(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Wall and CPU seconds of the fastest (by wall time) of ``repeats`` runs of ``fn`` after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    timings = []
    for _ in range(repeats):
        clock = Clock()
        fn()
        timings.append(clock.elapsed())
    return min(timings, key=lambda t: t.wall)


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    return best_times(fn, repeats, warmup).wall
