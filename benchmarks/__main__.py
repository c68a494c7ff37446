"""Benchmark suite command: ``python -m benchmarks run --suite quick|full``.

Runs :mod:`benchmarks.suite` and writes ``benchmarks/results/<suite>.md`` (medians and
interquartile ranges over seeds, machine and versions in the header, the ratio lines
of the acceptance criteria) with ``<suite>_hv.png`` (hypervolume fraction against
evaluations, median and IQR band, one panel per problem) and ``<suite>_overhead.png``
(optimizer seconds per batch). ``full`` also runs :mod:`benchmarks.merge_throughput`;
``quick`` cites its last report.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, machine_header
from benchmarks.contenders import BAMBO_FAMILY, CONTENDERS
from benchmarks.suite import PROBLEMS, SUITES, ProblemResult, Stats, SuiteConfig, run_problem

AX = "Ax (default MOO)"
PACKAGES = ("torch", "botorch", "bambo", "ax-platform", "optuna", "pymoo", "cma")


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile (inf values count as larger than any number)."""
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [50, 25, 75], method="lower" if np.isinf(a).any() else "linear")
    return float(q[0]), float(q[1]), float(q[2])


def fmt_iqr(values: Sequence[float], digits: int = 3, pct: bool = False) -> str:
    """``median [q25, q75]``."""
    scale, unit = (100.0, "%") if pct else (1.0, "")
    m, lo, hi = (v * scale for v in quartiles(values))
    d = 1 if pct else digits
    return f"{m:.{d}f}{unit} [{lo:.{d}f}, {hi:.{d}f}]"


def fmt_seconds(values: Sequence[float]) -> str:
    """``median [q25, q75]`` of seconds, three significant digits."""
    m, lo, hi = quartiles(values)
    return f"{m:.3g} [{lo:.3g}, {hi:.3g}]"


def fmt_reach(values: Sequence[float]) -> str:
    """Median evaluations to a level (non-reaching seeds count as infinite) and how many reached."""
    reached = sum(math.isfinite(v) for v in values)
    m = quartiles(values)[0]
    median = f"{m:.0f}" if math.isfinite(m) else "not reached"
    return f"{median} ({reached}/{len(values)})"


def median_reach(stats: Stats) -> float:
    return quartiles(stats.reach95)[0]


def bambo_best(result: ProblemResult) -> str | None:
    """bambo's best strategy here: fewest median evaluations to 95%, then highest median final HV."""
    ours = [label for label in result.stats if label in BAMBO_FAMILY]
    if not ours:
        return None
    return min(ours, key=lambda s: (median_reach(result.stats[s]), -quartiles(result.stats[s].final)[0]))


def ratio_text(ours: float, theirs: float, budget: int) -> str:
    """bambo's evaluations to 95% over a contender's, censored at the budget."""
    if math.isfinite(ours) and math.isfinite(theirs):
        return f"{ours / theirs:.2f}"
    if math.isfinite(ours):
        return f"< {ours / budget:.2f} (it does not reach 95% within {budget})"
    if math.isfinite(theirs):
        return f"> {budget / theirs:.2f} (bambo does not reach 95% within {budget}; it does)"
    return "n/a (neither reaches 95% in the median seed)"


