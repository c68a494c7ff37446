"""Atomic outputs: a report or export is either complete at its path or not there (the old one kept).

Every writer writes to a temporary sibling (same folder, so the final rename stays on
one file system and is atomic) and renames it onto the target only once the writing
has finished; an exception or a kill before that leaves the target as it was and no
partial file under its name. The temporary name keeps the target's suffix, so
writers that infer the format from the name (matplotlib) still work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name next to ``path``: ``.{stem}.{tag}-{random}{suffix}``."""
    return path.with_name(f".{path.stem}.{tag}-{secrets.token_hex(4)}{path.suffix}")


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file path to write; it replaces ``path`` when the block ends without an exception.

    Args:
        path: The final file (its folder is created).

    Yields:
        The temporary path, in ``path``'s folder and with its suffix.

    Example:
        >>> with atomic_path(run_dir / "front.png") as tmp:  # doctest: +SKIP
        ...     fig.savefig(tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; it replaces the folder ``path`` when the block ends without an exception.

    A new folder appears with one rename. An existing one is renamed aside first and
    removed after the new one is in place (a kill between the two renames leaves the
    old folder under a hidden ``.{name}.old-...`` name next to it).

    Args:
        path: The final folder (its parent is created).

    Yields:
        The temporary folder (created, empty).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        for item in tmp.iterdir():
            if item.is_file():
                _fsync(item)
        if target.exists():
            old = _sibling(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
