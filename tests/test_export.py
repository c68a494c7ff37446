"""Export: safetensors and Hugging Face folders, and mergekit YAML that describes bambo's merge."""

import os
import re
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import yaml

from bambo.errors import ConfigError
from bambo.export import export_merge, save_hf_folder, save_safetensors
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.merge_problem import MergeProblem
from bambo.mergekit_config import mergekit_config, validate_with_mergekit, write_mergekit_yaml
from bambo.problem import Objective
from bambo.space import MergeSpace
from bambo.weights import load_state_dict

L = 12
PATHS = ["/models/base", "/models/math", "/models/code"]
LAYER = re.compile(r"layers\.(\d+)\.")


def llama_like(seed):
    """A Llama-named state dict with L layers and tiny tensors."""
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(8, 4, generator=g)}
    for i in range(L):
        sd[f"model.layers.{i}.input_layernorm.weight"] = torch.randn(4, generator=g)
        sd[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(4, 4, generator=g)
    sd["model.norm.weight"] = torch.randn(4, generator=g)
    sd["lm_head.weight"] = torch.randn(8, 4, generator=g)
    return sd


def make_problem(method="task_arithmetic", granularity="block", states=None, **options):
    base, *experts = states if states is not None else [llama_like(s) for s in range(3)]
    tv = TaskVectors(base, experts, expert_names=["math", "code"])
    merger = Merger(tv, get_merge_method(method, **options))
    space = MergeSpace.for_granularity(tv, granularity, n_coefficients=merger.n_coefficients, blocks=4)
    problem = MergeProblem(merger, space, lambda sd: {"a": 0.0}, [Objective(name="a")])
    x = torch.rand(space.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) * 0.9 + 0.05
    return problem, x, base, experts


def resolve(setting, name):
    """mergekit's rule, re-implemented: a scalar, or the first entry whose filter is in the name."""
    if not isinstance(setting, list):
        return setting
    return next(e["value"] for e in setting if e.get("filter") is None or e["filter"] in name)


def weights_for(config, name):
    """Per-expert weights of one tensor: its slice by layer index, first/last slice outside the layers."""
    if "models" in config:
        sources = config["models"]
    else:
        match = LAYER.search(name)
        if match is None:
            out_slice = config["slices"][0 if "embed" in name else -1]
        else:
            i = int(match.group(1))
            out_slice = next(
                s
                for s in config["slices"]
                if s["sources"][0]["layer_range"][0] <= i < s["sources"][0]["layer_range"][1]
            )
        sources = out_slice["sources"]
    return [resolve(s["parameters"]["weight"], name) for s in sources[1:]]


def merge_as_described(config, base, experts):
    """Independent re-implementation of the merge the config describes (task arithmetic, TIES with density 1)."""
    merged = {}
    params = config.get("parameters", {})
    for name, b in base.items():
        w = torch.tensor(weights_for(config, name))
        deltas = torch.stack([e[name] - b for e in experts]) * w.view(-1, *[1] * b.dim())
        if config["merge_method"] == "task_arithmetic":
            merged[name] = b + deltas.sum(0)
            continue
        assert config["merge_method"] == "ties" and params["density"] == 1.0
        majority = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
        mask = (deltas.sign() == majority).to(b.dtype)
        mixed = (deltas * mask).sum(0)
        if params["normalize"]:
            divisor = (w.view(-1, *[1] * b.dim()) * mask).sum(0)
            mixed = mixed / torch.where(divisor == 0, torch.ones_like(divisor), divisor)
        merged[name] = b + mixed
    return merged


def import_mergekit():
    """Import mergekit's config module, installed or from ``$BAMBO_MERGEKIT_PATH``.

    mergekit (LGPL) is not a dependency. To run these tests without letting pip touch the
    pinned torch: ``pip install --no-deps --target DIR mergekit immutables peft accelerate``
    and set ``BAMBO_MERGEKIT_PATH=DIR``.
    """
    try:
        import mergekit.config  # noqa: F401
    except ImportError:
        extra = os.environ.get("BAMBO_MERGEKIT_PATH")
        if extra and Path(extra).is_dir() and extra not in sys.path:
            sys.path.append(extra)
        try:
            import mergekit.config  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"mergekit is not importable here: {exc}")


# -- safetensors / HF ------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_tensors_and_dtypes(tmp_path):
    shared = torch.randn(6, 4)
    sd = {
        "a": torch.randn(3, 5, dtype=torch.float64),
        "half": torch.randn(4).to(torch.float16),
        "bf16": torch.randn(2, 2).to(torch.bfloat16),
        "ids": torch.arange(7),
        "tied.0": shared,
        "tied.1": shared,  # same storage: safetensors refuses that unless copied
        "view": shared[2:4],  # part of a larger storage
        "transposed": torch.randn(3, 4).t(),
    }
    path = save_safetensors(sd, tmp_path / "sub" / "m.safetensors", metadata={"preference": "0.7,0.3"})
    loaded = load_state_dict(path)
    assert sorted(loaded) == sorted(sd)
    for key, value in sd.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "preference": "0.7,0.3"}


