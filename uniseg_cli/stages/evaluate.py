"""Stage ``evaluate``: mIoU of the trained model on every dataset, in its own label space and via the unified space.

Protocol (METHOD §8, with bug B1 avoided by construction: a dataset is always scored with its own
mapping, looked up by name):

- **Inference**: full resolution, single scale, one image at a time. The image is zero-padded
  (= the mean colour) to a multiple of 32, embedded, and the logits are upsampled bilinearly to the
  padded size and cropped back (:func:`uniseg_cli.training.unify.full_res_logits`).
- **Dataset space** (the paper's Table 2): dataset logits ``M_d · z`` (the sum of the unified logits
  of the nodes mapped to each label), argmax, confusion against the ground truth.
- **Unified space**: argmax over the N unified logits (inactive nodes, with no edge in any dataset,
  are never predicted), translated to dataset d through its boolean mapping; a node with no label in
  d is a prediction outside d's label space and counts as an error (see below).
- **Pixel counting** (:mod:`uniseg_cli.training.metrics`): ignore pixels are not counted; classes
  without ground-truth pixels in the scored split are left out of the mean; predictions outside the
  label space count as errors (false negatives of the true class). mIoU values are in percent.
- **Unseen datasets** (role ``unseen``): ``hist[c, u]`` of target class × model output (argmax over
  the N nodes, or over all heads' classes for a Multi-SegHead model), a min-cost many-to-one
  assignment on 1 − IoU fitted on ``unseen_fit_split`` (default: the dataset's train split) and
  scored on ``unseen_score_split`` (default: its val split); fitting on the scored split is only done
  when both are named explicitly and equal, and is then flagged. The fitted assignment is saved as
  ``unseen-<dataset>.parquet`` (taxonomy schema).
- ``--multihead CKPT`` scores a stage-1 Multi-SegHead checkpoint instead (each dataset through its
  own head), for the comparison stage 1 vs final model.
- Under ``torchrun`` each rank scores its share of the images; the counts are summed across ranks.

Writes ``evaluation/<run_id>/metrics.json`` (schema ``uniseg.evaluation/1``).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from uniseg_cli import artifacts as A
from uniseg_cli.errors import DataError, UsageError
from uniseg_cli.stages import StageContext, StageSpec, register

KIND = "evaluation"
SCHEMA = "uniseg.evaluation/1"


@dataclasses.dataclass(frozen=True)
class Params:
    split: str | None = None  # split scored for training datasets (default: each dataset's val split)
    max_images: int = 0  # at most this many images per dataset and split (0: all)
    multihead: str | None = None  # score this stage-1 Multi-SegHead checkpoint (multihead.json or node-estimate dir)
    unseen_fit_split: str | None = None  # unseen datasets: split the assignment is fitted on (default: train split)
    unseen_score_split: str | None = None  # unseen datasets: split scored (default: val split)
    unseen: bool = True  # also score the datasets with role unseen (the unseen protocol)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    amp: bool = False  # fp16 autocast on CUDA

    def validate(self) -> None:
        if self.max_images < 0:
            raise ValueError("max_images must be >= 0")


def _pct(x):
    return None if x is None or not np.isfinite(x) else round(float(x) * 100, 2)


def _summary_pct(s: dict) -> dict:
    out = dict(s, miou=_pct(s["miou"]), pixel_accuracy=_pct(s["pixel_accuracy"]))
    out["per_class"] = {k: _pct(v) for k, v in s["per_class"].items()}
    return out


class _Model:
    """Uniform access to a unified model or a Multi-SegHead model."""

    def __init__(self, ctx: StageContext, p: Params, device):
        self.device = device
        if p.multihead:
            from uniseg_cli.stages.stage1 import load_multihead

            data = [SimpleNamespace(name=d.name, classes=tuple(_classes(d))) for d in ctx.train_datasets]
            self.net = load_multihead(p.multihead, data, device).eval()
            self.kind, self.classes = "multihead", {d.name: list(d.classes) for d in data}
            self.sizes = [len(c) for c in self.classes.values()]
            self.num_outputs, self.active = sum(self.sizes), None
            self.source = str(p.multihead)
        else:
            from uniseg_cli.training.model_io import load_unified_model

            art = ctx.inputs["train"]
            self.net = load_unified_model(art.path, device)
            self.kind, self.classes, self.source = "unified", dict(self.net.datasets), art.run_id
            self.num_outputs = self.net.num_nodes
            active = torch.zeros(self.num_outputs, dtype=torch.bool)
            for m in self.net.head.mappings:
                active |= m.cpu().bool().any(dim=0)
            self.active = active.to(device)

    def index(self, name: str) -> int:
        if name not in self.classes:
            raise UsageError(f"dataset {name!r} is not one the model was trained on ({', '.join(self.classes)})",
                             hint="evaluate training datasets by their pipeline names, or give it role unseen.")
        return list(self.classes).index(name)

    @torch.no_grad()
    def outputs(self, img: torch.Tensor, d: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(dataset d's prediction (1, H, W) or None, the argmax over the model's output space (1, H, W))."""
        from uniseg_cli.training.unify import full_res_logits

        if self.kind == "multihead":
            logits = full_res_logits(self.net.segmenter, lambda e: torch.cat([self.net.head.dataset_logits(e, k)
                                                                              for k in range(len(self.sizes))], 1), img)
            ds = None
            if d is not None:
                off = sum(self.sizes[:d])
                ds = logits[:, off:off + self.sizes[d]].argmax(dim=1)
            return ds, logits.argmax(dim=1)
        head = self.net.head
        z = full_res_logits(self.net.segmenter, head.unified_logits, img)  # (1, N, H, W)
        ds = head.map_logits(z, head.mapping(d)).argmax(dim=1) if d is not None else None
        z = z.masked_fill(~self.active[None, :, None, None], float("-inf"))
        return ds, z.argmax(dim=1)


