"""A chosen merge in mergekit's schema (mergekit >= 0.1.4, ``mergekit.config.MergeConfiguration``).

:func:`mergekit_config` describes the merge bambo makes at a decision vector so that mergekit
reproduces it; :func:`write_mergekit_yaml` writes it (atomically). Model granularity becomes a ``models`` list with one
``weight`` per expert. Layer and block granularity become ``slices``, one per block, each source
with its ``layer_range`` ``[start, end)`` and the block's weights as scalars: mergekit would
interpolate a list of K < L values linearly across a slice's layers. mergekit applies the first
slice's parameters to the embeddings and the last slice's to the final norm and ``lm_head``, so
those get explicit ``[{filter: ..., value: ...}, ..., {value: block default}]`` entries; a filter
is the shortest dotted suffix of the name that selects no tensor with other weights (it then also
matches mergekit's canonical names for ``bert.``-prefixed checkpoints), and every tensor's resolved
weights are checked. mergekit takes DARE/DELLA's seed from ``--random-seed`` (``MergeConfiguration``
ignores a ``random_seed`` key, written for the record); :func:`mergekit_notes` lists differences.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from bambo.atomic import atomic_write_text
from bambo.errors import ConfigError
from bambo.merge_problem import MergeProblem
from bambo.space import DEFAULT_LAYER_PATTERN, LayerLayout

Target = tuple[float, ...] | None  # per-expert coefficients of a tensor; None: copied from the base
_Filters = list[tuple[str, Target]]
_Unit = tuple[tuple[int, int] | None, Target, _Filters]  # (layer range, default, filters)

_SLERP_THRESHOLD = 0.9995  # mergekit's fixed colinearity threshold


class _Dumper(yaml.SafeDumper):
    """Safe YAML with lists of numbers in flow style (``layer_range: [0, 4]``), as mergekit writes them."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flow = bool(data) and all(isinstance(v, (int, float)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def _normalize_flag(method: Any) -> bool:
    if method.normalize == "count":
        raise ConfigError(
            f"merge method {method.name!r} with normalize='count' (TIES's per-entry mean) has no mergekit "
            "equivalent; mergekit's normalize: true is normalize='weights', normalize: false is 'none'"
        )
    return method.normalize == "weights"


def _mergekit_method(method: Any) -> tuple[str, dict[str, Any], int | None]:
    """mergekit's method name, its constant parameters and the seed (DARE/DELLA) for a bambo method."""
    name = method.name
    if name in ("task_arithmetic", "linear"):
        return name, {}, None
    if name == "ties":
        return name, {"density": method.density, "normalize": _normalize_flag(method)}, None
    if name == "dare_linear":
        return name, {"density": round(1.0 - method.drop_rate, 12), "rescale": True}, method.seed
    if name == "dare_ties":
        params = {"density": round(1.0 - method.drop_rate, 12), "normalize": _normalize_flag(method), "rescale": True}
        return name, params, method.seed
    if name == "breadcrumbs":
        return name, {"density": method.density, "gamma": method.gamma}, None
    if name == "della":
        if method.density < 1.0 and method.density + method.epsilon >= 1.0:
            raise ConfigError(f"mergekit's della needs density + epsilon < 1, got {method.density} + {method.epsilon}")
        params = {"density": method.density, "epsilon": method.epsilon, "normalize": _normalize_flag(method)}
        return name, {**params, "rescale": True}, method.seed
    if name == "slerp":
        if method.colinear_threshold != _SLERP_THRESHOLD:
            raise ConfigError(f"mergekit's slerp has a fixed colinear threshold {_SLERP_THRESHOLD}")
        return name, {}, None
    raise ConfigError(f"merge method {name!r} has no mergekit export")


