"""The fused weighted-sum kernels: PyTorch's arithmetic and rounding, entry for entry."""

from __future__ import annotations

import pytest
import torch

from bambo.merge.kernels import fusable, round_to_bf16, sum_models, sum_vectors


def _reference(models: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``base + sum_i w_i (e_i - base)`` by PyTorch float32 ops, one at a time in the kernels' order."""
    wide = models.float()
    acc = wide[0].clone()
    for i in range(1, wide.shape[0]):
        acc = acc + weights[i - 1] * (wide[i] - wide[0])
    return acc


def _models(n: int = 70_001, experts: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    models = torch.randn(experts + 1, n, generator=g) * torch.logspace(-4, 4, n)  # every exponent range
    models[1:, ::5] = models[0, ::5]  # zero task vectors
    models[-1, ::11] = -models[0, ::11]
    return models


def test_rounding_to_bf16_equals_torchs_on_every_kind_of_float32():
    g = torch.Generator().manual_seed(1)
    bits = torch.randint(-(2**31), 2**31 - 1, (2_000_000,), generator=g, dtype=torch.int64).to(torch.int32)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.3e38, -3.3e38, 1.00390625])
    for values in (bits.view(torch.float32), special):
        assert torch.equal(round_to_bf16(values).view(torch.int16), values.bfloat16().view(torch.int16))


@pytest.mark.parametrize("experts", [1, 4])
def test_sum_models_equals_torchs_arithmetic_in_float32_and_bf16(experts):
    models = _models(experts=experts)
    weights = torch.linspace(-0.5, 1.5, experts)
    out = torch.empty(models.shape[1])
    assert torch.equal(sum_models(models, weights, out), _reference(models, weights))
    half = models.bfloat16()
    out16 = torch.empty(models.shape[1], dtype=torch.bfloat16)
    assert torch.equal(sum_models(half, weights, out16), _reference(half, weights).bfloat16())  # rounded once


def test_sum_vectors_equals_sum_models_on_the_same_models():
    """The in-memory form (task vectors formed by torch) gives the streaming form's numbers."""
    models = _models(seed=2)
    weights = torch.tensor([0.3, -0.7, 1.1, 0.05])
    vectors = models[1:] - models[0]
    assert torch.equal(
        sum_vectors(models[0], vectors, weights, torch.empty(models.shape[1])),
        sum_models(models, weights, torch.empty(models.shape[1])),
    )


def test_column_slices_of_wider_buffers_are_read_right():
    wide = _models(n=1000).bfloat16()
    rows = wide[:, 100:350]  # rows not contiguous with each other, entries contiguous
    weights = torch.tensor([0.5, 0.25, 1.0, -1.0])
    out = torch.empty(250, dtype=torch.bfloat16)
    assert torch.equal(sum_models(rows, weights, out), _reference(rows.contiguous(), weights).bfloat16())


def test_the_kernels_refuse_what_they_do_not_take():
    assert not fusable(torch.empty(3, dtype=torch.float16)) and not fusable(torch.empty(4, 4).t())
    with pytest.raises(TypeError, match="float16"):
        sum_models(torch.zeros(2, 3, dtype=torch.float16), torch.ones(1), torch.empty(3, dtype=torch.float16))
    with pytest.raises(TypeError, match="bfloat16 -> torch.float32"):
        sum_models(torch.zeros(2, 3, dtype=torch.bfloat16), torch.ones(1), torch.empty(3))


@pytest.mark.parametrize("normalize", ["count", "weights", "none"])
def test_the_sign_consensus_kernel_equals_torchs_chunked_ops(normalize):
    import bambo.merge.ops as ops

    g = torch.Generator().manual_seed(3)
    n = 50_003
    vectors = torch.randn(4, n, generator=g) * torch.logspace(-3, 2, n)
    vectors[:, ::3] = 0.0
    vectors[1, ::7] = -vectors[0, ::7]  # ties between the sums: no sign elected
    base = torch.randn(n, generator=g)
    for c in (torch.tensor([0.7, -0.3, 0.0, 1.3]), torch.rand(4, generator=g)):
        expected = torch.empty(n)
        ops._sign_consensus_chunk(vectors, [(i, x) for i, x in enumerate(c.tolist()) if x != 0.0], normalize, expected)
        assert torch.equal(ops.sign_consensus(vectors, c, normalize, base=base), expected + base)


def test_a_cut_applied_in_place_keeps_what_the_masker_keeps():
    from bambo.merge.ops import CutMasker, magnitude_cut

    g = torch.Generator().manual_seed(4)
    vector = torch.randint(-4, 5, (10_000,), generator=g).float() / 4  # ties at every magnitude
    cut = magnitude_cut(vector, 0.3)
    masks, kept, n_kept = CutMasker(cut), CutMasker(cut), 0
    for start in range(0, vector.numel(), 777):  # chunks: the ties run out inside one of them
        chunk = vector[start : start + 777].clone()
        mask = masks(chunk)
        n_kept += int(mask.sum())
        kept.apply(chunk)
        assert torch.equal(chunk, vector[start : start + 777].masked_fill(~mask, 0.0))
    assert n_kept == 3000 and kept._ties_left == masks._ties_left == 0
