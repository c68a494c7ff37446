"""Helpers shared by benchmark runners: timing and a machine/version header."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

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


def machine_header(packages: tuple[str, ...] = ("torch", "botorch", "bambo")) -> str:
    """Markdown lines naming the machine and package versions."""
    import torch

    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "\n".join(
        [
            f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"{platform.python_implementation()} {platform.python_version()}",
            f"- versions: {', '.join(versions)}",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        ]
    )
