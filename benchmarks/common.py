"""Helpers shared by benchmark runners: timing (wall and CPU), the results folder, the machine header."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bambo.benchmarks.environment import machine_header

__all__ = ["RESULTS", "Clock", "Timing", "best_time", "best_times", "machine_header", "median_iqr", "run_jobs"]

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


def median_iqr(values: list[float]) -> str:
    """``"median [q1, q3]"`` with 4 decimals (the value alone for one, ``-`` for none)."""
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    q = statistics.quantiles(values, n=4, method="inclusive")
    return f"{statistics.median(values):.4f} [{q[0]:.4f}, {q[2]:.4f}]"


def run_jobs(
    jobs: Sequence[tuple],
    run_job: Callable[[tuple], list[dict[str, Any]]],
    processes: int,
    report: Callable[[list[dict[str, Any]], bool], None],
    first: Callable[[tuple], Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every ``(benchmark, contender, ...)`` job, in ``processes`` spawned processes (here, in order, for 1).

    After each job ``report(rows, partial)`` gets every row so far, in job order then by seed, and
    whether jobs are still running: a runner rewrites its report there, so a crash keeps what finished.

    Args:
        jobs: Picklable job descriptions whose first two fields are the benchmark and the contender.
        run_job: A module-level function from a job to its rows (each with ``benchmark``,
            ``contender`` and ``seed``).
        processes: Worker processes.
        report: Called after each job.
        first: Sort key of the order jobs are submitted in with a pool (the slow ones first).

    Returns:
        Every row, in job order then by seed.
    """
    order = {(job[0], job[1]): i for i, job in enumerate(jobs)}
    rows: list[dict[str, Any]] = []
    done = 0

    def collect(part: list[dict[str, Any]]) -> None:
        nonlocal done
        done += 1
        rows.extend(part)
        rows.sort(key=lambda r: (order[(r["benchmark"], r["contender"])], r["seed"]))
        report(list(rows), done < len(jobs))

    if processes <= 1:
        for job in jobs:
            collect(run_job(job))
        return rows
    context = multiprocessing.get_context("spawn")
    submitted = sorted(jobs, key=first) if first is not None else list(jobs)
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        for future in as_completed([pool.submit(run_job, job) for job in submitted]):
            collect(future.result())
    return rows
