"""Tensor operations shared by the merge methods: sparsifiers and sign consensus.

These are small, exact PyTorch kernels. They are written here rather than taken
from mergekit because mergekit ships them inside its lazy-loading graph executor
(and under the LGPL); bambo needs them on in-memory stacked task vectors, with
randomness seeded per tensor so a merge is reproducible whatever the order.
"""

from __future__ import annotations

import math
import zlib
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from bambo.merge.kernels import apply_cut, fusable, sign_consensus_sum, sum_vectors

Normalize = Literal["count", "weights", "none"]
_CHUNK = 1 << 18  # entries per chunk of the chunked kernels: a few float32 rows fit in cache


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

    Float32 on the CPU runs the fused kernel the streaming engine uses
    (:func:`bambo.merge.kernels.sum_vectors`: the same arithmetic, so both engines merge alike);
    other dtypes and devices a BLAS ``addmv`` over the column-major view of the stacked vectors,
    which streams each vector once.

    Args:
        base: Shape ``shape``.
        vectors: Shape ``(N, *shape)``.
        coefficients: Shape ``(N,)``.
        out: Optional contiguous buffer of shape ``shape`` for the result.

    Returns:
        ``out``, or a new tensor of shape ``shape``.
    """
    flat = vectors.reshape(vectors.shape[0], -1)
    result = out if out is not None else torch.empty(base.shape, dtype=base.dtype, device=base.device)
    if base.dtype == torch.float32 and vectors.dtype == torch.float32 and fusable(base, flat, result):
        sum_vectors(base.reshape(-1), flat, coefficients, result.view(-1))
        return result
    torch.addmv(base.reshape(-1), flat.t(), coefficients.to(vectors), out=result.view(-1))
    return result


def _keep_count(numel: int, density: float) -> int:
    return max(1, min(numel, int(math.ceil(density * numel - 1e-9))))


class MagnitudeCut(NamedTuple):
    """The ``k`` largest magnitudes of a vector, as a cut a chunk can be tested against alone.

    Kept: every entry whose magnitude's bit pattern (:func:`magnitude_bits`) is above ``bits``,
    and the first ``ties`` entries (lowest flat index first) whose pattern equals it.
    """

    bits: int
    ties: int


def magnitude_bits(chunk: Tensor) -> Tensor:
    """``|chunk|``'s IEEE bit patterns as int64: for non-negative floats, integer order is value order.

    Args:
        chunk: A flat floating-point tensor.

    Returns:
        Shape ``chunk.shape``, int64.
    """
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[chunk.element_size()]
    return chunk.abs().view(view).to(torch.int64)


class TopMagnitude:
    """Exact selection of the ``ceil(density * numel)`` largest magnitudes of a vector seen in chunks.

    A radix select over the magnitudes' bit patterns, 16 bits a pass (two passes for float32,
    four for float64): each pass counts the next 16-bit digit of the entries still in play
    (``torch.bincount``) and fixes the digit where the count from the top reaches ``k``. It
    holds 65,536 counts, never the vector, so a streaming engine can trim a tensor it reads
    chunk by chunk; ``torch.topk`` needs the whole vector and, on the CPU, temporaries several
    times its size. Ties at the cut are kept lowest index first, so the selection is a
    function of the vector alone (``topk`` leaves the choice among ties unspecified).

    Usage: for each pass while not :attr:`done`, call :meth:`observe` on every chunk in order,
    then :meth:`advance`; then read :attr:`cut`.
    """

    def __init__(self, numel: int, density: float, dtype: torch.dtype) -> None:
        self.k = _keep_count(numel, density)
        self._shift = torch.finfo(dtype).bits - 16
        self._prefix = 0
        self._above = 0  # entries known to be above the cut
        self._counts = torch.zeros(_DIGITS, dtype=torch.int64)
        self._passes = 0

    @property
    def done(self) -> bool:
        return self._shift < 0

    def observe(self, chunk: Tensor) -> None:
        """Count the current digit of ``chunk``'s entries that match the digits fixed so far."""
        bits = magnitude_bits(chunk.reshape(-1))
        if self._passes:
            bits = bits[(bits >> (self._shift + 16)) == self._prefix]
        self._counts += torch.bincount((bits >> self._shift) & (_DIGITS - 1), minlength=_DIGITS)

    def advance(self) -> None:
        """Fix this pass's digit from the counts."""
        from_top = self._counts.flip(0).cumsum(0)  # from_top[j]: entries whose digit >= DIGITS - 1 - j
        j = int(torch.searchsorted(from_top, self.k - self._above))  # the first j reaching k
        digit = _DIGITS - 1 - j
        self._above += int(from_top[j - 1]) if j > 0 else 0
        self._prefix = (self._prefix << 16) | digit
        self._shift -= 16
        self._passes += 1
        self._counts.zero_()

    @property
    def cut(self) -> MagnitudeCut:
        return MagnitudeCut(self._prefix, self.k - self._above)


