"""The MiniLM text merge benchmark (real sentiment data, built offline, cached)."""

from bambo.benchmarks.text.benchmark import TextBenchmark, TextConfig, describe
from bambo.benchmarks.text.data import DEFAULT_TASKS, TextTaskSpec

__all__ = ["DEFAULT_TASKS", "TextBenchmark", "TextConfig", "TextTaskSpec", "describe"]
