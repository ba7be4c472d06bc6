"""Stage 1 of the method for ``estimate-nodes``: the Multi-SegHead model and the held-out confusion.

- :func:`open_datasets` opens the training datasets and decides, cheaply and before anything heavy,
  which images stage 1 trains on and which measure the confusion (a split, or a held-out fraction
  of train chosen by a hash of (seed, stem), so it is stable across runs and machines).
- :func:`train_multihead` trains segmenter + Multi-SegHead with the shared training engine
  (balanced batches, AdamW with a backbone LR multiplier, warmup-poly, clipping, AMP on CUDA,
  resumable checkpoints in a work directory, DDP under torchrun).
- :func:`cross_confusion` runs every head on every dataset's held-out images; rank r takes images
  r, r+W, ...; the histograms are summed across ranks.
- :func:`save_multihead` / :func:`load_multihead`: the stage-1 checkpoint in the engine's format
  (``uniseg.checkpoint/1``: safetensors + JSON), tensors ``model.segmenter.*`` and ``model.head.*``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from uniseg_cli import artifacts as A
from uniseg_cli.data.base import DatasetAdapter, DatasetSpec, Sample
from uniseg_cli.errors import ArtifactError, DataError, UsageError

CHECKPOINT_KIND = "multihead"
STAGE1_SPLIT = "stage1-train"  # the split name under which _Subset lists the images stage 1 trains on


# --------------------------------------------------------------------------------------------- data


class _Subset:
    """A dataset adapter whose ``split`` lists only some samples (the rest are held out)."""

    def __init__(self, base: DatasetAdapter, split: str, keep: Sequence[Sample]):
        self._base, self._split, self._keep = base, split, list(keep)
        self.spec, self.label_space = base.spec, base.label_space

    def splits(self) -> list[str]:
        return self._base.splits()

    def samples(self, split: str) -> list[Sample]:
        return list(self._keep) if split == self._split else self._base.samples(split)

    def load(self, sample: Sample):
        return self._base.load(sample)

    def check(self, splits=None, **kw):
        return self._base.check(splits, **kw)


@dataclasses.dataclass
class DatasetData:
    """One training dataset: its adapter for stage-1 training and its held-out images."""

    spec: DatasetSpec
    adapter: DatasetAdapter  # what stage 1 trains on (train split minus the held-out images)
    base: DatasetAdapter  # the dataset as on disk (the held-out images are loaded from here)
    held_out: list[Sample]
    held_out_from: str  # split name, or "train (held out 20%)"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.base.label_space.classes)


def split_held_out(samples: Sequence[Sample], seed: int, fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(train, held out): the round(fraction·n) samples (at least 1) with the smallest hash of (seed, stem).

    Depends only on the seed and the stems, not on the order or the machine.
    """
    def key(s: Sample) -> bytes:
        return hashlib.sha256(f"holdout/{seed}/{s.stem}".encode()).digest()

    k = max(1, round(fraction * len(samples)))
    held = {s.stem for s in sorted(samples, key=key)[:k]}
    return [s for s in samples if s.stem not in held], [s for s in samples if s.stem in held]


def _even_subset(samples: list[Sample], limit: int) -> list[Sample]:
    if not limit or len(samples) <= limit:
        return samples
    idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in idx]


