"""Device check: merges into a live Llama on the GPU and a short generation with it.

Run where a CUDA device is present: ``python -m benchmarks.gpu_check --params 1e9 --experts 4``.
It builds (or reuses) the synthetic sharded bf16 folders of :mod:`benchmarks.large_merge`, makes
an empty ``LlamaForCausalLM`` of that layout on the device, and measures:

- the streaming engine merging into it (:meth:`bambo.merge.streaming.StreamingMerger.merge` with
  ``into=model``): the first merge reads the folders and keeps what fits on the device, later
  merges run from there (task arithmetic, then TIES, whose preparation runs on the CPU);
- the same task-arithmetic merge into a CPU copy of the model, in the same run, as the peer;
- greedy generation of ``--new-tokens`` tokens for a seeded batch of prompts (the weights are
  synthetic, so only the speed means something: no accuracy is claimed).

Without a CUDA device it prints why it measured nothing and exits 0 (the test suite and CI never
need a GPU). ``--out FILE`` writes the markdown report (command, date, machine and figures).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bambo.benchmarks.environment import machine_header
from benchmarks.large_merge import write_model


def _timed(step, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best wall and CPU seconds of ``repeats`` calls of ``step`` (the device synchronised)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    return best


def _empty_llama(folder: Path, device: torch.device) -> torch.nn.Module:
    """The folder's Llama architecture, uninitialised, in bf16 on ``device`` (every merge overwrites it)."""
    import transformers

    config = transformers.LlamaConfig(**json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    return model.to_empty(device=device).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=1e9)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bambo_large_merge")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--device", default="cuda", help="cpu runs the same steps (a smoke test of this script)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing measured")
        return 0
    from bambo.merge import get_merge_method
    from bambo.merge.streaming import LazyTaskVectors, StreamingMerger
    from bambo.weights import load_state_dict

    started = time.perf_counter()
    gpu = torch.device(args.device)
    cuda = gpu.type == "cuda"
    root = args.cache / f"p{args.params:g}"
    folders = [
        write_model(root / ("base" if e == 0 else f"expert{e}"), args.params, e, int(0.5e9))
        for e in range(args.experts + 1)
    ]
    states = [load_state_dict(f) for f in folders]
    lazy = LazyTaskVectors(states[0], states[1:])
    model_gb = lazy.nbytes() / 1e9
    c = torch.full((args.experts,), 0.5 / args.experts)
    rows: list[tuple[str, float, float]] = []

    model = _empty_llama(folders[0], gpu)
    if cuda:
        torch.cuda.reset_peak_memory_stats(gpu)
    merger = StreamingMerger(lazy, get_merge_method("task_arithmetic"))
    first = _timed(lambda: merger.merge(c, into=model), 1, gpu)
    rows.append(("task arithmetic into the model on the device, first merge (reads the folders)", *first))
    later = _timed(lambda: merger.merge(c, into=model), args.repeats, gpu)
    rows.append(("task arithmetic into the model on the device, later merges", *later))
    resident_gb = merger.resident_nbytes / 1e9
    ties = StreamingMerger(lazy, get_merge_method("ties"))
    ties_time = _timed(lambda: ties.merge(c, into=model), 1, gpu)
    rows.append(("TIES into the model on the device (prepared on the CPU)", *ties_time))
    peak_gb = torch.cuda.max_memory_allocated(gpu) / 1e9 if cuda else float("nan")

    vocab = model.config.vocab_size
    prompts = torch.randint(0, vocab, (8, 16), generator=torch.Generator().manual_seed(0)).to(gpu)
    merger.merge(c, into=model)
    with torch.no_grad():
        generate = _timed(
            lambda: model.generate(
                prompts, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0
            ),
            args.repeats,
            gpu,
        )
    tokens_per_s = prompts.shape[0] * args.new_tokens / generate[0]

    cpu_model = _empty_llama(folders[0], torch.device("cpu"))
    cpu_merger = StreamingMerger(lazy, get_merge_method("task_arithmetic"))
    rows.append(
        (
            "task arithmetic into a CPU model (the peer)",
            *_timed(lambda: cpu_merger.merge(c, into=cpu_model), 1, torch.device("cpu")),
        )
    )

    lines = [
        "# Device check: merging into a live model on the GPU",
        "",
        machine_header(("torch", "transformers", "bambo")),
        f"- device: {torch.cuda.get_device_name(gpu) if cuda else gpu}",
        f"- command: `python -m benchmarks.gpu_check --params {args.params:g} --experts {args.experts} "
        f"--repeats {args.repeats} --new-tokens {args.new_tokens} --device {args.device}`; this run: wall "
        f"{time.perf_counter() - started:.0f} s",
        f"- model: synthetic bf16 Llama, {model_gb:.2f} GB, base + {args.experts} experts from sharded folders",
        f"- kept on the device after the first merge: {resident_gb:.2f} GB; peak GPU memory allocated {peak_gb:.2f} GB",
        "",
        "| what | s / merge (best) | CPU s | model GB written / s |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {wall:.3f} | {cpu:.3f} | {model_gb / wall:.2f} |" for name, wall, cpu in rows),
        "",
        f"- greedy generation, batch {prompts.shape[0]} x {args.new_tokens} new tokens: {generate[0]:.3f} s, "
        f"{tokens_per_s:.0f} tokens/s (synthetic weights: speed only, no accuracy claimed)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
