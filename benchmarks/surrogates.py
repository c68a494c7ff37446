"""Surrogate benchmark runner: ``python -m benchmarks.surrogates --suite quick|full``.

Also available as ``bambo bench surrogates``. Writes ``benchmarks/results/surrogates[_quick].md``
and ``surrogates[_quick].png`` (R^2 against training size). The problems, metrics and
surrogates are described in :mod:`bambo.benchmarks.surrogate_bench`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bambo.benchmarks import surrogate_bench as sb
from benchmarks.common import RESULTS


def main() -> None:
    parser = argparse.ArgumentParser(description="Surrogate benchmark")
    parser.add_argument("--suite", choices=sorted(sb.SUITES), default="quick")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report = sb.write_report(args.suite, args.output, args.threads)
    print(report.read_text())


if __name__ == "__main__":
    main()
