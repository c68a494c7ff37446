"""Evaluation on Ray workers: trials run side by side, one per worker (GPU, CPU slot, node).

:class:`RayExecutor` is an :class:`~bambo.execution.Executor`: the experiment loop hands it
trials already journaled as pending (a batch in one transaction), and it reports each
outcome through the loop's callbacks as soon as it arrives (``ray.wait`` with
``num_returns=1``), so the driver alone writes the journal, one transaction per result,
keyed by trial id; workers never open it. In batch mode (:meth:`RayExecutor.evaluate`)
the workers share the trials of one batch; in asynchronous mode
(:meth:`RayExecutor.stream`) a worker that frees up gets a new trial from the loop at
once, proposed with the running ones as pending points. Ray is the engine mergekit-evolve and Ray Tune
use; it runs on a laptop (a local cluster) and on a cluster (``address``).

Workers are actors that hold the problem (put in Ray's object store once): each builds
its live model on first use (a merge problem merges every candidate into it,
``Merger.merge(c, into=model)``), so a trial carries only its decision vector. An
actor per worker slot, each asking for ``resources_per_trial`` (``{"GPU": 1}``: one actor
per GPU).

Faults: an evaluator that raises fails its trial with its message (the run goes on);
a worker that dies (actor killed, node lost) is replaced and its trial is run again up to
``retries`` times, then recorded as failed; a trial running past ``timeout_s`` has its
worker killed and replaced, and is failed. A trial is reported once, never twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from bambo.errors import ConfigError
from bambo.execution import Executor, Finished, Source, Started, Work
from bambo.problem import Problem, evaluating

__all__ = ["RayExecutor", "import_ray"]

Running = tuple[Work, int, Any, float]  # a running trial: (id, x, fidelity), attempts before, actor, start time


def import_ray() -> Any:
    """The ``ray`` module, or one clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray executor needs Ray, which is not installed: pip install 'bambo[ray]'") from None
    return ray


