"""Tensor operations shared by the merge methods: sparsifiers and sign consensus.

These are small, exact PyTorch kernels. They are written here rather than taken
from mergekit because mergekit ships them inside its lazy-loading graph executor
(and under the LGPL); bambo needs them on in-memory stacked task vectors, with
randomness seeded per tensor so a merge is reproducible whatever the order.
"""

from __future__ import annotations

import math
import zlib
from typing import Literal

import torch
from torch import Tensor

Normalize = Literal["count", "weights", "none"]


def tensor_generator(seed: int, key: str, expert: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, tensor name, expert index)``.

    The same seed gives the same masks whatever order tensors are visited in.
    """
    mixed = (seed * 1_000_003 + zlib.crc32(key.encode()) * 31 + expert) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def weighted_sum(vectors: Tensor, coefficients: Tensor) -> Tensor:
    """``sum_i c_i v_i`` over the first dimension.

    Args:
        vectors: Shape ``(N, *shape)``.
        coefficients: Shape ``(N,)``.

    Returns:
        Shape ``shape``.
    """
    flat = vectors.reshape(vectors.shape[0], -1)
    return torch.mv(flat.t(), coefficients.to(vectors)).view(vectors.shape[1:])


def add_weighted_sum(base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
    """``base + sum_i c_i v_i`` in one pass that allocates only the output.

    A BLAS ``addmv`` over the column-major view of the stacked vectors streams each
    vector once (throughput beside a plain copy of the same bytes:
    ``benchmarks/results/merge_throughput.md``).

    Args:
        base: Shape ``shape``.
        vectors: Shape ``(N, *shape)``.
        coefficients: Shape ``(N,)``.
        out: Optional contiguous buffer of shape ``shape`` for the result.

    Returns:
        ``out``, or a new tensor of shape ``shape``.
    """
    flat = vectors.reshape(vectors.shape[0], -1)
    if out is None:
        return torch.addmv(base.reshape(-1), flat.t(), coefficients.to(vectors)).view(base.shape)
    torch.addmv(base.reshape(-1), flat.t(), coefficients.to(vectors), out=out.view(-1))
    return out


def _keep_count(numel: int, density: float) -> int:
    return max(1, min(numel, int(math.ceil(density * numel - 1e-9))))


def _top_magnitude(flat: Tensor, density: float) -> Tensor:
    """Indices of the ``ceil(density * numel)`` entries of ``flat`` with the largest magnitude."""
    return torch.topk(flat.abs(), _keep_count(flat.numel(), density), sorted=False).indices


def trim_magnitude(vector: Tensor, density: float) -> Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES "trim").

    Exactly ``ceil(density * numel)`` entries are kept (at least one).
    """
    if density >= 1.0:
        return vector.clone()
    flat = vector.reshape(-1)
    index = _top_magnitude(flat, density)
    out = torch.zeros_like(flat)
    out[index] = flat[index]
    return out.view_as(vector)


def magnitude_mask(vector: Tensor, density: float) -> Tensor:
    """The entries :func:`trim_magnitude` keeps, as a flat boolean mask of ``vector.numel()`` entries.

    ``trim_magnitude(v, d).reshape(-1)`` equals ``v.reshape(-1)`` with the entries outside the mask
    set to zero (the same ``topk``, so the same entries on ties).
    """
    flat = vector.reshape(-1)
    if density >= 1.0:
        return torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[_top_magnitude(flat, density)] = True
    return mask


def mask_outliers(vector: Tensor, density: float, gamma: float) -> Tensor:
    """Model Breadcrumbs: drop the ``gamma`` largest and the smallest magnitudes.

    Entries ranked by magnitude; the top ``gamma`` fraction (outliers) and the
    bottom ones are zeroed so that a ``density`` fraction remains.
    """
    flat = vector.reshape(-1)
    n = flat.numel()
    keep = _keep_count(n, density)
    n_top = min(int(gamma * n), n - keep)
    order = torch.argsort(flat.abs(), descending=True, stable=True)
    kept = order[n_top : n_top + keep]
    out = torch.zeros_like(flat)
    out[kept] = flat[kept]
    return out.view_as(vector)


def drop_random(vector: Tensor, drop_rate: float, generator: torch.Generator) -> Tensor:
    """DARE: drop each entry with probability ``p`` and rescale survivors by ``1/(1-p)``.

    ``E[drop_random(v)] = v`` entry-wise (Yu et al., 2024, Eq. 1-2).
    """
    if drop_rate <= 0.0:
        return vector.clone()
    keep = torch.rand(vector.shape, generator=generator, dtype=torch.float32) >= drop_rate
    return torch.where(keep.to(vector.device), vector / (1.0 - drop_rate), torch.zeros_like(vector))