def open_datasets(specs: Sequence[DatasetSpec], p) -> list[DatasetData]:
    """Open every dataset and split its images into stage-1 training and confusion measurement.

    Runs the cheap ``check-data`` checks (file pairs, sizes, channels, labels.yaml) on the splits
    it uses, so a broken dataset stops the run before any model is built.
    """
    from uniseg_cli.data import open_dataset
    from uniseg_cli.data.loader import validate_datasets

    out = []
    for spec in specs:
        ad = open_dataset(spec)
        if not ad.label_space.classes:
            raise DataError(f"dataset {spec.name} ({spec.root}) has no classes", hint="list them in its labels.yaml.")
        splits = ad.splits()
        train_needed = not p.multihead or p.holdout_fraction > 0 or getattr(p, "generic_iters", 0) > 0
        if train_needed and spec.train_split not in splits:
            raise DataError(f"dataset {spec.name} ({spec.root}) has no split {spec.train_split!r} "
                            f"(found: {', '.join(splits) or 'none'})",
                            hint="add images/<split>/ and annotations/<split>/, or set the dataset's train_split.")
        train = ad.samples(spec.train_split) if train_needed else []
        if p.holdout_fraction > 0:
            train, held = split_held_out(train, p.seed, p.holdout_fraction)
            if not held or not train:
                raise DataError(f"dataset {spec.name}: holding out {p.holdout_fraction:.0%} of its {len(held) + len(train)} "
                                f"train images leaves {len(train)} to train on and {len(held)} to measure on",
                                hint="choose a holdout_fraction that leaves images on both sides, or use confusion_split.")
            src, used = f"{spec.train_split} (held out {p.holdout_fraction:.0%}, seed {p.seed})", [spec.train_split]
        else:
            split = p.confusion_split or spec.val_split
            if split not in splits:
                raise DataError(f"dataset {spec.name} ({spec.root}) has no split {split!r} to measure the confusion on "
                                f"(found: {', '.join(splits) or 'none'})",
                                hint="add a validation split, pass --confusion-split NAME, or use --holdout-fraction 0.2.")
            if split == spec.train_split and train_needed:
                raise UsageError(f"the confusion split {split!r} of {spec.name} is the split stage 1 trains on",
                                 hint="measure on images the model did not train on: a val split or --holdout-fraction.")
            held, src = ad.samples(split), split
            used = [split] + ([spec.train_split] if train_needed else [])
        validate_datasets([ad], used)
        held = _even_subset(held, p.confusion_max_images)
        if not held:
            raise DataError(f"dataset {spec.name}: no images to measure the confusion on ({src})",
                            hint="add labelled images to that split.")
        out.append(DatasetData(spec, _Subset(ad, STAGE1_SPLIT, train), ad, held, src))
    return out


# --------------------------------------------------------------------------------------------- model




class MultiHeadModel(nn.Module):
    """Segmenter + Multi-SegHead: the stage-1 model.

    Args:
        segmenter: images → L2-normalised pixel embeddings (B, D, H/4, W/4).
        head: a :class:`uniseg_cli.models.MultiSegHead` over the training datasets.

    Shapes:
        all_logits(images (B, 3, H, W)) → one (B, n_d, H/4, W/4) tensor per dataset head.
    """

    def __init__(self, segmenter: nn.Module, head: nn.Module):
        super().__init__()
        self.segmenter, self.head = segmenter, head

    def all_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        emb = self.segmenter(images)
        return [self.head.dataset_logits(emb, d) for d in range(len(self.head.num_classes))]


class Stage1Task(nn.Module):
    """The engine's task: per-dataset OHEM cross-entropy of each image under its own dataset's head."""

    def __init__(self, model: MultiHeadModel, names: Sequence[str], weights: Sequence[float], ohem_thresh: float,
                 ohem_min_kept: float):
        super().__init__()
        self.model, self.names, self.weights = model, list(names), [float(w) for w in weights]
        self.ohem = {"thresh": float(ohem_thresh), "min_kept_ratio": float(ohem_min_kept)}

    def forward(self, batch: dict, info: Any = None) -> dict[str, torch.Tensor]:
        from uniseg_cli.models import multi_dataset_ce

        emb = self.model.segmenter(batch["image"])
        outs = self.model.head(emb, batch["dataset"])
        total, per = multi_dataset_ce(outs, batch["label"], self.weights, **self.ohem)
        return {"loss": total, **{f"ce_{self.names[d]}": v for d, v in per.items()}}


def build_model(segmenter_config: dict, num_classes: Sequence[int]) -> MultiHeadModel:
    from uniseg_cli.models import MultiSegHead, build_segmenter
    from uniseg_cli.models import segmenter_config_from_dict

    cfg = segmenter_config_from_dict(segmenter_config)
    return MultiHeadModel(build_segmenter(cfg), MultiSegHead(num_classes, cfg.embed_dim))


def segmenter_config(p) -> dict:
    """The segmenter config of stage 1's model as :func:`train_multihead` records it (weights in our checkpoints)."""
    from uniseg_cli.models import SegmenterConfig

    return SegmenterConfig(backbone=p.backbone, embed_dim=p.embed_dim, pretrained=False).to_dict()


