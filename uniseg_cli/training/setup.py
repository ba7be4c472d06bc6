"""What ``uniseg train`` does between reading its inputs and publishing: build, train stage 2, stage 3.

- :func:`read_inputs`: label features (embed-labels), N + initial mapping + stage-1 segmenter
  (estimate-nodes), checked against the datasets' label spaces.
- :func:`open_training_data`: adapters, the training view of each dataset (minus held-out images),
  and the held-out images used for pruning and pixel shares.
- :func:`train_all`: stage 2, the switch to stage 3 (fresh solve + GNN prototypes → head), stage 3,
  final pixel shares; resumable from the work directory.
- :func:`write_outputs`: the artifact's files.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from uniseg_cli.data.base import DatasetAdapter, DatasetSpec, Sample
from uniseg_cli.errors import ArtifactError, DataError

IGNORE = -1


@dataclasses.dataclass
class TrainInputs:
    classes: dict[str, list[str]]  # training datasets in order -> class names
    features: np.ndarray  # (L, F) label text features, datasets in order, labels by id
    init_mappings: list[np.ndarray]  # bool (n_d, N) per dataset
    num_nodes: int
    seg_config: Any  # SegmenterConfig of the stage-1 model
    seg_state: dict[str, torch.Tensor]  # its segmenter weights
    sources: dict[str, str]  # upstream run ids


def _find_segmenter_config(meta: Any) -> dict | None:
    """The stage-1 JSON's segmenter config: a dict with ``backbone`` and ``embed_dim`` (searched by shape)."""
    if isinstance(meta, dict):
        if "backbone" in meta and "embed_dim" in meta:
            return meta
        for k in ("segmenter", "model", "config"):
            if k in meta:
                found = _find_segmenter_config(meta[k])
                if found:
                    return found
        for v in meta.values():
            found = _find_segmenter_config(v)
            if found:
                return found
    return None


def read_stage1_segmenter(src) -> tuple[Any, dict[str, torch.Tensor], dict]:
    """(SegmenterConfig, segmenter state dict, JSON) of a stage-1 ``multihead`` checkpoint (artifact dir or JSON)."""
    from uniseg_cli.models import SegmenterConfig
    from uniseg_cli.training.checkpoint import read_checkpoint

    p = Path(getattr(src, "path", src))
    directory, stem = (p.parent, p.stem) if p.suffix in (".json", ".safetensors") else (p, "multihead")
    tensors, meta = read_checkpoint(directory, stem)
    cfg = _find_segmenter_config(meta)
    hint = "rebuild it with `uniseg estimate-nodes --force`."
    if cfg is None:
        raise ArtifactError(f"{directory / stem}.json holds no segmenter config (backbone, embed_dim)", hint=hint)
    fields = {f.name for f in dataclasses.fields(SegmenterConfig)}
    seg_cfg = SegmenterConfig(**{k: v for k, v in cfg.items() if k in fields})
    prefix = next((pre for pre in ("model.segmenter.", "segmenter.") if any(k.startswith(pre) for k in tensors)), None)
    if prefix is None:
        raise ArtifactError(f"{directory / stem}.safetensors holds no segmenter weights", hint=hint)
    return seg_cfg, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, meta


def read_inputs(features_art, estimate_art, datasets: Sequence[DatasetSpec]) -> TrainInputs:
    """Read and cross-check the upstream artifacts against the datasets' label spaces."""
    from uniseg_cli.data import open_dataset
    from uniseg_cli.stages.embed_labels import features_by_dataset, read_features
    from uniseg_cli.taxonomy.schema import read_taxonomy

    classes = {d.name: list(open_dataset(d).label_space.classes) for d in datasets}
    names = list(classes)
    feats, rows = read_features(features_art)
    by_ds = features_by_dataset(feats, rows, names)
    for n in names:
        got = [r.label for r in rows if r.dataset == n]
        if by_ds[n].shape[0] != len(classes[n]):
            raise ArtifactError(f"label-features {features_art.path}: {n} has {by_ds[n].shape[0]} labels, the dataset "
                                f"{len(classes[n])} ({', '.join(got[:3])}...)",
                                hint="re-run describe-labels and embed-labels on these datasets.")
    tax_path = estimate_art.file("init_mapping.parquet")
    tax = read_taxonomy(tax_path)
    maps = []
    for n in names:
        if n not in tax.datasets or list(tax.datasets[n]) != classes[n]:
            raise ArtifactError(f"{tax_path}: the initial mapping does not cover dataset {n} with its current classes",
                                hint="re-run estimate-nodes on these datasets (`uniseg estimate-nodes --force`).")
        maps.append(np.asarray(tax.mapping(n), bool))
    seg_cfg, seg_state, _ = read_stage1_segmenter(estimate_art)
    return TrainInputs(classes=classes, features=np.concatenate([by_ds[n] for n in names], axis=0).astype(np.float32),
                       init_mappings=maps, num_nodes=int(tax.num_channels), seg_config=seg_cfg, seg_state=seg_state,
                       sources={"label-features": features_art.run_id, "node-estimate": estimate_art.run_id})


