"""The multi-dataset training loader (balanced batches) and the evaluation iterator.

Training batches hold ``images_per_dataset`` images of *every* dataset (the paper's balanced
batches: 3 per dataset per GPU), tagged with the dataset's index. The stream is infinite
(iteration-based training) and a pure function of (seed, rank, world size, iteration):

- per dataset, epoch ``e`` visits the samples in the order ``permutation(seed, dataset, e)``;
- iteration ``b`` of rank ``r`` takes the positions ``[(b·world + r)·k, (b·world + r + 1)·k)`` of
  that endless sequence, so ranks draw disjoint shards of every epoch and together cover it;
- the augmentation randomness of iteration ``b`` is seeded by (seed, rank, b), so the batches do
  not depend on ``num_workers`` and training can resume at any ``start_iter``.

Labels become int64 with :data:`IGNORE_INDEX` (-1) for every dataset's ignore value.
"""
from __future__ import annotations

import functools
import inspect
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from uniseg_cli.data.base import DatasetAdapter, Problem
from uniseg_cli.data.transforms import (
    EvalTransform,
    TrainTransform,
    TrainTransformConfig,
    batch_to_tensor,
    label_to_tensor,
    to_tensor,
)
from uniseg_cli.errors import DataError

IGNORE_INDEX = -1


def validate_datasets(adapters: Sequence[DatasetAdapter], splits: Sequence[str] | None = None,
                      deep: bool = False) -> None:
    """Raise DataError listing the problems ``check-data`` would report (before any training).

    ``deep=False`` reads file headers only (labels.yaml, pairs, empty splits, sizes, channels,
    unreadable files); ids outside the label space are then caught when a sample is loaded, with
    the same message.
    """
    probs: list[Problem] = []
    for ad in adapters:
        if "deep" in inspect.signature(ad.check).parameters:
            probs.extend(ad.check(splits, deep=deep))  # type: ignore[call-arg]
        else:
            probs.extend(ad.check(splits))
    if probs:
        names = sorted({p.dataset for p in probs})
        shown = "; ".join((f"{p.dataset}: {p}" if len(names) > 1 else str(p)) for p in probs[:3])
        more = f" (and {len(probs) - 3} more)" if len(probs) > 3 else ""
        what = f"{len(probs)} problem{'s' if len(probs) != 1 else ''} in dataset{'s' if len(names) > 1 else ''}"
        raise DataError(f"{what} {', '.join(names)}: {shown}{more}",
                        hint="run `uniseg check-data` on " + " ".join(names) + " for the full list, and fix the files.")


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BalancedBatches(IterableDataset):
    """Infinite balanced batches as dicts: image float32 (B, 3, H, W) normalised, label int64
    (B, H, W) with -1 for ignore, dataset int64 (B,), with B = k × number of datasets.

    Args:
        adapters: the datasets, in pipeline order (their index is the ``dataset`` value).
        split: the split to draw from.
        images_per_dataset: k.
        transform: the train transform (its crop size fixes H, W).
        seed, rank, world_size: see the module docstring; rank/world default to torch.distributed.
        start_iter: the first iteration to produce (resume).
    """

    def __init__(self, adapters: Sequence[DatasetAdapter], split: str = "train", images_per_dataset: int = 3,
                 transform: TrainTransform | None = None, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, start_iter: int = 0):
        super().__init__()
        if images_per_dataset < 1:
            raise ValueError("images_per_dataset must be >= 1")
        r, w = _dist_rank_world()
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        self.adapters = list(adapters)
        self.k, self.seed, self.start_iter = images_per_dataset, int(seed), int(start_iter)
        self.transform = transform or TrainTransform()
        self.samples = [ad.samples(split) for ad in self.adapters]
        for ad, ss in zip(self.adapters, self.samples):
            if not ss:
                raise DataError(f"dataset {ad.spec.name!r}: split {split!r} has no images",
                                hint=f"run `uniseg check-data` on {ad.spec.name}; the training split must hold images.")
        self.ignores = [ad.label_space.ignore_index for ad in self.adapters]

    @functools.lru_cache(maxsize=64)
    def _perm(self, d: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 104729, d, epoch]).permutation(len(self.samples[d]))

    def indices(self, it: int) -> list[list[int]]:
        """Sample indices of iteration ``it`` for this rank: one list of k per dataset."""
        out = []
        for d, ss in enumerate(self.samples):
            n = len(ss)
            first = (it * self.world_size + self.rank) * self.k
            out.append([int(self._perm(d, p // n)[p % n]) for p in range(first, first + self.k)])
        return out

    def batch(self, it: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 7919, self.rank, it])
        imgs, labs, ds = [], [], []
        for d, idx in enumerate(self.indices(it)):
            ad, ign = self.adapters[d], self.ignores[d]
            for i in idx:
                image, label = ad.load(self.samples[d][i])
                image, label = self.transform(image, label, ign, rng)
                imgs.append(image)
                labs.append(np.where(label == ign, IGNORE_INDEX, label).astype(np.int64, copy=False))
                ds.append(d)
        cfg = self.transform.config
        return {"image": batch_to_tensor(imgs, cfg.mean, cfg.std), "label": torch.from_numpy(np.stack(labs)),
                "dataset": torch.tensor(ds, dtype=torch.int64)}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        it = self.start_iter + wid  # DataLoader takes batches from its workers round-robin
        while True:
            yield self.batch(it)
            it += nw


def make_train_loader(adapters: Sequence[DatasetAdapter], split: str = "train", images_per_dataset: int = 3,
                      transform: TrainTransform | TrainTransformConfig | None = None, seed: int = 0,
                      rank: int | None = None, world_size: int | None = None, num_workers: int = 0,
                      start_iter: int = 0, validate: bool = True, pin_memory: bool = False) -> DataLoader:
    """An infinite DataLoader of balanced batches (see :class:`BalancedBatches`).

    ``validate`` runs the cheap ``check-data`` checks on ``split`` first and raises DataError.
    """
    if validate:
        validate_datasets(adapters, [split])
    if isinstance(transform, TrainTransformConfig):
        transform = TrainTransform(transform)
    ds = BalancedBatches(adapters, split, images_per_dataset, transform, seed, rank, world_size, start_iter)
    return DataLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)


def iter_eval(adapter: DatasetAdapter, split: str = "val", short_side: int | None = None,
              dataset_index: int = 0, limit: int | None = None, rank: int = 0, world_size: int = 1,
              resize_label: bool = False) -> Iterator[dict]:
    """Full images of one split, batch 1, in stem order (``samples[rank::world_size]`` when sharded).

    Yields dicts: image float32 (1, 3, H', W') normalised (resized when ``short_side``), label int64
    (1, H, W) with -1 for ignore (original size unless ``resize_label``), dataset int64 (1,), stem str.
    """
    ign = adapter.label_space.ignore_index
    tf = EvalTransform(short_side, resize_label=resize_label)
    samples = adapter.samples(split)
    if not samples:
        raise DataError(f"dataset {adapter.spec.name!r}: split {split!r} has no images",
                        hint=f"run `uniseg check-data` on {adapter.spec.name}.")
    for s in samples[:limit][rank::world_size]:
        image, label = adapter.load(s)
        image, label = tf(image, label)
        yield {"image": to_tensor(image)[None], "label": label_to_tensor(label, ign, IGNORE_INDEX)[None],
               "dataset": torch.tensor([dataset_index], dtype=torch.int64), "stem": s.stem}
