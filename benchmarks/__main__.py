"""Benchmark suite command: ``python -m benchmarks run --suite quick|standard|outside|full``.

Runs :mod:`benchmarks.suite` and writes ``benchmarks/results/<suite>.md`` (medians and
interquartile ranges over seeds, command, date, machine and versions in the header, the
ratio lines of the acceptance criteria for the default BAMBO, fixed before the run, and
"best of" rows picked after the fact by one rule for every tool with several
configurations) with ``<suite>_hv.png`` (hypervolume fraction against evaluations,
median and IQR band, one panel per problem) and ``<suite>_overhead.png``
(optimizer wall seconds per batch). ``full`` also runs :mod:`benchmarks.merge_throughput`;
``quick`` cites its last report with that report's date and machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import multiprocessing
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, Clock, machine_header
from benchmarks.contenders import BAMBO_FAMILY, CONTENDERS, DEFAULT_BAMBO
from benchmarks.suite import PROBLEMS, SUITES, ProblemResult, Stats, SuiteConfig, init_worker, run_problem

AX = "Ax (default MOO)"
DEFAULT = DEFAULT_BAMBO
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
    """Median evaluations to 95% (inf when the median seed does not reach it)."""
    return quartiles(stats.reach95)[0]


def median_final(stats: Stats) -> float:
    """Median final HV fraction."""
    return quartiles(stats.final)[0]


def best_of(result: ProblemResult, labels: Sequence[str]) -> str | None:
    """The "best of" rule, the same for every tool and applied after the run: among ``labels``
    that ran, the fewest median evaluations to 95%, then the highest median final HV fraction."""
    ran = [label for label in labels if label in result.stats]
    if not ran:
        return None
    return min(ran, key=lambda s: (median_reach(result.stats[s]), -median_final(result.stats[s])))


def tool_configurations(result: ProblemResult) -> dict[str, list[str]]:
    """Each tool with more than one configuration in this run, and those configurations in report order."""
    tools: dict[str, list[str]] = {}
    for label in result.stats:
        tools.setdefault(CONTENDERS[label].tool or label, []).append(label)
    return {tool: labels for tool, labels in tools.items() if len(labels) > 1}


def ratio_text(ours: float, theirs: float, budget: int, level: int = 95) -> str:
    """The default BAMBO's evaluations to ``level``% over a contender's, censored at the budget."""
    if math.isfinite(ours) and math.isfinite(theirs):
        return f"{ours / theirs:.2f}"
    if math.isfinite(ours):
        return f"< {ours / budget:.2f} (it does not reach {level}% within {budget})"
    if math.isfinite(theirs):
        return f"> {budget / theirs:.2f} ({DEFAULT} does not reach {level}% within {budget}; it does)"
    return f"n/a (neither reaches {level}% in the median seed)"


EARLY = 24  # evaluations at which the report also gives the HV fraction (the quick budget), when the budget is larger


def hv_at(s: Stats, n: int) -> list[float]:
    """Each seed's HV fraction after ``n`` evaluations."""
    return [h[min(n, len(h)) - 1] for h in s.histories]


def stats_cells(s: Stats, budget: int | None = None) -> str:
    """The measured cells of a table row (HV fraction to optimizer CPU seconds); with a ``budget``
    over :data:`EARLY`, the HV fraction after ``EARLY`` evaluations first."""
    early = f"{fmt_iqr(hv_at(s, EARLY), pct=True)} | " if budget is not None and budget > EARLY else ""
    return (
        f"{early}{fmt_iqr(s.final, pct=True)} | {fmt_reach(s.reach90)} | {fmt_reach(s.reach95)} "
        f"| {fmt_iqr(s.igd, 4)} | {fmt_seconds(s.batch_s)} | {fmt_seconds(s.batch_cpu_s)} |"
    )


