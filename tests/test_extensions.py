"""BoTorch's fused qLogEHVI kernel: a stale build lock or a slow build never hangs a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bambo import extensions
from bambo.store import Journal
from tests.test_runner import FAST_BAMBO, REPO, toy_config

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups and fcntl")


def _stale_torch_lock(folder: Path) -> Path:
    """The lock ``torch.utils.file_baton.FileBaton`` creates, left behind by a killed build."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    return lock


@pytest.fixture
def fresh_kernel_state(monkeypatch):
    """BoTorch's and bambo's per-process kernel state as in a new process (restored afterwards)."""
    from botorch.acquisition.multi_objective import logei

    monkeypatch.setattr(logei, "_load_attempted", False)
    monkeypatch.setattr(logei, "_C", None)
    monkeypatch.setattr(extensions, "_ready", None)
    return logei


def _tiny_acquisition_value() -> torch.Tensor:
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.models import ModelListGP, SingleTaskGP

    g = torch.Generator().manual_seed(0)
    X = torch.rand(6, 2, generator=g, dtype=torch.float64)
    Y = torch.stack([X.sum(-1), -X.sum(-1) + X[:, 0] ** 2], -1)
    model = ModelListGP(*[SingleTaskGP(X, Y[:, i : i + 1]) for i in range(2)])
    acqf = qLogNoisyExpectedHypervolumeImprovement(model, [-1.0, -2.0], X, prune_baseline=True)
    return acqf(torch.rand(3, 1, 2, generator=g, dtype=torch.float64))


def test_a_run_whose_extension_build_was_killed_completes(tmp_path):
    # `bambo run` killed during the kernel build leaves torch's lock file; the next run must not wait on it
    torch_root = tmp_path / "torch_extensions"
    cache = tmp_path / "cache"
    default_folder = torch_root / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / "logei_fused_ext"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": str(torch_root),  # where BoTorch alone would build (and wait)
        "BAMBO_CACHE_DIR": str(cache),
        "BAMBO_EXTENSION_TIMEOUT_S": "3",  # build or fall back; the run completes either way
        "BAMBO_FUSED_KERNEL": "1",
    }
    folder = Path(
        subprocess.run(
            [sys.executable, "-c", "from bambo.extensions import extension_folder; print(extension_folder())"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    stale = [_stale_torch_lock(default_folder), _stale_torch_lock(folder)]
    path = toy_config(tmp_path, **{"strategy": {"name": "bambo", "options": FAST_BAMBO}, "budget": 8})
    config = yaml.safe_load(path.read_text())
    assert config["batch_size"] == 4 and FAST_BAMBO["n_initial"] == 4  # one batch comes from qLogNEHVI
    process = subprocess.run(
        [sys.executable, "-m", "bambo.cli", "run", str(path), "--threads", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # generous: only a hang (waiting on the lock forever) reaches it
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "stale build lock" in process.stdout + process.stderr
    with Journal(tmp_path / "run" / "journal.sqlite") as journal:
        assert [t.status for t in journal.trials()] == ["completed"] * 8
    assert not stale[1].exists()
    assert stale[0].exists()  # BoTorch's own shared folder is left alone: it is not used


def test_a_slow_build_is_abandoned_for_the_pure_python_kernel(tmp_path, fresh_kernel_state):
    lock = _stale_torch_lock(extensions.extension_folder(tmp_path))
    assert extensions.prepare_fused_kernel(timeout_s=0.0, cache_dir=tmp_path) is False
    assert fresh_kernel_state._load_attempted and fresh_kernel_state._C is None
    assert not lock.exists()
    assert not (lock.parent / "failed.txt").exists()  # a time-out is not remembered: the next run builds
    assert torch.isfinite(_tiny_acquisition_value()).all()
    assert extensions.prepare_fused_kernel(timeout_s=0.0, cache_dir=tmp_path) is False  # answered once per process


def test_a_build_held_by_a_live_process_is_not_waited_for_past_the_limit(tmp_path, fresh_kernel_state):
    import fcntl

    folder = extensions.extension_folder(tmp_path)
    folder.mkdir(parents=True)
    with open(folder / "bambo.lock", "a+") as handle:  # another (live) bambo process is building
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        lock = _stale_torch_lock(folder)  # its torch lock: not stale, must stay
        assert extensions.prepare_fused_kernel(timeout_s=0.2, cache_dir=tmp_path) is False
        assert lock.exists()
    assert torch.isfinite(_tiny_acquisition_value()).all()


def test_the_kernel_can_be_switched_off(tmp_path, fresh_kernel_state, monkeypatch):
    monkeypatch.setenv("BAMBO_FUSED_KERNEL", "0")
    assert extensions.prepare_fused_kernel(cache_dir=tmp_path) is False
    assert not (tmp_path / "torch_extensions").exists()
    assert torch.isfinite(_tiny_acquisition_value()).all()


def test_an_unwritable_cache_or_a_bad_limit(tmp_path, fresh_kernel_state, monkeypatch):
    from bambo.errors import ConfigError

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    assert extensions.prepare_fused_kernel(timeout_s=1.0, cache_dir=blocker) is False  # a warning, not a crash
    monkeypatch.setattr(extensions, "_ready", None)
    monkeypatch.setattr(fresh_kernel_state, "_load_attempted", False)
    monkeypatch.setenv("BAMBO_EXTENSION_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="BAMBO_EXTENSION_TIMEOUT_S .* got 'soon'"):
        extensions.prepare_fused_kernel(cache_dir=tmp_path)
