"""The streaming merge engine equals the in-memory one; merging into a live model; engine choice."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bambo.cli import app
from bambo.errors import ConfigError, ModelMismatchError
from bambo.export import export_merge
from bambo.merge import Merger, TaskVectors, available_merge_methods, get_merge_method
from bambo.merge.streaming import LazyTaskVectors, StreamingMerger, choose_engine, in_memory_bytes
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective
from bambo.space import MergeSpace
from bambo.weights import load_state_dict
from tests.run_helpers import write_toy_models

transformers = pytest.importorskip("transformers")

GRANULARITIES = ("model", "layer", "block")


def _config(dtype: torch.dtype = torch.float32):
    return transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        torch_dtype=dtype,
    )


def _tiny_llamas(folder: Path, dtype: torch.dtype = torch.float32, n: int = 3) -> list[Path]:
    """A base and ``n - 1`` experts, sharded HF folders (an index and several shards each)."""
    paths = []
    for i in range(n):
        with torch.random.fork_rng():  # seeded weights without touching the global generator other tests use
            torch.manual_seed(i)
            model = transformers.LlamaForCausalLM(_config(dtype)).to(dtype)
        path = folder / f"m{i}"
        model.save_pretrained(path, safe_serialization=True, max_shard_size="20KB")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def llamas(tmp_path_factory) -> list[Path]:
    return _tiny_llamas(tmp_path_factory.mktemp("llamas"))


def _engines(paths: list[Path], cast: torch.dtype | None = None) -> tuple[TaskVectors, LazyTaskVectors]:
    lazy = [load_state_dict(p) for p in paths]
    eager = [{k: (sd[k] if cast is None else sd[k].to(cast)) for k in sd} for sd in lazy]
    return TaskVectors(eager[0], eager[1:]), LazyTaskVectors(lazy[0], lazy[1:])


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert list(a) == list(b)
    assert all(a[k].dtype == b[k].dtype for k in a)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_the_index_is_sharded(llamas):
    assert (llamas[0] / "model.safetensors.index.json").exists()
    assert len(list(llamas[0].glob("model-*.safetensors"))) > 2


@pytest.mark.parametrize("method", available_merge_methods())
def test_streaming_equals_in_memory_for_every_method_and_granularity(llamas, method):
    tv, lazy = _engines(llamas)
    m = get_merge_method(method)
    memory, streaming = Merger(tv, m), StreamingMerger(lazy, m)
    g = torch.Generator().manual_seed(0)
    for granularity in GRANULARITIES:
        space = MergeSpace.for_granularity(tv, granularity, memory.n_coefficients, 2)
        x = torch.rand(space.dim, generator=g, dtype=torch.float64)
        c = space.to_coefficients(x)
        assert _max_diff(memory.merge(c), streaming.merge(c)) <= 1e-6, granularity


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "slerp"])
def test_bf16_streaming_equals_a_float32_reference_rounded_once(tmp_path, method):
    paths = _tiny_llamas(tmp_path, torch.bfloat16)
    tv32, lazy = _engines(paths, cast=torch.float32)
    assert next(iter(lazy.base.values())).dtype == torch.bfloat16
    m = get_merge_method(method)
    space = MergeSpace.for_granularity(tv32, "block", m.n_coefficients(2), 2)
    c = space.to_coefficients(torch.rand(space.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    reference = {k: v.to(torch.bfloat16) for k, v in Merger(tv32, m).merge(c).items()}
    streamed = StreamingMerger(lazy, m).merge(c)
    assert all(v.dtype == torch.bfloat16 for v in streamed.values())
    assert all(torch.equal(streamed[k], reference[k]) for k in reference)


def _model(path: Path) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.mark.parametrize("engine", ["memory", "streaming"])
def test_merge_into_a_live_model_writes_in_place_and_equals_the_state_dict_merge(llamas, engine):
    tv, lazy = _engines(llamas)
    m = get_merge_method("ties")
    merger = Merger(tv, m) if engine == "memory" else StreamingMerger(lazy, m)
    model = _model(llamas[0])
    pointers = {k: t.data_ptr() for k, t in model.state_dict().items()}
    space = MergeSpace.for_granularity(tv, "layer", 2, 2)
    for seed in range(2):
        x = torch.rand(space.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        c = space.to_coefficients(x)
        merger.merge(c, into=model)
        state = model.state_dict()
        assert {k: t.data_ptr() for k, t in state.items()} == pointers
        assert _max_diff({k: state[k] for k in tv.base}, merger.merge(c)) == 0.0


def test_merge_into_a_bf16_model_reuses_its_scratch_buffers(tmp_path):
    paths = _tiny_llamas(tmp_path, torch.bfloat16, n=3)
    lazy = [load_state_dict(p) for p in paths]
    tv = TaskVectors(*(lambda sds: (sds[0], sds[1:]))([{k: sd[k] for k in sd} for sd in lazy]))
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    model = _model(paths[0]).to(torch.bfloat16)
    merger.merge(torch.tensor([0.3, 0.6]), into=model)
    scratch = {k: (a.data_ptr(), b.data_ptr()) for k, (a, b) in merger._scratch._buffers.items()}
    largest = max(t.numel() for t in tv.base.values())
    assert all(a.numel() == largest for a, _ in merger._scratch._buffers.values())
    merger.merge(torch.tensor([0.5, 0.1]), into=model)
    assert {k: (a.data_ptr(), b.data_ptr()) for k, (a, b) in merger._scratch._buffers.items()} == scratch
    expected = merger.merge(torch.tensor([0.5, 0.1]))
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


def test_a_model_sharing_the_base_tensors_is_refused(llamas):
    model = _model(llamas[0])
    base = model.state_dict()
    experts = [load_state_dict(p) for p in llamas[1:]]
    merger = Merger(TaskVectors(base, [{k: e[k] for k in e} for e in experts]), get_merge_method("task_arithmetic"))
    with pytest.raises(ModelMismatchError, match="shares tensor"):
        merger.merge(torch.tensor([0.5, 0.5]), into=model)


def test_an_evaluator_naming_model_gets_the_live_model(llamas):
    model = _model(llamas[0])
    ids = torch.arange(8).unsqueeze(0)
    seen = []

    def evaluate(state_dict, model):
        seen.append(model)
        with torch.no_grad():
            return {"logit": float(model(ids).logits.mean())}

    problem = MergeProblem.from_models(
        llamas[0],
        {"a": llamas[1], "b": llamas[2]},
        evaluate,
        [Objective(name="logit")],
        granularity="model",
        engine="streaming",
        model=model,
    )
    assert isinstance(problem.merger, StreamingMerger)
    x = torch.tensor([0.2, 0.7], dtype=torch.float64)
    value = problem.metrics(x)["logit"]
    assert seen == [model]
    fresh = _model(llamas[0])
    fresh.load_state_dict(problem.merge(x), strict=False)
    with torch.no_grad():
        assert value == float(fresh(ids).logits.mean())


def test_engine_choice_follows_the_memory_estimate(llamas):
    _, lazy = _engines(llamas)
    need = in_memory_bytes(lazy)
    assert need > 3 * lazy.nbytes()
    assert choose_engine(lazy, "auto") == "memory"
    assert choose_engine(lazy, "auto", memory_fraction=1e-12) == "streaming"
    assert choose_engine(lazy, "memory", memory_fraction=1e-12) == "memory"


def test_export_of_a_streamed_merge_reloads_in_transformers(llamas, tmp_path):
    experts = {"a": llamas[1], "b": llamas[2]}
    problems = {
        engine: MergeProblem.from_models(
            llamas[0],
            experts,
            lambda sd: {},
            [Objective(name="s")],
            method="ties",
            granularity="block",
            blocks=2,
            partitioner="hybrid",
            engine=engine,
        )
        for engine in ("memory", "streaming")
    }
    assert isinstance(problems["streaming"].merger, StreamingMerger)
    assert type(problems["memory"].merger) is Merger
    x = torch.rand(problems["memory"].space.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ids = torch.arange(10).unsqueeze(0)
    logits = {}
    for engine, problem in problems.items():
        out = export_merge(problem, x, tmp_path / engine, fmt="hf", model_paths=[llamas[0], *experts.values()])
        with torch.no_grad():
            logits[engine] = _model(out)(ids).logits
    assert torch.equal(logits["memory"], logits["streaming"])


def test_a_run_config_forced_onto_the_streaming_engine_runs_end_to_end(tmp_path, monkeypatch):
    write_toy_models(tmp_path / "models")
    calls = []
    original = StreamingMerger.merge

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StreamingMerger, "merge", counted)
    config = {
        "models": {
            "base": "models/base.safetensors",
            "experts": {"a": "models/a.safetensors", "b": "models/b.safetensors"},
        },
        "merge": {"method": "ties", "granularity": "block", "blocks": 2, "partitioner": "uniform"}
        | {"engine": "streaming"},
        "evaluator": {"entry_point": "tests.run_helpers:toy_metrics", "options": {}},
        "objectives": [{"name": "a"}, {"name": "b"}],
        "strategy": {"name": "sobol"},
        "budget": 4,
        "batch_size": 2,
        "output": "run",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert len(calls) >= 4
    assert (tmp_path / "run").is_dir()


def test_the_copy_of_a_model_is_independent_of_the_base(llamas):
    # the documented remedy for a model sharing the base's tensors
    model = _model(llamas[0])
    base = model.state_dict()
    merger = Merger(TaskVectors(base, [load_state_dict(llamas[1])]), get_merge_method("task_arithmetic"))
    target = copy.deepcopy(model)
    before = {k: v.clone() for k, v in base.items()}
    merger.merge(torch.tensor([1.0]), into=target)
    assert all(torch.equal(base[k], before[k]) for k in base)


@pytest.mark.parametrize("method", ["task_arithmetic", "linear", "ties"])
def test_elementwise_methods_merged_in_chunks_equal_the_whole_tensor_merge(llamas, tmp_path, monkeypatch, method):
    """Elementwise methods, and TIES through its masks, merged in chunks equal the whole-tensor merge."""
    import bambo.merge.streaming as streaming

    assert get_merge_method(method).elementwise or get_merge_method(method).masked
    monkeypatch.setattr(streaming, "_CHUNK", 100)  # several chunks per tensor, a partial last one
    tv, lazy = _engines(llamas)
    m = get_merge_method(method)
    merger = StreamingMerger(lazy, m)
    space = MergeSpace.for_granularity(tv, "layer", 2, 2)
    c = space.to_coefficients(torch.rand(space.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    assert _max_diff(Merger(tv, m).merge(c), merger.merge(c)) <= 1e-6
    model = _model(llamas[0])
    merger.merge(c, into=model)
    assert _max_diff({k: model.state_dict()[k] for k in tv.base}, merger.merge(c)) == 0.0
    paths = _tiny_llamas(tmp_path, torch.bfloat16)
    tv32, lazy16 = _engines(paths, cast=torch.float32)
    reference = {k: v.to(torch.bfloat16) for k, v in Merger(tv32, m).merge(c).items()}
    streamed = StreamingMerger(lazy16, m).merge(c)
    assert all(torch.equal(streamed[k], reference[k]) for k in reference)


def test_one_expert_with_the_hybrid_partitioner_is_refused_alike_on_both_engines(llamas):
    for engine in ("memory", "streaming"):
        with pytest.raises(ConfigError, match="all layer differences are zero"):
            MergeProblem.from_models(
                llamas[0],
                {"a": llamas[1]},
                lambda sd: {},
                [Objective(name="s")],
                granularity="block",
                blocks=2,
                partitioner="hybrid",
                engine=engine,
            )


@pytest.mark.parametrize("method", ["task_arithmetic", "linear"])
def test_resident_tensors_give_the_same_merges_and_are_read_once(llamas, method, monkeypatch):
    """keep_resident=True: the first merge reads the files and keeps the models; later ones read nothing."""
    _, lazy = _engines(llamas)
    m = get_merge_method(method)
    space = MergeSpace.for_granularity(lazy, "layer", m.n_coefficients(2), 2)
    streamed = StreamingMerger(lazy, m)
    resident = StreamingMerger(lazy, m, keep_resident=True)
    model = _model(llamas[0])
    draws = [torch.rand(space.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(3)]
    cs = [space.to_coefficients(x) for x in draws]
    expected = [streamed.merge(c) for c in cs]
    resident.merge(cs[0], into=model)
    assert set(resident._resident) == set(lazy.merged_names)
    assert resident.resident_nbytes == 3 * sum(lazy.base[k].numel() * 4 for k in lazy.merged_names)  # float32
    assert _max_diff({k: model.state_dict()[k] for k in lazy.base}, expected[0]) == 0.0
    reads = []
    monkeypatch.setattr(type(lazy.base_weights), "read_into", lambda *a, **k: reads.append(a[1]))
    for c, want in zip(cs[1:], expected[1:], strict=True):
        resident.merge(c, into=model)
        assert _max_diff({k: model.state_dict()[k] for k in lazy.base}, want) == 0.0
    assert reads == []


def test_nothing_stays_resident_on_the_cpu_by_default(llamas):
    _, lazy = _engines(llamas)
    merger = StreamingMerger(lazy, get_merge_method("task_arithmetic"))
    merger.merge(torch.tensor([0.4, 0.2]), into=_model(llamas[0]))
    assert merger._resident == {}


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU merge path runs in benchmarks/gpu_check.py"
)
@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_merge_into_a_cuda_model_equals_the_cpu_merge(llamas, method):
    _, lazy = _engines(llamas)
    m = get_merge_method(method)
    merger = StreamingMerger(lazy, m)
    model = _model(llamas[0]).to("cuda")
    for c in (torch.tensor([0.3, 0.6]), torch.tensor([0.5, 0.1])):
        merger.merge(c, into=model)
        expected = StreamingMerger(lazy, m).merge(c)
        state = model.state_dict()
        assert _max_diff({k: state[k].cpu() for k in lazy.base}, expected) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_magnitude_trim_keeps_the_largest_and_the_first_of_ties_whatever_the_chunking(dtype, monkeypatch):
    """TIES's trim by radix select equals a stable sort's choice, and chunked selection equals whole."""
    import bambo.merge.ops as ops

    g = torch.Generator().manual_seed(0)
    tied = (torch.randint(-3, 4, (50, 7), generator=g).float() / 8).to(dtype)  # many equal magnitudes, zeros
    for vector in (tied, torch.randn(333, generator=g).to(dtype), torch.zeros(9, dtype=dtype)):
        flat = vector.reshape(-1)
        for density in (0.05, 0.2, 0.5, 1.0):
            k = vector.numel() if density == 1.0 else math.ceil(density * vector.numel())
            order = torch.sort(flat.abs().double(), descending=True, stable=True).indices  # ties: lowest index
            expected = torch.zeros(flat.numel(), dtype=torch.bool)
            expected[order[:k]] = True
            assert torch.equal(ops.magnitude_mask(vector, density), expected)
            assert torch.equal(ops.trim_magnitude(vector, density).reshape(-1), flat.masked_fill(~expected, 0.0))
            with monkeypatch.context() as patched:
                patched.setattr(ops, "_CHUNK", 16)  # cuts and masks found chunk by chunk
                if density < 1.0:
                    assert torch.equal(ops.magnitude_mask(vector, density), expected)


def test_a_streamed_ties_merge_finds_its_cuts_once(llamas, monkeypatch):
    """The trim's cuts are computed on the first merge (two passes over the files) and then kept."""
    import bambo.weights as weights

    _, lazy = _engines(llamas)
    merger = StreamingMerger(lazy, get_merge_method("ties"))
    reads = []
    original = weights.LazySafetensors.read_into
    monkeypatch.setattr(weights.LazySafetensors, "read_into", lambda self, *a: reads.append(1) or original(self, *a))
    first = merger.merge(torch.tensor([0.6, 0.3]))
    n_first = len(reads)
    second = merger.merge(torch.tensor([0.6, 0.3]))
    assert n_first == 3 * (len(reads) - n_first)  # two selection passes and the merge, then the merge alone
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_streamed_ties_merge_never_prepares_whole_vectors(llamas, monkeypatch):
    """The streaming engine never calls TIES's prepare (the stacked trimmed vectors) for a masked method."""
    _, lazy = _engines(llamas)
    m = get_merge_method("ties")
    monkeypatch.setattr(type(m), "prepare", lambda *a: pytest.fail("prepare called"))
    merged = StreamingMerger(lazy, m).merge(torch.tensor([0.6, 0.3]))
    assert set(merged) == set(lazy.base)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_a_streamed_merge_into_a_live_model_reuses_its_buffers(tmp_path, method):
    """After the first merge into a model, later merges allocate no new chunk buffers and write in place."""
    paths = _tiny_llamas(tmp_path, torch.bfloat16)
    _, lazy = _engines(paths)
    merger = StreamingMerger(lazy, get_merge_method(method))
    model = _model(paths[0]).to(torch.bfloat16)
    pointers = {k: t.data_ptr() for k, t in model.state_dict().items()}
    merger.merge(torch.tensor([0.3, 0.6]), into=model)
    buffers = {d: [b.data_ptr() for b in bs if b is not None] for d, bs in merger._chunks.items()}
    merger.merge(torch.tensor([0.5, 0.1]), into=model)
    assert {d: [b.data_ptr() for b in bs if b is not None] for d, bs in merger._chunks.items()} == buffers
    assert {k: t.data_ptr() for k, t in model.state_dict().items()} == pointers
    expected = StreamingMerger(lazy, get_merge_method(method)).merge(torch.tensor([0.5, 0.1]))
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
