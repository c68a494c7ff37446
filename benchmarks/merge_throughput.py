"""Merge throughput on a ~1e8-parameter model, beside a plain copy of the same bytes.

Run: ``python -m benchmarks.merge_throughput [--params 1e8] [--experts 2] [--repeats 5]``
(or ``make bench-merge``). Prints a table and writes
``benchmarks/results/merge_throughput.md``.

The model is a synthetic decoder laid out like a Llama checkpoint (embeddings,
``model.layers.{i}`` attention and MLP matrices, final norm, ``lm_head``) in
float32, sized to about ``--params`` parameters; experts are the base plus small
random task vectors. Figures:

- merges/s: full merged state dicts produced per second;
- out GB/s: bytes of the merged model written per second;
- wall / CPU s per merge: the fastest run's wall seconds and the CPU seconds of this
  process (all threads) in that run;
- vs copy: out GB/s divided by that of a plain copy of the base measured in the
  same run: ``{k: v.clone()}`` for fresh outputs, ``buffer.copy_(v)`` for merges
  into reused buffers (``Merger.merge(c, out=...)``). That is the memory-bandwidth
  ceiling for producing those bytes; task arithmetic must also read the base and
  N task vectors (N + 2 streams against the copy's 2), so 2 / (N + 2) bounds it.
- output: "fresh" allocates the merged model (its pages are faulted in anew every
  merge, which costs as much as the arithmetic), "reused" writes into buffers.
"""

from __future__ import annotations

import argparse
import gc
import math

import torch

from bambo.merge import Merger, TaskVectors, available_merge_methods, get_merge_method
from bambo.space import MergeSpace
from benchmarks.common import RESULTS, Clock, best_times, machine_header


def synthetic_llama(n_params: float, hidden: int = 768, vocab: int = 32_000, seed: int = 0) -> dict[str, torch.Tensor]:
    """A float32 state dict with Llama-style names and about ``n_params`` parameters."""
    g = torch.Generator().manual_seed(seed)
    per_layer = 4 * hidden * hidden + 3 * hidden * (4 * hidden) + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    n_layers = max(1, round((n_params - fixed) / per_layer))
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(vocab, hidden, generator=g) * 0.02}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{name}.weight"] = torch.randn(hidden, hidden, generator=g) * 0.02
        sd[p + "mlp.gate_proj.weight"] = torch.randn(4 * hidden, hidden, generator=g) * 0.02
        sd[p + "mlp.up_proj.weight"] = torch.randn(4 * hidden, hidden, generator=g) * 0.02
        sd[p + "mlp.down_proj.weight"] = torch.randn(hidden, 4 * hidden, generator=g) * 0.02
        sd[p + "input_layernorm.weight"] = torch.ones(hidden)
        sd[p + "post_attention_layernorm.weight"] = torch.ones(hidden)
    sd["model.norm.weight"] = torch.ones(hidden)
    sd["lm_head.weight"] = torch.randn(vocab, hidden, generator=g) * 0.02
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=1e8, help="approximate parameter count")
    parser.add_argument("--experts", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4, help="uniform blocks for block granularity")
    parser.add_argument("--hidden", type=int, default=768, help="hidden size of the synthetic model")
    parser.add_argument("--vocab", type=int, default=32_000, help="vocabulary size of the synthetic model")
    parser.add_argument("--methods", default=",".join(available_merge_methods()), help="comma-separated methods")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = Clock()

    base = synthetic_llama(args.params, hidden=args.hidden, vocab=args.vocab)
    n_params = sum(v.numel() for v in base.values())
    n_bytes = sum(v.numel() * v.element_size() for v in base.values())
    g = torch.Generator().manual_seed(1)
    experts = [{k: v + 0.002 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(args.experts)]
    tv = TaskVectors(base, experts)
    del experts

    rows = []
    buffers = {k: torch.empty_like(v) for k, v in base.items()}
    clone = best_times(lambda: {k: v.clone() for k, v in base.items()}, args.repeats)
    copy = best_times(lambda: [buffers[k].copy_(v) for k, v in base.items()], args.repeats)
    ceiling = {"fresh": n_bytes / clone.wall / 1e9, "reused": n_bytes / copy.wall / 1e9}
    rows.append(("torch clone (ceiling)", "-", "fresh", clone, ceiling["fresh"], 1.0))
    rows.append(("torch copy_ (ceiling)", "-", "reused", copy, ceiling["reused"], 1.0))
    for name in args.methods.split(","):
        # Build each method's merger only after the previous one is freed.
        merger = None
        gc.collect()
        merger = Merger(tv, get_merge_method(name))
        spaces = {
            "model": MergeSpace.model_wise(tv, merger.n_coefficients),
            f"block (K={args.blocks})": MergeSpace.block_wise(tv, args.blocks, merger.n_coefficients),
        }
        for label, space in spaces.items():
            x = space.bounds[0] + 0.37 * (space.bounds[1] - space.bounds[0])
            coefficients = space.to_coefficients(x)
            for output in ("fresh", "reused"):
                target = buffers if output == "reused" else None
                timing = best_times(
                    lambda merger=merger, c=coefficients, target=target: merger.merge(c, out=target), args.repeats
                )
                gbs = n_bytes / timing.wall / 1e9
                rows.append((name, label, output, timing, gbs, gbs / ceiling[output]))

    header = (
        f"# Merge throughput\n\n{machine_header()}\n"
        f"- model: synthetic Llama layout, {n_params / 1e6:.1f}M float32 parameters "
        f"({n_bytes / 1e9:.2f} GB), {args.experts} experts, best of {args.repeats}\n"
        f"- command: `python -m benchmarks.merge_throughput --params {args.params:g} --experts {args.experts} "
        f"--blocks {args.blocks} --repeats {args.repeats} --threads {args.threads}`\n"
        f"- this run: {clock.elapsed().text()} (this process, all threads)\n"
    )
    table = [
        "| method | granularity | output | merges/s | out GB/s | vs copy | wall s / merge | CPU s / merge |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {m} | {g_} | {o} | {1 / t.wall:.2f} | {gb:.2f} | {ratio:.2f} | {t.wall:.3f} | {t.cpu:.3f} |"
        for m, g_, o, t, gb, ratio in rows
    ]
    text = header + "\n" + "\n".join(table) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        suffix = "" if math.isclose(args.params, 1e8) else f"_{args.params:.0e}"
        (RESULTS / f"merge_throughput{suffix}.md").write_text(text)


if __name__ == "__main__":
    main()