def train_multihead(p, data: Sequence[DatasetData], dist, work: Path, config: dict) -> tuple[MultiHeadModel, dict]:
    """Train stage 1 with the shared engine; resumes from ``work``'s newest checkpoint.

    Returns:
        (the trained model, {iterations, resumed_from, last (losses), seconds}).
    """
    from uniseg_cli.data.loader import make_train_loader
    from uniseg_cli.training.engine import OptimConfig, Phase, Trainer

    torch.manual_seed(p.seed)
    seg_cfg = dict(segmenter_config(p), pretrained=p.pretrained)
    model = build_model(seg_cfg, [len(d.classes) for d in data])
    model.segmenter.config = dataclasses.replace(model.segmenter.config, pretrained=False)  # weights now live in our checkpoints
    names = [d.name for d in data]
    task = Stage1Task(model, names, [p.loss_weights.get(n, 1.0) for n in names], p.ohem_thresh, p.ohem_min_kept)
    tf = p.transform_config()
    adapters = [d.adapter for d in data]

    def batches(start: int):
        return iter(make_train_loader(adapters, STAGE1_SPLIT, p.images_per_dataset, tf, seed=p.seed, rank=dist.rank,
                                      world_size=dist.world_size, num_workers=p.workers, start_iter=start,
                                      validate=False, pin_memory=dist.device.type == "cuda"))

    optim = OptimConfig(lr=p.lr, backbone_lr_mult=p.backbone_lr_mult, weight_decay=p.weight_decay,
                        warmup_iters=p.warmup_iters, warmup_factor=p.warmup_factor, poly_power=p.poly_power,
                        clip_grad_norm=p.clip_grad_norm or None, amp=p.amp)
    trainer = Trainer(task, [Phase("stage1", p.iters)], optim, batches=batches, stage="stage1", dist=dist,
                      work_dir=work, checkpoint_every=p.checkpoint_every, seed=p.seed, config=config)
    s = trainer.run()
    return model, {"iterations": s["iterations"], "resumed_from": s["resumed_from"], "seconds": round(s["seconds"], 3),
                   "last": {k: v for k, v in (s.get("last") or {}).items() if isinstance(v, (int, float))}}


# --------------------------------------------------------------------------------------------- checkpoint


