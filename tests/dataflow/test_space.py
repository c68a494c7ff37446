"""The data-flow space: slots, canonical vectors (one per path), pins, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bambo.dataflow import DataFlowSpace, Hop, LayerPath
from bambo.errors import BoundsError, ConfigError, InfeasibleError


def vector(space: DataFlowSpace, bits: list[int], scales: list[float]) -> torch.Tensor:
    return torch.tensor([float(b) for b in bits] + scales, dtype=torch.float64)


def test_slots_repeat_the_pool_of_every_source_and_pins_carry_no_bit():
    space = DataFlowSpace({"a": 3, "b": 3}, repeats=2, pin_last=True)
    assert space.n_slots == 12 and space.slots[:4] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert space.slots[6] == ("a", 0) and space.pinned == [0, 11]
    assert space.dim == 10 + 12 and space.discrete_dims == list(range(10))
    assert space.parameter_names[0] == "use/1:a:1" and space.parameter_names[10] == "scale/0:a:0"
    free = DataFlowSpace({"a": 2}, pin_first=False, pin_last=False)
    assert free.dim == 4 and free.pinned == []


def test_path_keeps_the_bits_in_slot_order_with_their_scales():
    space = DataFlowSpace({"a": 2, "b": 2}, repeats=1, pin_last=True)  # slots a:0 a:1 b:0 b:1, a:0 and b:1 pinned
    x = vector(space, [0, 1], [0.9, 1.2, 0.7, 1.1])
    assert space.path(x) == LayerPath.of([("a", 0, 0.9), ("b", 0, 0.7), ("b", 1, 1.1)])
    assert space.cost(x) == 3
    assert space.kept(x) == [True, False, True, True]


def test_equivalent_vectors_share_one_canonical_form():
    space = DataFlowSpace({"a": 2, "b": 2}, repeats=2, pin_last=True)  # 8 slots
    # b:0 kept in the first repetition, or the same layer in the second: the same path
    first = vector(space, [0, 0.9, 0, 0, 0, 0], [1.1, 0.6, 0.8, 0.5, 1.4, 0.7, 1.3, 1.0])
    second = vector(space, [0.2, 0, 0, 0, 0, 0.7], [1.1, 1.5, 1.2, 0.9, 1.4, 0.6, 0.8, 1.0])
    assert space.path(first) == space.path(second) == LayerPath.of([("a", 0, 1.1), ("b", 0, 0.8), ("b", 1, 1.0)])
    assert torch.equal(space.canonical(first), space.canonical(second))
    assert torch.equal(space.canonical(torch.stack([first, second])), space.canonical(first).expand(2, -1))
    assert not torch.equal(space.canonical(first), space.canonical(vector(space, [0, 1, 0, 0, 0, 0], [1.1] * 8)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.booleans(), st.booleans(), st.integers(0, 2**31))
def test_canonical_is_idempotent_and_builds_the_same_path(n_sources, layers, repeats, first, last, seed):
    space = DataFlowSpace({f"s{i}": layers for i in range(n_sources)}, repeats, pin_first=first, pin_last=last)
    generator = torch.Generator().manual_seed(seed)
    X = space.bounds[0] + (space.bounds[1] - space.bounds[0]) * torch.rand(5, space.dim, generator=generator).double()
    C = space.canonical(X)
    assert torch.equal(space.canonical(C), C)
    for x, c in zip(X, C, strict=True):
        try:
            path = space.path(x)
        except InfeasibleError:
            assert not (first or last) and c[: len(space.free)].sum() == 0
            continue
        assert space.path(c) == path and torch.equal(space.encode(path), c)


def test_a_path_that_keeps_nothing_is_infeasible_not_a_crash():
    space = DataFlowSpace({"a": 2}, pin_first=False, pin_last=False)
    x = vector(space, [0, 0], [1.0, 1.0])
    with pytest.raises(InfeasibleError, match="keeps no slot"):
        space.path(x)
    assert torch.equal(space.canonical(x), x)


def test_encode_names_what_does_not_fit():
    space = DataFlowSpace({"a": 2, "b": 2}, repeats=1, pin_last=True)
    assert space.path(space.encode(LayerPath.of([("a", 0), ("b", 1, 1.2)]))).describe() == "a:0 b:1x1.2"
    with pytest.raises(ConfigError, match=r"hop 2 \(a:1\) has no slot left"):
        space.encode(LayerPath.of([("a", 0), ("b", 0), ("a", 1)]))
    with pytest.raises(ConfigError, match=r"does not run pinned slot 3 \(b:1\)"):
        space.encode(LayerPath.of([Hop("a", 0), Hop("a", 1)]))


def test_bad_spaces_and_vectors_are_named():
    with pytest.raises(ConfigError, match="same positive number of layers"):
        DataFlowSpace({"a": 2, "b": 3})
    with pytest.raises(ConfigError, match="contain 1"):
        DataFlowSpace({"a": 2}, scale_bounds=(1.1, 2.0))
    with pytest.raises(ConfigError, match="repeats"):
        DataFlowSpace({"a": 2}, repeats=0)
    space = DataFlowSpace({"a": 2, "b": 2}, pin_last=True)
    with pytest.raises(BoundsError, match=r"'scale/2:b:0' = 1.7 is outside \[0.5, 1.5\]"):
        space.path(vector(space, [1, 1], [1.0, 1.0, 1.7, 1.0]))
    with pytest.raises(BoundsError, match="shape"):
        space.path(torch.zeros(3))
    with pytest.raises(BoundsError, match="not finite"):
        space.path(vector(space, [1, 1], [1.0, float("nan"), 1.0, 1.0]))


def test_canonical_passes_gradients_to_kept_scales_only():
    space = DataFlowSpace({"a": 2, "b": 2}, repeats=2, pin_last=True)  # 8 slots, 6 bits
    # b:0 kept in the second repetition only: its scale (slot 6) moves to slot 2
    x = vector(space, [0, 0, 0, 0, 0, 0.8], [1.1, 0.6, 0.8, 0.5, 1.4, 0.7, 1.3, 0.9]).requires_grad_(True)
    c = space.canonical(x)
    assert torch.equal(c.detach(), vector(space, [0, 1, 0, 0, 0, 0], [1.1, 1.0, 1.3, 1.0, 1.0, 1.0, 1.0, 0.9]))
    weights = torch.arange(1.0, space.dim + 1, dtype=torch.float64)
    (c * weights).sum().backward()
    scale_grad = x.grad[len(space.free) :]
    # slot 0 -> 0, slot 6 -> 2, slot 7 -> 7 (pinned last); bits and dropped scales get nothing
    expected = torch.zeros(space.n_slots, dtype=torch.float64)
    expected[0], expected[6], expected[7] = weights[6], weights[6 + 2], weights[6 + 7]
    assert torch.equal(scale_grad, expected) and torch.equal(x.grad[: len(space.free)], torch.zeros(6).double())


def test_canonical_keeps_batch_shapes_and_names_bad_input():
    space = DataFlowSpace({"a": 2, "b": 2}, repeats=2, pin_last=True)
    X = space.bounds[0] + (space.bounds[1] - space.bounds[0]) * torch.rand(3, 5, space.dim, dtype=torch.float64)
    C = space.canonical(X)
    assert C.shape == X.shape and torch.equal(C[1, 2], space.canonical(X[1, 2]))
    with pytest.raises(BoundsError, match="finite"):
        space.canonical(torch.full((space.dim,), float("nan")))