_NOTES = {
    "sign": "mergekit elects a positive sign where the weighted sum is exactly 0 (bambo: no sign)",
    "rounding": "mergekit keeps floor(density * n) entries of a tensor, bambo ceil(density * n)",
    "random": "mergekit draws other random masks (from --random-seed) and rescales survivors to the task "
    "vector's L1 norm (bambo: 1 / p_keep): the same kind of merge, not the same weights",
}
_METHOD_NOTES = {
    "ties": ("sign", "rounding"),
    "dare_ties": ("sign", "random"),
    "della": ("sign", "random"),
    "dare_linear": ("random",),
    "breadcrumbs": ("rounding",),
}


def mergekit_notes(method: Any) -> list[str]:
    """Where mergekit's merge of :func:`mergekit_config` differs from bambo's merge (empty: nowhere known).

    Args:
        method: A bambo merge method instance.

    Returns:
        One sentence per difference.
    """
    dense = getattr(method, "density", 0.0) >= 1.0
    notes = [_NOTES[key] for key in _METHOD_NOTES.get(method.name, ()) if not (key == "rounding" and dense)]
    if method.name == "breadcrumbs" and not dense:
        notes.append("needs mergekit >= 0.1.5: 0.1.4 keeps no entry of a tensor where gamma * n < 1")
    return notes


def _filter_for(name: str, scope: Sequence[str], targets: Mapping[str, Target]) -> str:
    """Shortest dotted suffix (two parts at least) of ``name`` selecting only tensors with its targets."""
    parts = name.split(".")
    for k in range(min(2, len(parts)), len(parts) + 1):
        candidate = ".".join(parts[-k:])
        if all(targets[other] == targets[name] for other in scope if candidate in other):
            return candidate
    raise ConfigError(f"tensor {name!r} is part of another tensor's name; mergekit's filters cannot single it out")


def _resolve(filters: _Filters, default: Target, name: str) -> Target:
    """mergekit's rule: the first filter that is a substring of the name wins, else the default."""
    return next((target for substring, target in filters if substring in name), default)


def _unit(
    layer_range: tuple[int, int] | None,
    default: Target,
    scope: Sequence[str],
    always: Sequence[str],
    targets: Mapping[str, Target],
) -> _Unit:
    need = [n for n in scope if n in always or targets[n] != default]
    filters = dict((_filter_for(n, scope, targets), targets[n]) for n in need)
    ordered = sorted(filters.items(), key=lambda item: -len(item[0]))
    for name in scope:
        if _resolve(ordered, default, name) != targets[name]:  # pragma: no cover - guaranteed by _filter_for
            raise ConfigError(f"mergekit filters resolve tensor {name!r} to the wrong weights")
    return layer_range, default, ordered


def _plan(problem: MergeProblem, x: Tensor, layer_pattern: str) -> list[_Unit]:
    """Units of the config: one for the whole model, or one per run of layers sharing a group."""
    tv, space = problem.merger.task_vectors, problem.space
    per_group = space.group_coefficients(x)
    group_of = {t: g for g, group in enumerate(space.groups) for t in group.tensors}
    merged = set(tv.merged_names)
    targets: dict[str, Target] = {
        name: tuple(float(v) for v in per_group[group_of[name]]) if name in merged else None
        for name, tensor in tv.base.items()
        if tensor.is_floating_point()
    }
    names = list(targets)
    if len(space.groups) == 1:
        return [_unit(None, tuple(float(v) for v in per_group[0]), names, (), targets)]
    layout = LayerLayout.from_names(names, layer_pattern)
    pattern = re.compile(layer_pattern)
    prefixes = {n[: pattern.search(n).start(1)] for layer in layout.layers for n in layer}  # type: ignore[union-attr]
    if len(prefixes) > 1:
        raise ConfigError(
            f"{space.granularity} granularity over several layer stacks {sorted(prefixes)} needs mergekit's "
            "modules syntax, which bambo does not write; export model granularity or safetensors"
        )
    runs: list[list[Any]] = []  # [start, stop, group index or None]
    for i, layer in enumerate(layout.layers):
        merged = [group_of[n] for n in layer if n in tv.vectors]
        g = Counter(merged).most_common(1)[0][0] if merged else None
        if runs and runs[-1][2] == g:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, g])
    groups = [g for *_, g in runs if g is not None]
    if len(set(groups)) != len(groups):
        raise ConfigError(f"a group of the space spans non-contiguous layers: {[space.groups[g].name for g in groups]}")
    outer = list(layout.embed + layout.head)
    units = []
    for k, (start, stop, g) in enumerate(runs):
        default = tuple(float(v) for v in per_group[g]) if g is not None else None
        scope = [n for i in range(start, stop) for n in layout.layers[i]]
        edge = outer if k in (0, len(runs) - 1) else []
        units.append(_unit((start, stop), default, scope + edge, edge, targets))
    return units


