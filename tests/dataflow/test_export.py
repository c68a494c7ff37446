"""Exported layer paths reload with plain transformers; the passthrough configuration has one slice per run."""

import pytest
import torch
import yaml

from bambo.dataflow import LayerPath, build_path_model
from bambo.dataflow.export import export_path, mergekit_passthrough
from bambo.errors import ConfigError
from tests.dataflow.test_build import tiny_llama


def test_an_exported_path_reloads_and_reproduces_its_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    sources = {"a": tiny_llama(0), "b": tiny_llama(1)}
    path = LayerPath.of([("a", 0), ("b", 1), ("b", 1), ("a", 2), ("b", 0)])
    out = export_path(path, sources, tmp_path / "path")
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
    assert reloaded.config.num_hidden_layers == 5 and sources["a"].config.num_hidden_layers == 3
    ids = torch.randint(3, 40, (2, 6))
    with torch.no_grad():
        expected = build_path_model(path, sources)(ids).logits
        assert (reloaded(ids).logits - expected).abs().max() <= 1e-5


def test_a_scaled_path_is_refused_with_the_reason(tmp_path):
    sources = {"a": tiny_llama(0)}
    path = LayerPath.of([("a", 0), ("a", 1, 0.8), ("a", 2)])
    with pytest.raises(ConfigError, match=r"hop 1 \(a:1\) scales its input by 0.8"):
        export_path(path, sources, tmp_path / "out")
    with pytest.raises(ConfigError, match="passthrough"):
        mergekit_passthrough(path, {"a": "models/a"})
    assert not (tmp_path / "out").exists()


def test_passthrough_slices_runs_of_consecutive_layers():
    path = LayerPath.of([("a", 0), ("a", 1), ("b", 1), ("b", 2), ("b", 2), ("a", 3)])
    config = mergekit_passthrough(path, {"a": "models/a", "b": "models/b"})
    assert config["merge_method"] == "passthrough"
    assert [s["sources"][0]["layer_range"] for s in config["slices"]] == [[0, 2], [1, 3], [2, 3], [3, 4]]
    assert [s["sources"][0]["model"] for s in config["slices"]] == ["models/a", "models/b", "models/b", "models/a"]
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    with pytest.raises(ConfigError, match="no model path for source"):
        mergekit_passthrough(path, {"a": "models/a"})
    mergekit = pytest.importorskip("mergekit.config", reason="mergekit is an optional extra, not installed")
    mergekit.MergeConfiguration.model_validate(config)
