"""The streaming merge engine: base and experts read tensor by tensor, never all task vectors at once.

:class:`LazyTaskVectors` stands where :class:`~bambo.merge.TaskVectors` does (names, shapes,
dtypes, expert names) but keeps only the (lazy) state dicts: with safetensors files or sharded
Hugging Face folders (:func:`bambo.weights.load_state_dict`) nothing is read until a merge asks
for a tensor. :class:`StreamingMerger` then merges one tensor at a time with the same
:class:`~bambo.merge.MergeMethod` (``prepare`` then ``merge_tensor``) as the in-memory
:class:`~bambo.merge.Merger`:

- it reads the base tensor and the N experts' tensors, in the models' dtype;
- it forms the task vectors in float32 (float64 stays float64), runs the method's
  coefficient-independent ``prepare`` (TIES trims, DARE/DELLA masks, seeded per tensor name,
  so the same masks as in memory), then ``merge_tensor``;
- it rounds the result once to the model's dtype and drops the temporaries.

Elementwise methods (``MergeMethod.elementwise``: task arithmetic, linear) skip the tensor-sized
float32 stacks: each tensor is merged in chunks of ``_CHUNK`` entries, read straight from the files
into reused buffers (:meth:`bambo.weights.LazySafetensors.read_into`), by a fused kernel
(:mod:`bambo.merge.kernels`) that widens, sums and rounds in one pass with the in-memory engine's
arithmetic; the parts of a large tensor are merged by two threads at once. An elementwise merge
holds nothing tensor-sized beyond its output.

TIES (``MergeMethod.masked``) merges in the same chunks: its trim is a cut per tensor and expert
(:class:`~bambo.merge.ops.TopMagnitude`, a radix select over the chunks read twice on the first
merge; then kept, a few integers), and each chunk's task vectors are masked by it before the
merge.

Peak memory beyond the output is therefore, for the chunked methods, a few cache-sized buffers;
for the others, about one tensor's N task vectors (twice, while prepared) plus the base tensor,
whatever the model size. Their ``prepare`` (DARE/DELLA masks, Breadcrumbs) is recomputed on every
merge (nothing is cached on disk). For float32 models the results equal the in-memory engine's;
for half-precision models they equal the in-memory engine run on the models cast to float32,
rounded once (the in-memory engine forms half-precision task vectors in the model's dtype, one
rounding more).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import psutil
import torch
from torch import Tensor, nn

from bambo.errors import BoundsError, ConfigError, ModelMismatchError
from bambo.merge.base import MergeMethod
from bambo.merge.kernels import fusable, sum_models
from bambo.merge.live import check_not_aliased, module_targets, write
from bambo.merge.merger import Coefficients, Merger
from bambo.merge.ops import CutMasker, MagnitudeCut
from bambo.merge.task_vectors import StateDict, check_same_structure, expert_labels
from bambo.weights import LazySafetensors, tensor_meta

Engine = Literal["auto", "memory", "streaming"]
ENGINES: tuple[str, ...] = ("auto", "memory", "streaming")
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_CHUNK = 1 << 18  # entries per chunk of an elementwise merge: 1 MiB of float32 per buffer


class LazyTaskVectors:
    """Base and experts kept as (lazy) state dicts; task vectors are formed per tensor on demand.

    Validation reads only safetensors headers (shapes and dtypes), with the same rules and
    messages as :class:`~bambo.merge.TaskVectors`.

    Args:
        base: State dict of the pretrained model (lazy or in memory).
        experts: State dicts of the fine-tuned models, same keys and shapes.
        expert_names: Labels for the experts (default ``expert0``, ...).
        frozen: Names of floating tensors that are not merged.

    Attributes:
        base: Name -> ``meta`` tensor (shape and dtype only), in the base's order.
        base_weights: The base state dict.
        expert_weights: The experts' state dicts.

    Raises:
        ModelMismatchError: As for :class:`~bambo.merge.TaskVectors`.
    """

    def __init__(
        self,
        base: StateDict,
        experts: Sequence[StateDict],
        expert_names: Sequence[str] | None = None,
        frozen: Iterable[str] = (),
    ) -> None:
        names = expert_labels(experts, expert_names)
        self.base: dict[str, Tensor] = {key: tensor_meta(base, key) for key in base}
        for label, expert in zip(names, experts, strict=True):
            check_same_structure(self.base, {key: tensor_meta(expert, key) for key in expert}, label)
        frozen = set(frozen)
        unknown = frozen - set(self.base)
        if unknown:
            raise ModelMismatchError(f"frozen names not in the model: {sorted(unknown)}")
        self.expert_names: list[str] = names
        self.base_weights = base
        self.expert_weights = list(experts)
        self._merged = [k for k, t in self.base.items() if t.is_floating_point() and k not in frozen]

    @property
    def n_experts(self) -> int:
        """Number of experts N."""
        return len(self.expert_names)

    @property
    def merged_names(self) -> list[str]:
        """Names of the tensors that are merged, in the base's order."""
        return list(self._merged)

    @property
    def copied_names(self) -> list[str]:
        """Names of the tensors copied from the base unchanged."""
        merged = set(self._merged)
        return [k for k in self.base if k not in merged]

    def nbytes(self) -> int:
        """Bytes of one model (the base) in its own dtypes."""
        return sum(t.numel() * t.element_size() for t in self.base.values())

    def load(self, key: str) -> tuple[Tensor, Tensor]:
        """The base tensor ``key`` in float32 (float64 stays) and the experts' task vectors.

        Returns:
            ``(base, vectors)`` of shapes ``shape`` and ``(N, *shape)``, in the compute dtype.
        """
        raw = self.base_weights[key]
        compute = torch.float32 if raw.dtype in _LOW_PRECISION else raw.dtype
        base = raw.to(compute)
        vectors = torch.empty((self.n_experts, *base.shape), dtype=compute)
        for i, expert in enumerate(self.expert_weights):
            torch.sub(expert[key].to(compute), base, out=vectors[i])
        return base, vectors


