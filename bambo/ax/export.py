"""Ax export: a bambo run as an ``ax.Client`` experiment, and an Ax client set up for a problem.

:func:`export_to_ax` writes a :class:`~bambo.result.ParetoResult` as an
``ax.Client`` JSON snapshot (:func:`load_ax_export` reads it back, :func:`check_ax_export`
compares it with the run). :func:`configure_client` sets up a fresh client for a problem.
Ax names must be identifiers (objectives are parsed by SymPy, ``[`` is forbidden), so
bambo's names are mapped by :func:`ax_safe_names` (:class:`AxNames`); the mapping is kept
in the experiment's properties under ``"bambo"``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ax.api.client import Client
from ax.core.experiment import Experiment
from ax.core.parameter import ParameterType, RangeParameter
from ax.core.search_space import SearchSpace
from ax.core.trial_status import TrialStatus
from ax.storage.json_store.decoder import object_from_json
from ax.storage.json_store.registry import CORE_CLASS_DECODER_REGISTRY, CORE_DECODER_REGISTRY
from ax.utils.common.string_utils import SYMPY_GLOBALS
from torch import Tensor

from bambo.atomic import atomic_path
from bambo.ax.adapters import register_with_ax
from bambo.errors import ConfigError
from bambo.problem import Problem
from bambo.result import ParetoResult

__all__ = [
    "PROPERTY_KEY",
    "AxNames",
    "ax_safe_names",
    "check_ax_export",
    "configure_client",
    "export_to_ax",
    "load_ax_export",
]

PROPERTY_KEY = "bambo"
_FAILED = "failed evaluation"
_DATA_RTOL = 1e-9  # Ax's JSON store writes data frames with pandas' to_json: 10 significant digits


def ax_safe_names(names: Sequence[str]) -> dict[str, str]:
    """Map names to Ax-safe identifiers, deterministically and one-to-one: runs of other characters
    than letters, digits and ``_`` become ``_`` (``block.1[1-2]/rotated`` -> ``block_1_1_2_rotated``),
    a leading digit gets ``p_``, a SymPy name a ``_`` suffix, a clash ``_2``, ``_3``, ...

    Args:
        names: Distinct names, in order.

    Returns:
        ``{name: safe name}`` in the same order.

    Raises:
        ConfigError: Duplicate names.
    """
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be distinct, got {list(names)}")
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "x"
        base = f"p_{base}" if base[0].isdigit() else base
        base = f"{base}_" if base in SYMPY_GLOBALS else base
        safe, k = base, 2
        while safe in out.values():
            safe, k = f"{base}_{k}", k + 1
        out[name] = safe
    return out


@dataclass(frozen=True)
class AxNames:
    """bambo's names -> Ax's, in decision-vector and objective order.

    Attributes:
        parameters: ``{bambo parameter name: Ax parameter name}``.
        objectives: ``{bambo objective name: Ax metric name}``.
    """

    parameters: dict[str, str]
    objectives: dict[str, str]

    def vector(self, parameterization: Mapping[str, Any]) -> Tensor:
        """An Ax parameterization as bambo's decision vector, shape ``(d,)``.

        Raises:
            ConfigError: A parameter is missing.
        """
        missing = [a for a in self.parameters.values() if a not in parameterization]
        if missing:
            raise ConfigError(f"parameterization lacks parameters {missing}")
        return torch.tensor([float(parameterization[a]) for a in self.parameters.values()], dtype=torch.float64)

    def parameterization(self, x: Tensor) -> dict[str, float]:
        """bambo's decision vector (shape ``(d,)``) as an Ax parameterization."""
        return {a: float(v) for a, v in zip(self.parameters.values(), x.tolist(), strict=True)}

    def outcome(self, y_user: Tensor) -> dict[str, float]:
        """Objectives in their own directions (shape ``(m,)``) as Ax raw data."""
        return {a: float(v) for a, v in zip(self.objectives.values(), y_user.tolist(), strict=True)}


def _configure(
    client: Client, problem: Problem, names: AxNames, name: str, ref_max: Tensor | None, extra: dict[str, Any]
) -> None:
    """Experiment (search space, name mapping) and optimization config (objectives, thresholds)."""
    lower, upper = problem.bounds.tolist()
    parameters = [
        RangeParameter(name=a, parameter_type=ParameterType.FLOAT, lower=lo, upper=hi)
        for a, lo, hi in zip(names.parameters.values(), lower, upper, strict=True)
    ]
    properties = {PROPERTY_KEY: {"parameters": names.parameters, "objectives": names.objectives, **extra}}
    description = f"bambo merge search; properties[{PROPERTY_KEY!r}] maps bambo names to Ax names"
    client.set_experiment(Experiment(SearchSpace(parameters), name, description=description, properties=properties))
    metrics, signs = list(names.objectives.values()), problem.signs.tolist()
    objective = ", ".join(("-" if s < 0 else "") + m for m, s in zip(metrics, signs, strict=True))
    constraints = None
    if ref_max is not None:  # the reference point as Ax's objective thresholds
        ref = (ref_max * problem.signs).tolist()
        constraints = [f"{m} {'>=' if s > 0 else '<='} {r!r}" for m, s, r in zip(metrics, signs, ref, strict=True)]
    client.configure_optimization(objective=objective, outcome_constraints=constraints)