def magprune(vector: Tensor, density: float, epsilon: float, generator: torch.Generator) -> Tensor:
    """DELLA MagPrune: keep probabilities rise linearly with magnitude rank.

    Within each row (the last dimension; a 1-D tensor is one row), entries are
    ranked by magnitude; the keep probability goes from ``density - epsilon``
    (smallest) to ``density + epsilon`` (largest). Survivors are rescaled by
    ``1/p_keep`` so the expectation is unchanged (Deep et al., 2024, Sec. 3).
    """
    rows = vector.reshape(1, -1) if vector.dim() < 2 else vector.reshape(-1, vector.shape[-1])
    width = rows.shape[1]
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=1, stable=True), dim=1).to(torch.float32)
    rank_norm = ranks / (width - 1) if width > 1 else torch.full_like(ranks, 0.5)
    p_keep = (density - epsilon) + 2.0 * epsilon * rank_norm
    draws = torch.rand(rows.shape, generator=generator, dtype=torch.float32)
    kept = torch.where(draws < p_keep, rows / p_keep.to(rows.dtype), torch.zeros_like(rows))
    return kept.view_as(vector)


def sign_consensus(
    vectors: Tensor, coefficients: Tensor, normalize: Normalize, base: Tensor | None = None, out: Tensor | None = None
) -> Tensor:
    """TIES "elect sign" and "disjoint merge" on coefficient-weighted task vectors.

    With ``w_i = c_i v_i``, the elected sign is ``sign(sum_i w_i)`` per entry
    (TIES Sec. 3, the "mass" election). Entries of ``w_i`` that are non-zero
    and agree with it are combined:

    - ``"count"``: their mean over the experts that contribute (TIES's disjoint
      mean; with all ``c_i = 1`` it is exactly TIES with ``lambda = 1``);
    - ``"weights"``: their sum divided by the sum of the agreeing ``|c_i|``
      (mergekit's normalisation, scale-free in ``c``);
    - ``"none"``: their sum (disjoint sum).

    Experts with ``c_i = 0`` never contribute, so ``c = e_i`` gives expert i's
    (prepared) task vector. The work runs over cache-sized chunks of the
    flattened tensor, so its temporaries stay small whatever the tensor size.

    Args:
        vectors: Shape ``(N, *shape)``.
        coefficients: Shape ``(N,)``.
        normalize: One of ``"count"``, ``"weights"``, ``"none"``.
        base: If given (shape ``shape``), it is added to the result chunk by chunk,
            so merging allocates only the output.
        out: Optional contiguous buffer of shape ``shape`` for the result.

    Returns:
        The merged delta (plus ``base``): ``out``, or a new tensor of shape ``shape``.
    """
    flat = vectors.reshape(vectors.shape[0], -1)
    base_flat = base.reshape(-1) if base is not None else None
    result = out if out is not None else torch.empty(vectors.shape[1:], dtype=vectors.dtype, device=vectors.device)
    out_flat = result.view(-1)
    weights = [(i, c) for i, c in enumerate(coefficients.tolist()) if c != 0.0]
    for start in range(0, flat.shape[1], _CHUNK):
        stop = min(start + _CHUNK, flat.shape[1])
        chunk = out_flat[start:stop]
        _sign_consensus_chunk(flat[:, start:stop], weights, normalize, chunk)
        if base_flat is not None:
            chunk.add_(base_flat[start:stop])
    return result


_CHUNK = 1 << 18


def _sign_consensus_chunk(flat: Tensor, weights: list[tuple[int, float]], normalize: Normalize, out: Tensor) -> None:
    # With w_i = c_i v_i, P = sum_i max(w_i, 0) and Q = sum_i max(-w_i, 0) are the agreeing
    # sums for either elected sign, and sum_i w_i = P - Q decides the election.
    positive = torch.zeros_like(out)
    negative = torch.zeros_like(out)
    n_pos = torch.zeros_like(out)
    n_neg = torch.zeros_like(out)
    for i, c in weights:
        weighted = flat[i] * c
        positive.add_(weighted.clamp(min=0.0))
        negative.sub_(weighted.clamp(max=0.0))
        if normalize != "none":
            alpha = 1.0 if normalize == "count" else abs(c)
            n_pos.add_((weighted > 0).to(out.dtype), alpha=alpha)
            n_neg.add_((weighted < 0).to(out.dtype), alpha=alpha)
    elect_pos = positive > negative
    elect_neg = negative > positive
    zero = torch.zeros_like(out)
    total = torch.where(elect_pos, positive, torch.where(elect_neg, -negative, zero))
    if normalize == "none":
        out.copy_(total)
        return
    denom = torch.where(elect_pos, n_pos, torch.where(elect_neg, n_neg, zero))
    out.copy_(torch.where(denom != 0, total / torch.where(denom != 0, denom, torch.ones_like(denom)), zero))
