"""bambo's benchmark runners; results are written to benchmarks/results/."""