def _classes(spec) -> list[str]:
    from uniseg_cli.data import open_dataset

    return list(open_dataset(spec).label_space.classes)


def _images(spec, split: str, p: Params, dist):
    from uniseg_cli.data import open_dataset
    from uniseg_cli.data.loader import iter_eval

    ad = open_dataset(spec)
    if split not in ad.splits():
        raise DataError(f"dataset {spec.name} ({spec.root}) has no split {split!r} (found: {', '.join(ad.splits()) or 'none'})",
                        hint="add that split, or choose another with --split / --unseen-fit-split / --unseen-score-split.")
    n = len(ad.samples(split)[: p.max_images or None])
    return ad, n, iter_eval(ad, split, limit=p.max_images or None, rank=dist.rank, world_size=dist.world_size)


def score_training(model: _Model, spec, p: Params, dist) -> dict:
    from uniseg_cli.training.metrics import ConfusionMatrix

    d = model.index(spec.name)
    classes = model.classes[spec.name]
    split = p.split or spec.val_split
    ad, n, items = _images(spec, split, p, dist)
    if list(ad.label_space.classes) != classes:
        raise UsageError(f"dataset {spec.name}: its classes on disk differ from those the model was trained on",
                         hint="evaluate the dataset version the model was trained on.")
    own, uni = ConfusionMatrix(len(classes)), ConfusionMatrix(len(classes))
    lut = None
    if model.kind == "unified":
        m = model.net.head.mapping(d).cpu().numpy() > 0.5  # (n_d, N)
        lut = torch.full((model.num_outputs,), -2, dtype=torch.long)
        cs, us = np.nonzero(m)
        lut[torch.as_tensor(us)] = torch.as_tensor(cs)
        lut = lut.to(model.device)
    for item in items:
        img, lab = item["image"].to(model.device), item["label"].to(model.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=p.amp and model.device.type == "cuda"):
            pred, top = model.outputs(img, d)
        own.update(pred, lab, where=f"{spec.name}/{item['stem']}")
        if lut is not None:
            uni.update(lut[top], lab, where=f"{spec.name}/{item['stem']}")
    own.all_reduce()
    res = {"split": split, "images": n, **_summary_pct(own.summary(classes))}
    if lut is not None:
        uni.all_reduce()
        res["unified"] = _summary_pct(uni.summary(classes))
    return res


