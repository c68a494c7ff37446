"""Fused float32 kernels for weighted sums of task vectors, shared by both merge engines.

Task arithmetic and linear merging compute ``theta = base + sum_i w_i (theta_i - base)``
(MAP Sec. 3, ``theta_m(c) = theta_pre + V c``). In PyTorch's eager mode a streamed chunk of a
bf16 model costs five passes over memory: widen the N + 1 rows to float32, subtract the base,
``addmv``, round the result back to bf16 and copy it out; at 1e9 parameters that arithmetic,
not the disk, bounded the streaming engine (``benchmarks/results/large_merge.md``). These
kernels (numba, compiled once and cached) do it in one pass per cache-sized block: each bf16
entry is widened by a 16-bit shift, the weighted sum runs in float32 registers, and the result
is rounded to bf16 (round to nearest even, as ``Tensor.to(torch.bfloat16)`` does) straight into
the output. Neither PyTorch's eager kernels nor BLAS fuse the widening and rounding with the sum,
and ``torch.compile`` would need a C++ toolchain at run time.

Every kernel computes, per entry and in this order, ``acc = base; acc += w_i * (expert_i -
base)`` for ``i = 1..N`` in float32 (the in-memory form takes the task vectors already formed by
the same subtraction), so the streaming engine's merges equal the in-memory engine's exactly, and
a bf16 merge equals the float32 merge rounded once. Calls release the GIL, so a reader thread can
fetch the next chunk meanwhile.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from torch import Tensor

_BLOCK = 2048  # entries per inner block: a few float32 rows of it stay in L1


@intrinsic
def _as_float32(typingctx, bits):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Reinterpret a uint32's bits as a float32 (LLVM ``bitcast``: no arithmetic, vectorizable)."""
    signature = types.float32(types.uint32)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


@intrinsic
def _as_uint32(typingctx, value):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Reinterpret a float32's bits as a uint32."""
    signature = types.uint32(types.float32)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return signature, codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _widen(bf16: np.uint16) -> np.float32:  # pragma: no cover - jit
    return _as_float32(np.uint32(bf16) << np.uint32(16))


