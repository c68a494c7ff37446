"""The machine and package versions, for the header of every benchmark report."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version

import torch


def machine_header(packages: tuple[str, ...] = ("torch", "botorch", "bambo")) -> str:
    """Markdown lines naming the machine and package versions."""
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
