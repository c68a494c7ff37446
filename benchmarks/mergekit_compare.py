"""bambo's merge beside mergekit's merge of the same configuration, disk to disk.

Run: ``python -m benchmarks.mergekit_compare [--params 1e8] [--repeats 3]`` (needs mergekit,
which is not a bambo dependency: ``pip install mergekit -c constraints.txt``). Writes
``benchmarks/results/merge_vs_mergekit.md``.

A base and two experts laid out like a Llama checkpoint (:func:`benchmarks.merge_throughput.synthetic_llama`,
float32, about ``--params`` parameters) are written as Hugging Face folders. Both tools then
produce the task-arithmetic merge with weights 0.5/0.5 from those folders into a new folder:

- **mergekit**: ``run_merge`` on the configuration bambo exports for that merge
  (:func:`bambo.export.mergekit_config`), lazy loading and its default options (CPU);
- **bambo**: load the three checkpoints (lazily), compute task vectors, merge, write
  safetensors (:func:`bambo.export.export_merge` on a :class:`~bambo.problem.MergeProblem`);
- **bambo, in memory**: only the merge, models already loaded and task vectors computed once
  (what a search pays per candidate).

The merged weights of mergekit and bambo are compared (max absolute difference printed).
Each time is the best of ``--repeats`` runs by wall time, with the CPU seconds of this process
(all threads; mergekit's and bambo's work runs in it) in that run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import yaml

from bambo.export import export_merge, save_safetensors
from bambo.merge import TaskVectors
from bambo.merge_problem import MergeProblem, merge_setup
from bambo.mergekit_config import mergekit_config
from bambo.problem import Objective
from bambo.weights import load_state_dict
from benchmarks.common import RESULTS, Clock, best_times, machine_header
from benchmarks.merge_throughput import synthetic_llama

HIDDEN, VOCAB = 768, 32_000


def write_folder(sd: dict[str, torch.Tensor], folder: Path) -> Path:
    """A Hugging Face Llama folder (config.json + model.safetensors) for a synthetic state dict."""
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": 4 * HIDDEN,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "num_hidden_layers": layers,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_safetensors(sd, folder / "model.safetensors")
    return folder


def problem_for(paths: list[Path]) -> MergeProblem:
    """A model-level task-arithmetic merge problem over the checkpoints (its evaluator is never called)."""
    states = [load_state_dict(p) for p in paths]
    tv = TaskVectors(states[0], states[1:], expert_names=["a", "b"])
    merger, space = merge_setup(tv, "task_arithmetic", "model", 1, (0.0, 1.0), {}, "uniform")
    return MergeProblem(merger, space, lambda sd: {}, [Objective(name="a"), Objective(name="b")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=1e8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    x = torch.tensor([0.5, 0.5], dtype=torch.float64)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = synthetic_llama(args.params, HIDDEN, VOCAB, seed=0)
        n_params = sum(v.numel() for v in base.values())
        paths = [write_folder(base, root / "base")]
        for i in (1, 2):
            g = torch.Generator().manual_seed(i)
            paths.append(
                write_folder({k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}, root / f"e{i}")
            )
        del base
        problem = problem_for(paths)
        config = MergeConfiguration.model_validate(mergekit_config(problem, x, paths))
        (root / "mergekit.yml").write_text(yaml.safe_dump(mergekit_config(problem, x, paths)))
        options = MergeOptions(copy_tokenizer=False, quiet=True, lazy_unpickle=True)
        t_mergekit = best_times(lambda: run_merge(config, str(root / "mk"), options), args.repeats, warmup=0)
        t_bambo = best_times(
            lambda: export_merge(problem_for(paths), x, root / "bb" / "m.safetensors", "safetensors", None),
            args.repeats,
            warmup=0,
        )
        loaded = problem_for(paths)
        t_memory = best_times(lambda: loaded.merge(x), args.repeats, warmup=0)
        merged_mk = load_state_dict(root / "mk")
        merged_bb = load_state_dict(root / "bb" / "m.safetensors")
        diff = max(float((merged_mk[k].float() - merged_bb[k].float()).abs().max()) for k in merged_bb)
    gb = n_params * 4 / 1e9
    rows = [
        ("mergekit run_merge (disk to disk)", t_mergekit),
        ("bambo export_merge (disk to disk)", t_bambo),
        ("bambo Merger.merge (in memory, per search candidate)", t_memory),
    ]
    lines = [
        "# bambo's merge beside mergekit's (task arithmetic, 0.5/0.5, two experts)",
        "",
        machine_header(("torch", "bambo", "mergekit")),
        f"- command: `python -m benchmarks.mergekit_compare --params {args.params:g} --repeats {args.repeats}`",
        f"- model: {n_params / 1e6:.1f}M float32 parameters ({gb:.2f} GB per checkpoint), Llama layout; best of "
        f"{args.repeats}; max |mergekit - bambo| over all merged tensors: {diff:.2e}",
        f"- this run: {clock.elapsed().text()} (this process, all threads)",
        "",
        "| what | wall s per merge | CPU s per merge | merges/s | output GB/s | vs mergekit |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {t.wall:.2f} | {t.cpu:.2f} | {1 / t.wall:.2f} | {gb / t.wall:.2f} | "
            f"{t_mergekit.wall / t.wall:.2f}x |"
            for name, t in rows
        ],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        (args.output / "merge_vs_mergekit.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