def problem_section(result: ProblemResult, config: SuiteConfig) -> list[str]:
    """The markdown of one problem: table, best-of rows, ratios of the default BAMBO, where it loses."""
    early = config.budget > EARLY
    lines = [
        f"## {result.label}",
        "",
        f"d = {result.problem.dim}, {result.problem.num_objectives} objectives; {result.reference.description}. "
        f"This problem took wall {result.seconds:.0f} s, CPU {result.cpu_seconds:.0f} s.",
        "",
        "| contender | "
        + (f"HV fraction at {EARLY} evals | " if early else "")
        + f"final HV fraction ({config.budget} evals) | evals to 90% (seeds reached) | evals to 95% (seeds reached) "
        "| IGD (scaled) | optimizer wall s/batch | optimizer CPU s/batch |",
        "|---|---|---|---|---|---|---|" + ("---|" if early else ""),
    ]
    for label, s in result.stats.items():
        short = f" (stops at {min(s.evaluations)})" if min(s.evaluations) < config.budget else ""
        lines.append(f"| {label}{short} | {stats_cells(s, config.budget)}")
    for tool, labels in tool_configurations(result).items():
        chosen = best_of(result, labels)
        lines.append(
            f"| *{tool} best of {len(labels)}, after the fact: {chosen}* "
            f"| {stats_cells(result.stats[chosen], config.budget)}"
        )
    skipped = [label for label in config.contenders if label not in result.stats]
    if skipped:
        lines += ["", f"Not run on this problem (does not apply): {', '.join(skipped)}."]
    lines.append("")
    if DEFAULT not in result.stats:
        return lines + [f"The default BAMBO ({DEFAULT}) was not in this run, so no ratios.", ""]
    ours = result.stats[DEFAULT]
    ours95, ours_final = median_reach(ours), median_final(ours)
    others = [label for label in result.stats if label not in BAMBO_FAMILY]
    ratios = ", ".join(
        f"{label} {ratio_text(ours95, median_reach(result.stats[label]), config.budget)}" for label in others
    )
    ours90 = quartiles(ours.reach90)[0]
    ratios90 = ", ".join(
        f"{label} {ratio_text(ours90, quartiles(result.stats[label].reach90)[0], config.budget, 90)}"
        for label in others
    )
    lines.append(
        f"**Evaluations-to-95%-HV ratio** ({DEFAULT}, bambo's default fixed before the run, divided by each "
        f"other tool's configuration; lower is better): {ratios or 'no other contender'}."
    )
    lines.append(f"**Evaluations-to-90%-HV ratio** (the same, to 90%): {ratios90 or 'no other contender'}.")
    ours_s, ours_cpu = quartiles(ours.batch_s)[0], quartiles(ours.batch_cpu_s)[0]
    if AX in result.stats:
        ax_s, ax_cpu = quartiles(result.stats[AX].batch_s)[0], quartiles(result.stats[AX].batch_cpu_s)[0]
        lines.append(
            f"**Optimizer-overhead ratio against Ax's Client** ({AX}): wall {ours_s:.3g} s per batch / "
            f"{ax_s:.3g} s = {ours_s / ax_s:.3g}; CPU {ours_cpu:.3g} s / {ax_cpu:.3g} s = {ours_cpu / ax_cpu:.3g} "
            "(lower is better)."
        )
    else:
        lines.append(
            f"**Optimizer-overhead ratio against Ax's Client**: Ax was not in this run "
            f"({DEFAULT}: wall {ours_s:.3g} s, CPU {ours_cpu:.3g} s per batch)."
        )
    faster = [label for label in others if median_reach(result.stats[label]) < ours95]
    higher = [label for label in others if median_final(result.stats[label]) > ours_final + 1e-9]
    losses = []
    if faster:
        losses.append(f"reach 95% in fewer evaluations: {', '.join(faster)}")
    if higher:
        losses.append(f"end with a higher median HV fraction than its {100 * ours_final:.1f}%: {', '.join(higher)}")
    if AX in result.stats and ours_s > quartiles(result.stats[AX].batch_s)[0]:
        losses.append("Ax's Client spends less optimizer wall time per batch")
    if losses:
        lines.append(f"**Where bambo loses** ({DEFAULT} against the other tools): " + "; ".join(losses) + ".")
    else:
        lines.append(f"{DEFAULT} is not beaten here on evaluations to 95%, final HV or overhead against Ax.")
    return lines + [""]


