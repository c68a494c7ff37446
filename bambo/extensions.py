"""BoTorch's fused qLogEHVI C++ kernel, built in a bambo-owned folder that can never hang a run.

BoTorch (``botorch.acquisition.multi_objective.logei._try_load_fused_kernel``)
JIT-compiles ``botorch/csrc/logei_fused.cpp`` with
``torch.utils.cpp_extension.load`` the first time a ``qLogExpectedHypervolumeImprovement``
or ``qLogNoisyExpectedHypervolumeImprovement`` is constructed in a process. The
build goes to the shared ``~/.cache/torch_extensions/<python>_<device>/logei_fused_ext``
(or ``$TORCH_EXTENSIONS_DIR``) under a ``FileBaton``: a ``lock`` file created with
``O_CREAT | O_EXCL`` that names no owner. A process killed during the build leaves
that file behind, and every later process then waits for it to vanish, forever and
silently. Installations at different paths also share that folder, and since
their include paths differ, each rebuilds the kernel over the other's.

:func:`prepare_fused_kernel` takes the load out of BoTorch's hands (it marks the
load as attempted, so BoTorch never starts its own):

- The build folder is bambo's own, ``$BAMBO_CACHE_DIR`` or ``~/.cache/bambo``, then
  ``torch_extensions/<python>-torch<version>-botorch<version>-<installation hash>``.
- Builders in that folder hold an ``fcntl`` lock on ``bambo.lock``, which the
  kernel releases when its holder dies, so a torch ``lock`` file found while
  holding it was left by a killed build and is removed.
- The build runs in a child process with a time limit (``timeout_s``, or
  ``$BAMBO_EXTENSION_TIMEOUT_S``); a warning says, before it starts, that it is
  compiling, for about how long (:data:`BUILD_SECONDS`) and where.
  On a time-out, a failed build, a lock held by another live process for longer
  than the limit, or a platform without ``fcntl``, BoTorch's pure-Python
  implementation is used (same values, slower). A failed compilation is
  remembered in ``failed.txt`` in the folder (delete it to retry);
  ``BAMBO_FUSED_KERNEL=0`` skips the kernel altogether.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from bambo.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
# Wall time of one build (``_build_in_child`` into a fresh folder, 2-core machine under load): 53 s.
BUILD_SECONDS = 53.0
EXTENSION_NAME = "logei_fused_ext"
_CFLAGS = ["-O3", "-march=native"]  # as BoTorch builds it
_LOCK_NAME = "bambo.lock"
_FAILED_NAME = "failed.txt"
_DONE_NAME = "built.ok"
_POLL_S = 0.05

_ready: bool | None = None  # this process's answer, once known


def extension_folder(cache_dir: str | Path | None = None) -> Path:
    """The build folder of the fused kernel for this Python, torch, BoTorch and installation.

    Args:
        cache_dir: bambo's cache folder (default ``$BAMBO_CACHE_DIR`` or ``~/.cache/bambo``).
    """
    import botorch
    import torch

    root = Path(cache_dir or os.environ.get("BAMBO_CACHE_DIR") or Path.home() / ".cache" / "bambo")
    installation = hashlib.sha256(f"{sys.prefix}|{torch.__file__}|{botorch.__file__}".encode()).hexdigest()[:10]
    key = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-botorch{botorch.__version__}"
    return root / "torch_extensions" / f"{key}-{installation}".replace("+", "_")


def _kernel_source() -> Path:
    import botorch

    return Path(botorch.__file__).resolve().parent / "csrc" / "logei_fused.cpp"


def _botorch_logei() -> ModuleType | None:
    """BoTorch's ``logei`` module if it loads the fused kernel the way this module expects."""
    from botorch.acquisition.multi_objective import logei

    if not (hasattr(logei, "_load_attempted") and hasattr(logei, "_C") and _kernel_source().is_file()):
        return None
    return logei


def prepare_fused_kernel(timeout_s: float | None = None, cache_dir: str | Path | None = None) -> bool:
    """Load the fused kernel into BoTorch, building it first if needed; never wait past ``timeout_s``.

    Call it before the first qLogEHVI / qLogNEHVI of a process; later calls return
    the first answer at once.

    Args:
        timeout_s: Longest wait for the build and for another process's build
            (default ``$BAMBO_EXTENSION_TIMEOUT_S`` or 300 s).
        cache_dir: bambo's cache folder (see :func:`extension_folder`).

    Returns:
        Whether the fused kernel is in use (``False``: BoTorch's pure-Python implementation).

    Raises:
        ConfigError: ``$BAMBO_EXTENSION_TIMEOUT_S`` is not a number of seconds >= 0.
    """
    global _ready
    if _ready is not None:
        return _ready
    logei = _botorch_logei()
    if logei is None:  # a BoTorch without this kernel (or loading it differently): nothing to prepare
        _ready = False
        return _ready
    if logei._load_attempted:  # loaded (or refused) before bambo was asked
        _ready = logei._C is not None
        return _ready
    module = None
    if os.environ.get("BAMBO_FUSED_KERNEL", "1") != "0":
        limit = timeout_s if timeout_s is not None else _timeout_from_environment()
        folder = extension_folder(cache_dir)
        try:
            module = _load(folder, limit)
        except OSError as exc:  # e.g. a cache folder that cannot be written: never fatal
            logger.warning("cannot build the fused qLogEHVI kernel in %s (%s): using the pure-Python one", folder, exc)
    logei._C = module
    logei._load_attempted = True  # BoTorch must not start its own build in the shared folder
    _ready = module is not None
    return _ready


