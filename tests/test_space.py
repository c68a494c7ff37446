"""Decision vector -> per-tensor coefficients, and layer parsing on real HF-style names."""

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from bambo.errors import BoundsError, ConfigError, UnknownNameError
from bambo.space import LayerLayout, MergeSpace, parse_layer_index, uniform_partition


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("encoder.layer.3.attention.self.query.weight", 3),  # BERT / MiniLM
        ("transformer.h.11.mlp.c_fc.weight", 11),  # GPT-2
        ("model.layers.0.self_attn.q_proj.weight", 0),  # Llama / Mistral / Qwen
        ("blocks.5.attn.qkv.weight", 5),  # timm ViT
        ("encoder.block.2.layer.0.SelfAttention.q.weight", 2),  # T5: leftmost wins
        ("vision_model.encoder.layers.10.mlp.fc1.weight", 10),  # CLIP
        ("embeddings.word_embeddings.weight", None),
        ("lm_head.weight", None),
        ("transformer.ln_f.weight", None),
        ("model.layers_norm.weight", None),
    ],
)
def test_parse_layer_index(name, index):
    assert parse_layer_index(name) == index


def tiny(model_cls, config):
    torch.manual_seed(0)
    return list(model_cls(config).state_dict())


@pytest.mark.parametrize(
    ("names", "n_layers", "embed_hint", "head_hint"),
    [
        (
            lambda: tiny(
                BertModel,
                BertConfig(
                    hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, vocab_size=50
                ),
            ),
            3,
            "embeddings.word_embeddings.weight",
            "pooler.dense.weight",
        ),
        (
            lambda: tiny(GPT2Model, GPT2Config(n_embd=16, n_layer=4, n_head=2, vocab_size=50)),
            4,
            "wte.weight",
            "ln_f.weight",
        ),
        (
            lambda: tiny(
                LlamaForCausalLM,
                LlamaConfig(
                    hidden_size=16,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    num_key_value_heads=2,
                    intermediate_size=32,
                    vocab_size=50,
                ),
            ),
            2,
            "model.embed_tokens.weight",
            "lm_head.weight",
        ),
        (
            lambda: tiny(
                GPTNeoXForCausalLM,
                GPTNeoXConfig(
                    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50
                ),
            ),
            2,
            "gpt_neox.embed_in.weight",
            "gpt_neox.final_layer_norm.weight",
        ),
        (
            lambda: tiny(
                PhiForCausalLM,
                PhiConfig(
                    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50
                ),
            ),
            2,
            "model.embed_tokens.weight",
            "model.final_layernorm.weight",
        ),
        (
            lambda: tiny(
                T5ForConditionalGeneration,
                T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=3, num_heads=2, vocab_size=50),
            ),
            5,
            "shared.weight",
            "decoder.final_layer_norm.weight",
        ),
    ],
)
@pytest.mark.parametrize("order", ["module", "sorted"])
def test_layout_of_real_transformers_state_dicts(names, n_layers, embed_hint, head_hint, order):
    names = names()
    if order == "sorted":  # safetensors files store keys sorted
        names = sorted(names)
    layout = LayerLayout.from_names(names)
    assert layout.n_layers == n_layers
    assert embed_hint in layout.embed
    assert head_hint in layout.head
    assert sum(map(len, layout.layers)) + len(layout.embed) + len(layout.head) == len(names)
    for layer in layout.layers:  # each layer is one index of one stack
        assert len({(n[: n.index(f".{parse_layer_index(n)}.")], parse_layer_index(n)) for n in layer}) == 1
    if "decoder.final_layer_norm.weight" in names:  # T5: encoder layers first, then decoder layers
        assert layout.layers[0][0].startswith("encoder.") and layout.layers[-1][0].startswith("decoder.")


NAMES = [
    "emb.weight",
    "layers.0.w",
    "layers.0.b",
    "layers.1.w",
    "layers.2.w",
    "layers.3.w",
    "norm.weight",
    "head.weight",
]


