"""bambo: the Pareto set of merged neural networks from few expensive evaluations."""

__version__ = "0.1.0"