class StreamingMerger(Merger):
    """Merges tensor by tensor from (lazy) state dicts; the interface of :class:`~bambo.merge.Merger`.

    Merging into a model on an accelerator (``merge(c, into=model)`` with the model on CUDA) runs an
    elementwise method's arithmetic on that device: chunks are read into pinned host memory, copied
    over and merged there, straight into the model's parameters. The N + 1 models' tensors (in their
    dtype) stay on the device after the first merge while they fit in half of its free memory
    (``keep_resident=None``), tensor by tensor in the model's order; the rest keep streaming from
    disk. ``keep_resident=True`` keeps every tensor wherever the target lives (the CPU too: the
    models then sit in RAM in their own dtype, half the in-memory engine's float32 stacks);
    ``False`` never keeps any. Other methods (TIES, DARE, ...) prepare and merge on the CPU and
    write the result to the device.

    Args:
        task_vectors: The lazy base and experts.
        method: A merge method instance (from the same registry as the in-memory engine).
        keep_resident: Keep the models' tensors on the target's device between merges
            (``None``: on an accelerator, while they fit).
    """

    def __init__(  # noqa: D107
        self, task_vectors: LazyTaskVectors, method: MergeMethod, keep_resident: bool | None = None
    ) -> None:
        method.check_experts(task_vectors.n_experts)
        self.task_vectors = task_vectors  # type: ignore[assignment] - duck-typed TaskVectors
        self.method = method
        self.n_coefficients = method.n_coefficients(task_vectors.n_experts)
        self.keep_resident = keep_resident
        self._merged = set(task_vectors.merged_names)
        self._chunks: dict[torch.dtype, tuple[Tensor | None, Tensor, Tensor]] = {}
        self._device_chunks: dict[tuple[torch.dtype, str], tuple[Tensor | None, Tensor, Tensor]] = {}
        self._resident: dict[str, Tensor] = {}  # key -> (N + 1, numel) in the model's dtype, on the device
        self._resident_budget: dict[str, int] = {}  # device -> bytes still allowed
        self._cuts: dict[str, list[MagnitudeCut]] = {}  # key -> each expert's trim (masked methods)

    def _merged_tensor(self, key: str, coefficients: Coefficients) -> Tensor:
        c = self._coefficients_for(coefficients, key)
        base, vectors = self.task_vectors.load(key)
        prepared = self.method.prepare(key, vectors)
        del vectors
        return self.method.merge_tensor(base, prepared.to(base.dtype), c.to(base.dtype))

    @property
    def resident_nbytes(self) -> int:
        """Bytes of the models' tensors kept on a device between merges (see ``keep_resident``)."""
        return sum(t.numel() * t.element_size() for t in self._resident.values())

    def _magnitude_cuts(self, key: str) -> list[MagnitudeCut]:
        """For a ``masked`` method: each expert's :class:`~bambo.merge.ops.MagnitudeCut` of ``key``.

        Computed on the first merge by the method's selection (:meth:`MergeMethod.keep_selector`)
        over chunks of the task vectors read as for a merge (two passes for float32), then kept:
        a few integers per tensor and expert, the coefficient-independent part of the trim.
        """
        cuts = self._cuts.get(key)
        if cuts is None:
            meta = self.task_vectors.base[key]
            compute = torch.float32 if meta.dtype in _LOW_PRECISION else meta.dtype
            selectors = [
                self.method.keep_selector(key, meta.numel(), compute) for _ in range(self.task_vectors.n_experts)
            ]
            while not selectors[0].done:
                for _, rows in self._read_chunks(key, vectors=True):
                    for selector, vector in zip(selectors, rows[1:], strict=True):
                        selector.observe(vector)
                for selector in selectors:
                    selector.advance()
            cuts = self._cuts[key] = [selector.cut for selector in selectors]
        return cuts

    def _read_chunks(
        self, key: str, vectors: bool, span: range | None = None, slot: int = 0
    ) -> Iterator[tuple[int, Tensor]]:
        """``(start, rows)`` per chunk of ``key`` (of the chunk starts in ``span``), row 0 the base's.

        Reads the N + 1 models' entries in their dtype (:meth:`bambo.weights.LazySafetensors.read_into`
        from disk, a slice otherwise) into the reused scratch buffers of ``slot`` (one per worker
        thread). With ``vectors``, rows 1..N are the task vectors, formed in the compute dtype (the
        same per-entry arithmetic as :meth:`LazyTaskVectors.load`); without, the experts' entries in
        the models' dtype. ``rows`` is valid until the next chunk is asked for.
        """
        meta = self.task_vectors.base[key]
        compute = torch.float32 if meta.dtype in _LOW_PRECISION else meta.dtype
        models = [self.task_vectors.base_weights, *self.task_vectors.expert_weights]
        readers = [_chunk_reader(state, key) for state in models]
        n = meta.numel()
        raw, work, _ = self._chunk_buffers(meta.dtype, compute, min(n, _CHUNK))
        for start in range(0, n, _CHUNK) if span is None else span:
            m = min(_CHUNK, n - start)
            rows = work[slot, :, :m]
            source = rows if raw is None else raw[slot, :, :m]
            for i, read in enumerate(readers):
                got = read(source[i], start)
                if got.data_ptr() != source[i].data_ptr():
                    source[i].copy_(got)
            if not vectors:
                yield start, source
                continue
            if raw is not None:
                rows.copy_(source)
            rows[1:].sub_(rows[0])
            yield start, rows

    def _merge_chunked(self, key: str, coefficients: Coefficients, target: Tensor | None) -> Tensor:
        """An elementwise or masked method's merge of ``key``, in chunks that stay in cache.

        Task arithmetic and linear on bf16 or float32 models run the fused kernel
        (:func:`bambo.merge.kernels.sum_models`) on the models' entries, straight into the output.
        A tensor of several chunks is cut into contiguous parts, merged by up to ``_WORKERS``
        threads at once (no more than ``torch.get_num_threads()``); each reads its part from the
        files and merges it (``os.preadv`` and the kernel release the GIL). Otherwise, per chunk
        of task vectors a masked method zeroes what its cut drops (:meth:`_magnitude_cuts`) and
        the method merges the chunk. Either way: the same per-entry arithmetic as the in-memory
        engine, nothing tensor-sized beyond the output.
        """
        if not self.method.masked and target is not None and (target.device.type != "cpu" or self.keep_resident):
            return self._merge_on_device(key, coefficients, target)
        c = self._coefficients_for(coefficients, key)
        meta = self.task_vectors.base[key]
        compute = torch.float32 if meta.dtype in _LOW_PRECISION else meta.dtype
        direct = target is not None and target.is_contiguous() and target.device.type == "cpu"
        dest = target if direct else torch.empty(meta.shape, dtype=meta.dtype)
        dest_flat = dest.view(-1)
        if self.method.elementwise and fusable(dest_flat):
            weights = self.method.weights(c.to(compute)).to(torch.float32)  # in-memory engine's dtype first

            def part(span: range, slot: int) -> None:
                for start, rows in self._read_chunks(key, False, span, slot):
                    sum_models(rows, weights, dest_flat[start : start + rows.shape[1]])

            starts = range(0, meta.numel(), _CHUNK)
            spans = _split(starts, min(_WORKERS, torch.get_num_threads()))
            helpers = [_pool().submit(part, span, slot) for slot, span in enumerate(spans[1:], 1)]
            try:
                part(spans[0], 0)
            finally:
                for helper in helpers:
                    helper.result()  # waits, and raises what a helper raised
        else:
            maskers = [CutMasker(cut) for cut in self._magnitude_cuts(key)] if self.method.masked else []
            _, _, merged = self._chunk_buffers(meta.dtype, compute, min(meta.numel(), _CHUNK))
            c = c.to(compute)
            for start, rows in self._read_chunks(key, vectors=True):
                m = rows.shape[1]
                for masker, vector in zip(maskers, rows[1:], strict=False):
                    masker.apply(vector)
                dest_flat[start : start + m].copy_(self.method.merge_tensor(rows[0], rows[1:], c, out=merged[:m]))
        if target is not None and not direct:
            write(target, dest)
        return dest

    def _merge_on_device(self, key: str, coefficients: Coefficients, target: Tensor) -> Tensor:
        """:meth:`_merge_chunked` with the arithmetic on ``target``'s device, from resident tensors or
        chunks staged through (pinned, on CUDA) host memory; the result goes straight into ``target``."""
        device = target.device
        meta = self.task_vectors.base[key]
        compute = torch.float32 if meta.dtype in _LOW_PRECISION else meta.dtype
        c = self._coefficients_for(coefficients, key).to(device=device, dtype=compute)
        n = meta.numel()
        stack = self._resident.get(key)
        keep = stack is None and self._may_keep(key, device)
        if keep:
            stack = torch.empty((self.task_vectors.n_experts + 1, n), dtype=meta.dtype, device=device)
        staging, rows_all, merged = self._device_buffers(meta.dtype, compute, device, min(n, _CHUNK))
        readers = None
        if stack is None or keep:
            models = [self.task_vectors.base_weights, *self.task_vectors.expert_weights]
            readers = [_chunk_reader(state, key) for state in models]
        direct = target.is_contiguous()
        out_flat = target.view(-1) if direct else torch.empty(n, dtype=meta.dtype, device=device)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            rows = rows_all[:, :m]
            if readers is not None:
                for i, read in enumerate(readers):
                    host = staging[i, :m] if staging is not None else torch.empty(m, dtype=meta.dtype)
                    got = read(host, start)
                    if keep:
                        stack[i, start : start + m].copy_(got)  # type: ignore[index]
                    rows[i].copy_(got)
            else:
                rows.copy_(stack[:, start : start + m])  # type: ignore[index]
            rows[1:].sub_(rows[0])
            out_flat[start : start + m].copy_(self.method.merge_tensor(rows[0], rows[1:], c, out=merged[:m]))
        if keep:
            self._resident[key] = stack  # type: ignore[assignment]
        if not direct:
            write(target, out_flat.view(meta.shape))
        return target

    def _may_keep(self, key: str, device: torch.device) -> bool:
        """Whether ``key``'s N + 1 tensors may stay on ``device`` (see the class docstring)."""
        if self.keep_resident is False:
            return False
        if self.keep_resident is None and device.type == "cpu":
            return False
        meta = self.task_vectors.base[key]
        size = (self.task_vectors.n_experts + 1) * meta.numel() * meta.element_size()
        if self.keep_resident:
            return True
        name = str(device)
        if name not in self._resident_budget:
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
            self._resident_budget[name] = free // 2
        if size > self._resident_budget[name]:
            return False
        self._resident_budget[name] -= size
        return True

    def _device_buffers(
        self, dtype: torch.dtype, compute: torch.dtype, device: torch.device, size: int
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """Pinned host staging (CUDA only) in the models' dtype, then rows and result on ``device``."""
        key = (dtype, str(device))
        buffers = self._device_chunks.get(key)
        if buffers is None or buffers[1].shape[1] < size:
            rows = self.task_vectors.n_experts + 1
            pinned = device.type == "cuda"
            buffers = (
                torch.empty((rows, size), dtype=dtype, pin_memory=True) if pinned else None,
                torch.empty((rows, size), dtype=compute, device=device),
                torch.empty(size, dtype=compute, device=device),
            )
            self._device_chunks[key] = buffers
        return buffers

    def _chunk_buffers(
        self, dtype: torch.dtype, compute: torch.dtype, size: int
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """Reused scratch, one set per worker thread (see :meth:`_read_chunks`): the N + 1 models'
        chunks in their dtype, shape ``(_WORKERS, N + 1, size)`` (``None`` when it is ``compute``),
        the same in ``compute`` (base, then the task vectors), and the merged chunk, shape ``(size,)``."""
        buffers = self._chunks.get(dtype)
        if buffers is None or buffers[1].shape[2] < size:
            rows = self.task_vectors.n_experts + 1
            buffers = (
                None if dtype == compute else torch.empty((_WORKERS, rows, size), dtype=dtype),
                torch.empty((_WORKERS, rows, size), dtype=compute),
                torch.empty(size, dtype=compute),
            )
            self._chunks[dtype] = buffers
        return buffers

    def merge(
        self,
        coefficients: Coefficients,
        out: MutableMapping[str, Tensor] | None = None,
        into: nn.Module | None = None,
    ) -> dict[str, Tensor]:
        """Merge the models one tensor at a time; arguments as for :meth:`Merger.merge`.

        Returns:
            A state dict in the base's dtypes and order (``out``'s or the model's tensors if given).
        """
        if into is not None and out is not None:
            raise BoundsError("give either out= or into=, not both")
        meta = self.task_vectors.base
        if into is not None:
            targets: Mapping[str, Tensor] | None = module_targets(into, meta, meta)
            if not isinstance(self.task_vectors.base_weights, LazySafetensors):
                check_not_aliased(targets, self.task_vectors.base_weights)  # type: ignore[arg-type]
        else:
            if out is not None:
                self._check_buffers(out)
            targets = out
        result: dict[str, Tensor] = {}
        for key, shape in meta.items():
            if key in self._merged and (self.method.elementwise or self.method.masked):
                target = None if targets is None else targets[key]
                result[key] = self._merge_chunked(key, coefficients, target)
                continue
            if key in self._merged:
                value = self._merged_tensor(key, coefficients)
            else:
                value = self.task_vectors.base_weights[key]
            if targets is not None:
                result[key] = write(targets[key], value)
            elif value.dtype != shape.dtype:
                result[key] = value.to(shape.dtype)
            else:
                result[key] = value if key in self._merged else value.clone()
        if out is not None:
            out.update(result)
            return dict(out)
        return result

    def new_buffers(self) -> dict[str, Tensor]:
        """Uninitialised output buffers (the base's keys, shapes, dtypes) for ``merge(..., out=)``."""
        return {key: torch.empty(t.shape, dtype=t.dtype) for key, t in self.task_vectors.base.items()}


def _chunk_reader(state: StateDict, key: str) -> Callable[[Tensor, int], Tensor]:
    """``read(buffer, start)``: entries ``start .. start + len(buffer)`` of tensor ``key``.

    From disk into ``buffer`` for :class:`~bambo.weights.LazySafetensors`; a view of the flattened
    tensor otherwise (``buffer`` is then unused: the slice is already in memory).
    """
    if isinstance(state, LazySafetensors):
        return lambda buffer, start: state.read_into(key, buffer, start)
    flat = state[key].reshape(-1)
    return lambda buffer, start: flat[start : start + buffer.numel()]


_WORKERS = 2  # threads that merge the parts of one tensor (the main thread and _pool()'s)
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The helper threads (``_WORKERS - 1``) that merge parts of a tensor for every streaming merger."""
    global _POOL  # noqa: PLW0603 - one pool per process, made on first use
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_WORKERS - 1, thread_name_prefix="bambo-merge")
    return _POOL


def _split(starts: range, parts: int) -> list[range]:
    """``starts`` (chunk starts) cut into at most ``parts`` contiguous parts of nearly equal length."""
    size = max(1, -(-len(starts) // parts))
    return [starts[i : i + size] for i in range(0, len(starts), size)]


def in_memory_bytes(task_vectors: LazyTaskVectors) -> int:
    """What the in-memory engine would hold: the N+1 models, plus the prepared float32 task vectors.

    The experts' state dicts are dropped once the task vectors are formed, but they are all
    loaded at once first; the prepared vectors of half-precision models are float32.
    """
    n = task_vectors.n_experts
    model = task_vectors.nbytes()
    merged = sum(task_vectors.base[k].numel() for k in task_vectors.merged_names)
    return (1 + n) * model + n * merged * 4


def choose_engine(task_vectors: LazyTaskVectors, engine: str = "auto", memory_fraction: float = 0.5) -> str:
    """``"memory"`` or ``"streaming"``: ``auto`` streams when the in-memory engine would need more than
    ``memory_fraction`` of the available memory (``psutil.virtual_memory().available``).

    Raises:
        ConfigError: An unknown engine name.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown merge engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    available = psutil.virtual_memory().available
    return "streaming" if in_memory_bytes(task_vectors) > memory_fraction * available else "memory"
