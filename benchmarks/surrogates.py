"""Surrogate benchmark runner: ``python -m benchmarks.surrogates --suite quick|full``.

Also available as ``bambo bench surrogates``. Writes ``benchmarks/results/surrogates[_quick].md``
and ``surrogates[_quick].png`` (R^2 against training size). The problems, metrics and
surrogates are described in :mod:`bambo.benchmarks.surrogate_bench`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from bambo.benchmarks import surrogate_bench as sb
from benchmarks.common import RESULTS, machine_header

MAP_R2_TWO_TASKS = 0.953  # MAP Table 2: R^2 of the quadratic for 2 tasks (ViT-B/32)


def write_report(suite: str, out_dir: Path, threads: int = 2, echo: bool = True) -> Path:
    """Run a suite and write its markdown report and plot; returns the report path."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    config = sb.SUITES[suite]
    start = time.perf_counter()
    results = sb.run(
        sb.suite_problems(suite),
        sizes=config["sizes"],  # type: ignore[arg-type]
        seeds=config["seeds"],  # type: ignore[arg-type]
        n_test=config["n_test"],  # type: ignore[arg-type]
        progress=print if echo else None,
    )
    elapsed = time.perf_counter() - start
    suffix = "" if suite == "full" else f"_{suite}"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"surrogates{suffix}.png"
    sb.plot_r2(results, str(plot))
    headline = results.get(("digits-2 model", 30, "quadratic"))
    head = (
        f"Digits landscape, 2 experts, model level, 30 training points: quadratic R^2 = "
        f"{statistics.median(headline.r2):.3f} (median over {len(headline.r2)} seeds) vs MAP's reported "
        f"{MAP_R2_TWO_TASKS} (ViT-B/32, 2 tasks)."
        if headline and headline.r2
        else "Digits landscape with 2 experts at 30 points was not in this suite."
    )
    text = "\n".join(
        [
            f"# Surrogate benchmark ({suite})",
            "",
            machine_header(("torch", "botorch", "gpytorch", "bambo")),
            f"- command: `python -m benchmarks.surrogates --suite {suite}` ({elapsed:.0f} s)",
            f"- training sizes {list(config['sizes'])}, seeds {list(config['seeds'])}, "  # type: ignore[call-overload]
            f"{config['n_test']} held-out Sobol points; medians [interquartile range] over seeds",
            "",
            f"**{head}**",
            "",
            f"![R^2 against training size]({plot.name})",
            "",
            sb.markdown_table(results),
            "",
        ]
    )
    report = out_dir / f"surrogates{suffix}.md"
    report.write_text(text)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Surrogate benchmark")
    parser.add_argument("--suite", choices=sorted(sb.SUITES), default="quick")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report = write_report(args.suite, args.out, args.threads)
    print(report.read_text())


if __name__ == "__main__":
    main()
