"""Human-readable outputs of a search: a rich table and pareto.csv / .json / .png.

Pareto points are named by their trial id (the journal's, as ``bambo export`` prints
it). A point evaluated twice with the same result (an identical decision vector and
objectives) is one row, listing every trial id that found it.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bambo.atomic import atomic_path, atomic_write_text
from bambo.errors import BamboWarning
from bambo.plotting import plot_front
from bambo.result import ParetoResult


@dataclass(frozen=True)
class ParetoPoint:
    """One distinct point of the Pareto set.

    Attributes:
        trial_ids: The trials that evaluated it (more than one: the same x gave the same objectives).
        row: The result's row of the first of them.
        x: The decision vector, d values.
        y: The objectives in their own directions, m values.
    """

    trial_ids: list[int]
    row: int
    x: list[float]
    y: list[float]


def pareto_points(result: ParetoResult) -> list[ParetoPoint]:
    """The Pareto set without duplicates, in trial order (identical x and objectives: one point)."""
    points: dict[tuple[tuple[float, ...], tuple[float, ...]], ParetoPoint] = {}
    Y = result.Y
    for row in result.pareto_rows:
        x, y = result.X[row].tolist(), Y[row].tolist()
        trial_id = result.trial_ids[row] if result.trial_ids else row
        key = (tuple(x), tuple(y))
        if key in points:
            points[key].trial_ids.append(trial_id)
        else:
            points[key] = ParetoPoint([trial_id], row, x, y)
    return list(points.values())


def _ids(point: ParetoPoint) -> str:
    return " = ".join(str(i) for i in point.trial_ids)


def pareto_table(result: ParetoResult, title: str = "Pareto set", digits: int = 4, max_variables: int = 6) -> Table:
    """The Pareto set as a table: objectives in their own directions, then decision variables.

    Args:
        result: A search result.
        title: Table title.
        digits: Decimals shown.
        max_variables: Show the decision variables only if there are at most this
            many (block-wise spaces have dozens; they are in ``pareto.csv``).
    """
    show_x = len(result.parameter_names) <= max_variables
    caption = None if show_x else f"{len(result.parameter_names)} coefficients per point: see pareto.csv"
    table = Table(title=title, caption=caption)
    table.add_column("trial", justify="right")
    for name, sign in zip(result.objective_names, result.signs.tolist(), strict=True):
        arrow = "↑" if sign > 0 else "↓"
        table.add_column(f"{name} {arrow}", justify="right", style="green")
    if show_x:
        for name in result.parameter_names:
            table.add_column(name, justify="right", style="cyan")
    points = pareto_points(result)
    descending = bool(result.signs[0] > 0)
    points.sort(key=lambda p: -p.y[0] if descending else p.y[0])
    for point in points:
        cells = [f"{v:.{digits}f}" for v in point.y]
        if show_x:
            cells += [f"{v:.{digits}f}" for v in point.x]
        table.add_row(_ids(point), *cells)
    return table


def write_pareto(
    result: ParetoResult, out_dir: Path | str, metadata: dict[str, Any] | None = None, title: str = ""
) -> list[Path]:
    """Write ``pareto.csv`` and ``pareto.json``, then plot ``pareto.png``, in ``out_dir``.

    ``pareto.csv`` has one row per distinct Pareto point (:func:`pareto_points`):
    ``trial_id`` (the first trial that found it), ``same_as`` (other trials that found
    the same point, ``;``-separated), the decision variables, then the objectives in
    their own directions. ``pareto.json`` adds every evaluation with its trial id,
    failures with their messages, the hypervolume history and ``metadata``. The two
    files are written first; a plot that fails is a :class:`~bambo.errors.BamboWarning`,
    not an error (the search's results are already safe).

    Returns:
        The paths written (the plot's only if it was written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X, Y = result.pareto_X, result.pareto_Y
    ids = result.trial_ids or list(range(result.n_evaluations))
    pareto_ids = [ids[row] for row in result.pareto_rows]
    csv_path = out / "pareto.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial_id", "same_as", *result.parameter_names, *result.objective_names])
        for point in pareto_points(result):
            same = ";".join(str(i) for i in point.trial_ids[1:])
            writer.writerow([point.trial_ids[0], same, *(f"{v:.8g}" for v in point.x), *(f"{v:.8g}" for v in point.y)])
    payload = {
        "metadata": metadata or {},
        "parameter_names": result.parameter_names,
        "objectives": [
            {"name": n, "direction": "maximize" if s > 0 else "minimize"}
            for n, s in zip(result.objective_names, result.signs.tolist(), strict=True)
        ],
        "pareto": [
            {"trial_id": i, "x": x, "objectives": y} for i, x, y in zip(pareto_ids, X.tolist(), Y.tolist(), strict=True)
        ],
        "evaluations": [
            {"trial_id": ids[i], "x": x, "objectives": None if i in result.errors else y, "error": result.errors.get(i)}
            for i, (x, y) in enumerate(zip(result.X.tolist(), result.Y.tolist(), strict=True))
        ],
        "ref_point": None
        if result.ref_point is None
        else (result.ref_point * result.signs[result.front_columns or slice(None)]).tolist(),
        "hypervolume_history": result.hypervolume_history,
        "strategy": result.strategy,
        "info": result.info,
    }
    if result.predicted_front is not None and result.predicted_X is not None:
        payload["predicted_front"] = [
            {"x": x, "objectives": y}
            for x, y in zip(result.predicted_X.tolist(), result.predicted_front.tolist(), strict=True)
        ]
    json_path = out / "pareto.json"
    atomic_write_text(json_path, json.dumps(payload, indent=1))
    written = [csv_path, json_path]
    try:
        written.append(plot_front(result, out / "pareto.png", title=title))
    except Exception as exc:  # noqa: BLE001 - a plot never costs the results written above
        warnings.warn(f"could not plot {out / 'pareto.png'}: {type(exc).__name__}: {exc}", BamboWarning, stacklevel=2)
    return written
