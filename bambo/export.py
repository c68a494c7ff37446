"""Exporting a chosen merge: a safetensors file, a Hugging Face folder or a mergekit YAML.

bambo's own merge engine writes the weights (:func:`save_safetensors`, :func:`save_hf_folder`);
:func:`export_merge` writes any of the three formats, the mergekit YAML through
:mod:`bambo.mergekit_config`. Every output is written atomically (:mod:`bambo.atomic`):
complete at its path, or the previous one kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from bambo.atomic import atomic_folder, atomic_path
from bambo.errors import ConfigError
from bambo.merge_problem import MergeProblem
from bambo.mergekit_config import write_mergekit_yaml

# Files copied next to the weights from the base's folder (never its weights).
HF_SIDE_FILES = tuple(
    "config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json added_tokens.json "
    "vocab.txt vocab.json merges.txt tokenizer.model spiece.model sentencepiece.bpe.model chat_template.jinja "
    "chat_template.json preprocessor_config.json".split()
)


def save_safetensors(
    state_dict: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a state dict to one safetensors file.

    Tensors are detached, moved to the CPU and made contiguous; tensors sharing
    storage (tied weights) or viewing part of a larger storage are copied, which
    safetensors requires. ``{"format": "pt"}`` is always in the metadata, as
    ``transformers`` expects.

    Args:
        state_dict: Tensor name -> tensor; dtypes are kept.
        path: Output file (parent folders are created).
        metadata: Extra string metadata for the file header.

    Returns:
        The written path.
    """
    path = Path(path)
    seen: set[int] = set()
    tensors: dict[str, Tensor] = {}
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    header = {"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


_FOLDER_FORMATS = ("hf",)
_FILE_FORMATS = ("ax", "mergekit", "path", "safetensors")


def check_export_target(out: str | Path, fmt: str, run_dir: str | Path | None = None) -> Path:
    """Check an output path before any merge work: right kind, writable, and not the run's own.

    Args:
        out: The output file (``safetensors``, ``mergekit``, ``ax``) or folder (``hf``).
        fmt: The export format.
        run_dir: The run being exported: its folder, any folder holding it, and its
            journal, config, task model and reports are refused.

    Returns:
        ``out`` as a path.

    Raises:
        ConfigError: Naming the path and the problem: an unknown format, an existing
            folder for a file format or file for ``hf`` (or a folder that holds more
            than a previous export), a read-only path or folder, or one of the run's own paths.
    """
    out = Path(out)
    if fmt not in _FOLDER_FORMATS + _FILE_FORMATS:
        raise ConfigError(
            f"unknown export format {fmt!r}; valid formats: {', '.join(sorted(_FOLDER_FORMATS + _FILE_FORMATS))}"
        )
    if run_dir is not None:
        _check_not_the_runs_own(out, Path(run_dir))
    if out.exists():
        if fmt in _FOLDER_FORMATS:
            check_hf_folder_target(out)
        elif out.is_dir():
            raise ConfigError(f"output path {out} is a folder, but --format {fmt} writes a file: give a file path")
        if _read_only(out):
            raise ConfigError(f"output path {out} is read-only: choose another path or make it writable")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"output path {out} cannot be created: {parent} is a file, not a folder")
    if _read_only(parent):
        raise ConfigError(f"output path {out} is in a read-only folder ({parent}): choose another path")
    return out


def _check_not_the_runs_own(out: Path, run_dir: Path) -> None:
    from bambo.runner import RESULT_FILES
    from bambo.store import CONFIG, JOURNAL
    from bambo.strategies.pmto import PMTO

    target, run = out.resolve(), run_dir.resolve()
    if target == run or target in run.parents:
        raise ConfigError(
            f"output path {out} is the run's own folder {run_dir} or holds it: choose a path inside or beside it"
        )
    own = (CONFIG, PMTO.TASK_MODEL, *RESULT_FILES)
    if target.parent == run and (target.name in own or target.name.startswith(JOURNAL)):
        raise ConfigError(f"output path {out} is one of the run's own files (journal, config, task model, reports)")


def _read_only(path: Path) -> bool:
    """No write permission, for this user or (so that root, too, respects it) for anyone."""
    return not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222


