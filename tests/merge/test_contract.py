"""The contract every registered merge method satisfies, and the engine's bookkeeping."""

import pytest
import torch

from bambo.errors import BoundsError, ConfigError, ModelMismatchError, UnknownNameError
from bambo.merge import MERGE_METHODS, MergeMethod, Merger, TaskVectors, available_merge_methods, get_merge_method


def models(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    base = {
        "emb.weight": torch.randn(6, 4, generator=g, dtype=dtype),
        "layers.0.weight": torch.randn(4, 4, generator=g, dtype=dtype),
        "layers.0.bias": torch.randn(4, generator=g, dtype=dtype),
        "pos_ids": torch.arange(6),
        "bn.running_mean": torch.randn(4, generator=g, dtype=dtype),
        "logit_scale": torch.tensor(2.5, dtype=dtype),
    }
    experts = []
    for _ in range(2):
        e = {
            k: (v + 0.1 * torch.randn(v.shape, generator=g, dtype=dtype) if v.is_floating_point() else v.clone())
            for k, v in base.items()
        }
        experts.append(e)
    return base, experts


def coefficients(merger, value=0.6):
    return torch.full((merger.n_coefficients,), value, dtype=torch.float64)


@pytest.mark.parametrize("name", available_merge_methods())
class TestMergeMethodContract:
    def test_output_matches_base_structure_and_does_not_alias(self, name):
        base, experts = models()
        merger = Merger(TaskVectors(base, experts, frozen=["bn.running_mean"]), get_merge_method(name))
        out = merger.merge(coefficients(merger))
        assert list(out) == list(base)
        for key, tensor in base.items():
            assert out[key].shape == tensor.shape and out[key].dtype == tensor.dtype
            assert out[key].data_ptr() != tensor.data_ptr()
        assert torch.equal(out["pos_ids"], base["pos_ids"])
        assert torch.equal(out["bn.running_mean"], base["bn.running_mean"])
        assert not torch.equal(out["layers.0.weight"], base["layers.0.weight"])

    def test_deterministic_and_inputs_untouched(self, name):
        base, experts = models()
        snapshot = {k: v.clone() for k, v in base.items()}
        merger = Merger(TaskVectors(base, experts), get_merge_method(name))
        a = merger.merge(coefficients(merger))
        b = merger.merge(coefficients(merger))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(base[k], snapshot[k]) for k in base)

    def test_endpoint_reproduces_a_model(self, name):
        base, experts = models(torch.float64)
        merger = Merger(TaskVectors(base, experts), get_merge_method(name))
        if name == "slerp":
            target, c = experts[0], torch.tensor([0.0], dtype=torch.float64)
        else:
            target, c = base, torch.zeros(merger.n_coefficients, dtype=torch.float64)
        out = merger.merge(c)
        for key in base:
            torch.testing.assert_close(out[key], target[key])

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_merging_into_reused_buffers_gives_the_same_result(self, name, dtype):
        base, experts = models(dtype)
        merger = Merger(TaskVectors(base, experts), get_merge_method(name))
        buffers = merger.new_buffers()
        pointers = {k: v.data_ptr() for k, v in buffers.items()}
        for value in (0.3, 0.8):
            fresh = merger.merge(coefficients(merger, value))
            reused = merger.merge(coefficients(merger, value), out=buffers)
            for key in base:
                assert torch.equal(reused[key], fresh[key]), key
                assert reused[key].data_ptr() == pointers[key]

    def test_bfloat16_models(self, name):
        base, experts = models(torch.bfloat16)
        merger = Merger(TaskVectors(base, experts), get_merge_method(name))
        out = merger.merge(coefficients(merger))
        assert out["layers.0.weight"].dtype == torch.bfloat16
        assert torch.isfinite(out["layers.0.weight"].float()).all()


def test_registry_lists_every_method_and_rejects_unknown_names():
    assert set(available_merge_methods()) == {
        "task_arithmetic",
        "linear",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "della",
        "slerp",
    }
    assert all(issubclass(cls, MergeMethod) for cls in MERGE_METHODS.values())
    with pytest.raises(UnknownNameError, match="valid names: .*task_arithmetic"):
        get_merge_method("tie")


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match="density"):
        get_merge_method("ties", density=1.5)
    with pytest.raises(ConfigError, match="desnity"):
        get_merge_method("ties", desnity=0.5)
    with pytest.raises(ConfigError, match="epsilon"):
        get_merge_method("della", density=0.5, epsilon=0.6)


def test_slerp_needs_two_experts():
    base, experts = models()
    with pytest.raises(ConfigError, match="exactly 2"):
        Merger(TaskVectors(base, experts[:1]), get_merge_method("slerp"))


def test_key_mismatch_names_the_tensor():
    base, experts = models()
    del experts[1]["layers.0.bias"]
    with pytest.raises(ModelMismatchError, match=r"expert1.*missing tensors \['layers.0.bias'\]"):
        TaskVectors(base, experts)
    base, experts = models()
    experts[0]["extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelMismatchError, match="unexpected tensors.*extra.weight"):
        TaskVectors(base, experts)


def test_shape_mismatch_names_the_tensor():
    base, experts = models()
    experts[0]["layers.0.weight"] = torch.zeros(4, 5)
    with pytest.raises(ModelMismatchError, match=r"'layers.0.weight' has shape \(4, 5\) in expert 'expert0'"):
        TaskVectors(base, experts)


def test_task_vectors_are_computed_once_and_reused():
    base, experts = models(torch.float64)
    tv = TaskVectors(base, experts)
    torch.testing.assert_close(
        tv.vectors["layers.0.weight"][1], experts[1]["layers.0.weight"] - base["layers.0.weight"]
    )
    calls = []

    class Counting(type(get_merge_method("ties"))):
        def prepare(self, key, vectors):
            calls.append(key)
            return super().prepare(key, vectors)

    merger = Merger(tv, Counting())
    for value in (0.1, 0.5, 0.9):
        merger.merge(coefficients(merger, value))
    assert sorted(calls) == sorted(tv.merged_names)


def test_per_tensor_coefficients_and_their_errors():
    base, experts = models(torch.float64)
    tv = TaskVectors(base, experts)
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    per_tensor = {k: torch.tensor([float(i), 1.0]) for i, k in enumerate(tv.merged_names)}
    out = merger.merge(per_tensor)
    for i, key in enumerate(tv.merged_names):
        torch.testing.assert_close(out[key], base[key] + i * tv.vectors[key][0] + tv.vectors[key][1])
    del per_tensor["emb.weight"]
    with pytest.raises(BoundsError, match="emb.weight"):
        merger.merge(per_tensor)
    with pytest.raises(BoundsError, match=r"shape \(3,\)"):
        merger.merge(torch.ones(3))
    with pytest.raises(BoundsError, match="not finite"):
        merger.merge(torch.tensor([float("nan"), 1.0]))


def test_bad_output_buffers():
    base, experts = models()
    merger = Merger(TaskVectors(base, experts), get_merge_method("task_arithmetic"))
    buffers = merger.new_buffers()
    del buffers["emb.weight"]
    with pytest.raises(BoundsError, match="lack tensor 'emb.weight'"):
        merger.merge(coefficients(merger), out=buffers)
    buffers = merger.new_buffers()
    buffers["layers.0.weight"] = torch.zeros(4, 4, dtype=torch.float64)
    with pytest.raises(BoundsError, match="'layers.0.weight' must be contiguous with shape"):
        merger.merge(coefficients(merger), out=buffers)