def save_multihead(directory: Path, stem: str, model: MultiHeadModel, data: Sequence[DatasetData], p,
                   train_info: dict) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` (engine format; tensors ``model.segmenter.*``, ``model.head.*``)."""
    from uniseg_cli.training import checkpoint as C

    meta = {"kind": CHECKPOINT_KIND, "segmenter": model.segmenter.config.to_dict(),
            "num_classes": list(model.head.num_classes), "datasets": [d.name for d in data],
            "classes": {d.name: list(d.classes) for d in data}, "train": train_info}
    return C.write_checkpoint(directory, stem, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


def _checkpoint_files(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    if path.is_dir():
        return path, "multihead"
    if path.suffix in (".json", ".safetensors"):
        return path.parent, path.stem
    raise UsageError(f"--multihead {path}: expected a node-estimate directory, multihead.json or multihead.safetensors",
                     hint="pass the output of `uniseg estimate-nodes` (or its multihead.json).")


def multihead_ref(path: str | Path) -> A.InputRef:
    """The checkpoint as a stage input: its JSON's hash (which names the tensors' hash)."""
    d, stem = _checkpoint_files(path)
    js = d / f"{stem}.json"
    if not js.is_file():
        raise ArtifactError(f"--multihead {path}: {js} does not exist",
                            hint="pass a node-estimate directory made by `uniseg estimate-nodes`, or its multihead.json.")
    return A.InputRef("multihead-checkpoint", str(js.resolve()), A.sha256_file(js))


def load_multihead(path: str | Path, data: Sequence[DatasetData], device: torch.device) -> MultiHeadModel:
    """Rebuild the stage-1 model from a checkpoint; its datasets and classes must match ``data``."""
    from uniseg_cli.training import checkpoint as C

    d, stem = _checkpoint_files(path)
    tensors, meta = C.read_checkpoint(d, stem)
    where = d / f"{stem}.json"
    if meta.get("kind") != CHECKPOINT_KIND:
        raise ArtifactError(f"{where} is not a Multi-SegHead checkpoint (kind {meta.get('kind')!r})",
                            hint="pass the multihead.json of a node-estimate artifact.")
    want = {x.name: list(x.classes) for x in data}
    if meta.get("datasets") != list(want) or meta.get("classes") != want:
        raise UsageError(f"{where} was trained on datasets {meta.get('datasets')}, not {list(want)} with these classes",
                         hint="use a checkpoint trained on the same datasets (same order and label spaces), or drop --multihead.")
    seg = dict(meta["segmenter"], pretrained=False)
    model = build_model(seg, meta["num_classes"])
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{where} does not fit the model it describes (missing {list(missing)[:3]}, "
                            f"unexpected {list(unexpected)[:3]})", hint="the checkpoint is damaged; rebuild it.")
    return model.to(device)


# --------------------------------------------------------------------------------------------- confusion


def _eval_pair(d: DatasetData, sample: Sample, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    from uniseg_cli.data.loader import IGNORE_INDEX
    from uniseg_cli.data.transforms import label_to_tensor, resize, to_tensor

    image, label = d.base.load(sample)
    h, w = label.shape
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        image, label = resize(image, label, (max(1, round(h * s)), max(1, round(w * s))))
    ign = d.base.label_space.ignore_index
    return to_tensor(image)[None], label_to_tensor(label, ign, IGNORE_INDEX)


def _add_centroid_sums(sums: list, a: int, emb: torch.Tensor, lab: torch.Tensor, n: int) -> None:
    """Add the embedding of every labelled pixel (at the embedding's 1/4 resolution) to its class's sum."""
    h, w = lab.shape[-2:]
    lab_small = torch.nn.functional.interpolate(lab.reshape(1, 1, h, w).float(), size=emb.shape[-2:], mode="nearest")
    lab_small = lab_small.reshape(emb.shape[-2:]).long()  # (h/4, w/4)
    keep = (lab_small >= 0) & (lab_small < n)
    vecs = emb[0].permute(1, 2, 0)[keep]  # (P, D)
    acc = torch.zeros(n, emb.shape[1], dtype=torch.float64, device=emb.device)
    acc.index_add_(0, lab_small[keep], vecs.double())
    sums[a] = acc if sums[a] is None else sums[a] + acc


def centroid_cosines(centroid_sums: Sequence[np.ndarray]) -> np.ndarray:
    """(L, L) cosine similarity of the class centroids (mean pixel embedding) of all labels, in dataset order.

    A label without held-out pixels has a zero centroid and similarity 0 to everything.
    """
    c = np.concatenate([np.asarray(x, np.float64) for x in centroid_sums], axis=0)
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    c = np.divide(c, norm, out=np.zeros_like(c), where=norm > 0)
    return c @ c.T


@torch.no_grad()
def cross_confusion(model: "MultiHeadModel", data: Sequence[DatasetData], p, dist) -> tuple[list[list[np.ndarray]], dict]:
    """hist[a][b] (float64 (n_a, n_b)): dataset a's ground truth against head b's argmax, summed over ranks.

    Every held-out image is run once at full resolution (downscaled when its longer side exceeds
    ``p.eval_max_side``); all heads read the same embedding. Pixels whose label is ignore or outside
    the label space are not counted.
    """
    from uniseg_cli.models import upsample_logits
    from uniseg_cli.training.distributed import all_reduce_numpy

    sizes = [len(d.classes) for d in data]
    dev = dist.device
    hist = [[torch.zeros(sizes[a] * sizes[b], dtype=torch.int64, device=dev) for b in range(len(data))]
            for a in range(len(data))]
    was_training = model.training
    model.eval()
    use_amp = bool(p.amp) and dev.type == "cuda"
    emb_dim = model.head.embed_dim if hasattr(model.head, "embed_dim") else None
    sums: list[torch.Tensor | None] = [None] * len(data)  # (n_a, D) sum of pixel embeddings per GT class
    images = {}
    for a, d in enumerate(data):
        mine = d.held_out[dist.rank::dist.world_size]
        images[d.name] = len(d.held_out)
        for s in mine:
            img, lab = _eval_pair(d, s, p.eval_max_side)
            img, lab = img.to(dev), lab.to(dev)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                emb = model.segmenter(img)  # (1, D, h, w), L2-normalised
                logits = [model.head.dataset_logits(emb, b) for b in range(len(data))]
            _add_centroid_sums(sums, a, emb.float(), lab, sizes[a])
            valid = (lab >= 0) & (lab < sizes[a])
            gt = lab[valid]
            for b, lg in enumerate(logits):
                lg = upsample_logits(lg.float(), lab.shape[-2:])  # as the loss does (bilinear, align_corners=True)
                pred = lg.argmax(dim=1)[0][valid]
                hist[a][b] += torch.bincount(gt * sizes[b] + pred, minlength=sizes[a] * sizes[b])
    model.train(was_training)
    out = [[all_reduce_numpy(hist[a][b].cpu().numpy(), dev).astype(np.float64).reshape(sizes[a], sizes[b])
            for b in range(len(data))] for a in range(len(data))]
    dim = next((x.shape[1] for x in sums if x is not None), emb_dim or 1)
    centroids = [all_reduce_numpy((x if x is not None else torch.zeros(sizes[a], dim)).double().cpu().numpy(), dev)
                 for a, x in enumerate(sums)]
    info = {"source": "holdout" if p.holdout_fraction > 0 else "split",
            "split": {d.name: d.held_out_from for d in data},
            "images": images,
            "pixels": {d.name: float(out[a][a].sum()) for a, d in enumerate(data)},
            "eval_max_side": p.eval_max_side,
            "world_size": dist.world_size,
            "centroid_sums": centroids}
    return out, info


# --------------------------------------------------------------------------------------------- appearance


def save_generic_encoder(directory: Path, stem: str, enc: nn.Module, train_info: dict) -> Path:
    """``<stem>.safetensors`` (tensors ``segmenter.*``) + ``<stem>.json`` (kind, segmenter config, training figures)."""
    from uniseg_cli.training import checkpoint as C

    return C.write_checkpoint(directory, stem, {f"segmenter.{k}": v for k, v in enc.state_dict().items()},
                              {"kind": "uniseg.generic-encoder", "segmenter": enc.config.to_dict(), "train": train_info})


def _encoder_cached(work: Path | None) -> bool:
    return work is not None and (work / "generic.json").is_file()


def _generic_encoder(p, data: Sequence[DatasetData], device: torch.device, segmenter_config: dict,
                     work: Path | None, on_step=None) -> tuple[nn.Module, dict]:
    """The appearance encoder: read from ``work``'s cache, else trained (and cached there)."""
    from uniseg_cli.models import build_segmenter, segmenter_config_from_dict
    from uniseg_cli.taxonomy import evidence as E
    from uniseg_cli.training import checkpoint as C

    cfg = segmenter_config_from_dict(dict(segmenter_config, pretrained=False))
    torch.manual_seed(p.seed)
    enc = build_segmenter(cfg).to(device)
    if _encoder_cached(work):
        tensors, meta = C.read_checkpoint(work, "generic")
        enc.load_state_dict({k[len("segmenter."):]: v for k, v in tensors.items()})
        return enc, dict(meta.get("train", {}), resumed=True)
    items = [(d, s) for d in data for s in d.adapter.samples(STAGE1_SPLIT)]
    if not items:
        raise DataError("no stage-1 training images to train the appearance encoder on",
                        hint="set generic_iters: 0, or give the datasets training images.")
    gp = E.GenericParams(iters=p.generic_iters, crop=p.generic_crop, seed=p.seed)
    info = E.train_generic_encoder(enc, lambda i: items[i][0].adapter.load(items[i][1])[0], len(items), gp,
                                   device, on_step=on_step)
    if work is not None:
        save_generic_encoder(work, "generic", enc, info)
    return enc, info


def _encoder_child(specs: list[DatasetSpec], p, segmenter_config: dict, work: str, threads: int, step) -> None:
    """The background process of :class:`BackgroundEncoder`: train the encoder into ``work``, then exit."""
    import os
    import sys

    if os.environ.get("UNISEG_DEBUG") != "1":
        from uniseg_cli.ui import quiet_dependency_warnings

        quiet_dependency_warnings()
    parent = os.getppid()
    torch.set_num_threads(threads)
    try:
        data = open_datasets(specs, p)

        def on_step(it: int, loss: float) -> None:
            step.value = it + 1
            if it % 50 == 0 and os.getppid() != parent:  # the parent was killed: nobody will read the encoder
                sys.exit(1)

        _generic_encoder(p, data, torch.device("cpu"), segmenter_config, Path(work), on_step)
    except BaseException:  # the parent trains it again in its own process, where the error is reported
        sys.exit(1)


class BackgroundEncoder:
    """The appearance encoder trained in a second process while stage 1 trains in this one.

    The two trainings are independent (the encoder sees the images, no labels and no stage-1 weights),
    so on a CPU with a core that this process's threads leave free they run side by side. The child
    writes the encoder to the work directory's cache, which :func:`appearance_evidence` then reads;
    its weights are the ones this process would train (same seed, same code, same thread count where
    :meth:`start` gives the child this process's count). If the child fails, the caller finds no cache
    and trains the encoder itself, so its error is raised there with the usual message.
    """

    def __init__(self, proc, step, iters: int):
        self.proc, self.step, self.iters = proc, step, iters

    @staticmethod
    def free_threads() -> int:
        """Cores this process's torch threads leave free (0 where none); the child needs as many as this
        process has (so its float sums, and so its weights, are the ones this process would get)."""
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, cores - torch.get_num_threads())

    @classmethod
    def start(cls, specs: Sequence[DatasetSpec], p, segmenter_config: dict, work: Path) -> "BackgroundEncoder | None":
        """Start the child when it can help: not yet cached, and this process's thread count free beside it.
        Returns None otherwise (the caller trains the encoder itself, after stage 1)."""
        import multiprocessing as mp

        threads = torch.get_num_threads()
        if p.generic_iters <= 0 or cls.free_threads() < threads or _encoder_cached(work):
            return None
        work.mkdir(parents=True, exist_ok=True)
        ctx = mp.get_context("spawn")
        step = ctx.Value("i", 0)
        proc = ctx.Process(target=_encoder_child, args=(list(specs), p, segmenter_config, str(work), threads, step),
                           name="uniseg-appearance-encoder", daemon=True)
        proc.start()
        return cls(proc, step, p.generic_iters)

    def wait(self) -> bool:
        """Wait for the child (with a progress bar); True when it wrote the encoder."""
        from uniseg_cli.ui import progress

        with progress() as bar:
            task = bar.add_task("appearance encoder (background)", total=self.iters, completed=self.step.value)
            while self.proc.is_alive():
                self.proc.join(0.25)
                bar.update(task, completed=self.step.value)
        return self.proc.exitcode == 0

    def stop(self) -> None:
        """End the child if it still runs (stage 1 failed or was interrupted)."""
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def appearance_evidence(p, data: Sequence[DatasetData], device: torch.device, segmenter_config: dict,
                        work: Path | None = None) -> dict:
    """Train the generic pixel encoder on the stage-1 training images, then measure the label transfer.

    The encoder is cached in ``work`` (so a killed run that resumes does not train it again, and an
    encoder trained by :class:`BackgroundEncoder` is read from there).

    Returns:
        {"segmenter": the encoder (eval mode), "train": {iterations, seconds, last_loss, ...},
         "shares": share[a][b] (n_a, n_b) from :func:`uniseg_cli.taxonomy.evidence.transfer_shares`}.
    """
    from uniseg_cli.taxonomy import evidence as E
    from uniseg_cli.ui import progress

    if _encoder_cached(work):
        enc, info = _generic_encoder(p, data, device, segmenter_config, work)
    else:
        with progress() as bar:
            task = bar.add_task("appearance encoder", total=p.generic_iters)
            enc, info = _generic_encoder(p, data, device, segmenter_config, work,
                                         on_step=lambda it, loss: bar.update(task, completed=it + 1))
    enc.eval()
    rng = np.random.default_rng(p.seed)
    feats, labels = [], []
    with torch.no_grad():
        for d in data:
            cap = min(p.generic_pixels_per_class, max(20, p.generic_max_pixels // max(1, len(d.classes))))
            fs, ys = [], []
            for s in d.held_out:
                img, lab = _eval_pair(d, s, p.eval_max_side)
                f, y = E.sample_pixels(enc(img.to(device))[0], lab[0] if lab.ndim == 3 else lab, len(d.classes),
                                       cap, rng)
                fs.append(f)
                ys.append(y)
            f, y = np.concatenate(fs), np.concatenate(ys)
            f, y = E.limit_per_class(f, y, cap, rng)
            feats.append(f)
            labels.append(y)
    shares = E.transfer_shares(feats, labels, [len(d.classes) for d in data], k=p.generic_knn, spread=p.generic_spread)
    info = dict(info, pixels={d.name: int(len(y)) for d, y in zip(data, labels)})
    return {"segmenter": enc, "train": info, "shares": shares}
