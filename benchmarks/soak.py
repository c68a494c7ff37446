"""Kill-and-resume soak: SIGKILL a real ``bambo run`` at random moments, try concurrent resumes, compare.

Run: ``python -m benchmarks.soak [--kills 24] [--budget 48] [--batch-size 4] [--strategy bambo] [--seed 0]``.
Prints the figures and writes ``benchmarks/results/soak.md``.

In a scratch folder it writes three small safetensors models (a base and two experts)
and an evaluator module that appends one JSON line per call (``start`` and ``end``,
with the trial id, x and its process id) to a log, then:

1. runs the config once, uninterrupted (the reference; it also builds BoTorch's
   fused kernel, so that no kill lands in that build);
2. runs it again in another folder as a subprocess and SIGKILLs it ``--kills`` times
   at random moments (seeded): mostly a uniform delay after the life's first
   evaluation starts (during evaluations, journal writes, the strategy's fits and
   proposals), sometimes a uniform delay after the process starts (imports, model
   loading, the journal's replay). Every other life, while it runs, a concurrent
   ``bambo resume`` of the same folder is started: it must exit 2 naming the
   running process and evaluate nothing. Each killed life is followed by
   ``bambo resume`` until one ends by itself;
3. compares: a trial completed in the journal after a kill that is missing or
   changed at the end is *lost*; an evaluator call for a trial already completed
   when its life began is *repeated* (the trial that was running at a kill is
   re-run: counted apart); the final journal is compared per trial id (x, status,
   objectives, metrics) with the reference's.

Wall and CPU seconds are those of the subprocesses (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from bambo.store import Journal, Trial
from benchmarks.common import RESULTS, machine_header

REPO = Path(__file__).resolve().parents[1]
FAST_BAMBO = {"n_initial": 4, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}
_POLL_S = 0.02

EVALUATOR = '''"""The soak's evaluator: deterministic scores of a merged toy model, each call logged."""

import json
import os
import time

import torch


def _log(path, event, trial_id, x):
    line = json.dumps({"event": event, "trial": trial_id, "x": x, "pid": os.getpid()}) + "\\n"
    with open(path, "a") as handle:  # one short append per event
        handle.write(line)


def score(state_dict, trial_id, x, log, delay=0.0):
    _log(log, "start", trial_id, x)
    time.sleep(delay)
    flat = torch.cat([t.flatten().double() for t in state_dict.values()])
    result = {"a": -float(((flat - 1.0) ** 2).mean()), "b": -float(((flat + 1.0) ** 2).mean())}
    _log(log, "end", trial_id, x)
    return result