def _timeout_from_environment() -> float:
    raw = os.environ.get("BAMBO_EXTENSION_TIMEOUT_S")
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise ConfigError(f"BAMBO_EXTENSION_TIMEOUT_S must be a number of seconds >= 0, got {raw!r}")
    return value


def _load(folder: Path, timeout_s: float) -> ModuleType | None:
    """Build (in a child) and import the kernel from ``folder``, or ``None`` to fall back."""
    try:
        import fcntl  # noqa: F401  (POSIX only)
    except ImportError:
        logger.info("no fcntl on this platform: using BoTorch's pure-Python qLogEHVI kernel")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    failed = folder / _FAILED_NAME
    deadline = time.monotonic() + timeout_s
    with _exclusive(folder / _LOCK_NAME, deadline) as held:
        if not held:
            logger.warning(
                "another process has been building BoTorch's fused qLogEHVI kernel in %s for more than %.0f s: "
                "using the pure-Python kernel for this run",
                folder,
                timeout_s,
            )
            return None
        if failed.exists():
            logger.info("the fused qLogEHVI kernel failed to build before (see %s): using the pure-Python one", failed)
            return None
        remove_stale_torch_lock(folder)
        if not _built(folder):
            logger.warning(
                "compiling BoTorch's fused kernel (once, ~%.0f s; given up after %.0f s) into %s: "
                "the progress bar waits for it; later runs reuse it",
                BUILD_SECONDS,
                timeout_s,
                folder,
            )
            _clean(folder)
            outcome = _build_in_child(folder, deadline)
            if outcome is not None:
                if outcome != "timeout":
                    failed.write_text(outcome)
                    logger.warning(
                        "the fused qLogEHVI kernel did not build (details in %s): using the pure-Python one", failed
                    )
                else:
                    logger.warning(
                        "building the fused qLogEHVI kernel took longer than %.0f s: using the pure-Python kernel "
                        "(set BAMBO_EXTENSION_TIMEOUT_S to allow longer)",
                        timeout_s,
                    )
                remove_stale_torch_lock(folder)  # the killed child's
                return None
            (folder / _DONE_NAME).write_text("")
            logger.info("built the fused qLogEHVI kernel in %s", folder)
        try:
            return _import(folder)
        except Exception as exc:  # noqa: BLE001  (any failure here means: fall back)
            logger.warning("could not load the fused qLogEHVI kernel (%s): using the pure-Python one", exc)
            return None


@contextlib.contextmanager
def _exclusive(path: Path, deadline: float) -> Iterator[bool]:
    """Hold an ``fcntl`` lock on ``path`` (released by the kernel if this process dies); ``False`` past ``deadline``."""
    import fcntl

    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(_POLL_S)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_torch_lock(folder: Path) -> bool:
    """Remove torch's ``FileBaton`` lock in ``folder``; call only while holding bambo's lock there.

    Every builder in a bambo extension folder holds bambo's ``fcntl`` lock while
    torch's lock exists, so a torch lock seen by the holder was left by a killed build.

    Returns:
        Whether a stale lock was removed.
    """
    lock = folder / "lock"
    try:
        lock.unlink()
    except FileNotFoundError:
        return False
    logger.warning("removed a stale build lock left by a killed process: %s", lock)
    return True


def _built(folder: Path) -> bool:
    """Whether a build in ``folder`` completed (a killed one can leave a truncated library)."""
    return (folder / _DONE_NAME).is_file() and (folder / f"{EXTENSION_NAME}.so").is_file()


def _clean(folder: Path) -> None:
    """Remove what an unfinished build left, so that the next one starts from scratch."""
    for path in folder.iterdir():
        if path.name not in (_LOCK_NAME, _FAILED_NAME) and path.is_file():
            path.unlink()


def _build_in_child(folder: Path, deadline: float) -> str | None:
    """Build the kernel in a child process; ``None`` on success, ``"timeout"``, or the error text."""
    code = (
        "import sys\n"
        "from torch.utils.cpp_extension import load\n"
        f"load(name={EXTENSION_NAME!r}, sources=[{str(_kernel_source())!r}], extra_cflags={_CFLAGS!r}, "
        f"build_directory={str(folder)!r}, verbose=False)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: ninja and the compiler go with it on a time-out
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "timeout"
    if process.returncode != 0:
        return f"exit code {process.returncode}\n{output[-4000:]}"
    return None


def _import(folder: Path) -> ModuleType:
    """Import the built library (what ``torch.utils.cpp_extension.load`` does after its build step)."""
    import importlib.util

    import torch  # noqa: F401  (the library links against torch's, which must be loaded first)

    spec = importlib.util.spec_from_file_location(EXTENSION_NAME, folder / f"{EXTENSION_NAME}.so")
    if spec is None or spec.loader is None:
        raise ImportError(f"no importable {EXTENSION_NAME} in {folder}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