def test_hf_folder_reloads_with_transformers(tmp_path):
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    BertModel(config).save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    merged = {k: v * 2 if v.is_floating_point() else v for k, v in load_state_dict(tmp_path / "base").items()}
    out = save_hf_folder(merged, tmp_path / "base", tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    reloaded = AutoModel.from_pretrained(out, use_safetensors=True).state_dict()
    for key, value in merged.items():
        assert torch.equal(reloaded[key], value), key
    # a config object instead of a folder, and the guards
    save_hf_folder(merged, config, tmp_path / "from_config")
    assert AutoModel.from_pretrained(tmp_path / "from_config").config.hidden_size == 32
    with pytest.raises(ConfigError, match="base model's folder"):
        save_hf_folder(merged, tmp_path / "base", tmp_path / "base")
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        save_hf_folder(merged, tmp_path / "bare", tmp_path / "x")
    with pytest.raises(ConfigError, match="does not exist"):
        save_hf_folder(merged, tmp_path / "missing", tmp_path / "x")


# -- mergekit YAML ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options",
    [
        ("task_arithmetic", {}),
        ("ties", {"density": 1.0, "normalize": "weights"}),
        ("ties", {"density": 1.0, "normalize": "none"}),
    ],
)
@pytest.mark.parametrize("granularity", ["model", "block", "layer"])
def test_mergekit_yaml_describes_bambos_merge(tmp_path, method, options, granularity):
    problem, x, base, experts = make_problem(method, granularity, **options)
    config = yaml.safe_load(write_mergekit_yaml(problem, x, PATHS, tmp_path / "m.yml").read_text())
    assert config["merge_method"] == method and config["base_model"] == PATHS[0]
    coefficients = problem.space.group_coefficients(x).tolist()
    if granularity == "model":
        assert [m["model"] for m in config["models"]] == PATHS
        assert [m["parameters"]["weight"] for m in config["models"][1:]] == coefficients[0]
    else:
        ranges = [s["sources"][0]["layer_range"] for s in config["slices"]]
        assert [r for s in config["slices"] for r in (src["layer_range"] for src in s["sources"])] == [
            r for r in ranges for _ in PATHS
        ]
        assert ranges[0][0] == 0 and ranges[-1][1] == L and all(a[1] == b[0] for a, b in pairwise(ranges))
        groups = [g.name for g in problem.space.groups]
        blocks = [g for g in groups if g not in ("embed", "head")]
        assert len(ranges) == len(blocks)  # one slice per block / layer
        for out_slice, block in zip(config["slices"], blocks, strict=True):
            default = [resolve(s["parameters"]["weight"], "model.layers.x.y") for s in out_slice["sources"][1:]]
            assert default == coefficients[groups.index(block)]
        for edge in (config["slices"][0], config["slices"][-1]):
            filters = {e["filter"]: e["value"] for e in edge["sources"][1]["parameters"]["weight"] if "filter" in e}
            assert filters["embed_tokens.weight"] == coefficients[groups.index("embed")][0]
            assert filters["model.norm.weight"] == filters["lm_head.weight"] == coefficients[groups.index("head")][0]
    expected = problem.merge(x)
    for key, value in merge_as_described(config, base, experts).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_method_mapping():
    problem, x, *_ = make_problem("dare_linear", drop_rate=0.9, seed=5)
    config = mergekit_config(problem, x, PATHS)
    assert config["parameters"] == {"density": 0.1, "rescale": True} and config["random_seed"] == 5
    problem, x, *_ = make_problem("dare_ties", "model", drop_rate=0.3, normalize="weights")
    assert mergekit_config(problem, x, PATHS)["parameters"] == {"density": 0.7, "normalize": True, "rescale": True}
    problem, x, *_ = make_problem("della", density=0.6, epsilon=0.2, normalize="none", seed=2)
    config = mergekit_config(problem, x, PATHS)
    assert config["parameters"] == {"density": 0.6, "epsilon": 0.2, "normalize": False, "rescale": True}
    assert config["random_seed"] == 2
    problem, x, *_ = make_problem("breadcrumbs", "model", density=0.8, gamma=0.05)
    assert mergekit_config(problem, x, PATHS)["parameters"] == {"density": 0.8, "gamma": 0.05}
    problem, x, *_ = make_problem("linear", "model")
    config = mergekit_config(problem, x, PATHS)
    assert "base_model" not in config and [m["model"] for m in config["models"]] == PATHS[1:]
    problem, x, *_ = make_problem("slerp", "block")
    config = mergekit_config(problem, x, PATHS)
    assert config["base_model"] == PATHS[1] and [s["model"] for s in config["slices"][1]["sources"]] == PATHS[1:]
    t = problem.space.group_coefficients(x)[:, 0].tolist()
    assert [s["parameters"]["t"] for s in config["slices"][1:-1]] == t[2:-2]


