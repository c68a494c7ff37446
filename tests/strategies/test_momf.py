"""The model-based multi-fidelity strategy (MOMF): fidelities proposed, journaled and told; its refusals."""

from __future__ import annotations

import pytest
import torch

from bambo.benchmarks.noisy import NoisyFidelityProblem
from bambo.errors import ConfigError
from bambo.experiment import Experiment
from bambo.fidelity import Halving
from bambo.problem import SyntheticProblem
from bambo.strategies import get_strategy

FAST = {"n_initial": 5, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}


def test_momf_proposes_its_fidelities_and_the_loop_journals_and_tells_them():
    problem = NoisyFidelityProblem(noise=0.03)
    strategy = get_strategy("momf", problem, seed=0, fidelities=[0.2], **FAST)
    experiment = Experiment(problem, strategy)
    result = experiment.run(6, 4)
    fidelities = [t.fidelity for t in experiment.trials]
    assert set(fidelities) <= {0.2, 1.0} and 0.2 in fidelities and 1.0 in fidelities
    assert experiment.cost == pytest.approx(sum(fidelities)) and experiment.cost >= 6
    assert strategy.X.shape == (len(experiment.trials), problem.dim + 1)  # told with the fidelity last
    assert strategy.X[:, -1].tolist() == fidelities
    assert result.n_evaluations == fidelities.count(1.0)  # the result holds full-fidelity evaluations only
    for trial in experiment.trials:  # each evaluation used its own fidelity
        expected = problem.evaluate_at(torch.tensor(trial.x, dtype=torch.float64), trial.fidelity)
        assert trial.objectives == pytest.approx(expected.tolist())


def test_momf_refuses_problems_without_fidelities_and_halving():
    with pytest.raises(ConfigError, match="evaluates in full only"):
        get_strategy("momf", SyntheticProblem("branin_currin"))
    problem = NoisyFidelityProblem()
    with pytest.raises(ConfigError, match="fidelity must be in"):
        get_strategy("momf", problem, fidelities=[0.0])
    with pytest.raises(ConfigError, match="chooses its own fidelities"):
        Experiment(problem, get_strategy("momf", problem), halving=Halving())
    strategy = get_strategy("momf", problem)
    with pytest.raises(ConfigError, match="fidelity last"):
        strategy.tell(torch.zeros(1, problem.dim), torch.zeros(1, 2))
