"""Plots of fronts beyond two objectives and of the hypervolume history."""

import pytest

from bambo.facade import optimize
from bambo.plotting import plot_front, plot_front_nd, plot_hypervolume
from bambo.problem import SyntheticProblem


@pytest.mark.parametrize("m", [3, 4])
def test_fronts_of_three_and_more_objectives(tmp_path, m):
    problem = SyntheticProblem("dtlz2", dim=6, num_objectives=m)
    result = optimize(problem, "sobol", budget=24, progress=False)
    for fn, name in ((plot_front_nd, "nd.png"), (plot_front, "pairs.png"), (plot_hypervolume, "hv.png")):
        path = fn(result, tmp_path / name)
        assert path.stat().st_size > 5_000