def score_unseen(model: _Model, spec, p: Params, dist, out_dir: Path | None, run_id: str | None) -> dict:
    from uniseg_cli.taxonomy.unseen import evaluate_unseen, unseen_hist, unseen_taxonomy
    from uniseg_cli.training.distributed import all_reduce_numpy

    fit = p.unseen_fit_split or spec.train_split
    score = p.unseen_score_split or spec.val_split
    if fit == score and not (p.unseen_fit_split and p.unseen_score_split):
        raise UsageError(f"unseen dataset {spec.name}: the assignment would be fitted on the split it is scored on ({fit!r})",
                         hint="name both --unseen-fit-split and --unseen-score-split to do that on purpose.")
    classes = _classes(spec)
    hists = {}
    for split in dict.fromkeys((fit, score)):
        _, n, items = _images(spec, split, p, dist)
        h = np.zeros((len(classes), model.num_outputs), np.int64)
        for item in items:
            with torch.autocast("cuda", dtype=torch.float16, enabled=p.amp and model.device.type == "cuda"):
                _, top = model.outputs(item["image"].to(model.device), None)
            unseen_hist(item["label"].numpy(), top.cpu().numpy(), len(classes), model.num_outputs, out=h)
        hists[split] = (all_reduce_numpy(h), n)
    res = evaluate_unseen(hists[fit][0], hists[score][0])
    out = {"fit_split": fit, "score_split": score, "fit_images": hists[fit][1], "images": hists[score][1],
           "fitted_on_scored_split": fit == score, **res.to_json(classes)}
    if out_dir is not None:
        try:
            from uniseg_cli.taxonomy.schema import write_taxonomy

            tax = unseen_taxonomy(res.mapping, hists[fit][0], spec.name, classes, sources={"model": model.source})
            write_taxonomy(tax, out_dir / f"unseen-{spec.name}.parquet", kind="unseen-mapping", run_id=run_id)
            out["mapping_file"] = f"unseen-{spec.name}.parquet"
        except UsageError as e:  # fewer outputs than target classes: no valid taxonomy, the score stands
            out["mapping_file"] = None
            out["note"] = e.message
    return out


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 2) if v else None


def run(ctx: StageContext) -> A.Artifact:
    """Score every training dataset (and unseen ones); rank 0 publishes ``evaluation/<run_id>/metrics.json``."""
    from uniseg_cli.training.distributed import barrier, init_distributed

    p: Params = ctx.params
    unseen = ctx.unseen_datasets if p.unseen else []
    if not ctx.train_datasets and not unseen:
        raise UsageError("evaluate needs datasets", hint="pass --dataset PATH (repeatable) or --pipeline pipeline.yaml.")
    dist = init_distributed(p.device)
    model = _Model(ctx, p, dist.device)
    result = {"schema": SCHEMA, "units": "percent",
              "model": {"kind": model.kind, "source": model.source, "outputs": model.num_outputs},
              "protocol": {"inference": "full resolution, single scale",
                           "pixels": "ignore not counted; classes without ground truth left out; predictions outside "
                                     "the label space count as errors"},
              "datasets": {}, "unseen": {}}
    for spec in ctx.train_datasets:
        result["datasets"][spec.name] = score_training(model, spec, p, dist)
    result["mean_miou"] = _mean(r["miou"] for r in result["datasets"].values())
    if model.kind == "unified":
        result["unified_mean_miou"] = _mean(r["unified"]["miou"] for r in result["datasets"].values())
    art = None
    if dist.is_main:
        with ctx.publish() as st:
            for spec in unseen:
                result["unseen"][spec.name] = score_unseen(model, spec, p, dist, st.dir, st.run_id)
            result["unseen_mean_miou"] = _mean(r["miou"] for r in result["unseen"].values())
            result["run_id"] = st.run_id
            (st.dir / "metrics.json").write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
            st.extra["summary"] = summary_of(result)
        art = st.artifact
    else:
        for spec in unseen:  # take part in the all-reduces
            score_unseen(model, spec, p, dist, None, None)
    barrier()
    return art if art is not None else A.find_artifact(ctx.root, KIND, ctx.run_id())


def summary_of(result: dict) -> dict:
    return {"model": result["model"]["kind"], "mean_miou": result.get("mean_miou"),
            "unified_mean_miou": result.get("unified_mean_miou"), "unseen_mean_miou": result.get("unseen_mean_miou"),
            "miou": {k: v["miou"] for k, v in result["datasets"].items()},
            "unseen_miou": {k: v["miou"] for k, v in result["unseen"].items()}}


def _summary(art: A.Artifact) -> dict:
    return dict(art.manifest.get("extra", {}).get("summary", {}))


SPEC = register(StageSpec("evaluate", KIND, Params, run, needs=("train",), datasets="full", summary=_summary))
