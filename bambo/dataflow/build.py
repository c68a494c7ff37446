"""Build the model of a layer path from its sources, sharing every weight (no layer is copied).

A model whose forward runs a list of layers in order (a Hugging Face decoder's
``model.layers``, a BERT encoder's ``encoder.layer``, a plain ``layers`` list) is rebuilt
around a new list: hop ``i`` is a *shallow* clone of its source layer, so its parameters
and buffers are the source's own tensors, and a scale other than 1 multiplies the layer's
input hidden state (a forward pre-hook on the clone). Everything outside the list
(embeddings, final norm, head) is the ``frame`` source's.

Why not ``copy.copy``: a module's ``_modules``, ``_parameters``, ``_buffers`` and hook
dictionaries would stay shared, so setting a child or registering a hook on the copy would
silently change the source. :func:`shallow_clone` copies those containers and nothing
else. Hugging Face decoders key the KV cache by ``self_attn.layer_idx``: each hop gets its
own clone of the attention module with ``layer_idx`` set to the hop's index, and the built
model gets its own config with ``num_hidden_layers`` set to the path's length (the forward
runs ``layers[:num_hidden_layers]`` and the cache allocates that many slots).

Where the residual connection lives inside the layer module (transformer blocks), the
scale multiplies the whole hidden state the block sees, residual included, as in Sakana's
released model; where it lives in the parent's forward (a residual MLP such as the digits
benchmark's), the scale multiplies the layer's input, the residual branch only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from bambo.dataflow.path import LayerPath
from bambo.errors import ConfigError, ModelMismatchError

__all__ = ["LAYER_LISTS", "build_path_model", "layer_list_of", "shallow_clone"]

LAYER_LISTS: tuple[str, ...] = ("model.layers", "encoder.layer", "bert.encoder.layer", "layers")
"""Where a model keeps its layers, tried in order: Llama/Mistral/Qwen2 decoders, BERT encoders
(bare and inside a task model), plain models."""


def shallow_clone(module: nn.Module) -> nn.Module:
    """A new module object sharing ``module``'s parameters, buffers and children.

    Its own containers (children, parameters, buffers, hooks) are copies, so assigning a
    child or registering a hook on the clone leaves ``module`` unchanged.
    """
    clone = copy.copy(module)
    for key, value in vars(module).items():
        if isinstance(value, dict | set):
            clone.__dict__[key] = copy.copy(value)
    return clone


def layer_list_of(model: nn.Module) -> str:
    """The dotted path of ``model``'s layer list (one of :data:`LAYER_LISTS`).

    Raises:
        ConfigError: The model has none of them (names the model's class).
    """
    for dotted in LAYER_LISTS:
        owner: Any = model
        for name in dotted.split("."):
            owner = owner._modules.get(name) if isinstance(owner, nn.Module) else None
        if isinstance(owner, nn.ModuleList) and len(owner) > 0:
            return dotted
    raise ConfigError(
        f"{type(model).__name__} has no layer list that a path can be built on; looked for: {', '.join(LAYER_LISTS)}"
    )


def _layers(model: nn.Module, dotted: str) -> nn.ModuleList:
    return model.get_submodule(dotted)  # type: ignore[return-value]


def _hidden_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "hidden_size", None)


def _scaling_hook(scale: float):  # noqa: ANN202 - a forward pre-hook
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (args[0] * scale, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] * scale}

    return hook


def _hop_module(layer: nn.Module, index: int, scale: float) -> nn.Module:
    hop = shallow_clone(layer)
    attention = hop._modules.get("self_attn")
    if attention is not None and hasattr(attention, "layer_idx"):
        attention = shallow_clone(attention)
        attention.layer_idx = index  # the KV cache slot of this hop
        hop._modules["self_attn"] = attention
    if hasattr(hop, "layer_idx"):
        hop.layer_idx = index
    if scale != 1.0:
        hop.register_forward_pre_hook(_scaling_hook(scale), with_kwargs=True)
    return hop


def build_path_model(path: LayerPath, sources: Mapping[str, nn.Module], frame: str | None = None) -> nn.Module:
    """The model that runs ``path`` through the sources' layers.

    Args:
        path: The hops.
        sources: Source name -> model; all of one architecture (the same layer list and
            hidden size), e.g. the base, the experts, a parameter-space merge.
        frame: The source whose embeddings, final norm and head the model uses (default:
            the first source of the path).

    Returns:
        A model of the frame's class whose layer list holds the path's hops; every
        parameter is a source's tensor (``data_ptr`` equal), and the sources are unchanged.
        Hugging Face models get their own config, ``num_hidden_layers = len(path)``.

    Raises:
        ConfigError: An unknown source or frame, a layer index out of range (names the
            hop), a model without a layer list.
        ModelMismatchError: Sources with different layer lists or hidden sizes.
    """
    if not sources:
        raise ConfigError("no source models to build a path from")
    frame = path.hops[0].source if frame is None else frame
    if frame not in sources:
        raise ConfigError(f"unknown frame source {frame!r}; valid sources: {', '.join(sorted(sources))}")
    dotted = layer_list_of(sources[frame])
    hidden = _hidden_size(sources[frame])
    counts: dict[str, int] = {}
    for name, model in sources.items():
        if layer_list_of(model) != dotted:
            raise ModelMismatchError(
                f"source {name!r} keeps its layers in {layer_list_of(model)!r}, the frame {frame!r} in {dotted!r}"
            )
        if _hidden_size(model) != hidden:
            raise ModelMismatchError(
                f"source {name!r} has hidden size {_hidden_size(model)}, the frame {frame!r} {hidden}"
            )
        counts[name] = len(_layers(model, dotted))
    path.check(counts)
    widths = {name: _layers(model, dotted)[0] for name, model in sources.items()}
    _check_layer_shapes(widths)

    hops = nn.ModuleList(
        _hop_module(_layers(sources[h.source], dotted)[h.layer], i, h.scale) for i, h in enumerate(path.hops)
    )
    config = getattr(sources[frame], "config", None)
    if config is not None:
        config = copy.deepcopy(config)
        _resize_config(config, path, {name: getattr(m, "config", None) for name, m in sources.items()})
    root = shallow_clone(sources[frame])
    owner = root
    names = dotted.split(".")
    for name in names[:-1]:  # clone every module on the way down, so the frame keeps its own list
        child = shallow_clone(owner._modules[name])
        owner._modules[name] = child
        owner = child
    owner._modules[names[-1]] = hops
    if config is not None:
        for module in (root, *_chain(root, names[:-1])):
            if hasattr(module, "config"):
                module.__dict__["config"] = config
    return root


def _chain(root: nn.Module, names: list[str]) -> list[nn.Module]:
    out, module = [], root
    for name in names:
        module = module._modules[name]
        out.append(module)
    return out


def _check_layer_shapes(first_layers: Mapping[str, nn.Module]) -> None:
    """Sources whose layers hold tensors of different shapes cannot swap layers."""
    reference_name, reference = next(iter(first_layers.items()))
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    for name, layer in first_layers.items():
        other = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
        if other != shapes:
            raise ModelMismatchError(f"the layers of source {name!r} differ in shape from those of {reference_name!r}")


def _resize_config(config: Any, path: LayerPath, configs: Mapping[str, Any]) -> None:
    if hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(path)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:  # per-layer attention kinds (sliding or full) follow the hop's layer
        config.layer_types = [configs[h.source].layer_types[h.layer] for h in path.hops]