def summary_table(results: list[ProblemResult], budget: int) -> list[str]:
    """The headline table (the default BAMBO against Ax's default) and the best-of table beside it."""
    early = budget > EARLY
    at = f"HV at {EARLY} / final HV" if early else "final HV"
    lines = [
        f"| problem | {DEFAULT} {at} | its evals to 95% | {AX} {at} | its evals to 95% "
        "| evals-to-95% ratio | optimizer wall s/batch ratio | optimizer CPU s/batch ratio "
        "| best configuration by final HV | its final HV |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        top = max(r.stats, key=lambda s: median_final(r.stats[s]))
        cells = []
        for label in (DEFAULT, AX):
            s = r.stats.get(label)
            if s is None:
                cells += ["-", "-"]
                continue
            hv = f"{100 * median_final(s):.1f}%"
            if early:
                hv = f"{100 * quartiles(hv_at(s, EARLY))[0]:.1f}% / {hv}"
            cells += [hv, fmt_reach(s.reach95)]
        if DEFAULT in r.stats and AX in r.stats:
            ours, ax = r.stats[DEFAULT], r.stats[AX]
            cells += [
                ratio_text(median_reach(ours), median_reach(ax), budget),
                f"{quartiles(ours.batch_s)[0] / quartiles(ax.batch_s)[0]:.3g}",
                f"{quartiles(ours.batch_cpu_s)[0] / quartiles(ax.batch_cpu_s)[0]:.3g}",
            ]
        else:
            cells += ["-", "-", "-"]
        cells += [top, f"{100 * median_final(r.stats[top]):.1f}%"]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    tools = list(dict.fromkeys(tool for r in results for tool in tool_configurations(r)))
    if not tools:
        return lines + [""]
    lines += [
        "",
        "Best of each tool's configurations, picked **after the fact** per problem by one rule for every "
        "tool (fewest median evaluations to 95%, then highest median final HV fraction); every configuration "
        "is also reported on its own below, and no ratio uses these picks:",
        "",
        "| problem | " + " | ".join(f"{tool} best of" for tool in tools) + " |",
        "|---|" + "---|" * len(tools),
    ]
    for r in results:
        configurations = tool_configurations(r)
        cells = []
        for tool in tools:
            chosen = best_of(r, configurations.get(tool, []))
            if chosen is None:
                cells.append("-")
                continue
            s = r.stats[chosen]
            n = len(configurations[tool])
            cells.append(f"{chosen} of {n}: {100 * median_final(s):.1f}%, evals to 95% {fmt_reach(s.reach95)}")
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
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


def report_stamp(path: Path) -> str:
    """The date and machine lines of a report, to cite it by (``"date ..., machine ..."``)."""
    header = {}
    for row in path.read_text().splitlines():
        for key in ("date", "machine"):
            if row.startswith(f"- {key}: "):
                header[key] = row.removeprefix(f"- {key}: ")
    return ", ".join(f"{key} {header[key]}" for key in ("date", "machine") if key in header) or "undated"


def throughput_section(config: SuiteConfig) -> list[str]:
    """Merge throughput: run it (full) or cite the last report (quick); mergekit if importable."""
    lines = ["## Merge throughput", ""]
    report = RESULTS / "merge_throughput.md"
    if config.merge_throughput:
        subprocess.run([sys.executable, "-m", "benchmarks.merge_throughput"], check=True)
        lines.append("Measured in this run by `python -m benchmarks.merge_throughput` (~1e8 parameters):")
    elif report.exists():
        lines.append(
            f"Not measured in the `{config.name}` suite. Cited from the last `python -m benchmarks.merge_throughput` "
            f"report, [merge_throughput.md](merge_throughput.md) ({report_stamp(report)}), for task arithmetic:"
        )
    if report.exists():
        rows = [row for row in report.read_text().splitlines() if row.startswith("|")]
        keep = [row for row in rows if "ceiling" in row or "task_arithmetic" in row]
        lines += ["", *rows[:2], *keep, ""]
    else:
        lines += [f"Not measured in the `{config.name}` suite, and no report to cite.", ""]
    compare = RESULTS / "merge_vs_mergekit.md"
    measured = config.merge_throughput and importlib.util.find_spec("mergekit") is not None
    if measured:
        subprocess.run([sys.executable, "-m", "benchmarks.mergekit_compare"], check=True)
    if compare.exists():
        how = "measured in this run" if measured else f"cited from its last report, {report_stamp(compare)}"
        lines.append(
            "Beside mergekit's merge of the same configuration (`python -m benchmarks.mergekit_compare`, "
            f"[merge_vs_mergekit.md](merge_vs_mergekit.md), {how}):"
        )
        lines += ["", *[row for row in compare.read_text().splitlines() if row.startswith("|")], ""]
    else:
        lines.append(
            "No mergekit comparison yet: `pip install mergekit -c constraints.txt`, then "
            "`python -m benchmarks.mergekit_compare`."
        )
    return lines + [""]


def run_all(
    config: SuiteConfig, jobs: int, threads: int, log: Callable[[str], None] = print
) -> Iterator[ProblemResult]:
    """Every problem of the suite, each result as soon as its runs end; runs on ``jobs`` worker processes (1: here)."""
    if jobs <= 1:
        for label in config.problems:
            log(f"{label}:")
            yield run_problem(PROBLEMS[label], config, log)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP threads already ran
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=init_worker, initargs=(threads,)) as pool:
        for label in config.problems:
            log(f"{label}:")
            yield run_problem(PROBLEMS[label], config, log, pool)