def test_yaml_header_says_how_to_run_it(tmp_path):
    problem, x, *_ = make_problem("dare_linear", drop_rate=0.5, seed=11)
    text = write_mergekit_yaml(problem, x, PATHS, tmp_path / "m.yml").read_text()
    assert "# run: mergekit-yaml THIS_FILE OUT_DIR --random-seed 11" in text and "# note: mergekit draws" in text
    assert "layer_range: [0, 3]" in text  # numbers in flow style, as mergekit writes them
    assert yaml.safe_load(text)["random_seed"] == 11


def test_validate_without_mergekit_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "mergekit.config", None)  # makes the import fail
    with pytest.raises(ConfigError, match="mergekit is not importable"):
        validate_with_mergekit({"merge_method": "ties"})


def test_frozen_tensors_get_zero_weights():
    base, *experts = [llama_like(s) for s in range(3)]
    tv = TaskVectors(base, experts, frozen=["model.layers.3.input_layernorm.weight"])
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    problem = MergeProblem(merger, MergeSpace.model_wise(tv), lambda sd: {"a": 0.0}, [Objective(name="a")])
    x = torch.tensor([0.4, 0.6], dtype=torch.float64)
    config = mergekit_config(problem, x, PATHS)
    expected = problem.merge(x)
    for key, value in merge_as_described(config, base, experts).items():
        torch.testing.assert_close(value, expected[key], msg=key)


def test_unsupported_combinations_raise():
    problem, x, *_ = make_problem("ties")  # normalize="count" by default
    with pytest.raises(ConfigError, match="normalize='count'"):
        mergekit_config(problem, x, PATHS)
    problem, x, *_ = make_problem("della", density=0.8, epsilon=0.2, normalize="none")
    with pytest.raises(ConfigError, match="density \\+ epsilon < 1"):
        mergekit_config(problem, x, PATHS)
    problem, x, *_ = make_problem("task_arithmetic")
    with pytest.raises(ConfigError, match="the base and 2 experts, got 2"):
        mergekit_config(problem, x, PATHS[:2])
    with pytest.raises(ConfigError, match="distinct"):
        mergekit_config(problem, x, [PATHS[0], PATHS[1], PATHS[1]])
    problem, _, *_ = make_problem("linear", "model")
    with pytest.raises(ConfigError, match="positive sum"):
        mergekit_config(problem, torch.zeros(2, dtype=torch.float64), PATHS)
    with pytest.raises(ConfigError, match="unknown export format"):
        export_merge(problem, x[:2], "out", fmt="gguf")


def test_export_merge_safetensors(tmp_path):
    problem, x, *_ = make_problem()
    path = export_merge(problem, x, tmp_path / "merged.safetensors")
    loaded, expected = load_state_dict(path), problem.merge(x)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_mergekit_parses_the_yaml(tmp_path):
    import_mergekit()
    for method, granularity, options in [
        ("task_arithmetic", "block", {}),
        ("ties", "layer", {"normalize": "weights"}),
        ("dare_ties", "block", {"normalize": "none"}),
        ("slerp", "block", {}),
        ("linear", "model", {}),
    ]:
        problem, x, *_ = make_problem(method, granularity, **options)
        config = yaml.safe_load(write_mergekit_yaml(problem, x, PATHS, tmp_path / "m.yml").read_text())
        parsed = validate_with_mergekit(config)
        assert parsed.merge_method == method
    with pytest.raises(ConfigError, match="no parameters \\['densty'\\]"):
        validate_with_mergekit({**config, "parameters": {"densty": 0.5}})


def test_mergekit_merges_the_yaml_to_bambos_weights(tmp_path):
    """mergekit's own merge of the exported YAML gives bambo's weights (tiny Llama, 12 layers)."""
    import_mergekit()
    try:
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError as exc:
        pytest.skip(f"mergekit's merge engine is not importable here: {exc}")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=L, num_attention_heads=2, vocab_size=64)
    paths = []
    for i in range(3):
        torch.manual_seed(i)
        LlamaForCausalLM(cfg).save_pretrained(tmp_path / f"m{i}")
        paths.append(tmp_path / f"m{i}")
    states = [dict(load_state_dict(p)) for p in paths]
    cases = [("task_arithmetic", "block", {}), ("ties", "layer", {"density": 0.5, "normalize": "weights"})]
    for method, granularity, options in cases:
        problem, x, *_ = make_problem(method, granularity, states=states, **options)
        written = write_mergekit_yaml(problem, x, paths, tmp_path / f"{method}.yml")
        config = validate_with_mergekit(yaml.safe_load(written.read_text()))
        run_merge(config, str(tmp_path / method), MergeOptions(copy_tokenizer=False, quiet=True))
        merged, expected = load_state_dict(tmp_path / method), problem.merge(x)
        assert set(merged) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(merged[key], value, rtol=1e-5, atol=1e-6, msg=key)
