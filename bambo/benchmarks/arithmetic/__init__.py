"""A tiny causal LM on multi-operand addition: thinking and direct experts (BAMBO's accuracy-vs-tokens setting)."""

from bambo.benchmarks.arithmetic.benchmark import ArithmeticBenchmark, ArithmeticConfig

__all__ = ["ArithmeticBenchmark", "ArithmeticConfig"]
