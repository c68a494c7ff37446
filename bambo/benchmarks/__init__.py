"""Benchmark problems that ship with bambo (real data, built offline)."""

from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig

__all__ = ["DigitsBenchmark", "DigitsConfig"]
