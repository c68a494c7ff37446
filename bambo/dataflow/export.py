"""Exporting a layer path: a Hugging Face folder with the layers materialised in path order, and a mergekit
``passthrough`` configuration.

Both hold a path whose scales are all 1. An input scale cannot be folded into a Hugging
Face checkpoint exactly: in a pre-norm block the residual stream carries the scaled hidden
state on to every later layer, so the scale is not a property of one layer's weights, and
RMSNorm's epsilon makes even the normalised branch depend on it slightly. A scaled path is
refused with that reason rather than exported inexactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from torch import Tensor, nn

from bambo.atomic import atomic_path
from bambo.dataflow.build import build_path_model
from bambo.dataflow.path import LayerPath
from bambo.errors import ConfigError
from bambo.export import check_export_target, save_hf_folder, save_safetensors

if TYPE_CHECKING:
    from bambo.dataflow.problem import DataFlowProblem

__all__ = ["export_dataflow", "export_path", "mergekit_passthrough", "path_record"]

DATAFLOW_FORMATS = ("path", "safetensors", "hf", "mergekit")


def _check_unscaled(path: LayerPath, target: str) -> None:
    for i, hop in enumerate(path.hops):
        if hop.scale != 1.0:
            raise ConfigError(
                f"hop {i} ({hop.source}:{hop.layer}) scales its input by {hop.scale:g}: {target} cannot hold an input "
                "scale exactly (the residual stream carries it to every later layer); export a path whose scales "
                "are all 1, or evaluate the scaled path in bambo (build_path_model)"
            )


def export_path(
    path: LayerPath, sources: Mapping[str, nn.Module], out_dir: str | Path, frame: str | None = None
) -> Path:
    """Write the path's model as a Hugging Face folder (``config.json``, ``model.safetensors``).

    Each hop's layer is written as layer ``i`` of the folder's model (a repeated layer is
    written once per hop); the config is the frame's with ``num_hidden_layers`` set to the
    path's length, so ``AutoModelFor...from_pretrained`` reloads it with no bambo code.
    The tokenizer is the frame's: save it into the folder with ``save_pretrained``.

    Args:
        path: The hops; every scale must be 1.
        sources: Source name -> Hugging Face model.
        out_dir: Output folder (written atomically; an existing one must be a previous export).
        frame: The source of the embeddings and head (default: the path's first source).

    Returns:
        The folder.

    Raises:
        ConfigError: A hop's scale is not 1 (names the hop), a source is not a Hugging
            Face model, or a bad path (see :func:`~bambo.dataflow.build.build_path_model`).
    """
    _check_unscaled(path, "a Hugging Face folder")
    model = build_path_model(path, sources, frame)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_json_file"):
        raise ConfigError(f"{type(model).__name__} has no Hugging Face config: only Hugging Face models export")
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}  # one copy per hop
    return save_hf_folder(state, config, out_dir, metadata={"bambo_layer_path": path.describe()})


def mergekit_passthrough(path: LayerPath, model_paths: Mapping[str, str | Path], dtype: str = "float32") -> dict:
    """mergekit's ``passthrough`` configuration of the path: one slice per run of consecutive layers of one source.

    Args:
        path: The hops; every scale must be 1.
        model_paths: Source name -> the model's folder or hub name, as mergekit should read it.
        dtype: mergekit's ``dtype``.

    Returns:
        The configuration dict (``yaml.safe_dump`` it; mergekit's ``MergeConfiguration``
        parses it).

    Raises:
        ConfigError: A hop's scale is not 1, or a source has no model path (names them).
    """
    _check_unscaled(path, "mergekit's passthrough")
    missing = [s for s in path.sources if s not in model_paths]
    if missing:
        raise ConfigError(f"no model path for source(s) {', '.join(map(repr, missing))}")
    runs: list[list[Any]] = []  # [source, first layer, end layer]
    for hop in path.hops:
        if runs and runs[-1][0] == hop.source and runs[-1][2] == hop.layer:
            runs[-1][2] += 1
        else:
            runs.append([hop.source, hop.layer, hop.layer + 1])
    slices = [
        {"sources": [{"model": str(model_paths[source]), "layer_range": [start, end]}]} for source, start, end in runs
    ]
    return {"slices": slices, "merge_method": "passthrough", "dtype": dtype}


def path_record(path: LayerPath, frame: str) -> dict[str, Any]:
    """The path as JSON-ready data: its text form (:meth:`LayerPath.parse` reads it), its hops and the frame."""
    hops = [{"source": h.source, "layer": h.layer, "scale": h.scale} for h in path.hops]
    return {"path": path.describe(), "frame": frame, "hops": hops}


def export_dataflow(
    problem: DataFlowProblem,
    x: Tensor,
    out: str | Path,
    fmt: str = "path",
    model_paths: Mapping[str, str | Path] | None = None,
) -> Path:
    """Export the path of decision vector ``x`` (``bambo export`` of a data-flow run).

    Formats: ``path`` (a JSON file with the hops, their scales and the frame: every path,
    scaled or not; :func:`~bambo.dataflow.build.build_path_model` rebuilds the model from
    it and the sources), ``safetensors`` (the built model's weights, one copy per hop, the
    path in the header), ``hf`` (:func:`export_path`) and ``mergekit`` (a ``passthrough``
    YAML, :func:`mergekit_passthrough`). The last three hold unscaled paths only.

    Args:
        problem: The data-flow problem.
        x: The chosen decision vector.
        out: The output file, or folder for ``hf``.
        fmt: One of ``path``, ``safetensors``, ``hf``, ``mergekit``.
        model_paths: Source name -> model file or folder, for ``mergekit``.

    Raises:
        ConfigError: An unknown format, a scaled path for a weights format (names the
            hop), a source without a model path, or an unusable ``out``.
    """
    if fmt not in DATAFLOW_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} for a data-flow run; valid: {', '.join(DATAFLOW_FORMATS)}")
    check_export_target(out, "hf" if fmt == "hf" else "safetensors")
    out = Path(out)
    path = problem.path(x)
    if fmt == "path":
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(path_record(path, problem.frame), indent=2) + "\n")
        return out
    if fmt == "hf":
        return export_path(path, problem.sources, out, problem.frame)
    if fmt == "mergekit":
        config = mergekit_passthrough(path, model_paths or {})
        with atomic_path(out) as tmp:
            Path(tmp).write_text(yaml.safe_dump(config, sort_keys=False))
        return out
    _check_unscaled(path, "a safetensors file")
    model = build_path_model(path, problem.sources, problem.frame)
    return save_safetensors(model.state_dict(), out, metadata={"bambo_layer_path": path.describe()})
