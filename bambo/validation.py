"""Checks of a run's inputs that read nothing they cannot bound, done before anything runs.

``bambo run`` reads a config file, model weights and an output folder chosen by
the user. Every such path is checked with ``stat`` before it is opened: a FIFO, a
device (``/dev/zero``), a missing or unreadable path is refused with a
:class:`~bambo.errors.ConfigError` naming the field, instead of hanging on an
``open`` that never returns or reading without end. Weights files are checked
for their format (a safetensors header is parsed within bounds; a ``.bin`` is
opened with ``torch.load(weights_only=True, mmap=True)``), the YAML of a config
for its shape (string keys, bounded nesting and size), and the evaluator's
module is imported under a timeout.
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bambo.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; 1 MiB is far above any real one
MAX_YAML_DEPTH = 32  # nesting of mappings and lists in a config
MAX_YAML_NODES = 100_000  # values in a config, YAML aliases expanded
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header
MAX_INDEX_BYTES = 64 << 20  # a sharded model's model.safetensors.index.json
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
FORBIDDEN_OUTPUT_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def check_path_text(path: Path | str, field: str) -> None:
    """Refuse a path with a NUL byte (no system call accepts one).

    Raises:
        ConfigError: Naming ``field``.
    """
    if "\x00" in str(path):
        raise ConfigError(f"{field}: the path {str(path)!r} contains a NUL byte")


def check_regular_file(path: Path, field: str) -> os.stat_result:
    """``stat`` a path that is about to be read: it must be a readable regular file.

    Nothing is opened, so a FIFO or a device cannot block or stream without end.

    Args:
        path: The file.
        field: What the path is, for the message (``config``, ``models.base``, ...).

    Returns:
        Its ``stat`` result (size in ``st_size``).

    Raises:
        ConfigError: A NUL byte, no such file, not a regular file, or not readable.
    """
    info = _stat(path, field)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{field}: {path} is {_kind(info.st_mode)}, not a regular file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{field}: {path} is not readable (permission denied)")
    return info


def read_bounded(path: Path, field: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (checked before it is opened).

    Raises:
        ConfigError: Not a readable regular file, or larger than ``limit``.
    """
    info = check_regular_file(path, field)
    if info.st_size > limit:
        raise ConfigError(f"{field}: {path} has {info.st_size} bytes; at most {limit} are read")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:  # grew since the stat
        raise ConfigError(f"{field}: {path} has more than {limit} bytes")
    return data


def read_config_text(path: Path) -> str:
    """The text of a config file, read within :data:`MAX_CONFIG_BYTES`.

    Raises:
        ConfigError: A special, unreadable, too large or non-UTF-8 file.
    """
    data = read_bounded(path, "config", MAX_CONFIG_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start})") from None


def check_yaml_shape(data: Any, where: str = "config") -> None:
    """Refuse non-string mapping keys, nesting deeper than :data:`MAX_YAML_DEPTH` and huge documents.

    Shared (aliased) values are measured once, so a "billion laughs" document is
    refused in time proportional to its text, not to its expansion.

    Raises:
        ConfigError: Naming where the problem is (``config.merge.options``).
    """
    sizes: dict[int, int] = {}

    def walk(node: Any, path: str, depth: int) -> int:
        if not isinstance(node, dict | list):
            return 1
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{path} is nested deeper than {MAX_YAML_DEPTH} levels (or refers to itself)")
        if id(node) in sizes:
            return sizes[id(node)]
        total = 1
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{path} has a key {key!r} of type {type(key).__name__}; keys must be text (quote it)"
                    )
                total += walk(value, f"{path}.{key}", depth + 1)
        else:
            for i, value in enumerate(node):
                total += walk(value, f"{path}[{i}]", depth + 1)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{path} holds more than {MAX_YAML_NODES} values (YAML aliases expanded)")
        sizes[id(node)] = total
        return total

    walk(data, where, 0)


def check_output_dir(path: Path, field: str = "output") -> None:
    """Check, creating nothing, that a run folder can be created or written at ``path``.

    Raises:
        ConfigError: A NUL byte, a path inside ``/proc``, ``/sys`` or ``/dev``, an existing
            file or special file, a parent that is not a folder, a folder that is not writable,
            or a name longer than the file system allows.
    """
    check_path_text(path, field)
    absolute = Path(os.path.abspath(path))
    for part in absolute.parts:
        if len(os.fsencode(part)) > 255:
            raise ConfigError(f"{field}: a name in {path} is longer than 255 bytes")
    real = absolute.resolve()
    for root in FORBIDDEN_OUTPUT_ROOTS:
        if real == root or root in real.parents:
            raise ConfigError(f"{field}: {path} is inside {root}, which holds no run folders")
    existing = absolute
    while True:
        try:
            info = existing.stat()
            break
        except (FileNotFoundError, NotADirectoryError):  # the parent that exists says what is wrong
            existing = existing.parent
        except OSError as exc:
            raise ConfigError(f"{field}: cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        what = "" if existing == absolute else f" (its parent {existing})"
        raise ConfigError(f"{field}: {path}{what} is {_kind(info.st_mode)}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: {existing} is not writable, so the run folder {path} cannot be written")


def weight_files(path: Path, field: str) -> Iterator[tuple[Path, str]]:
    """The files :func:`bambo.weights.load_state_dict` would open for ``path``, each checked with ``stat``.

    Follows the same rules: a folder's ``model.safetensors``, the shards of
    ``model.safetensors.index.json``, ``pytorch_model.bin``/``model.pt``, or its single
    ``.safetensors`` file.

    Yields:
        ``(file, field)`` with the field naming the entry (``models.base/model.safetensors``).

    Raises:
        ConfigError: Naming the field and the file.
    """
    info = _stat(path, field)
    if not stat.S_ISDIR(info.st_mode):
        check_regular_file(path, field)
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ConfigError(
                f"{field}: unrecognised weights file {path}: expected .safetensors, .bin, .pt or a folder"
            )
        yield path, field
        return
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"{field}: the folder {path} is not readable (permission denied)")
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "model.pt"):
        entry = path / name
        if not os.path.lexists(entry):
            continue
        sub = f"{field}/{name}"
        if name.endswith(".index.json"):
            yield from _shards(entry, sub)
        else:
            check_regular_file(entry, sub)
            yield entry, sub
        return
    others = sorted(p for p in path.glob("*.safetensors"))
    if len(others) == 1:
        check_regular_file(others[0], f"{field}/{others[0].name}")
        yield others[0], f"{field}/{others[0].name}"
        return
    raise ConfigError(
        f"{field}: no weights found in {path}: expected model.safetensors, model.safetensors.index.json "
        f"or pytorch_model.bin (found {sorted(p.name for p in path.iterdir())[:10]})"
    )