_DIGITS = 1 << 16


def magnitude_cut(flat: Tensor, density: float) -> MagnitudeCut:
    """:class:`TopMagnitude` over an in-memory flat vector, in chunks of ``_CHUNK`` entries."""
    select = TopMagnitude(flat.numel(), density, flat.dtype)
    while not select.done:
        for start in range(0, flat.numel(), _CHUNK):
            select.observe(flat[start : start + _CHUNK])
        select.advance()
    return select.cut


class CutMasker:
    """Applies a :class:`MagnitudeCut` to consecutive chunks of its vector (first to last)."""

    def __init__(self, cut: MagnitudeCut) -> None:
        self.cut = cut
        self._ties_left = cut.ties

    def apply(self, chunk: Tensor) -> None:
        """Zero, in place, the entries of the next chunk (flat) that the cut drops."""
        if chunk.dtype == torch.float32 and fusable(chunk):
            self._ties_left = apply_cut(chunk, self.cut.bits, self._ties_left)
        else:
            chunk.masked_fill_(self(chunk).logical_not_(), 0.0)

    def __call__(self, chunk: Tensor) -> Tensor:
        """The kept entries of the next chunk, a boolean tensor of its length."""
        bits = magnitude_bits(chunk.reshape(-1))
        keep = bits > self.cut.bits
        if self._ties_left > 0:
            equal = bits == self.cut.bits
            n_equal = int(equal.sum())
            if n_equal > self._ties_left:
                equal &= equal.cumsum(0) <= self._ties_left
            keep |= equal
            self._ties_left -= min(n_equal, self._ties_left)
        return keep


def trim_magnitude(vector: Tensor, density: float) -> Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES "trim").

    Exactly ``ceil(density * numel)`` entries are kept (at least one); among equal magnitudes
    at the cut, the lowest flat indices (:class:`TopMagnitude`).
    """
    if density >= 1.0:
        return vector.clone()
    flat = vector.reshape(-1)
    return flat.masked_fill(~magnitude_mask(flat, density), 0.0).view_as(vector)


def magnitude_mask(vector: Tensor, density: float) -> Tensor:
    """The entries :func:`trim_magnitude` keeps, as a flat boolean mask of ``vector.numel()`` entries."""
    flat = vector.reshape(-1)
    if density >= 1.0:
        return torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    masker = CutMasker(magnitude_cut(flat, density))
    return torch.cat([masker(flat[start : start + _CHUNK]) for start in range(0, flat.numel(), _CHUNK)])


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
    if vectors.dtype == torch.float32 and fusable(flat, out_flat, *(() if base_flat is None else (base_flat,))):
        rows = flat[[i for i, _ in weights]] if len(weights) < flat.shape[0] else flat
        c = torch.tensor([c for _, c in weights], dtype=torch.float32)
        alphas = torch.ones_like(c) if normalize != "weights" else c.abs()
        return sign_consensus_sum(rows, c, alphas, normalize != "none", base_flat, out_flat).view(result.shape)
    for start in range(0, flat.shape[1], _CHUNK):
        stop = min(start + _CHUNK, flat.shape[1])
        chunk = out_flat[start:stop]
        _sign_consensus_chunk(flat[:, start:stop], weights, normalize, chunk)
        if base_flat is not None:
            chunk.add_(base_flat[start:stop])
    return result


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