class _Worker:
    """The body of a Ray actor: holds the problem and evaluates one decision vector at a time."""

    def __init__(self, problem: Problem, threads: int | None) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.problem = problem

    def evaluate(self, trial_id: int, x: Tensor, fidelity: float) -> tuple[dict[str, float] | None, str | None]:
        """``(metrics, None)``, or ``(None, error text)`` when the evaluation raised."""
        try:
            with evaluating(trial_id):
                return self.problem.metrics(x, fidelity), None
        except Exception as exc:  # noqa: BLE001 - a crashed evaluator fails its trial, not the worker
            return None, f"evaluation raised {type(exc).__name__}: {exc}"

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """Evaluate the trials of a batch on Ray actors, one trial per actor at a time.

    Args:
        workers: Actors (trials evaluated side by side).
        address: ``None`` starts a local Ray cluster in this process if none is running
            (``ray.init()``); ``"auto"`` or ``"ray://host:port"`` joins a running one.
        resources_per_trial: Ray resources each actor holds, e.g. ``{"GPU": 1}`` or
            ``{"CPU": 1}`` (default ``{"CPU": 1}``).
        retries: Times a trial whose worker died is run again (on a new worker) before
            it is recorded as failed.
        timeout_s: Seconds a trial may run; its worker is then killed and replaced and the
            trial fails.
        threads: Torch threads in each worker (default: Ray's, one per CPU it holds).
        init_options: Keyword arguments of ``ray.init`` when this executor starts Ray.

    Raises:
        ConfigError: Ray is not installed (names the extra), or a bad setting.
    """

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        resources_per_trial: Mapping[str, float] | None = None,
        retries: int = 0,
        timeout_s: float | None = None,
        threads: int | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        resources = dict(resources_per_trial or {"CPU": 1})
        bad = {k: v for k, v in resources.items() if not (isinstance(v, (int, float)) and v >= 0)}
        if bad:
            raise ConfigError(f"resources_per_trial must map names to non-negative amounts, got {bad}")
        self.ray = import_ray()
        self.workers = workers
        self.address = address
        self.resources = resources
        self.retries = retries
        self.timeout_s = timeout_s
        self.threads = threads
        self.init_options = dict(init_options or {})
        self._problem: Problem | None = None
        self._actors: list[Any] = []
        self.replaced = 0  # workers replaced after dying or timing out

    # -- workers -------------------------------------------------------------------------------

    def _actor_class(self) -> Any:
        options: dict[str, Any] = {"num_cpus": self.resources.get("CPU", 0), "max_restarts": 0}
        if "GPU" in self.resources:
            options["num_gpus"] = self.resources["GPU"]
        custom = {k: v for k, v in self.resources.items() if k not in ("CPU", "GPU")}
        if custom:
            options["resources"] = custom
        return self.ray.remote(**options)(_Worker)

    def start(self, problem: Problem, wait: bool = False) -> None:
        """Start Ray (if needed) and the workers for ``problem``; evaluations do this themselves.

        Args:
            problem: The problem the workers hold.
            wait: Return only once every worker is up (its process started, the problem
                unpickled): a benchmark's timing then leaves out the start-up.
        """
        ray = self.ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, **self.init_options)
        if not (self._problem is problem and self._actors):
            self.close()
            self._problem = problem
            self._problem_ref = ray.put(problem)
            self._cls = self._actor_class()
            self._actors = [self._new_actor() for _ in range(self.workers)]
        if wait:
            ray.get([actor.pid.remote() for actor in self._actors])

    def _new_actor(self) -> Any:
        return self._cls.remote(self._problem_ref, self.threads)

    def close(self) -> None:
        """Kill this executor's actors (Ray itself keeps running); the next evaluation starts new ones."""
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []

    # -- evaluations ---------------------------------------------------------------------------

    def evaluate(self, problem: Problem, trials: Sequence[Work], started: Started, finished: Finished) -> None:
        waiting = list(trials)

        def source(k: int) -> list[Work]:
            taken, waiting[:] = waiting[:k], waiting[k:]
            return taken

        self.stream(problem, source, started, finished)

    def stream(self, problem: Problem, source: Source, started: Started, finished: Finished) -> None:
        ray = self.ray
        self.start(problem)
        retry: list[tuple[Work, int]] = []  # (work, attempts so far) whose worker died
        free = list(self._actors)
        running: dict[Any, Running] = {}  # future -> (work, attempt, actor, start)
        exhausted = False
        while True:
            while retry and free:
                self._submit(free.pop(0), *retry.pop(0), running)
            if free and not exhausted:
                new = list(source(len(free)))
                exhausted = not new
                for work in new:
                    started(work[0])
                    self._submit(free.pop(0), work, 0, running)
            if not running:
                break
            timeout = None
            if self.timeout_s is not None:
                first_end = min(start for *_, start in running.values()) + self.timeout_s
                timeout = max(0.0, first_end - time.monotonic())
            done, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
            if not done:  # the oldest trial ran out of time: kill its worker, fail the trial
                future = min(running, key=lambda f: running[f][3])
                (trial_id, _, _), _, actor, _ = running.pop(future)
                ray.kill(actor)
                free.append(self._replace(actor))
                finished(trial_id, None, f"evaluation timed out after {self.timeout_s:g} s (its Ray worker was killed)")
                continue
            future = done[0]
            work, attempt, actor, _ = running.pop(future)
            trial_id = work[0]
            try:
                metrics, error = ray.get(future)
            except ray.exceptions.RayActorError as exc:  # the worker died: replace it, retry or fail
                free.append(self._replace(actor))
                if attempt < self.retries:
                    retry.append((work, attempt + 1))
                    continue
                tries = f" after {attempt + 1} attempts" if attempt else ""
                finished(trial_id, None, f"the Ray worker evaluating it died{tries}: {_first_line(exc)}")
                continue
            free.append(actor)
            finished(trial_id, metrics, error)

    def _submit(self, actor: Any, work: Work, attempt: int, running: dict[Any, Running]) -> None:
        running[actor.evaluate.remote(*work)] = (work, attempt, actor, time.monotonic())

    def _replace(self, dead: Any) -> Any:
        self.replaced += 1
        fresh = self._new_actor()
        self._actors = [fresh if a is dead else a for a in self._actors]
        return fresh


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