def write_report(
    config: SuiteConfig,
    out: Path,
    command: str,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    threads: int = 1,
) -> Path:
    """Run the suite and write ``<out>/<name>.md`` and its figures; returns the markdown path.

    Args:
        config: The suite.
        out: Folder of the report.
        command: The command line, for the report.
        log: Progress messages.
        jobs: Worker processes that run the contenders' seeds side by side (1: none).
        threads: Torch threads of each worker.
    """
    clock = Clock()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{config.name}.md"
    results: list[ProblemResult] = []
    for result in run_all(config, jobs, threads, log):
        results.append(result)
        if len(results) < len(config.problems):  # a long run's finished problems survive a later failure
            path.write_text(_render(config, results, command, clock, jobs, [], []))
    figures = plot(results, out, config.name)
    throughput = throughput_section(config)
    path.write_text(_render(config, results, command, clock, jobs, figures, throughput))
    return path


def _render(
    config: SuiteConfig,
    results: list[ProblemResult],
    command: str,
    clock: Clock,
    jobs: int,
    figures: list[str],
    throughput: list[str],
) -> str:
    """The report's markdown; while problems remain (fewer results than problems) it says it is partial."""
    elapsed = clock.elapsed()
    if jobs > 1:
        cpu = elapsed.cpu + sum(r.cpu_seconds for r in results) - sum(r.own_cpu_seconds for r in results)
        run_text = (
            f"wall {elapsed.wall:.0f} s, CPU {cpu:.0f} s (this process and its {jobs} worker processes' runs, "
            f"all threads); runs on {jobs} worker processes side by side"
        )
    else:
        run_text = f"{elapsed.text()} (this process, all threads)"
    partial = []
    if len(results) < len(config.problems):
        partial = [
            f"- **partial report**: {len(results)} of {len(config.problems)} problems done so far; the run goes "
            "on (this file is rewritten after every problem, and whole at the end)",
        ]
    lines = [
        f"# Benchmark suite `{config.name}`: bambo against the tools users would pick instead",
        "",
        machine_header(PACKAGES),
        f"- command: `{command}`; this run: {run_text}",
        *partial,
        f"- every contender: {config.budget} evaluations in batches of {config.batch_size}, seeds 0..{config.seeds - 1}"
        "; HV fraction = hypervolume of the evaluated points / the reference hypervolume; optimizer time = "
        "ask + tell per batch, evaluations excluded, in wall and in CPU seconds; IGD on objectives scaled to "
        "[ref point, ideal of the reference front]; medians with [25th, 75th percentile]; evaluations to a "
        "level count seeds that never reach it as infinite. Every figure in this report was measured in this "
        "run, except the merge-throughput section, which says where its figures come from.",
        "- scoring: one HV reference point per problem scores every contender (stated per problem: BoTorch's for "
        "the synthetic problems; for merge problems one fixed from a dense grid and a long NSGA-II run before "
        "any contender ran). While the contenders run it is the problem's reference point, so every contender "
        "that takes a reference point or objective thresholds is told that same point (listed below).",
        f"- headline ratios: {DEFAULT}, bambo's default, fixed before the run, against each other tool's "
        "configurations. bambo's strategies in this run: "
        + ", ".join(s for s in config.contenders if s in BAMBO_FAMILY)
        + ". Rows in italics pick the best of a tool's configurations after the fact, by the same rule for "
        "every tool with several (fewest median evaluations to 95%, then highest median final HV).",
        "",
        "Contenders (what each was told about the reference point in brackets):",
        "",
        *[f"- {label}: {CONTENDERS[label].note} [told: {CONTENDERS[label].reference}]" for label in config.contenders],
        "",
        "## Summary",
        "",
        *summary_table(results, config.budget),
        *[f"![{f}]({f})" for f in figures],
        "",
    ]
    for r in results:
        lines += problem_section(r, config)
    lines += throughput
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks run --suite quick|standard|outside|full``; options override the suite's settings."""
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
    run.add_argument("--output", type=Path, default=RESULTS)
    run.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP spinning against other work)")
    run.add_argument(
        "--jobs", type=int, default=1, help="worker processes running the contenders' seeds side by side (1: none)"
    )
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
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    path = write_report(config, args.output, command, jobs=args.jobs, threads=args.threads)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