# --------------------------------------------------------------------------------------------- data


class TrainView:
    """A dataset adapter whose split ``"train"`` lists the training images (train split minus held-out)."""

    def __init__(self, base: DatasetAdapter, keep: Sequence[Sample]):
        self.base, self.keep = base, list(keep)
        self.spec, self.label_space = base.spec, base.label_space

    def splits(self) -> list[str]:
        return ["train"]

    def samples(self, split: str) -> list[Sample]:
        return list(self.keep) if split == "train" else self.base.samples(split)

    def load(self, sample: Sample):
        return self.base.load(sample)

    def check(self, splits=None, **kw):
        return self.base.check([self.spec.train_split], **kw)


@dataclasses.dataclass
class TrainingData:
    specs: list[DatasetSpec]
    train: list[TrainView]
    held_out: list[list[Sample]]
    held_out_from: dict[str, str]


def _held_out(stem: str, seed: int, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(f"train-holdout/{seed}/{stem}".encode()).digest()[:8], "little")
    return h / 2**64 < fraction


def open_training_data(specs: Sequence[DatasetSpec], p) -> TrainingData:
    """Training views and held-out images of every dataset (checks splits up front)."""
    from uniseg_cli.data import open_dataset

    views, held, src = [], [], {}
    for spec in specs:
        ad = open_dataset(spec)
        splits = ad.splits()
        if spec.train_split not in splits:
            raise DataError(f"dataset {spec.name} ({spec.root}) has no split {spec.train_split!r} (found: {', '.join(splits) or 'none'})",
                            hint="add images/<split>/ and annotations/<split>/, or set the dataset's train_split.")
        train = ad.samples(spec.train_split)
        if p.holdout_fraction > 0:
            out = [s for s in train if _held_out(s.stem, p.seed, p.holdout_fraction)]
            keep = [s for s in train if not _held_out(s.stem, p.seed, p.holdout_fraction)]
            src[spec.name] = f"{spec.train_split} (held out {p.holdout_fraction:.0%}, seed {p.seed})"
        else:
            split = p.held_out_split or spec.val_split
            if split not in splits:
                raise DataError(f"dataset {spec.name} ({spec.root}) has no split {split!r} for pruning and pixel shares",
                                hint="add a validation split, pass --held-out-split NAME, or use --holdout-fraction 0.1.")
            out, keep, src[spec.name] = ad.samples(split), train, split
        if not keep or not out:
            raise DataError(f"dataset {spec.name}: {len(keep)} images to train on and {len(out)} held out",
                            hint="both must be non-empty; adjust --holdout-fraction or add images.")
        if p.held_out_max_images and len(out) > p.held_out_max_images:
            idx = np.linspace(0, len(out) - 1, p.held_out_max_images).round().astype(int)
            out = [out[i] for i in idx]
        views.append(TrainView(ad, keep))
        held.append(out)
    return TrainingData(list(specs), views, held, src)


def held_out_pairs(data: TrainingData, rank: int, world: int):
    """A callable giving, per dataset, an iterator of (image (1, 3, H, W), label (1, H, W)) of this rank's share."""
    from uniseg_cli.data.transforms import label_to_tensor, to_tensor

    def one(d: int):
        view = data.train[d]
        ign = view.label_space.ignore_index
        for s in data.held_out[d][rank::world]:
            image, label = view.load(s)
            yield to_tensor(image)[None], label_to_tensor(label, ign, IGNORE)[None]

    return lambda: [one(d) for d in range(len(data.train))]


def batch_source(data: TrainingData, p, dist):
    """``batches(start_iteration)`` for the engine: balanced batches, a pure function of (seed, rank, iteration)."""
    from uniseg_cli.data.loader import make_train_loader, validate_datasets

    validate_datasets(data.train, ["train"])
    cfg = p.transform_config()

    def batches(start: int):
        return iter(make_train_loader(data.train, "train", p.images_per_dataset, cfg, seed=p.seed, rank=dist.rank,
                                      world_size=dist.world_size, num_workers=p.workers, start_iter=start,
                                      validate=False, pin_memory=dist.device.type == "cuda"))

    return batches