def _check_targets(mk_name: str, normalize: bool, units: list[_Unit]) -> None:
    for t in [t for _, default, filters in units for t in [default, *(t for _, t in filters)]]:
        if t is None and mk_name in ("linear", "slerp"):
            raise ConfigError(f"tensors copied from the base (frozen) cannot be expressed with mergekit's {mk_name}")
        if t is not None and mk_name == "linear" and (min(t) < 0.0 or sum(t) <= 0.0):
            raise ConfigError(f"mergekit's linear needs non-negative weights with a positive sum, got {list(t)}")
        if t is not None and normalize and min(t) < 0.0:
            raise ConfigError(f"mergekit's {mk_name} normalises by signed weights, bambo by |c|; got {list(t)}")


def _model_ref(path: str | Path) -> Any:
    text = str(path)
    if Path(text).exists():
        text = str(Path(text).resolve())
    return {"model": {"path": text}} if ("+" in text or "@" in text) else text


def _setting(unit: _Unit, value: Callable[[Target], float]) -> Any:
    _, default, filters = unit
    if not filters:
        return value(default)
    return [{"filter": s, "value": value(t)} for s, t in filters] + [{"value": value(default)}]


def mergekit_config(
    problem: MergeProblem,
    x: Tensor,
    model_paths: Sequence[str | Path],
    dtype: str = "float32",
    layer_pattern: str = DEFAULT_LAYER_PATTERN,
) -> dict[str, Any]:
    """A mergekit configuration (a dict for ``MergeConfiguration``) describing ``problem.merge(x)``.

    Args:
        problem: The merge problem (its merger's method and its space).
        x: The chosen decision vector, shape ``(d,)``.
        model_paths: The base model's path followed by the experts' paths, in the
            merger's expert order (folders or hub ids; existing paths are made absolute).
        dtype: mergekit's computation dtype.
        layer_pattern: The regex the space's layer indices were parsed with.

    Returns:
        The configuration as plain dicts, lists and scalars (ready for ``yaml.safe_dump``).

    Raises:
        ConfigError: Wrong number of or duplicate paths, or a method, option or
            coefficient mergekit cannot express (the message names it).
    """
    tv = problem.merger.task_vectors
    method = problem.merger.method
    if len(model_paths) != tv.n_experts + 1:
        raise ConfigError(f"model_paths needs the base and {tv.n_experts} experts, got {len(model_paths)} paths")
    refs = [_model_ref(p) for p in model_paths]
    if len({str(r) for r in refs}) != len(refs):
        raise ConfigError(f"model_paths must be distinct for mergekit, got {[str(p) for p in model_paths]}")
    mk_name, params, seed = _mergekit_method(method)
    units = _plan(problem, x, layer_pattern)
    _check_targets(mk_name, bool(params.get("normalize")), units)
    if mk_name == "slerp":  # t = 0 is expert 0, which mergekit calls the base
        inputs: list[tuple[Any, int | None]] = [(refs[1], None), (refs[2], None)]
        base: Any = refs[1]
    elif mk_name == "linear":
        inputs, base = [(refs[j + 1], j) for j in range(tv.n_experts)], None
    else:
        inputs, base = [(refs[0], None)] + [(refs[j + 1], j) for j in range(tv.n_experts)], refs[0]

    def source(unit: _Unit, ref: Any, j: int | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"model": ref}
        if unit[0] is not None:
            entry["layer_range"] = list(unit[0])
        if j is not None:
            entry["parameters"] = {"weight": _setting(unit, lambda t, j=j: 0.0 if t is None else t[j])}
        return entry

    config: dict[str, Any] = {"merge_method": mk_name}
    if base is not None:
        config["base_model"] = base
    config["dtype"] = dtype
    if mk_name == "slerp" and units[0][0] is None:
        params["t"] = _setting(units[0], lambda t: t[0])  # type: ignore[index]
    if params:
        config["parameters"] = params
    if seed is not None:
        config["random_seed"] = seed
    if units[0][0] is None:
        config["models"] = [source(units[0], ref, j) for ref, j in inputs]
    else:
        config["slices"] = []
        for unit in units:
            out_slice: dict[str, Any] = {"sources": [source(unit, ref, j) for ref, j in inputs]}
            if mk_name == "slerp":
                out_slice["parameters"] = {"t": _setting(unit, lambda t: t[0])}  # type: ignore[index]
            config["slices"].append(out_slice)
    return config