def check_hf_folder_target(out: str | Path) -> None:
    """Refuse an output folder whose replacement would lose anything but a previous export.

    An export replaces the folder as a whole, so an existing ``out`` must be a folder
    holding only ``model.safetensors`` and :data:`HF_SIDE_FILES`.

    Raises:
        ConfigError: ``out`` exists and is not such a folder.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"output path {out} is a file, but a Hugging Face export is a folder: choose a folder path")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ("model.safetensors", *HF_SIDE_FILES))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"output folder {out} holds files that are not a model export ({shown}) and would be replaced: "
            "choose a new or empty folder"
        )


def save_hf_folder(
    state_dict: Mapping[str, Tensor],
    source: str | Path | Mapping[str, Any] | Any,
    out_dir: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a Hugging Face folder: ``model.safetensors`` plus the base's config and tokenizer files.

    Nothing is downloaded: the side files (:data:`HF_SIDE_FILES`) are copied from
    the base's local folder; the base's weights files are never copied.

    Args:
        state_dict: The merged weights.
        source: The base model's folder (or a file inside it, e.g. its
            ``config.json``), a config dict, or a ``transformers`` ``PretrainedConfig``.
        out_dir: Output folder; must not be the source folder.
        metadata: Extra safetensors metadata.

    Returns:
        The output folder.

    Raises:
        ConfigError: No ``config.json`` can be found for ``source``, ``out_dir`` is the source
            folder, or ``out_dir`` exists and is not a previous export (:func:`check_hf_folder_target`).
    """
    out = Path(out_dir)
    folder = None
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise ConfigError(f"base model path {source} does not exist")
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        if not (folder / "config.json").is_file():
            raise ConfigError(f"no config.json in {folder}: pass the base model's Hugging Face folder or its config")
        if out.resolve() == folder.resolve():
            raise ConfigError(f"refusing to write the merged model into the base model's folder {folder}")
    elif not (isinstance(source, Mapping) or hasattr(source, "to_json_file")):
        raise ConfigError(f"cannot take a model config from {type(source).__name__}")
    check_hf_folder_target(out)
    with atomic_folder(out) as tmp:  # the folder appears (or replaces the previous export) only when complete
        if folder is not None:
            for name in HF_SIDE_FILES:
                if (folder / name).is_file():
                    shutil.copyfile(folder / name, tmp / name)
        elif isinstance(source, Mapping):
            (tmp / "config.json").write_text(json.dumps(dict(source), indent=2))
        else:
            source.to_json_file(str(tmp / "config.json"))
        save_safetensors(state_dict, tmp / "model.safetensors", metadata)
    return out


# -- mergekit -------------------------------------------------------------------------------


def export_merge(
    problem: MergeProblem,
    x: Tensor,
    out: str | Path,
    fmt: str = "safetensors",
    model_paths: Sequence[str | Path] | None = None,
    dtype: str = "float32",
) -> Path:
    """Export the merge at ``x`` in one of the formats ``safetensors``, ``hf`` or ``mergekit``.

    Args:
        problem: The merge problem.
        x: The chosen decision vector.
        out: A ``.safetensors`` file, an output folder (``hf``) or a ``.yml`` file (``mergekit``).
        fmt: The format.
        model_paths: Base path then expert paths; needed for ``hf`` (the base's
            folder supplies config and tokenizer) and ``mergekit``.
        dtype: mergekit's computation dtype.

    Returns:
        The written file or folder.

    Raises:
        ConfigError: An unknown format, missing model paths, or an unusable ``out``
            (:func:`check_export_target`), before any merge work.
    """
    if fmt not in ("hf", "mergekit", "safetensors"):
        raise ConfigError(f"unknown export format {fmt!r}; valid formats: hf, mergekit, safetensors")
    check_export_target(out, fmt)
    if fmt == "safetensors":
        return save_safetensors(problem.merge(x), out)
    if not model_paths:
        raise ConfigError(f"export format {fmt!r} needs the model paths (base first)")
    if fmt == "hf":
        return save_hf_folder(problem.merge(x), model_paths[0], out)
    return write_mergekit_yaml(problem, x, model_paths, out, dtype)
