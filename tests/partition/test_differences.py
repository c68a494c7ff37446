"""Layer differences (BAMBO Eq. 4): hand-computed values, streaming equivalence, errors."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bambo.errors import ModelMismatchError
from bambo.merge import TaskVectors
from bambo.partition import layer_differences, layer_differences_from_task_vectors
from bambo.weights import load_state_dict


def tiny():
    base = {
        "emb.weight": torch.zeros(3),
        "layers.0.w": torch.zeros(2),
        "layers.1.w": torch.ones(2),
        "head.w": torch.zeros(1),
    }
    e0 = {
        "emb.weight": torch.ones(3),
        "layers.0.w": torch.tensor([1.0, 0.0]),
        "layers.1.w": torch.tensor([1.0, 3.0]),
        "head.w": torch.ones(1),
    }
    e1 = {
        "emb.weight": torch.ones(3),
        "layers.0.w": torch.tensor([-1.0, 2.0]),
        "layers.1.w": torch.tensor([1.0, 1.0]),
        "head.w": torch.ones(1),
    }
    return base, [e0, e1]


def test_hand_computed_differences_and_norms():
    base, experts = tiny()
    diffs = layer_differences(base, experts, ["a", "b"])
    # layer 0: TVs [1, 0] and [-1, 2], mean [0, 1], deviations [1, -1] and [-1, 1]
    # layer 1: TVs [0, 2] and [0, 0], mean [0, 1], deviations [0, 1] and [0, -1]
    np.testing.assert_allclose(diffs.l1, [4.0, 2.0])
    np.testing.assert_allclose(diffs.l2, [2 * math.sqrt(2), 2.0])
    np.testing.assert_allclose(diffs.expert_l1, [[1.0, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(diffs.expert_l2, [[1.0, 2.0], [math.sqrt(5), 0.0]])
    assert diffs.expert_names == ("a", "b") and diffs.n_layers == 2


def test_streaming_from_files_and_task_vectors_agree(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {f"model.layers.{i}.w": torch.randn(5, 4, generator=g) for i in range(4)}
    base["lm_head.weight"] = torch.randn(3, 4, generator=g)
    experts = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(3)]
    for name, sd in [("base", base), ("e0", experts[0]), ("e1", experts[1]), ("e2", experts[2])]:
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
    in_memory = layer_differences(base, experts)
    lazy = layer_differences(
        load_state_dict(tmp_path / "base.safetensors"),
        [load_state_dict(tmp_path / f"e{i}.safetensors") for i in range(3)],
    )
    cached = layer_differences_from_task_vectors(TaskVectors(base, experts))
    for other in (lazy, cached):
        np.testing.assert_allclose(other.l1, in_memory.l1, rtol=1e-6)
        np.testing.assert_allclose(other.l2, in_memory.l2, rtol=1e-6)
        np.testing.assert_allclose(other.expert_l2, in_memory.expert_l2, rtol=1e-6)


def test_experts_with_other_layer_sets_are_rejected():
    base, experts = tiny()
    del experts[1]["layers.1.w"]
    with pytest.raises(ModelMismatchError, match=r"expert 'expert1' has other layer tensors.*missing \['layers.1.w'\]"):
        layer_differences(base, experts)
    base, experts = tiny()
    experts[0]["layers.2.w"] = torch.zeros(2)
    with pytest.raises(ModelMismatchError, match=r"extra \['layers.2.w'\]"):
        layer_differences(base, experts)
    base, experts = tiny()
    experts[0]["layers.0.w"] = torch.zeros(3)
    with pytest.raises(ModelMismatchError, match=r"'layers.0.w' has shape \(3,\) in expert 'expert0'"):
        layer_differences(base, experts)


def test_expert_heads_outside_the_layers_are_allowed_and_one_expert_is_refused():
    base, experts = tiny()
    experts[0]["classifier.weight"] = torch.ones(2)  # a fine-tuned task head of its own
    assert layer_differences(base, experts).n_layers == 2
    with pytest.raises(ModelMismatchError, match="at least two"):
        layer_differences(base, experts[:1])