def problem_section(result: ProblemResult, config: SuiteConfig) -> list[str]:
    """The markdown of one problem: table, ratios, overhead against Ax, where bambo loses."""
    lines = [
        f"## {result.label}",
        "",
        f"d = {result.problem.dim}, {result.problem.num_objectives} objectives; {result.reference.description}. "
        f"This problem took {result.seconds:.0f} s.",
        "",
        "| contender | final HV fraction | evals to 90% (seeds reached) | evals to 95% (seeds reached) "
        "| IGD (scaled) | optimizer s/batch |",
        "|---|---|---|---|---|---|",
    ]
    for label, s in result.stats.items():
        short = f" (stops at {min(s.evaluations)})" if min(s.evaluations) < config.budget else ""
        lines.append(
            f"| {label}{short} | {fmt_iqr(s.final, pct=True)} | {fmt_reach(s.reach90)} | {fmt_reach(s.reach95)} "
            f"| {fmt_iqr(s.igd, 4)} | {fmt_seconds(s.batch_s)} |"
        )
    skipped = [label for label in config.contenders if label not in result.stats]
    if skipped:
        lines += ["", f"Not run on this problem (does not apply): {', '.join(skipped)}."]
    best = bambo_best(result)
    lines.append("")
    if best is None:
        return lines + ["No bambo strategy in this run, so no ratios.", ""]
    ours = result.stats[best]
    ours95, ours_final = median_reach(ours), quartiles(ours.final)[0]
    others = [label for label in result.stats if label not in BAMBO_FAMILY]
    ratios = ", ".join(
        f"{label} {ratio_text(ours95, median_reach(result.stats[label]), config.budget)}" for label in others
    )
    lines.append(
        f"**Evaluations-to-95%-HV ratio** (bambo's best strategy here, {best}, divided by each contender; "
        f"lower is better): {ratios or 'no other contender'}."
    )
    ours_s = quartiles(ours.batch_s)[0]
    if AX in result.stats:
        ax_s = quartiles(result.stats[AX].batch_s)[0]
        lines.append(
            f"**Optimizer-overhead ratio against Ax's Client**: {best} {ours_s:.3g} s per batch / Ax "
            f"{ax_s:.3g} s per batch = {ours_s / ax_s:.3g} (lower is better)."
        )
    else:
        lines.append(
            f"**Optimizer-overhead ratio against Ax's Client**: Ax was not in this run "
            f"({best}: {ours_s:.3g} s per batch)."
        )
    faster = [label for label in others if median_reach(result.stats[label]) < ours95]
    higher = [label for label in others if quartiles(result.stats[label].final)[0] > ours_final + 1e-9]
    losses = []
    if faster:
        losses.append(f"reach 95% in fewer evaluations: {', '.join(faster)}")
    if higher:
        losses.append(f"end with a higher median HV fraction than its {100 * ours_final:.1f}%: {', '.join(higher)}")
    if AX in result.stats and ours_s > quartiles(result.stats[AX].batch_s)[0]:
        losses.append("Ax's Client spends less optimizer time per batch")
    if losses:
        lines.append(f"**Where bambo loses** ({best} against the others): " + "; ".join(losses) + ".")
    else:
        lines.append(f"bambo ({best}) is not beaten here on evaluations to 95%, final HV or overhead against Ax.")
    return lines + [""]


