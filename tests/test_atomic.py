"""Reports and exports are atomic: a writer interrupted mid-write leaves the previous file, and nothing partial."""

from __future__ import annotations

import pytest
import torch

from bambo.atomic import atomic_folder, atomic_path, atomic_write_text
from bambo.errors import BamboWarning
from bambo.facade import optimize
from bambo.problem import SyntheticProblem


class Interrupted(Exception):
    """Stands for a crash or kill in the middle of writing."""


def _only(folder, *names):
    """The folder holds exactly these entries (no temporary leftovers)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_an_interrupted_file_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with pytest.raises(Interrupted), atomic_path(target) as tmp:
        tmp.write_text("half of the ne")
        raise Interrupted
    assert target.read_text() == "old"
    _only(tmp_path, "report.json")
    with atomic_path(tmp_path / "new.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name != "new.png"
        tmp.write_bytes(b"png")
    assert (tmp_path / "new.png").read_bytes() == b"png"


def test_an_interrupted_folder_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "merged"
    with atomic_folder(target) as tmp:
        (tmp / "model.safetensors").write_text("old weights")
    with pytest.raises(Interrupted), atomic_folder(target) as tmp:
        (tmp / "model.safetensors").write_text("half")
        raise Interrupted
    assert (target / "model.safetensors").read_text() == "old weights"
    _only(tmp_path, "merged")
    with atomic_folder(target) as tmp:
        (tmp / "model.safetensors").write_text("new weights")
    assert (target / "model.safetensors").read_text() == "new weights"
    _only(tmp_path, "merged")


def _interrupt_after_writing(monkeypatch, owner, name, path_arg=1):
    """Replace ``owner.name`` by a writer that writes a few bytes to its path argument, then raises."""

    def partial(*args, **kwargs):
        path = args[path_arg] if len(args) > path_arg else next(iter(kwargs.values()))
        with open(path, "wb") as handle:
            handle.write(b"\x89PN")
        raise Interrupted

    monkeypatch.setattr(owner, name, partial)


def test_interrupted_plots_and_reports_keep_the_previous_files(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from bambo.plotting import plot_front, plot_hypervolume
    from bambo.report import write_pareto

    problem = SyntheticProblem("branin_currin")
    result = optimize(problem, "sobol", budget=8, progress=False)
    front, hv = plot_front(result, tmp_path / "front.png"), plot_hypervolume(result, tmp_path / "hypervolume.png")
    written = write_pareto(result, tmp_path / "out")
    before = {p: p.read_bytes() for p in [front, hv, *written]}
    _interrupt_after_writing(monkeypatch, Figure, "savefig")
    for plot, path in ((plot_front, front), (plot_hypervolume, hv)):
        with pytest.raises(Interrupted):
            plot(result, path)
    with pytest.warns(BamboWarning, match="could not plot"):
        write_pareto(result, tmp_path / "out")  # csv and json written, then the plot fails: a warning
    monkeypatch.undo()

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def writerow(self, row):
            self.handle.write("1,2")
            raise Interrupted

    monkeypatch.setattr("bambo.report.csv.writer", HalfWriter)
    with pytest.raises(Interrupted):
        write_pareto(result, tmp_path / "out")
    assert {p: p.read_bytes() for p in before} == before
    _only(tmp_path, "front.png", "hypervolume.png", "out")
    _only(tmp_path / "out", "pareto.csv", "pareto.json", "pareto.png")


def test_interrupted_exports_keep_the_previous_export(tmp_path, monkeypatch):
    import bambo.export
    from bambo.export import save_hf_folder, save_safetensors

    state = {"w": torch.ones(3)}
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    file = save_safetensors(state, tmp_path / "merged.safetensors")
    folder = save_hf_folder(state, base, tmp_path / "merged")
    before = {p: p.read_bytes() for p in [file, *folder.iterdir()]}
    _interrupt_after_writing(monkeypatch, bambo.export, "save_file")
    with pytest.raises(Interrupted):
        save_safetensors({"w": torch.zeros(3)}, file)
    with pytest.raises(Interrupted):
        save_hf_folder({"w": torch.zeros(3)}, base, folder)
    assert {p: p.read_bytes() for p in before} == before
    _only(tmp_path, "base", "merged", "merged.safetensors")
    _only(folder, "config.json", "model.safetensors")