def test_model_granularity():
    space = MergeSpace.model_wise(NAMES, 2, coefficient_labels=["a", "b"])
    assert space.dim == 2 and space.parameter_names == ["model/a", "model/b"]
    coeffs = space.to_coefficients(torch.tensor([0.2, 0.7], dtype=torch.float64))
    assert set(coeffs) == set(NAMES)
    assert all(torch.equal(c, torch.tensor([0.2, 0.7], dtype=torch.float64)) for c in coeffs.values())


def test_layer_granularity_with_embed_and_head_groups():
    space = MergeSpace.layer_wise(NAMES, 2)
    assert [g.name for g in space.groups] == ["embed", "layer.0", "layer.1", "layer.2", "layer.3", "head"]
    assert space.dim == 12
    x = torch.arange(12, dtype=torch.float64) / 12
    coeffs = space.to_coefficients(x)
    torch.testing.assert_close(coeffs["emb.weight"], x[0:2])
    torch.testing.assert_close(coeffs["layers.0.b"], x[2:4])
    torch.testing.assert_close(coeffs["layers.3.w"], x[8:10])
    torch.testing.assert_close(coeffs["norm.weight"], x[10:12])
    torch.testing.assert_close(coeffs["head.weight"], x[10:12])


def test_block_granularity_from_a_partition():
    space = MergeSpace.block_wise(NAMES, [range(0, 1), range(1, 4)], 2)
    assert [g.name for g in space.groups] == ["embed", "block.0[0-0]", "block.1[1-3]", "head"]
    x = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], dtype=torch.float64)
    coeffs = space.to_coefficients(x)
    torch.testing.assert_close(coeffs["layers.0.w"], x[2:4])
    for name in ("layers.1.w", "layers.2.w", "layers.3.w"):
        torch.testing.assert_close(coeffs[name], x[4:6])
    uniform = MergeSpace.block_wise(NAMES, 2, 3)
    assert [len(g.tensors) for g in uniform.groups] == [1, 3, 2, 2]
    assert uniform.dim == 4 * 3


def test_uniform_partition_is_contiguous_and_balanced():
    blocks = uniform_partition(10, 4)
    assert [list(b) for b in blocks] == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    with pytest.raises(ConfigError, match="n_blocks=5, n_layers=4"):
        uniform_partition(4, 5)


def test_bad_partitions_are_rejected():
    with pytest.raises(ConfigError, match="once each"):
        MergeSpace.block_wise(NAMES, [range(0, 2), range(1, 4)], 2)
    with pytest.raises(ConfigError, match="once each"):
        MergeSpace.block_wise(NAMES, [range(0, 2)], 2)


def test_custom_layer_pattern_and_missing_layers():
    names = ["stem.w", "stage_0.conv.w", "stage_1.conv.w", "fc.w"]
    space = MergeSpace.layer_wise(names, 1, layer_pattern=r"stage_(\d+)\.")
    assert [g.name for g in space.groups] == ["embed", "layer.0", "layer.1", "head"]
    with pytest.raises(ConfigError, match="no layer index found"):
        MergeSpace.layer_wise(names, 1)