'''


@dataclass
class Figures:
    """What a soak measured."""

    kills: int = 0
    early_kills: int = 0
    kills_in: dict[str, int] = field(default_factory=lambda: {"start-up": 0, "evaluation": 0, "between": 0})
    lives: int = 0
    concurrent: int = 0
    refused: int = 0
    concurrent_evaluations: int = 0
    lost: int = 0
    repeated: int = 0
    reruns: int = 0
    calls: int = 0
    reference_calls: int = 0
    trials: int = 0
    identical: bool = False
    differing: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    reference_wall_s: float = 0.0
    reference_cpu_s: float = 0.0
    failures: list[str] = field(default_factory=list)


def write_models(folder: Path, seed: int = 0) -> dict[str, Path]:
    """A base and two experts (an embedding, 4 layers, a head; 8 floats each) as safetensors files."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    names = ["embed.weight", *(f"layers.{i}.weight" for i in range(4)), "head.weight"]
    paths = {"base": folder / "base.safetensors"}
    save_file({n: torch.randn(8, generator=g) * 0.1 for n in names}, paths["base"])
    for k, expert in enumerate(("a", "b")):
        paths[expert] = folder / f"{expert}.safetensors"
        save_file({n: torch.randn(8, generator=g) + (1.0 if k == 0 else -1.0) for n in names}, paths[expert])
    return paths


def write_config(work: Path, name: str, strategy: str, budget: int, batch_size: int, seed: int, delay: float) -> Path:
    """The run config of one run folder ``work/name`` with its own evaluator log ``work/name.log``."""
    options = FAST_BAMBO if strategy == "bambo" else {}
    config = {
        "models": {
            "base": "models/base.safetensors",
            "experts": {"a": "models/a.safetensors", "b": "models/b.safetensors"},
        },
        "merge": {"method": "task_arithmetic", "granularity": "block", "blocks": 2, "partitioner": "uniform"},
        "evaluator": {"entry_point": "soak_eval:score", "options": {"log": str(work / f"{name}.log"), "delay": delay}},
        "objectives": [{"name": "a"}, {"name": "b"}],
        "strategy": {"name": strategy, "options": options},
        "budget": budget,
        "batch_size": batch_size,
        "seed": seed,
        "output": name,
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_log(path: Path) -> list[dict]:
    """The evaluator's events; a line cut by a kill is skipped."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def journal(run_dir: Path) -> list[Trial]:
    """The run's trials, read without the lock (read-only)."""
    path = run_dir / "journal.sqlite"
    if not path.exists():
        return []
    with Journal(path, read_only=True) as store:
        return store.trials()


def _key(trial: Trial) -> tuple:
    return (trial.x, trial.status, trial.objectives, trial.metrics)


class Soak:
    """One soak in ``work`` (see the module docstring)."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.rng = random.Random(args.seed)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(work)]),
            "OMP_NUM_THREADS": "1",
        }
        self.figures = Figures()

    def _bambo(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bambo.cli", *args, "--threads", "1"]

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command, cwd=self.work, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def reference(self, in_process: bool = False) -> list[Trial]:
        """The uninterrupted run (``in_process``: in this process, a quicker start for the smoke test)."""
        config = write_config(self.work, "reference", **self._run_options())
        if in_process:
            from bambo.runner import start

            wall, cpu = time.perf_counter(), time.process_time()
            sys.path.insert(0, str(self.work))
            try:
                start(config, progress=False)
            finally:
                sys.path.remove(str(self.work))
                sys.modules.pop("soak_eval", None)
            self.figures.reference_wall_s = time.perf_counter() - wall
            self.figures.reference_cpu_s = time.process_time() - cpu
            self.figures.reference_calls = sum(e["event"] == "start" for e in read_log(self.work / "reference.log"))
            return journal(self.work / "reference")
        wall, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(
            self._bambo("run", str(config)), cwd=self.work, env=self.env, capture_output=True, text=True
        )
        self.figures.reference_wall_s, self.figures.reference_cpu_s = time.perf_counter() - wall, _children_cpu() - cpu
        if done.returncode != 0:
            output = done.stdout[-2000:] + done.stderr[-2000:]
            raise RuntimeError(f"the reference run failed (exit {done.returncode}):\n{output}")
        self.figures.reference_calls = sum(e["event"] == "start" for e in read_log(self.work / "reference.log"))
        return journal(self.work / "reference")

    def _run_options(self) -> dict:
        a = self.args
        return {
            "strategy": a.strategy, "budget": a.budget, "batch_size": a.batch_size, "seed": a.seed, "delay": a.delay,
        }  # fmt: skip

    def soak(self) -> list[Trial]:
        """The killed and resumed run."""
        config = write_config(self.work, "soak", **self._run_options())
        run_dir, log = self.work / "soak", self.work / "soak.log"
        figures = self.figures
        snapshots: list[dict[int, tuple]] = []  # completed trials after each kill
        completed_before: list[set[int]] = []  # per life: trials completed when it began
        pids: list[int] = []
        wall, cpu = time.perf_counter(), _children_cpu()
        command = self._bambo("run", str(config))
        while True:
            completed_before.append({t.id for t in journal(run_dir) if t.status == "completed"})
            process = self._spawn(command)
            pids.append(process.pid)
            figures.lives += 1
            kill = figures.kills < self.args.kills
            early = kill and self.rng.random() < self.args.early_share
            if kill and not early:
                self._wait_for_an_evaluation(process, log)
            if process.poll() is None and kill and not early and figures.lives % 2 == 0:  # it holds the lock
                self._concurrent_resume(run_dir, log)
            delay = self.rng.uniform(0.0, self.args.max_delay_s if not early else self.args.max_startup_s)
            ended = _wait(process, delay) if kill else _wait(process, None)
            if not ended:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                own = [e["event"] for e in read_log(log) if e["pid"] == process.pid]
                figures.kills_in["start-up" if not own else "evaluation" if own[-1] == "start" else "between"] += 1
                figures.kills += 1
                figures.early_kills += early
                snapshots.append({t.id: _key(t) for t in journal(run_dir) if t.status == "completed"})
                command = self._bambo("resume", str(run_dir))
                continue
            if process.returncode != 0:
                stderr = process.stderr.read() if process.stderr else ""
                if not (run_dir / "journal.sqlite").exists() or not journal(run_dir):
                    command = self._bambo("run", str(config))  # killed before its first trial: start again
                    figures.failures.append(f"life {figures.lives} ended with exit {process.returncode} before a trial")
                    if len(figures.failures) > 5:
                        raise RuntimeError(stderr[-2000:])
                    continue
                raise RuntimeError(f"life {figures.lives} ended with exit {process.returncode}:\n{stderr[-3000:]}")
            break  # a life that ended by itself: the run is done
        figures.wall_s, figures.cpu_s = time.perf_counter() - wall, _children_cpu() - cpu
        final = journal(run_dir)
        now = {t.id: _key(t) for t in final}
        figures.lost = len({i for snap in snapshots for i, key in snap.items() if now.get(i) != key})
        events = [e for e in read_log(log) if e["event"] == "start"]
        figures.calls = len(events)
        life_of = {pid: n for n, pid in enumerate(pids)}
        seen: set[int] = set()
        for event in events:
            life = life_of.get(event["pid"])
            if life is None:
                continue  # a concurrent attempt's (counted in concurrent_evaluations)
            if event["trial"] in completed_before[life]:
                figures.repeated += 1
            elif event["trial"] in seen:
                figures.reruns += 1
            seen.add(event["trial"])
        figures.trials = len(final)
        return final

    def _wait_for_an_evaluation(self, process: subprocess.Popen, log: Path) -> None:
        """Until the process's evaluator has started an evaluation (or the process ended)."""
        while process.poll() is None:
            if any(e["pid"] == process.pid for e in read_log(log)):
                return
            time.sleep(_POLL_S)

    def _concurrent_resume(self, run_dir: Path, log: Path) -> None:
        """A second ``bambo resume`` while the run is live: it must be refused and evaluate nothing."""
        figures = self.figures
        figures.concurrent += 1
        attempt = subprocess.Popen(
            self._bambo("resume", str(run_dir)),
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        text, _ = attempt.communicate()
        output = " ".join(text.split())
        figures.concurrent_evaluations += sum(e["pid"] == attempt.pid for e in read_log(log))
        if attempt.returncode == 2 and "is in use by process" in output:
            figures.refused += 1
        else:
            figures.failures.append(f"concurrent resume exit {attempt.returncode}: {output[-300:]}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait(process: subprocess.Popen, seconds: float | None) -> bool:
    """Whether the process ended within ``seconds`` (``None``: wait for it)."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def compare(soak: list[Trial], reference: list[Trial], figures: Figures) -> None:
    """Per trial id: x, status, objectives and metrics of the soak against the reference."""
    ref = {t.id: _key(t) for t in reference}
    got = {t.id: _key(t) for t in soak}
    figures.differing = sorted(i for i in ref.keys() | got.keys() if ref.get(i) != got.get(i))
    figures.identical = not figures.differing


def run(args: argparse.Namespace, work: Path, reference_in_process: bool = False) -> Figures:
    """The soak in ``work``: models, evaluator, reference run, killed run, comparison."""
    write_models(work / "models", seed=args.seed)
    (work / "soak_eval.py").write_text(EVALUATOR)
    soak = Soak(work, args)
    reference = soak.reference(reference_in_process)
    final = soak.soak()
    compare(final, reference, soak.figures)
    return soak.figures


def report(args: argparse.Namespace, figures: Figures, command: str) -> str:
    """The Markdown report."""
    f = figures
    return "\n".join(
        [
            "# Kill-and-resume soak",
            "",
            machine_header(),
            f"- command: `{command}`",
            f"- run: strategy {args.strategy}, budget {args.budget}, batch size {args.batch_size}, seed {args.seed}, "
            f"evaluator delay {args.delay} s; SIGKILL {args.max_delay_s} s at most after a life's first evaluation "
            f"starts, or (share {args.early_share}) {args.max_startup_s} s at most after it is spawned",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| SIGKILLs (timed from the spawn) | {f.kills} ({f.early_kills}) |",
            f"| killed before the life's first evaluation (imports, models, replay, first proposal) | "
            f"{f.kills_in['start-up']} |",
            f"| killed during an evaluation | {f.kills_in['evaluation']} |",
            f"| killed between evaluations (journal writes, fits, proposals, results) | {f.kills_in['between']} |",
            f"| processes (lives) | {f.lives} |",
            f"| concurrent `bambo resume` attempts / refused with exit 2 | {f.concurrent} / {f.refused} |",
            f"| evaluations by a refused process | {f.concurrent_evaluations} |",
            f"| trials in the journal / budget | {f.trials} / {args.budget} |",
            f"| lost (completed after a kill, missing or changed at the end) | {f.lost} |",
            f"| repeated (evaluations of a trial already completed) | {f.repeated} |",
            f"| re-runs of a trial running at a kill | {f.reruns} |",
            f"| evaluator calls: soak / uninterrupted | {f.calls} / {f.reference_calls} |",
            f"| journal identical to the uninterrupted run (x, status, objectives, metrics per trial id) | "
            f"{'yes' if f.identical else 'no: trials ' + str(f.differing)} |",
            f"| soak wall / CPU s (all processes) | {f.wall_s:.0f} / {f.cpu_s:.0f} |",
            f"| uninterrupted run wall / CPU s | {f.reference_wall_s:.0f} / {f.reference_cpu_s:.0f} |",
            "",
            *([f"Anomalies: {'; '.join(f.failures)}", ""] if f.failures else []),
        ]
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs to deliver")
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--strategy", default="bambo")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run and of the kill moments")
    parser.add_argument("--delay", type=float, default=0.4, help="seconds each evaluation sleeps")
    parser.add_argument("--max-delay-s", type=float, default=1.2, help="longest wait after a life's first evaluation")
    parser.add_argument("--max-startup-s", type=float, default=8.0, help="longest wait, timed from the spawn")
    parser.add_argument("--early-share", type=float, default=0.3, help="share of kills timed from the spawn")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Figures:
    args = parse(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bambo-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = run(args, work)
    given = list(argv if argv is not None else sys.argv[1:])
    shown = [a for i, a in enumerate(given) if not (a.startswith("--workdir") or (i and given[i - 1] == "--workdir"))]
    text = report(args, figures, " ".join(["python -m benchmarks.soak", *shown]))
    print(text)
    if not args.no_write:
        (RESULTS / "soak.md").write_text(text)
    return figures


if __name__ == "__main__":
    main()