def _shards(index: Path, field: str) -> Iterator[tuple[Path, str]]:
    try:
        weight_map = json.loads(read_bounded(index, field, MAX_INDEX_BYTES)).get("weight_map")
    except (ValueError, AttributeError):
        raise ConfigError(f"{field}: {index} is not a JSON object") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConfigError(f"{field}: {index} has no weight_map of tensor names to shard files")
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if shard.parent != index.parent:
            raise ConfigError(f"{field}: shard {name!r} is not a file name in {index.parent}")
        check_regular_file(shard, f"{field}: shard {name}")
        yield shard, f"{field}: shard {name}"


def check_safetensors(path: Path, field: str) -> None:
    """Parse a safetensors header within bounds: an 8-byte little-endian length, then a JSON object.

    Every tensor's ``data_offsets`` must lie inside the file.

    Raises:
        ConfigError: Naming ``field`` and the file.
    """
    size = check_regular_file(path, field).st_size
    bad = f"{field}: {path} is not a valid safetensors file"
    if size < 8:
        raise ConfigError(f"{bad}: it has {size} bytes, fewer than the 8 of the header length")
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(size - 8, MAX_SAFETENSORS_HEADER):
                raise ConfigError(f"{bad}: its header length {length} exceeds the file ({size} bytes)")
            raw = handle.read(length)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ConfigError(f"{bad}: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{bad}: its header is not a JSON object")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise ConfigError(f"{bad}: tensor {name!r} has data offsets {offsets!r} outside its {data_size} data bytes")


def check_torch_file(path: Path, field: str) -> None:
    """Open a ``.bin``/``.pt`` checkpoint as bambo will (``weights_only=True, mmap=True``).

    Raises:
        ConfigError: Naming ``field`` and the file, with the first line of torch's error.
    """
    import torch

    check_regular_file(path, field)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"{field}: {path} is not a PyTorch checkpoint bambo can read (torch.load with weights_only=True, "
            f"mmap=True): {type(exc).__name__}: {text[:300]}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{field}: {path} does not hold a state dict of tensors")


def check_weights(path: Path, field: str) -> None:
    """Check every file of a model's weights (:func:`weight_files`) for its format.

    Raises:
        ConfigError: Naming the field (``models.experts.a``) and the file.
    """
    for file, sub in weight_files(path, field):
        if file.suffix == ".safetensors":
            check_safetensors(file, sub)
        else:
            check_torch_file(file, sub)


def import_module(module_name: str, field: str, timeout_s: float, search: Path | None = None) -> Any:
    """Import a module in a worker thread, giving up after ``timeout_s`` seconds.

    A module that hangs at import leaves its (daemon) thread behind, which ends with
    the process; the caller gets a :class:`ConfigError` instead of a hang.

    Args:
        module_name: The dotted module name.
        field: The config field, for the message.
        timeout_s: Seconds the import may take.
        search: A folder put first on ``sys.path`` while importing (the config's folder).

    Raises:
        ConfigError: The module is not found (the message says where it looked), raises
            while importing, or takes longer than ``timeout_s``.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["module"] = importlib.import_module(module_name)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, whatever it is
            outcome["error"] = exc

    added = search is not None and str(search) not in sys.path
    if added:
        sys.path.insert(0, str(search))
    try:
        thread = threading.Thread(target=work, name=f"bambo-import-{module_name}", daemon=True)
        thread.start()
        thread.join(timeout_s)
    finally:
        if added and str(search) in sys.path:
            sys.path.remove(str(search))
    if thread.is_alive():
        raise ConfigError(
            f"{field}: importing module {module_name!r} took longer than {timeout_s:g} s "
            "(evaluator.import_timeout_s); does it wait for something at import?"
        )
    error = outcome.get("error")
    missing = isinstance(error, ModuleNotFoundError) and error.name is not None
    if missing and (module_name == error.name or module_name.startswith(f"{error.name}.")):  # type: ignore[union-attr]
        where = f"the config's folder {search} and " if search is not None else ""
        raise ConfigError(
            f"{field}: cannot import module {module_name!r}: no module named {error.name!r} "
            f"(looked in {where}the Python path: the current folder, PYTHONPATH and installed packages)"
        )
    if error is not None:
        raise ConfigError(f"{field}: importing module {module_name!r} raised {type(error).__name__}: {error}")
    return outcome["module"]


def _stat(path: Path, field: str) -> os.stat_result:
    """``path.stat()`` after checking its text; a missing or unreachable path is a :class:`ConfigError`."""
    check_path_text(path, field)
    try:
        return path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{field}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None