def configure_client(client: Client, problem: Problem, name: str = "bambo", thresholds: bool = True) -> AxNames:
    """Configure a fresh ``ax.Client`` for a problem: a float ``RangeParameter`` per decision
    variable (safe names, the problem's bounds), an objective per bambo objective.

    Args:
        client: A client without an experiment.
        problem: The problem (named by ``problem.space.parameter_names`` if it has a space).
        name: Experiment name.
        thresholds: The problem's reference point as Ax's objective thresholds (else Ax infers them).

    Returns:
        The name mapping, to translate Ax parameterizations and outcomes.
    """
    space = getattr(problem, "space", None)
    parameter_names = space.parameter_names if space is not None else [f"x{i}" for i in range(problem.dim)]
    names = AxNames(ax_safe_names(parameter_names), ax_safe_names(problem.objective_names))
    _configure(client, problem, names, name, problem.ref_point if thresholds else None, {})
    return names


def export_to_ax(problem: Problem, result: ParetoResult, path: str | Path, name: str = "bambo") -> Path:
    """Write a bambo run as an ``ax.Client`` JSON snapshot and :func:`check_ax_export` it.

    Each evaluation becomes a trial, completed with its objectives (own directions) as
    data or failed with its error text; the reference point gives the objective thresholds.

    Args:
        problem: The problem the run searched (bounds, objectives).
        result: The run.
        path: JSON file to write.
        name: Experiment name.

    Returns:
        The path written.

    Raises:
        ConfigError: The result does not fit the problem.
    """
    if result.X.shape[1] != problem.dim or list(result.objective_names) != problem.objective_names:
        raise ConfigError(
            f"result has {result.X.shape[1]} variables and objectives {result.objective_names}, "
            f"the problem {problem.dim} and {problem.objective_names}"
        )
    names = AxNames(ax_safe_names(result.parameter_names), ax_safe_names(result.objective_names))
    ref = result.ref_point if result.ref_point is not None else problem.ref_point
    client = Client()
    extra = {"strategy": result.strategy, "ref_point": None if ref is None else ref.tolist()}
    _configure(client, problem, names, name, ref, extra)
    for i in range(result.n_evaluations):
        index = client.attach_trial(names.parameterization(result.X[i]), arm_name=f"bambo_{i}")
        if result.ok[i]:
            client.complete_trial(index, raw_data=names.outcome(result.Y[i]))
        else:
            client.mark_trial_failed(index, failed_reason=result.errors.get(i, _FAILED))
    path = Path(path)
    with atomic_path(path) as tmp:  # checked before it replaces a previous export
        client.save_to_json_file(str(tmp))
        check_ax_export(tmp, result)
    return path


def load_ax_export(path: str | Path) -> tuple[Experiment, AxNames]:
    """The decoded experiment of a snapshot from :func:`export_to_ax`, and its name mapping.

    (To continue the search in Ax, use ``Client.load_from_json_file(path)``.)

    Raises:
        ConfigError: The experiment carries no bambo name mapping.
    """
    register_with_ax()
    snapshot = json.loads(Path(path).read_text())["experiment"]
    mapping = (snapshot.get("properties") or {}).get(PROPERTY_KEY)
    if not mapping:
        raise ConfigError(f"{path} has no bambo name mapping in its experiment properties")
    registries = {"decoder_registry": CORE_DECODER_REGISTRY, "class_decoder_registry": CORE_CLASS_DECODER_REGISTRY}
    experiment = object_from_json(snapshot, **registries)
    return experiment, AxNames(dict(mapping["parameters"]), dict(mapping["objectives"]))


def check_ax_export(path: str | Path, result: ParetoResult) -> None:
    """Check that a snapshot holds ``result``: one trial per evaluation, in order, with the
    same parameters; completed trials with the same objectives (to Ax's 10 stored digits),
    failed ones with their error text.

    Raises:
        ConfigError: A difference; the message names the trial and the value.
    """
    experiment, names = load_ax_export(path)
    trials = [experiment.trials[i] for i in sorted(experiment.trials)]
    n_done, n_ok = sum(t.status == TrialStatus.COMPLETED for t in trials), int(result.ok.sum())
    if len(trials) != result.n_evaluations or n_done != n_ok:
        raise ConfigError(f"{path}: {len(trials)} trials, {n_done} completed; expected {result.n_evaluations}, {n_ok}")
    values = {(int(r.trial_index), r.metric_name): float(r.mean) for r in experiment.lookup_data().df.itertuples()}
    for row, trial in enumerate(trials):
        x = names.vector(trial.arm.parameters)
        if not torch.equal(x, result.X[row]):
            raise ConfigError(f"{path}: trial {row} has parameters {x.tolist()}, expected {result.X[row].tolist()}")
        if not result.ok[row]:
            want = result.errors.get(row, _FAILED)
            if trial.status != TrialStatus.FAILED or trial.status_reason != want:
                raise ConfigError(f"{path}: trial {row} is {trial.status.name} ({trial.status_reason!r}), not failed")
            continue
        for j, metric in enumerate(names.objectives.values()):
            got, want_y = values.get((trial.index, metric)), float(result.Y[row, j])
            if got is None or not math.isclose(got, want_y, rel_tol=_DATA_RTOL, abs_tol=1e-12):
                raise ConfigError(f"{path}: trial {row} metric {metric!r} is {got}, expected {want_y}")
