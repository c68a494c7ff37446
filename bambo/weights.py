"""Loading model weights from disk, lazily where the format allows it.

:func:`load_state_dict` takes a ``.safetensors`` file, a ``.bin``/``.pt``
PyTorch checkpoint, or a folder as Hugging Face ``save_pretrained`` writes it
(``model.safetensors``, a sharded ``model.safetensors.index.json``, or
``pytorch_model.bin``). Safetensors are opened with ``safe_open`` (which checks
the file) and each tensor is read only when it is accessed, so code that walks a
model tensor by tensor (layer differences, streaming merges) holds one tensor at
a time.

Tensors are read with ``os.preadv`` into memory the caller owns, not returned as
views of a memory map: a memory-mapped tensor that has been read stays resident
(and counted in the process's RSS) for as long as the file is open, so walking a
2 GB model through ``safe_open``'s views would leave 2 GB resident per model.
``LazySafetensors.read_into`` reads part of a tensor into a given buffer, which
is how the streaming merge engine reads cache-sized chunks.
"""

from __future__ import annotations

import json
import os
import pickle
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from bambo.errors import BoundsError, ConfigError, ModelMismatchError

_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def tensor_meta(state_dict: Mapping[str, Tensor], key: str) -> Tensor:
    """Shape and dtype of ``state_dict[key]`` as a ``meta`` tensor, without reading a lazy tensor's data."""
    if isinstance(state_dict, LazySafetensors):
        return state_dict.meta(key)
    return state_dict[key].to("meta")


class LazySafetensors(Mapping[str, Tensor]):
    """A read-only state dict over one or more safetensors files; tensors load on access.

    Each access reads the tensor's bytes from the file into a new tensor (nothing stays
    mapped); :meth:`read_into` reads a range of a tensor into a caller's buffer.

    Args:
        files: The files (shards) holding the tensors.

    Raises:
        ConfigError: A tensor appears in two files.
    """

    def __init__(self, files: list[Path]) -> None:
        self._where: dict[str, Path] = {}
        self._handles: dict[Path, object] = {}
        self._spans: dict[str, tuple[int, int]] = {}  # key -> (absolute byte offset, byte length)
        self._fds: dict[Path, int] = {}
        self._metas: dict[str, Tensor] = {}
        for file in files:
            handle = safe_open(str(file), framework="pt")
            self._handles[file] = handle
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if key in self._where:
                    raise ConfigError(f"tensor {key!r} appears in both {self._where[key]} and {file}")
                self._where[key] = file
            self._spans.update(_data_spans(file))
            self._fds[file] = os.open(file, os.O_RDONLY)
        weakref.finalize(self, _close_all, list(self._fds.values()))

    def __getitem__(self, key: str) -> Tensor:
        meta = self.meta(key)
        if key not in self._spans or meta.dtype not in _SAFETENSORS_DTYPES.values():
            return self._handles[self._where[key]].get_tensor(key).clone()  # type: ignore[attr-defined]
        out = torch.empty(meta.shape, dtype=meta.dtype)
        self.read_into(key, out.view(-1))
        return out

    def read_into(self, key: str, out: Tensor, start: int = 0) -> Tensor:
        """Read entries ``start .. start + out.numel()`` of the flattened tensor ``key`` into ``out``.

        Args:
            key: Tensor name.
            out: A contiguous CPU tensor of ``key``'s dtype; its size sets how many entries are read.
            start: Index of the first entry in the flattened tensor.

        Returns:
            ``out``.

        Raises:
            KeyError: An unknown name.
            ModelMismatchError: ``out`` has another dtype or is not a contiguous CPU tensor.
            BoundsError: The range exceeds the tensor.
        """
        meta = self.meta(key)
        if out.dtype != meta.dtype or not out.is_contiguous() or out.device.type != "cpu":
            raise ModelMismatchError(
                f"read_into({key!r}): out must be a contiguous CPU {meta.dtype} tensor, got {out.dtype}"
            )
        size = out.element_size()
        offset, length = self._spans[key]
        begin, count = start * size, out.numel() * size
        if start < 0 or begin + count > length:
            raise BoundsError(f"read_into({key!r}): entries {start}..{start + out.numel()} exceed its {meta.numel()}")
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        fd, done = self._fds[self._where[key]], 0
        while done < count:
            n = os.preadv(fd, [view[done:]], offset + begin + done)
            if n <= 0:
                raise ConfigError(f"{self._where[key]} ended while reading tensor {key!r}")
            done += n
        return out

    def meta(self, key: str) -> Tensor:
        """Tensor ``key``'s shape and dtype as a ``meta`` tensor, read from the header (no data is loaded)."""
        known = self._metas.get(key)
        if known is None:
            known = self._metas[key] = self._read_meta(key)
        return known

    def _read_meta(self, key: str) -> Tensor:
        try:
            file = self._where[key]
        except KeyError:
            raise KeyError(key) from None
        view = self._handles[file].get_slice(key)  # type: ignore[attr-defined]
        dtype = _SAFETENSORS_DTYPES.get(view.get_dtype())
        if dtype is None:  # a dtype bambo does not name: load the tensor to learn it
            return self[key].to("meta")
        return torch.empty(view.get_shape(), dtype=dtype, device="meta")

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _data_spans(file: Path) -> dict[str, tuple[int, int]]:
    """Each tensor's (absolute byte offset, byte length) from a safetensors header.

    ``safe_open`` has already checked the header; this reads its ``data_offsets``.
    """
    with open(file, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    start = 8 + length
    return {
        key: (start + entry["data_offsets"][0], entry["data_offsets"][1] - entry["data_offsets"][0])
        for key, entry in header.items()
        if key != "__metadata__"
    }


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _from_folder(folder: Path) -> Mapping[str, Tensor]:
    single = folder / "model.safetensors"
    if single.exists():
        return LazySafetensors([single])
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        shards = sorted({folder / name for name in weight_map.values()})
        return LazySafetensors(shards)
    for name in ("pytorch_model.bin", "model.pt"):
        if (folder / name).exists():
            return _torch_file(folder / name)
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    if len(others) == 1:
        return LazySafetensors([folder / others[0]])
    raise ConfigError(
        f"no weights found in {folder}: expected model.safetensors, model.safetensors.index.json "
        f"or pytorch_model.bin (found {sorted(p.name for p in folder.iterdir())[:10]})"
    )


def _torch_file(path: Path) -> dict[str, Tensor]:
    """A ``.bin``/``.pt`` state dict, loaded with ``weights_only=True``: never runs pickled code."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{path} holds more than tensors and bambo does not unpickle code (weights_only=True): {first_line}; "
            "convert it to safetensors"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{path} does not hold a state dict of tensors")
    return state


def load_state_dict(path: str | Path) -> Mapping[str, Tensor]:
    """Open a model's weights as a (lazy where possible) state dict.

    Args:
        path: A ``.safetensors`` file, a ``.bin``/``.pt`` checkpoint, or a folder.

    Raises:
        ConfigError: The path does not exist or holds no recognised weights.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model path {path} does not exist")
    if path.is_dir():
        return _from_folder(path)
    if path.suffix == ".safetensors":
        return LazySafetensors([path])
    if path.suffix in (".bin", ".pt", ".pth"):
        return _torch_file(path)
    raise ConfigError(f"unrecognised weights file {path}: expected .safetensors, .bin, .pt or a folder")