def test_bounds_default_configurable_and_enforced():
    space = MergeSpace.model_wise(NAMES, 2)
    torch.testing.assert_close(space.bounds, torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    wide = MergeSpace.model_wise(NAMES, 2, bounds=(-0.5, 1.5))
    wide.to_coefficients(torch.tensor([-0.5, 1.5]))
    with pytest.raises(BoundsError, match=r"'model/1' = 1.2 is outside \[0, 1\]"):
        space.to_coefficients(torch.tensor([0.5, 1.2]))
    with pytest.raises(BoundsError, match=r"shape \(3,\)"):
        space.to_coefficients(torch.zeros(3))
    with pytest.raises(BoundsError, match="not finite"):
        space.to_coefficients(torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ConfigError, match="lower >= upper"):
        MergeSpace.model_wise(NAMES, 2, bounds=(1.0, 1.0))
    per_var = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    assert torch.equal(MergeSpace.model_wise(NAMES, 2, bounds=per_var).bounds, per_var.double())


def test_state_dict_input_skips_integer_tensors():
    sd = {"layers.0.w": torch.zeros(2), "layers.0.ids": torch.zeros(2, dtype=torch.long)}
    space = MergeSpace.layer_wise(sd, 1)
    assert [t for g in space.groups for t in g.tensors] == ["layers.0.w"]


def test_broadcasting_model_coefficients_into_a_fine_space():
    space = MergeSpace.layer_wise(NAMES, 2)
    x = space.from_group_coefficients(torch.tensor([0.3, 0.8]))
    assert x.shape == (space.dim,)
    assert all(
        torch.allclose(c, torch.tensor([0.3, 0.8], dtype=torch.float64)) for c in space.to_coefficients(x).values()
    )


def test_bad_layer_patterns_bounds_and_partitions():
    with pytest.raises(ConfigError, match="needs a capture group"):
        MergeSpace.layer_wise(NAMES, 1, layer_pattern=r"layers\.\d+\.")
    with pytest.raises(ConfigError, match="not a valid regex"):
        MergeSpace.layer_wise(NAMES, 1, layer_pattern=r"layers\.(\d+")
    with pytest.raises(ConfigError, match=r"bounds must be \(lower, upper\)"):
        MergeSpace.model_wise(NAMES, 2, bounds=(0.0, 0.5, 1.0))
    assert MergeSpace.block_wise(NAMES, np.int64(2), 1).dim == 4
    with pytest.raises(ConfigError, match="n_coefficients is required"):
        MergeSpace.model_wise(NAMES)


def test_older_checkpoint_head_names_sorted_first():
    # Pythia checkpoints store the output head as embed_out, which sorts before the layers
    names = sorted(
        ["gpt_neox.embed_in.weight", "embed_out.weight", "gpt_neox.layers.0.mlp.w", "gpt_neox.layers.1.mlp.w"]
    )
    layout = LayerLayout.from_names(names)
    assert layout.embed == ("gpt_neox.embed_in.weight",) and layout.head == ("embed_out.weight",)


def test_granularity_by_name():
    assert MergeSpace.for_granularity(NAMES, "model", 2).dim == 2
    assert MergeSpace.for_granularity(NAMES, "layer", 2).dim == 2 * 6
    assert MergeSpace.for_granularity(NAMES, "block", 2, blocks=2).dim == 2 * 4
    with pytest.raises(UnknownNameError, match="valid names: block, layer, model"):
        MergeSpace.for_granularity(NAMES, "tensor", 2)


def test_blocks_map_layers_by_parsed_index_not_by_prefix():
    """BAMBO's successor code matched ``layers.1`` against ``layers.10``-``layers.19``; here L = 24."""
    names = ["embed_tokens.weight"] + [f"model.layers.{i}.mlp.weight" for i in range(24)] + ["lm_head.weight"]
    space = MergeSpace.block_wise(names, [range(0, 1), range(1, 2), range(2, 10), range(10, 20), range(20, 24)], 1)
    groups = {g.name: g.tensors for g in space.groups}
    block1 = next(tensors for name, tensors in groups.items() if name.startswith("block.1"))
    assert block1 == ("model.layers.1.mlp.weight",)
    block3 = next(tensors for name, tensors in groups.items() if name.startswith("block.3"))
    assert block3 == tuple(f"model.layers.{i}.mlp.weight" for i in range(10, 20))
    x = torch.arange(space.dim, dtype=torch.float64) / 10
    coefficients = space.to_coefficients(x)
    assert float(coefficients["model.layers.1.mlp.weight"]) == float(x[2])  # embed is group 0, block.0 group 1
    assert float(coefficients["model.layers.12.mlp.weight"]) == float(x[4])
