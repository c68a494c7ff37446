"""Evaluators that ``bambo run`` imports by entry point in the runner tests (``tests.run_helpers:...``)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

N_LAYERS = 4


def write_toy_models(folder: Path, expert_shape: tuple[int, ...] = (3,)) -> dict[str, Path]:
    """A base and two experts with an embedding, 4 layers and a head, as safetensors files."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    names = ["embed.weight", *(f"layers.{i}.w" for i in range(N_LAYERS)), "head.weight"]
    base = {n: torch.zeros(3) for n in names}
    paths = {"base": folder / "base.safetensors"}
    save_file(base, paths["base"])
    for k, expert in enumerate(("a", "b")):
        sd = {n: torch.randn(3, generator=g) + (1.0 if k == 0 else -1.0) for n in names}
        if expert == "b" and expert_shape != (3,):
            sd["layers.2.w"] = torch.zeros(expert_shape)
        paths[expert] = folder / f"{expert}.safetensors"
        save_file(sd, paths[expert])
    return paths


def toy_metrics(
    state_dict: dict[str, torch.Tensor],
    delay: float = 0.0,
    log: str | None = None,
    fail_above: float | None = None,
    nan_above: float | None = None,
    hang_above: float | None = None,
    hold_after: int | None = None,
    release: str | None = None,
) -> dict[str, float]:
    """Two conflicting scores of a merged toy model; optionally slow, logged, failing, NaN or hanging.

    The "signal" is the first entry of ``layers.0.w``: failures are triggered by it.

    With ``log``, ``hold_after`` and ``release``, an evaluation that starts after
    ``hold_after`` evaluations have ended (``end`` lines in the log) writes ``held`` to
    the log (with its process id) and waits until the file ``release`` exists, so a test
    can kill the run at a known point without a clock. It gives up (raises) if its parent process ends.
    """
    signal = float(state_dict["layers.0.w"][0])
    fingerprint = json.dumps([round(float(v), 10) for t in state_dict.values() for v in t.flatten()])
    if log:
        with open(log, "a") as handle:
            handle.write(f"start {fingerprint}\n")
    if log and hold_after is not None and release is not None and not os.path.exists(release):
        with open(log) as handle:
            ended = sum(line.startswith("end ") for line in handle)
        if ended >= hold_after:
            parent = os.getppid()
            with open(log, "a") as handle:
                handle.write(f"held {fingerprint} pid={os.getpid()}\n")
            while not os.path.exists(release):
                if os.getppid() != parent:
                    raise RuntimeError("the process that started this run is gone")
                time.sleep(0.02)
    if hang_above is not None and signal > hang_above:
        time.sleep(30)
    if fail_above is not None and signal > fail_above:
        raise RuntimeError(f"evaluator crashed at signal {signal:.3f}")
    time.sleep(delay)
    flat = torch.cat([t.flatten() for t in state_dict.values()])
    a = -float(((flat - 1.0) ** 2).mean())
    b = -float(((flat + 1.0) ** 2).mean())
    if nan_above is not None and signal > nan_above:
        b = math.nan
    if log:
        with open(log, "a") as handle:
            handle.write(f"end {fingerprint}\n")
    return {"a": a, "b": b}


def toy_metrics_at(
    state_dict: dict[str, torch.Tensor], fidelity: float = 1.0, log: str | None = None
) -> dict[str, float]:
    """:func:`toy_metrics` seen through part of an evaluation set: off by up to ``0.05 * (1 - fidelity)``
    (deterministic per model), exact at fidelity 1; ``log`` gets one ``fidelity`` line per call."""
    metrics = toy_metrics(state_dict)
    if log:
        with open(log, "a") as handle:
            handle.write(f"fidelity {fidelity}\n")
    wobble = math.sin(1000.0 * float(state_dict["layers.0.w"][0]))
    return {name: value + 0.05 * (1.0 - fidelity) * wobble for name, value in metrics.items()}


def kill_run_when_held(config: Path, log: Path, env: dict[str, str], cwd: Path) -> None:
    """Start ``bambo run config`` in a subprocess and SIGKILL it once an evaluation holds.

    The evaluator is :func:`toy_metrics` with ``log``, ``hold_after`` and ``release``: the kill
    point is the ``held`` line in ``log`` (an event, not a clock). Waits with no time limit but
    pytest's own; fails if the run ends before any evaluation holds.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "bambo.cli", "run", str(config), "--threads", "1"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (log.exists() and "held " in log.read_text()):
            if process.poll() is not None:
                raise AssertionError("the run ended before its evaluator held")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
