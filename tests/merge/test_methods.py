"""Each merge method against hand-computed results on small tensors."""

import math

import pytest
import torch

from bambo.merge import Merger, TaskVectors, get_merge_method

D = torch.float64


def merge(method, base, experts, c, **options):
    tv = TaskVectors({"w": torch.tensor(base, dtype=D)}, [{"w": torch.tensor(e, dtype=D)} for e in experts])
    return Merger(tv, get_merge_method(method, **options)).merge(torch.tensor(c, dtype=D))["w"]


def test_task_arithmetic_is_base_plus_weighted_task_vectors():
    out = merge("task_arithmetic", [1.0, 2.0, 3.0], [[2.0, 2.0, 1.0], [1.0, 5.0, 3.0]], [0.5, 2.0])
    # tau0 = [1, 0, -2], tau1 = [0, 3, 0]
    torch.testing.assert_close(out, torch.tensor([1.5, 8.0, 2.0], dtype=D))


def test_linear_is_normalised_weighted_average_and_zero_weights_give_base():
    out = merge("linear", [0.0, 0.0], [[2.0, 4.0], [6.0, 0.0]], [1.0, 3.0])
    torch.testing.assert_close(out, torch.tensor([5.0, 1.0], dtype=D))
    torch.testing.assert_close(
        merge("linear", [1.0, 1.0], [[2.0, 4.0], [6.0, 0.0]], [0.0, 0.0]), torch.tensor([1.0, 1.0], dtype=D)
    )


def test_ties_sign_election_and_disjoint_mean_without_trim():
    base = [0.0, 0.0, 0.0, 0.0]
    experts = [[3.0, -1.0, 2.0, 1.0], [-1.0, -2.0, 2.0, -1.0], [1.0, 4.0, -1.0, 0.0]]
    out = merge("ties", base, experts, [1.0, 1.0, 1.0], density=1.0)
    # entry 0: sum 3 > 0 -> agreeing {3, 1} -> mean 2
    # entry 1: sum 1 > 0 -> agreeing {4} -> 4
    # entry 2: sum 3 > 0 -> agreeing {2, 2} -> 2
    # entry 3: sum 0 -> sign 0 -> nothing agrees -> 0
    torch.testing.assert_close(out, torch.tensor([2.0, 4.0, 2.0, 0.0], dtype=D))


def test_ties_election_uses_coefficient_weighted_mass():
    experts = [[1.0], [-3.0]]
    # weighted: 2*1 = 2 vs 0.5*-3 = -1.5 -> positive wins; only expert 0 contributes 2
    assert merge("ties", [0.0], experts, [2.0, 0.5], density=1.0).item() == pytest.approx(2.0)
    # weighted: 1 vs -3 -> negative wins
    assert merge("ties", [0.0], experts, [1.0, 1.0], density=1.0).item() == pytest.approx(-3.0)


def test_ties_normalisations():
    experts = [[3.0], [5.0]]  # task vectors 2 and 4 from base 1
    c = [1.0, 0.5]  # weighted 2 and 2
    assert merge("ties", [1.0], experts, c, density=1.0, normalize="count").item() == pytest.approx(1.0 + 4.0 / 2)
    assert merge("ties", [1.0], experts, c, density=1.0, normalize="weights").item() == pytest.approx(1.0 + 4.0 / 1.5)
    assert merge("ties", [1.0], experts, c, density=1.0, normalize="none").item() == pytest.approx(1.0 + 4.0)


def test_ties_expert_with_zero_coefficient_does_not_dilute():
    experts = [[2.0, 2.0], [2.0, 2.0]]
    torch.testing.assert_close(
        merge("ties", [0.0, 0.0], experts, [1.0, 0.0], density=1.0), torch.tensor([2.0, 2.0], dtype=D)
    )


def test_ties_trims_to_top_density_by_magnitude():
    expert = [0.1, -5.0, 0.3, 4.0, -0.2, 1.0, 0.0, 2.0, -3.0, 0.05]
    out = merge("ties", [0.0] * 10, [expert], [1.0], density=0.3)
    expected = torch.zeros(10, dtype=D)
    expected[[1, 3, 8]] = torch.tensor([-5.0, 4.0, -3.0], dtype=D)
    torch.testing.assert_close(out, expected)


def test_dare_rescales_survivors_and_is_unbiased():
    torch.manual_seed(0)
    tau = torch.randn(20_000, dtype=D)
    tv = TaskVectors({"w": torch.zeros(20_000, dtype=D)}, [{"w": tau}])
    out = Merger(tv, get_merge_method("dare_linear", drop_rate=0.75, seed=3)).merge(torch.tensor([1.0], dtype=D))["w"]
    kept = out != 0
    assert kept.double().mean().item() == pytest.approx(0.25, abs=0.015)
    torch.testing.assert_close(out[kept], tau[kept] * 4.0)
    # Expected value: the mean over seeds of the merged vector tends to tau.
    mean = torch.stack(
        [
            Merger(tv, get_merge_method("dare_linear", drop_rate=0.5, seed=s)).merge(torch.tensor([1.0], dtype=D))["w"]
            for s in range(200)
        ]
    ).mean(0)
    assert (mean - tau).abs().mean().item() < 0.06 * tau.abs().mean().item()


def test_dare_is_deterministic_per_seed():
    tau = torch.randn(500, dtype=D, generator=torch.Generator().manual_seed(0))
    tv = TaskVectors({"w": torch.zeros(500, dtype=D)}, [{"w": tau}])
    c = torch.tensor([1.0], dtype=D)
    a = Merger(tv, get_merge_method("dare_ties", drop_rate=0.5, seed=1)).merge(c)["w"]
    b = Merger(tv, get_merge_method("dare_ties", drop_rate=0.5, seed=1)).merge(c)["w"]
    other = Merger(tv, get_merge_method("dare_ties", drop_rate=0.5, seed=2)).merge(c)["w"]
    assert torch.equal(a, b)
    assert not torch.equal(a, other)


