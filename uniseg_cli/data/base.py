"""Dataset contracts shared by every adapter.

A dataset is described by a :class:`DatasetSpec` (from the pipeline file or flags) and opened by
:func:`uniseg_cli.data.open_dataset` into a :class:`DatasetAdapter`. Every adapter yields
``(image, label)`` pairs: ``image`` uint8 RGB (H, W, 3), ``label`` int64 (H, W) in train ids, with
the label space's ``ignore_index`` for unlabeled pixels.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The ordered classes of a dataset."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int = 255
    descriptions: tuple[str, ...] | None = None  # one per class when known

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how to read it (one entry of the pipeline's ``datasets:``)."""

    name: str
    root: str
    format: str = "generic"  # "generic", or a built-in format such as "cityscapes"
    role: str = "train"  # "train" (used to build the label space) or "unseen" (evaluation only)
    train_split: str = "train"
    val_split: str = "val"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image/label pair on disk (label_path is None for unlabeled images)."""

    stem: str
    image_path: Path
    label_path: Path | None


@dataclasses.dataclass(frozen=True)
class Problem:
    """One fault found in a dataset; ``path`` names the file (or folder) at fault."""

    dataset: str
    path: str
    code: str  # short machine name: missing-label, missing-image, size-mismatch, bad-ids, ...
    message: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@runtime_checkable
class DatasetAdapter(Protocol):
    """What every on-disk format provides."""

    spec: DatasetSpec
    label_space: LabelSpace

    def splits(self) -> list[str]:
        """The split names present on disk."""
        ...

    def samples(self, split: str) -> list[Sample]:
        """The samples of a split, sorted by stem (deterministic)."""
        ...

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (H, W, 3), label int64 (H, W) in train ids); raises DataError naming the file."""
        ...

    def check(self, splits: Sequence[str] | None = None) -> list[Problem]:
        """Every problem of the dataset at once (empty list: the dataset is fine)."""
        ...


def iter_pairs(adapter: DatasetAdapter, split: str) -> Iterable[tuple[Sample, np.ndarray, np.ndarray]]:
    for s in adapter.samples(split):
        img, lab = adapter.load(s)
        yield s, img, lab
