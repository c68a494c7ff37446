"""Plots of evaluated points and Pareto fronts (matplotlib, headless)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bambo.atomic import atomic_path  # noqa: E402
from bambo.result import ParetoResult  # noqa: E402


def plot_front(result: ParetoResult, path: Path | str, title: str = "") -> Path:
    """Scatter of every completed evaluation with the Pareto set highlighted.

    Two objectives give one panel; more give one panel per pair. Axes are in the
    objectives' own directions.

    Args:
        result: A search result.
        path: Where to write the PNG.
        title: Figure title.
    """
    Y = result.Y[result.ok].numpy()
    P = result.pareto_Y.numpy()
    names = result.objective_names
    columns = result.front_columns if result.front_columns is not None else list(range(len(names)))
    pairs = list(combinations(columns, 2)) or [(columns[0], columns[0])]
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), squeeze=False)
    for ax, (i, j) in zip(axes.flat, pairs, strict=False):
        ax.scatter(Y[:, i], Y[:, j], s=14, c="0.65", label="evaluated")
        order = P[:, i].argsort()
        ax.plot(P[order, i], P[order, j], "o-", c="tab:red", ms=5, lw=1, label="Pareto set")
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)
    return _save(fig, path, title)


def plot_hypervolume(result: ParetoResult, path: Path | str, title: str = "") -> Path:
    """Hypervolume (w.r.t. the result's reference point) against evaluation cost.

    The x-axis is :attr:`~bambo.result.ParetoResult.costs`: the number of evaluations, or,
    in a multi-fidelity run, the cost spent (low-fidelity evaluations counted by their
    fidelity) when each full-fidelity evaluation was proposed.

    Args:
        result: A search result with a hypervolume history.
        path: Where to write the PNG.
        title: Figure title.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    history = result.hypervolume_history
    x = result.costs if len(result.costs) == len(history) else [float(i + 1) for i in range(len(history))]
    ax.step(x, history, "-", where="post", c="tab:blue")
    failed = sorted(result.errors)
    if failed and history:
        ax.scatter([x[i] for i in failed], [history[i] for i in failed], c="tab:red", s=14, label="failed evaluation")
        ax.legend(loc="lower right", fontsize=8)
    low = result.info.get("fidelity", {}).get("low_fidelity_trials", 0)
    ax.set_xlabel(f"evaluation cost (full evaluations; {low} low-fidelity ones by fidelity)" if low else "evaluations")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    ax.set_title(title or "hypervolume of the evaluated set")
    return _save(fig, path)


def plot_front_nd(result: ParetoResult, path: Path | str, title: str = "") -> Path:
    """The Pareto set beyond two objectives: a 3D scatter for three, parallel coordinates for more.

    Args:
        result: A search result with at least three objectives.
        path: Where to write the PNG.
        title: Figure title.
    """
    Y = result.Y[result.ok].numpy()
    P = result.pareto_Y.numpy()
    names = result.objective_names
    if len(names) == 3:
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
        ax.scatter(Y[:, 0], Y[:, 1], Y[:, 2], s=10, c="0.65", label="evaluated")
        ax.scatter(P[:, 0], P[:, 1], P[:, 2], s=30, c="tab:red", label="Pareto set")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_zlabel(names[2])
        ax.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
        low, high = Y.min(axis=0), Y.max(axis=0)
        span = (high - low) + (high == low)
        for row in (Y - low) / span:
            ax.plot(range(len(names)), row, c="0.8", lw=0.6)
        for row in (P - low) / span:
            ax.plot(range(len(names)), row, c="tab:red", lw=1.2)
        ax.set_xticks(
            range(len(names)), [f"{n}\n[{lo:.3g}, {hi:.3g}]" for n, lo, hi in zip(names, low, high, strict=True)]
        )
        ax.set_yticks([])
        ax.set_title("Pareto set (red) in parallel coordinates, each axis min-max scaled")
    return _save(fig, path, title)


def _save(fig: Figure, path: Path | str, title: str = "") -> Path:
    """Title, lay out, write and close a figure; returns the path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
