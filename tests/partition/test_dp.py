"""The DP partitioners against brute force and an independent Fisher-Jenks implementation."""

from itertools import combinations

import jenkspy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bambo.errors import ConfigError, UnknownNameError
from bambo.partition import PARTITIONERS, block_cost, compare_partitioners, partition_layers, partition_terms
from bambo.partition.dp import optimal_blocks


def all_partitions(L, K):
    for cuts in combinations(range(1, L), K - 1):
        edges = (0, *cuts, L)
        yield tuple(range(edges[k], edges[k + 1]) for k in range(K))


def brute_force(d, K, lam, w_var=1.0):
    return min(block_cost(d, blocks, lam, w_var) for blocks in all_partitions(len(d), K))


differences = st.lists(
    st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False, allow_subnormal=False), min_size=1, max_size=12
).filter(
    lambda d: any(v > 0 for v in d)  # all-zero differences are refused: every partition would tie
)


@settings(max_examples=150, deadline=None)
@given(d=differences, lam=st.sampled_from([0.0, 0.05, 1.0, 7.5]), data=st.data())
def test_hybrid_dp_equals_brute_force(d, lam, data):
    K = data.draw(st.integers(1, len(d)))
    blocks, cost = optimal_blocks(np.array(d), K, lam)
    best = brute_force(d, K, lam)
    assert cost == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert block_cost(d, blocks, lam) == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert [i for b in blocks for i in b] == list(range(len(d))) and all(len(b) > 0 for b in blocks)


@settings(max_examples=80, deadline=None)
@given(d=differences, data=st.data())
def test_balance_only_dp_equals_brute_force(d, data):
    K = data.draw(st.integers(1, len(d)))
    partition = partition_layers(d, K, "balance")
    assert partition.cost == pytest.approx(brute_force(d, K, 1.0, w_var=0.0), rel=1e-9, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    d=st.lists(st.floats(0.0, 100.0, allow_nan=False, allow_subnormal=False), min_size=3, max_size=12, unique=True),
    data=st.data(),
)
def test_variance_only_is_fisher_jenks(d, data):
    K = data.draw(st.integers(2, len(d) - 1))
    values = np.sort(np.array(d))  # Fisher-Jenks clusters sorted values; ordered DP on sorted data is the same problem
    ours = partition_layers(values, K, "variance")
    breaks = jenkspy.jenks_breaks(values.tolist(), n_classes=K)
    jenks_blocks = []
    start = 0
    for upper in breaks[1:]:
        stop = int(np.searchsorted(values, upper, side="right"))
        jenks_blocks.append(range(start, stop))
        start = stop
    # Both are optimal: equal within-class sums of squares (ties may pick different breaks).
    assert ours.cost == pytest.approx(block_cost(values, jenks_blocks, 0.0), rel=1e-9, abs=1e-9)


def test_hybrid_lambda_trades_homogeneity_for_balance():
    d = np.array([6.0, 3.0, 0.0, 0.0, 8.0, 9.0, 6.0])
    homogeneous = partition_layers(d, 3, "variance")
    balanced = partition_layers(d, 3, "balance")
    hybrid = partition_layers(d, 3, "hybrid", lam=1.0)
    assert (homogeneous.describe(), hybrid.describe(), balanced.describe()) == (
        "0-1 | 2-3 | 4-6",
        "0-3 | 4 | 5-6",
        "0-1 | 2-4 | 5-6",
    )
    share_h, dev_h = partition_terms(d, list(homogeneous))
    share_m, dev_m = partition_terms(d, list(hybrid))
    share_b, dev_b = partition_terms(d, list(balanced))
    assert share_h < share_m < share_b  # homogeneity is given up ...
    assert dev_b <= dev_m < dev_h  # ... for balance
    # lambda -> 0 recovers the variance partition, a large lambda the balanced one
    assert partition_layers(d, 3, "hybrid", lam=1e-6).describe() == homogeneous.describe()
    assert partition_terms(d, list(partition_layers(d, 3, "hybrid", lam=1e3)))[1] == pytest.approx(dev_b)


@settings(max_examples=40, deadline=None)
@given(
    d=st.lists(st.floats(0.1, 10.0, allow_subnormal=False), min_size=2, max_size=12),
    scale=st.floats(1e-3, 1e3, allow_subnormal=False),
    data=st.data(),
)
def test_scale_free_lambda_is_invariant_to_scaling(d, scale, data):
    K = data.draw(st.integers(1, len(d)))
    a = partition_layers(np.array(d), K, "hybrid", lam=1.0)
    b = partition_layers(np.array(d) * scale, K, "hybrid", lam=1.0)
    assert block_cost(d, list(b), a.lam) == pytest.approx(block_cost(d, list(a), a.lam), rel=1e-6, abs=1e-9)


def test_uniform_and_compare():
    parts = compare_partitioners(np.arange(10.0), 4)
    assert list(parts) == list(PARTITIONERS)
    assert parts["uniform"].describe() == "0-1 | 2-4 | 5-6 | 7-9"


@pytest.mark.parametrize(
    ("d", "k", "match"),
    [
        ([1.0, 2.0], 0, "K must be an integer >= 1"),
        ([1.0, 2.0], 3, "K=3 exceeds the number of layers L=2"),
        ([], 1, "non-empty"),
        ([1.0, float("nan")], 1, r"d\[1\] is not finite"),
        ([1.0, float("inf")], 1, r"d\[1\] is not finite"),
    ],
)
def test_clear_errors(d, k, match):
    with pytest.raises(ConfigError, match=match):
        partition_layers(d, k)


def test_unknown_method_and_bad_lambdas():
    with pytest.raises(UnknownNameError, match="valid names: balance, hybrid, uniform, variance"):
        partition_layers([1.0, 2.0], 1, "jenks")
    for lam in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="lambda must be finite and >= 0"):
            partition_layers([1.0, 2.0, 3.0, 4.0], 2, lam=lam)


def test_degenerate_differences_are_refused():
    with pytest.raises(ConfigError, match="all layer differences are zero"):
        partition_layers([0.0] * 6, 3)
    with pytest.raises(ConfigError, match="is negative"):
        partition_layers([1.0, -2.0], 1)
    with pytest.raises(ConfigError, match="K must be an integer"):
        partition_layers([1.0, 2.0], True)


def test_costs_stay_exact_under_a_large_offset():
    d = np.array([1.0, 3.0, 2.0, 8.0, 9.0, 1.0]) + 1e7
    partition = partition_layers(d, 3, "variance")
    assert partition.cost == pytest.approx(block_cost(d, list(partition), 0.0), rel=1e-9)