@numba.njit(nogil=True, cache=True, inline="always")
def _round(value: np.float32) -> np.uint16:  # pragma: no cover - jit
    x = _as_uint32(value)
    if (x & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16(0xFFFF)  # NaN, as the CPU's Tensor.to(torch.bfloat16) writes it
    return np.uint16((x + np.uint32(0x7FFF) + ((x >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@numba.njit(nogil=True, cache=True)
def _round_all(values: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jit
    for j in range(values.shape[0]):
        out[j] = _round(values[j])


@numba.njit(nogil=True, cache=True)
def _sum_models_bf16(models: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jit
    n_experts, n = models.shape[0] - 1, models.shape[1]
    acc = np.empty(_BLOCK, np.float32)
    for start in range(0, n, _BLOCK):
        size = min(_BLOCK, n - start)
        base = models[0, start : start + size]
        for j in range(size):
            acc[j] = _widen(base[j])
        for i in range(n_experts):
            w = weights[i]
            expert = models[i + 1, start : start + size]
            for j in range(size):
                acc[j] += w * (_widen(expert[j]) - _widen(base[j]))
        target = out[start : start + size]
        for j in range(size):
            target[j] = _round(acc[j])


@numba.njit(nogil=True, cache=True)
def _sum_models_f32(models: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jit
    n_experts, n = models.shape[0] - 1, models.shape[1]
    acc = np.empty(_BLOCK, np.float32)
    for start in range(0, n, _BLOCK):
        size = min(_BLOCK, n - start)
        for j in range(size):
            acc[j] = models[0, start + j]
        for i in range(n_experts):
            w = weights[i]
            for j in range(size):
                acc[j] += w * (models[i + 1, start + j] - models[0, start + j])
        for j in range(size):
            out[start + j] = acc[j]


@numba.njit(nogil=True, cache=True)
def _sum_vectors_f32(
    base: np.ndarray, vectors: np.ndarray, weights: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - jit
    n_experts, n = vectors.shape[0], vectors.shape[1]
    acc = np.empty(_BLOCK, np.float32)
    for start in range(0, n, _BLOCK):
        size = min(_BLOCK, n - start)
        for j in range(size):
            acc[j] = base[start + j]
        for i in range(n_experts):
            w = weights[i]
            for j in range(size):
                acc[j] += w * vectors[i, start + j]
        for j in range(size):
            out[start + j] = acc[j]


@numba.njit(nogil=True, cache=True)
def _sign_consensus_f32(
    vectors: np.ndarray, weights: np.ndarray, alphas: np.ndarray, normalize: int, base: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - jit
    n_experts, n = vectors.shape[0], vectors.shape[1]
    with_base = base.shape[0] == n
    zero = np.float32(0.0)
    positive = np.empty(_BLOCK, np.float32)
    negative = np.empty(_BLOCK, np.float32)
    n_pos = np.empty(_BLOCK, np.float32)
    n_neg = np.empty(_BLOCK, np.float32)
    for start in range(0, n, _BLOCK):
        size = min(_BLOCK, n - start)
        positive[:size] = zero
        negative[:size] = zero
        n_pos[:size] = zero
        n_neg[:size] = zero
        for i in range(n_experts):
            c, alpha = weights[i], alphas[i]
            row = vectors[i, start : start + size]
            for j in range(size):
                w = row[j] * c
                positive[j] += max(w, zero)
                negative[j] -= min(w, zero)
                n_pos[j] += alpha if w > zero else zero
                n_neg[j] += alpha if w < zero else zero
        for j in range(size):
            p, q = positive[j], negative[j]
            total = p if p > q else (-q if q > p else zero)
            if normalize != 0:
                denom = n_pos[j] if p > q else (n_neg[j] if q > p else zero)
                total = total / denom if denom != zero else zero
            out[start + j] = total + base[start + j] if with_base else total


def sign_consensus_sum(
    vectors: Tensor, weights: Tensor, alphas: Tensor, normalize: bool, base: Tensor | None, out: Tensor
) -> Tensor:
    """TIES's elect-sign and disjoint merge in one pass, in :func:`bambo.merge.ops.sign_consensus`'s arithmetic.

    Per entry, with ``w_i = v_i * c_i`` over the experts given (those with ``c_i != 0``): the
    agreeing sums ``P = sum max(w_i, 0)``, ``Q = sum max(-w_i, 0)`` and counts (``alphas[i]``
    per contributing expert); the larger sum wins; divided by its count when ``normalize``.

    Args:
        vectors: Shape ``(K, n)``, float32, contiguous entries.
        weights: Shape ``(K,)``, float32.
        alphas: Shape ``(K,)``, float32: what each contributing expert adds to the count.
        normalize: Divide by the count (``"count"``/``"weights"``) or not (``"none"``).
        base: Shape ``(n,)``, float32, added to the result; or ``None``.
        out: Shape ``(n,)``, float32, contiguous.

    Returns:
        ``out``.
    """
    empty = np.empty(0, np.float32)
    _sign_consensus_f32(
        vectors.numpy(), _weights(weights), _weights(alphas), int(normalize),
        empty if base is None else base.numpy(), out.numpy(),
    )  # fmt: skip
    return out


@numba.njit(nogil=True, cache=True)
def _apply_cut_f32(row: np.ndarray, cut: np.int64, ties_left: np.int64) -> np.int64:  # pragma: no cover - jit
    zero = np.float32(0.0)
    equal = 0
    for j in range(row.shape[0]):
        equal += np.int64(_as_uint32(abs(row[j]))) == cut
    if equal <= ties_left:  # every tie here is kept: a branch-free pass
        for j in range(row.shape[0]):
            row[j] = row[j] if np.int64(_as_uint32(abs(row[j]))) >= cut else zero
        return ties_left - equal
    for j in range(row.shape[0]):  # the chunk where the ties run out: lowest index first
        bits = np.int64(_as_uint32(abs(row[j])))
        if bits > cut:
            continue
        if bits == cut and ties_left > 0:
            ties_left -= 1
            continue
        row[j] = zero
    return ties_left


def apply_cut(row: Tensor, cut: int, ties_left: int) -> int:
    """Zero, in place, the entries of a float32 chunk outside a magnitude cut; return the ties left.

    Kept: magnitudes whose bit pattern is above ``cut``, and the next ``ties_left`` equal to it
    (see :class:`bambo.merge.ops.MagnitudeCut`), as :class:`bambo.merge.ops.CutMasker` keeps.

    Args:
        row: Shape ``(n,)``, float32, contiguous entries.
        cut: The cut's bit pattern.
        ties_left: How many entries equal to the cut may still be kept.

    Returns:
        The ties still to keep after this chunk.
    """
    return int(_apply_cut_f32(row.numpy(), np.int64(cut), np.int64(ties_left)))


def _numpy(t: Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (bf16 as its uint16 bit patterns)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _weights(weights: Tensor) -> np.ndarray:
    if weights.dtype != torch.float32 or weights.device.type != "cpu" or not weights.is_contiguous():
        weights = weights.to(device="cpu", dtype=torch.float32).contiguous()
    return weights.numpy(force=weights.requires_grad)


def fusable(*tensors: Tensor) -> bool:
    """Whether the kernels take these tensors: on the CPU, float32 or bf16, each row's entries contiguous."""
    return all(
        t.device.type == "cpu" and (t.dim() == 0 or t.stride(-1) == 1) and t.dtype in (torch.float32, torch.bfloat16)
        for t in tensors
    )


def sum_models(models: Tensor, weights: Tensor, out: Tensor) -> Tensor:
    """``out = base + sum_i w_i (expert_i - base)`` from the models' entries, in float32 arithmetic.

    Args:
        models: Shape ``(N + 1, n)``, bf16 or float32, row 0 the base's entries and rows 1..N the
            experts'; contiguous rows (a column slice of a wider buffer is fine).
        weights: Shape ``(N,)``.
        out: Shape ``(n,)``, contiguous, the models' dtype.

    Returns:
        ``out``.

    Raises:
        TypeError: Dtypes or devices the kernels do not take (see :func:`fusable`).
    """
    if not (fusable(out) and models.device.type == "cpu" and models.dtype == out.dtype and models.stride(1) == 1):
        raise TypeError(f"sum_models takes CPU float32 or bf16 rows and output, got {models.dtype} -> {out.dtype}")
    w = _weights(weights)
    kernel = _sum_models_bf16 if out.dtype == torch.bfloat16 else _sum_models_f32
    kernel(_numpy(models), w, _numpy(out))
    return out


def round_to_bf16(values: Tensor) -> Tensor:
    """The kernels' rounding of float32 ``values`` to bf16 (equal to ``values.to(torch.bfloat16)``)."""
    out = torch.empty(values.shape, dtype=torch.bfloat16)
    _round_all(values.contiguous().reshape(-1).numpy(), _numpy(out).reshape(-1))
    return out


def sum_vectors(base: Tensor, vectors: Tensor, weights: Tensor, out: Tensor) -> Tensor:
    """``out = base + sum_i w_i v_i`` over float32 task vectors already formed, in the kernels' order.

    Args:
        base: Shape ``(n,)``, float32, contiguous.
        vectors: Shape ``(N, n)``, float32, contiguous.
        weights: Shape ``(N,)``.
        out: Shape ``(n,)``, float32, contiguous (may be ``base``).

    Returns:
        ``out``.
    """
    w = _weights(weights)
    _sum_vectors_f32(base.numpy(), vectors.numpy(), w, out.numpy())
    return out