def test_dare_ties_without_drop_equals_ties_without_trim():
    experts = [[3.0, -1.0, 2.0], [-1.0, -2.0, 2.0], [1.0, 4.0, -1.0]]
    a = merge("dare_ties", [0.0] * 3, experts, [1.0, 0.5, 1.0], drop_rate=0.0)
    b = merge("ties", [0.0] * 3, experts, [1.0, 0.5, 1.0], density=1.0)
    torch.testing.assert_close(a, b)


def test_breadcrumbs_masks_both_tails():
    expert = [0.1, -5.0, 0.3, 4.0, -0.2, 1.0, 0.0, 2.0, -3.0, 0.05]
    out = merge("breadcrumbs", [0.0] * 10, [expert], [2.0], density=0.5, gamma=0.1)
    # magnitudes sorted: 5 (dropped: top 10%), then 4, 3, 2, 1, 0.3 kept (50%), rest dropped
    expected = torch.zeros(10, dtype=D)
    expected[[3, 8, 7, 5, 2]] = 2.0 * torch.tensor([4.0, -3.0, 2.0, 1.0, 0.3], dtype=D)
    torch.testing.assert_close(out, expected)


def test_della_is_unbiased_and_keeps_large_entries_more_often():
    torch.manual_seed(1)
    tau = torch.randn(4, 2_000, dtype=D)
    tv = TaskVectors({"w": torch.zeros(4, 2_000, dtype=D)}, [{"w": tau}])
    outs = torch.stack(
        [
            Merger(tv, get_merge_method("della", density=0.5, epsilon=0.3, seed=s)).merge(torch.tensor([1.0], dtype=D))[
                "w"
            ]
            for s in range(100)
        ]
    )
    keep_rate = (outs != 0).double().mean(0)
    magnitude = tau.abs()
    large = magnitude > magnitude.quantile(0.9)
    small = magnitude < magnitude.quantile(0.1)
    assert keep_rate[large].mean().item() == pytest.approx(0.8 - 0.03, abs=0.04)
    assert keep_rate[small].mean().item() == pytest.approx(0.2 + 0.03, abs=0.04)
    assert (outs.mean(0) - tau).abs().mean().item() < 0.1 * magnitude.mean().item()


def test_slerp_endpoints_midpoint_and_colinear_fallback():
    base = [0.0, 0.0]
    experts = [[1.0, 0.0], [0.0, 1.0]]
    torch.testing.assert_close(merge("slerp", base, experts, [0.0]), torch.tensor([1.0, 0.0], dtype=D))
    torch.testing.assert_close(merge("slerp", base, experts, [1.0]), torch.tensor([0.0, 1.0], dtype=D))
    h = 1.0 / math.sqrt(2.0)
    torch.testing.assert_close(merge("slerp", base, experts, [0.5]), torch.tensor([h, h], dtype=D))
    # norms are preserved along the arc, unlike lerp
    assert merge("slerp", base, experts, [0.3]).norm().item() == pytest.approx(1.0)
    # colinear experts: linear interpolation
    torch.testing.assert_close(merge("slerp", base, [[1.0, 1.0], [2.0, 2.0]], [0.5]), torch.tensor([1.5, 1.5], dtype=D))


def test_ties_weights_normalisation_uses_absolute_coefficients():
    # weighted: 1 * 2 = 2 and -0.999 * -2 = 1.998 agree (positive): (2 + 1.998) / (1 + 0.999)
    out = merge("ties", [0.0], [[2.0], [-2.0]], [1.0, -0.999], density=1.0, normalize="weights")
    assert out.item() == pytest.approx(3.998 / 1.999)
    # negating every coefficient negates the merge rather than cancelling out
    neg = merge("ties", [0.0], [[2.0], [-2.0]], [-1.0, 0.0], density=1.0, normalize="weights")
    assert neg.item() == pytest.approx(-2.0)


def test_linear_rejects_negative_weights():
    from bambo.errors import BoundsError

    with pytest.raises(BoundsError, match="non-negative"):
        merge("linear", [0.0], [[1.0], [2.0]], [1.0, -0.5])


def test_coefficients_as_a_list():
    tv = TaskVectors({"w": torch.zeros(2, dtype=D)}, [{"w": torch.ones(2, dtype=D)}, {"w": -torch.ones(2, dtype=D)}])
    out = Merger(tv, get_merge_method("task_arithmetic")).merge([0.5, 0.25])
    torch.testing.assert_close(out["w"], torch.full((2,), 0.25, dtype=D))


def reference_slerp(v0, v1, t):
    a, b = v0.reshape(-1), v1.reshape(-1)
    omega = torch.arccos((a @ b) / (a.norm() * b.norm()))
    return (torch.sin((1 - t) * omega) * v0 + torch.sin(t * omega) * v1) / torch.sin(omega)


def test_slerp_matches_a_direct_implementation_on_matrices():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(7, 3, generator=g, dtype=D)
    e0, e1 = base + torch.randn(7, 3, generator=g, dtype=D), base + torch.randn(7, 3, generator=g, dtype=D)
    tv = TaskVectors({"w": base}, [{"w": e0}, {"w": e1}])
    merger = Merger(tv, get_merge_method("slerp"))
    for t in (0.0, 0.25, 0.7, 1.0):
        torch.testing.assert_close(merger.merge(torch.tensor([t], dtype=D))["w"], reference_slerp(e0, e1, t))