def write_mergekit_yaml(
    problem: MergeProblem,
    x: Tensor,
    model_paths: Sequence[str | Path],
    path: str | Path,
    dtype: str = "float32",
    layer_pattern: str = DEFAULT_LAYER_PATTERN,
) -> Path:
    """Write :func:`mergekit_config` as YAML, with a header comment on how to run it.

    Args:
        problem: The merge problem.
        x: The chosen decision vector.
        model_paths: The base's path followed by the experts' paths.
        path: Output ``.yml`` file.
        dtype: mergekit's computation dtype.
        layer_pattern: The regex the space's layer indices were parsed with.

    Returns:
        The written path.
    """
    config = mergekit_config(problem, x, model_paths, dtype, layer_pattern)
    seed = config.get("random_seed")
    lines = [
        f"# bambo export: {problem.merger.method.name} over experts {problem.merger.task_vectors.expert_names}, "
        f"{problem.space.granularity} granularity ({len(problem.space.groups)} groups)",
        "# run: mergekit-yaml THIS_FILE OUT_DIR" + (f" --random-seed {seed}" if seed is not None else ""),
    ]
    lines += [f"# note: {note}" for note in mergekit_notes(problem.merger.method)]
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n" + yaml.dump(config, Dumper=_Dumper, sort_keys=False))
    return path


def validate_with_mergekit(config: Mapping[str, Any]) -> Any:
    """Parse a configuration with mergekit's own ``MergeConfiguration`` and check its parameter names.

    Args:
        config: A configuration dict (e.g. from :func:`mergekit_config` or ``yaml.safe_load``).

    Returns:
        The parsed ``mergekit.config.MergeConfiguration``.

    Raises:
        ConfigError: mergekit is not importable, rejects the configuration, does
            not know the merge method, or the method has no parameter of a used name.
    """
    try:
        from mergekit.config import MergeConfiguration
    except ImportError as exc:
        raise ConfigError(f"mergekit is not importable ({exc}); install mergekit>=0.1.4 to validate") from None
    try:
        parsed = MergeConfiguration.model_validate(dict(config))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"mergekit rejects the configuration: {exc}") from None
    try:
        from mergekit import merge_methods

        mk_method = merge_methods.get(parsed.merge_method)
    except ImportError:  # pragma: no cover - the method registry needs more of mergekit's dependencies
        return parsed
    except RuntimeError as exc:
        raise ConfigError(f"mergekit: {exc}") from None
    spec = getattr(mk_method, "spec", None)
    if spec is not None:  # mergekit >= 0.1.5
        known = {p.name for p in spec.parameters}
    else:
        known = {p.name for p in [*mk_method.parameters(), *mk_method.tensor_parameters()]}
    used = set(parsed.parameters or {})
    for entry in [*(parsed.models or []), *(s for out in parsed.slices or [] for s in [out, *out.sources])]:
        used |= set(entry.parameters or {})
    if used - known:
        raise ConfigError(f"mergekit's {parsed.merge_method} has no parameters {sorted(used - known)}")
    return parsed