def summary_table(results: list[ProblemResult]) -> list[str]:
    lines = [
        "| problem | bambo's best | its final HV | its evals to 95% | best contender by final HV | its final HV "
        "| bambo best / Ax s per batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        best = bambo_best(r)
        top = max(r.stats, key=lambda s: quartiles(r.stats[s].final)[0])
        if best is None:
            lines.append(f"| {r.label} | - | - | - | {top} | {100 * quartiles(r.stats[top].final)[0]:.1f}% | - |")
            continue
        ours = r.stats[best]
        overhead = "-"
        if AX in r.stats:
            overhead = f"{quartiles(ours.batch_s)[0] / quartiles(r.stats[AX].batch_s)[0]:.3g}"
        lines.append(
            f"| {r.label} | {best} | {100 * quartiles(ours.final)[0]:.1f}% | {fmt_reach(ours.reach95)} | {top} "
            f"| {100 * quartiles(r.stats[top].final)[0]:.1f}% | {overhead} |"
        )
    return lines + [""]


def plot(results: list[ProblemResult], out: Path, name: str) -> list[str]:
    """Write the HV-fraction and overhead figures; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for r in results for label in r.stats))
    colors = {label: plt.cm.tab20(i % 20) for i, label in enumerate(labels)}
    n = len(results)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):
        for label, s in r.stats.items():
            h = np.asarray(s.histories)
            x = np.arange(1, h.shape[1] + 1)
            q25, q50, q75 = np.percentile(h, [25, 50, 75], axis=0)
            ax.plot(x, q50, color=colors[label], label=label, lw=1.6 if label in BAMBO_FAMILY else 1.0)
            ax.fill_between(x, q25, q75, color=colors[label], alpha=0.15)
        ax.axhline(0.95, color="k", lw=0.6, ls=":")
        ax.set(title=r.label, xlabel="evaluations", ylabel="HV / reference HV", ylim=(0, 1.02))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    hv_name = f"{name}_hv.png"
    fig.savefig(out / hv_name, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(labels)), 4))
    width = 0.8 / max(1, n)
    for i, r in enumerate(results):
        values = [quartiles(r.stats[label].batch_s)[0] if label in r.stats else np.nan for label in labels]
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=r.label)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right", fontsize=8)
    ax.set(yscale="log", ylabel="optimizer seconds per batch (median)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    overhead_name = f"{name}_overhead.png"
    fig.savefig(out / overhead_name, dpi=110)
    plt.close(fig)
    return [hv_name, overhead_name]


def throughput_section(config: SuiteConfig) -> list[str]:
    """Merge throughput: run it (full) or cite the last report (quick); mergekit if importable."""
    lines = ["## Merge throughput", ""]
    report = RESULTS / "merge_throughput.md"
    if config.merge_throughput:
        subprocess.run([sys.executable, "-m", "benchmarks.merge_throughput"], check=True)
        lines.append("Measured in this run by `python -m benchmarks.merge_throughput` (~1e8 parameters):")
    else:
        lines.append(
            f"Not measured in the `{config.name}` suite; the last `python -m benchmarks.merge_throughput` report "
            "([merge_throughput.md](merge_throughput.md), its own date and machine) says, for task arithmetic:"
        )
    if report.exists():
        rows = [row for row in report.read_text().splitlines() if row.startswith("|")]
        keep = [row for row in rows if "ceiling" in row or "task_arithmetic" in row]
        lines += ["", *rows[:2], *keep, ""]
    compare = RESULTS / "merge_vs_mergekit.md"
    if config.merge_throughput and importlib.util.find_spec("mergekit") is not None:
        subprocess.run([sys.executable, "-m", "benchmarks.mergekit_compare"], check=True)
    if compare.exists():
        lines.append(
            "Beside mergekit's merge of the same configuration (`python -m benchmarks.mergekit_compare`, "
            "[merge_vs_mergekit.md](merge_vs_mergekit.md), its own date and machine):"
        )
        lines += ["", *[row for row in compare.read_text().splitlines() if row.startswith("|")], ""]
    else:
        lines.append(
            "No mergekit comparison yet: `pip install mergekit -c constraints.txt`, then "
            "`python -m benchmarks.mergekit_compare`."
        )
    return lines + [""]


def write_report(config: SuiteConfig, out: Path, command: str, log=print) -> Path:  # noqa: ANN001
    """Run the suite and write ``<out>/<name>.md`` and its figures; returns the markdown path."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for label in config.problems:
        log(f"{label}:")
        results.append(run_problem(PROBLEMS[label], config, log))
    figures = plot(results, out, config.name)
    throughput = throughput_section(config)
    wall = time.perf_counter() - start
    lines = [
        f"# Benchmark suite `{config.name}`: bambo against the tools users would pick instead",
        "",
        machine_header(PACKAGES),
        f"- command: `{command}`; wall time of this run {wall:.0f} s",
        f"- every contender: {config.budget} evaluations in batches of {config.batch_size}, seeds 0..{config.seeds - 1}"
        "; HV fraction = hypervolume of the evaluated points / the reference hypervolume; optimizer time = "
        "ask + tell per batch, evaluations excluded; IGD on objectives scaled to [ref point, ideal of the "
        "reference front]; medians with [25th, 75th percentile]; evaluations to a level count seeds that "
        "never reach it as infinite.",
        "- bambo's strategies: "
        + ", ".join(s for s in config.contenders if s in BAMBO_FAMILY)
        + "; bambo's best strategy per problem is the one with the fewest median evaluations to 95%.",
        "",
        "Contenders:",
        "",
        *[f"- {label}: {CONTENDERS[label].note}" for label in config.contenders],
        "",
        "## Summary",
        "",
        *summary_table(results),
        *[f"![{f}]({f})" for f in figures],
        "",
    ]
    for r in results:
        lines += problem_section(r, config)
    lines += throughput
    path = out / f"{config.name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks run --suite quick|full``; options override the suite's settings."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite and write benchmarks/results/<suite>.md")
    run.add_argument("--suite", choices=sorted(SUITES), default="quick")
    run.add_argument("--problem", action="append", help="a problem label, repeatable (default: the suite's)")
    run.add_argument("--contender", action="append", help="a contender label, repeatable (default: the suite's)")
    run.add_argument("--budget", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--seeds", type=int)
    run.add_argument("--reference-evaluations", type=int)
    run.add_argument("--name", help="report name (default: the suite's)")
    run.add_argument("--out", type=Path, default=RESULTS)
    run.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP spinning against other work)")
    run.add_argument(
        "--no-merge-throughput", action="store_true", help="do not run the merge throughput benchmark (cite its report)"
    )
    args = parser.parse_args(argv)
    config = SUITES[args.suite]
    overrides = {
        "problems": args.problem,
        "contenders": args.contender,
        "budget": args.budget,
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "reference_evaluations": args.reference_evaluations,
        "name": args.name,
        "merge_throughput": False if args.no_merge_throughput else None,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    unknown = [p for p in config.problems if p not in PROBLEMS] + [c for c in config.contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown problems or contenders: {unknown}; known: {list(PROBLEMS)} and {list(CONTENDERS)}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    command = "python -m benchmarks " + " ".join(
        a if a.replace("-", "").isalnum() else f'"{a}"' for a in (sys.argv[1:] if argv is None else argv)
    )
    path = write_report(config, args.out, command)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
